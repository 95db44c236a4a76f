"""The certified ``settle`` entry charges the grid fee of a cross-zone trade from the zones in its
lock, on the delivered Wh, and applying it needs no zone configuration."""

import pytest

from p2pgrid.ledger.chain import EntryRejected, LedgerState, derive_state, process_entry, state_root
from p2pgrid.ledger.messages import Fill, Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.market.locality import Locality, settlement_grid_fees
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, SettlementLedgerRules, compute_settlement,
    settlement_of,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Source, sign

SLOT = 1_800_000_000 - 1_800_000_000 % 900
SLOTS = SlotRules()
TRADE_MS = (SLOT - 3_600) * 1000
METER_MS = SLOTS.slot_end_ms(SLOT) + 10_000
DUE_MS = SLOTS.metering_due_ms(SLOT)
FEE = 30_000
FIX = LedgerFixture()
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(300_000, 80_000),
                                  grid_fees=settlement_grid_fees([Locality("a", {"b": FEE})]))
GATEWAY = FIX.gateway
SELLER, BUYER = seeded_key("seller-b"), seeded_key("buyer-a")
METERS = {key.public_key: seeded_key(f"{name}-meter") for key, name in ((SELLER, "s"), (BUYER, "b"))}
LOG = []


def run(state, key, kind, body, now, rules=None):
    signed = FIX.entry_on(state, key, kind, body, now)
    process_entry(state, signed, rules or FIX.rules)
    LOG.append(signed)


def reading(key, import_wh=0, export_wh=0):
    meter = METERS[key.public_key]
    return MeterEntryBody(sign(MeterReading(
        account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=SLOT, import_wh=import_wh,
        export_wh=export_wh, green_wh=0, green_source=Source.NONE, import_total_wh=import_wh,
        export_total_wh=export_wh, created_ms=METER_MS), meter).encoded)


def traded(seller_zone="b", buyer_zone="a") -> LedgerState:
    LOG.clear()
    state = LedgerState()
    for key in (SELLER, BUYER):
        run(state, GATEWAY, "mint", Mint(key.public_key, 1_000_000), TRADE_MS)
    for account, meter in METERS.items():
        run(state, GATEWAY, METER_REGISTRATION_KIND,
            MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0), TRADE_MS)
    take = b"\x01" * 16
    run(state, BUYER, "lock", Lock(take, SELLER.public_key, b"o" * 16, SELLER.public_key, 2_000, 1_000, 150_000,
                                   trade_value(1_000, 150_000), (SLOT - 300) * 1000, slot=SLOT,
                                   seller_zone=seller_zone, buyer_zone=buyer_zone), TRADE_MS)
    run(state, SELLER, "fill", Fill(take, BUYER.public_key, b"o" * 16, 1_000, 150_000), TRADE_MS)
    run(state, SELLER, METER_KIND, reading(SELLER, export_wh=600), METER_MS)
    run(state, BUYER, METER_KIND, reading(BUYER, import_wh=1_000), METER_MS)
    return state


def test_settle_charges_the_buyer_the_grid_fee_on_delivered_wh():
    state = traded()
    body, settlement = compute_settlement(state, FIX.rules, SLOT)
    fees = [t for t in settlement.transfers if t.reason is Reason.GRID_FEE]
    assert [(t.payer, t.payee, t.amount_uc) for t in fees] == \
        [(BUYER.public_key, GATEWAY.public_key, trade_value(600, FEE))]
    run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)
    assert settlement_of(state, SLOT) == settlement and state.money_total() == 0
    # Offline tools with the plain zone rules derive the same state: the body states the fees.
    offline, pending = derive_state(list(LOG), LedgerFixture().rules)
    assert pending == {} and state_root(offline) == state_root(state)


def test_a_same_zone_lock_pays_no_fee():
    state = traded(seller_zone="", buyer_zone="")
    _, settlement = compute_settlement(state, FIX.rules, SLOT)
    assert not [t for t in settlement.transfers if t.reason is Reason.GRID_FEE]


def test_a_zone_pair_without_a_fee_cannot_settle():
    body, _ = compute_settlement(traded(), FIX.rules, SLOT)     # as if the trade were a↔b
    state = traded(seller_zone="c", buyer_zone="a")
    with pytest.raises(EntryRejected, match="no grid fee from zone 'c'"):
        run(state, GATEWAY, SETTLE_KIND, body, DUE_MS)
