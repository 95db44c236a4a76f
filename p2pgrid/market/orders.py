"""Market-level order records shared by the book, the router and the auction (pure).

The wire layer's signed ``p2pgrid.wire.Order`` carries zone, slot, source and nonce; the market
needs less. ``BookOrder`` is what a book for one (zone, slot) holds; the trading layer converts
with ``BookOrder.from_wire``.

Units: ``qty_wh`` in Wh, ``price`` in µc per kWh, times in Unix ms (UTC). An order is live while
``now_ms < expiry_ms``. Time priority is ``(created_ms, order_id)``: it comes from the signed
order itself, so every node ranks the same set of orders identically whatever order gossip
delivered them in.

A ``Fill`` is the book's answer to a take: ``qty_wh`` of ``maker_order_id`` at the maker's price.
Its money is ``units.trade_value(qty_wh, price)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from p2pgrid.market.errors import InvalidOrder
from p2pgrid.wire import Side

__all__ = ["BookOrder", "Fill", "RestingOrder", "Side"]


def _is_int(value: object) -> bool:
    return type(value) is int


@dataclass(frozen=True, slots=True)
class BookOrder:
    """A limit order as a book holds it. ``side`` is the owner's side (buy energy / sell energy)."""

    order_id: bytes
    owner: bytes
    side: Side
    qty_wh: int
    price: int
    created_ms: int
    expiry_ms: int
    green: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.side, Side):
            raise InvalidOrder(f"order side must be a Side, got {self.side!r}")
        if not (_is_int(self.qty_wh) and self.qty_wh > 0):
            raise InvalidOrder(f"order qty_wh must be a positive int, got {self.qty_wh!r}")
        if not (_is_int(self.price) and self.price >= 0):
            raise InvalidOrder(f"order price must be a non-negative int, got {self.price!r}")
        if not (_is_int(self.created_ms) and _is_int(self.expiry_ms) and self.expiry_ms > self.created_ms):
            raise InvalidOrder("order times must be ints with expiry_ms > created_ms")

    @classmethod
    def from_wire(cls, order: Any) -> BookOrder:
        """The book's view of a validated ``p2pgrid.wire.Order``."""
        return cls(order_id=order.order_id, owner=order.owner, side=Side(order.side), qty_wh=order.qty_wh,
                   price=order.limit_price, created_ms=order.created_ms, expiry_ms=order.expiry_ms,
                   green=order.green)


@dataclass(frozen=True, slots=True)
class Fill:
    """``qty_wh`` of the maker's order traded with ``taker`` at the maker's ``price`` (µc/kWh).

    ``side`` is the taker's side: a BUY fill means the taker bought from a resting sell order.
    """

    maker_order_id: bytes
    maker: bytes
    taker: bytes
    side: Side
    qty_wh: int
    price: int


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """One resting order as the router sees it: what is left of it and its price, best first."""

    order_id: bytes
    price: int
    qty_wh: int
