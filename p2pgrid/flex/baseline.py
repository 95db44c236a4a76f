"""What a node would have drawn without a flexibility request: the "high 5 of 10" baseline (pure).

The measure is the node's **net import** per slot, ``import_wh − export_wh`` of its certified
meter reading: what the feeder sees. For an event slot at time-of-day *t* on day *D*:

1. Candidate days are *D−1*, *D−2*, … back to *D−LOOKBACK_DAYS* (30), newest first.
2. A day is skipped if it is **excluded** (a holiday or other atypical day the request names, or a
   day of one of the node's own earlier offers: a curtailed day must not lower the next baseline)
   or if the node has **no certified reading** for time-of-day *t* that day (missing meter data).
3. The first ``WINDOW_DAYS`` (10) days left form the window. With fewer than ``MIN_DAYS`` (5) the
   node has no baseline for that slot and cannot offer it.
4. The baseline is the mean of the ``HIGH_DAYS`` (5) highest net imports in the window, floored to
   whole Wh.

Why this method. "High X of Y" is the standard of the North American capacity markets (NYISO's
and PJM's economic demand response; CAISO's "10 in 10" is a variant) and needs nothing but the
node's own history, so every validator recomputes it exactly from certified readings. We
considered "10 in 10 with same-day adjustment" and did not take it: the adjustment scales the
baseline by the hours just before the event, which is the easiest place to game it (the known
pre-event inflation cases), and it would make the baseline depend on readings certified after the
offer. Here the baseline is **committed in the offer**, computed from the readings certified in
the node's own chain before it, so it is fixed before the award and cannot move afterwards.

Gaming bound. Inflating consumption on earlier days by ``I_d ≥ 0`` Wh raises the sum of the top
``HIGH_DAYS`` values by at most ``Σ I_d`` (the top-k sum is monotone and 1-Lipschitz in the L1
norm), so the baseline rises by at most ``ceil(Σ I_d / HIGH_DAYS)``: every Wh of inflated baseline
costs at least 5 Wh really imported at the retail price, and the payment for it is capped by the
award anyway. ``inflation_bound_wh`` states this; a property test checks it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

__all__ = [
    "DAY_S", "HIGH_DAYS", "LOOKBACK_DAYS", "MIN_DAYS", "WINDOW_DAYS", "Baseline", "baseline_of",
    "day_of", "inflation_bound_wh",
]

DAY_S = 86_400
HIGH_DAYS = 5          # X: the mean of this many highest days
WINDOW_DAYS = 10       # Y: of this many eligible days
MIN_DAYS = HIGH_DAYS   # fewer eligible days than this: no baseline
LOOKBACK_DAYS = 30     # how far back eligible days are looked for


def day_of(slot: int) -> int:
    """The day number (days since the Unix epoch, UTC) of a slot start in seconds."""
    return slot // DAY_S


@dataclass(frozen=True)
class Baseline:
    """A slot's baseline: ``wh`` (net import, may be negative) and the days it was taken from."""

    slot: int
    wh: int
    days: tuple[int, ...]       # the window, newest first
    high_days: tuple[int, ...]  # the days whose values were averaged


def baseline_of(net_import_wh: Mapping[int, int], slot: int, excluded_days: Collection[int] = ()) -> Baseline | None:
    """The baseline of event ``slot`` from ``net_import_wh`` (slot start s → certified net import
    Wh of the node), or None without ``MIN_DAYS`` eligible days (module docstring)."""
    event_day = day_of(slot)
    offset = slot - event_day * DAY_S
    window: list[tuple[int, int]] = []      # (day, value), newest first
    for back in range(1, LOOKBACK_DAYS + 1):
        day = event_day - back
        if day in excluded_days:
            continue
        value = net_import_wh.get(day * DAY_S + offset)
        if value is None:
            continue
        window.append((day, value))
        if len(window) == WINDOW_DAYS:
            break
    if len(window) < MIN_DAYS:
        return None
    # Highest values first; among equal values the newer day (a total order: reproducible).
    high = sorted(window, key=lambda item: (-item[1], -item[0]))[:HIGH_DAYS]
    return Baseline(slot, sum(value for _, value in high) // HIGH_DAYS, tuple(d for d, _ in window),
                    tuple(sorted((d for d, _ in high), reverse=True)))


def inflation_bound_wh(inflation_wh: int) -> int:
    """The most a total of ``inflation_wh`` Wh of extra import on earlier days can raise a baseline."""
    return -(-inflation_wh // HIGH_DAYS)
