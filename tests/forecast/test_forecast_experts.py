"""Forecasting experts on worked examples (4 slots per day keep the arithmetic visible)."""

from __future__ import annotations

import math

import pytest

from p2pgrid.forecast.clearsky import PvSite, clear_sky_ghi, slot_clear_sky, sun_vector
from p2pgrid.forecast.experts import EXPERTS, SeriesContext
from p2pgrid.forecast.experts import (clearsky_daily, clearsky_recent, persistence, smoothing, weekly,
                                      yesterday)

FOUR_PER_DAY = SeriesContext(slot_s=21600)  # 6-hour slots: P = 4


def test_persistence_repeats_the_last_value_and_is_zero_without_history():
    assert persistence([1.0, 2.0, 5.0], 3, FOUR_PER_DAY) == [5.0, 5.0, 5.0]
    assert persistence([], 2, FOUR_PER_DAY) == [0.0, 0.0]


def test_yesterday_repeats_the_same_slot_one_day_back_and_two_days_beyond_a_day():
    history = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]          # n = 6; indices 2..5 are "yesterday" for 6..9
    assert yesterday(history, 6, FOUR_PER_DAY) == [3.0, 4.0, 5.0, 6.0, 3.0, 4.0]


def test_yesterday_falls_back_to_persistence_with_less_than_a_day():
    assert yesterday([7.0, 8.0], 2, FOUR_PER_DAY) == [8.0, 8.0]


def test_weekly_averages_the_same_weekday_slot_over_four_weeks():
    week = 7 * 4
    history = [0.0] * (5 * week)
    for k, value in enumerate([10.0, 20.0, 30.0, 40.0, 50.0]):   # slot 0 of the weekday, 5 weeks
        history[k * week] = value
    # Target index 5*week is slot 0 of the same weekday: mean of the last 4 weeks (20..50).
    assert weekly(history, 1, FOUR_PER_DAY) == [35.0]


def test_weekly_uses_the_weeks_it_has():
    week = 28
    history = [float(i) for i in range(week + 3)]            # one week and 3 slots
    assert weekly(history, 1, FOUR_PER_DAY) == [history[3]]   # only one week back exists


def test_smoothing_weighs_recent_days_by_alpha():
    # Slot 0 of the last two days: 10 (older) and 20 (newer). Weights 0.3 (newer) and 0.21.
    history = [10.0, 0.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0]
    expected = (0.3 * 20.0 + 0.21 * 10.0) / 0.51
    assert smoothing(history, 1, FOUR_PER_DAY) == pytest.approx([expected])


def test_smoothing_of_a_constant_series_is_that_constant():
    assert smoothing([3.0] * 40, 6, FOUR_PER_DAY) == pytest.approx([3.0] * 6)


BERLIN = PvSite(latitude=52.52, longitude=13.40, tilt=30.0, azimuth=180.0)
JUNE_21_2018_UTC = 1529539200                # 2018-06-21 00:00 UTC
DEC_21_2018_UTC = 1545350400


def test_sun_is_about_61_degrees_high_at_berlin_noon_on_midsummer():
    # Solar noon in Berlin is ~11:07 UTC; max elevation = 90 - 52.52 + 23.44 = 60.9°.
    best = max(sun_vector(JUNE_21_2018_UTC + m * 60, BERLIN.latitude, BERLIN.longitude)[2] for m in range(600, 780))
    assert math.degrees(math.asin(best)) == pytest.approx(60.9, abs=0.3)


def test_clear_sky_is_zero_at_night_and_larger_in_summer_than_winter():
    assert clear_sky_ghi(JUNE_21_2018_UTC, BERLIN.latitude, BERLIN.longitude) == 0.0
    summer = clear_sky_ghi(JUNE_21_2018_UTC + 11 * 3600, BERLIN.latitude, BERLIN.longitude)
    winter = clear_sky_ghi(DEC_21_2018_UTC + 11 * 3600, BERLIN.latitude, BERLIN.longitude)
    assert 800 < summer < 1000 and 100 < winter < 300


def test_a_south_facing_tilted_plane_gets_more_than_horizontal_in_winter():
    flat = PvSite(BERLIN.latitude, BERLIN.longitude, tilt=0.0)
    noon = DEC_21_2018_UTC + 11 * 3600
    assert slot_clear_sky(noon, 900, BERLIN) > 1.5 * slot_clear_sky(noon, 900, flat)


def clear_day_history(context: SeriesContext, days: int, index: float) -> list[float]:
    per_day = context.slots_per_day
    return [index * slot_clear_sky(context.slot_start_s(i), context.slot_s, context.site)  # type: ignore[arg-type]
            for i in range(days * per_day)]


def test_clear_sky_experts_reproduce_a_series_proportional_to_clear_sky():
    context = SeriesContext(slot_s=900, first_slot_s=JUNE_21_2018_UTC, site=BERLIN)
    history = clear_day_history(context, 2, index=2.5)[: 2 * 96 - 40]    # stop mid-afternoon
    future = clear_day_history(context, 3, index=2.5)[len(history): len(history) + 8]
    assert clearsky_recent(history, 8, context) == pytest.approx(future, rel=1e-9)
    assert clearsky_daily(history, 8, context) == pytest.approx(future, rel=1e-9)


def test_clear_sky_recent_follows_a_cloudy_hour():
    context = SeriesContext(slot_s=900, first_slot_s=JUNE_21_2018_UTC, site=BERLIN)
    history = clear_day_history(context, 2, index=2.0)[: 2 * 96 - 40]
    history[-4:] = [v * 0.25 for v in history[-4:]]                 # the last hour at a quarter
    recent, daily = clearsky_recent(history, 1, context)[0], clearsky_daily(history, 1, context)[0]
    clear_next = 2.0 * slot_clear_sky(context.slot_start_s(len(history)), 900, BERLIN)
    assert recent == pytest.approx(0.25 * clear_next, rel=1e-6)
    assert 0.25 * clear_next < daily < clear_next


def test_clear_sky_experts_need_a_site():
    with pytest.raises(ValueError):
        clearsky_daily([1.0] * 100, 1, SeriesContext(slot_s=900))


def test_every_registered_expert_returns_the_requested_number_of_steps():
    context = SeriesContext(slot_s=900, first_slot_s=JUNE_21_2018_UTC, site=BERLIN)
    for name, expert in EXPERTS.items():
        for history in ([], [1.0] * 5, [float(i % 96) for i in range(96 * 30)]):
            assert len(expert(history, 7, context)) == 7, name
