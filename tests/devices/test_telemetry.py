"""Slot energy from meter counters, staleness and downsampling — worked examples and
properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.base import Quality
from p2pgrid.devices.readings import MeterReading
from p2pgrid.devices.telemetry import (
    ACC32_WRAP,
    CounterPoint,
    bridge_resets,
    counter_at,
    downsample,
    is_stale,
    meter_counters,
    slot_energies,
    slot_energy,
    stale_deadline_ms,
    stale_devices,
)
from p2pgrid.units import SlotRules

RULES = SlotRules()
S = 1_782_000_000  # a slot start (seconds), 2026-06-21 00:00 UTC
MIN = 60_000
GAP = 5 * MIN


def meter(t_ms: int, imp: int, exp: int = 0, quality: Quality = Quality.GOOD) -> MeterReading:
    return MeterReading(t_ms, 0.0, imp, exp, quality=quality)


def test_slot_with_readings_on_both_edges_is_the_plain_difference():
    readings = [meter(S * 1000, 1000, 50), meter(S * 1000 + 5 * MIN, 1200, 50),
                meter(S * 1000 + 10 * MIN, 1400, 60), meter(S * 1000 + 15 * MIN, 1600, 80)]
    energy = slot_energy(meter_counters(readings), S, RULES, GAP)
    assert (energy.import_wh, energy.export_wh, energy.complete) == (600, 30, True)


def test_edges_between_readings_are_interpolated_and_floored():
    # 1 Wh per minute; readings at -2, +13 and +17 min around the slot [0, 15)
    t0 = S * 1000
    readings = [meter(t0 - 2 * MIN, 98), meter(t0 + 13 * MIN, 113), meter(t0 + 17 * MIN, 117)]
    counters = meter_counters(readings)
    assert counter_at(counters.imports.points, t0) == 100
    assert counter_at(counters.imports.points, t0 + 15 * MIN) == 115
    assert slot_energy(counters, S, RULES, GAP).import_wh == 15


def test_consecutive_slots_add_up_to_the_counter_total():
    t0 = S * 1000
    readings = [meter(t0 + 100_000, 5), meter(t0 + 1_000_000, 777), meter(t0 + 2_500_000, 1999),
                meter(t0 + 3_400_000, 2024)]
    slots = slot_energies(meter_counters(readings), RULES, 10 * GAP)
    assert [s.slot for s in slots] == [S, S + 900, S + 1800, S + 2700]
    assert sum(s.import_wh for s in slots) == 2024 - 5
    assert not slots[0].complete and not slots[-1].complete  # the span starts/ends inside
    assert slots[1].complete and slots[2].complete


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4 * 900_000), st.integers(0, 5000)), min_size=1,
                max_size=40))
def test_slots_never_lose_or_double_count_a_wh(raw):
    t0 = S * 1000
    points, total = [], 0
    for t, delta in sorted(raw):
        total += delta
        points.append(meter(t0 + t, total))
    counters = meter_counters(points)
    slots = slot_energies(counters, RULES, GAP)
    cum = counters.imports.points
    assert sum(s.import_wh for s in slots) == cum[-1].value - cum[0].value
    assert all(s.import_wh >= 0 for s in slots)


def test_counter_reset_is_bridged_and_marks_the_slot_incomplete():
    t0 = S * 1000
    readings = [meter(t0, 5000), meter(t0 + 5 * MIN, 5100), meter(t0 + 10 * MIN, 40),
                meter(t0 + 15 * MIN, 90)]
    counters = meter_counters(readings)
    assert counters.imports.reset_after_ms == (t0 + 10 * MIN,)
    energy = slot_energy(counters, S, RULES, GAP)
    assert energy.import_wh == 100 + 40 + 50 and not energy.complete


def test_acc32_rollover_continues_the_count():
    counter = bridge_resets([CounterPoint(0, ACC32_WRAP - 10), CounterPoint(1000, 15)])
    assert counter.points[-1].value - counter.points[0].value == 25
    assert counter.reset_after_ms == ()


def test_gap_longer_than_allowed_marks_the_slot_incomplete():
    t0 = S * 1000
    readings = [meter(t0, 0), meter(t0 + MIN, 10), meter(t0 + 14 * MIN, 140),
                meter(t0 + 15 * MIN, 150)]
    energy = slot_energy(meter_counters(readings), S, RULES, GAP)
    assert energy.import_wh == 150 and not energy.complete


def test_bad_readings_do_not_count():
    t0 = S * 1000
    readings = [meter(t0, 0), meter(t0 + 5 * MIN, 999_999, quality=Quality.BAD),
                meter(t0 + 15 * MIN, 150)]
    assert slot_energy(meter_counters(readings), S, RULES, GAP).import_wh == 150


def test_no_readings_no_slots():
    assert slot_energies(meter_counters([]), RULES, GAP) == []
    assert not slot_energy(meter_counters([]), S, RULES, GAP).complete


def test_device_silent_for_more_than_three_periods_is_stale():
    assert not is_stale(10_000, 13_000, 1_000)
    assert is_stale(10_000, 13_001, 1_000)
    assert is_stale(None, 0, 1_000)
    assert stale_deadline_ms(10_000, 1_000) == 13_001
    assert stale_devices({"grid": 10_000, "pv": 12_500, "ev": None},
                         {"grid": 1_000, "pv": 1_000, "ev": 5_000}, 13_500) == {"grid", "ev"}


def test_downsample_buckets_worked_example():
    points = [(0, 1.0), (500, 3.0), (999, 2.0), (2_100, 10.0), (1_000, 4.0)]
    buckets = downsample(points, 1_000)
    assert [(b.start_ms, b.count, b.mean, b.min, b.max, b.last) for b in buckets] == [
        (0, 3, 2.0, 1.0, 3.0, 2.0), (1_000, 1, 4.0, 4.0, 4.0, 4.0),
        (2_000, 1, 10.0, 10.0, 10.0, 10.0)]
    assert downsample([(-1, 5.0)], 1_000)[0].start_ms == -1_000
