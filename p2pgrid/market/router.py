"""Best split of a take between book orders and AMM pools (pure).

``route(side, qty_wh, book, pools, now_ms, limit_price)`` returns a ``RoutePlan``: plain data the
trading layer executes — ``BookLeg`` (take ``qty_wh`` of a resting order at its price) and
``PoolLeg`` (a swap with exact amounts). A buyer's plan minimises the total cost, a seller's
maximises the proceeds; the plan fills as much of ``qty_wh`` as the venues allow within the limit.

Rules
-----
Think of every venue as a queue of one-Wh increments with non-decreasing cost to a buyer
(non-increasing proceeds to a seller): a book order is ``qty_wh`` increments at its price; a pool
of reserves (E Wh, M µc), fee factor γ = (10000 − fee_bps)/10000, charges a buyer for the x-th Wh

    c(x) = M·E / (γ·(E − x)·(E − x + 1))            µc per Wh  (exact-out cost, before rounding)

and pays a seller for the x-th Wh ``γ·M·E / ((E + γx)(E + γ(x − 1)))``. Choosing the ``qty_wh``
cheapest increments is optimal because every queue is sorted (pools are convex). The router finds
the threshold price λ (integer µc/kWh) at which the venues together offer ``qty_wh``: each pool is
used until its increment cost reaches λ — the discrete form (y(y+1) for y², y = E − x) of the
closed form Δe* = E − √(1000·E·M/(γ·λ)) (λ per kWh, hence the 1000), solved with an integer square
root and corrected by a step or two — so all venues end at equal marginal price. λ is found by bisection: first over the book's
price levels, then between two adjacent levels. Increments costing between λ−1 and λ go to the book
first, then to pools in the given order (they differ by under 1 µc/kWh).

Integers: book legs cost ``units.trade_value`` (floor); buy legs are exact-out swaps
(``amm.amount_in_for_out``, rounded up), sell legs exact-in swaps (``amm.amount_out_for_in``,
rounded down) — so a plan costs at most one µc per leg more than the rational optimum.

Limit price: no book leg beyond it, no pool leg whose *average* price (after the pool's rounding)
is beyond it — the price the taker actually pays or gets on that leg, as a swap's min-out / max-in
bounds it. Each pool is capped at its largest leg within the limit (a closed form for the unrounded
average, then a short walk down past rounding: under floor/ceiling rounding the average is not
monotone, so it is never bisected), the book is cut at the limit, and the threshold search runs
over those capped venues; so the plan fills the most the venues allow within the limit, at equal
marginal price below the caps. A leg that rounding trims leaves its Wh to the book levels and
pools still within the limit (``_fill_up``). Frozen pools (``now_ms`` at or after gate closure) are skipped; the others are decayed to
``now_ms`` first (``amm.accrue``), so the plan matches what the host will compute. A SELL leg never
pushes a pool's energy above its cap.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from math import isqrt
from operator import attrgetter

from p2pgrid.market.amm import BPS, Pool, accrue, amount_in_for_out, amount_out_for_in
from p2pgrid.market.errors import InvalidOrder
from p2pgrid.market.orders import RestingOrder, Side
from p2pgrid.units import trade_value

__all__ = ["BookLeg", "PoolLeg", "RoutePlan", "route"]

WH_PER_KWH = 1000


@dataclass(frozen=True, slots=True)
class BookLeg:
    """Take ``qty_wh`` of resting order ``order_id`` at ``price``; money ``trade_value``.

    ``zone`` (the order's) and ``grid_fee`` (µc/kWh, 0 within the home zone) are set by
    ``market.locality.route_zones``; the plain ``route`` leaves them empty and 0.
    """

    order_id: bytes
    qty_wh: int
    price: int
    value_uc: int
    zone: str = ""
    grid_fee: int = 0


@dataclass(frozen=True, slots=True)
class PoolLeg:
    """Swap with pool ``pool_id``: BUY legs are exact-out (energy), SELL legs exact-in (energy)."""

    pool_id: bytes
    side: Side
    exact: str              # "out" for BUY legs, "in" for SELL legs
    amount_in: int
    amount_out: int
    energy_wh: int
    credits_uc: int


Leg = BookLeg | PoolLeg


@dataclass(frozen=True, slots=True)
class RoutePlan:
    side: Side
    requested_wh: int
    filled_wh: int
    total_uc: int           # paid by a buyer, received by a seller
    threshold_price: int    # λ: the marginal price (µc/kWh) at which the venues were equalised
    legs: tuple[Leg, ...]

    @property
    def average_price(self) -> int:
        return self.total_uc * WH_PER_KWH // self.filled_wh if self.filled_wh else 0


# --- how much each pool offers at threshold λ -------------------------------------------------

def _pool_buy_qty(energy: int, credits: int, fee_bps: int, price: int) -> int:
    """Most Wh a buyer takes from the pool with every increment costing <= ``price`` µc/kWh."""
    if price <= 0:
        return 0
    gamma = BPS - fee_bps
    need = WH_PER_KWH * credits * energy * BPS            # x ok  iff  need <= price·γ·y·(y+1), y = E − x
    scale = price * gamma
    y = isqrt(need // scale)
    while y > 1 and need <= scale * (y - 1) * y:
        y -= 1
    while need > scale * y * (y + 1):
        y += 1
    return max(0, energy - max(y, 1))


def _pool_sell_qty(energy: int, credits: int, fee_bps: int, price: int, room: int) -> int:
    """Most Wh a seller puts into the pool with every increment earning >= ``price`` µc/kWh."""
    if price <= 0:
        return room
    gamma = BPS - fee_bps
    base = energy * BPS
    gain = WH_PER_KWH * gamma * credits * base            # x ok iff gain >= price·(base+xγ)(base+(x−1)γ)

    def ok(x: int) -> bool:
        return x <= 0 or gain >= price * (base + x * gamma) * (base + (x - 1) * gamma)

    x = max(0, (isqrt(gain // price) - base) // gamma)
    while not ok(x):
        x -= 1
    while ok(x + 1) and x < room:
        x += 1
    return min(x, room)


# --- the search ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Venues:
    side: Side
    prices: list[int]            # book prices in walking order (ascending for BUY, descending for SELL)
    keys: list[int]              # ascending search keys: price for BUY, −price for SELL
    cumulative: list[int]        # Wh available up to and including each book order
    book: Sequence[RestingOrder]
    pools: list[Pool]
    rooms: list[int]             # SELL: Wh each pool can still take
    caps: list[int | None]       # with a limit: the largest leg within it, per pool

    def book_qty(self, price: int) -> int:
        """Wh of book orders at ``price`` or better."""
        n = bisect_right(self.keys, price if self.side is Side.BUY else -price)
        return self.cumulative[n - 1] if n else 0

    def pool_qty(self, i: int, price: int) -> int:
        pool = self.pools[i]
        if self.side is Side.BUY:
            qty = _pool_buy_qty(pool.energy_wh, pool.credits_uc, pool.fee_bps, price)
        else:
            qty = _pool_sell_qty(pool.energy_wh, pool.credits_uc, pool.fee_bps, price, self.rooms[i])
        cap = self.caps[i]
        return qty if cap is None else min(qty, cap)

    def total_within_limit(self) -> int:
        """All the venues offer within the limit (meaningful only with caps)."""
        return (self.cumulative[-1] if self.cumulative else 0) + sum(cap or 0 for cap in self.caps)

    def total(self, price: int) -> int:
        return self.book_qty(price) + sum(self.pool_qty(i, price) for i in range(len(self.pools)))


def _usable(pool: Pool, side: Side, now_ms: int) -> Pool | None:
    if pool.is_frozen(now_ms):
        return None
    pool = accrue(pool, now_ms)
    # A buyer can never take a pool's last Wh (an exact-out swap needs out < reserve), so a pool
    # of 1 Wh has nothing to sell; it can still buy from a seller.
    least_energy = 2 if side is Side.BUY else 1
    if pool.energy_wh < least_energy or pool.credits_uc < 1:
        return None
    if side is Side.SELL and pool.energy_wh >= pool.energy_cap_wh:
        return None
    return pool


def _first_true(lo: int, hi: int, good: Callable[[int], bool]) -> int:
    """Smallest x in [lo, hi] with good(x), for good monotone false→true; hi if none."""
    while lo < hi:
        mid = (lo + hi) // 2
        if good(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def route(side: Side, qty_wh: int, book: Sequence[RestingOrder], pools: Sequence[Pool], now_ms: int,
          limit_price: int | None = None) -> RoutePlan:
    """The cheapest (BUY) or most lucrative (SELL) split of ``qty_wh`` within ``limit_price``.

    ``book`` holds the resting orders of the *opposite* side, best first (``OrderBook.resting``).
    """
    if not (type(qty_wh) is int and qty_wh > 0):
        raise InvalidOrder(f"route quantity must be a positive int, got {qty_wh!r}")
    if limit_price is not None and not (type(limit_price) is int and limit_price >= 0):
        raise InvalidOrder(f"limit price must be a non-negative int, got {limit_price!r}")
    live = [p for p in (_usable(p, side, now_ms) for p in pools) if p is not None]
    orders, keys, cumulative = _book_prefix(side, qty_wh, book, limit_price)
    caps = [None if limit_price is None else _largest_qty(p, side, limit_price) for p in live]
    venues = _Venues(side=side, prices=[o.price for o in orders], keys=keys, cumulative=cumulative, book=orders,
                     pools=live, rooms=[p.energy_cap_wh - p.energy_wh for p in live], caps=caps)
    # The limit is already in the venues (book prefix, pool caps): the search runs unbounded.
    threshold = _threshold(venues, qty_wh, None)
    plan = _plan(venues, qty_wh, threshold, limit_price)
    if limit_price is None or plan.filled_wh >= min(qty_wh, venues.total_within_limit()):
        return plan
    return _fill_up(venues, plan, limit_price)


def _book_prefix(side: Side, qty: int, book: Sequence[RestingOrder],
                 limit: int | None) -> tuple[list[RestingOrder], list[int], list[int]]:
    """The book orders the plan could use, best first, with search keys and cumulative Wh.

    Orders beyond the limit are dropped, and so is everything after the first prefix that alone
    covers ``qty``: the threshold never passes that order's price, and legs are taken in order.
    """
    sign = 1 if side is Side.BUY else -1
    orders = list(book)
    keys = list(map(attrgetter("price"), orders))
    if sign == -1:
        keys = [-key for key in keys]
    if keys != sorted(keys):     # stable: time priority within a price is kept
        ranked = sorted(range(len(orders)), key=keys.__getitem__)
        orders = [orders[i] for i in ranked]
        keys = [keys[i] for i in ranked]
    end = len(orders) if limit is None else bisect_right(keys, sign * limit)
    cumulative = list(accumulate(map(attrgetter("qty_wh"), orders[:end])))
    end = min(end, bisect_left(cumulative, qty) + 1)
    return orders[:end], keys[:end], cumulative[:end]


def _threshold(venues: _Venues, qty: int, limit: int | None) -> int:
    """λ: for BUY the least price at which venues offer ``qty`` (capped by the limit / supply);
    for SELL the greatest such price (floored by the limit)."""
    if venues.side is Side.BUY:
        hi = limit if limit is not None else _buy_ceiling(venues, qty)
        # Bisection over the book's prices first narrows the integer search to one gap.
        candidates = [p for p in venues.prices if p <= hi]
        j = _first_true(0, len(candidates), lambda j: venues.total(candidates[j]) >= qty)
        lo = candidates[j - 1] + 1 if j > 0 else 0
        top = candidates[j] if j < len(candidates) else hi
        return _first_true(lo, top, lambda price: venues.total(price) >= qty)
    lo = limit if limit is not None else 0
    hi = _sell_ceiling(venues)
    candidates = [p for p in venues.prices if p >= lo]           # descending
    j = _first_true(0, len(candidates), lambda j: venues.total(candidates[j]) >= qty)
    # candidates[j] is the highest book price with enough volume; look between it and the one above.
    floor = candidates[j] if j < len(candidates) else lo
    above = candidates[j - 1] - 1 if j > 0 else hi
    # Largest price in [floor, above] with total >= qty  ==  mirror of _first_true.
    best = floor
    low, high = floor, above
    while low <= high:
        mid = (low + high) // 2
        if venues.total(mid) >= qty:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best


def _buy_ceiling(venues: _Venues, qty: int) -> int:
    """A price at which every venue offers all it can towards ``qty``."""
    top = venues.prices[-1] if venues.prices else 0
    for pool in venues.pools:
        y = max(1, pool.energy_wh - qty)
        gamma = BPS - pool.fee_bps
        cost = -(-WH_PER_KWH * pool.credits_uc * pool.energy_wh * BPS // (gamma * y * (y + 1)))
        top = max(top, cost)
    return top


def _sell_ceiling(venues: _Venues) -> int:
    """A price above every venue's best increment."""
    top = venues.prices[0] if venues.prices else 0
    for pool in venues.pools:
        top = max(top, WH_PER_KWH * pool.credits_uc // pool.energy_wh + 1)
    return top + 1


def _plan(venues: _Venues, qty: int, threshold: int, limit: int | None) -> RoutePlan:
    buying = venues.side is Side.BUY
    strictly_better = threshold - 1 if buying else threshold + 1
    target = min(qty, venues.total(threshold))
    book_take = venues.book_qty(strictly_better)
    pool_take = [venues.pool_qty(i, strictly_better) for i in range(len(venues.pools))]
    left = target - book_take - sum(pool_take)
    # Increments priced at the threshold: the book first, then pools in order.
    extra = min(left, venues.book_qty(threshold) - book_take)
    book_take += extra
    left -= extra
    for i in range(len(venues.pools)):
        extra = min(left, venues.pool_qty(i, threshold) - pool_take[i])
        pool_take[i] += extra
        left -= extra
    legs: list[Leg] = []
    total = 0
    filled = 0
    need = book_take
    for order in venues.book:
        if need == 0:
            break
        take = min(need, order.qty_wh)
        value = trade_value(take, order.price)
        legs.append(BookLeg(order.order_id, take, order.price, value))
        total += value
        filled += take
        need -= take
    for pool, energy in zip(venues.pools, pool_take):
        leg = _pool_leg(pool, venues.side, energy, limit)
        if leg is not None:
            legs.append(leg)
            total += leg.credits_uc
            filled += leg.energy_wh
    return RoutePlan(venues.side, qty, filled, total, threshold, tuple(legs))


def _pool_leg(pool: Pool, side: Side, energy: int, limit: int | None) -> PoolLeg | None:
    """The swap for ``energy`` Wh; if rounding pushes its average beyond the limit, the largest
    smaller swap that respects it."""
    found = _leg_within(pool, side, energy, limit)
    if found is not None or limit is None:
        return found
    return _largest_leg(pool, side, min(energy - 1, _most_within(pool, side, limit)), 0, limit)


def _leg_within(pool: Pool, side: Side, energy: int, limit: int | None) -> PoolLeg | None:
    """The swap of ``energy`` Wh with ``pool``, or None when its average price (after the pool's
    rounding) is beyond ``limit`` or it pays nothing."""
    if energy <= 0:
        return None
    if side is Side.BUY:
        if energy >= pool.energy_wh:
            return None
        money = amount_in_for_out(energy, pool.credits_uc, pool.energy_wh, pool.fee_bps)
        within = limit is None or money * WH_PER_KWH <= limit * energy
        return PoolLeg(pool.pool_id, side, "out", money, energy, energy, money) if within else None
    money = amount_out_for_in(energy, pool.energy_wh, pool.credits_uc, pool.fee_bps)
    within = money > 0 and (limit is None or money * WH_PER_KWH >= limit * energy)
    return PoolLeg(pool.pool_id, side, "in", energy, money, energy, money) if within else None


def _most_within(pool: Pool, side: Side, limit: int) -> int:
    """The most Wh whose *unrounded* average price is within ``limit`` (and within the pool's
    reserve or room). A rounded swap is within the limit only if the unrounded one is, so no
    feasible leg is larger; the average is monotone, so this one has a closed form."""
    gamma = BPS - pool.fee_bps
    if side is Side.BUY:
        # average = M·10000 / ((E − e)·γ) per Wh  <=  limit / 1000
        if limit <= 0:
            return 0
        keep = -(-WH_PER_KWH * pool.credits_uc * BPS // (limit * gamma))
        return max(0, min(pool.energy_wh - 1, pool.energy_wh - keep))
    room = pool.energy_cap_wh - pool.energy_wh
    if limit <= 0:
        return room
    # average = γ·M / (E·10000 + e·γ) per Wh  >=  limit / 1000
    return max(0, min(room, (WH_PER_KWH * gamma * pool.credits_uc - limit * pool.energy_wh * BPS) // (limit * gamma)))


def _largest_qty(pool: Pool, side: Side, limit: int) -> int:
    """The largest leg's Wh within ``limit`` (0: none)."""
    leg = _largest_leg(pool, side, _most_within(pool, side, limit), 0, limit)
    return 0 if leg is None else leg.energy_wh


ROUNDING_SCAN = 4096     # Wh: how far below the unrounded bound a rounded leg is looked for


def _largest_leg(pool: Pool, side: Side, upper: int, lower: int, limit: int) -> PoolLeg | None:
    """The largest leg of ``lower < e <= upper`` Wh within the limit. Rounding (up to one µc per
    leg) can make a smaller leg infeasible while a larger one is fine — the average price under
    floor/ceiling rounding is not monotone — so this walks down instead of bisecting; a feasible
    leg is a few Wh below the unrounded bound unless prices are tiny."""
    for energy in range(upper, max(lower, upper - ROUNDING_SCAN), -1):
        leg = _leg_within(pool, side, energy, limit)
        if leg is not None:
            return leg
    return None


def _smallest_leg(pool: Pool, side: Side, lower: int, upper: int, limit: int) -> PoolLeg | None:
    """The smallest leg of ``lower <= e <= upper`` Wh within the limit (see ``_largest_leg``)."""
    for energy in range(lower, min(upper, lower + ROUNDING_SCAN) + 1):
        leg = _leg_within(pool, side, energy, limit)
        if leg is not None:
            return leg
    return None


# --- filling up to the limit ------------------------------------------------------------------

def _fill_up(venues: _Venues, plan: RoutePlan, limit: int) -> RoutePlan:
    """A plan that fills more of the request than ``plan`` does, if the venues allow it within the
    limit: a pool leg trimmed by rounding leaves Wh that a book order within the limit, or another
    pool up to its cap, can take. The book within the limit takes what it can (best first); each
    pool adds only what the book cannot, up to its largest leg within the limit and never past
    the request."""
    qty = plan.requested_wh
    energies = {leg.pool_id: leg.energy_wh for leg in plan.legs if isinstance(leg, PoolLeg)}
    in_pools = sum(energies.values())
    book_room = venues.cumulative[-1] if venues.cumulative else 0
    pool_legs: list[PoolLeg] = []
    for pool in venues.pools:
        have = energies.get(pool.pool_id, 0)
        upper = min(have + qty - in_pools, _most_within(pool, venues.side, limit))
        short = qty - book_room - in_pools
        leg = _leg_within(pool, venues.side, have, limit)
        if short > 0 and upper > have:
            leg = (_smallest_leg(pool, venues.side, have + short, upper, limit) if have + short <= upper
                   else None) or _largest_leg(pool, venues.side, upper, have, limit) or leg
        if leg is not None:
            in_pools += leg.energy_wh - have
            pool_legs.append(leg)
    legs: list[Leg] = []
    need = min(book_room, qty - in_pools)
    for order in venues.book:
        if need == 0:
            break
        take = min(need, order.qty_wh)
        legs.append(BookLeg(order.order_id, take, order.price, trade_value(take, order.price)))
        need -= take
    legs += pool_legs
    filled = sum(leg.qty_wh if isinstance(leg, BookLeg) else leg.energy_wh for leg in legs)
    if filled <= plan.filled_wh:
        return plan
    total = sum(leg.value_uc if isinstance(leg, BookLeg) else leg.credits_uc for leg in legs)
    return RoutePlan(venues.side, qty, filled, total, plan.threshold_price, tuple(legs))
