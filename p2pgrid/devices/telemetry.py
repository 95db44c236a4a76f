"""Telemetry arithmetic (pure): slot energy from meter counters, staleness, downsampling.

**Slot energy.** A meter's import and export registers are integer Wh counters that only grow.
The energy of a slot is the counter's value at the slot's end minus its value at the slot's
start, where the value at an instant between two readings is interpolated linearly and floored
(integer arithmetic, no floats)::

    C(t) = c0 + (c1 − c0) · (t − t0) // (t1 − t0)        for t0 <= t <= t1

Because every slot is a difference of the same function ``C``, consecutive slots add up exactly
to the counter's total increase: no Wh is lost or counted twice at a slot boundary.

Before interpolating, raw counters are made continuous (``bridge_resets``): a counter that
wraps (SunSpec acc32 wraps at 2³²) continues past the wrap; a counter that falls back for any
other reason (meter replaced, firmware reset) is taken to have restarted at zero, so the energy
of that interval is the new value (what happened between the last reading and the reset is
lost — at most one sampling interval; the slot is then marked incomplete).

A slot is **complete** when readings bracket both of its edges, no two consecutive readings
that span part of it are more than ``max_gap_ms`` apart, and no reset happened inside it.
Incomplete slots still carry the energy that was observed; settlement decides what to do with
them. ``SlotEnergy`` holds only integers, ready to be signed as a meter entry.

**Staleness.** A device sampled every ``period_ms`` is stale when its last good reading is more
than ``missed_periods × period_ms`` old at ``now_ms``.

**Downsampling.** History is kept at full rate for a short while and as fixed buckets
(count, mean, min, max, last) after that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.devices.base import Quality
from p2pgrid.devices.readings import MeterReading, Reading
from p2pgrid.units import SlotRules, SlotStart

ACC32_WRAP = 1 << 32
DEFAULT_MISSED_PERIODS = 3


@dataclass(frozen=True)
class CounterPoint:
    t_ms: int
    value: int


@dataclass(frozen=True)
class ContinuousCounter:
    """A counter made monotone; ``reset_after_ms`` lists readings that followed a reset."""

    points: tuple[CounterPoint, ...]
    reset_after_ms: tuple[int, ...] = ()


def bridge_resets(points: Iterable[CounterPoint], wrap_at: int | None = ACC32_WRAP
                  ) -> ContinuousCounter:
    """Sort by time, keep the first reading of each instant, and turn wraps and resets into a
    monotone cumulative counter starting at the first reading's value."""
    ordered: list[CounterPoint] = []
    for p in sorted(points, key=lambda p: p.t_ms):
        if not ordered or p.t_ms != ordered[-1].t_ms:
            ordered.append(p)
    if not ordered:
        return ContinuousCounter(())
    out = [ordered[0]]
    resets: list[int] = []
    total = ordered[0].value
    for prev, cur in zip(ordered, ordered[1:]):
        if cur.value >= prev.value:
            total += cur.value - prev.value
        elif wrap_at is not None and prev.value < wrap_at and \
                prev.value - cur.value > wrap_at // 2:
            total += cur.value + wrap_at - prev.value  # rolled over past wrap_at
        else:
            total += cur.value  # restarted from zero
            resets.append(cur.t_ms)
        out.append(CounterPoint(cur.t_ms, total))
    return ContinuousCounter(tuple(out), tuple(resets))


def counter_at(points: Sequence[CounterPoint], t_ms: int) -> int | None:
    """The interpolated (floored) value of a monotone counter at ``t_ms``; None outside the
    readings' span."""
    if not points or t_ms < points[0].t_ms or t_ms > points[-1].t_ms:
        return None
    lo, hi = 0, len(points) - 1
    while hi - lo > 1:  # invariant: points[lo].t_ms <= t_ms <= points[hi].t_ms
        mid = (lo + hi) // 2
        if points[mid].t_ms <= t_ms:
            lo = mid
        else:
            hi = mid
    a, b = points[lo], points[hi]
    if b.t_ms == a.t_ms:
        return a.value
    return a.value + (b.value - a.value) * (t_ms - a.t_ms) // (b.t_ms - a.t_ms)


def _clamped(points: Sequence[CounterPoint], t_ms: int) -> int:
    if t_ms <= points[0].t_ms:
        return points[0].value
    if t_ms >= points[-1].t_ms:
        return points[-1].value
    value = counter_at(points, t_ms)
    return points[0].value if value is None else value


def window_energy(counter: ContinuousCounter, start_ms: int, end_ms: int,
                  max_gap_ms: int) -> tuple[int, bool]:
    """Energy counted in ``[start_ms, end_ms)`` and whether the window was fully observed."""
    pts = counter.points
    if not pts:
        return 0, False
    energy = _clamped(pts, end_ms) - _clamped(pts, start_ms)
    complete = pts[0].t_ms <= start_ms and end_ms <= pts[-1].t_ms
    if complete:
        for a, b in zip(pts, pts[1:]):
            if b.t_ms > start_ms and a.t_ms < end_ms and b.t_ms - a.t_ms > max_gap_ms:
                complete = False
                break
    if any(start_ms < t <= end_ms for t in counter.reset_after_ms):
        complete = False
    return energy, complete


@dataclass(frozen=True)
class SlotEnergy:
    """Metered energy of one delivery slot, in whole Wh (import from / export to the grid)."""

    slot: SlotStart
    import_wh: int
    export_wh: int
    complete: bool


@dataclass(frozen=True)
class MeterCounters:
    """Import and export counters of one meter, made continuous."""

    imports: ContinuousCounter
    exports: ContinuousCounter


def meter_counters(readings: Iterable[Reading], wrap_at: int | None = ACC32_WRAP
                   ) -> MeterCounters:
    """Continuous counters from ``MeterReading``s (only GOOD ones count)."""
    good = [r for r in readings if isinstance(r, MeterReading) and r.quality is Quality.GOOD]
    return MeterCounters(
        bridge_resets((CounterPoint(r.t_ms, r.import_wh) for r in good), wrap_at),
        bridge_resets((CounterPoint(r.t_ms, r.export_wh) for r in good), wrap_at),
    )


def slot_energy(counters: MeterCounters, slot: int, rules: SlotRules,
                max_gap_ms: int) -> SlotEnergy:
    start, end = slot * 1000, rules.slot_end_ms(slot)
    imp, imp_ok = window_energy(counters.imports, start, end, max_gap_ms)
    exp, exp_ok = window_energy(counters.exports, start, end, max_gap_ms)
    return SlotEnergy(SlotStart(slot), imp, exp, imp_ok and exp_ok)


def slot_energies(counters: MeterCounters, rules: SlotRules, max_gap_ms: int
                  ) -> list[SlotEnergy]:
    """Every slot touched by the readings' span, earliest first."""
    pts = counters.imports.points
    if not pts:
        return []
    first, last = rules.slot_of(pts[0].t_ms), rules.slot_of(pts[-1].t_ms)
    return [slot_energy(counters, s, rules, max_gap_ms)
            for s in range(first, last + 1, rules.length_s)]


def is_stale(last_good_ms: int | None, now_ms: int, period_ms: int,
             missed_periods: int = DEFAULT_MISSED_PERIODS) -> bool:
    """True when no good reading came for more than ``missed_periods`` periods."""
    return last_good_ms is None or now_ms - last_good_ms > missed_periods * period_ms


def stale_deadline_ms(last_good_ms: int, period_ms: int,
                      missed_periods: int = DEFAULT_MISSED_PERIODS) -> int:
    """The first instant at which the device counts as stale if nothing good arrives."""
    return last_good_ms + missed_periods * period_ms + 1


def stale_devices(last_good_ms: Mapping[str, int | None], period_ms: Mapping[str, int],
                  now_ms: int, missed_periods: int = DEFAULT_MISSED_PERIODS) -> set[str]:
    return {name for name, last in last_good_ms.items()
            if is_stale(last, now_ms, period_ms[name], missed_periods)}


@dataclass(frozen=True)
class Bucket:
    start_ms: int
    count: int
    mean: float
    min: float
    max: float
    last: float


def downsample(points: Iterable[tuple[int, float]], bucket_ms: int, origin_ms: int = 0
               ) -> list[Bucket]:
    """Group ``(t_ms, value)`` points into buckets ``[origin + k·bucket_ms, …)``; empty buckets
    are left out. Points need not be sorted."""
    if bucket_ms <= 0:
        raise ValueError("bucket_ms must be > 0")
    groups: dict[int, list[tuple[int, float]]] = {}
    for t, v in points:
        key = origin_ms + (t - origin_ms) // bucket_ms * bucket_ms
        groups.setdefault(key, []).append((t, v))
    out = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda p: p[0])
        values = [v for _, v in members]
        out.append(Bucket(key, len(values), sum(values) / len(values), min(values),
                          max(values), values[-1]))
    return out
