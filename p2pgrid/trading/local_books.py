"""The books a node keeps of its zones' open slots, fed by gossip (pure).

Rules
-----
* The node keeps the books of its **home** zone and of the **neighbour** zones it trades with
  (``market.locality``: the zones with a grid fee). An order of any other zone is ignored
  ("other zone"). Queries name a zone; without one they mean the home zone.
* One ``OrderBook`` per (zone, open slot). A validated signed ``Order`` rests in the book of its
  zone and slot; the signed original is kept beside it, since takes refer to it. Every zone a
  node keeps shares the home zone's slot calendar (zones of one ledger domain do).
* A ``Cancel`` removes the order it names, if its signer owns it. A cancel may overtake its order
  in gossip: it is then remembered (a *tombstone*) and the order is dropped when it arrives.
* Certified trades reduce the maker's order (``on_consumed``, given the Wh consumed in total, so
  learning the same trade twice changes nothing); a node learns them from the replicated ledger,
  so every node's books converge to what is really left.
* ``tick(now_ms)`` expires orders whose ``expiry_ms <= now_ms`` and closes every book whose slot
  reached gate closure: after that instant nothing of that slot can trade.
* Everything is keyed by order id; ids are 16 random bytes chosen by the owner, and the pair
  (owner, order id) is checked so no one can cancel or shadow someone else's order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from p2pgrid.market.book import Depth, OrderBook
from p2pgrid.market.errors import AlreadyExpired, DuplicateOrder
from p2pgrid.market.orders import BookOrder, Fill, RestingOrder
from p2pgrid.units import SlotRules
from p2pgrid.wire import Cancel, Order, Side, Signed


@dataclass(frozen=True)
class BookChange:
    """What one gossip item did to the books (for subscribers: dashboard, RPC)."""

    slot: int
    order_id: bytes
    change: str          # "added" | "cancelled" | "filled" | "ignored"
    detail: str = ""
    zone: str = ""       # the zone of the book that changed ("" when nothing changed)


class LocalBooks:
    """Books of the home zone and its neighbours, keyed by (zone, slot). Mutated only through
    the methods below."""

    def __init__(self, zone: str, slot_rules: SlotRules, neighbours: Iterable[str] = ()) -> None:
        self.zone = zone
        self.zones = (zone, *sorted(set(neighbours) - {zone}))
        self.slot_rules = slot_rules
        self._books: dict[tuple[str, int], OrderBook] = {}
        self._signed: dict[bytes, Signed[Order]] = {}
        # (cancelled order id, the cancel's signer) → slot: only its owner's cancel hides an order
        self._tombstones: dict[tuple[bytes, bytes], int] = {}

    # --- queries ----------------------------------------------------------------------------

    def slots(self, zone: str | None = None) -> list[int]:
        zone = zone or self.zone
        return sorted(slot for z, slot in self._books if z == zone)

    def book(self, slot: int, zone: str | None = None) -> OrderBook:
        zone = zone or self.zone
        book = self._books.get((zone, slot))
        return OrderBook(zone, slot) if book is None else book   # an empty book is still a book

    def depth(self, slot: int, max_levels: int | None = None, zone: str | None = None,
              now_ms: int | None = None) -> Depth:
        """Levels of one book; with ``now_ms``, without orders expired by then and not yet swept."""
        return self.book(slot, zone).depth(max_levels, now_ms)

    def signed_order(self, order_id: bytes) -> Signed[Order] | None:
        return self._signed.get(order_id)

    def remaining(self, order_id: bytes) -> int:
        signed = self._signed.get(order_id)
        if signed is None:
            return 0
        return self.book(signed.body.slot, signed.body.zone).remaining(order_id)

    def resting(self, slot: int, taker_side: Side, taker: bytes, now_ms: int,
                limit_price: int | None = None, zone: str | None = None) -> list[RestingOrder]:
        """What a taker could trade with in ``slot`` of ``zone``, best first (the router's book
        input). ``limit_price`` compares with the orders' own prices (no grid fee)."""
        if not self.slot_rules.is_tradable(slot, now_ms):
            return []
        return self.book(slot, zone).resting(taker_side, taker, now_ms, limit_price)

    def resting_by_zone(self, slot: int, taker_side: Side, taker: bytes, now_ms: int) -> dict[str, list[RestingOrder]]:
        """``resting`` for every zone kept (``market.locality.route_zones``' input)."""
        return {zone: self.resting(slot, taker_side, taker, now_ms, zone=zone) for zone in self.zones}

    def live_orders(self) -> list[Signed[Order]]:
        return list(self._signed.values())

    def orders_of(self, owner: bytes) -> Iterator[tuple[Signed[Order], int]]:
        """``owner``'s live orders with what remains of each."""
        for order_id, signed in list(self._signed.items()):
            if signed.body.owner == owner:
                yield signed, self.remaining(order_id)

    def __len__(self) -> int:
        return len(self._signed)

    # --- gossip -----------------------------------------------------------------------------

    def on_order(self, signed: Signed[Order], now_ms: int) -> BookChange:
        order = signed.body
        if order.zone not in self.zones:
            return BookChange(order.slot, order.order_id, "ignored", "other zone")   # not traded with
        if not self.slot_rules.is_tradable(order.slot, now_ms):
            return BookChange(order.slot, order.order_id, "ignored", "slot not open")
        if self._tombstones.get((order.order_id, order.owner)) == order.slot:
            return BookChange(order.slot, order.order_id, "ignored", "cancelled before it arrived")
        known = self._signed.get(order.order_id)
        if known is not None:
            detail = "duplicate" if known.body == order else "order id already used"
            return BookChange(order.slot, order.order_id, "ignored", detail)
        book = self._books.get((order.zone, order.slot))
        if book is None:
            book = self._books[(order.zone, order.slot)] = OrderBook(order.zone, order.slot)
        try:
            book.add(BookOrder.from_wire(order), now_ms)
        except (AlreadyExpired, DuplicateOrder) as exc:
            return BookChange(order.slot, order.order_id, "ignored", str(exc))
        self._signed[order.order_id] = signed
        return BookChange(order.slot, order.order_id, "added", zone=order.zone)

    def on_cancel(self, signed: Signed[Cancel]) -> BookChange:
        cancel = signed.body
        known = self._signed.get(cancel.order_id)
        if known is None:
            self._tombstones[(cancel.order_id, cancel.owner)] = cancel.slot
            return BookChange(cancel.slot, cancel.order_id, "ignored", "unknown order (remembered)")
        if known.body.owner != cancel.owner:
            return BookChange(cancel.slot, cancel.order_id, "ignored", "not the owner")
        self._drop(known.body)
        return BookChange(cancel.slot, cancel.order_id, "cancelled", zone=known.body.zone)

    def on_consumed(self, order_id: bytes, consumed_wh: int) -> BookChange:
        """At least ``consumed_wh`` of ``order_id`` is certified as traded (filled, or locked for a
        bid). Idempotent and monotone: the remainder becomes ``size - consumed_wh`` if that is
        less than what the book holds, and never grows back."""
        signed = self._signed.get(order_id)
        if signed is None:
            return BookChange(0, order_id, "ignored", "not in the books")
        book = self.book(signed.body.slot, signed.body.zone)
        left = book.remaining(order_id)
        reduce_by = left - max(signed.body.qty_wh - consumed_wh, 0)
        if reduce_by <= 0:
            return BookChange(signed.body.slot, order_id, "ignored", "already applied")
        if reduce_by >= left:
            self._drop(signed.body)
        else:
            self._fill(book, signed.body, reduce_by)
        return BookChange(signed.body.slot, order_id, "filled", zone=signed.body.zone)

    def tick(self, now_ms: int) -> list[int]:
        """Expire orders and close books at gate closure; returns the slots closed."""
        closed = [key for key in self._books if now_ms >= self.slot_rules.gate_closure_ms(key[1])]
        for key in closed:
            book = self._books.pop(key)
            for side in (Side.BUY, Side.SELL):
                for order, _ in list(book.orders(side)):
                    self._signed.pop(order.order_id, None)
        for book in self._books.values():
            for event in book.expire(now_ms):
                self._signed.pop(event.order_id, None)
        self._tombstones = {key: slot for key, slot in self._tombstones.items()
                            if now_ms < self.slot_rules.gate_closure_ms(slot)}
        return sorted({slot for _, slot in closed})

    # --- internals --------------------------------------------------------------------------

    def _drop(self, order: Order) -> None:
        book = self._books.get((order.zone, order.slot))
        if book is not None and order.order_id in book:
            book.cancel(order.order_id)
        self._signed.pop(order.order_id, None)

    @staticmethod
    def _fill(book: OrderBook, order: Order, qty_wh: int) -> None:
        # The taker is irrelevant to the resting book; only the maker's remainder changes.
        book.apply(Fill(order.order_id, order.owner, b"", order.side.opposite, qty_wh, order.limit_price))
