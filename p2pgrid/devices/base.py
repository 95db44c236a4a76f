"""What every device looks like to the rest of the node: readings in, setpoints out.

A device is anything that measures or moves power at a site: the grid meter, a PV inverter, a
battery, an EV charger, the household load. Real ones speak SunSpec Modbus TCP or MQTT
(``p2pgrid.devices.sunspec``, ``p2pgrid.devices.mqtt``); simulated ones step physics
(``p2pgrid.devices.simulated``). All of them satisfy ``Device``:

* ``await device.read()`` returns one frozen reading (``p2pgrid.devices.readings``) stamped with
  the instant it describes (``t_ms``, Unix ms UTC) and a ``Quality``;
* controllable devices also have ``await device.apply(setpoint)``, which returns ``Applied``:
  what was asked, what the device will actually do, and why they differ (clipping is reported,
  never silent).

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
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from p2pgrid.errors import DeviceError

if TYPE_CHECKING:
    from p2pgrid.devices.readings import Reading


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


@runtime_checkable
class Device(Protocol):
    """Anything that can be read. ``kind`` tells which reading type ``read`` returns."""

    kind: DeviceKind

    async def read(self) -> Reading: ...


@runtime_checkable
class ControllableDevice(Device, Protocol):
    """A device that also obeys setpoints."""

    async def apply(self, setpoint: Setpoint) -> Applied: ...
