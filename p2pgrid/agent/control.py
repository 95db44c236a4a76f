"""Real-time decision for the current slot, given what the slot actually brings (pure).

A plan is made from forecasts; the slot's real load and PV differ. Following the plan's setpoint
blindly sends every forecast error to the grid at the worst price (import at ``buy``, export at
``sell``). Instead the controller re-decides the *current* slot with the slot's measured load and
PV and the plan's value-to-go after the slot (``BatteryPlan.value_after_first``, linear between
grid levels), choosing the SoC change ``d`` that minimises::

    cost_0(d; actual load, actual PV) + V_1(soc + d)

over the same device limits the planner uses. The objective is piecewise linear in ``d`` with
kinks where the bus energy changes sign, where the net grid exchange is zero and at the grid
levels, so its minimum is at one of those points or at a limit: the controller evaluates exactly
those candidates. Everything after the current slot still comes from the plan.

On real hardware this is what a battery inverter's local loop does within a slot when it tracks
the plan with measured power; in simulation it is applied to the slot's metered totals.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from p2pgrid.agent.battery import BatteryLimits, setpoint_w
from p2pgrid.agent.plan import BatteryPlan, PlannedSlot, SlotPrices, transition_cost


def stored_change_bounds(limits: BatteryLimits, soc_wh: float, slot_s: int) -> tuple[float, float]:
    """The least and greatest SoC change allowed in one slot from ``soc_wh``."""
    low = max(-limits.max_discharge_stored_wh(slot_s), limits.floor_wh - soc_wh)
    high = min(limits.max_charge_stored_wh(slot_s), limits.ceiling_wh - soc_wh)
    if soc_wh < limits.floor_wh:  # outside the band: only toward it
        low = 0.0
        high = max(high, 0.0)
    if soc_wh > limits.ceiling_wh:
        high = 0.0
        low = min(low, 0.0)
    return low, high


def interpolate_value(levels: Sequence[int], values: Sequence[float], soc_wh: float) -> float:
    """Cost-to-go at ``soc_wh``, linear between grid levels and flat beyond the ends."""
    if soc_wh <= levels[0]:
        return values[0]
    if soc_wh >= levels[-1]:
        return values[-1]
    upper = bisect.bisect_right(levels, soc_wh)
    lower = upper - 1
    share = (soc_wh - levels[lower]) / (levels[upper] - levels[lower])
    return values[lower] + share * (values[upper] - values[lower])


def decide_slot(plan: BatteryPlan, limits: BatteryLimits, soc_wh: float, load_wh: float, pv_wh: float,
                prices: SlotPrices, slot_s: int, *, cycle_cost: float = 0.0) -> float:
    """SoC change (Wh, + charging) for the plan's first slot given its actual load and PV."""
    return decide_change(plan.soc_levels, plan.value_after_first, limits, soc_wh, load_wh, pv_wh, prices,
                         slot_s, cycle_cost=cycle_cost)


def decide_change(levels: Sequence[int], value_after: Sequence[float], limits: BatteryLimits, soc_wh: float,
                  load_wh: float, pv_wh: float, prices: SlotPrices, slot_s: int, *,
                  cycle_cost: float = 0.0) -> float:
    """SoC change for one slot minimising its cost plus the cost-to-go ``value_after`` (on
    ``levels``, linear in between) after it."""
    low, high = stored_change_bounds(limits, soc_wh, slot_s)
    base_net = load_wh - pv_wh
    candidates = {low, high, min(max(0.0, low), high)}
    zero_net = limits.stored_change_wh(-base_net)
    if low <= zero_net <= high:
        candidates.add(zero_net)
    for level in levels:
        if low <= level - soc_wh <= high:
            candidates.add(level - soc_wh)

    def total(change: float) -> float:
        return (transition_cost(limits, change, base_net, prices, cycle_cost)
                + interpolate_value(levels, value_after, soc_wh + change))

    return min(sorted(candidates), key=total)


def traded_setpoint_w(planned: PlannedSlot, committed_wh: int, slot_s: int) -> int:
    """The current slot's setpoint (W, + charging) held to what was actually traded for it.

    The plan expects some of its exchange to be traded; by the slot's start the trades are final
    (``committed_wh``: + bought, − sold). Battery energy is never exported beyond the slot's own
    need plus what was sold, nor bought from the grid for storage beyond its own surplus plus what
    was bought: an unsold offer leaves the energy stored (it can be sold later) instead of pouring
    it into the grid at feed-in, an unfilled bid leaves the battery uncharged instead of importing
    at retail. With ``base`` = load − PV of the plan's slot, the bus energy ``b`` is clamped to
    ``-(max(0, base) + sold) <= b <= max(0, -base) + bought``, never past the plan's own ``b``.
    """
    base = planned.grid_wh - planned.battery_bus_wh
    bus = planned.battery_bus_wh
    bought, sold = max(0, committed_wh), max(0, -committed_wh)
    if bus < 0:
        bus = max(bus, -(max(0.0, base) + sold))
    elif bus > 0:
        bus = min(bus, max(0.0, -base) + bought)
    return setpoint_w(bus, slot_s)
