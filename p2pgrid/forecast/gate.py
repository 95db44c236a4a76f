"""The gate: a mixture of experts weighted by their recent error, per horizon (pure).

Each time a new value of the series is known, the gate

1. **scores** every forecast issued earlier for that index: expert ``e``'s forecast made ``h``
   slots ahead updates its rolling mean absolute error ``mae[e][h]`` (an exponentially weighted
   mean with memory ``window`` observations; a plain mean while fewer were seen), then
2. **issues** the experts' forecasts for the next ``steps`` slots and combines them with
   exponentiated weights on that error::

       w[e][h] = exp(-eta · mae[e][h] / mean_e(mae[·][h])) / Σ_e (same)

How sharply to prefer the currently best expert, and how far back to judge, depend on the
series: spiky household load gains from averaging over a long memory, PV a day ahead from
following whichever climatology suits the current weather regime. So the gate keeps the experts'
errors with each memory in ``GateConfig.windows`` and forms one mixture per (memory, ``eta``)
pair (``eta`` 0 = plain average, large = follow the best). It scores each mixture's forecasts
the same way (``variant_mae[v][h]``, memory ``select_window``) and, per horizon, uses the mixture
with the lowest rolling error (the default mixture until anything was scored).

Errors are kept per horizon because experts win at different horizons (persistence one slot
ahead, daily patterns a day ahead). Scaling by the mean error makes ``eta`` independent of the
series' units; with no error history yet, or when every expert is perfect, weights are equal.
Weights only use errors of targets already observed, so a backtest of the gate is honest.

State is a frozen ``GateState``; ``observe``, ``issue`` and ``step`` return new states.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.errors import ConfigError
from p2pgrid.forecast.experts import EXPERTS, SeriesContext

DEFAULT_ETAS = (0.0, 2.0, 6.0, 20.0, 60.0)
DEFAULT_WINDOWS = (2 * 96, 14 * 96)
DEFAULT_SELECT_WINDOW = 7 * 96
DEFAULT_VARIANT = 2          # (first window, eta 6)


class GateConfigError(ConfigError):
    """An unknown expert or an impossible gate parameter."""


@dataclass(frozen=True)
class GateConfig:
    steps: int                                        # horizon in slots
    etas: tuple[float, ...] = DEFAULT_ETAS            # sharpness of the candidate mixtures
    windows: tuple[int, ...] = DEFAULT_WINDOWS        # memories of the experts' rolling error
    select_window: int = DEFAULT_SELECT_WINDOW        # memory of the mixtures' rolling error
    default_variant: int = DEFAULT_VARIANT            # mixture used before any error is known

    def __post_init__(self) -> None:
        if self.steps <= 0 or not self.etas or min(self.etas) < 0:
            raise GateConfigError("GateConfig needs steps > 0 and etas >= 0")
        if not self.windows or min(self.windows) <= 0 or self.select_window <= 0:
            raise GateConfigError("GateConfig windows must be > 0")
        if not 0 <= self.default_variant < self.variants:
            raise GateConfigError("default_variant must index the (window, eta) mixtures")

    @property
    def variants(self) -> int:
        """Number of candidate mixtures: one per (window, eta), window-major."""
        return len(self.windows) * len(self.etas)


@dataclass(frozen=True)
class Issue:
    """Forecasts issued at one time for indices ``first_index + h - 1``: per expert
    ``forecasts[e][h-1]`` and per mixture ``mixtures[v][h-1]``."""

    first_index: int
    forecasts: tuple[tuple[float, ...], ...]
    mixtures: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class GateState:
    experts: tuple[str, ...]
    config: GateConfig
    mae: tuple[tuple[tuple[float, ...], ...], ...]  # [window][expert][h-1]
    variant_mae: tuple[tuple[float, ...], ...]      # [mixture][h-1]
    seen: tuple[int, ...]                       # [h-1] errors scored so far
    issues: tuple[Issue, ...]                   # still waiting for some target


@dataclass(frozen=True)
class Forecast:
    """The gate's forecast for indices ``first_index ..`` and what it was made of."""

    first_index: int
    values: tuple[float, ...]
    experts: Mapping[str, tuple[float, ...]]
    weights: tuple[tuple[float, ...], ...]   # [h-1][expert]


def new_gate(experts: Sequence[str], config: GateConfig) -> GateState:
    unknown = [name for name in experts if name not in EXPERTS]
    if unknown or not experts:
        raise GateConfigError(f"unknown or no experts: {unknown}; known: {sorted(EXPERTS)}")
    zeros = tuple(0.0 for _ in range(config.steps))
    mae = tuple(tuple(zeros for _ in experts) for _ in config.windows)
    return GateState(tuple(experts), config, mae, tuple(zeros for _ in range(config.variants)),
                     tuple(0 for _ in range(config.steps)), ())


def _update(rows: list[list[float]], forecasts: Sequence[Sequence[float]], h0: int, actual: float,
            memory: int) -> None:
    for row, forecast in zip(rows, forecasts):
        row[h0] += (abs(forecast[h0] - actual) - row[h0]) / memory


def observe(state: GateState, index: int, actual: float) -> GateState:
    """Score every pending forecast for ``index`` against ``actual``; drop issues fully scored."""
    config = state.config
    mae = [[list(row) for row in table] for table in state.mae]
    variant_mae = [list(row) for row in state.variant_mae]
    seen = list(state.seen)
    for pending in state.issues:
        h0 = index - pending.first_index
        if 0 <= h0 < config.steps:
            seen[h0] += 1
            for table, window in zip(mae, config.windows):
                _update(table, pending.forecasts, h0, actual, min(seen[h0], window))
            _update(variant_mae, pending.mixtures, h0, actual, min(seen[h0], config.select_window))
    still_pending = tuple(p for p in state.issues if p.first_index + config.steps - 1 > index)
    return GateState(state.experts, config, tuple(tuple(tuple(row) for row in table) for table in mae),
                     tuple(tuple(row) for row in variant_mae), tuple(seen), still_pending)


def _weights_for_etas(errors: Sequence[float], etas: Sequence[float]) -> list[tuple[float, ...]]:
    """Normalised ``exp(-eta · error / mean error)`` for each ``eta`` (equal when all are ~0)."""
    count = len(errors)
    mean = sum(errors) / count
    if mean <= 1e-12:
        return [tuple(1.0 / count for _ in range(count))] * len(etas)
    best = min(errors)
    ratios = [(error - best) / mean for error in errors]
    out = []
    for eta in etas:
        raw = [math.exp(-eta * r) for r in ratios]
        total = sum(raw)
        out.append(tuple(r / total for r in raw))
    return out


def mixture_weights(state: GateState) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """Expert weights of every candidate mixture, ``[mixture][h-1][expert]`` (window-major)."""
    count, etas, steps = len(state.experts), state.config.etas, state.config.steps
    equal = [tuple(1.0 / count for _ in range(count))] * len(etas)
    out: list[tuple[tuple[float, ...], ...]] = []
    for table in state.mae:
        per_h = [equal if state.seen[h0] == 0 else _weights_for_etas([row[h0] for row in table], etas)
                 for h0 in range(steps)]
        out.extend(tuple(per_h[h0][v] for h0 in range(steps)) for v in range(len(etas)))
    return tuple(out)


def chosen_mixture(state: GateState, h0: int) -> int:
    """Index of the mixture the gate uses at horizon ``h0 + 1``: the lowest rolling error."""
    default = state.config.default_variant
    if state.seen[h0] == 0:
        return default
    errors = [row[h0] for row in state.variant_mae]
    return min(range(len(errors)), key=lambda v: (errors[v], v != default))


def weights(state: GateState, by_mixture: Sequence[Sequence[Sequence[float]]] | None = None,
            ) -> tuple[tuple[float, ...], ...]:
    """Expert weights the gate uses per horizon, ``[h-1][expert]``, each row summing to 1."""
    by_mixture = by_mixture or mixture_weights(state)
    return tuple(tuple(by_mixture[chosen_mixture(state, h0)][h0]) for h0 in range(state.config.steps))


def combine(rows: Sequence[Sequence[float]], forecasts: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The mixture of expert forecasts ``forecasts[e][h-1]`` with weights ``rows[h-1][e]``."""
    return tuple(sum(w * forecasts[e][h0] for e, w in enumerate(row)) for h0, row in enumerate(rows))


def issue(state: GateState, first_index: int, forecasts: Sequence[Sequence[float]],
          by_mixture: Sequence[Sequence[Sequence[float]]] | None = None) -> GateState:
    """Remember forecasts made now (and every mixture of them) to score them when targets arrive.
    ``by_mixture`` are this state's ``mixture_weights``, when the caller has them already."""
    frozen = tuple(tuple(float(v) for v in f) for f in forecasts)
    mixtures = tuple(combine(rows, frozen) for rows in (by_mixture or mixture_weights(state)))
    pending = Issue(first_index, frozen, mixtures)
    return GateState(state.experts, state.config, state.mae, state.variant_mae, state.seen,
                     state.issues + (pending,))


def expert_forecasts(state: GateState, history: Sequence[float], context: SeriesContext) -> list[list[float]]:
    return [EXPERTS[name](history, state.config.steps, context) for name in state.experts]


def step(state: GateState, history: Sequence[float], context: SeriesContext) -> tuple[GateState, Forecast]:
    """Call once each time a value is appended to ``history``: scores forecasts for the newest
    value, then forecasts the next ``steps`` slots."""
    if history:
        state = observe(state, len(history) - 1, history[-1])
    by_expert = expert_forecasts(state, history, context)
    by_mixture = mixture_weights(state)
    rows = weights(state, by_mixture)
    forecast = Forecast(len(history), combine(rows, by_expert),
                        {name: tuple(f) for name, f in zip(state.experts, by_expert)}, rows)
    return issue(state, len(history), by_expert, by_mixture), forecast
