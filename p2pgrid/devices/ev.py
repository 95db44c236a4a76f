"""EV charger physics (pure): sessions from a schedule, power from the current limit.

A session is a car plugged in from ``arrive_ms`` to ``depart_ms`` wanting ``energy_wh``. While
plugged in the charger delivers ``phases × voltage × current_limit`` until the car has what it
wants. The current limit obeys IEC 61851: either 0 (paused) or between the charger's minimum
(6 A) and maximum; a request below the minimum pauses, one above the maximum is cut to it — both
reported. Status follows the control pilot: A without a car, B plugged in and not charging, C
charging.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from p2pgrid.devices.readings import EvStatus
from p2pgrid.errors import ConfigError

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class EvChargerSpec:
    phases: int = 3
    voltage_v: float = 230.0
    min_current_a: float = 6.0
    max_current_a: float = 16.0

    def __post_init__(self) -> None:
        if self.phases not in (1, 2, 3):
            raise ConfigError("ev phases must be 1, 2 or 3")
        if not 0.0 < self.min_current_a <= self.max_current_a:
            raise ConfigError("ev needs 0 < min_current_a <= max_current_a")

    def power_at(self, current_a: float) -> float:
        return self.phases * self.voltage_v * current_a


@dataclass(frozen=True)
class EvSession:
    arrive_ms: int
    depart_ms: int
    energy_wh: float

    def __post_init__(self) -> None:
        if self.depart_ms <= self.arrive_ms or self.energy_wh < 0:
            raise ConfigError("ev session needs depart_ms > arrive_ms and energy_wh >= 0")


@dataclass(frozen=True)
class EvState:
    current_limit_a: float
    session: EvSession | None = None
    delivered_wh: float = 0.0
    power_w: float = 0.0
    status: EvStatus = EvStatus.DISCONNECTED

    @property
    def session_wh(self) -> int:
        return math.floor(self.delivered_wh)


@dataclass(frozen=True)
class CurrentClip:
    requested_a: float
    allowed_a: float
    reason: str = ""


def clip_current_limit(spec: EvChargerSpec, requested_a: float) -> CurrentClip:
    if requested_a <= 0:
        return CurrentClip(requested_a, 0.0, "" if requested_a == 0 else "negative current")
    if requested_a < spec.min_current_a:
        return CurrentClip(requested_a, 0.0, "below minimum current: paused")
    if requested_a > spec.max_current_a:
        return CurrentClip(requested_a, spec.max_current_a, "max current")
    return CurrentClip(requested_a, requested_a)


def active_session(sessions: Sequence[EvSession], t_ms: int) -> EvSession | None:
    for session in sessions:
        if session.arrive_ms <= t_ms < session.depart_ms:
            return session
    return None


def step_ev(spec: EvChargerSpec, state: EvState, dt_s: float, t_ms: int,
            sessions: Sequence[EvSession]) -> EvState:
    """Advance by ``dt_s`` seconds starting at ``t_ms``; the session is the one active at
    ``t_ms`` (a new session starts its energy count from zero)."""
    session = active_session(sessions, t_ms)
    delivered = state.delivered_wh if session == state.session else 0.0
    if session is None:
        return replace(state, session=None, delivered_wh=0.0, power_w=0.0,
                       status=EvStatus.DISCONNECTED)
    wanted_wh = max(0.0, session.energy_wh - delivered)
    power = spec.power_at(state.current_limit_a)
    if dt_s > 0:
        power = min(power, wanted_wh * SECONDS_PER_HOUR / dt_s)
    else:
        power = power if wanted_wh > 0 else 0.0
    delivered += power * dt_s / SECONDS_PER_HOUR
    status = EvStatus.CHARGING if power > 0 else EvStatus.CONNECTED
    return replace(state, session=session, delivered_wh=delivered, power_w=power, status=status)
