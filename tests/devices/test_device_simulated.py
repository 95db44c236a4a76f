"""A simulated site behind the Device protocol: power balance, setpoints, readings."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.base import (
    BatterySetpoint,
    DeviceKind,
    EvCurrentLimit,
    PvLimit,
    SetpointRejected,
)
from p2pgrid.devices.battery import BatterySpec
from p2pgrid.devices.device import ControllableDevice, Device
from p2pgrid.devices.ev import EvChargerSpec, EvSession
from p2pgrid.devices.pv import PvArraySpec
from p2pgrid.devices.readings import BatteryMode, EvStatus, validate_reading
from p2pgrid.devices.series import Series
from p2pgrid.devices.simulated import (
    SimulatedSite,
    SiteControls,
    SiteInputs,
    SiteSpec,
    advance_site,
    initial_site_state,
    step_site,
)
from p2pgrid.errors import ConfigError

T0 = 1_782_000_000_000  # 2026-06-21 00:00 UTC
HOUR_MS = 3_600_000

SPEC = SiteSpec(
    pv=PvArraySpec(peak_w=8_000, inverter_rated_w=7_000),
    battery=BatterySpec(capacity_wh=10_000, max_charge_w=4_000, max_discharge_w=4_000,
                        self_discharge_per_day=0.0),
    ev=EvChargerSpec(phases=3, max_current_a=16),
)


class StepClock:
    def __init__(self, t_ms: int) -> None:
        self.t_ms = t_ms

    def __call__(self) -> int:
        return self.t_ms


@settings(max_examples=100, deadline=None)
@given(load=st.lists(st.floats(0, 20_000), min_size=1, max_size=8),
       pv=st.lists(st.floats(0, 10_000), min_size=1, max_size=8),
       battery_w=st.one_of(st.none(), st.floats(-10_000, 10_000)),
       soc=st.floats(0, 100), dt_s=st.floats(1, 900))
def test_site_power_balances_at_every_step(load, pv, battery_w, soc, dt_s):
    inputs = SiteInputs(load_w=Series.of(T0, 900_000, load),
                        pv_available_w=Series.of(T0, 900_000, pv),
                        ev_sessions=(EvSession(T0, T0 + HOUR_MS, 5_000),))
    state = initial_site_state(SPEC, T0, soc_pct=soc)
    state = replace(state, controls=SiteControls(battery_w=battery_w))
    for _ in range(len(load)):
        state = step_site(SPEC, inputs, state, dt_s)
        assert state.battery is not None and state.ev is not None
        grid = state.meter.power_w
        assert grid + state.pv_w + state.battery.power_w == pytest.approx(
            state.load_w + state.ev.power_w, abs=1e-6)
        assert state.pv_w <= SPEC.pv.rated_w  # type: ignore[union-attr]


def test_self_consumption_battery_absorbs_surplus_and_meter_sees_nothing():
    inputs = SiteInputs(load_w=Series.constant(500), pv_available_w=Series.constant(2_500))
    state = advance_site(SiteSpec(pv=SPEC.pv, battery=SPEC.battery), inputs,
                         initial_site_state(SPEC, T0, soc_pct=20), T0 + HOUR_MS)
    assert state.battery is not None
    assert state.battery.power_w == pytest.approx(-2_000)
    assert state.meter.import_wh == 0 and state.meter.export_wh == 0
    assert state.pv_lifetime_wh == 2_500


async def test_devices_follow_setpoints_and_report_clipping():
    clock = StepClock(T0)
    inputs = SiteInputs(load_w=Series.constant(1_000), pv_available_w=Series.constant(6_000),
                        ev_sessions=(EvSession(T0, T0 + 8 * HOUR_MS, 50_000),))
    site = SimulatedSite(SPEC, inputs, clock, soc_pct=50)
    battery, pv, ev, meter = (site.device(k) for k in (DeviceKind.BATTERY, DeviceKind.PV,
                                                        DeviceKind.EV, DeviceKind.METER))
    assert isinstance(battery, ControllableDevice) and isinstance(meter, Device)

    applied = await battery.apply(BatterySetpoint(-9_000))
    assert applied.clipped and applied.applied == BatterySetpoint(-4_000)
    assert applied.reason == "max charge power"
    applied = await pv.apply(PvLimit(2_500))
    assert not applied.clipped
    applied = await ev.apply(EvCurrentLimit(40))
    assert applied.applied == EvCurrentLimit(16) and applied.reason == "max current"

    clock.t_ms += 15 * 60_000
    b = validate_reading(await battery.read())
    p = validate_reading(await pv.read())
    e = validate_reading(await ev.read())
    m = validate_reading(await meter.read())
    assert b.mode is BatteryMode.REMOTE and b.power_w == pytest.approx(-4_000)
    assert p.power_w == pytest.approx(2_500) and p.limit_w == 2_500
    assert e.status is EvStatus.CHARGING and e.power_w == pytest.approx(3 * 230 * 16)
    # grid = load + ev − pv − battery = 1000 + 11040 − 2500 + 4000
    assert m.power_w == pytest.approx(13_540)
    assert m.import_wh == 13_540 // 4 and m.t_ms == T0 + 15 * 60_000

    await battery.apply(BatterySetpoint(None))
    assert (await battery.read()).mode is BatteryMode.AUTO


async def test_device_rejects_setpoint_of_another_kind():
    site = SimulatedSite(SPEC, SiteInputs(load_w=Series.constant(0)), StepClock(T0))
    with pytest.raises(SetpointRejected):
        await site.device(DeviceKind.PV).apply(BatterySetpoint(100))
    with pytest.raises(SetpointRejected):
        await site.device(DeviceKind.METER).apply(PvLimit(1))


def test_site_without_battery_has_no_battery_device():
    site = SimulatedSite(SiteSpec(), SiteInputs(load_w=Series.constant(0)), StepClock(T0))
    with pytest.raises(ConfigError):
        site.device(DeviceKind.BATTERY)


def test_irradiance_drives_pv_through_the_day():
    spec = SiteSpec(pv=PvArraySpec(peak_w=5_000, latitude_deg=48, longitude_deg=11))
    inputs = SiteInputs(load_w=Series.constant(0), ghi_wm2=Series.of(T0, HOUR_MS, [
        0, 0, 0, 0, 0, 50, 150, 300, 450, 600, 750, 850, 880, 850, 750, 600, 450, 300, 150,
        50, 0, 0, 0, 0]))
    state = advance_site(spec, inputs, initial_site_state(spec, T0), T0 + 24 * HOUR_MS,
                         max_step_ms=60_000)
    # a clear June day on 5 kWp: some 25-40 kWh, all of it exported
    assert 20_000 < state.pv_lifetime_wh < 45_000
    assert state.meter.export_wh == state.pv_lifetime_wh
