"""Router: optimality against brute force and single venues, limits, executable plans."""

from __future__ import annotations

from math import isqrt

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.market import amm
from p2pgrid.market.book import OrderBook
from p2pgrid.market.errors import InvalidOrder
from p2pgrid.market.orders import BookOrder, RestingOrder, Side
from p2pgrid.market.router import BookLeg, PoolLeg, RoutePlan, route
from p2pgrid.units import trade_value

GATE = 10**9
NOW = 1_000


def pool(n: int, energy: int, credits: int, fee_bps: int = 30, cap: int | None = None,
         losses: amm.HostLosses = amm.NO_LOSSES) -> amm.Pool:
    return amm.open_pool(pool_id=bytes([n]) * 16, host=bytes([n]) * 32, zone="z", slot=0, energy_wh=energy,
                         credits_uc=credits, fee_bps=fee_bps, energy_cap_wh=cap if cap is not None else energy * 2,
                         gate_closure_ms=GATE, now_ms=0, losses=losses)


def resting(specs: list[tuple[int, int]], side: Side) -> list[RestingOrder]:
    """Resting orders of the side opposite to ``side``, best first, from (price, qty)."""
    ranked = sorted(specs, key=lambda s: s[0] if side is Side.BUY else -s[0])
    return [RestingOrder(i.to_bytes(4, "big"), price, qty) for i, (price, qty) in enumerate(ranked)]


# --- brute force ------------------------------------------------------------------------------

def book_values(orders: list[RestingOrder], upto: int, limit: int | None, side: Side) -> list[int | None]:
    """Money of taking the best q Wh of the book, q = 0..upto (None where the book runs out)."""
    values: list[int | None] = [0]
    pieces: list[tuple[int, int]] = []
    for o in orders:
        if limit is not None and (o.price > limit if side is Side.BUY else o.price < limit):
            break
        pieces.append((o.price, o.qty_wh))
    for q in range(1, upto + 1):
        need, total = q, 0
        for price, qty in pieces:
            take = min(need, qty)
            total += trade_value(take, price)
            need -= take
            if need == 0:
                break
        values.append(total if need == 0 else None)
    return values


def pool_values(p: amm.Pool, upto: int, limit: int | None, side: Side) -> list[int | None]:
    values: list[int | None] = [0]
    for q in range(1, upto + 1):
        if side is Side.BUY:
            money = amm.amount_in_for_out(q, p.credits_uc, p.energy_wh, p.fee_bps) if q < p.energy_wh else None
            ok = money is not None and (limit is None or money * 1000 <= limit * q)
        else:
            money = amm.amount_out_for_in(q, p.energy_wh, p.credits_uc, p.fee_bps) \
                if p.energy_wh + q <= p.energy_cap_wh else None
            ok = money is not None and (limit is None or money * 1000 >= limit * q)
        values.append(money if ok else None)
    return values


def brute_force(side: Side, total: int, orders: list[RestingOrder], pools: list[amm.Pool],
                limit: int | None) -> int | None:
    """Best money over every split of exactly ``total`` Wh (min for BUY, max for SELL)."""
    curves = [book_values(orders, total, limit, side)] + [pool_values(p, total, limit, side) for p in pools]
    better = min if side is Side.BUY else max
    best: dict[int, int] = {0: 0}      # Wh so far -> best money
    for curve in curves:
        step: dict[int, int] = {}
        for have, money in best.items():
            for q in range(0, total - have + 1):
                value = curve[q]
                if value is None:
                    continue
                key = have + q
                candidate = money + value
                step[key] = candidate if key not in step else better(step[key], candidate)
        best = step
    return best.get(total)


def check_plan_is_valid(plan: RoutePlan, orders: list[RestingOrder], pools: list[amm.Pool],
                        limit: int | None, now: int = NOW) -> None:
    by_id = {o.order_id: o for o in orders}
    pools_by_id = {p.pool_id: p for p in pools}
    seen: set[bytes] = set()
    filled = money = 0
    for leg in plan.legs:
        if isinstance(leg, BookLeg):
            order = by_id[leg.order_id]
            assert leg.order_id not in seen and 0 < leg.qty_wh <= order.qty_wh and leg.price == order.price
            assert leg.value_uc == trade_value(leg.qty_wh, leg.price)
            if limit is not None:
                assert leg.price <= limit if plan.side is Side.BUY else leg.price >= limit
            seen.add(leg.order_id)
        else:
            assert isinstance(leg, PoolLeg) and leg.pool_id not in seen
            seen.add(leg.pool_id)
            p = amm.accrue(pools_by_id[leg.pool_id], now)
            if plan.side is Side.BUY:
                _, quote = amm.swap_exact_out(p, Side.BUY, leg.energy_wh, now, max_in=leg.credits_uc)
                assert (leg.exact, quote.amount_in, leg.amount_in) == ("out", leg.credits_uc, leg.credits_uc)
                if limit is not None:
                    assert leg.credits_uc * 1000 <= limit * leg.energy_wh
            else:
                _, quote = amm.swap_exact_in(p, Side.SELL, leg.energy_wh, now, min_out=leg.credits_uc)
                assert (leg.exact, quote.amount_out, leg.amount_out) == ("in", leg.credits_uc, leg.credits_uc)
                if limit is not None:
                    assert leg.credits_uc * 1000 >= limit * leg.energy_wh
        filled += leg.qty_wh if isinstance(leg, BookLeg) else leg.energy_wh
        money += leg.value_uc if isinstance(leg, BookLeg) else leg.credits_uc
    assert filled == plan.filled_wh <= plan.requested_wh
    assert money == plan.total_uc


small_pool = st.builds(lambda e, unit, fee, room: (e, e * unit, fee, e + room),
                       st.integers(2, 25), st.integers(50, 500), st.sampled_from([0, 30, 100]), st.integers(0, 25))
small_book = st.lists(st.tuples(st.integers(50_000, 500_000), st.integers(1, 6)), max_size=4)


@settings(max_examples=250, deadline=None)
@given(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 20), small_book, st.lists(small_pool, max_size=2),
       st.none() | st.integers(50_000, 600_000))
def test_router_is_within_one_microcredit_per_leg_of_brute_force(side, qty, book_specs, pool_specs, limit):
    orders = resting(book_specs, side)
    pools = [pool(i, e, m, fee, cap) for i, (e, m, fee, cap) in enumerate(pool_specs)]
    plan = route(side, qty, orders, pools, NOW, limit)
    check_plan_is_valid(plan, orders, pools, limit)
    best = brute_force(side, plan.filled_wh, orders, pools, limit)
    assert best is not None
    if side is Side.BUY:
        assert best <= plan.total_uc <= best + len(plan.legs)
    else:
        assert best - len(plan.legs) <= plan.total_uc <= best
    if limit is None:    # and it fills all that can be filled
        if side is Side.BUY:
            available = sum(q for _, q in book_specs) + sum(p.energy_wh - 1 for p in pools)
        else:
            available = sum(q for _, q in book_specs) + sum(
                len([v for v in pool_values(p, p.energy_cap_wh - p.energy_wh, None, side)[1:] if v]) for p in pools)
        assert plan.filled_wh == min(qty, available)


large_pool = st.builds(lambda e, unit, fee: (e, e * unit, fee),
                       st.integers(1_000, 10**6), st.integers(100, 400), st.sampled_from([0, 5, 30, 100]))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 200_000),
       st.lists(st.tuples(st.integers(100_000, 400_000), st.integers(1, 20_000)), max_size=30),
       st.lists(large_pool, min_size=1, max_size=4))
def test_router_beats_every_single_venue(side, qty, book_specs, pool_specs):
    orders = resting(book_specs, side)
    pools = [pool(i, e, m, fee) for i, (e, m, fee) in enumerate(pool_specs)]
    plan = route(side, qty, orders, pools, NOW)
    check_plan_is_valid(plan, orders, pools, None)
    singles = [route(side, qty, orders, [], NOW)] + [route(side, qty, [], [p], NOW) for p in pools]
    for single in singles:
        if single.filled_wh == plan.filled_wh:
            if side is Side.BUY:
                assert plan.total_uc <= single.total_uc + len(plan.legs)
            else:
                assert plan.total_uc >= single.total_uc - len(plan.legs)
        assert single.filled_wh <= plan.filled_wh


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 100_000),
       st.lists(st.tuples(st.integers(100_000, 400_000), st.integers(1, 20_000)), max_size=20),
       st.lists(large_pool, max_size=4), st.integers(100_000, 400_000))
def test_router_never_crosses_the_limit_price(side, qty, book_specs, pool_specs, limit):
    orders = resting(book_specs, side)
    pools = [pool(i, e, m, fee) for i, (e, m, fee) in enumerate(pool_specs)]
    plan = route(side, qty, orders, pools, NOW, limit)
    check_plan_is_valid(plan, orders, pools, limit)     # every leg's (average) price is within it


# --- worked examples --------------------------------------------------------------------------

def test_pool_is_used_until_its_marginal_price_reaches_the_next_ask():
    # E = 10 kWh, M = 3 credits (0.30 credits/kWh), γ = 0.997; the book asks 0.33 credits/kWh.
    energy, credits, ask = 10_000, 3_000_000, 330_000
    p = pool(0, energy, credits)
    orders = [RestingOrder(b"ask", ask, 100_000)]
    plan = route(Side.BUY, 5_000, orders, [p], NOW)
    pool_leg = next(leg for leg in plan.legs if isinstance(leg, PoolLeg))
    closed_form = energy - isqrt(1000 * energy * credits * 1000 // (997 * ask))   # Δe* = E − √(E·M/(γ·a))
    assert abs(pool_leg.energy_wh - closed_form) <= 1
    assert plan.filled_wh == 5_000
    assert [leg.qty_wh for leg in plan.legs if isinstance(leg, BookLeg)] == [5_000 - pool_leg.energy_wh]
    assert plan.threshold_price == ask


def test_two_identical_pools_share_a_buy_equally():
    pools = [pool(0, 50_000, 15_000_000), pool(1, 50_000, 15_000_000)]
    plan = route(Side.BUY, 10_001, [], pools, NOW)
    first, second = (leg.energy_wh for leg in plan.legs)
    assert first + second == 10_001 and abs(first - second) <= 1


def test_cheaper_book_is_taken_before_any_pool():
    plan = route(Side.BUY, 100, [RestingOrder(b"a", 100_000, 100)], [pool(0, 10_000, 3_000_000)], NOW)
    assert plan.legs == (BookLeg(b"a", 100, 100_000, 10_000),)


def test_seller_splits_between_bids_and_pool():
    p = pool(0, 10_000, 3_000_000, cap=50_000)
    bids = [RestingOrder(b"b1", 290_000, 200), RestingOrder(b"b2", 200_000, 10_000)]
    plan = route(Side.SELL, 1_000, bids, [p], NOW)
    assert plan.filled_wh == 1_000
    assert plan.legs[0] == BookLeg(b"b1", 200, 290_000, 58_000)
    pool_leg = plan.legs[-1]
    assert isinstance(pool_leg, PoolLeg) and pool_leg.energy_wh == 800


def test_frozen_and_empty_pools_are_skipped_and_decay_is_applied():
    p = pool(0, 10_000, 3_000_000)
    assert route(Side.BUY, 100, [], [p], GATE).legs == ()
    leaky = pool(1, 10_000, 3_000_000, losses=amm.HostLosses(0, 9_999))
    assert route(Side.BUY, 100, [], [leaky], 3_600_000).legs == ()      # all but 1 Wh gone after an hour
    half = pool(2, 10_000, 3_000_000, losses=amm.HostLosses(0, 5_000))
    plan = route(Side.BUY, 100, [], [half], 3_600_000)
    assert plan.filled_wh == 100
    check_plan_is_valid(plan, [], [half], None, now=3_600_000)   # exact-out amounts computed on the decayed pool


def test_router_reads_the_book_the_book_provides():
    book = OrderBook("z", 0)
    for n, price in enumerate([300_000, 310_000, 320_000]):
        book.add(BookOrder(bytes([n]) * 16, b"S" * 32, Side.SELL, 100, price, 0, 10**12), 0)
    plan = route(Side.BUY, 150, book.resting(Side.BUY, b"T" * 32, NOW), [], NOW)
    assert [(leg.order_id, leg.qty_wh) for leg in plan.legs] == [(bytes([0]) * 16, 100), (bytes([1]) * 16, 50)]
    assert book.resting(Side.BUY, b"S" * 32, NOW) == []     # own orders are never offered


def test_bad_requests_are_refused():
    with pytest.raises(InvalidOrder):
        route(Side.BUY, 0, [], [], NOW)
    with pytest.raises(InvalidOrder):
        route(Side.BUY, 10, [], [], NOW, limit_price=-5)
    assert route(Side.BUY, 10, [], [], NOW).filled_wh == 0
