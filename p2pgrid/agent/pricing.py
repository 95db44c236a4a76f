"""Prices the agent plans with and the limit prices it quotes (pure).

A zone's tariffs bound every local trade: nobody buys from a neighbour above the **retail** import
price (the grid sells at that) or sells below the **feed-in** price (the grid buys at that). The
agent expects peer-to-peer trades to clear at ``expected_p2p`` (e.g. the last clearing prices of
that slot of the day), clamped into ``[feed_in, retail]``.

Planning prices (``expected_prices``). A bid or offer is only filled with some probability
``fill_probability``; the rest of the slot's need goes to the grid at the tariff. So the expected
price of a marginal Wh is::

    buy  = p * p2p + (1 - p) * retail
    sell = p * p2p + (1 - p) * feed_in

``p = 0`` plans against the grid alone, ``p = 1`` trusts the market fully (then buy = sell and
the battery sees no self-consumption value, only time arbitrage).

An offer resting on the book now (``best_ask``, others' best) is energy that can be bought at
its price: the buy price is at most that (never below feed-in). Only the buy side moves with it:
the agent's own offers keep their anchor, so one seller's re-pricing does not make every other
seller re-plan and re-price in turn.

Re-pricing toward gate closure (``limit_price``). Far from gate closure an order rests at the
expected p2p price; as the gate nears, unfilled energy will fall back to the grid, so waiting
is worth less and the agent concedes toward its fallback. With ``ramp_s`` the length of the
ramp, ``elapsed = clamp(ramp_ms - (gate_closure_ms - now_ms), 0, ramp_ms)``::

    seller: limit = anchor + (feed_in - anchor) * elapsed // ramp_ms   (falls toward feed-in)
    buyer:  limit = anchor + (retail  - anchor) * elapsed // ramp_ms   (rises toward retail)

with ``anchor = clamp(expected_p2p, feed_in, retail)``. Integer arithmetic; the limit moves
monotonically in ``now_ms`` and reaches the tariff exactly at gate closure. Quoting exactly the
fallback price at the gate is rational: a fill there is no worse than the grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pgrid.agent.plan import SlotPrices
from p2pgrid.errors import ConfigError
from p2pgrid.wire import Side

DEFAULT_RAMP_S = 4 * 3600


@dataclass(frozen=True)
class SlotMarket:
    """Tariffs and the expected local price of one delivery slot, µc/kWh."""

    slot: int
    retail: int
    feed_in: int
    expected_p2p: int
    best_ask: int | None = None      # what others offer on the book now, if anything

    @property
    def anchor(self) -> int:
        """``expected_p2p`` clamped into the tariff band."""
        low, high = min(self.feed_in, self.retail), max(self.feed_in, self.retail)
        return min(max(self.expected_p2p, low), high)


def expected_prices(market: SlotMarket, fill_probability: float) -> SlotPrices:
    """Prices of a marginal Wh bought and sold in ``market``'s slot (see module doc)."""
    if not 0.0 <= fill_probability <= 1.0:
        raise ConfigError("fill_probability must be within 0..1")
    p = fill_probability
    buy = round(p * market.anchor + (1 - p) * market.retail)
    if market.best_ask is not None:
        buy = min(buy, max(market.best_ask, min(market.feed_in, market.retail)))
    return SlotPrices(buy=buy, sell=round(p * market.anchor + (1 - p) * market.feed_in))


@dataclass(frozen=True)
class RepricingRule:
    """How long before gate closure limit prices start moving toward the tariff."""

    ramp_s: int = DEFAULT_RAMP_S

    def __post_init__(self) -> None:
        if self.ramp_s <= 0:
            raise ConfigError("RepricingRule.ramp_s must be > 0")

    def elapsed_ms(self, now_ms: int, gate_closure_ms: int) -> int:
        """How far into the ramp ``now_ms`` is, 0..ramp_ms."""
        ramp_ms = self.ramp_s * 1000
        return min(max(ramp_ms - (gate_closure_ms - now_ms), 0), ramp_ms)


def limit_price(side: Side, market: SlotMarket, now_ms: int, gate_closure_ms: int,
                rule: RepricingRule = RepricingRule()) -> int:
    """The limit price to quote for ``side`` in ``market``'s slot at ``now_ms`` (see module doc)."""
    anchor = market.anchor
    fallback = market.feed_in if side is Side.SELL else market.retail
    elapsed = rule.elapsed_ms(now_ms, gate_closure_ms)
    return anchor + (fallback - anchor) * elapsed // (rule.ramp_s * 1000)
