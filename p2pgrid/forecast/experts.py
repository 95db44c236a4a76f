"""Forecasting experts (pure, floats).

Every expert is a function ``expert(history, steps, context) -> list[float]``: given the series
up to now (``history[-1]`` is the latest complete slot) it forecasts the next ``steps`` slots,
horizon ``h = 1..steps``, i.e. indices ``n .. n+steps-1`` with ``n = len(history)``. Experts
never fail on a short history: they fall back to a simpler expert (ultimately the last value, or
0.0 for an empty history).

``P`` below is the number of slots per day.

| name | forecast for index ``i`` |
| --- | --- |
| ``persistence`` | the last value, for every horizon |
| ``yesterday`` | the value at ``i - k·P`` for the least ``k ≥ 1`` that is in the history |
| ``weekly`` | mean of the same slot on the same weekday over the last 4 weeks available |
| ``smoothing`` | exponential smoothing across days of the same slot of day (α = 0.3, last 14 days): the seasonal level of Holt–Winters without trend |
| ``clearsky_recent`` | clear-sky irradiance of slot ``i`` × clear-sky index of the last hour (PV) |
| ``clearsky_daily`` | clear-sky irradiance of slot ``i`` × clear-sky index of the last 24 h (PV) |
| ``reference`` | recent level + β × the day-ahead reference's deviation (prices; ``price.py``) |

The clear-sky index is ``sum(PV) / sum(clear-sky)`` over the window; it absorbs the array's size
and losses, so the site only needs its position and orientation (``PvSite``). Before the first
light of a window it falls back to the daily index; with no light in the last day it is 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from p2pgrid.forecast.clearsky import slot_clear_sky
from p2pgrid.forecast.context import SeriesContext
from p2pgrid.forecast.price import reference

WEEKS_AVERAGED = 4
SMOOTHING_ALPHA = 0.3
SMOOTHING_DAYS = 14
RECENT_WINDOW_S = 3600
MIN_CLEAR_SKY_SUM = 20.0  # W/m² summed over the window: below this the sun is too low to judge


Expert = Callable[[Sequence[float], int, SeriesContext], list[float]]


def persistence(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    last = history[-1] if history else 0.0
    return [float(last)] * steps


def yesterday(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    n, period = len(history), context.slots_per_day
    if n < period:
        return persistence(history, steps, context)
    out = []
    for i in range(n, n + steps):
        k = (i - n) // period + 1
        out.append(float(history[i - k * period]))
    return out


def weekly(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    n, week = len(history), 7 * context.slots_per_day
    if n < week:
        return yesterday(history, steps, context)
    out = []
    for i in range(n, n + steps):
        first_k = (i - n) // week + 1
        values = [history[i - k * week] for k in range(first_k, first_k + WEEKS_AVERAGED) if i - k * week >= 0]
        out.append(sum(values) / len(values))
    return out


def smoothing(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    n, period = len(history), context.slots_per_day
    if n < period:
        return persistence(history, steps, context)
    weights = [SMOOTHING_ALPHA * (1 - SMOOTHING_ALPHA) ** j for j in range(SMOOTHING_DAYS)]
    out = []
    for i in range(n, n + steps):
        first_k = (i - n) // period + 1
        total = weight_sum = 0.0
        for j, weight in enumerate(weights):
            index = i - (first_k + j) * period
            if index < 0:
                break
            total += weight * history[index]
            weight_sum += weight
        out.append(total / weight_sum)
    return out


def _clear_sky_index(history: Sequence[float], context: SeriesContext, window: int) -> float | None:
    """sum(PV)/sum(clear sky) over the last ``window`` slots, or None when the sun was too low."""
    if context.site is None:
        raise ValueError("the clear-sky experts need SeriesContext.site")
    n = len(history)
    start = max(0, n - window)
    clear = sum(slot_clear_sky(context.slot_start_s(j), context.slot_s, context.site) for j in range(start, n))
    if clear < MIN_CLEAR_SKY_SUM:
        return None
    return max(0.0, sum(history[start:n])) / clear


def _clear_sky_forecast(history: Sequence[float], steps: int, context: SeriesContext, index: float) -> list[float]:
    n = len(history)
    return [index * slot_clear_sky(context.slot_start_s(i), context.slot_s, context.site)  # type: ignore[arg-type]
            for i in range(n, n + steps)]


def clearsky_daily(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    index = _clear_sky_index(history, context, context.slots_per_day)
    return _clear_sky_forecast(history, steps, context, index or 0.0)


def clearsky_recent(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    window = max(1, RECENT_WINDOW_S // context.slot_s)
    index = _clear_sky_index(history, context, window)
    if index is None:
        index = _clear_sky_index(history, context, context.slots_per_day) or 0.0
    return _clear_sky_forecast(history, steps, context, index)


EXPERTS: dict[str, Expert] = {
    "persistence": persistence,
    "yesterday": yesterday,
    "weekly": weekly,
    "smoothing": smoothing,
    "clearsky_recent": clearsky_recent,
    "clearsky_daily": clearsky_daily,
}
EXPERTS["reference"] = reference
LOAD_EXPERTS = ("persistence", "yesterday", "weekly", "smoothing")
PV_EXPERTS = ("persistence", "yesterday", "smoothing", "clearsky_recent", "clearsky_daily")
