"""A simulated site: pure physics stepped in time, behind the same ``Device`` protocol as
real hardware.

``step_site(spec, inputs, state, dt_s)`` is the whole physics of one site for one step, pure:

1. household load and irradiance (or available PV power) are read from the input series at the
   step's start; PV output is clipped by the inverter rating and the curtailment limit;
2. the EV charges in its active session at its current limit;
3. the battery follows its setpoint (clipped by its limits, reported) or, without one, does
   self-consumption: it covers the net load ``load + ev − pv`` as far as it can;
4. the grid takes the rest: ``grid = load + ev − pv − battery`` (import +), and the meter
   integrates it into monotone integer Wh counters.

``SimulatedSite`` is the thin imperative shell: it holds the state, advances it to ``clock()``
(Unix ms; in tests a hand-stepped counter, in simnet the scaled clock) on every read or
setpoint, and hands out one ``Device`` per component. Setpoints stand until replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from p2pgrid.devices.base import (
    Applied,
    BatterySetpoint,
    DeviceKind,
    EvCurrentLimit,
    PvLimit,
    SetpointRejected,
    Setpoint,
)
from p2pgrid.devices.battery import (
    BatterySpec,
    BatteryState,
    PowerClip,
    clip_battery_power,
    step_battery,
)
from p2pgrid.devices.ev import EvChargerSpec, EvSession, EvState, clip_current_limit, step_ev
from p2pgrid.devices.meter import MeterState, count_energy, step_meter
from p2pgrid.devices.pv import (
    PvArraySpec,
    plane_of_array_wm2,
    pv_available_w,
    pv_output,
    solar_position,
)
from p2pgrid.devices.readings import (
    BatteryMode,
    BatteryReading,
    EvReading,
    LoadReading,
    MeterReading,
    PvReading,
    Reading,
)
from p2pgrid.devices.series import Series
from p2pgrid.errors import ConfigError

SECONDS_PER_HOUR = 3600.0
#: Longest physics step when catching up with the clock; series values hold within a step.
DEFAULT_MAX_STEP_MS = 10_000


@dataclass(frozen=True)
class SiteSpec:
    pv: PvArraySpec | None = None
    battery: BatterySpec | None = None
    ev: EvChargerSpec | None = None
    phases: int = 3


@dataclass(frozen=True)
class SiteInputs:
    """``ghi_wm2`` is global horizontal irradiance, transposed onto the array; a caller that
    already has PV power (e.g. a measured profile scaled to the array) gives
    ``pv_available_w`` instead, which wins."""

    load_w: Series
    ghi_wm2: Series | None = None
    pv_available_w: Series | None = None
    ev_sessions: tuple[EvSession, ...] = ()


@dataclass(frozen=True)
class SiteControls:
    battery_w: float | None = None
    pv_limit_w: float | None = None


@dataclass(frozen=True)
class SiteState:
    t_ms: int
    meter: MeterState = MeterState()
    controls: SiteControls = SiteControls()
    load_w: float = 0.0
    pv_w: float = 0.0
    pv_lifetime_wh: int = 0
    pv_residual_wh: float = 0.0
    battery: BatteryState | None = None
    battery_clip: PowerClip | None = None
    ev: EvState | None = None


def initial_site_state(spec: SiteSpec, t_ms: int, soc_pct: float = 50.0) -> SiteState:
    battery = None
    if spec.battery is not None:
        battery = BatteryState(stored_wh=spec.battery.capacity_wh * soc_pct / 100.0)
    ev = EvState(current_limit_a=spec.ev.max_current_a) if spec.ev is not None else None
    return SiteState(t_ms=t_ms, battery=battery, ev=ev)


def _available_pv_w(spec: PvArraySpec, inputs: SiteInputs, t_ms: int) -> float:
    if inputs.pv_available_w is not None:
        return inputs.pv_available_w.at(t_ms)
    if inputs.ghi_wm2 is None:
        return 0.0
    sun = solar_position(t_ms, spec.latitude_deg, spec.longitude_deg)
    return pv_available_w(spec, plane_of_array_wm2(inputs.ghi_wm2.at(t_ms), sun, spec))


def step_site(spec: SiteSpec, inputs: SiteInputs, state: SiteState, dt_s: float) -> SiteState:
    """One physics step of ``dt_s`` seconds from ``state.t_ms`` (see the module docstring)."""
    t = state.t_ms
    load_w = max(0.0, inputs.load_w.at(t))
    pv_w, pv_lifetime, pv_residual = 0.0, state.pv_lifetime_wh, state.pv_residual_wh
    if spec.pv is not None:
        pv_w = pv_output(spec.pv, _available_pv_w(spec.pv, inputs, t),
                         state.controls.pv_limit_w).power_w
        pv_lifetime, pv_residual = count_energy(pv_lifetime, pv_residual,
                                                pv_w * dt_s / SECONDS_PER_HOUR)
    ev = state.ev
    if spec.ev is not None and ev is not None:
        ev = step_ev(spec.ev, ev, dt_s, t, inputs.ev_sessions)
    ev_w = ev.power_w if ev is not None else 0.0
    battery, battery_clip, battery_w = state.battery, state.battery_clip, 0.0
    if spec.battery is not None and battery is not None:
        requested = state.controls.battery_w
        if requested is None:
            requested = load_w + ev_w - pv_w
        stepped = step_battery(spec.battery, battery, dt_s, requested)
        battery, battery_clip, battery_w = stepped.state, stepped.clip, stepped.state.power_w
    grid_w = load_w + ev_w - pv_w - battery_w
    meter = step_meter(state.meter, dt_s, grid_w, spec.phases)
    return replace(state, t_ms=t + round(dt_s * 1000), meter=meter, load_w=load_w, pv_w=pv_w,
                   pv_lifetime_wh=pv_lifetime, pv_residual_wh=pv_residual, battery=battery,
                   battery_clip=battery_clip, ev=ev)


def advance_site(spec: SiteSpec, inputs: SiteInputs, state: SiteState, until_ms: int,
                 max_step_ms: int = DEFAULT_MAX_STEP_MS) -> SiteState:
    """Step ``state`` forward to ``until_ms`` in steps of at most ``max_step_ms``, never across
    a change of the load series (so a step-held profile is integrated exactly)."""
    while state.t_ms < until_ms:
        end = min(until_ms, state.t_ms + max_step_ms, inputs.load_w.next_change_ms(state.t_ms))
        state = step_site(spec, inputs, state, (end - state.t_ms) / 1000.0)
    return state


class SimulatedSite:
    """Holds one site's state and advances it to ``clock()`` whenever it is read or set."""

    def __init__(self, spec: SiteSpec, inputs: SiteInputs, clock: Callable[[], int],
                 soc_pct: float = 50.0, max_step_ms: int = DEFAULT_MAX_STEP_MS) -> None:
        self.spec = spec
        self.inputs = inputs
        self._clock = clock
        self._max_step_ms = max_step_ms
        self.state = initial_site_state(spec, clock(), soc_pct)

    def sync(self) -> SiteState:
        self.state = advance_site(self.spec, self.inputs, self.state, self._clock(),
                                  self._max_step_ms)
        return self.state

    def device(self, kind: DeviceKind) -> SimulatedDevice:
        present = {DeviceKind.METER: True, DeviceKind.LOAD: True,
                   DeviceKind.PV: self.spec.pv is not None,
                   DeviceKind.BATTERY: self.spec.battery is not None,
                   DeviceKind.EV: self.spec.ev is not None}
        if not present[kind]:
            raise ConfigError(f"simulated site has no {kind.value}")
        return SimulatedDevice(self, kind)

    def reading(self, kind: DeviceKind) -> Reading:
        state = self.sync()
        return site_reading(self.spec, state, kind)

    def apply(self, setpoint: Setpoint) -> Applied:
        state = self.sync()
        applied, reason = setpoint, ""
        if isinstance(setpoint, BatterySetpoint) and self.spec.battery is not None:
            if setpoint.power_w is not None and state.battery is not None:
                clip = clip_battery_power(self.spec.battery, state.battery.stored_wh,
                                          setpoint.power_w, dt_s=1.0)
                applied, reason = BatterySetpoint(clip.allowed_w), clip.reason
            controls = replace(state.controls, battery_w=setpoint.power_w)
        elif isinstance(setpoint, PvLimit) and self.spec.pv is not None:
            limit = setpoint.limit_w
            if limit is not None and limit < 0:
                applied, reason = PvLimit(0.0), "negative limit"
                limit = 0.0
            controls = replace(state.controls, pv_limit_w=limit)
        elif isinstance(setpoint, EvCurrentLimit) and self.spec.ev is not None \
                and state.ev is not None:
            current = clip_current_limit(self.spec.ev, setpoint.current_a)
            applied, reason = EvCurrentLimit(current.allowed_a), current.reason
            self.state = replace(state, ev=replace(state.ev, current_limit_a=current.allowed_a))
            return Applied(setpoint, applied, reason)
        else:
            raise SetpointRejected(f"simulated site cannot take {setpoint!r}")
        self.state = replace(state, controls=controls)
        return Applied(setpoint, applied, reason)


class SimulatedDevice:
    """One component of a ``SimulatedSite`` as a ``Device``."""

    def __init__(self, site: SimulatedSite, kind: DeviceKind) -> None:
        self.site = site
        self.kind = kind

    async def read(self) -> Reading:
        return self.site.reading(self.kind)

    async def apply(self, setpoint: Setpoint) -> Applied:
        expected = {DeviceKind.BATTERY: BatterySetpoint, DeviceKind.PV: PvLimit,
                    DeviceKind.EV: EvCurrentLimit}.get(self.kind)
        if expected is None or not isinstance(setpoint, expected):
            raise SetpointRejected(f"{self.kind.value} cannot take {type(setpoint).__name__}")
        return self.site.apply(setpoint)


def site_reading(spec: SiteSpec, state: SiteState, kind: DeviceKind) -> Reading:
    """The reading a component of the site shows in ``state`` (pure)."""
    t = state.t_ms
    if kind is DeviceKind.METER:
        m = state.meter
        return MeterReading(t, m.power_w, m.import_wh, m.export_wh, m.phase_power_w)
    if kind is DeviceKind.LOAD:
        return LoadReading(t, state.load_w)
    if kind is DeviceKind.PV and spec.pv is not None:
        return PvReading(t, state.pv_w, state.pv_lifetime_wh, spec.pv.rated_w,
                         state.controls.pv_limit_w)
    if kind is DeviceKind.BATTERY and spec.battery is not None and state.battery is not None:
        b, bs = state.battery, spec.battery
        setpoint = state.controls.battery_w
        return BatteryReading(
            t, b.power_w, min(100.0, max(0.0, b.soc_pct(bs))), round(bs.capacity_wh),
            bs.max_charge_w, bs.max_discharge_w, bs.min_soc_pct, bs.max_soc_pct, bs.reserve_pct,
            BatteryMode.AUTO if setpoint is None else BatteryMode.REMOTE, setpoint)
    if kind is DeviceKind.EV and spec.ev is not None and state.ev is not None:
        e = state.ev
        return EvReading(t, e.status, e.current_limit_a, e.power_w, e.session_wh, spec.ev.phases)
    raise ConfigError(f"simulated site has no {kind.value}")
