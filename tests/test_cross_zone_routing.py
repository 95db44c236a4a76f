"""Fee-inclusive routing across zones (``p2pgrid.market.locality``), the maker's cross-zone price
rule, and the settlement fee matrix: worked examples and hypothesis properties."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.errors import ConfigError
from p2pgrid.market.locality import (
    Locality, ZoneNotTraded, effective_price, label_trades, route_zones, settlement_grid_fees, taker_price,
)
from p2pgrid.market.orders import RestingOrder
from p2pgrid.market.router import BookLeg
from p2pgrid.settlement.rules import Reason, TradeRecord, ZoneTariffs, settle_slot, MeterEntry
from p2pgrid.trading.maker import Accept, Refuse, decide_take
from p2pgrid.trading.messages import RefuseReason, Take
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Order, Side, Source

NOW = 1_700_000_000_000
HOME = Locality("a", {"b": 30_000, "c": 5_000})


def resting(number: int, price: int, qty: int = 1000) -> RestingOrder:
    return RestingOrder(number.to_bytes(16, "big"), price, qty)


def legs_by_zone(plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for leg in plan.legs:
        out[leg.zone] = out.get(leg.zone, 0) + leg.qty_wh
    return out


# --- worked examples ----------------------------------------------------------------------------

def test_buyer_takes_the_neighbour_offer_cheaper_by_more_than_the_fee():
    plan = route_zones(Side.BUY, 1000, {"a": [resting(1, 200_000)], "b": [resting(2, 150_000)]}, [], NOW, HOME)
    (leg,) = plan.legs
    assert (leg.order_id, leg.zone, leg.price, leg.grid_fee) == (resting(2, 0).order_id, "b", 150_000, 30_000)
    assert plan.total_uc == trade_value(1000, 150_000) + trade_value(1000, 30_000) == 180_000
    assert plan.threshold_price == 180_000


def test_buyer_stays_home_when_the_neighbour_is_cheaper_by_less_than_the_fee():
    plan = route_zones(Side.BUY, 1000, {"a": [resting(1, 200_000)], "b": [resting(2, 175_000)]}, [], NOW, HOME)
    assert legs_by_zone(plan) == {"a": 1000}
    assert plan.legs[0].grid_fee == 0 and plan.total_uc == 200_000


def test_a_tie_after_fees_stays_home():
    plan = route_zones(Side.BUY, 1000, {"b": [resting(2, 170_000)], "a": [resting(1, 200_000)]}, [], NOW, HOME)
    assert legs_by_zone(plan) == {"a": 1000}


def test_buyer_splits_across_zones_by_effective_price():
    books = {"a": [resting(1, 200_000, 400)], "b": [resting(2, 160_000, 300)], "c": [resting(3, 198_000, 500)]}
    plan = route_zones(Side.BUY, 1000, books, [], NOW, HOME)
    # effective: b 190k, c 203k, a 200k  →  b 300, a 400, c 300
    assert [(leg.zone, leg.qty_wh) for leg in plan.legs] == [("b", 300), ("a", 400), ("c", 300)]
    assert plan.total_uc == (trade_value(300, 160_000) + trade_value(300, 30_000) + trade_value(400, 200_000)
                             + trade_value(300, 198_000) + trade_value(300, 5_000))


def test_limit_price_bounds_the_effective_price():
    plan = route_zones(Side.BUY, 1000, {"b": [resting(2, 150_000)]}, [], NOW, HOME, limit_price=170_000)
    assert plan.filled_wh == 0 and plan.legs == ()


def test_seller_into_a_neighbour_bid_trades_at_bid_minus_fee():
    plan = route_zones(Side.SELL, 1000, {"a": [resting(1, 100_000)], "b": [resting(2, 140_000)]}, [], NOW, HOME)
    (leg,) = plan.legs
    assert (leg.zone, leg.price, leg.grid_fee) == ("b", 110_000, 30_000)
    assert plan.total_uc == trade_value(1000, 110_000)


def test_a_neighbour_bid_below_the_fee_is_skipped():
    plan = route_zones(Side.SELL, 1000, {"b": [resting(2, 20_000)]}, [], NOW, HOME)
    assert plan.filled_wh == 0


def test_a_book_of_a_zone_not_traded_is_refused():
    with pytest.raises(ZoneNotTraded):
        route_zones(Side.BUY, 1000, {"z": [resting(1, 1)]}, [], NOW, HOME)


def test_locality_rules():
    assert HOME.zones == ("a", "b", "c") and HOME.neighbours == ("b", "c")
    assert HOME.fee("a") == 0 and HOME.fee("b") == 30_000
    assert HOME.trades_with("c") and not HOME.trades_with("z")
    with pytest.raises(ZoneNotTraded, match="'a' does not trade with zone 'z'"):
        HOME.fee("z")
    with pytest.raises(ConfigError):
        Locality("a", {"a": 1})
    with pytest.raises(ConfigError):
        Locality("a", {"b": -1})


def test_settlement_fee_matrix_is_symmetric_and_zones_must_agree():
    fees = settlement_grid_fees([Locality("a", {"b": 30_000}), Locality("b", {"a": 30_000})])
    assert {(f.from_zone, f.to_zone, f.price) for f in fees} == {("a", "b", 30_000), ("b", "a", 30_000)}
    with pytest.raises(ConfigError, match="disagree"):
        settlement_grid_fees([Locality("a", {"b": 30_000}), Locality("b", {"a": 31_000})])


def test_settlement_charges_the_fee_on_delivered_wh_of_a_labelled_trade():
    gateway, seller, buyer = b"g" * 32, b"s" * 32, b"b" * 32
    slot = 1_700_000_100
    trade = TradeRecord(b"t1", slot, seller, buyer, "ledger", "ledger", 1000, 150_000)
    (labelled,) = label_trades([trade], {b"t1": ("b", "a")})
    tariffs = ZoneTariffs(gateway, 300_000, 50_000, settlement_grid_fees([HOME]))
    meters = [MeterEntry(seller, "b", slot, 0, 600), MeterEntry(buyer, "a", slot, 1000, 0)]
    result = settle_slot(slot, [labelled], meters, tariffs)
    fees = [t for t in result.transfers if t.reason is Reason.GRID_FEE]
    assert [(f.payer, f.payee, f.amount_uc) for f in fees] == [(buyer, gateway, trade_value(600, 30_000))]


# --- the maker's price rule across zones ----------------------------------------------------------

RULES = SlotRules()
SLOT = RULES.tradable_slots(NOW)[2]
MAKER, TAKER = b"m" * 32, b"t" * 32


def bid(price: int) -> Order:
    return Order(order_id=b"o" * 16, owner=MAKER, side=Side.BUY, zone="b", slot=SLOT, qty_wh=1000, limit_price=price,
                 green=False, source=Source.NONE, created_ms=NOW, expiry_ms=RULES.gate_closure_ms(SLOT), nonce=1)


def sell_take(price: int) -> Take:
    return Take(take_id=os.urandom(16), taker=TAKER, maker=MAKER, order_id=b"o" * 16, side=Side.SELL, zone="b",
                slot=SLOT, qty_wh=500, price=price, sent_ms=NOW, taker_zone="a", ledger="area")


def test_maker_accepts_a_cross_zone_sell_take_only_at_bid_minus_fee():
    assert decide_take(sell_take(110_000), bid(140_000), 0, 0, RULES, NOW, grid_fee=30_000) == Accept(500)
    refused = decide_take(sell_take(140_000), bid(140_000), 0, 0, RULES, NOW, grid_fee=30_000)
    assert isinstance(refused, Refuse) and refused.reason is RefuseReason.PRICE_MISMATCH


# --- properties -----------------------------------------------------------------------------------

prices = st.integers(min_value=0, max_value=400_000)
fees = st.integers(min_value=0, max_value=100_000)


@st.composite
def markets(draw):
    locality = Locality("a", {"b": draw(fees), "c": draw(fees)})
    number = 0
    books = {}
    for zone in ("a", "b", "c"):
        orders = []
        for _ in range(draw(st.integers(0, 5))):
            number += 1
            orders.append(resting(number, draw(prices), draw(st.integers(1, 2000))))
        side = draw(st.sampled_from([Side.BUY, Side.SELL]))
        books[zone] = orders
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    for zone, orders in books.items():   # best first, as the books give them
        orders.sort(key=lambda o: o.price if side is Side.BUY else -o.price)
    qty = draw(st.integers(1, 8000))
    limit = draw(st.none() | prices)
    return locality, side, books, qty, limit


def originals(books):
    return {o.order_id: (zone, o) for zone, orders in books.items() for o in orders}


def better(side, x, y):
    return x < y if side is Side.BUY else x > y


@settings(max_examples=300, deadline=None)
@given(markets())
def test_never_leaves_a_strictly_better_effective_level_unused(market):
    """Above all: never crosses a zone while a same-zone level is cheaper after fees (and never
    stays home while a neighbour is cheaper after fees)."""
    locality, side, books, qty, limit = market
    plan = route_zones(side, qty, books, [], NOW, locality, limit)
    used = {leg.order_id: leg.qty_wh for leg in plan.legs}
    orders = originals(books)
    effective = {oid: effective_price(side, o.price, locality.fee(zone)) for oid, (zone, o) in orders.items()}
    for oid in used:
        for other, (zone, o) in orders.items():
            if used.get(other, 0) < o.qty_wh and effective[other] >= 0 and (limit is None or not better(side, limit, effective[other])):
                assert not better(side, effective[other], effective[oid]), (zone, o, oid)


@settings(max_examples=300, deadline=None)
@given(markets())
def test_fee_is_applied_exactly_once(market):
    locality, side, books, qty, limit = market
    plan = route_zones(side, qty, books, [], NOW, locality, limit)
    orders = originals(books)
    total = 0
    for leg in plan.legs:
        assert isinstance(leg, BookLeg)
        zone, order = orders[leg.order_id]
        fee = locality.fee(zone)
        assert leg.grid_fee == fee and leg.zone == zone
        assert leg.price == taker_price(side, order.price, fee) == (order.price if side is Side.BUY else order.price - fee)
        assert leg.value_uc == trade_value(leg.qty_wh, leg.price)
        assert 0 < leg.qty_wh <= order.qty_wh
        if limit is not None:
            assert not better(side, limit, effective_price(side, order.price, fee))
        total += leg.value_uc + (trade_value(leg.qty_wh, fee) if side is Side.BUY else 0)
    assert plan.total_uc == total
    assert plan.filled_wh == sum(leg.qty_wh for leg in plan.legs) <= qty


@settings(max_examples=150, deadline=None)
@given(markets())
def test_fills_as_much_as_the_fee_adjusted_market_offers(market):
    locality, side, books, qty, limit = market
    plan = route_zones(side, qty, books, [], NOW, locality, limit)
    available = sum(o.qty_wh for oid, (zone, o) in originals(books).items()
                    if effective_price(side, o.price, locality.fee(zone)) >= 0
                    and (limit is None or not better(side, limit, effective_price(side, o.price, locality.fee(zone)))))
    assert plan.filled_wh == min(qty, available)


def test_neighbour_depth_is_shown_at_fee_inclusive_prices():
    from p2pgrid.market.book import Depth, DepthLevel
    from p2pgrid.market.locality import fee_inclusive_depth

    depth = Depth(bids=(DepthLevel(140_000, 500, 1), DepthLevel(20_000, 100, 1)), asks=(DepthLevel(150_000, 1000, 2),))
    assert fee_inclusive_depth(depth, 30_000) == Depth(bids=(DepthLevel(110_000, 500, 1),),
                                                       asks=(DepthLevel(180_000, 1000, 2),))
