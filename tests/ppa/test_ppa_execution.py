"""PPA positions settled like trades against metered delivery, before spot: worked examples per
shape, and properties (money and certificates conserved, PPA before spot, order-independent)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ppa.execution import (
    ActiveAgreement, PpaIndexMissing, ppa_id_of_trade, ppa_trade_id, settle_slot_with_ppas,
)
from p2pgrid.ppa.terms import Shape, Shortfall
from p2pgrid.ppa.testing import make_terms
from p2pgrid.settlement.certificates import certify_slot, total_wh
from p2pgrid.settlement.rules import MeterEntry, Reason, TradeRecord, ZoneTariffs
from p2pgrid.wire import Source

SLOT = 1_798_761_600 + 12 * 3600          # 12:00 UTC on the agreements' first day
GATEWAY = b"\xee" * 32
STATION, HOUSE, NEIGHBOUR, SHOP = (bytes([i]) * 32 for i in (1, 2, 3, 4))
RETAIL, FEED_IN = 300_000, 80_000         # µc/kWh
TARIFFS = ZoneTariffs(gateway=GATEWAY, shortfall_price=RETAIL, feed_in_price=FEED_IN)


def meter(account: bytes, import_wh: int = 0, export_wh: int = 0, green_wh: int = 0) -> MeterEntry:
    return MeterEntry(account=account, zone="z1", slot=SLOT, import_wh=import_wh, export_wh=export_wh,
                      green_wh=green_wh, green_source=Source.PV if green_wh else Source.NONE,
                      entry_hash=account[:8] + SLOT.to_bytes(8, "big"))


def spot(n: int, seller: bytes, buyer: bytes, qty_wh: int, price: int = 100_000, green: bool = True) -> TradeRecord:
    return TradeRecord(trade_id=n.to_bytes(16, "big"), slot=SLOT, seller=seller, buyer=buyer, seller_zone="z1",
                       buyer_zone="z1", qty_wh=qty_wh, price=price, green=green)


def paid(settlement, account: bytes, reason: Reason) -> int:
    return settlement.line(account).paid_for(reason)


# --- pay as produced --------------------------------------------------------------------------

def test_pay_as_produced_sunny_slot_buys_a_quarter_of_the_export_before_spot():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, shape=Shape.PAY_AS_PRODUCED))   # 25 % at 0.12
    result = settle_slot_with_ppas(SLOT, [spot(1, STATION, NEIGHBOUR, 3000)],
                                   [meter(STATION, export_wh=8000, green_wh=8000), meter(HOUSE, import_wh=2500),
                                    meter(NEIGHBOUR, import_wh=3000)], [ppa], {}, TARIFFS)
    position = result.delivery(ppa_trade_id(ppa.ppa_id))
    assert (position.contracted_wh, position.delivered_wh) == (2000, 2000)
    assert paid(result, HOUSE, Reason.PPA) == -240_000 and paid(result, STATION, Reason.PPA) == 240_000
    assert paid(result, HOUSE, Reason.EXTRA_IMPORT) == -150_000          # 500 Wh beyond the PPA at retail
    assert paid(result, STATION, Reason.SURPLUS_EXPORT) == 240_000       # 3000 Wh beyond both, at feed-in
    assert result.total_uc == 0


def test_pay_as_produced_cloudy_slot_buys_less_and_spot_takes_the_shortfall():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, shape=Shape.PAY_AS_PRODUCED))
    result = settle_slot_with_ppas(SLOT, [spot(1, STATION, NEIGHBOUR, 3000)],
                                   [meter(STATION, export_wh=400, green_wh=400), meter(HOUSE, import_wh=500),
                                    meter(NEIGHBOUR, import_wh=3000)], [ppa], {}, TARIFFS)
    # A cloud: 400 Wh exported. The agreement takes its 25 % (100 Wh) first, the spot sale the rest.
    assert result.delivery(ppa_trade_id(ppa.ppa_id)).delivered_wh == 100
    assert result.delivery((1).to_bytes(16, "big")).delivered_wh == 300
    assert paid(result, HOUSE, Reason.PPA) == -12_000                    # 100 Wh at 0.12
    assert paid(result, STATION, Reason.SHORTFALL) == -810_000           # 2700 Wh of the spot sale at retail
    certs = certify_slot(result)
    moved = {t.trade_id: t.units for t in certs.transfers}
    assert (moved[ppa_trade_id(ppa.ppa_id)].start, moved[ppa_trade_id(ppa.ppa_id)].end) == (0, 100)   # PPA first
    assert total_wh(certs.retired_by(HOUSE)) == 100


def test_pay_as_produced_without_the_generators_reading_is_no_position():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, shape=Shape.PAY_AS_PRODUCED))
    result = settle_slot_with_ppas(SLOT, [], [meter(HOUSE, import_wh=700)], [ppa], {}, TARIFFS)
    assert result.deliveries == () and paid(result, HOUSE, Reason.EXTRA_IMPORT) == -210_000


# --- baseload ---------------------------------------------------------------------------------

def test_baseload_shortfall_the_buyer_pays_the_contract_and_the_seller_the_shortfall():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE))                 # 500 Wh a slot at 0.12
    result = settle_slot_with_ppas(SLOT, [spot(1, STATION, NEIGHBOUR, 200)],
                                   [meter(STATION, export_wh=300), meter(HOUSE, import_wh=500),
                                    meter(NEIGHBOUR, import_wh=200)], [ppa], {}, TARIFFS)
    assert result.delivery(ppa_trade_id(ppa.ppa_id)).delivered_wh == 300  # all 300 Wh to the PPA first
    assert result.delivery((1).to_bytes(16, "big")).delivered_wh == 0
    assert paid(result, HOUSE, Reason.PPA) == -60_000                    # the whole 500 Wh at 0.12
    assert paid(result, STATION, Reason.SHORTFALL) == -120_000           # 400 Wh undelivered at retail
    assert paid(result, HOUSE, Reason.EXTRA_IMPORT) == 0                 # its 500 Wh are contracted
    assert result.total_uc == 0


def test_baseload_shortfall_with_a_penalty_pays_the_buyer_too():
    terms = make_terms(STATION, HOUSE, shortfall=Shortfall.PENALTY, penalty_uc_per_kwh=50_000)
    ppa = ActiveAgreement.of(terms)
    result = settle_slot_with_ppas(SLOT, [], [meter(STATION, export_wh=300), meter(HOUSE, import_wh=500)],
                                   [ppa], {}, TARIFFS)
    assert paid(result, HOUSE, Reason.PPA_PENALTY) == 10_000             # 200 Wh undelivered at 0.05
    assert paid(result, STATION, Reason.PPA_PENALTY) == -10_000
    assert paid(result, STATION, Reason.SHORTFALL) == -60_000


def test_baseload_without_priority_shares_the_export_pro_rata_with_spot():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, priority_over_spot=False))
    result = settle_slot_with_ppas(SLOT, [spot(1, STATION, NEIGHBOUR, 200)], [meter(STATION, export_wh=300)],
                                   [ppa], {}, TARIFFS)
    # 500 : 200 of 300 Wh: 214.3 and 85.7, the left-over Wh to the larger remainder (the spot sale).
    assert result.delivery(ppa_trade_id(ppa.ppa_id)).delivered_wh == 214
    assert result.delivery((1).to_bytes(16, "big")).delivered_wh == 86


def test_profile_positions_follow_the_time_of_day():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, shape=Shape.PROFILE))   # 500 Wh 08:00-18:00 UTC
    night = SLOT - 10 * 3600
    day = settle_slot_with_ppas(SLOT, [], [meter(STATION, export_wh=900)], [ppa], {}, TARIFFS)
    dark = settle_slot_with_ppas(night, [], [], [ppa], {}, TARIFFS)
    assert day.delivery(ppa_trade_id(ppa.ppa_id)).contracted_wh == 500 and dark.deliveries == ()


# --- indexation and the term ------------------------------------------------------------------

def test_an_indexed_price_follows_the_published_reference():
    ppa = ActiveAgreement.of(make_terms(STATION, HOUSE, index_name="cpi-z1", index_base=1000))
    result = settle_slot_with_ppas(SLOT, [], [meter(STATION, export_wh=500), meter(HOUSE, import_wh=500)],
                                   [ppa], {"cpi-z1": 1100}, TARIFFS)
    assert paid(result, HOUSE, Reason.PPA) == -66_000                    # 500 Wh at 0.12 × 1.1
    with pytest.raises(PpaIndexMissing):
        settle_slot_with_ppas(SLOT, [], [], [ppa], {}, TARIFFS)


def test_no_position_outside_the_term_or_after_a_termination():
    terms = make_terms(STATION, HOUSE)
    assert settle_slot_with_ppas(SLOT + 86400, [], [], [ActiveAgreement.of(terms)], {}, TARIFFS).deliveries == ()
    ended = ActiveAgreement.of(terms, ends_slot=SLOT)
    assert settle_slot_with_ppas(SLOT, [], [], [ended], {}, TARIFFS).deliveries == ()
    assert settle_slot_with_ppas(SLOT - 900, [], [], [ended], {}, TARIFFS).deliveries != ()


def test_a_positions_trade_id_is_neither_a_take_nor_a_swap():
    ppa_id = bytes(range(32))
    assert ppa_id_of_trade(ppa_trade_id(ppa_id)) == ppa_id
    assert ppa_id_of_trade(bytes(16)) is None and ppa_id_of_trade(bytes(16) + b"/swap") is None


# --- properties -------------------------------------------------------------------------------

ACCOUNTS = (STATION, HOUSE, NEIGHBOUR, SHOP)


@st.composite
def slot_inputs(draw: st.DrawFn):
    trades = []
    for i in range(draw(st.integers(0, 8))):
        seller, buyer = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        trades.append(spot(i, seller, buyer, draw(st.integers(1, 4000)), draw(st.integers(0, 500_000)),
                           draw(st.booleans())))
    agreements = []
    for i in range(draw(st.integers(0, 4))):
        seller, buyer = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        shape = draw(st.sampled_from(Shape))
        changes = {"name": f"agreement {i}", "priority_over_spot": draw(st.booleans()),
                   "green": draw(st.booleans())}
        if shape is Shape.PAY_AS_PRODUCED:
            changes["share_ppm"] = draw(st.integers(1, 250_000))      # four at most: never above 100 %
        elif shape is Shape.BASELOAD:
            changes["baseload_wh"] = draw(st.integers(1, 3000))
        if draw(st.booleans()):
            changes.update(shortfall=Shortfall.PENALTY, penalty_uc_per_kwh=draw(st.integers(1, 400_000)))
        agreements.append(ActiveAgreement.of(make_terms(seller, buyer, shape=shape, **changes)))
    meters = [meter(a, draw(st.integers(0, 6000)), draw(st.integers(0, 6000)), draw(st.integers(0, 6000)))
              for a in draw(st.lists(st.sampled_from(ACCOUNTS), unique=True))]
    return trades, meters, agreements


@settings(max_examples=150, deadline=None)
@given(slot_inputs(), st.randoms(use_true_random=False))
def test_money_and_certificates_are_conserved_ppa_first_and_order_independent(inputs, rng: random.Random):
    trades, meters, agreements = inputs
    result = settle_slot_with_ppas(SLOT, trades, meters, agreements, {}, TARIFFS)
    assert result.total_uc == 0
    # The same sets in another order, agreements given twice: the same settlement.
    shuffled = [list(x) for x in (trades, meters, agreements + agreements)]
    for items in shuffled:
        rng.shuffle(items)
    assert settle_slot_with_ppas(SLOT, *shuffled, {}, TARIFFS) == result
    # PPA before spot: a seller's priority contracts are fully delivered before any other gets a Wh.
    first_ids = {ppa_trade_id(a.ppa_id) for a in agreements if a.terms.priority_over_spot}
    for seller in ACCOUNTS:
        first = [d for d in result.deliveries if d.seller == seller and d.trade_id in first_ids]
        rest = [d for d in result.deliveries if d.seller == seller and d.trade_id not in first_ids]
        if any(d.delivered_wh for d in rest):
            assert all(d.delivered_wh == d.contracted_wh for d in first)
        export = next((m.export_wh for m in meters if m.account == seller), 0)
        assert sum(d.delivered_wh for d in first + rest) == min(export, sum(d.contracted_wh for d in first + rest))
    # Certificates: every issued unit is held or retired exactly once; moved only with delivered Wh.
    certs = certify_slot(result)
    held = sum(total_wh(units) for _, units in certs.holdings)
    assert total_wh(certs.issued) == held + total_wh(r.units for r in certs.retirements)
    for delivery in result.deliveries:
        moved = sum(t.units.wh for t in certs.transfers if t.trade_id == delivery.trade_id)
        assert moved <= (delivery.delivered_wh if delivery.green else 0)
