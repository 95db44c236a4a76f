"""Settling PPA positions on the ledger (``settle_ppa``): the gateway's entry names the agreements
and terminations it applies; validators recompute every posting from the certified terms and
meters; a later reading is reconciled; a plain ``settle`` can never undo a slot's positions."""

from __future__ import annotations

import pytest

from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, RejectReason, derive_state, process_entry, state_root, validate_entry,
)
from p2pgrid.ledger.messages import Fill, Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.ppa.entries import PpaAccept, PpaIndex, PpaOffer, PpaTerminate
from p2pgrid.ppa.execution import ppa_trade_id
from p2pgrid.ppa.settle import SETTLE_PPA_KIND, PpaSettleBody
from p2pgrid.ppa.terms import Shape, terms_hash
from p2pgrid.ppa.testing import make_terms
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, SettlementLedgerRules, certificates_of,
    compute_settlement, plan_settlement, settlement_of,
)
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Source, sign

SLOTS = SlotRules()
START = 1_798_761_600                       # the agreements' first slot: 2027-01-01 00:00 UTC
SLOT = START + 12 * 3600                    # noon of that day
SIGN_MS = (START - 86_400) * 1000           # a day before: offers and acceptances
TRADE_MS = (SLOT - 3_600) * 1000
METER_MS = SLOTS.slot_end_ms(SLOT) + 10_000
SETTLE_MS = SLOTS.metering_due_ms(SLOT) + 30_000
RETAIL, FEED_IN = 300_000, 80_000
CREDITS = 100_000_000

FIX = LedgerFixture(zone="ppazone")
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(RETAIL, FEED_IN))
GATEWAY = FIX.gateway
STATION, HOUSE, NEIGHBOUR = PEOPLE = tuple(seeded_key(f"ppa-settle-{n}") for n in ("station", "house", "neighbour"))
METERS = {key.public_key: seeded_key(f"ppa-settle-meter-{i}") for i, key in enumerate(PEOPLE)}


class Zone:
    def __init__(self) -> None:
        self.state = LedgerState()
        self.entries: list = []
        for key in PEOPLE:
            self.add(GATEWAY, "mint", Mint(key.public_key, CREDITS), SIGN_MS)
        for account, meter in METERS.items():
            self.add(GATEWAY, METER_REGISTRATION_KIND,
                     MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0), SIGN_MS)

    def add(self, key, kind, body, time_ms):
        signed = FIX.entry_on(self.state, key, kind, body, time_ms)
        process_entry(self.state, signed, FIX.rules)
        self.entries.append(signed)
        return signed

    def agree(self, terms):
        offer = self.add(STATION, "ppa_offer", PpaOffer(terms, terms_hash(terms), START * 1000), SIGN_MS)
        self.add(HOUSE, "ppa_accept", PpaAccept(terms_hash(terms), STATION.public_key, offer.body.seq), SIGN_MS)
        return terms_hash(terms)

    def trade(self, take: bytes, seller, buyer, qty: int, price: int = 200_000):
        self.add(buyer, "lock", Lock(take, seller.public_key, b"o" * 16, seller.public_key, 50_000, qty, price,
                                     trade_value(qty, price), (SLOT - 300) * 1000, slot=SLOT, green=True), TRADE_MS)
        self.add(seller, "fill", Fill(take, buyer.public_key, b"o" * 16, qty, price), TRADE_MS)

    def meter(self, key, import_wh=0, export_wh=0, green_wh=0, time_ms=METER_MS):
        meter = METERS[key.public_key]
        body = MeterEntryBody(sign(MeterReading(
            account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=SLOT, import_wh=import_wh,
            export_wh=export_wh, green_wh=green_wh, green_source=Source.PV if green_wh else Source.NONE,
            import_total_wh=import_wh, export_total_wh=export_wh, created_ms=METER_MS), meter).encoded)
        self.add(key, METER_KIND, body, time_ms)

    def settle(self, time_ms=SETTLE_MS):
        kind, body = plan_settlement(self.state, FIX.rules, SLOT)
        self.add(GATEWAY, kind, body, time_ms)
        return kind, body

    def balance(self, key) -> int:
        return self.state.balance(key.public_key)


def test_a_pay_as_produced_slot_is_settled_with_the_ppa_before_spot_and_recomputed_by_validators():
    zone = Zone()
    ppa_id = zone.agree(make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START,
                                   shape=Shape.PAY_AS_PRODUCED))              # 25 % at 0.12 credits/kWh
    zone.trade(b"\x01" * 16, STATION, NEIGHBOUR, 3_000)                     # a spot sale at 0.20
    zone.meter(STATION, export_wh=400, green_wh=400)                        # a cloudy slot
    zone.meter(HOUSE, import_wh=100)
    zone.meter(NEIGHBOUR, import_wh=3_000)
    kind, body = zone.settle()
    assert kind == SETTLE_PPA_KIND and body.ppas == (ppa_id,) and body.ends == ()
    settled = settlement_of(zone.state, SLOT)
    assert settled.delivery(ppa_trade_id(ppa_id)).delivered_wh == 100       # first
    assert settled.delivery(b"\x01" * 16).delivered_wh == 300
    # The house pays the position at settlement; the station pays its spot shortfall (2700 Wh).
    assert zone.balance(HOUSE) == CREDITS - 12_000
    assert zone.balance(STATION) == CREDITS + trade_value(3_000, 200_000) + 12_000 - 810_000
    assert zone.state.money_total() == 0
    certs = certificates_of(zone.state, SLOT)
    assert total_wh(certs.retired_by(HOUSE.public_key)) == 100
    # Every node derives the same state from the certified entries, in any order.
    again, pending = derive_state(list(reversed(zone.entries)), FIX.rules)
    assert not pending and state_root(again) == state_root(zone.state)


def test_a_baseload_shortfall_and_an_indexed_price():
    zone = Zone()
    zone.add(GATEWAY, "ppa_index", PpaIndex("cpi", START, 1_100), SIGN_MS)
    ppa_id = zone.agree(make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START,
                                   index_name="cpi", index_base=1000))      # 500 Wh at 0.12 × 1.1
    zone.meter(STATION, export_wh=300)
    zone.meter(HOUSE, import_wh=500)
    zone.settle()
    assert settlement_of(zone.state, SLOT).line(HOUSE.public_key).paid_for(Reason.PPA) == -66_000
    assert zone.balance(STATION) == CREDITS + 66_000 - 60_000               # 200 Wh short at 0.30
    assert zone.state.money_total() == 0
    assert ppa_id


def test_a_late_reading_is_reconciled_and_a_plain_settle_cannot_undo_the_positions():
    zone = Zone()
    zone.agree(make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START))
    zone.meter(HOUSE, import_wh=500)
    zone.settle()                                                           # the station's reading is late
    assert zone.balance(STATION) == CREDITS + 60_000 - 150_000              # all 500 Wh short
    zone.meter(STATION, export_wh=500, time_ms=SETTLE_MS + 60_000)
    plain, _ = compute_settlement(zone.state, FIX.rules, SLOT, None, lambda meters: [])
    with pytest.raises(EntryRejected, match="leaves out"):
        validate_entry(zone.state, FIX.entry_on(zone.state, GATEWAY, SETTLE_KIND, plain, SETTLE_MS + 90_000),
                       FIX.rules)
    kind, _ = zone.settle(SETTLE_MS + 90_000)                               # reconciliation
    assert kind == SETTLE_PPA_KIND
    assert zone.balance(STATION) == CREDITS + 60_000                        # the shortfall charge came back
    assert zone.state.money_total() == 0


def test_a_named_termination_ends_the_positions_and_unknown_contracts_wait():
    zone = Zone()
    terms = make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START, notice_s=3600)
    ppa_id = zone.agree(terms)
    zone.add(HOUSE, "ppa_terminate", PpaTerminate(ppa_id, SLOT), SIGN_MS)   # ends before noon
    zone.meter(HOUSE, import_wh=500)
    kind, body = zone.settle()
    assert body.ends == (ppa_id + HOUSE.public_key,)
    assert settlement_of(zone.state, SLOT).deliveries == ()                 # no position at noon
    other = make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START, name="never offered")
    waiting = PpaSettleBody(body.settle, tuple(sorted((ppa_id, terms_hash(other)))), body.ends)
    with pytest.raises(EntryRejected) as excinfo:
        validate_entry(zone.state, FIX.entry_on(zone.state, GATEWAY, SETTLE_PPA_KIND, waiting, SETTLE_MS + 1),
                       FIX.rules)
    assert excinfo.value.reason is RejectReason.MISSING_DEPENDENCY      # waits: it may yet be certified
