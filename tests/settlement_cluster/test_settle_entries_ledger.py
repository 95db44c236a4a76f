"""The ``settle`` ledger kind: a slot's settlement as a certified entry in the gateway's chain,
valid iff it is the exact result over the certified inputs it names."""

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.settlement.certificates import total_wh
from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, RejectReason, conflict_keys, derive_state, process_entry, state_root,
)
from p2pgrid.ledger.messages import Fill, Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, PostingBody, SettlementLedgerRules, SlotInputs,
    certificate_registry, certificates_of, compute_settlement, settlement_of, slots_to_settle,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Source, sign

SLOT = 1_800_000_000 - 1_800_000_000 % 900
SLOTS = SlotRules()
TRADE_MS = (SLOT - 3_600) * 1000
METER_MS = SLOTS.slot_end_ms(SLOT) + 10_000
DUE_MS = SLOTS.metering_due_ms(SLOT)
RETAIL, FEED_IN = 300_000, 80_000

FIX = LedgerFixture()
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(RETAIL, FEED_IN))
GATEWAY = FIX.gateway
SELLER, BUYER, NO_METER, HEAVY = (seeded_key(n) for n in ("seller", "buyer", "no-meter", "heavy-user"))
METERS = {key.public_key: seeded_key(f"{name}-meter") for key, name in
          ((SELLER, "seller"), (BUYER, "buyer"), (NO_METER, "no-meter"), (HEAVY, "heavy"))}
CREDITS = 1_000_000
LOG: list = []


@pytest.fixture(autouse=True)
def _fresh_log():
    LOG.clear()


def run(state, key, kind, body, now, rules=None):
    """``key``'s entry dated ``now``, judged and applied (no clock: ``now`` is the entry's time)."""
    signed = FIX.entry_on(state, key, kind, body, now)
    process_entry(state, signed, rules or FIX.rules)
    LOG.append(signed)
    return signed


def reading(key, import_wh=0, export_wh=0, green_wh=0, slot=SLOT, created_ms=METER_MS):
    meter = METERS[key.public_key]
    return MeterEntryBody(sign(MeterReading(
        account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=slot, import_wh=import_wh,
        export_wh=export_wh, green_wh=green_wh, green_source=Source.PV if green_wh else Source.NONE,
        import_total_wh=import_wh, export_total_wh=export_wh, created_ms=created_ms), meter).encoded)


def trade(state, take: bytes, buyer, qty, price, *, green=True):
    lock = Lock(take, SELLER.public_key, b"o" * 16, SELLER.public_key, 2_000, qty, price, trade_value(qty, price),
                (SLOT - 300) * 1000, slot=SLOT, green=green)
    run(state, buyer, "lock", lock, TRADE_MS)
    run(state, SELLER, "fill", Fill(take, buyer.public_key, b"o" * 16, qty, price), TRADE_MS)


def traded_and_metered() -> LedgerState:
    """Seller sells 1000 Wh to BUYER and 500 Wh to NO_METER (green, 0.2 credit/kWh) and exports only
    1200 Wh; BUYER imports 800 Wh; NO_METER posts no meter entry; HEAVY imports 1000 Wh unfunded."""
    state = LedgerState()
    for key in (SELLER, BUYER, NO_METER):
        run(state, GATEWAY, "mint", Mint(key.public_key, CREDITS), TRADE_MS)
    for account, meter in METERS.items():
        run(state, GATEWAY, METER_REGISTRATION_KIND,
            MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0), TRADE_MS)
    trade(state, b"\x01" * 16, BUYER, 1_000, 200_000)
    trade(state, b"\x02" * 16, NO_METER, 500, 200_000)
    run(state, SELLER, METER_KIND, reading(SELLER, export_wh=1_200, green_wh=1_200), METER_MS)
    run(state, BUYER, METER_KIND, reading(BUYER, import_wh=800), METER_MS)
    run(state, HEAVY, METER_KIND, reading(HEAVY, import_wh=1_000), METER_MS)
    return state


def test_settle_posts_imbalances_against_the_gateway_and_issues_certificates():
    state = traded_and_metered()
    assert slots_to_settle(state, FIX.rules, DUE_MS - 1) == []
    assert slots_to_settle(state, FIX.rules, DUE_MS) == [SLOT]
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    before = {k: state.balance(k.public_key) for k in (SELLER, BUYER, NO_METER, HEAVY)}

    run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)

    change = {k: state.balance(k.public_key) - before[k] for k in before}
    assert change[SELLER] == -trade_value(300, RETAIL)        # sold 1500, delivered 1200: shortfall
    assert change[BUYER] == trade_value(200, FEED_IN)         # bought 1000, used 800
    assert change[NO_METER] == trade_value(500, FEED_IN)      # no meter entry: consumed nothing
    assert change[HEAVY] == -trade_value(1_000, RETAIL)       # imported without buying
    # An obligation may take a balance below the credit limit (0 here): it binds spending only.
    assert state.balance(HEAVY.public_key) == -300_000
    assert state.money_total() == 0
    assert slots_to_settle(state, FIX.rules, DUE_MS) == []

    settled = settlement_of(state, SLOT)
    assert settled is not None and settled.total_uc == 0
    assert [d.delivered_wh for d in settled.deliveries] == [800, 400]
    certs = certificates_of(state, SLOT)
    assert total_wh(certs.issued) == 1_200
    assert total_wh(certs.retired_by(BUYER.public_key)) == 800
    assert total_wh(certs.holdings_of(NO_METER.public_key)) == 400
    registry = certificate_registry(state)
    assert registry.issued_wh == 1_200 and registry.retired_wh == 800


def test_settled_state_root_does_not_depend_on_the_order_entries_are_applied_in():
    state = traded_and_metered()
    run(state, GATEWAY, SETTLE_KIND, compute_settlement(state, FIX.rules, SLOT)[0], DUE_MS)
    entries = list(LOG)
    random.Random(7).shuffle(entries)
    derived, pending = derive_state(entries, FIX.rules)
    assert pending == {}
    assert state_root(derived) == state_root(state)
    assert derived.money_total() == 0
    # Offline tools know only the plain zone rules: applying needs nothing else.
    offline, pending = derive_state(entries, LedgerFixture().rules)
    assert pending == {} and state_root(offline) == state_root(state)


def test_invalid_settle_that_differs_from_the_result_over_its_named_inputs():
    state = traded_and_metered()
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    richer_seller = [PostingBody(p.account, p.amount_uc + (1 if p.account == SELLER.public_key else 0))
                     for p in body.postings]
    for bad in (replace(body, postings=tuple(richer_seller)), replace(body, trades=body.trades[:1]),
                replace(body, meters=body.meters[1:])):
        before = state_root(state)
        with pytest.raises(EntryRejected, match="differs from the result over its named inputs") as info:
            run(state, GATEWAY, SETTLE_KIND, bad, DUE_MS)
        assert info.value.reason is RejectReason.BAD_BODY and info.value.is_final
        assert state_root(state) == before
    with pytest.raises(EntryRejected, match="not the zone's"):
        run(state, GATEWAY, SETTLE_KIND, replace(body, shortfall_price=RETAIL - 1), DUE_MS)


def test_a_settle_naming_fewer_inputs_than_certified_is_valid_over_exactly_those():
    # Validity never compares with "everything I hold": a settle over the seller's trade and meter
    # only is exact for those, whatever else a validator has certified.
    state = traded_and_metered()
    body, settled = compute_settlement(state, FIX.rules, SLOT,
                                       SlotInputs(trades=frozenset({b"\x01" * 16}),
                                                  meters=frozenset({SELLER.public_key})))
    run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)
    assert settlement_of(state, SLOT) == settled and state.money_total() == 0
    assert slots_to_settle(state, FIX.rules, DUE_MS) == [SLOT]       # the rest is reconciled later


def test_a_settle_is_dated_at_or_after_the_metering_deadline():
    state = traded_and_metered()
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    with pytest.raises(EntryRejected, match="before slot .* metering deadline") as info:
        run(state, GATEWAY, SETTLE_KIND, body, DUE_MS - 1)
    assert info.value.is_final                     # the entry's own signed time: it never changes


def test_invalid_settle_of_a_settled_slot_without_new_inputs():
    state = traded_and_metered()
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    first = run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)
    with pytest.raises(EntryRejected, match="settled already over exactly these inputs") as info:
        run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)
    assert info.value.is_final
    # No conflict key beyond the chain's own (account, seq): the gateway's chain orders settles.
    assert conflict_keys(first.body)[1:] == ()


def test_invalid_settle_by_an_account_other_than_the_gateway():
    state = traded_and_metered()
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    with pytest.raises(EntryRejected) as info:
        run(state, BUYER, SETTLE_KIND, body, DUE_MS)
    assert info.value.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT and info.value.is_final


def test_a_reading_created_at_the_due_is_refused_and_the_slot_settles_without_it():
    state = traded_and_metered()
    with pytest.raises(EntryRejected, match=r"late.*due by") as info:
        run(state, NO_METER, METER_KIND, reading(NO_METER, import_wh=500, created_ms=DUE_MS), DUE_MS)
    assert info.value.is_final
    body, settled = compute_settlement(state, FIX.rules, SLOT)
    assert NO_METER.public_key not in body.meters
    assert not settled.line(NO_METER.public_key).metered


def test_a_settle_naming_an_input_not_certified_here_waits():
    state = traded_and_metered()
    late = reading(NO_METER, import_wh=500, created_ms=DUE_MS - 1)
    elsewhere = state.copy()
    run(elsewhere, NO_METER, METER_KIND, late, DUE_MS + 5_000)        # certified, not here yet
    body, _ = compute_settlement(elsewhere, FIX.rules, SLOT)
    signed = FIX.entry_on(state, GATEWAY, SETTLE_KIND, body, DUE_MS + 30_000)
    with pytest.raises(EntryRejected) as info:
        process_entry(state.overlay(), signed, FIX.rules)
    assert info.value.reason is RejectReason.MISSING_DEPENDENCY and not info.value.is_final
    run(state, NO_METER, METER_KIND, late, DUE_MS + 5_000)            # it arrives: the same entry is valid
    process_entry(state, signed, FIX.rules)
    assert settlement_of(state, SLOT).line(NO_METER.public_key).metered


def test_invalid_settle_in_a_zone_without_settlement_terms():
    state = traded_and_metered()
    body, _ = compute_settlement(state, FIX.rules, SLOT)
    with pytest.raises(EntryRejected, match="no settlement terms"):
        run(state, GATEWAY, SETTLE_KIND, body, DUE_MS, rules=LedgerFixture().rules)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seller=st.tuples(st.integers(0, 3_000), st.integers(0, 3_000)),
       buyer=st.one_of(st.none(), st.integers(0, 3_000)), heavy=st.integers(0, 5_000),
       qty=st.tuples(st.integers(1, 1_000), st.integers(1, 1_000)), seed=st.integers(0, 2**16))
def test_money_stays_conserved_and_the_root_order_free_whatever_the_meters_say(seller, buyer, heavy, qty, seed):
    LOG.clear()
    export, green = seller[0], min(seller)
    state = LedgerState()
    for key in (SELLER, BUYER, NO_METER):
        run(state, GATEWAY, "mint", Mint(key.public_key, CREDITS), TRADE_MS)
    for account, meter in METERS.items():
        run(state, GATEWAY, METER_REGISTRATION_KIND,
            MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0), TRADE_MS)
    trade(state, b"\x01" * 16, BUYER, qty[0], 200_000)
    trade(state, b"\x02" * 16, NO_METER, qty[1], 150_000, green=False)
    run(state, SELLER, METER_KIND, reading(SELLER, export_wh=export, green_wh=green), METER_MS)
    if buyer is not None:
        run(state, BUYER, METER_KIND, reading(BUYER, import_wh=buyer), METER_MS)
    run(state, HEAVY, METER_KIND, reading(HEAVY, import_wh=heavy), METER_MS)
    run(state, GATEWAY, SETTLE_KIND, compute_settlement(state, FIX.rules, SLOT)[0], DUE_MS)

    assert state.money_total() == 0
    certs = certificates_of(state, SLOT)
    assert total_wh(certs.issued) == green
    assert sum(r.units.wh for r in certs.retirements) <= min(green, buyer or 0)
    entries = list(LOG)
    random.Random(seed).shuffle(entries)
    derived, pending = derive_state(entries, FIX.rules)
    assert pending == {} and state_root(derived) == state_root(state)
