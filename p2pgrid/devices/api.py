"""The RPC's view of a node's devices (``LiveNodeApi``, ``p2pgrid.node.api``, uses it).

* **Telemetry** — the last good reading of each device of ``node.telemetry`` (the node's
  ``DeviceService``), in the API's signs: ``battery_w`` + charging (the device bus says +
  discharging), ``grid_w`` + import (the meter; without a meter, load + charging − PV), ``load_w``
  the load plus an EV charger if any. ``at_ms`` is the newest reading's instant; ``stale`` the
  devices the sampler reports stale. ``NotAvailable`` on a node that runs no device service;
  ``NoReadingYet`` (a ``DeviceError``, transient) while it starts or before any device answered.
"""

from __future__ import annotations

from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.readings import BatteryReading
from p2pgrid.devices.service import DeviceService
from p2pgrid.errors import DeviceError
from p2pgrid.rpc.api import Telemetry

__all__ = ["NoReadingYet", "telemetry_view"]


class NoReadingYet(DeviceError):
    """The node has devices, but none has answered yet (or the device service is starting)."""


def telemetry_view(devices: DeviceService, now_ms: int) -> Telemetry:
    """The last good reading of each device, in the API's signs (see the module docstring)."""
    readings = {kind: devices.reading(kind) for kind in DeviceKind}
    present = [r for r in readings.values() if r is not None]
    if not present:
        raise NoReadingYet("no device of this node has answered yet")

    def watts(kind: DeviceKind) -> int:
        reading = readings[kind]
        return round(reading.power_w) if reading is not None else 0

    battery = readings[DeviceKind.BATTERY]
    soc_wh = capacity_wh = 0
    if isinstance(battery, BatteryReading):
        capacity_wh = battery.capacity_wh
        soc_wh = round(battery.soc_pct * battery.capacity_wh / 100)
    pv_w = watts(DeviceKind.PV)
    load_w = watts(DeviceKind.LOAD) + watts(DeviceKind.EV)
    battery_w = -watts(DeviceKind.BATTERY)     # the device bus counts discharging as +
    grid_w = watts(DeviceKind.METER) if readings[DeviceKind.METER] is not None else load_w + battery_w - pv_w
    return Telemetry(max(r.t_ms for r in present), pv_w, load_w, battery_w, grid_w, soc_wh, capacity_wh,
                     tuple(sorted(devices.stale_devices(now_ms))))
