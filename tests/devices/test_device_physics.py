"""Meter, PV, EV and series physics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.ev import (
    EvChargerSpec,
    EvSession,
    EvState,
    clip_current_limit,
    step_ev,
)
from p2pgrid.devices.meter import MeterState, step_meter
from p2pgrid.devices.pv import (
    PvArraySpec,
    SunPosition,
    plane_of_array_wm2,
    pv_available_w,
    pv_output,
    solar_position,
)
from p2pgrid.devices.readings import EvStatus
from p2pgrid.devices.series import Series


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 900), st.floats(-50_000, 50_000)), max_size=60))
def test_meter_counters_are_monotone_integers_and_lose_no_energy(flows):
    state = MeterState()
    exact_import = exact_export = 0.0
    for dt_s, grid_w in flows:
        before = state
        state = step_meter(state, dt_s, grid_w)
        assert isinstance(state.import_wh, int) and isinstance(state.export_wh, int)
        assert state.import_wh >= before.import_wh and state.export_wh >= before.export_wh
        exact_import += max(grid_w, 0) * dt_s / 3600
        exact_export += max(-grid_w, 0) * dt_s / 3600
    assert state.import_wh + state.import_residual_wh == pytest.approx(exact_import, abs=1e-6)
    assert state.export_wh + state.export_residual_wh == pytest.approx(exact_export, abs=1e-6)
    assert 0 <= state.import_residual_wh < 1 and 0 <= state.export_residual_wh < 1


def test_meter_counts_import_and_export_separately():
    state = step_meter(MeterState(), 3600, 1500.0)
    state = step_meter(state, 1800, -1000.0)
    assert (state.import_wh, state.export_wh) == (1500, 500)
    assert state.phase_power_w == pytest.approx((-1000 / 3,) * 3)


def test_sun_is_high_at_local_noon_in_june_and_down_at_midnight():
    # 2026-06-21 11:16 UTC is about solar noon at 11° E
    noon = solar_position(1_782_040_560_000, 48.0, 11.0)
    assert 60 < noon.elevation_deg < 70 and 160 < noon.azimuth_deg < 200
    midnight = solar_position(1_782_000_000_000, 48.0, 11.0)
    assert midnight.elevation_deg < 0


def test_south_facing_tilted_array_gains_on_a_low_winter_sun():
    spec = PvArraySpec(peak_w=10_000, tilt_deg=45, azimuth_deg=180)
    sun = SunPosition(elevation_deg=20, azimuth_deg=180)
    assert plane_of_array_wm2(400, sun, spec) > 400
    assert plane_of_array_wm2(400, SunPosition(-5, 180), spec) == 0


def test_pv_output_clips_at_rating_then_at_curtailment():
    spec = PvArraySpec(peak_w=10_000, inverter_rated_w=8_000)
    assert pv_available_w(spec, 1000) == pytest.approx(8_500)
    out = pv_output(spec, 8_500, None)
    assert out.power_w == 8_000 and out.reason == "inverter rating" and out.curtailed
    out = pv_output(spec, 8_500, 3_000)
    assert out.power_w == 3_000 and out.reason == "curtailment limit"
    assert not pv_output(spec, 2_000, 3_000).curtailed


def test_ev_current_limit_clipping_follows_iec_61851():
    spec = EvChargerSpec(min_current_a=6, max_current_a=16)
    assert clip_current_limit(spec, 32).allowed_a == 16
    assert clip_current_limit(spec, 4).allowed_a == 0
    assert clip_current_limit(spec, 4).reason.startswith("below minimum")
    assert clip_current_limit(spec, 10).reason == ""


def test_ev_session_charges_until_satisfied_then_waits_connected():
    spec = EvChargerSpec(phases=3, voltage_v=230, max_current_a=16)
    session = EvSession(arrive_ms=0, depart_ms=10 * 3600_000, energy_wh=11_040)
    state = EvState(current_limit_a=16)
    state = step_ev(spec, state, 3600, 0, [session])
    assert state.status is EvStatus.CHARGING and state.power_w == pytest.approx(11_040)
    state = step_ev(spec, state, 3600, 3600_000, [session])
    assert state.status is EvStatus.CONNECTED and state.session_wh == 11_040
    state = step_ev(spec, state, 60, 10 * 3600_000, [session])
    assert state.status is EvStatus.DISCONNECTED and state.session_wh == 0


def test_series_step_holds_and_cycles():
    s = Series.of(1000, 100, [1, 2, 3])
    assert [s.at(t) for t in (0, 1000, 1099, 1100, 1250, 9999)] == [1, 1, 1, 2, 3, 3]
    daily = Series.of(0, 100, [1, 2], cyclic=True)
    assert daily.at(200) == 1 and daily.at(-50) == 2
    assert s.next_change_ms(1050) == 1100
