"""``p2pgrid devices check --config FILE``: read every configured device once, before any zone exists.

What an installer runs first: the devices of ``[devices]`` are built exactly as the node builds
them (``p2pgrid.devices.service.device_set_for``: the SunSpec units or MQTT topics of
``[devices.adapter]``, or the simulated site), their links are opened, and each device is read
until it gives one good reading or ``--timeout`` seconds have passed since the check began (an
MQTT broker delivers its retained values a moment after the connection, a Modbus unit may refuse
the first connection). No key, zone, ledger or network is touched.

The table names every device with its values in words and units, in the signs of the device bus
(``p2pgrid.devices.base``): grid import +, export −; PV generation +; battery discharging +,
charging −. A device that gave no good reading shows why (unreachable, garbage, out of range);
then the command exits 1 with one line naming the failed devices. The derived household load
(real hardware) is read last, from the others' readings.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass

import trio
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from p2pgrid.cli.common import add_config_args, config_from_args, configure_logging
from p2pgrid.clock import clock_from_config
from p2pgrid.config import NodeConfig
from p2pgrid.devices.base import DeviceKind, Quality
from p2pgrid.devices.device_set import DeviceSet
from p2pgrid.devices.readings import BatteryReading, EvReading, LoadReading, MeterReading, PvReading, Reading
from p2pgrid.errors import DeviceError

DEFAULT_TIMEOUT_S = 10.0
RETRY_S = 0.1
SIGN_LEGEND = ("signs (device bus): grid + import / − export · PV + generating · "
               "battery + discharging / − charging · load + consuming")


@dataclass(frozen=True)
class DeviceCheck:
    """One device's outcome: its good reading, or why it gave none."""

    name: str
    kind: DeviceKind
    reading: Reading | None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.reading is not None


async def check_device_set(device_set: DeviceSet, timeout_s: float) -> list[DeviceCheck]:
    """Read every device of ``device_set`` once (see the module docstring), links opened here."""
    deadline = trio.current_time() + timeout_s
    # The derived load is computed from the others' last readings: read it after them.
    names = sorted(device_set.devices, key=lambda n: device_set.devices[n].kind is DeviceKind.LOAD)
    async with device_set.open_links():
        return [await _read_until_good(name, device_set.devices[name], deadline) for name in names]


async def _read_until_good(name: str, device, deadline: float) -> DeviceCheck:  # type: ignore[no-untyped-def]
    problem = "no answer before the timeout"
    while True:
        remaining = deadline - trio.current_time()
        # Every device gets one attempt even when an earlier one used up the time.
        with trio.move_on_after(max(remaining, RETRY_S * 10)):
            try:
                reading = await device.read()
            except DeviceError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if reading.quality is Quality.GOOD:
                    return DeviceCheck(name, device.kind, reading)
                problem = f"reading is {reading.quality.value}"
        if trio.current_time() + RETRY_S >= deadline:
            return DeviceCheck(name, device.kind, None, problem)
        await trio.sleep(RETRY_S)


# --- rendering -------------------------------------------------------------------------------

def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.1f} kWh"


def _flow(power_w: float, positive: str, negative: str, *, idle: str = "idle") -> str:
    watts = round(power_w)
    if watts == 0:
        return f"0 W ({idle})"
    return f"{watts:+,d} W ({positive if watts > 0 else negative})"


def describe_reading(reading: Reading) -> str:
    """A reading in words, units and the device bus's signs."""
    if isinstance(reading, MeterReading):
        return (f"{_flow(reading.power_w, 'importing', 'exporting', idle='balanced')} · "
                f"counters import {_kwh(reading.import_wh)}, export {_kwh(reading.export_wh)}")
    if isinstance(reading, PvReading):
        limit = f" · limited to {round(reading.limit_w):,d} W" if reading.limit_w is not None else ""
        return (f"{round(reading.power_w):,d} W generating · rated {round(reading.rated_w):,d} W · "
                f"lifetime {_kwh(reading.lifetime_wh)}{limit}")
    if isinstance(reading, BatteryReading):
        return (f"{_flow(reading.power_w, 'discharging', 'charging')} · SoC {reading.soc_pct:.1f} % "
                f"of {_kwh(reading.capacity_wh)} · mode {reading.mode.value}")
    if isinstance(reading, EvReading):
        return f"{round(reading.power_w):,d} W charging an EV · {reading.status.value} · session {reading.session_wh} Wh"
    if isinstance(reading, LoadReading):
        return f"{round(reading.power_w):,d} W consuming"
    return str(reading)


def render_device_checks(checks: list[DeviceCheck], source: str) -> RenderableType:
    table = Table(title=f"devices: {source}", expand=False)
    table.add_column("device")
    table.add_column("result")
    table.add_column("reading")
    for check in checks:
        if check.reading is not None:
            table.add_row(check.name, "ok", Text(describe_reading(check.reading)))
        else:   # Text, not markup: an error may hold "[...]"
            table.add_row(check.name, Text("FAILED", style="bold red"), Text(check.problem))
    notes: list[RenderableType] = [table, Text(SIGN_LEGEND)]
    return Group(*notes)


def device_source(config: NodeConfig) -> str:
    """What the devices are, in a few words (the table's title)."""
    adapter = config.devices.adapter
    if config.devices.mode != "real" or adapter is None:
        return "simulated site"
    if adapter.kind == "sunspec":
        units = [f"{adapter.host}:{adapter.port or 502}", *(f"{u.host}:{u.port or 502}" for u in adapter.units)]
        return f"SunSpec Modbus TCP {', '.join(units)}"
    return f"MQTT broker {adapter.host}:{adapter.port or 1883}"


def simulated_notes(config: NodeConfig) -> list[str]:
    """What a simulated site will not do as configured (said, not silently zero)."""
    devices = config.devices
    if devices.mode != "simulated":
        return []
    notes = []
    if devices.pv is not None and devices.pv.kwp > 0 and not devices.series_file:
        notes.append(f"simulated PV of {devices.pv.kwp:g} kWp has no devices.series_file: it produces 0 W")
    if not devices.series_file:
        notes.append(f"simulated load is the constant devices.base_load_w = {devices.base_load_w} W")
    return notes


# --- command ---------------------------------------------------------------------------------

def do_devices_check(args: argparse.Namespace, console: Console | None = None,
                     build: Callable[[NodeConfig, Callable[[], int]], DeviceSet] | None = None) -> int:
    """Read every configured device once; exit 1 naming the devices that failed."""
    from p2pgrid.devices.service import device_set_for

    config = config_from_args(args)
    configure_logging("error")     # the table says what each device did; warnings would repeat it
    clock = clock_from_config(config.clock.mode, config.clock.sim_epoch_ms, config.clock.speed,
                              config.clock.anchor_wall_ms)
    device_set = (build or device_set_for)(config, clock.now_ms)
    if not device_set.devices:
        raise DeviceError("no devices are configured ([devices])")
    timeout_s = args.timeout if math.isfinite(args.timeout) and args.timeout > 0 else DEFAULT_TIMEOUT_S
    checks = trio.run(check_device_set, device_set, timeout_s)
    console = console or Console()
    console.print(render_device_checks(checks, device_source(config)))
    for note in simulated_notes(config):
        console.print(f"note: {note}")
    failed = [c for c in checks if not c.ok]
    if failed:
        raise DeviceError(f"{len(failed)} of {len(checks)} devices failed: "
                          + "; ".join(f"{c.name} ({c.problem})" for c in failed))
    console.print(f"all {len(checks)} devices answered")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    devices = subparsers.add_parser("devices", help="the node's devices, without running the node")
    commands = devices.add_subparsers(dest="devices_command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="read every configured device once (no zone, ledger or network)")
    add_config_args(check, config_required=True)
    check.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                       help=f"seconds to wait for good readings (default {DEFAULT_TIMEOUT_S:g})")
    check.set_defaults(func=do_devices_check)
