"""Price forecasting: the local price of each coming slot, as one more series for the gate (pure).

The series. A node observes, per ended slot, the local price of energy there (µc/kWh): the
volume-weighted price of the trades certified for it, or, in a slot nobody traded, the price the
node itself expected (so the series never jumps to a tariff because a slot was quiet). The gate
(``p2pgrid.forecast.gate``) forecasts it with the usual experts (``persistence``, ``yesterday``,
``smoothing``) plus the one below, and scores them per horizon like any series: the mixture
follows whichever is best at each horizon.

The reference market. Every price in a zone is shaped by the wholesale day-ahead price (SMARD,
Germany/Luxembourg): neighbours' asks and bids lean with it, and a storage owner arbitrages
against it. ``reference`` is the one expert that looks at it: the local price net of ``beta`` ×
the reference is taken as a level that persists (its mean over the last ``W`` slots, an eighth of
a day), and the reference's shape is added back::

    forecast[i] = mean_{j in last W}(history[j] - beta * ref[j]) + beta * ref[i]

``beta`` is fitted by least squares of the local price's daily deviations on the reference's over
the history (``REFERENCE_BETA_PRIOR`` with less than a day, clamped to 0..2).

No value from the future. The reference series in ``SeriesContext.reference`` is aligned with the
history (index ``i`` = slot ``first_slot_s + i * slot_s``) and may hold values for the coming slots;
``reference_known`` says how many of them exist at the time of the forecast (the day-ahead auction
publishes the next day's prices at noon: ``published_reference_slots``). Beyond that the expert
repeats the reference of the same slot one day earlier. A value with index ``>= reference_known``
is never read.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pgrid.forecast.context import SeriesContext

REFERENCE_BETA_PRIOR = 0.5
REFERENCE_BETA_MAX = 2.0
LEVEL_SHARE_OF_DAY = 8       # the level is the mean of the last 1/8 day of slots (3 h)
DAY_S = 86400
DAY_AHEAD_PUBLISHED_S = 11 * 3600     # 12:00 CET, 11:00 UTC: the next day's prices are known
PRICE_EXPERTS = ("persistence", "yesterday", "smoothing", "reference")


def published_reference_slots(now_s: int, first_slot_s: int, slot_s: int) -> int:
    """How many reference (day-ahead) values from ``first_slot_s`` on are public at ``now_s``:
    everything up to the end of today, or of tomorrow once today's auction results are out."""
    day_start = now_s - now_s % DAY_S
    known_until = day_start + DAY_S + (DAY_S if now_s - day_start >= DAY_AHEAD_PUBLISHED_S else 0)
    return max(0, (known_until - first_slot_s) // slot_s)


def _reference_at(context: SeriesContext, index: int) -> float | None:
    """The reference value for ``index``, never beyond what is known; the same slot a day earlier
    (repeatedly) when it is not; None with no reference at all."""
    known = min(context.reference_known, len(context.reference))
    period = context.slots_per_day
    while index >= known:
        index -= period
    return float(context.reference[index]) if index >= 0 else None


def _beta(history: Sequence[float], context: SeriesContext) -> float:
    """Least-squares slope of the local price's deviation from its daily mean on the reference's."""
    n, period = len(history), context.slots_per_day
    if n < period:
        return REFERENCE_BETA_PRIOR
    xs, ys = [], []
    for start in range(n - n // period * period, n, period):
        day = range(start, start + period)
        refs = [_reference_at(context, i) for i in day]
        if any(r is None for r in refs):
            continue
        ref_mean = sum(refs) / period   # type: ignore[arg-type]
        local_mean = sum(history[i] for i in day) / period
        xs += [r - ref_mean for r in refs]   # type: ignore[operator]
        ys += [history[i] - local_mean for i in day]
    spread = sum(x * x for x in xs)
    if spread <= 0:
        return REFERENCE_BETA_PRIOR
    return min(REFERENCE_BETA_MAX, max(0.0, sum(x * y for x, y in zip(xs, ys)) / spread))


def reference(history: Sequence[float], steps: int, context: SeriesContext) -> list[float]:
    """The local price's level net of the reference (recent slots) plus ``beta`` × the reference."""
    n = len(history)
    if n == 0:
        return [0.0] * steps
    window = min(n, max(1, context.slots_per_day // LEVEL_SHARE_OF_DAY))
    recent = [_reference_at(context, i) for i in range(n - window, n)]
    if not context.reference or any(r is None for r in recent):
        level = sum(history[n - window:]) / window
        return [level] * steps
    beta = _beta(history, context)
    level = sum(history[j] - beta * r for j, r in zip(range(n - window, n), recent)) / window   # type: ignore[operator]
    out = []
    for i in range(n, n + steps):
        ref = _reference_at(context, i)
        out.append(level + beta * ref if ref is not None else level + beta * recent[-1])   # type: ignore[operator]
    return out
