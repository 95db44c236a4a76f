"""Locality: which zones a node trades with, and what crossing between zones costs (pure).

The model
---------
* Every order carries its **zone** (the grid area its owner is connected in). A node keeps the
  books of its **home** zone and of its **neighbour** zones: the zones its ``[zone.grid_fees]``
  table lists. A zone with a fee entry is tradable; a zone without one is not (its orders are
  never in the books, takes on them are refused with ``ZoneNotTraded``).
* ``grid_fees[X]`` is the network fee, in µc/kWh, for energy moved between the home zone and
  ``X`` in **either direction**; zones that trade with each other list the same fee for each other
  (settlement's fee matrix is then symmetric, ``settlement_grid_fees``).
* **The buyer pays the fee** (settlement rule ``grid_fee``: on the Wh actually delivered, posted
  to the gateway when the slot settles). The taker is the one who chooses to cross zones, so the
  taker bears it:

  - a buyer taking a neighbour-zone offer pays the offer's price to the seller and the fee at
    settlement: its effective price is ``ask + fee``;
  - a seller taking a neighbour-zone bid trades at ``bid − fee`` (``taker_price``), so the bid's
    owner, who pays the fee, pays no more than its bid in all: the seller's effective price is
    ``bid − fee``. A bid below the fee is worth nothing to a cross-zone seller and is skipped.

* The fee is applied **exactly once** per leg: ``route_zones`` routes over fee-adjusted prices,
  then writes each leg back at the price the take names (``taker_price``) with its ``grid_fee``.

Ledger
------
Zones that trade with each other share **one ledger domain**: one committee certifies the buyer's
lock and the seller's fill, whichever zones they are in (entries carry the domain name as their
``zone``; see ``config.ZoneSection.ledger_domain``). A take between two ledger domains could never
complete (the maker's committee never sees the taker's lock), so it is refused up front
(``RefuseReason.WRONG_LEDGER``).

Errors::

    MarketError (p2pgrid.errors)
    └── ZoneNotTraded     an order, take or quote for a zone this node has no grid fee for
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from p2pgrid.errors import ConfigError, MarketError
from p2pgrid.market.amm import Pool
from p2pgrid.market.book import Depth, DepthLevel
from p2pgrid.market.orders import RestingOrder, Side
from p2pgrid.market.router import BookLeg, PoolLeg, RoutePlan, route
from p2pgrid.settlement.rules import GridFee, TradeRecord
from p2pgrid.units import trade_value

__all__ = ["Locality", "ZoneNotTraded", "effective_price", "fee_inclusive_depth", "label_trades", "route_zones", "settlement_grid_fees",
           "taker_price"]


class ZoneNotTraded(MarketError):
    """A zone this node does not trade with (no grid fee is configured for it)."""


@dataclass(frozen=True)
class Locality:
    """A node's home zone and the grid fee (µc/kWh) to each neighbour zone it trades with."""

    home: str
    grid_fees: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.home in self.grid_fees:
            raise ConfigError(f"zone {self.home!r} lists a grid fee to itself")
        for zone, fee in self.grid_fees.items():
            if type(fee) is not int or fee < 0:
                raise ConfigError(f"grid fee to zone {zone!r} must be a non-negative int, got {fee!r}")
        object.__setattr__(self, "grid_fees", dict(sorted(self.grid_fees.items())))

    @property
    def neighbours(self) -> tuple[str, ...]:
        return tuple(self.grid_fees)

    @property
    def zones(self) -> tuple[str, ...]:
        """Every zone whose orders this node keeps: home first, then neighbours by id."""
        return (self.home, *self.grid_fees)

    def trades_with(self, zone: str) -> bool:
        return zone == self.home or zone in self.grid_fees

    def fee(self, zone: str) -> int:
        """µc/kWh for a trade between the home zone and ``zone`` (0 within the home zone)."""
        if zone == self.home:
            return 0
        try:
            return self.grid_fees[zone]
        except KeyError:
            raise ZoneNotTraded(f"zone {self.home!r} does not trade with zone {zone!r} (no grid fee)") from None


def effective_price(taker_side: Side, price: int, fee: int) -> int:
    """What one kWh of an order at ``price`` costs a buyer (``price + fee``) or earns a seller
    (``price − fee``) once the grid fee between the zones is counted."""
    return price + fee if taker_side is Side.BUY else price - fee


def taker_price(taker_side: Side, order_price: int, fee: int) -> int:
    """The price a take names: a buyer pays the offer's own price (the fee comes at settlement);
    a seller trades at ``bid − fee`` so the bid's owner pays its bid in all (see the docstring)."""
    return order_price if taker_side is Side.BUY else order_price - fee


def _adjusted(taker_side: Side, book: Sequence[RestingOrder], fee: int) -> list[RestingOrder]:
    out = []
    for order in book:
        price = effective_price(taker_side, order.price, fee)
        if price >= 0:
            out.append(replace(order, price=price))
    return out


def route_zones(side: Side, qty_wh: int, books: Mapping[str, Sequence[RestingOrder]], pools: Sequence[Pool],
                now_ms: int, locality: Locality, limit_price: int | None = None) -> RoutePlan:
    """The best split of ``qty_wh`` over the books of every traded zone and the home pools,
    comparing **effective** prices (``effective_price``); ``limit_price`` bounds effective prices.

    ``books`` maps a zone to its resting orders of the opposite side, best first. Within one
    effective price, home orders come first (a tie never crosses a zone). In the plan, a
    cross-zone ``BookLeg`` names the order's zone, its ``grid_fee`` and the price the take names
    (``taker_price``); ``total_uc`` is what the taker pays in all (a buyer: trade values plus the
    fees on the Wh, as settlement charges them when delivered in full) or receives (a seller: trade
    values at ``bid − fee``). ``threshold_price`` is effective. Raises ``ZoneNotTraded`` for a
    book of a zone the locality does not trade with.
    """
    merged: list[RestingOrder] = []
    zone_of: dict[bytes, str] = {}
    for zone in sorted(books, key=lambda z: (z != locality.home, z)):
        fee = locality.fee(zone)
        for order in _adjusted(side, books[zone], fee):
            zone_of[order.order_id] = zone
            merged.append(order)
    # Stable sort: within one effective price, home orders (listed first) keep priority.
    merged.sort(key=lambda o: o.price if side is Side.BUY else -o.price)
    plan = route(side, qty_wh, merged, pools, now_ms, limit_price)
    legs: list[BookLeg | PoolLeg] = []
    total = 0
    for leg in plan.legs:
        if isinstance(leg, PoolLeg):
            legs.append(leg)
            total += leg.credits_uc
            continue
        zone = zone_of[leg.order_id]
        fee = locality.fee(zone)
        order_price = leg.price - fee if side is Side.BUY else leg.price + fee
        price = taker_price(side, order_price, fee)
        value = trade_value(leg.qty_wh, price)
        legs.append(BookLeg(leg.order_id, leg.qty_wh, price, value, zone=zone, grid_fee=fee))
        total += value + (trade_value(leg.qty_wh, fee) if side is Side.BUY else 0)
    return RoutePlan(side, plan.requested_wh, plan.filled_wh, total, plan.threshold_price, tuple(legs))


def fee_inclusive_depth(depth: Depth, fee: int) -> Depth:
    """A neighbour zone's depth as this node would trade it: asks at ``ask + fee`` (what a buyer
    here pays), bids at ``bid − fee`` (what a seller here gets; bids below the fee dropped)."""
    asks = tuple(DepthLevel(level.price + fee, level.qty_wh, level.orders) for level in depth.asks)
    bids = tuple(DepthLevel(level.price - fee, level.qty_wh, level.orders) for level in depth.bids if level.price >= fee)
    return Depth(bids=bids, asks=asks)


def settlement_grid_fees(localities: Iterable[Locality]) -> tuple[GridFee, ...]:
    """The settlement fee matrix of a ledger domain from its zones' localities: each listed fee
    applies both ways. Raises ``ConfigError`` if two zones disagree on the fee between them."""
    fees: dict[tuple[str, str], int] = {}
    for locality in localities:
        for zone, fee in locality.grid_fees.items():
            for pair in ((locality.home, zone), (zone, locality.home)):
                if fees.setdefault(pair, fee) != fee:
                    raise ConfigError(f"zones disagree on the grid fee between {pair[0]!r} and {pair[1]!r}: "
                                      f"{fees[pair]} and {fee}")
    return tuple(GridFee(a, b, fee) for (a, b), fee in sorted(fees.items()))


def label_trades(trades: Iterable[TradeRecord], zones: Mapping[bytes, tuple[str, str]]) -> list[TradeRecord]:
    """``trades`` with their (seller zone, buyer zone) taken from ``zones`` (by trade id), for
    settlement: the certified lock does not carry zones yet, the trading layer knows them."""
    out = []
    for trade in trades:
        seller_zone, buyer_zone = zones.get(trade.trade_id, (trade.seller_zone, trade.buyer_zone))
        out.append(replace(trade, seller_zone=seller_zone, buyer_zone=buyer_zone))
    return out
