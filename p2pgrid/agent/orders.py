"""From a battery plan to order intents for the market (pure).

For every planned slot still open for trading at ``now_ms``, the expected net grid exchange
(load − PV + battery, rounded to Wh) less what is already committed in that slot is what the
node still needs to buy (> 0) or can still sell (< 0). Quantities below ``min_qty_wh`` are not
worth an order and are left to the grid.

Green flag. A sale is green as far as the slot's expected PV covers it (the exported Wh come from
the roof); any part beyond that comes out of the battery, whose energy is of mixed origin, and is
offered as a separate non-green intent with source ``battery``. Bids are never green.

Limit prices follow ``pricing.limit_price`` (anchored at the expected p2p price, moving toward
feed-in for sellers and retail for buyers as gate closure nears). Battery setpoints per slot come
straight from the plan (``PlannedSlot.setpoint_w``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.agent.plan import BatteryPlan
from p2pgrid.agent.pricing import RepricingRule, SlotMarket, limit_price
from p2pgrid.errors import ConfigError
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, Source


@dataclass(frozen=True)
class OrderIntent:
    """What the agent wants on the book for one slot; the node turns it into a signed Order."""

    slot: int
    side: Side
    qty_wh: int
    limit_price: int
    green: bool
    source: Source


def orders_for_plan(plan: BatteryPlan, pv_wh: Sequence[float], markets: Sequence[SlotMarket],
                    now_ms: int, rules: SlotRules, *, committed_wh: Mapping[int, int] | None = None,
                    rule: RepricingRule = RepricingRule(), min_qty_wh: int = 1) -> list[OrderIntent]:
    """Order intents for the tradable slots of ``plan`` (slot i of the plan is ``markets[i].slot``).

    ``committed_wh[slot]`` is energy already traded for that slot (+ bought, − sold).
    """
    if not len(plan.slots) == len(pv_wh) == len(markets):
        raise ConfigError("plan, pv_wh and markets must describe the same slots")
    if min_qty_wh < 1:
        raise ConfigError("min_qty_wh must be at least 1 Wh")
    committed = committed_wh or {}
    intents: list[OrderIntent] = []
    for planned, pv, market in zip(plan.slots, pv_wh, markets):
        if not rules.is_tradable(market.slot, now_ms):
            continue
        need = round(planned.grid_wh) - committed.get(market.slot, 0)
        gate_ms = rules.gate_closure_ms(market.slot)
        if need >= min_qty_wh:
            price = max(0, limit_price(Side.BUY, market, now_ms, gate_ms, rule))
            intents.append(OrderIntent(market.slot, Side.BUY, need, price, False, Source.NONE))
        elif -need >= min_qty_wh:
            price = max(0, limit_price(Side.SELL, market, now_ms, gate_ms, rule))
            green_wh = min(-need, max(0, round(pv)))
            grey_wh = -need - green_wh
            if green_wh >= min_qty_wh:
                intents.append(OrderIntent(market.slot, Side.SELL, green_wh, price, True, Source.PV))
            if grey_wh >= min_qty_wh:
                intents.append(OrderIntent(market.slot, Side.SELL, grey_wh, price, False, Source.BATTERY))
    return intents


def setpoints_w(plan: BatteryPlan) -> list[int]:
    """Battery setpoint per planned slot, W (+ charging)."""
    return [planned.setpoint_w for planned in plan.slots]
