"""Router: it never fills less than the best feasible quantity within the limit.

A limit bounds each leg's price: a book leg's own price, a pool leg's *average* price after the
pool's rounding (exact-out swaps round the buyer's payment up, exact-in swaps round the seller's
proceeds down). The oracle tries every integer split of the request over the venues and keeps the
largest total whose every leg is within the limit; the router must reach it, with grid fees too.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from p2pgrid.market.locality import Locality, route_zones
from p2pgrid.market.orders import RestingOrder, Side
from p2pgrid.market.router import BookLeg, PoolLeg, route
from test_market_router import NOW, book_values, check_plan_is_valid, pool, pool_values, resting, small_book, small_pool


def best_feasible_fill(side: Side, qty: int, orders: list[RestingOrder], pools, limit: int | None) -> int:
    """The most Wh (at most ``qty``) any split fills with every leg within the limit."""
    curves = [book_values(orders, qty, limit, side)] + [pool_values(p, qty, limit, side) for p in pools]
    reachable = {0}
    for curve in curves:
        reachable = {have + q for have in reachable for q in range(qty - have + 1) if curve[q] is not None}
    return max(reachable)


sides = st.sampled_from([Side.BUY, Side.SELL])
limits = st.integers(50_000, 600_000)


@settings(max_examples=400, deadline=None)
@given(sides, st.integers(1, 30), small_book, st.lists(small_pool, max_size=2), limits)
def test_the_router_fills_the_best_feasible_quantity_within_the_limit(side, qty, book_specs, pool_specs, limit):
    orders = resting(book_specs, side)
    pools = [pool(i, e, m, fee, cap) for i, (e, m, fee, cap) in enumerate(pool_specs)]
    plan = route(side, qty, orders, pools, NOW, limit)
    check_plan_is_valid(plan, orders, pools, limit)
    assert plan.filled_wh == best_feasible_fill(side, qty, orders, pools, limit)


@settings(max_examples=200, deadline=None)
@given(sides, st.integers(1, 30), small_book, small_book, st.lists(small_pool, max_size=1),
       st.integers(0, 60_000), limits)
def test_with_grid_fees_the_router_fills_the_best_feasible_quantity(side, qty, home_specs, away_specs, pool_specs,
                                                                    fee, limit):
    """Across zones the limit bounds *effective* prices (the grid fee counted)."""
    locality = Locality(home="home", grid_fees={"away": fee})
    home = resting(home_specs, side)
    away = [RestingOrder(b"away" + o.order_id, o.price, o.qty_wh) for o in resting(away_specs, side)]
    pools = [pool(i, e, m, f, cap) for i, (e, m, f, cap) in enumerate(pool_specs)]
    plan = route_zones(side, qty, {"home": home, "away": away}, pools, NOW, locality, limit)
    # The oracle sees each away order at its effective price; a seller's bid below the fee is gone.
    effective = [RestingOrder(o.order_id, o.price + fee if side is Side.BUY else o.price - fee, o.qty_wh)
                 for o in away]
    merged = resting([(o.price, o.qty_wh) for o in home + effective if o.price >= 0], side)
    assert plan.filled_wh == best_feasible_fill(side, qty, merged, pools, limit)
    for leg in plan.legs:
        if isinstance(leg, BookLeg) and leg.zone == "away":
            paid = leg.price + leg.grid_fee if side is Side.BUY else leg.price
            assert paid <= limit if side is Side.BUY else paid >= limit


# --- worked examples (found by the oracle against the previous router) -----------------------------

def test_a_sell_into_one_pool_fills_past_the_marginal_price_while_the_average_clears_the_limit():
    """The previous router stopped where the next Wh earned less than the limit (7 Wh); the average
    of a larger sale still clears it."""
    p = pool(0, 31, 11_067, 0, 82)
    plan = route(Side.SELL, 36, [], [p], NOW, 235_819)
    assert plan.filled_wh == best_feasible_fill(Side.SELL, 36, [], [p], 235_819) == 15
    (leg,) = plan.legs
    assert isinstance(leg, PoolLeg) and leg.credits_uc * 1000 >= 235_819 * leg.energy_wh


def test_a_buy_is_not_cut_short_by_rounding_in_the_pool_leg():
    p = pool(0, 60, 12_720, 100, 89)
    plan = route(Side.BUY, 14, [], [p], NOW, 312_209)
    assert plan.filled_wh == 14          # the previous router's bisection stopped at 10


def test_a_pool_of_one_wh_buys_from_a_seller_but_has_nothing_to_sell():
    p = pool(0, 1, 300, 0, 10)
    sold = route(Side.SELL, 3, [], [p], NOW, None)
    assert sold.filled_wh == 3 and isinstance(sold.legs[0], PoolLeg)
    assert route(Side.BUY, 1, [], [p], NOW, None).filled_wh == 0      # its last Wh cannot be taken
