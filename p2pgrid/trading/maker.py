"""What a maker's node answers to a take (pure).

The maker is the only one who may commit its order, so it decides, in this order of checks
(the first that fails is the answer):

1. the order is one of its own live orders, in the take's zone and slot;
2. the slot is still before gate closure at ``now_ms``;
3. the take is on the opposite side, at the order's own price — or, for a seller from a
   neighbour zone taking a bid, at ``bid − grid_fee`` (``market.locality.taker_price``: the
   buyer pays the fee at settlement, so the bid's owner pays no more than its bid);
4. ``qty_wh`` ≤ what is available: order size − Wh already certified (from the maker's certified
   chain, so a restart cannot forget them) − Wh reserved (``MakerDesk``: held for buyers that have
   not confirmed yet, and takes being certified).

A take that passes reserves its quantity (``MakerDesk``): a buy take is *held* for a bounded
time until the buyer's lock is confirmed, then *being certified* until its fill is certified or
fails; a sell take is being certified at once (the maker locks). A take asks for all of ``qty_wh`` or nothing: a loser of a race is refused with
``insufficient_remaining`` and the quantity still available, so it can re-route at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from p2pgrid.market.locality import taker_price
from p2pgrid.trading.messages import RefuseReason, Take
from p2pgrid.units import SlotRules
from p2pgrid.wire import Order


@dataclass(frozen=True)
class Accept:
    qty_wh: int


@dataclass(frozen=True)
class Refuse:
    reason: RefuseReason
    detail: str
    available_wh: int = 0


def decide_take(take: Take, order: Order | None, certified_wh: int, reserved_wh: int,
                slot_rules: SlotRules, now_ms: int, grid_fee: int = 0) -> Accept | Refuse:
    """Judge ``take`` against the maker's ``order`` (None if unknown). ``grid_fee`` (µc/kWh) is
    the fee between the order's zone and the taker's (0 within one zone)."""
    if order is None or order.order_id != take.order_id:
        return Refuse(RefuseReason.UNKNOWN_ORDER, f"no live order {take.order_id.hex()}")
    if order.owner != take.maker:
        return Refuse(RefuseReason.NOT_OWNER, "the order belongs to another maker")
    if order.zone != take.zone:
        return Refuse(RefuseReason.WRONG_ZONE, f"order is in zone {order.zone}, take names {take.zone}")
    if order.slot != take.slot:
        return Refuse(RefuseReason.WRONG_SLOT, f"order is for slot {order.slot}, take names {take.slot}")
    if now_ms >= slot_rules.gate_closure_ms(order.slot) or now_ms >= order.expiry_ms:
        return Refuse(RefuseReason.GATE_CLOSED, "trading for this order has closed")
    if take.side is not order.side.opposite:
        return Refuse(RefuseReason.WRONG_SIDE, f"a {order.side.value} order is taken by a {order.side.opposite.value}")
    expected = taker_price(take.side, order.limit_price, grid_fee)
    if take.price != expected:
        return Refuse(RefuseReason.PRICE_MISMATCH, f"the take's price must be {expected}, take says {take.price}")
    available = max(order.qty_wh - certified_wh - reserved_wh, 0)
    if take.qty_wh > available:
        return Refuse(RefuseReason.INSUFFICIENT_REMAINING,
                      f"asked {take.qty_wh} Wh, {available} Wh available", available)
    return Accept(take.qty_wh)


@dataclass(frozen=True)
class _Reservation:
    order_id: bytes
    qty_wh: int
    take: Take | None = None          # a hold's take (None: being certified, no deadline)
    until_s: float = math.inf         # a hold lapses at this instant (seconds, the caller's clock)


@dataclass
class MakerDesk:
    """Quantities reserved per order, in two kinds (in memory on purpose: after a crash the
    certified chain is the truth and uncertified reservations simply lapse):

    * **held** (``hold``): a buy take answered ``reserved``, waiting for the buyer's lock and
      confirm. A hold lapses at ``until_s`` unless ``claim``ed before, so a buyer that reserves and
      never locks blocks the order for a bounded time only;
    * **being certified** (``reserve``, or a claimed hold): a fill or lock is being certified right
      now; it ends with ``finish`` only (a certified one is then counted by the ledger).

    ``now_s`` is any monotonic clock in seconds (the service passes trio's); every call that
    depends on it takes it, and lapsed holds are dropped as a side effect. Invariant:
    certified + ``reserved(order, now)`` never exceeds an order when every reservation was
    accepted by ``decide_take`` on ``reserved(order, now)``.
    """

    _by_take: dict[bytes, _Reservation] = field(default_factory=dict)
    _by_order: dict[bytes, int] = field(default_factory=dict)
    _held: dict[bytes, float] = field(default_factory=dict)       # take id → until_s (holds only)
    lapsed: int = 0                                                # holds that lapsed unclaimed, in all
    _lapsed_takes: list[Take] = field(default_factory=list)         # lapsed since ``drain_lapsed``

    def reserved(self, order_id: bytes, now_s: float) -> int:
        self.expire(now_s)
        return self._by_order.get(order_id, 0)

    def is_reserved(self, take_id: bytes, now_s: float) -> bool:
        """Is take ``take_id`` held or being certified (its lock must not be declined meanwhile)?"""
        self.expire(now_s)
        return take_id in self._by_take

    def hold(self, take: Take, until_s: float) -> None:
        """Hold ``take.qty_wh`` of its order for its taker until ``until_s``."""
        self._add(take.take_id, _Reservation(take.order_id, take.qty_wh, take, until_s))
        self._held[take.take_id] = until_s

    def reserve(self, take_id: bytes, order_id: bytes, qty_wh: int) -> None:
        """Reserve ``qty_wh`` while a take's entry is being certified (ends with ``finish``)."""
        self._add(take_id, _Reservation(order_id, qty_wh))

    def claim(self, take_id: bytes, taker: bytes, now_s: float) -> Take | None:
        """Turn ``taker``'s live hold ``take_id`` into a reservation being certified; returns the
        held take, or None when there is no such hold (never made, another taker's, lapsed, or
        already claimed)."""
        self.expire(now_s)
        reservation = self._by_take.get(take_id)
        if reservation is None or reservation.take is None or reservation.take.taker != taker:
            return None
        del self._held[take_id]
        self._by_take[take_id] = _Reservation(reservation.order_id, reservation.qty_wh)
        return reservation.take

    def finish(self, take_id: bytes) -> None:
        """The take was certified or failed: its reservation ends either way (a certified one is
        now counted by the ledger)."""
        self._held.pop(take_id, None)
        reservation = self._by_take.pop(take_id, None)
        if reservation is not None:
            left = self._by_order[reservation.order_id] - reservation.qty_wh
            if left:
                self._by_order[reservation.order_id] = left
            else:
                del self._by_order[reservation.order_id]

    def expire(self, now_s: float) -> list[bytes]:
        """Drop the holds that lapsed at ``now_s``; returns their take ids."""
        lapsed = [take_id for take_id, until in self._held.items() if until <= now_s]
        for take_id in lapsed:
            take = self._by_take[take_id].take
            if take is not None:
                self._lapsed_takes.append(take)
            self.finish(take_id)
        self.lapsed += len(lapsed)
        return lapsed

    def drain_lapsed(self, now_s: float) -> list[Take]:
        """The takes whose holds lapsed unclaimed since the last call (their takers reserved and
        never confirmed), oldest first."""
        self.expire(now_s)
        lapsed, self._lapsed_takes = self._lapsed_takes, []
        return lapsed

    def _add(self, take_id: bytes, reservation: _Reservation) -> None:
        if take_id in self._by_take:
            raise ValueError(f"take {take_id.hex()} is already reserved")
        self._by_take[take_id] = reservation
        self._by_order[reservation.order_id] = self._by_order.get(reservation.order_id, 0) + reservation.qty_wh
