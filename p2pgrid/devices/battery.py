"""Battery physics (pure): one step of a stationary battery under an AC power setpoint.

The model, per step of ``dt_s`` seconds with requested AC power ``p`` (W, + discharge, − charge):

1. **Power limits.** ``p`` is clipped to ``[-max_charge_w, +max_discharge_w]``.
2. **Energy limits.** Charging stores ``p_c · η_c · dt`` and may not lift the stored energy above
   ``max_soc``; discharging draws ``p_d / η_d · dt`` from storage and may not take it below the
   *floor*, ``max(min_soc, reserve)`` — the reserve is kept for backup, the controller never
   spends it. If the battery already sits outside the window, the step only moves it back in.
3. **Self-discharge.** Stored energy then decays by the fraction ``self_discharge_per_day`` per
   day, compounded (``stored · (1 − f)^(dt/86400)``); this alone may take it below the floor,
   never below zero.

Round-trip efficiency is split into its charge and discharge halves (``η_c · η_d``), because
where the loss is booked matters for the AMM's dissipative reserve. The state keeps running
totals so the energy balance can be checked exactly::

    stored_after − stored_before
        == charged_ac − discharged_ac − conversion_loss − self_discharge      (all in Wh)

Every clip is returned with the limit that caused it; nothing is clipped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from p2pgrid.errors import ConfigError

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class BatterySpec:
    capacity_wh: float
    max_charge_w: float
    max_discharge_w: float
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95
    self_discharge_per_day: float = 0.001
    min_soc_pct: float = 5.0
    max_soc_pct: float = 100.0
    reserve_pct: float = 10.0

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise ConfigError("battery capacity_wh must be > 0")
        if self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise ConfigError("battery max_charge_w / max_discharge_w must be >= 0")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"battery {name} must be in (0, 1]")
        if not 0.0 <= self.self_discharge_per_day < 1.0:
            raise ConfigError("battery self_discharge_per_day must be in [0, 1)")
        if not 0.0 <= self.min_soc_pct <= self.max_soc_pct <= 100.0:
            raise ConfigError("battery needs 0 <= min_soc_pct <= max_soc_pct <= 100")
        if not 0.0 <= self.reserve_pct <= self.max_soc_pct:
            raise ConfigError("battery reserve_pct must be in [0, max_soc_pct]")

    @property
    def floor_wh(self) -> float:
        """Discharging stops here: the higher of the minimum SoC and the backup reserve."""
        return self.capacity_wh * max(self.min_soc_pct, self.reserve_pct) / 100.0

    @property
    def ceiling_wh(self) -> float:
        return self.capacity_wh * self.max_soc_pct / 100.0

    @property
    def round_trip_efficiency(self) -> float:
        return self.charge_efficiency * self.discharge_efficiency


@dataclass(frozen=True)
class BatteryState:
    stored_wh: float
    power_w: float = 0.0
    charged_ac_wh: float = 0.0
    discharged_ac_wh: float = 0.0
    conversion_loss_wh: float = 0.0
    self_discharge_wh: float = 0.0

    def soc_pct(self, spec: BatterySpec) -> float:
        return 100.0 * self.stored_wh / spec.capacity_wh


@dataclass(frozen=True)
class PowerClip:
    """What the battery was asked for and what it can do for the whole step."""

    requested_w: float
    allowed_w: float
    reason: str = ""

    @property
    def clipped(self) -> bool:
        return self.allowed_w != self.requested_w


def clip_battery_power(spec: BatterySpec, stored_wh: float, requested_w: float,
                       dt_s: float) -> PowerClip:
    """The AC power (+ discharge) the battery can hold for ``dt_s`` seconds from ``stored_wh``."""
    if requested_w > spec.max_discharge_w:
        allowed, reason = spec.max_discharge_w, "max discharge power"
    elif requested_w < -spec.max_charge_w:
        allowed, reason = -spec.max_charge_w, "max charge power"
    else:
        allowed, reason = requested_w, ""
    dt_h = dt_s / SECONDS_PER_HOUR
    if dt_h <= 0:
        return PowerClip(requested_w, allowed, reason)
    if allowed > 0:
        room_w = max(0.0, stored_wh - spec.floor_wh) * spec.discharge_efficiency / dt_h
        if allowed > room_w:
            allowed, reason = room_w, "battery at reserve"
    elif allowed < 0:
        room_w = max(0.0, spec.ceiling_wh - stored_wh) / (spec.charge_efficiency * dt_h)
        if -allowed > room_w:
            allowed, reason = -room_w, "battery full"
    return PowerClip(requested_w, allowed, reason)


@dataclass(frozen=True)
class BatteryStep:
    state: BatteryState
    clip: PowerClip


def step_battery(spec: BatterySpec, state: BatteryState, dt_s: float,
                 requested_w: float) -> BatteryStep:
    """Advance ``state`` by ``dt_s`` seconds at AC power ``requested_w`` (clipped, reported)."""
    if dt_s < 0:
        raise ValueError(f"dt_s must be >= 0, got {dt_s}")
    clip = clip_battery_power(spec, state.stored_wh, requested_w, dt_s)
    dt_h = dt_s / SECONDS_PER_HOUR
    ac_wh = abs(clip.allowed_w) * dt_h
    if clip.allowed_w < 0:
        into_storage = ac_wh * spec.charge_efficiency
        stored = min(spec.ceiling_wh, state.stored_wh + into_storage) if ac_wh else state.stored_wh
        # Clamping only absorbs float rounding here: the clip already kept us below the ceiling.
        stored = max(stored, state.stored_wh)
        charged, discharged = ac_wh, 0.0
        loss = ac_wh - (stored - state.stored_wh)
    elif clip.allowed_w > 0:
        out_of_storage = ac_wh / spec.discharge_efficiency
        stored = max(0.0, state.stored_wh - out_of_storage)
        charged, discharged = 0.0, ac_wh
        loss = (state.stored_wh - stored) - ac_wh
    else:
        stored, charged, discharged, loss = state.stored_wh, 0.0, 0.0, 0.0
    decayed = stored * (1.0 - spec.self_discharge_per_day) ** (dt_s / SECONDS_PER_DAY)
    self_loss = stored - decayed
    new_state = replace(
        state,
        stored_wh=decayed,
        power_w=clip.allowed_w,
        charged_ac_wh=state.charged_ac_wh + charged,
        discharged_ac_wh=state.discharged_ac_wh + discharged,
        conversion_loss_wh=state.conversion_loss_wh + loss,
        self_discharge_wh=state.self_discharge_wh + self_loss,
    )
    return BatteryStep(new_state, clip)
