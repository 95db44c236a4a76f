"""What every device looks like to the rest of the node: readings in, setpoints out.

Real devices speak SunSpec Modbus TCP or MQTT (``p2pgrid.devices.sunspec``, ``p2pgrid.devices.mqtt``);
simulated ones step physics (``p2pgrid.devices.simulated``). All of them satisfy ``Device``:

* ``await device.read()`` returns one frozen reading (``p2pgrid.devices.readings``) stamped with
  the instant it describes (``t_ms``, Unix ms UTC) and a ``Quality``;
* controllable devices also have ``await device.apply(setpoint)``, which returns ``Applied``:
  what was asked, what the device will actually do, and why they differ (clipping is reported,
  never silent).

Kinds, qualities, setpoints, the sign convention and the errors are in ``p2pgrid.devices.base``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from p2pgrid.devices.base import Applied, DeviceKind, Setpoint
from p2pgrid.devices.readings import Reading


@runtime_checkable
class Device(Protocol):
    """Anything that can be read. ``kind`` tells which reading type ``read`` returns."""

    kind: DeviceKind

    async def read(self) -> Reading: ...


@runtime_checkable
class ControllableDevice(Device, Protocol):
    """A device that also obeys setpoints."""

    async def apply(self, setpoint: Setpoint) -> Applied: ...
