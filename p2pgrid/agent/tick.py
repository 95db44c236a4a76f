"""One decision tick of the agent: forecasts and market outlook in, plan, orders and setpoints out.

This is the call a node makes every tick (e.g. each slot, or whenever forecasts or prices
change); the pieces it composes are usable on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.orders import OrderIntent, orders_for_plan
from p2pgrid.agent.plan import BatteryPlan, PlanInputError, plan_battery
from p2pgrid.agent.pricing import RepricingRule, SlotMarket, expected_prices
from p2pgrid.units import SlotRules

DEFAULT_FILL_PROBABILITY = 0.5


@dataclass(frozen=True)
class AgentSettings:
    """How the agent values energy; see ``pricing.py`` and ``plan.py`` for each field's rule."""

    fill_probability: float = DEFAULT_FILL_PROBABILITY
    terminal_price: float = 0.0          # µc/kWh for energy left stored at the horizon's end
    cycle_cost: float = 0.0              # µc per kWh taken out of storage
    soc_step_wh: int | None = None       # None: default_soc_step
    min_qty_wh: int = 1
    repricing: RepricingRule = RepricingRule()


@dataclass(frozen=True)
class AgentDecision:
    plan: BatteryPlan
    orders: tuple[OrderIntent, ...]
    setpoints_w: tuple[int, ...]         # per planned slot, + charging


def decide(soc_wh: int, limits: BatteryLimits, load_wh: Sequence[float], pv_wh: Sequence[float],
           markets: Sequence[SlotMarket], now_ms: int, rules: SlotRules, *,
           committed_wh: Mapping[int, int] | None = None, settings: AgentSettings = AgentSettings()) -> AgentDecision:
    """Plan the battery over ``markets``' consecutive slots and derive orders and setpoints."""
    if any(b.slot - a.slot != rules.length_s for a, b in zip(markets, markets[1:])):
        raise PlanInputError("markets must be consecutive slots of the zone's slot length")
    prices = [expected_prices(market, settings.fill_probability) for market in markets]
    pv = [max(0.0, value) for value in pv_wh]
    plan = plan_battery(soc_wh, limits, load_wh, pv, prices, rules.length_s, soc_step_wh=settings.soc_step_wh,
                        terminal_price=settings.terminal_price, cycle_cost=settings.cycle_cost)
    orders = decide_orders(plan, pv, markets, now_ms, rules, committed_wh=committed_wh, settings=settings)
    return AgentDecision(plan, orders, tuple(slot.setpoint_w for slot in plan.slots))


def decide_orders(plan: BatteryPlan, pv_wh: Sequence[float], markets: Sequence[SlotMarket], now_ms: int,
                  rules: SlotRules, *, committed_wh: Mapping[int, int] | None = None,
                  settings: AgentSettings = AgentSettings()) -> tuple[OrderIntent, ...]:
    """The orders of an existing plan at ``now_ms`` (limits re-priced toward the gate): what a
    tick does when nothing the plan depends on changed."""
    return tuple(orders_for_plan(plan, pv_wh, markets, now_ms, rules, committed_wh=committed_wh,
                                 rule=settings.repricing, min_qty_wh=settings.min_qty_wh))
