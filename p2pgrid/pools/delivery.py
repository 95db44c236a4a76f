"""A pool host delivers what its pools sold: the battery discharges it onto the grid.

A pool's energy reserve is the host's battery (``pools.entries``), and settlement compares
the host's metered export with everything its pools sold in the slot (``settlement.entries``:
swaps settle like trades). Left in self-consumption mode, the battery only covers the site's own
load, so pool sales would settle as shortfall at the retail price. ``PoolDeliveryService`` closes
the loop, like an ESS controller with a grid setpoint (Victron's ``AcPowerSetPoint``, OpenEMS's
grid-optimised charge): during a slot in which the host's pools sold a net ``E`` Wh, it steers the
battery so the grid meter reads an export of ``E × 3600 / slot length`` W on top of a zero net
load. When the slot's pools sold nothing net, the battery is handed back to its own mode.

Control law (``battery_setpoint_w``, pure): with the battery at ``b`` W (discharge +) and the
grid meter at ``g`` W (import +), the site's net load is ``g + b``; to export ``x`` W the battery
must give ``g + b + x``. The device clips it to its power and state-of-charge limits and reports
the clip. A node whose battery is planned by the agent strategy (``[agent] strategy = "agent"``)
does not run this service: the agent's setpoints own the battery there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.devices.base import BatterySetpoint, DeviceError, DeviceKind, SetpointRejected
from p2pgrid.devices.readings import BatteryReading, MeterReading
from p2pgrid.devices.service import WithDevices
from p2pgrid.service import WithLedger
from p2pgrid.settlement.entries import swap_records
from p2pgrid.wire import Side

if TYPE_CHECKING:
    from p2pgrid.ledger.chain import LedgerState

log = logging.getLogger(__name__)

SECONDS_PER_HOUR = 3600


def pool_net_sold_wh(state: LedgerState, host: bytes, slot: int) -> int:
    """Wh ``host``'s pools sold in ``slot`` minus Wh they bought (its certified swaps)."""
    net = 0
    for _, record in swap_records(state):
        if record.host == host and record.slot == slot:
            net += record.energy_wh if record.side is Side.BUY else -record.energy_wh
    return net


def export_target_w(net_sold_wh: int, slot_length_s: int) -> float:
    """The constant export power that delivers ``net_sold_wh`` over one slot (negative: import)."""
    return net_sold_wh * SECONDS_PER_HOUR / slot_length_s


def battery_setpoint_w(battery_w: float, grid_w: float, export_w: float) -> float:
    """Battery power (discharge +) that makes the grid meter read an export of ``export_w``."""
    return grid_w + battery_w + export_w


class DeliveryHost(WithLedger, WithDevices, Protocol):
    """What pool delivery uses of the node: the ledger's swaps and the devices' battery and meter."""


class PoolDeliveryService:
    name = "pool-delivery"

    def __init__(self, period_s: float | None = None) -> None:
        self.period_s = period_s
        self.steering = False
        self.setpoints_sent = 0
        self.clipped = 0

    async def run(self, node: DeliveryHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None:
            raise RuntimeError("pool delivery starts after the ledger service")
        task_status.started()
        period_s = self.period_s if self.period_s is not None else node.config.devices.sample_period_ms / 1000
        while True:
            await trio.sleep(period_s)
            devices = getattr(node, "telemetry", None)
            if devices is None:
                continue
            try:
                await self.step(node, devices)
            except (SetpointRejected, DeviceError) as exc:
                log.warning("pool delivery: battery setpoint refused: %s", exc)

    async def step(self, node: DeliveryHost, devices: Any) -> None:
        """One control step: steer the battery toward this slot's pool deliveries, or let go."""
        ledger = node.ledger
        if ledger is None:
            return
        rules = node.config.zone.slot_rules
        slot = rules.slot_of(node.clock.now_ms())
        net_sold = pool_net_sold_wh(ledger.state, node.key.public_key, slot)
        if net_sold == 0:
            if self.steering:
                await devices.apply(DeviceKind.BATTERY, BatterySetpoint(None))
                self.steering = False
            return
        battery, meter = devices.reading(DeviceKind.BATTERY), devices.reading(DeviceKind.METER)
        if not isinstance(battery, BatteryReading) or not isinstance(meter, MeterReading):
            return   # no fresh readings yet: steering blind could import what it means to export
        target = battery_setpoint_w(battery.power_w, meter.power_w, export_target_w(net_sold, rules.length_s))
        applied = await devices.apply(DeviceKind.BATTERY, BatterySetpoint(target))
        self.steering = True
        self.setpoints_sent += 1
        if applied.clipped:
            self.clipped += 1
