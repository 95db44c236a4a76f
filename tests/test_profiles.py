"""Real published profiles load offline, deterministically per seed, with plausible magnitudes."""

from __future__ import annotations

import pytest

from simnet import profiles


def test_household_load_is_deterministic_for_a_seed_and_differs_between_seeds():
    first = profiles.household_load(seed=1, n_days=7, start_day=30)
    assert first == profiles.household_load(seed=1, n_days=7, start_day=30)
    assert len(first) == 7 * 96 and all(isinstance(v, int) and v >= 0 for v in first)
    others = [profiles.household_load(seed=s, n_days=7, start_day=30) for s in range(2, 8)]
    assert all(other != first for other in others)


def test_household_annual_consumption_is_that_of_a_german_household():
    for seed in range(4):
        annual_kwh = sum(profiles.household_load(seed, 365)) / 1000
        assert 1000 < annual_kwh < 7000


def test_same_household_type_with_two_seeds_still_differs():
    a = profiles.household_load(seed=10, n_days=3, household="family")
    b = profiles.household_load(seed=11, n_days=3, household="family")
    assert a != b
    assert 0.5 < sum(a) / sum(b) < 2.0


def test_pv_yield_per_kwp_is_plausible_for_germany_and_zero_at_night():
    year = profiles.pv_generation(kwp=1.0, tilt=30, azimuth=180, n_days=365)
    assert 850 < sum(year) / 1000 < 1250                 # kWh per kWp and year
    midsummer = profiles.pv_generation(kwp=1.0, n_days=14, start_day=165)
    for day in range(14):
        one_day = midsummer[day * 96:(day + 1) * 96]
        assert one_day[:12] == [0] * 12 and one_day[-8:] == [0] * 8    # 0-3 h and 22-24 h CET
    assert 175 < max(midsummer) <= 250                    # 0.7-1 kW at noon from 1 kWp


def test_pv_seed_jitters_orientation_deterministically():
    a = profiles.pv_generation(5.0, n_days=2, start_day=100, seed=1)
    assert a == profiles.pv_generation(5.0, n_days=2, start_day=100, seed=1)
    assert a != profiles.pv_generation(5.0, n_days=2, start_day=100, seed=2)


def test_ev_home_charging_comes_in_charger_sized_blocks():
    week = profiles.ev_charging(seed=3, n_days=28)
    assert week == profiles.ev_charging(seed=3, n_days=28)
    assert week != profiles.ev_charging(seed=4, n_days=28)
    assert sum(week) > 0 and max(week) <= 11_000 * 900 // 3600 + 1


def test_day_ahead_prices_match_published_smard_values():
    prices = profiles.day_ahead_prices(2018, n_days=1)
    # SMARD, DE-AT-LU, 1 Jan 2018 00:00 and 01:00: -5.27 and -29.99 €/MWh.
    assert prices[:8] == [-5270] * 4 + [-29990] * 4
    year_mean = sum(profiles.day_ahead_prices(2018, 365, slot_s=3600)) / (365 * 24)
    assert 40_000 < year_mean < 50_000                    # 2018 average ≈ 44 €/MWh
    assert len(profiles.day_ahead_prices(2015, 365)) == 365 * 96   # 2015 gaps are filled


def test_standard_load_profiles_scale_to_the_annual_energy():
    for kind in profiles.STANDARD_PROFILES:
        annual = sum(profiles.standard_load(kind, 3500, 365)) / 1000
        assert annual == pytest.approx(3500, rel=0.02)


def test_slot_lengths_resample_energy_and_prices():
    quarter = profiles.household_load(5, 1)
    hourly = profiles.household_load(5, 1, slot_s=3600)
    assert len(hourly) == 24 and abs(sum(hourly) - sum(quarter)) <= 24
    assert profiles.day_ahead_prices(2018, 1, slot_s=3600)[:2] == [-5270, -29990]


def test_windows_past_the_year_end_wrap_around():
    wrapped = profiles.household_load(2, n_days=2, start_day=364)
    assert wrapped[96:] == profiles.household_load(2, n_days=1, start_day=0)


@pytest.mark.parametrize("call", [
    lambda: profiles.household_load(1, 0),
    lambda: profiles.household_load(1, 1, start_day=365),
    lambda: profiles.household_load(1, 1, slot_s=1000),
    lambda: profiles.pv_generation(-1.0),
])
def test_bad_arguments_are_rejected(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("call", [
    lambda: profiles.household_load(1, 1, household="castle"),
    lambda: profiles.day_ahead_prices(2021, 1),
    lambda: profiles.standard_load("X0", 1000, 1),
    lambda: profiles.pv_generation(1.0, region=16),
])
def test_unknown_data_is_a_profile_data_error(call):
    with pytest.raises(profiles.ProfileDataError):
        call()


def test_profile_days_start_at_midnight_cet():
    assert profiles.profile_slot_utc_s(2018, 0) == 1514761200           # 2017-12-31 23:00 UTC
    assert profiles.profile_slot_utc_s(2018, 1, 4) == 1514761200 + 86400 + 3600
