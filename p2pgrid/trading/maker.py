"""What a maker's node answers to a take (pure).

The maker is the only one who may commit its order, so it decides, in this order of checks
(the first that fails is the answer):

1. the order is one of its own live orders, in the take's zone and slot;
2. the slot is still before gate closure at ``now_ms``;
3. the take is on the opposite side, at the order's own price — or, for a seller from a
   neighbour zone taking a bid, at ``bid − grid_fee`` (``market.locality.taker_price``: the
   buyer pays the fee at settlement, so the bid's owner pays no more than its bid);
4. ``qty_wh`` ≤ what is available: order size − Wh already certified (from the maker's certified
   chain, so a restart cannot forget them) − Wh reserved by takes still being certified.

A take that passes reserves its quantity until it is certified (``confirm``) or fails
(``release``). A take asks for all of ``qty_wh`` or nothing: a loser of a race is refused with
``insufficient_remaining`` and the quantity still available, so it can re-route at once.
"""

from __future__ import annotations

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


@dataclass
class MakerDesk:
    """Quantities reserved by takes that are being certified, per order (in memory on purpose:
    after a crash the certified chain is the truth and uncertified reservations simply lapse)."""

    _by_take: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    _by_order: dict[bytes, int] = field(default_factory=dict)

    def reserved(self, order_id: bytes) -> int:
        return self._by_order.get(order_id, 0)

    def is_reserved(self, take_id: bytes) -> bool:
        """Is take ``take_id`` being certified now (its lock must not be declined meanwhile)?"""
        return take_id in self._by_take

    def reserve(self, take_id: bytes, order_id: bytes, qty_wh: int) -> None:
        if take_id in self._by_take:
            raise ValueError(f"take {take_id.hex()} is already reserved")
        self._by_take[take_id] = (order_id, qty_wh)
        self._by_order[order_id] = self._by_order.get(order_id, 0) + qty_wh

    def finish(self, take_id: bytes) -> None:
        """The take was certified or failed: its reservation ends either way (a certified one is
        now counted by the ledger)."""
        order_id, qty = self._by_take.pop(take_id, (b"", 0))
        if qty:
            left = self._by_order[order_id] - qty
            if left:
                self._by_order[order_id] = left
            else:
                del self._by_order[order_id]
