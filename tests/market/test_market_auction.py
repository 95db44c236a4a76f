"""Uniform-price call auction: worked examples, price bounds, welfare against brute force."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.market.auction import AuctionFill, check_feasible, clear, social_welfare
from p2pgrid.market.errors import Overfill, UnknownOrder
from p2pgrid.market.orders import BookOrder, Side

FAR = 10**12


def order(n: int, side: Side, qty: int, price: int, *, created: int = 0, expiry: int = FAR) -> BookOrder:
    return BookOrder(order_id=n.to_bytes(4, "big"), owner=bytes([n % 5]) * 32, side=side, qty_wh=qty, price=price,
                     created_ms=created, expiry_ms=expiry)


def by_id(orders: list[BookOrder]) -> dict[bytes, BookOrder]:
    return {o.order_id: o for o in orders}


def test_worked_example_clears_at_the_midpoint_of_the_marginal_pair():
    orders = [order(1, Side.BUY, 100, 400), order(2, Side.BUY, 100, 300), order(3, Side.BUY, 100, 100),
              order(4, Side.SELL, 150, 150), order(5, Side.SELL, 50, 250), order(6, Side.SELL, 100, 500)]
    result = clear(orders)
    # Bids 400, 300 meet offers 150, 250: 200 Wh trade; marginal bid 300, marginal offer 250.
    # Left over: bid 100 (b') and offer 500 (a'), so the interval is [max(250, 100), min(300, 500)].
    assert result.volume_wh == 200
    assert (result.marginal_bid, result.marginal_offer, result.price) == (300, 250, 275)
    assert [(f.buy_order_id[-1], f.sell_order_id[-1], f.qty_wh) for f in result.fills] == [(1, 4, 100), (2, 4, 50),
                                                                                         (2, 5, 50)]
    assert social_welfare(result.fills, by_id(orders)) == 100 * 250 + 50 * 150 + 50 * 50


def test_partially_filled_marginal_offer_sets_the_price():
    orders = [order(1, Side.BUY, 100, 400), order(2, Side.SELL, 150, 250)]
    assert (clear(orders).volume_wh, clear(orders).price) == (100, 250)


def test_partially_filled_marginal_bid_sets_the_price():
    orders = [order(1, Side.BUY, 100, 300), order(2, Side.SELL, 40, 100)]
    result = clear(orders)
    assert (result.volume_wh, result.price) == (40, 300)     # the bid is left with 60 Wh at 300


def test_no_cross_no_trade_and_expired_orders_take_no_part():
    assert clear([order(1, Side.BUY, 10, 100), order(2, Side.SELL, 10, 200)]).price is None
    result = clear([order(1, Side.BUY, 10, 300, expiry=50), order(2, Side.SELL, 10, 200)], now_ms=50)
    assert result.fills == () and result.volume_wh == 0


def test_infeasible_fill_sets_are_refused():
    orders = by_id([order(1, Side.BUY, 10, 300), order(2, Side.SELL, 10, 200)])
    with pytest.raises(Overfill):
        check_feasible([AuctionFill(b"\0\0\0\1", b"\0\0\0\2", b"", b"", 11, 250)], orders)
    with pytest.raises(UnknownOrder):
        check_feasible([AuctionFill(b"\0\0\0\2", b"\0\0\0\1", b"", b"", 1, 250)], orders)


orders_strategy = st.lists(st.tuples(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 3), st.integers(1, 9),
                                     st.integers(0, 3)), max_size=6)


def build(specs: list[tuple]) -> list[BookOrder]:
    return [order(n, side, qty, price, created=created) for n, (side, qty, price, created) in enumerate(specs)]


@settings(max_examples=300, deadline=None)
@given(orders_strategy)
def test_price_lies_between_marginal_accepted_bid_and_offer(specs):
    orders = build(specs)
    result = clear(orders)
    check_feasible(result.fills, by_id(orders))
    if result.price is None:
        bids = [o.price for o in orders if o.side is Side.BUY]
        offers = [o.price for o in orders if o.side is Side.SELL]
        assert not bids or not offers or max(bids) < min(offers)
        return
    assert result.marginal_offer <= result.price <= result.marginal_bid
    ids = by_id(orders)
    for f in result.fills:
        assert f.price == result.price
        assert ids[f.buy_order_id].price >= result.price >= ids[f.sell_order_id].price
    # Nobody left out would strictly gain at the clearing price.
    used: dict[bytes, int] = {}
    for f in result.fills:
        used[f.buy_order_id] = used.get(f.buy_order_id, 0) + f.qty_wh
        used[f.sell_order_id] = used.get(f.sell_order_id, 0) + f.qty_wh
    for o in orders:
        if used.get(o.order_id, 0) < o.qty_wh:
            assert o.price <= result.price if o.side is Side.BUY else o.price >= result.price


def brute_force_welfare(orders: list[BookOrder]) -> int:
    """Best welfare over every feasible per-order fill (welfare depends only on per-order totals)."""
    bids = [o for o in orders if o.side is Side.BUY]
    offers = [o for o in orders if o.side is Side.SELL]
    best = 0
    for bought in itertools.product(*(range(o.qty_wh + 1) for o in bids)):
        for sold in itertools.product(*(range(o.qty_wh + 1) for o in offers)):
            if sum(bought) == sum(sold):
                welfare = sum(q * o.price for q, o in zip(bought, bids)) - sum(q * o.price for q, o in zip(sold, offers))
                best = max(best, welfare)
    return best


@settings(max_examples=200, deadline=None)
@given(orders_strategy)
def test_auction_welfare_is_at_least_any_feasible_alternative(specs):
    orders = build(specs)
    result = clear(orders)
    assert social_welfare(result.fills, by_id(orders)) >= brute_force_welfare(orders)
