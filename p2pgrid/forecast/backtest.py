"""Backtest of experts and the gate on a recorded series (pure).

Walks the series slot by slot exactly as a live node would (``gate.step`` after each value), and
scores every forecast whose target lies inside the series: from index ``warmup`` on, for each
horizon ``h = 1..steps``, the mean absolute error of each expert and of the gate. Skill against
persistence is ``1 - MAE / MAE_persistence`` (positive = better than persistence), per horizon or
over all horizons (the mean of the per-horizon MAEs, so each horizon counts equally).

A series with an exogenous reference (prices: ``SeriesContext.reference``, the day-ahead price)
is backtested as it was known at each step: ``reference_known(n)`` says how many reference values
were published when the forecast at index ``n`` was made (``price.published_reference_slots``),
so no expert reads a reference value from its future.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from p2pgrid.forecast.experts import SeriesContext
from p2pgrid.forecast.gate import GateConfig, new_gate, step

GATE = "gate"
REFERENCE = "persistence"


@dataclass(frozen=True)
class BacktestResult:
    names: tuple[str, ...]                       # experts, then "gate"
    mae: dict[str, tuple[float, ...]]            # name -> MAE per horizon (h = 1..steps)
    samples: tuple[int, ...]                     # scored forecasts per horizon

    def mean_mae(self, name: str) -> float:
        """MAE averaged over horizons (each horizon weighs the same)."""
        scored = [m for m, n in zip(self.mae[name], self.samples) if n]
        return sum(scored) / len(scored) if scored else float("nan")

    def skill(self, name: str, horizon: int | None = None) -> float:
        """``1 - MAE/MAE_persistence`` at one horizon (1-based) or over all of them."""
        if horizon is None:
            reference, own = self.mean_mae(REFERENCE), self.mean_mae(name)
        else:
            reference, own = self.mae[REFERENCE][horizon - 1], self.mae[name][horizon - 1]
        return 1.0 - own / reference if reference > 0 else float("nan")


def backtest(series: Sequence[float], context: SeriesContext, experts: Sequence[str], steps: int,
             warmup: int, config: GateConfig | None = None,
             reference_known: Callable[[int], int] | None = None) -> BacktestResult:
    """Run the gate over ``series``; score forecasts issued at indices ``>= warmup``."""
    if REFERENCE not in experts:
        raise ValueError("backtest needs the persistence expert as the reference")
    config = config or GateConfig(steps=steps)
    names = tuple(experts) + (GATE,)
    sums = {name: [0.0] * steps for name in names}
    samples = [0] * steps
    state = new_gate(experts, config)
    for n in range(len(series)):
        known = context if reference_known is None else replace(
            context, reference_known=min(len(context.reference), reference_known(n)))
        state, forecast = step(state, series[:n], known)
        if n < warmup:
            continue
        for h0 in range(min(steps, len(series) - n)):
            actual = series[n + h0]
            samples[h0] += 1
            for name, values in forecast.experts.items():
                sums[name][h0] += abs(values[h0] - actual)
            sums[GATE][h0] += abs(forecast.values[h0] - actual)
    mae = {name: tuple(total / count if count else float("nan") for total, count in zip(row, samples))
           for name, row in sums.items()}
    return BacktestResult(names, mae, tuple(samples))
