"""A local limit order book for one (zone, slot), with price-time priority (pure).

A node keeps one ``OrderBook`` per (zone, slot), fed by gossip. The book never does I/O and never
reads a clock: every call that depends on time takes ``now_ms``.

Rules
-----
* Quantities are integer Wh (> 0), prices integer µc/kWh (>= 0).
* **Priority.** Sells rank by price ascending, buys by price descending; at one price by
  ``(created_ms, order_id)`` ascending. Priority comes from the signed order, not from arrival, so
  every node ranks the same set of orders the same way.
* **Add** (``add``) rests an order as it is. A book fed by gossip replicates other nodes' standing
  orders, so it may be *crossed* (best bid >= best ask) until someone takes: crossing is resolved
  by takes, never silently by the book. ``submit`` is the local continuous-matching variant: take
  what crosses, rest the remainder.
* **Take** (``match`` / ``take``): a taker of ``side`` with ``qty_wh`` and optional limit walks the
  opposite side best first, at each maker's own price, skipping the taker's own orders
  (self-trade prevention: skip, never cancel) and orders with ``expiry_ms <= now_ms``. ``match``
  only computes the fills; ``take`` computes and applies them. No order is ever filled beyond what
  remains of it.
* **Cancel** removes exactly that order. **Expire** (``expire(now_ms)``) removes exactly the
  orders with ``expiry_ms <= now_ms``. Reads given ``now_ms`` (``best_bid``, ``best_ask``,
  ``depth``) never show an order expired by then, swept or not.
* **Events.** Every change is an event (``OrderAdded``, ``OrderCancelled``, ``OrderExpired``,
  ``Fill``); ``apply(event)`` performs it, and ``OrderBook.replay(zone, slot, events)`` rebuilds an
  identical book (``state()`` compares equal). ``apply(fill)`` is also how a certified fill learned
  from the network reduces a maker's order.

Costs: one SortedDict of price levels per side, each level a deque in time priority, and a dict
index by order id. Adding at a new price is an O(log n) SortedDict insert, at an existing price
O(1) (amortised; an order created earlier than the level's last one is placed by bisection).
Cancel and fill are O(1) — the entry is marked dead and skipped later (lazy deletion, compacted
when a level holds more dead than live entries) — plus O(log n) when they empty a price level.
Expiry uses a heap with lazy deletion.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from sortedcontainers import SortedDict

from p2pgrid.market.errors import AlreadyExpired, DuplicateOrder, InvalidOrder, Overfill, UnknownOrder
from p2pgrid.market.orders import BookOrder, Fill, RestingOrder, Side

__all__ = [
    "BookState", "Depth", "DepthLevel", "OrderAdded", "OrderBook", "OrderCancelled", "OrderExpired",
    "BookEvent", "SubmitResult",
]


# --- events -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrderAdded:
    order: BookOrder


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order_id: bytes


@dataclass(frozen=True, slots=True)
class OrderExpired:
    order_id: bytes


BookEvent = OrderAdded | OrderCancelled | OrderExpired | Fill


@dataclass(frozen=True, slots=True)
class SubmitResult:
    fills: tuple[Fill, ...]
    rested: OrderAdded | None


# --- views ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DepthLevel:
    price: int
    qty_wh: int
    orders: int


@dataclass(frozen=True, slots=True)
class Depth:
    """Aggregated levels, best first on each side."""

    bids: tuple[DepthLevel, ...]
    asks: tuple[DepthLevel, ...]


@dataclass(frozen=True, slots=True)
class BookState:
    """Every live order with what remains of it, in priority order: equal states, equal books."""

    zone: str
    slot: int
    bids: tuple[tuple[BookOrder, int], ...]
    asks: tuple[tuple[BookOrder, int], ...]


# --- internals --------------------------------------------------------------------------------

_COMPACT_SLACK = 8   # dead entries a level tolerates beyond its live count before it is rebuilt


class _Entry:
    __slots__ = ("order", "remaining", "live")

    def __init__(self, order: BookOrder) -> None:
        self.order = order
        self.remaining = order.qty_wh
        self.live = True


class _Level:
    """Orders at one price in time priority; dead entries linger until popped or compacted."""

    __slots__ = ("queue", "qty", "count")

    def __init__(self) -> None:
        self.queue: deque[_Entry] = deque()
        self.qty = 0
        self.count = 0

    def insert(self, entry: _Entry) -> None:
        queue = self.queue
        order = entry.order
        if queue:
            last = queue[-1].order
            if last.created_ms > order.created_ms or (last.created_ms == order.created_ms
                                                      and last.order_id > order.order_id):
                at = bisect_right(queue, (order.created_ms, order.order_id),
                                  key=lambda e: (e.order.created_ms, e.order.order_id))
                queue.insert(at, entry)
            else:
                queue.append(entry)
        else:
            queue.append(entry)
        self.qty += order.qty_wh
        self.count += 1

    def drop_dead_front(self) -> None:
        queue = self.queue
        while queue and not queue[0].live:
            queue.popleft()

    def compact_if_sparse(self) -> None:
        if len(self.queue) > 2 * self.count + _COMPACT_SLACK:
            self.queue = deque(e for e in self.queue if e.live)


class OrderBook:
    """The book of one (zone, slot). Mutated only through the methods below."""

    def __init__(self, zone: str, slot: int) -> None:
        self.zone = zone
        self.slot = slot
        # asks keyed by price, bids by -price: on both sides the best level is the first key.
        self._asks: SortedDict = SortedDict()
        self._bids: SortedDict = SortedDict()
        self._index: dict[bytes, _Entry] = {}
        self._expiries: list[tuple[int, bytes]] = []

    # --- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._index

    def get(self, order_id: bytes) -> BookOrder | None:
        entry = self._index.get(order_id)
        return entry.order if entry is not None else None

    def remaining(self, order_id: bytes) -> int:
        """What is left of a live order, in Wh."""
        entry = self._index.get(order_id)
        if entry is None:
            raise UnknownOrder(f"no live order {order_id.hex()} in book {self.zone}/{self.slot}")
        return entry.remaining

    def best_bid(self, now_ms: int | None = None) -> int | None:
        """The best live bid; with ``now_ms``, orders expired by then (not yet swept) are skipped."""
        return self._best(Side.BUY, now_ms)

    def best_ask(self, now_ms: int | None = None) -> int | None:
        """The best live ask; with ``now_ms``, orders expired by then (not yet swept) are skipped."""
        return self._best(Side.SELL, now_ms)

    def _best(self, side: Side, now_ms: int | None) -> int | None:
        levels = self._bids if side is Side.BUY else self._asks
        if self._none_expired(now_ms):
            return (-1 if side is Side.BUY else 1) * levels.peekitem(0)[0] if levels else None
        return next((order.price for order, _ in self._unexpired(side, now_ms)), None)

    def _none_expired(self, now_ms: int | None) -> bool:
        next_expiry = self.next_expiry_ms()
        return now_ms is None or next_expiry is None or next_expiry > now_ms

    def _unexpired(self, side: Side, now_ms: int | None) -> Iterator[tuple[BookOrder, int]]:
        return ((order, left) for order, left in self.orders(side)
                if now_ms is None or order.expiry_ms > now_ms)

    def next_expiry_ms(self) -> int | None:
        """The earliest expiry among live orders (the book's next deadline), if any."""
        heap = self._expiries
        while heap:
            expiry_ms, order_id = heap[0]
            entry = self._index.get(order_id)
            if entry is not None and entry.order.expiry_ms == expiry_ms:
                return expiry_ms
            heapq.heappop(heap)
        return None

    def depth(self, max_levels: int | None = None, now_ms: int | None = None) -> Depth:
        """Aggregated levels; with ``now_ms``, orders expired by then (not yet swept) are left out."""
        if not self._none_expired(now_ms):
            return Depth(bids=self._levels(Side.BUY, max_levels, now_ms),
                         asks=self._levels(Side.SELL, max_levels, now_ms))

        def side(levels: SortedDict, sign: int) -> tuple[DepthLevel, ...]:
            keys = levels.keys() if max_levels is None else levels.islice(0, max_levels)
            return tuple(DepthLevel(sign * k, levels[k].qty, levels[k].count) for k in keys)
        return Depth(bids=side(self._bids, -1), asks=side(self._asks, 1))

    def _levels(self, side: Side, max_levels: int | None, now_ms: int | None) -> tuple[DepthLevel, ...]:
        levels: list[DepthLevel] = []
        for order, left in self._unexpired(side, now_ms):
            if levels and levels[-1].price == order.price:
                last = levels[-1]
                levels[-1] = DepthLevel(last.price, last.qty_wh + left, last.orders + 1)
            elif max_levels is not None and len(levels) == max_levels:
                break
            else:
                levels.append(DepthLevel(order.price, left, 1))
        return tuple(levels)

    def orders(self, side: Side) -> Iterator[tuple[BookOrder, int]]:
        """Live orders of ``side`` with what remains of each, in priority order."""
        levels = self._bids if side is Side.BUY else self._asks
        for level in levels.values():
            for entry in level.queue:
                if entry.live:
                    yield entry.order, entry.remaining

    def state(self) -> BookState:
        return BookState(self.zone, self.slot, tuple(self.orders(Side.BUY)), tuple(self.orders(Side.SELL)))

    def resting(self, taker_side: Side, taker: bytes, now_ms: int, limit_price: int | None = None,
                max_qty_wh: int | None = None) -> list[RestingOrder]:
        """What a taker of ``taker_side`` could trade with, best first (the router's book input).

        Skips the taker's own and expired orders and prices beyond ``limit_price``; stops once
        ``max_qty_wh`` is covered.
        """
        out: list[RestingOrder] = []
        covered = 0
        for entry in self._eligible(taker_side, taker, now_ms, limit_price):
            out.append(RestingOrder(entry.order.order_id, entry.order.price, entry.remaining))
            covered += entry.remaining
            if max_qty_wh is not None and covered >= max_qty_wh:
                break
        return out

    # --- commands -----------------------------------------------------------------------------

    def add(self, order: BookOrder, now_ms: int) -> OrderAdded:
        """Rest ``order`` (no matching). Rejects duplicates and orders already expired."""
        if order.order_id in self._index:
            raise DuplicateOrder(f"order {order.order_id.hex()} is already in the book")
        if order.expiry_ms <= now_ms:
            raise AlreadyExpired(f"order {order.order_id.hex()} expired at {order.expiry_ms} <= now {now_ms}")
        event = OrderAdded(order)
        self._insert(order)
        return event

    def cancel(self, order_id: bytes) -> OrderCancelled:
        """Remove exactly ``order_id`` and whatever remains of it."""
        entry = self._index.get(order_id)
        if entry is None:
            raise UnknownOrder(f"cannot cancel {order_id.hex()}: not a live order of this book")
        self._remove(entry)
        return OrderCancelled(order_id)

    def expire(self, now_ms: int) -> list[OrderExpired]:
        """Remove exactly the live orders with ``expiry_ms <= now_ms``, earliest first."""
        events: list[OrderExpired] = []
        heap = self._expiries
        index = self._index
        while heap and heap[0][0] <= now_ms:
            expiry_ms, order_id = heapq.heappop(heap)
            entry = index.get(order_id)
            if entry is not None and entry.order.expiry_ms == expiry_ms:
                self._remove(entry)
                events.append(OrderExpired(order_id))
        return events

    def match(self, side: Side, qty_wh: int, taker: bytes, now_ms: int,
              limit_price: int | None = None) -> list[Fill]:
        """The fills a taker of ``side`` would get for ``qty_wh`` now; changes nothing."""
        if not (type(qty_wh) is int and qty_wh > 0):
            raise InvalidOrder(f"take quantity must be a positive int, got {qty_wh!r}")
        fills: list[Fill] = []
        need = qty_wh
        for entry in self._eligible(side, taker, now_ms, limit_price):
            qty = entry.remaining if entry.remaining < need else need
            order = entry.order
            fills.append(Fill(order.order_id, order.owner, taker, side, qty, order.price))
            need -= qty
            if need == 0:
                break
        return fills

    def take(self, side: Side, qty_wh: int, taker: bytes, now_ms: int,
             limit_price: int | None = None) -> list[Fill]:
        """``match`` and apply the fills to the book."""
        fills = self.match(side, qty_wh, taker, now_ms, limit_price)
        for fill in fills:
            self._fill(self._index[fill.maker_order_id], fill.qty_wh)
        return fills

    def submit(self, order: BookOrder, now_ms: int) -> SubmitResult:
        """Continuous matching for a local order: take what crosses, rest the remainder.

        The rested remainder is ``order`` with ``qty_wh`` reduced to what is left.
        """
        if order.order_id in self._index:
            raise DuplicateOrder(f"order {order.order_id.hex()} is already in the book")
        if order.expiry_ms <= now_ms:
            raise AlreadyExpired(f"order {order.order_id.hex()} expired at {order.expiry_ms} <= now {now_ms}")
        fills = self.take(order.side, order.qty_wh, order.owner, now_ms, order.price)
        left = order.qty_wh - sum(f.qty_wh for f in fills)
        rested = None
        if left > 0:
            rest = order if left == order.qty_wh else replace(order, qty_wh=left)
            rested = OrderAdded(rest)
            self._insert(rest)
        return SubmitResult(tuple(fills), rested)

    def apply(self, event: BookEvent) -> None:
        """Perform one event: the replay step, and how certified network fills reach the book."""
        if isinstance(event, OrderAdded):
            if event.order.order_id in self._index:
                raise DuplicateOrder(f"order {event.order.order_id.hex()} is already in the book")
            self._insert(event.order)
        elif isinstance(event, Fill):
            entry = self._index.get(event.maker_order_id)
            if entry is None:
                raise UnknownOrder(f"fill of {event.maker_order_id.hex()}: not a live order of this book")
            if not 0 < event.qty_wh <= entry.remaining:
                raise Overfill(f"fill of {event.qty_wh} Wh on {event.maker_order_id.hex()} "
                               f"with {entry.remaining} Wh left")
            self._fill(entry, event.qty_wh)
        elif isinstance(event, (OrderCancelled, OrderExpired)):
            entry = self._index.get(event.order_id)
            if entry is None:
                raise UnknownOrder(f"{type(event).__name__} of {event.order_id.hex()}: not a live order")
            self._remove(entry)
        else:
            raise TypeError(f"not a book event: {event!r}")

    @classmethod
    def replay(cls, zone: str, slot: int, events: Iterable[BookEvent]) -> OrderBook:
        book = cls(zone, slot)
        for event in events:
            book.apply(event)
        return book

    # --- internals ----------------------------------------------------------------------------

    def _eligible(self, taker_side: Side, taker: bytes, now_ms: int, limit_price: int | None) -> Iterator[_Entry]:
        if taker_side is Side.BUY:
            levels, sign = self._asks, 1
        else:
            levels, sign = self._bids, -1
        for key in levels:
            price = sign * key
            if limit_price is not None and (price > limit_price if sign == 1 else price < limit_price):
                return
            for entry in levels[key].queue:
                if entry.live and entry.order.owner != taker and entry.order.expiry_ms > now_ms:
                    yield entry

    def _insert(self, order: BookOrder) -> None:
        entry = _Entry(order)
        self._index[order.order_id] = entry
        if order.side is Side.BUY:
            levels, key = self._bids, -order.price
        else:
            levels, key = self._asks, order.price
        level = levels.get(key)
        if level is None:
            level = levels[key] = _Level()
        level.insert(entry)
        heapq.heappush(self._expiries, (order.expiry_ms, order.order_id))

    def _level_of(self, order: BookOrder) -> tuple[SortedDict, int, _Level]:
        levels, key = (self._bids, -order.price) if order.side is Side.BUY else (self._asks, order.price)
        return levels, key, levels[key]

    def _fill(self, entry: _Entry, qty: int) -> None:
        levels, key, level = self._level_of(entry.order)
        entry.remaining -= qty
        level.qty -= qty
        if entry.remaining == 0:
            self._unlink(entry, levels, key, level)

    def _remove(self, entry: _Entry) -> None:
        levels, key, level = self._level_of(entry.order)
        level.qty -= entry.remaining
        self._unlink(entry, levels, key, level)

    def _unlink(self, entry: _Entry, levels: SortedDict, key: int, level: _Level) -> None:
        entry.live = False
        del self._index[entry.order.order_id]
        level.count -= 1
        if level.count == 0:
            del levels[key]
        elif level.queue[0] is entry:
            level.drop_dead_front()
        else:
            level.compact_if_sparse()
