"""``python -m simnet.bench agent``: forecasting skill and the agent's value on real profiles.

For each simulated household (a seed: synPRO household load, PV from DWD TRY weather via pvlib,
SMARD day-ahead prices) the benchmark walks ``--days`` days slot by slot after ``--warmup-days``
of history that train the gate:

(a) forecasts: every slot, the gate and each expert forecast load and PV for the next 24 h; MAE
    per expert and for the gate (averaged over horizons 1..96), skill against persistence;
(b) the agent: every slot it plans the battery over the next 24 h with the gate's forecasts
    (rolling horizon), then decides the current slot (``control.decide_slot`` with the slot's
    metered load and PV, or ``--control setpoint`` to follow the plan's setpoint blindly). Its
    value is the bill saving against the same household without a battery, as a percentage of
    the perfect-foresight optimum: one DP over all days with the actual load and PV, and the
    better of its grid schedule and the same continuous per-slot decision following its
    cost-to-go (the grid alone would leave a few % on the table that the agent's controller
    picks up, making ratios above 100 % possible).

Tariff (a dynamic retail tariff, as German suppliers offer): retail = day-ahead + ``--fees``
µc/kWh, feed-in = ``--feed-in`` µc/kWh; expected p2p price midway; planning prices from
``expected_prices`` with ``--fill-probability``. Bills are counted at those expected prices
(no market is simulated here). Day-ahead prices are treated as known over the planning horizon.
Energy left in the battery at the end counts at ``discharge_efficiency ×`` the mean buy price,
for the agent and the optimum alike (the agent's rolling plans use the mean of their own window).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.control import decide_change, decide_slot
from p2pgrid.agent.plan import SlotPrices, plan_battery, slot_cost, transition_cost
from p2pgrid.agent.pricing import SlotMarket, expected_prices
from p2pgrid.forecast.clearsky import PvSite
from p2pgrid.forecast.experts import LOAD_EXPERTS, PV_EXPERTS, SeriesContext
from p2pgrid.forecast.gate import GateConfig, new_gate, step
from simnet import profiles

SLOT_S = 900
SLOTS_PER_DAY = 86400 // SLOT_S
GATE = "gate"


@dataclass
class ErrorTally:
    """Sum of absolute errors per forecaster, averaged over horizons and issue times."""

    sums: dict[str, float]
    count: int = 0

    def add(self, forecasts: dict[str, Sequence[float]], actual: Sequence[float]) -> None:
        horizon = len(actual)
        for name, values in forecasts.items():
            self.sums[name] = self.sums.get(name, 0.0) + sum(abs(values[h] - actual[h]) for h in range(horizon)) / horizon
        self.count += 1

    def mae(self) -> dict[str, float]:
        return {name: total / self.count for name, total in self.sums.items()}


@dataclass
class HouseholdResult:
    seed: int
    load_mae: dict[str, float]
    pv_mae: dict[str, float]
    cost_no_battery: float
    cost_agent: float
    cost_optimum: float
    seconds: float

    @property
    def agent_saving(self) -> float:
        return self.cost_no_battery - self.cost_agent

    @property
    def optimum_saving(self) -> float:
        return self.cost_no_battery - self.cost_optimum


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench agent", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="evaluated days (default 30)")
    parser.add_argument("--warmup-days", type=int, default=28, help="history before the evaluated days")
    parser.add_argument("--start-day", type=int, default=91, help="first evaluated profile day (0 = 1 Jan)")
    parser.add_argument("--households", type=int, default=3, help="number of seeded households")
    parser.add_argument("--price-year", type=int, default=2018, choices=profiles.PRICE_YEARS)
    parser.add_argument("--fees", type=int, default=200_000, help="retail = day-ahead + fees, µc/kWh")
    parser.add_argument("--feed-in", type=int, default=80_000, help="feed-in tariff, µc/kWh")
    parser.add_argument("--fill-probability", type=float, default=0.5)
    parser.add_argument("--horizon", type=int, default=SLOTS_PER_DAY, help="planning horizon, slots")
    parser.add_argument("--control", choices=("realtime", "setpoint"), default="realtime")
    parser.add_argument("--ev", action="store_true", help="add synPRO EV home charging to the load (uncontrolled)")
    parser.add_argument("--etas", type=str, default=None,
                        help="comma-separated gate mixture sharpnesses (default: GateConfig's)")
    return parser.parse_args(argv)


def household_battery(seed: int) -> BatteryLimits:
    capacity = (8_000, 10_000, 12_000)[seed % 3]
    return BatteryLimits(capacity_wh=capacity, max_charge_w=capacity // 2, max_discharge_w=capacity // 2,
                         min_soc_wh=capacity // 20)


def markets_for(day_ahead: Sequence[int], first_slot_s: int, fees: int, feed_in: int) -> list[SlotMarket]:
    return [SlotMarket(slot=first_slot_s + i * SLOT_S, retail=price + fees, feed_in=feed_in,
                       expected_p2p=(price + fees + feed_in) // 2) for i, price in enumerate(day_ahead)]


def run_household(seed: int, args: argparse.Namespace) -> HouseholdResult:
    started = time.perf_counter()
    first_day = args.start_day - args.warmup_days
    if first_day < 0:
        raise SystemExit("--start-day must be at least --warmup-days")
    total_days = args.warmup_days + args.days
    horizon = args.horizon
    load = [float(v) for v in profiles.household_load(seed, total_days + 1, first_day, SLOT_S)]
    if args.ev:
        ev = profiles.ev_charging(seed, total_days + 1, first_day, SLOT_S)
        load = [house + car for house, car in zip(load, ev)]
    kwp = 4.0 + seed % 4 * 1.5
    pv = [float(v) for v in profiles.pv_generation(kwp, 30.0, 180.0, total_days + 1, first_day, SLOT_S, seed=seed)]
    first_slot_s = profiles.profile_slot_utc_s(args.price_year, first_day)
    day_ahead = profiles.day_ahead_prices(args.price_year, total_days + 1, first_day, SLOT_S)
    markets = markets_for(day_ahead, first_slot_s, args.fees, args.feed_in)
    prices = [expected_prices(m, args.fill_probability) for m in markets]
    limits = household_battery(seed)
    latitude, longitude = profiles.pv_site()
    context = SeriesContext(SLOT_S, first_slot_s, PvSite(latitude, longitude, 30.0, 180.0))
    gate_config = (GateConfig(horizon) if args.etas is None
                   else GateConfig(horizon, etas=tuple(float(v) for v in args.etas.split(",")), default_variant=0))
    load_gate, pv_gate = new_gate(LOAD_EXPERTS, gate_config), new_gate(PV_EXPERTS, gate_config)

    begin, end = args.warmup_days * SLOTS_PER_DAY, total_days * SLOTS_PER_DAY
    evaluated = range(begin, end)
    # Stored energy left at the end of the evaluation counts at this price for agent and optimum
    # alike; the agent's own plans value energy left at their horizon's end from the prices it
    # can see (discharge efficiency × the mean buy price of the planning window).
    mean_buy = sum(p.buy for p in prices[begin:end]) / len(evaluated)
    terminal_price = limits.discharge_efficiency * mean_buy
    load_errors, pv_errors = ErrorTally({}), ErrorTally({})
    soc0 = limits.floor_wh + (limits.ceiling_wh - limits.floor_wh) // 2
    soc = float(soc0)
    cost_agent = 0.0
    for t in range(begin):  # train the gate on the warm-up history
        load_gate, _ = step(load_gate, load[:t], context)
        pv_gate, _ = step(pv_gate, pv[:t], context)
    for t in evaluated:
        load_gate, load_fc = step(load_gate, load[:t], context)
        pv_gate, pv_fc = step(pv_gate, pv[:t], context)
        load_errors.add({**load_fc.experts, GATE: load_fc.values}, load[t:t + horizon])
        pv_errors.add({**pv_fc.experts, GATE: pv_fc.values}, pv[t:t + horizon])
        window = prices[t:t + horizon]
        horizon_terminal_price = limits.discharge_efficiency * sum(p.buy for p in window) / len(window)
        plan = plan_battery(round(soc), limits, load_fc.values, [max(0.0, v) for v in pv_fc.values],
                            window, SLOT_S, terminal_price=horizon_terminal_price)
        if args.control == "realtime":
            change = decide_slot(plan, limits, soc, load[t], pv[t], prices[t], SLOT_S)
        else:
            change = plan.first.soc_end_wh - soc
        cost_agent += transition_cost(limits, change, load[t] - pv[t], prices[t], 0.0)
        soc += change
    cost_agent -= terminal_price * (soc - soc0) / 1000

    actual_prices: list[SlotPrices] = prices[begin:end]
    cost_none = sum(slot_cost(load[t] - pv[t], prices[t]) for t in evaluated)
    optimum = plan_battery(soc0, limits, load[begin:end], pv[begin:end], actual_prices, SLOT_S,
                           terminal_price=terminal_price, keep_values=True)
    cost_grid_optimum = optimum.expected_cost + terminal_price * soc0 / 1000
    # The grid DP restricts SoC to its levels; following its cost-to-go with the same continuous
    # per-slot decision the agent uses (now with the actual load and PV) can only do better.
    cost_followed, soc_pf = 0.0, float(soc0)
    for offset, t in enumerate(evaluated):
        change = decide_change(optimum.soc_levels, optimum.values_after[offset], limits, soc_pf, load[t], pv[t],
                               prices[t], SLOT_S)
        cost_followed += transition_cost(limits, change, load[t] - pv[t], prices[t], 0.0)
        soc_pf += change
    cost_followed -= terminal_price * (soc_pf - soc0) / 1000
    cost_optimum = min(cost_grid_optimum, cost_followed)
    return HouseholdResult(seed, load_errors.mae(), pv_errors.mae(), cost_none, cost_agent, cost_optimum,
                           time.perf_counter() - started)


def format_mae(title: str, mae: dict[str, float]) -> list[str]:
    reference = mae["persistence"]
    best_expert = min(v for k, v in mae.items() if k != GATE)
    lines = [f"  {title:<5} " + "  ".join(f"{name}={value:7.1f} ({1 - value / reference:+.2f})"
                                          for name, value in mae.items())]
    lines.append(f"        gate vs best single expert: {mae[GATE]:.1f} vs {best_expert:.1f} Wh "
                 f"({'beats' if mae[GATE] < best_expert else 'does NOT beat'} it)")
    return lines


def main(argv: list[str]) -> int:
    args = parse(argv)
    print(f"agent benchmark: {args.households} households, {args.days} days from profile day {args.start_day} "
          f"(+{args.warmup_days} warm-up), prices SMARD {args.price_year}, slot {SLOT_S} s, "
          f"horizon {args.horizon} slots, control={args.control}{', with EV charging' if args.ev else ''}")
    print("forecast MAE in Wh per 15-min slot, mean over horizons 1..%d (skill vs persistence)" % args.horizon)
    results = []
    for seed in range(args.households):
        result = run_household(seed, args)
        results.append(result)
        print(f"household {seed} ({result.seconds:.0f} s)")
        for line in format_mae("load", result.load_mae) + format_mae("pv", result.pv_mae):
            print(line)
        share = 100 * result.agent_saving / result.optimum_saving if result.optimum_saving else float("nan")
        print(f"  bill without battery {result.cost_no_battery / 1e6:8.2f} credits; saving: agent "
              f"{result.agent_saving / 1e6:6.2f}, perfect foresight {result.optimum_saving / 1e6:6.2f} "
              f"-> {share:.1f} % of optimum")
    gate_wins = sum(all(r.load_mae[GATE] < v for k, v in r.load_mae.items() if k != GATE) for r in results)
    gate_wins += sum(all(r.pv_mae[GATE] < v for k, v in r.pv_mae.items() if k != GATE) for r in results)
    total_agent = sum(r.agent_saving for r in results)
    total_optimum = sum(r.optimum_saving for r in results)
    print(f"summary: gate beats every single expert in {gate_wins}/{2 * len(results)} series; "
          f"agent saving {total_agent / 1e6:.2f} of {total_optimum / 1e6:.2f} credits = "
          f"{100 * total_agent / total_optimum:.1f} % of perfect foresight")
    return 0
