"""The gate: a mixture of experts weighted by their recent error, per horizon (pure).

Each time a new value of the series is known, the gate

1. **scores** every forecast issued earlier for that index: expert ``e``'s forecast made ``h``
   slots ahead updates its rolling mean absolute error ``mae[e][h]`` (an exponentially weighted
   mean with memory ``window`` observations; a plain mean while fewer were seen), then
2. **issues** the experts' forecasts for the next ``steps`` slots and combines them with
   exponentiated weights on that error::

       w_eta[e][h] = exp(-eta · mae[e][h] / mean_e(mae[·][h])) / Σ_e (same)

How sharply to prefer the currently best expert depends on the series: spiky household load
gains from averaging, PV a day ahead mostly from following the best climatology. So the gate runs
one mixture per ``eta`` in ``GateConfig.etas`` (0 = plain average, large = follow the best),
scores each mixture's forecasts the same way (``variant_mae[v][h]``), and per horizon uses the
mixture with the lowest rolling error (the default ``eta`` until anything was scored).

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
DEFAULT_ETA_INDEX = 2
DEFAULT_WINDOW = 7 * 96


class GateConfigError(ConfigError):
    """An unknown expert or an impossible gate parameter."""


@dataclass(frozen=True)
class GateConfig:
    steps: int                                   # horizon in slots
    etas: tuple[float, ...] = DEFAULT_ETAS       # sharpness of each candidate mixture
    window: int = DEFAULT_WINDOW                 # memory of the rolling error, in observations
    default_eta_index: int = DEFAULT_ETA_INDEX   # mixture used before any error is known

    def __post_init__(self) -> None:
        if self.steps <= 0 or self.window <= 0 or not self.etas or min(self.etas) < 0:
            raise GateConfigError("GateConfig needs steps > 0, window > 0 and etas >= 0")
        if not 0 <= self.default_eta_index < len(self.etas):
            raise GateConfigError("default_eta_index must index etas")


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
    mae: tuple[tuple[float, ...], ...]          # [expert][h-1]
    variant_mae: tuple[tuple[float, ...], ...]  # [mixture][h-1]
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
    return GateState(tuple(experts), config, tuple(zeros for _ in experts), tuple(zeros for _ in config.etas),
                     tuple(0 for _ in range(config.steps)), ())


def _update(rows: list[list[float]], forecasts: Sequence[Sequence[float]], h0: int, actual: float,
            memory: int) -> None:
    for row, forecast in zip(rows, forecasts):
        row[h0] += (abs(forecast[h0] - actual) - row[h0]) / memory


def observe(state: GateState, index: int, actual: float) -> GateState:
    """Score every pending forecast for ``index`` against ``actual``; drop issues fully scored."""
    mae = [list(row) for row in state.mae]
    variant_mae = [list(row) for row in state.variant_mae]
    seen = list(state.seen)
    steps, window = state.config.steps, state.config.window
    for pending in state.issues:
        h0 = index - pending.first_index
        if 0 <= h0 < steps:
            seen[h0] += 1
            memory = min(seen[h0], window)
            _update(mae, pending.forecasts, h0, actual, memory)
            _update(variant_mae, pending.mixtures, h0, actual, memory)
    still_pending = tuple(p for p in state.issues if p.first_index + steps - 1 > index)
    return GateState(state.experts, state.config, tuple(tuple(row) for row in mae),
                     tuple(tuple(row) for row in variant_mae), tuple(seen), still_pending)


def _softmax_weights(errors: Sequence[float], eta: float) -> tuple[float, ...]:
    count = len(errors)
    mean = sum(errors) / count
    if mean <= 1e-12:
        return tuple(1.0 / count for _ in range(count))
    raw = [math.exp(-eta * (error - min(errors)) / mean) for error in errors]
    total = sum(raw)
    return tuple(r / total for r in raw)


def mixture_weights(state: GateState) -> tuple[tuple[tuple[float, ...], ...], ...]:
    """Expert weights of every candidate mixture, ``[mixture][h-1][expert]``."""
    count = len(state.experts)
    equal = tuple(1.0 / count for _ in range(count))
    out = []
    for eta in state.config.etas:
        rows = []
        for h0 in range(state.config.steps):
            if state.seen[h0] == 0:
                rows.append(equal)
            else:
                rows.append(_softmax_weights([state.mae[e][h0] for e in range(count)], eta))
        out.append(tuple(rows))
    return tuple(out)


def chosen_mixture(state: GateState, h0: int) -> int:
    """Index of the mixture the gate uses at horizon ``h0 + 1``: the lowest rolling error."""
    if state.seen[h0] == 0:
        return state.config.default_eta_index
    errors = [row[h0] for row in state.variant_mae]
    return min(range(len(errors)), key=lambda v: (errors[v], v != state.config.default_eta_index))


def weights(state: GateState) -> tuple[tuple[float, ...], ...]:
    """Expert weights the gate uses per horizon, ``[h-1][expert]``, each row summing to 1."""
    by_mixture = mixture_weights(state)
    return tuple(by_mixture[chosen_mixture(state, h0)][h0] for h0 in range(state.config.steps))


def combine(rows: Sequence[Sequence[float]], forecasts: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The mixture of expert forecasts ``forecasts[e][h-1]`` with weights ``rows[h-1][e]``."""
    return tuple(sum(w * forecasts[e][h0] for e, w in enumerate(row)) for h0, row in enumerate(rows))


def issue(state: GateState, first_index: int, forecasts: Sequence[Sequence[float]]) -> GateState:
    """Remember forecasts made now (and every mixture of them) to score them when targets arrive."""
    frozen = tuple(tuple(float(v) for v in f) for f in forecasts)
    mixtures = tuple(combine(rows, frozen) for rows in mixture_weights(state))
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
    rows = weights(state)
    forecast = Forecast(len(history), combine(rows, by_expert),
                        {name: tuple(f) for name, f in zip(state.experts, by_expert)}, rows)
    return issue(state, len(history), by_expert), forecast
