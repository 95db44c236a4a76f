"""Battery physics: bounds, energy balance, clipping — as properties and worked examples."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.battery import (
    BatterySpec,
    BatteryState,
    clip_battery_power,
    step_battery,
)
from p2pgrid.errors import ConfigError

specs = st.builds(
    BatterySpec,
    capacity_wh=st.floats(1_000, 200_000),
    max_charge_w=st.floats(0, 100_000),
    max_discharge_w=st.floats(0, 100_000),
    charge_efficiency=st.floats(0.5, 1.0),
    discharge_efficiency=st.floats(0.5, 1.0),
    self_discharge_per_day=st.floats(0, 0.2),
    min_soc_pct=st.floats(0, 30),
    max_soc_pct=st.floats(70, 100),
    reserve_pct=st.floats(0, 50),
)
steps = st.lists(st.tuples(st.floats(0, 3600), st.floats(-300_000, 300_000)),
                 min_size=1, max_size=30)


def _start(spec: BatterySpec, fraction: float) -> BatteryState:
    return BatteryState(stored_wh=spec.floor_wh + fraction * (spec.ceiling_wh - spec.floor_wh))


@settings(max_examples=200, deadline=None)
@given(spec=specs, fraction=st.floats(0, 1), plan=steps)
def test_soc_stays_within_bounds(spec, fraction, plan):
    state = _start(spec, fraction)
    for dt_s, requested in plan:
        before = state.stored_wh
        state = step_battery(spec, state, dt_s, requested).state
        assert 0.0 <= state.stored_wh <= spec.ceiling_wh + 1e-6
        # the controller never spends the reserve; only self-discharge sinks below the floor
        if state.power_w > 0:
            decay = (1 - spec.self_discharge_per_day) ** (dt_s / 86400)
            assert state.stored_wh >= min(before, spec.floor_wh) * decay - 1e-6


@settings(max_examples=200, deadline=None)
@given(spec=specs, fraction=st.floats(0, 1), plan=steps)
def test_energy_balance_holds_with_efficiency_and_self_discharge(spec, fraction, plan):
    start = _start(spec, fraction)
    state = start
    for dt_s, requested in plan:
        state = step_battery(spec, state, dt_s, requested).state
    change = state.stored_wh - start.stored_wh
    booked = (state.charged_ac_wh - state.discharged_ac_wh - state.conversion_loss_wh
              - state.self_discharge_wh)
    assert math.isclose(change, booked, rel_tol=1e-9, abs_tol=1e-6)
    # conversion losses are exactly the efficiency shares of what went through the converter
    expected_loss = (state.charged_ac_wh * (1 - spec.charge_efficiency)
                     + state.discharged_ac_wh * (1 / spec.discharge_efficiency - 1))
    assert math.isclose(state.conversion_loss_wh, expected_loss, rel_tol=1e-6, abs_tol=1e-3)
    assert state.self_discharge_wh >= 0


@settings(max_examples=300, deadline=None)
@given(spec=specs, fraction=st.floats(0, 1), dt_s=st.floats(0.001, 3600),
       requested=st.floats(-300_000, 300_000))
def test_setpoints_beyond_limits_are_clipped_and_reported(spec, fraction, dt_s, requested):
    step = step_battery(spec, _start(spec, fraction), dt_s, requested)
    clip = step.clip
    assert -spec.max_charge_w <= clip.allowed_w <= spec.max_discharge_w
    assert step.state.power_w == clip.allowed_w
    assert clip.clipped == (clip.allowed_w != requested)
    assert (clip.reason != "") == clip.clipped
    if requested > spec.max_discharge_w or requested < -spec.max_charge_w:
        assert clip.clipped
    # never the wrong direction, never more than asked
    assert clip.allowed_w * requested >= 0
    assert abs(clip.allowed_w) <= abs(requested)


def test_charging_one_hour_at_full_power_worked_example():
    spec = BatterySpec(capacity_wh=10_000, max_charge_w=5_000, max_discharge_w=5_000,
                       charge_efficiency=0.9, discharge_efficiency=0.9,
                       self_discharge_per_day=0.0, min_soc_pct=0, reserve_pct=0)
    step = step_battery(spec, BatteryState(stored_wh=2_000), 3600, -3_000)
    assert not step.clip.clipped
    assert step.state.stored_wh == pytest.approx(2_000 + 3_000 * 0.9)
    assert step.state.conversion_loss_wh == pytest.approx(300)


def test_full_battery_refuses_charge_and_says_why():
    spec = BatterySpec(capacity_wh=10_000, max_charge_w=5_000, max_discharge_w=5_000,
                       max_soc_pct=90)
    step = step_battery(spec, BatteryState(stored_wh=9_000), 60, -1_000)
    assert step.clip.allowed_w == 0
    assert step.clip.reason == "battery full"


def test_discharge_stops_at_reserve():
    spec = BatterySpec(capacity_wh=10_000, max_charge_w=5_000, max_discharge_w=5_000,
                       discharge_efficiency=1.0, self_discharge_per_day=0.0,
                       min_soc_pct=5, reserve_pct=20)
    # 500 Wh above the 2000 Wh reserve: one hour can deliver only 500 W
    step = step_battery(spec, BatteryState(stored_wh=2_500), 3600, 4_000)
    assert step.clip.allowed_w == pytest.approx(500)
    assert step.clip.reason == "battery at reserve"
    assert step.state.stored_wh == pytest.approx(2_000)


def test_self_discharge_compounds_per_day():
    spec = BatterySpec(capacity_wh=10_000, max_charge_w=1, max_discharge_w=1,
                       self_discharge_per_day=0.1)
    state = BatteryState(stored_wh=8_000)
    for _ in range(24):
        state = step_battery(spec, state, 3600, 0).state
    assert state.stored_wh == pytest.approx(7_200)


def test_clip_over_zero_time_checks_power_limits_only():
    spec = BatterySpec(capacity_wh=10_000, max_charge_w=3_000, max_discharge_w=4_000)
    assert clip_battery_power(spec, 5_000, -9_000, 0).allowed_w == -3_000


@pytest.mark.parametrize("field,value", [("capacity_wh", 0), ("charge_efficiency", 1.2),
                                         ("min_soc_pct", 120), ("reserve_pct", 101)])
def test_invalid_battery_spec_is_a_config_error(field, value):
    kwargs = dict(capacity_wh=10_000, max_charge_w=1, max_discharge_w=1)
    kwargs[field] = value
    with pytest.raises(ConfigError):
        BatterySpec(**kwargs)
