"""The community optimum: the best any schedule of a scenario's batteries and energy flows could
reach, with perfect foresight (pure: a model in, a linear program as plain arrays out, a solution
read back; the solver is passed in — ``simnet.highs.solve`` runs scipy's HiGHS).

The model (``CommunityModel``): every participant's load (EV charging included) and PV per slot,
Wh; every battery's capacity, power, round-trip efficiency, state-of-charge band and starting
state of charge; grid import at the retail tariff, export at feed-in; exchange between members is
free and unlimited, so the community balances as one: in slot ``t``

    I_t − E_t = Σ load_t − Σ PV_t + Σ_b (c_bt − d_bt)
    s_bt = s_b,t−1 + η c_bt − d_bt / η          (η = √round-trip, s_b,−1 = start SoC × capacity)
    0 ≤ c_bt, d_bt ≤ power × slot length,  SoC_min × capacity ≤ s_bt ≤ SoC_max × capacity,  I_t, E_t ≥ 0

with ``I`` the community's grid import, ``E`` its export, ``c``/``d`` a battery's charge and
discharge on its AC side and ``s`` its stored energy after the slot — the same battery physics
as the sites' greedy self-consumption (``simnet.community.self_consumption``), whose schedule is
one feasible point of this program. A battery may charge from any member or the grid. Its end
state of charge may be bounded below (``Battery.soc_end_min``): ``simnet.kpis`` bounds it by
where the battery ends without trading, so the optimum never "gains" by emptying at the end of
the window a battery that the run and the baseline keep charged (exporting it at feed-in would
look like a saving), and the no-trading schedule stays feasible: the optimum is never worse than
no trading.
Charging and discharging in one slot is allowed (a relaxation: it only burns energy, which never
lowers an import or a cost since export is unlimited), so every optimum below is exact.

Objectives (``Objective``), each solved on its own, so each is the best value of that KPI:

* ``import``: least Σ I — the best self-sufficiency, 1 − Σ I / Σ load;
* ``cost``: least Σ (retail I − feed-in E) — the least community bill (trades between members
  net out);
* ``evening_import``: least import over the evening slots (start 17:00–22:00 CET,
  ``EVENING_HOURS``; the profiles' calendar is CET without daylight saving);
* ``peak_import``: least max_t I_t — the zone's lowest possible import peak.

Each is solved lexicographically: the KPI's optimum first, then, holding it (within
``TIE_TOLERANCE``), the cheapest schedule — so the reported schedule is the cheapest of the
optimal ones and its other figures are meaningful.

Why a community bound is an upper bound of a run: a run's import in slot ``t`` is
Σ_p max(0, r_pt) ≥ max(0, Σ_p r_pt) (``simnet.kpis``: residuals after trades, which cancel), and
its batteries follow one feasible schedule; so no run beats these optima (up to the rounding of
its series to whole Wh).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from p2pgrid.errors import P2PGridError

CET_OFFSET_S = 3600
EVENING_HOURS = (17, 22)      # slots starting at 17:00 ≤ CET < 22:00
TIE_TOLERANCE = 1e-7          # relative slack on the first objective while the second is minimised
WH_PER_KWH = 1000


class OptimumError(P2PGridError):
    """The community optimum cannot be computed (an empty model, or the solver failed)."""


@dataclass(frozen=True)
class Battery:
    capacity_wh: float
    power_w: float              # charge and discharge, AC side
    round_trip: float           # 0 < round_trip ≤ 1; √ of it each way
    soc_min: float = 0.0
    soc_max: float = 1.0
    soc_start: float = 0.5
    soc_end_min: float | None = None    # the least state of charge after the last slot (None: soc_min)

    @property
    def efficiency(self) -> float:
        return math.sqrt(self.round_trip)

    def step_wh(self, slot_s: int) -> float:
        return self.power_w * slot_s / 3600


@dataclass(frozen=True)
class Site:
    name: str
    load_wh: tuple[float, ...]
    pv_wh: tuple[float, ...]
    battery: Battery | None = None


@dataclass(frozen=True)
class CommunityModel:
    slot_s: int
    start_s: int                # UTC seconds of the first slot
    retail_price: int           # µc/kWh
    feed_in_price: int          # µc/kWh
    sites: tuple[Site, ...]

    @property
    def n_slots(self) -> int:
        return len(self.sites[0].load_wh) if self.sites else 0

    @property
    def batteries(self) -> tuple[Battery, ...]:
        return tuple(s.battery for s in self.sites if s.battery is not None and s.battery.capacity_wh > 0)

    def demand_wh(self) -> list[float]:
        """Σ load − Σ PV per slot (+ the community needs energy)."""
        return [sum(s.load_wh[t] - s.pv_wh[t] for s in self.sites) for t in range(self.n_slots)]

    def consumption_wh(self) -> float:
        return float(sum(sum(s.load_wh) for s in self.sites))


class Objective(Enum):
    IMPORT = "import"
    COST = "cost"
    EVENING_IMPORT = "evening_import"
    PEAK_IMPORT = "peak_import"


def evening_mask(start_s: int, slot_s: int, n_slots: int) -> list[bool]:
    """Whether each slot starts in the evening window (CET)."""
    lo, hi = EVENING_HOURS
    return [lo * 3600 <= (start_s + i * slot_s + CET_OFFSET_S) % 86400 < hi * 3600 for i in range(n_slots)]


# --- the linear program ------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearProgram:
    """min c·x subject to A_eq x = b_eq, A_ub x ≤ b_ub, lo ≤ x ≤ hi (``None``: unbounded); matrices
    as (row, column, value) triplets."""

    c: list[float]
    eq: list[tuple[int, int, float]]
    b_eq: list[float]
    ub: list[tuple[int, int, float]]
    b_ub: list[float]
    bounds: list[tuple[float | None, float | None]]

    @property
    def n_vars(self) -> int:
        return len(self.c)


Solver = Callable[[LinearProgram], list[float]]     # the optimal x; raises OptimumError when there is none


@dataclass(frozen=True)
class _Layout:
    """Column of each variable: I_t, E_t, then per battery c_t, d_t, s_t, then the peak z."""

    n_slots: int
    n_batteries: int

    def imp(self, t: int) -> int:
        return t

    def exp(self, t: int) -> int:
        return self.n_slots + t

    def charge(self, b: int, t: int) -> int:
        return 2 * self.n_slots + 3 * self.n_slots * b + t

    def discharge(self, b: int, t: int) -> int:
        return self.charge(b, t) + self.n_slots

    def stored(self, b: int, t: int) -> int:
        return self.charge(b, t) + 2 * self.n_slots

    @property
    def peak(self) -> int:
        return 2 * self.n_slots + 3 * self.n_slots * self.n_batteries

    @property
    def n_vars(self) -> int:
        return self.peak + 1


def objective_vector(model: CommunityModel, objective: Objective) -> list[float]:
    layout = _Layout(model.n_slots, len(model.batteries))
    c = [0.0] * layout.n_vars
    if objective is Objective.PEAK_IMPORT:
        c[layout.peak] = 1.0
        return c
    evening = evening_mask(model.start_s, model.slot_s, model.n_slots)
    for t in range(model.n_slots):
        if objective is Objective.IMPORT or (objective is Objective.EVENING_IMPORT and evening[t]):
            c[layout.imp(t)] = 1.0
        elif objective is Objective.COST:
            c[layout.imp(t)] = model.retail_price / WH_PER_KWH        # µc per Wh
            c[layout.exp(t)] = -model.feed_in_price / WH_PER_KWH
    return c


def build_lp(model: CommunityModel, objective: Objective,
             hold: tuple[Objective, float] | None = None) -> LinearProgram:
    """The program minimising ``objective``; ``hold`` = (an objective, its bound) adds
    "that objective ≤ bound" (the lexicographic second stage)."""
    if model.n_slots == 0:
        raise OptimumError("the model has no slot")
    if any(len(s.load_wh) != model.n_slots or len(s.pv_wh) != model.n_slots for s in model.sites):
        raise OptimumError("every site needs one load and one PV value per slot")
    batteries = model.batteries
    layout = _Layout(model.n_slots, len(batteries))
    eq: list[tuple[int, int, float]] = []
    b_eq: list[float] = []
    ub: list[tuple[int, int, float]] = []
    b_ub: list[float] = []
    bounds: list[tuple[float | None, float | None]] = [(0.0, None)] * (2 * model.n_slots)
    for t, demand in enumerate(model.demand_wh()):
        row = len(b_eq)
        eq += [(row, layout.imp(t), 1.0), (row, layout.exp(t), -1.0)]
        for b in range(len(batteries)):
            eq += [(row, layout.charge(b, t), -1.0), (row, layout.discharge(b, t), 1.0)]
        b_eq.append(demand)
    for b, battery in enumerate(batteries):
        eta, step = battery.efficiency, battery.step_wh(model.slot_s)
        low, high = battery.soc_min * battery.capacity_wh, battery.soc_max * battery.capacity_wh
        end_low = low if battery.soc_end_min is None else max(low, battery.soc_end_min * battery.capacity_wh)
        bounds += ([(0.0, step)] * model.n_slots + [(0.0, step)] * model.n_slots
                   + [(low, high)] * (model.n_slots - 1) + [(end_low, high)])
        for t in range(model.n_slots):
            row = len(b_eq)
            eq += [(row, layout.stored(b, t), 1.0), (row, layout.charge(b, t), -eta),
                   (row, layout.discharge(b, t), 1.0 / eta)]
            if t:
                eq.append((row, layout.stored(b, t - 1), -1.0))
            b_eq.append(battery.soc_start * battery.capacity_wh if t == 0 else 0.0)
    bounds.append((0.0, None))
    for t in range(model.n_slots):
        ub += [(len(b_ub), layout.imp(t), 1.0), (len(b_ub), layout.peak, -1.0)]
        b_ub.append(0.0)
    if hold is not None:
        held, bound = hold
        row = len(b_ub)
        ub += [(row, col, v) for col, v in enumerate(objective_vector(model, held)) if v]
        b_ub.append(bound)
    return LinearProgram(objective_vector(model, objective), eq, b_eq, ub, b_ub, bounds)


# --- reading a solution back -------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """A schedule of the community: grid exchange and each battery's flows per slot, Wh."""

    import_wh: tuple[float, ...]
    export_wh: tuple[float, ...]
    charge_wh: tuple[tuple[float, ...], ...] = ()       # per battery of ``model.batteries``
    discharge_wh: tuple[tuple[float, ...], ...] = ()
    stored_wh: tuple[tuple[float, ...], ...] = ()


def read_schedule(model: CommunityModel, x: Sequence[float]) -> Schedule:
    layout = _Layout(model.n_slots, len(model.batteries))
    slots = range(model.n_slots)

    def of(column: Callable[[int], int]) -> tuple[float, ...]:
        return tuple(max(0.0, x[column(t)]) for t in slots)

    batteries = range(len(model.batteries))
    return Schedule(of(layout.imp), of(layout.exp),
                    tuple(of(lambda t, b=b: layout.charge(b, t)) for b in batteries),
                    tuple(of(lambda t, b=b: layout.discharge(b, t)) for b in batteries),
                    tuple(of(lambda t, b=b: layout.stored(b, t)) for b in batteries))


@dataclass(frozen=True)
class Figures:
    """The KPIs of a schedule (the same definitions as ``simnet.kpis``)."""

    import_wh: float
    export_wh: float
    self_sufficiency: float | None      # 1 − import / consumption
    cost_uc: float                      # import × retail − export × feed-in
    evening_import_wh: float
    peak_import_wh: float               # the highest slot's import

    def to_json(self) -> dict[str, float | None]:
        return {"import_wh": round(self.import_wh), "export_wh": round(self.export_wh),
                "self_sufficiency": None if self.self_sufficiency is None else round(self.self_sufficiency, 4),
                "cost_uc": round(self.cost_uc), "evening_import_wh": round(self.evening_import_wh),
                "peak_import_wh": round(self.peak_import_wh)}


def figures(model: CommunityModel, import_wh: Sequence[float], export_wh: Sequence[float]) -> Figures:
    """The KPIs of per-slot community import and export (Wh)."""
    consumption = model.consumption_wh()
    evening = evening_mask(model.start_s, model.slot_s, len(import_wh))
    total_import = float(sum(import_wh))
    return Figures(total_import, float(sum(export_wh)), 1 - total_import / consumption if consumption else None,
                   (total_import * model.retail_price - sum(export_wh) * model.feed_in_price) / WH_PER_KWH,
                   float(sum(v for v, e in zip(import_wh, evening) if e)), float(max(import_wh, default=0.0)))


def value_of(f: Figures, objective: Objective) -> float:
    return {Objective.IMPORT: f.import_wh, Objective.COST: f.cost_uc,
            Objective.EVENING_IMPORT: f.evening_import_wh, Objective.PEAK_IMPORT: f.peak_import_wh}[objective]


@dataclass(frozen=True)
class Optimum:
    objective: Objective
    value: float                # the objective's optimal value (Wh or µc)
    schedule: Schedule
    figures: Figures


def optimise(model: CommunityModel, objective: Objective, solve: Solver) -> Optimum:
    """The best value of ``objective``, and the cheapest schedule reaching it."""
    c = objective_vector(model, objective)
    x = solve(build_lp(model, objective))
    best = sum(ci * xi for ci, xi in zip(c, x))
    if objective is not Objective.COST:
        bound = best + TIE_TOLERANCE * max(1.0, abs(best))
        x = solve(build_lp(model, Objective.COST, hold=(objective, bound)))
    schedule = read_schedule(model, x)
    return Optimum(objective, best, schedule, figures(model, schedule.import_wh, schedule.export_wh))


@dataclass(frozen=True)
class CommunityOptimum:
    """Every objective's optimum of one model."""

    optima: dict[Objective, Optimum] = field(default_factory=dict)

    def best(self, objective: Objective) -> float:
        return self.optima[objective].value


def community_optimum(model: CommunityModel, solve: Solver,
                      objectives: Sequence[Objective] = tuple(Objective)) -> CommunityOptimum:
    return CommunityOptimum({o: optimise(model, o, solve) for o in objectives})


def fraction_of_gain(run: float | None, baseline: float | None, optimum: float | None) -> float | None:
    """How much of the optimum's gain over the baseline the run reached: (run − baseline) /
    (optimum − baseline); ``None`` when a figure is missing or the optimum gains nothing."""
    if run is None or baseline is None or optimum is None:
        return None
    gain = optimum - baseline
    if abs(gain) <= 1e-9 * max(1.0, abs(baseline)):
        return None
    return round((run - baseline) / gain, 4)
