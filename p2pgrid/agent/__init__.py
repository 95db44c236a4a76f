"""The trading agent (pure): battery schedule, order intents and setpoints per slot.

Flow, once per decision tick (``tick.decide`` composes the first three)::

    forecasts (load, PV) + SlotMarket per slot
        └─ expected_prices(market, fill_probability)      pricing.py
        └─ plan_battery(soc, limits, load, pv, prices)     plan.py     (DP over a SoC grid)
            ├─ orders_for_plan(plan, pv, markets, now_ms)  orders.py   (OrderIntent per slot,
            │                                                           re-priced toward the gate)
            ├─ setpoints_w(plan)                           orders.py   (W per slot)
            └─ decide_slot(plan, ..., actual load/PV)       control.py  (real-time revision of slot 0)

Nothing here reads a clock or does I/O: time is the explicit ``now_ms`` argument.
"""

from p2pgrid.agent.battery import BatteryLimits, BatteryLimitsError, setpoint_w
from p2pgrid.agent.control import decide_change, decide_slot, stored_change_bounds
from p2pgrid.agent.orders import OrderIntent, orders_for_plan, setpoints_w
from p2pgrid.agent.plan import (BatteryPlan, PlanInputError, PlannedSlot, SlotPrices, default_soc_step,
                                plan_battery, schedule_cost, slot_cost)
from p2pgrid.agent.pricing import RepricingRule, SlotMarket, expected_prices, limit_price
from p2pgrid.agent.tick import AgentDecision, AgentSettings, decide

__all__ = [
    "AgentDecision", "AgentSettings", "decide", "BatteryLimits", "BatteryLimitsError", "BatteryPlan", "OrderIntent", "PlanInputError", "PlannedSlot",
    "RepricingRule", "SlotMarket", "SlotPrices", "decide_change", "decide_slot", "default_soc_step",
    "expected_prices", "limit_price", "orders_for_plan", "plan_battery", "schedule_cost", "setpoint_w",
    "setpoints_w", "slot_cost", "stored_change_bounds",
]
