"""Uniform-price call auction and the social welfare of fills (pure).

Used as the optional market mode at gate closure and as the welfare reference simnet compares
decentralised trading against.

Rules of ``clear(orders, now_ms)``
----------------------------------
* Orders with ``expiry_ms <= now_ms`` take no part. Bids rank by price descending, offers by price
  ascending, ties by ``(created_ms, order_id)``.
* Walk both queues, matching the best remaining bid with the best remaining offer for the smaller
  of their remaining quantities, while the bid's price >= the offer's price. This maximises the
  traded volume and the welfare (below); an order is never filled beyond its quantity.
* Everything trades at one price (pay-as-clear). With ``b_m`` / ``a_m`` the last matched bid /
  offer and ``b'`` / ``a'`` the best bid / offer left with quantity (if any), the price is the
  midpoint, rounded down, of ``[max(a_m, b'), min(b_m, a')]`` — an interval that is never empty.
  So ``a_m <= price <= b_m``: every accepted bid pays at most its limit and every accepted offer
  receives at least its own, and no order left out would strictly gain by trading at that price.
* A node's bid may match its own offer (a wash, harmless under one price).

Social welfare of a set of fills (buy order, sell order, qty) is
``Σ qty_wh · (bid limit − offer limit)`` in **nanocredits** (µc/kWh × Wh = 10⁻⁹ credits): exact,
integer, and independent of the price paid, which only moves money between the two sides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from p2pgrid.market.errors import Overfill, UnknownOrder
from p2pgrid.market.orders import BookOrder, Side

__all__ = ["AuctionFill", "AuctionResult", "clear", "check_feasible", "social_welfare"]


@dataclass(frozen=True, slots=True)
class AuctionFill:
    buy_order_id: bytes
    sell_order_id: bytes
    buyer: bytes
    seller: bytes
    qty_wh: int
    price: int


@dataclass(frozen=True, slots=True)
class AuctionResult:
    price: int | None            # None when nothing trades
    volume_wh: int
    fills: tuple[AuctionFill, ...]
    marginal_bid: int | None
    marginal_offer: int | None


def _priority(order: BookOrder) -> tuple[int, int, bytes]:
    sign = -1 if order.side is Side.BUY else 1
    return sign * order.price, order.created_ms, order.order_id


def clear(orders: Iterable[BookOrder], now_ms: int | None = None) -> AuctionResult:
    """Clear ``orders`` in one uniform-price call auction."""
    live = [o for o in orders if now_ms is None or o.expiry_ms > now_ms]
    bids = sorted((o for o in live if o.side is Side.BUY), key=_priority)
    offers = sorted((o for o in live if o.side is Side.SELL), key=_priority)
    bid_left = [o.qty_wh for o in bids]
    offer_left = [o.qty_wh for o in offers]
    pairs: list[tuple[BookOrder, BookOrder, int]] = []
    i = j = 0
    while i < len(bids) and j < len(offers) and bids[i].price >= offers[j].price:
        qty = min(bid_left[i], offer_left[j])
        pairs.append((bids[i], offers[j], qty))
        bid_left[i] -= qty
        offer_left[j] -= qty
        if bid_left[i] == 0:
            i += 1
        if offer_left[j] == 0:
            j += 1
    if not pairs:
        return AuctionResult(None, 0, (), None, None)
    marginal_bid, marginal_offer = pairs[-1][0].price, pairs[-1][1].price
    low, high = marginal_offer, marginal_bid
    if i < len(bids):
        low = max(low, bids[i].price)
    if j < len(offers):
        high = min(high, offers[j].price)
    price = (low + high) // 2
    fills = tuple(AuctionFill(b.order_id, s.order_id, b.owner, s.owner, qty, price) for b, s, qty in pairs)
    return AuctionResult(price, sum(f.qty_wh for f in fills), fills, marginal_bid, marginal_offer)


def check_feasible(fills: Iterable[AuctionFill], orders: Mapping[bytes, BookOrder]) -> None:
    """Raise unless every fill names a bid and an offer of ``orders`` and none is overfilled."""
    used: dict[bytes, int] = {}
    for fill in fills:
        for order_id, side in ((fill.buy_order_id, Side.BUY), (fill.sell_order_id, Side.SELL)):
            order = orders.get(order_id)
            if order is None or order.side is not side:
                raise UnknownOrder(f"fill names {order_id.hex()}, not a {side.value} order of the auction")
            used[order_id] = used.get(order_id, 0) + fill.qty_wh
            if used[order_id] > order.qty_wh:
                raise Overfill(f"order {order_id.hex()} filled {used[order_id]} Wh > {order.qty_wh} Wh")


def social_welfare(fills: Iterable[AuctionFill], orders: Mapping[bytes, BookOrder]) -> int:
    """Σ qty · (bid limit − offer limit), in nanocredits (see the module docstring)."""
    return sum(f.qty_wh * (orders[f.buy_order_id].price - orders[f.sell_order_id].price) for f in fills)
