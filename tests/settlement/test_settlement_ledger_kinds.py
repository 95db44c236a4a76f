"""Meter registrations and meter readings as certified ledger entries (p2pgrid.settlement.entries)."""

import pytest

from p2pgrid.settlement import entries  # noqa: F401  (registers the kinds)
from p2pgrid.ledger.chain import EntryRejected, LedgerState, RejectReason, derive_state, process_entry, state_root
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import Reason, ZoneTariffs, settle_slot
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, MeterEntryBody, Posting, imbalance_postings, meter_entries_for_slot,
)
from p2pgrid.wire import Source, sign

from settlement_strategies import meter, trade

SLOT = 1_800_000_000 - 1_800_000_000 % 900
NOW_MS = (SLOT + 900) * 1000 + 10_000         # 10 s after the slot ended, well before the deadline
DUE_MS = (SLOT + 1200) * 1000                 # metering due: slot end + 300 s grace

FIX = LedgerFixture()
NODE = seeded_key("prosumer")
METER = seeded_key("prosumer-meter")


def registration(meter_key: bytes = METER.public_key, account: bytes = NODE.public_key) -> MeterRegistration:
    return MeterRegistration(FIX.gateway.public_key, account, meter_key, FIX.zone, 0)


def reading_bytes(slot: int = SLOT, import_total: int = 400, export_total: int = 1_000, key=METER) -> bytes:
    return sign(MeterReading(account=NODE.public_key, meter_key=key.public_key, zone=FIX.zone, slot=slot,
                             import_wh=400, export_wh=1_000, green_wh=900, green_source=Source.PV,
                             import_total_wh=import_total, export_total_wh=export_total,
                             created_ms=(slot + 900) * 1000), key).encoded


def registered_state() -> LedgerState:
    state = LedgerState()
    process_entry(state, FIX.entry_on(state, FIX.gateway, METER_REGISTRATION_KIND, registration()), FIX.rules)
    return state


def meter_entry(state, body_bytes, time_ms=NOW_MS, key=NODE):
    return FIX.entry_on(state, key, METER_KIND, MeterEntryBody(body_bytes), time_ms)


def test_a_registered_meters_reading_is_certified_and_read_back_for_settlement():
    state = registered_state()
    entry = meter_entry(state, reading_bytes())
    process_entry(state, entry, FIX.rules)
    [metered] = meter_entries_for_slot(state, SLOT)
    assert (metered.account, metered.import_wh, metered.export_wh, metered.green_wh) == (NODE.public_key, 400, 1_000, 900)
    assert meter_entries_for_slot(state, SLOT + 900) == []
    assert state.money_total() == 0
    # Derived from the set of entries in any order, the state and its root are the same.
    registration_entry = FIX.entry(FIX.gateway, LedgerState().head(FIX.gateway.public_key), METER_REGISTRATION_KIND,
                                   registration())
    derived, pending = derive_state([entry, registration_entry], FIX.rules)
    assert pending == {} and state_root(derived) == state_root(state)


def test_a_meter_entry_whose_key_registration_is_not_here_yet_waits_instead_of_being_refused():
    state = LedgerState()
    entry = meter_entry(state, reading_bytes())
    with pytest.raises(EntryRejected) as caught:
        process_entry(state, entry, FIX.rules)
    assert caught.value.reason is RejectReason.MISSING_DEPENDENCY and not caught.value.is_final
    state = registered_state()                    # the registration arrives: the same entry is valid
    process_entry(state, meter_entry(state, reading_bytes()), FIX.rules)


def test_invalid_meter_entry_by_a_key_registered_for_another_account_is_refused_for_good():
    state = LedgerState()
    process_entry(state, FIX.entry_on(state, FIX.gateway, METER_REGISTRATION_KIND,
                                      registration(account=seeded_key("someone-else").public_key)), FIX.rules)
    with pytest.raises(EntryRejected, match="unregistered_meter_key") as caught:
        process_entry(state, meter_entry(state, reading_bytes()), FIX.rules)
    assert caught.value.is_final


def test_a_meter_entry_is_judged_on_the_meters_signed_time_not_on_any_clock():
    # Created 1 ms before the due and carried a day later: still valid (validators may see it late).
    state = registered_state()
    in_time = sign(MeterReading(account=NODE.public_key, meter_key=METER.public_key, zone=FIX.zone, slot=SLOT,
                                import_wh=400, export_wh=1_000, green_wh=900, green_source=Source.PV,
                                import_total_wh=400, export_total_wh=1_000, created_ms=DUE_MS - 1), METER).encoded
    process_entry(state, meter_entry(state, in_time, time_ms=DUE_MS + 86_400_000), FIX.rules)


def test_invalid_meter_entry_created_at_the_due_is_late_and_refused_for_good():
    state = registered_state()
    late = sign(MeterReading(account=NODE.public_key, meter_key=METER.public_key, zone=FIX.zone, slot=SLOT,
                             import_wh=400, export_wh=1_000, green_wh=900, green_source=Source.PV,
                             import_total_wh=400, export_total_wh=1_000, created_ms=DUE_MS), METER).encoded
    with pytest.raises(EntryRejected, match="late") as caught:
        process_entry(state, meter_entry(state, late, time_ms=DUE_MS), FIX.rules)
    assert caught.value.is_final


def test_invalid_meter_entry_dated_before_the_reading_it_carries():
    state = registered_state()
    with pytest.raises(EntryRejected, match="created_in_future") as caught:
        process_entry(state, meter_entry(state, reading_bytes(), time_ms=(SLOT + 900) * 1000 - 1), FIX.rules)
    assert caught.value.is_final


def test_invalid_meter_entry_contradicting_the_last_certified_counter():
    state = registered_state()
    process_entry(state, meter_entry(state, reading_bytes()), FIX.rules)
    later = SLOT + 900
    # Next slot should start at the counters 400 / 1_000; this one starts the import at 0.
    bad = meter_entry(state, reading_bytes(later, 400, 2_000), time_ms=(later + 900) * 1000)
    with pytest.raises(EntryRejected, match="counter_contradiction"):
        process_entry(state, bad, FIX.rules)
    good = meter_entry(state, reading_bytes(later, 800, 2_000), time_ms=(later + 900) * 1000)
    process_entry(state, good, FIX.rules)


def test_invalid_meter_reading_placed_in_another_accounts_chain():
    state = registered_state()
    entry = meter_entry(state, reading_bytes(), key=seeded_key("someone-else"))
    with pytest.raises(EntryRejected, match="own account"):
        process_entry(state, entry, FIX.rules)


def test_only_the_gateway_registers_meters_and_a_meter_key_only_once():
    state = LedgerState()
    with pytest.raises(EntryRejected) as caught:
        process_entry(state, FIX.entry_on(state, NODE, METER_REGISTRATION_KIND, registration()), FIX.rules)
    assert caught.value.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT
    state = registered_state()
    again = registration(account=seeded_key("thief").public_key)
    with pytest.raises(EntryRejected, match="registered already"):
        process_entry(state, FIX.entry_on(state, FIX.gateway, METER_REGISTRATION_KIND, again), FIX.rules)


def test_imbalance_postings_leave_out_trades_already_paid_by_lock_and_fill():
    seller, buyer, gateway = b"\x01" * 32, b"\x02" * 32, b"\xee" * 32
    tariffs = ZoneTariffs(gateway=gateway, shortfall_price=300_000, feed_in_price=80_000)
    # Seller short by 400 Wh (−120_000 µc), buyer imported 100 Wh extra (−30_000 µc).
    settled = settle_slot(SLOT, [trade(1, seller, buyer, 1000, 200_000, slot=SLOT)],
                          [meter(seller, export_wh=600, slot=SLOT), meter(buyer, import_wh=1100, slot=SLOT)], tariffs)
    postings = imbalance_postings(settled)
    assert postings == (Posting(seller, -120_000), Posting(buyer, -30_000))
    assert sum(p.amount_uc for p in postings) == -settled.net(gateway)
    trade_nets = {a: sum(t.amount_uc for t in settled.transfers if t.reason is Reason.TRADE and t.payee == a)
                  - sum(t.amount_uc for t in settled.transfers if t.reason is Reason.TRADE and t.payer == a)
                  for a in (seller, buyer)}
    for p in postings:
        assert trade_nets[p.account] + p.amount_uc == settled.net(p.account)
