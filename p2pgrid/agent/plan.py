"""Battery schedule by dynamic programming over a discretised state of charge (pure).

The problem. Over slots ``t = 0..T-1`` we know (or expect) the household's load ``L_t`` and PV
``P_t`` (Wh) and the price of a marginal Wh bought (``buy_t``) and sold (``sell_t``), µc/kWh. The
battery's SoC moves by ``d_t`` per slot within its limits (``battery.py``); its bus energy
``b_t = bus(d_t)`` adds to the slot's net grid exchange ``n_t = L_t - P_t + b_t`` (+ import).
A slot costs::

    cost_t = n_t * buy_t / 1000      if n_t > 0      (import)
           = n_t * sell_t / 1000     otherwise       (export earns sell_t)
           + cycle_cost * max(0, -d_t) / 1000        (wear per kWh taken out of storage)

and the plan minimises ``sum cost_t - terminal_price * soc_T / 1000``: the last term values energy
left in storage at the horizon's end, so a finite horizon does not dump it. Self-consumption
(store PV surplus rather than sell it cheap) and arbitrage (buy cheap, use or sell dear) both fall
out of this one objective.

The grid. SoC takes the levels ``floor + k * step`` (``k = 0..``, not above ceiling); ``step``
should divide ``ceiling - floor`` (``default_soc_step`` picks one that does). A transition may
move at most ``floor(max_charge_stored / step)`` levels up and ``floor(max_discharge_stored /
step)`` down, so the plan never leaves the device limits; the first slot starts from the exact
SoC, which need not be on the grid. A SoC outside the band (after a reserve change) may only move
toward it.

Cost: ``O(T * levels * moves)`` additions. With 100 levels and ±12 moves a day-ahead plan of 96
slots is ~0.1 M additions.

The plan also carries the value-to-go after its first slot, so a real-time controller
(``control.py``) can re-decide the first slot once the slot's actual load and PV are known.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.agent.battery import BatteryLimits, setpoint_w
from p2pgrid.errors import ConfigError

WH_PER_KWH = 1000


class PlanInputError(ConfigError):
    """Planner inputs that do not fit together (lengths, grid step, horizon)."""


@dataclass(frozen=True)
class SlotPrices:
    """What a marginal Wh costs to buy and earns when sold in one slot, µc/kWh."""

    buy: int
    sell: int


@dataclass(frozen=True)
class PlannedSlot:
    """One slot of a plan. ``battery_bus_wh`` and ``setpoint_w`` are + for charging; ``grid_wh``
    is the expected net exchange, + for import."""

    soc_start_wh: int
    soc_end_wh: int
    battery_bus_wh: float
    setpoint_w: int
    grid_wh: float
    cost: float


@dataclass(frozen=True)
class BatteryPlan:
    """The optimal schedule over the horizon and what the controller needs to revise slot 0."""

    slots: tuple[PlannedSlot, ...]
    expected_cost: float               # µc: slot costs minus the terminal value of stored energy
    soc_levels: tuple[int, ...]        # the grid
    value_after_first: tuple[float, ...]  # optimal cost-to-go from each level after slot 0
    values_after: tuple[tuple[float, ...], ...] = ()  # [t] cost-to-go after slot t (if kept)

    @property
    def first(self) -> PlannedSlot:
        return self.slots[0]


def slot_cost(net_wh: float, prices: SlotPrices) -> float:
    """µc paid (+) or earned (-) for a net grid exchange of ``net_wh`` in one slot."""
    price = prices.buy if net_wh > 0 else prices.sell
    return net_wh * price / WH_PER_KWH


def wear_cost(stored_change_wh: float, cycle_cost: float) -> float:
    """µc of wear for a SoC change: ``cycle_cost`` µc per kWh taken out of storage."""
    return cycle_cost * max(0.0, -stored_change_wh) / WH_PER_KWH


def transition_cost(limits: BatteryLimits, stored_change_wh: float, base_net_wh: float,
                    prices: SlotPrices, cycle_cost: float) -> float:
    """Cost of one slot where the SoC changes by ``stored_change_wh`` and load − PV is ``base_net_wh``."""
    net = base_net_wh + limits.bus_wh(stored_change_wh)
    return slot_cost(net, prices) + wear_cost(stored_change_wh, cycle_cost)


def default_soc_step(limits: BatteryLimits, slot_s: int, target_levels: int = 100) -> int:
    """A grid step near ``(ceiling - floor) / target_levels``, no larger than one slot's move,
    dividing the band exactly when a divisor lies within a factor of two of that."""
    span = limits.ceiling_wh - limits.floor_wh
    if span <= 0:
        return 1
    one_move = min(limits.max_charge_stored_wh(slot_s), limits.max_discharge_stored_wh(slot_s))
    wanted = max(1, span // target_levels)
    if one_move >= 1:
        wanted = min(wanted, int(one_move))
    for step in range(wanted, max(1, wanted // 2) - 1, -1):
        if span % step == 0:
            return step
    return wanted  # no divisor near: the top level stays below the ceiling by less than a step


def soc_levels(limits: BatteryLimits, soc_wh: int, step: int) -> list[int]:
    """The SoC grid: the band ``floor + k*step``, extended by whole steps to reach ``soc_wh`` when
    it lies outside the band."""
    floor, ceiling = limits.floor_wh, limits.ceiling_wh
    low = floor - math.ceil((floor - soc_wh) / step) * step if soc_wh < floor else floor
    top = floor + (ceiling - floor) // step * step
    high = top + math.ceil((soc_wh - top) / step) * step if soc_wh > ceiling else top
    return list(range(low, high + 1, step))


def _move_ranges(levels: Sequence[int], limits: BatteryLimits, up: int, down: int) -> list[tuple[int, int]]:
    """For each level, the allowed level moves ``(k_min, k_max)``: within the power limits, never
    leaving the band, and outside the band only toward it."""
    floor, ceiling = limits.floor_wh, limits.ceiling_wh
    first_in = next(i for i, level in enumerate(levels) if level >= floor)
    last_in = max(i for i, level in enumerate(levels) if level <= ceiling)
    ranges = []
    for i, level in enumerate(levels):
        if level < floor:
            ranges.append((0, min(up, last_in - i)))
        elif level > ceiling:
            ranges.append((max(-down, first_in - i), 0))
        else:
            ranges.append((max(-down, first_in - i), min(up, last_in - i)))
    return ranges


def plan_battery(soc_wh: int, limits: BatteryLimits, load_wh: Sequence[float], pv_wh: Sequence[float],
                 prices: Sequence[SlotPrices], slot_s: int, *, soc_step_wh: int | None = None,
                 terminal_price: float = 0.0, cycle_cost: float = 0.0,
                 keep_values: bool = False) -> BatteryPlan:
    """The cost-minimising battery schedule for the slots described by ``load_wh``, ``pv_wh`` and
    ``prices`` (equal lengths, at least one slot), starting from ``soc_wh``. With ``keep_values``
    the plan also carries the cost-to-go after every slot (for a controller that follows it)."""
    horizon = len(load_wh)
    if horizon == 0 or len(pv_wh) != horizon or len(prices) != horizon:
        raise PlanInputError("load_wh, pv_wh and prices must be non-empty and of equal length")
    step = soc_step_wh or default_soc_step(limits, slot_s)
    if step <= 0:
        raise PlanInputError("soc_step_wh must be positive")
    up = int(limits.max_charge_stored_wh(slot_s) // step)
    down = int(limits.max_discharge_stored_wh(slot_s) // step)
    if up == 0 and down == 0 and (limits.max_charge_w or limits.max_discharge_w):
        raise PlanInputError(f"soc_step_wh={step} exceeds what the battery can move in one slot")
    levels = soc_levels(limits, soc_wh, step)
    count = len(levels)
    ranges = _move_ranges(levels, limits, up, down)
    base_net = [load - pv for load, pv in zip(load_wh, pv_wh)]

    # Backward induction: value[i] = optimal cost from level i at the start of slot t.
    value = [-terminal_price * level / WH_PER_KWH for level in levels]
    policy: list[list[int]] = [[] for _ in range(horizon)]
    kept: list[tuple[float, ...]] = [tuple(value)] if keep_values else []
    for t in range(horizon - 1, 0, -1):
        move_cost = [transition_cost(limits, k * step, base_net[t], prices[t], cycle_cost)
                     for k in range(-down, up + 1)]
        new_value = [0.0] * count
        choice = [0] * count
        for i in range(count):
            k_min, k_max = ranges[i]
            best_k, best = k_min, math.inf
            for k in range(k_min, k_max + 1):
                candidate = move_cost[k + down] + value[i + k]
                if candidate < best:
                    best, best_k = candidate, k
            new_value[i], choice[i] = best, best_k
        policy[t] = choice
        value = new_value
        if keep_values:
            kept.append(tuple(value))
    value_after_first = tuple(value)

    first_index, first_cost = _best_first_move(soc_wh, levels, limits, base_net[0], prices[0],
                                               value, slot_s, cycle_cost)
    plan = _unroll(soc_wh, first_index, first_cost, levels, policy, limits, base_net, prices,
                   slot_s, cycle_cost, terminal_price, value_after_first)
    if keep_values:
        plan = dataclasses.replace(plan, values_after=tuple(reversed(kept)))
    return plan


def _best_first_move(soc_wh: int, levels: Sequence[int], limits: BatteryLimits, base_net: float,
                     prices: SlotPrices, value: Sequence[float], slot_s: int,
                     cycle_cost: float) -> tuple[int, float]:
    """Slot 0 starts at the exact SoC: pick the reachable level with the least total cost."""
    max_up, max_down = limits.max_charge_stored_wh(slot_s), limits.max_discharge_stored_wh(slot_s)
    floor, ceiling = limits.floor_wh, limits.ceiling_wh
    best_index, best_total, best_cost = -1, math.inf, 0.0
    for index, level in enumerate(levels):
        change = level - soc_wh
        if not -max_down <= change <= max_up:
            continue
        if level < floor and change < 0 or level > ceiling and change > 0:
            continue  # outside the band: only toward it
        cost = transition_cost(limits, change, base_net, prices, cycle_cost)
        if cost + value[index] < best_total:
            best_index, best_total, best_cost = index, cost + value[index], cost
    if best_index < 0:
        raise PlanInputError("no SoC level reachable in the first slot: soc_step_wh exceeds the power limits")
    return best_index, best_cost


def _unroll(soc_wh: int, first_index: int, first_cost: float, levels: Sequence[int],
            policy: Sequence[Sequence[int]], limits: BatteryLimits, base_net: Sequence[float],
            prices: Sequence[SlotPrices], slot_s: int, cycle_cost: float, terminal_price: float,
            value_after_first: tuple[float, ...]) -> BatteryPlan:
    slots = []
    index, soc, cost = first_index, soc_wh, first_cost
    for t in range(len(base_net)):
        if t > 0:
            index = index + policy[t][index]
            cost = transition_cost(limits, levels[index] - soc, base_net[t], prices[t], cycle_cost)
        end = levels[index]
        bus = limits.bus_wh(end - soc)
        slots.append(PlannedSlot(soc, end, bus, setpoint_w(bus, slot_s), base_net[t] + bus, cost))
        soc = end
    total = sum(s.cost for s in slots) - terminal_price * soc / WH_PER_KWH
    return BatteryPlan(tuple(slots), total, tuple(levels), value_after_first)


def schedule_cost(soc_wh: int, socs_after: Sequence[float], limits: BatteryLimits,
                  load_wh: Sequence[float], pv_wh: Sequence[float], prices: Sequence[SlotPrices],
                  *, terminal_price: float = 0.0, cycle_cost: float = 0.0) -> float:
    """Cost of following the SoC path ``socs_after`` (SoC at the end of each slot) from ``soc_wh``,
    with the planner's objective. No feasibility check: callers check limits separately."""
    total, soc = 0.0, float(soc_wh)
    for end, load, pv, price in zip(socs_after, load_wh, pv_wh, prices, strict=True):
        total += transition_cost(limits, end - soc, load - pv, price, cycle_cost)
        soc = end
    return total - terminal_price * soc / WH_PER_KWH
