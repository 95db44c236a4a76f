"""The words every device module shares: device kinds, reading quality, setpoints, errors.

A device is anything that measures or moves power at a site: the grid meter, a PV inverter, a
battery, an EV charger, the household load. What one looks like to the rest of the node (the
``Device`` protocol: readings in, setpoints out) is ``p2pgrid.devices.device``; its readings are
``p2pgrid.devices.readings``. This module imports neither: both build on it.

Sign convention (as evcc and OpenEMS): powers are seen from the house bus. What feeds the bus is
positive — grid import, PV generation, battery discharge — and what the grid meter sees leaving
is negative (export). Loads (household, EV) are positive consumption. So at every instant::

    grid_w + pv_w + battery_w == load_w + ev_w

Errors (all ``DeviceError``; the sampler turns them into a BAD sample and keeps going)::

    DeviceError
    ├── DeviceUnreachable     cannot connect, connection lost, no answer in time
    ├── DeviceProtocolError   the device answered garbage (no SunSpec marker, bad model
    │                         length, undecodable payload, Modbus exception)
    ├── DeviceValueError      a value outside its physical range (SoC 140 %, NaN, negative
    │                         counter)
    └── SetpointRejected      the device cannot take that kind of setpoint
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from p2pgrid.errors import DeviceError


class DeviceUnreachable(DeviceError):
    """Cannot connect, the connection dropped, or the device did not answer in time."""


class DeviceProtocolError(DeviceError):
    """The device answered, but with something that does not parse as its protocol."""


class DeviceValueError(DeviceError):
    """A decoded value lies outside the physical range of its quantity."""


class SetpointRejected(DeviceError):
    """The device does not accept this kind of setpoint (or is not writable)."""


class Quality(enum.Enum):
    """How far a reading can be trusted.

    GOOD: read just now and within range. STALE: the value is old (the device has been silent for
    more than its allowed number of periods). BAD: the read failed or the value was rejected.
    """

    GOOD = "good"
    STALE = "stale"
    BAD = "bad"


class DeviceKind(enum.Enum):
    METER = "meter"
    PV = "pv"
    BATTERY = "battery"
    EV = "ev"
    LOAD = "load"


@dataclass(frozen=True)
class BatterySetpoint:
    """Battery AC power: ``power_w`` > 0 discharges, < 0 charges; ``None`` hands control back
    to the device's own mode (self-consumption)."""

    power_w: float | None


@dataclass(frozen=True)
class PvLimit:
    """Curtail the PV inverter's AC output to at most ``limit_w``; ``None`` lifts the limit."""

    limit_w: float | None


@dataclass(frozen=True)
class EvCurrentLimit:
    """Per-phase charging current limit in A; 0 pauses charging."""

    current_a: float


Setpoint = BatterySetpoint | PvLimit | EvCurrentLimit


@dataclass(frozen=True)
class Applied:
    """The answer to a setpoint: what was asked, what the device will do, and why they differ.

    ``clipped`` is True exactly when ``applied != requested``; ``reason`` names the limit that
    bit (e.g. ``"max charge power"``, ``"battery full"``), empty when not clipped.
    """

    requested: Setpoint
    applied: Setpoint
    reason: str = ""

    @property
    def clipped(self) -> bool:
        return self.applied != self.requested

