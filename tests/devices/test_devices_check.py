"""``p2pgrid devices check``: every configured device read once, against a real pymodbus SunSpec
server and a real mosquitto on 127.0.0.1 — devices that answer, a unit that is down, garbage —
and the command itself by subprocess (its table and exit code)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import trio
from rich.console import Console
from test_real_device_set import (COMMON, LOOPBACK, NAMEPLATE, SITE_VALUES, STORAGE, battery, free_port, inverter,
                                  meter, publish, sampled_units, wait_fresh)

from p2pgrid.cli.devices import check_device_set, render_device_checks, simulated_notes
from p2pgrid.config import build_config
from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.real_set import real_device_set
from p2pgrid.net.testing import wait_until
from p2pgrid.node.status import device_lines

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 3.0


def sunspec_toml(tmp_path: Path, inverter_port: int, meter_port: int) -> Path:
    path = tmp_path / "real.toml"
    path.write_text(f"""
[node]
data_dir = "n"
[devices]
mode = "real"
[devices.pv]
kwp = 8.0
[devices.battery]
capacity_wh = 10000
max_charge_w = 5000
max_discharge_w = 4000
[devices.adapter]
kind = "sunspec"
host = "{LOOPBACK}"
port = {inverter_port}
devices = ["pv", "battery"]
timeout_ms = 1000
poll_interval_ms = 100
[[devices.adapter.units]]
host = "{LOOPBACK}"
port = {meter_port}
devices = ["meter"]
""")
    return path


def mqtt_config(tmp_path: Path, port: int):
    raw = {"node": {"data_dir": str(tmp_path / "n")},
           "devices": {"mode": "real", "pv": {"kwp": 6.0},
                       "battery": {"capacity_wh": 9600, "max_charge_w": 4000, "max_discharge_w": 3000},
                       "adapter": {"kind": "mqtt", "host": LOOPBACK, "port": port, "topic_prefix": "site",
                                   "topics": {"battery.soc_pct": "bms/soc"}, "poll_interval_ms": 50,
                                   "scales": {"meter.import_wh": 1000.0, "meter.export_wh": 1000.0}}}}
    return build_config(raw, base_dir=tmp_path)


async def start_units(sunspec_server):
    inverter_unit = sunspec_server([COMMON, inverter(w=4321.0), NAMEPLATE, battery(soc=55.5, w=-1500.0), STORAGE])
    meter_unit = sunspec_server([COMMON, meter(-1234.4, 1_000_000, 250_000)])
    await inverter_unit.start()
    await meter_unit.start()
    return inverter_unit, meter_unit


async def cli(*argv: object) -> trio.CompletedProcess:   # type: ignore[name-defined]
    return await trio.run_process([sys.executable, "-m", "p2pgrid.cli.main", *map(str, argv)], cwd=ROOT,
                                  capture_stdout=True, capture_stderr=True, check=False,
                                  env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})


def rendered(checks, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_device_checks(checks, "test"))
    return console.file.getvalue()  # type: ignore[attr-defined]


async def test_sunspec_units_that_answer_are_shown_with_units_and_signs(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    config = build_config({"node": {"data_dir": str(tmp_path / "n")}, "devices": {
        "mode": "real", "pv": {"kwp": 8.0},
        "battery": {"capacity_wh": 10000, "max_charge_w": 5000, "max_discharge_w": 4000},
        "adapter": {"kind": "sunspec", "host": LOOPBACK, "port": inverter_unit.port, "devices": ["pv", "battery"],
                    "units": [{"host": LOOPBACK, "port": meter_unit.port, "devices": ["meter"]}]}}},
        base_dir=tmp_path)
    checks = await check_device_set(real_device_set(config, lambda: 1_800_000_000_000), TIMEOUT_S)
    assert [(c.name, c.ok) for c in checks] == [("meter", True), ("pv", True), ("battery", True), ("load", True)]
    assert checks[-1].kind is DeviceKind.LOAD
    text = rendered(checks)
    assert "-1,234 W (exporting)" in text and "import 1,000.0 kWh, export 250.0 kWh" in text
    assert "4,321 W generating" in text and "rated 8,000 W" in text
    assert "+1,500 W (charging)" not in text and "-1,500 W (charging)" in text and "SoC 55.5 %" in text
    assert "1,587 W consuming" in text                    # -1234.4 + 4321 - 1500
    assert "grid + import / − export" in text and "battery + discharging / − charging" in text


async def test_a_unit_that_is_down_fails_its_devices_by_name_and_the_rest_answer(tmp_path, sunspec_server):
    inverter_unit, _ = await start_units(sunspec_server)
    config = build_config({"node": {"data_dir": str(tmp_path / "n")}, "devices": {
        "mode": "real", "adapter": {"kind": "sunspec", "host": LOOPBACK, "port": inverter_unit.port,
                                    "devices": ["pv"], "timeout_ms": 500, "poll_interval_ms": 100,
                                    "units": [{"host": LOOPBACK, "port": free_port(), "devices": ["meter"]}]}}},
        base_dir=tmp_path)
    checks = {c.name: c for c in await check_device_set(real_device_set(config, lambda: 0), 1.5)}
    assert checks["pv"].ok
    assert not checks["meter"].ok and "DeviceUnreachable" in checks["meter"].problem
    assert not checks["load"].ok and "meter" in checks["load"].problem   # derived from the missing meter
    assert "FAILED" in rendered(list(checks.values()))


async def test_a_unit_that_answers_garbage_fails_with_a_protocol_error(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    meter_unit.set_raw([0xBEEF] * 120)                    # no SunSpec marker
    config = build_config({"node": {"data_dir": str(tmp_path / "n")}, "devices": {
        "mode": "real", "adapter": {"kind": "sunspec", "host": LOOPBACK, "port": inverter_unit.port,
                                    "devices": ["pv"], "timeout_ms": 500, "poll_interval_ms": 100,
                                    "units": [{"host": LOOPBACK, "port": meter_unit.port, "devices": ["meter"]}]}}},
        base_dir=tmp_path)
    checks = {c.name: c for c in await check_device_set(real_device_set(config, lambda: 0), 1.5)}
    assert checks["pv"].ok and not checks["meter"].ok
    assert "not a SunSpec device" in checks["meter"].problem


async def test_mqtt_topics_are_read_once_the_broker_delivered_them(tmp_path, mosquitto):
    await publish(mosquitto.port, SITE_VALUES)            # retained: delivered on subscription
    checks = await check_device_set(real_device_set(mqtt_config(tmp_path, mosquitto.port), lambda: 0), TIMEOUT_S)
    assert all(c.ok for c in checks), [c.problem for c in checks]
    text = rendered(checks)
    assert "-800 W (exporting)" in text and "2,000 W generating" in text and "SoC 64.5 %" in text


async def test_mqtt_garbage_and_a_missing_broker_fail_with_their_reason(tmp_path, mosquitto):
    await publish(mosquitto.port, [*SITE_VALUES[1:], ("site/meter/power_w", "not a number")])
    checks = {c.name: c for c in await check_device_set(
        real_device_set(mqtt_config(tmp_path, mosquitto.port), lambda: 0), 1.5)}
    assert checks["pv"].ok and not checks["meter"].ok
    assert "site/meter/power_w" in checks["meter"].problem
    await mosquitto.stop()
    down = await check_device_set(real_device_set(mqtt_config(tmp_path, mosquitto.port), lambda: 0), 1.0)
    assert not any(c.ok for c in down)
    assert all("not connected" in c.problem or "no reading yet" in c.problem for c in down), down


async def test_the_command_exits_0_when_all_answer_and_1_naming_the_failed_device(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    path = sunspec_toml(tmp_path, inverter_unit.port, meter_unit.port)
    result = await cli("devices", "check", "--config", path, "--timeout", TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "all 4 devices answered" in out and "(exporting)" in out
    await meter_unit.stop()
    result = await cli("devices", "check", "--config", path, "--timeout", 1.5)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("p2pgrid: error: 2 of 4 devices failed: meter (DeviceUnreachable")
    assert "FAILED" in result.stdout.decode()


def test_simulated_pv_without_a_series_is_said_to_produce_nothing(tmp_path):
    config = build_config({"node": {"data_dir": str(tmp_path)}, "devices": {"pv": {"kwp": 8}}}, base_dir=tmp_path)
    assert any("8 kWp has no devices.series_file: it produces 0 W" in n for n in simulated_notes(config))
    series = build_config({"node": {"data_dir": str(tmp_path)},
                           "devices": {"pv": {"kwp": 8}, "series_file": "energy.json"}}, base_dir=tmp_path)
    assert simulated_notes(series) == []


async def test_the_status_shows_a_unit_that_went_away_as_stale_with_its_last_value(tmp_path, sunspec_server):
    async with sampled_units(sunspec_server, tmp_path) as units:
        await wait_fresh(units.service, units.clock)
        lines = {line.name: line for line in device_lines(units.service, units.clock.now_ms())}
        assert (lines["meter"].power_w, lines["meter"].stale) == (-1234, False)
        assert lines["battery"].soc_pct == pytest.approx(55.5) and lines["battery"].capacity_wh == 10_000
        await units.meter_unit.stop()
        with trio.fail_after(15):
            await wait_until(lambda: "DeviceUnreachable" in units.service.last["meter"].error, 0.005)
        went_away_ms = units.clock.now_ms()
        units.clock.advance(5 * 60_000)
        await wait_fresh(units.service, units.clock, ("pv", "battery"))
        now = units.clock.now_ms()
        lines = {line.name: line for line in device_lines(units.service, now)}
        # The last good value and when it was read, not the failed sample's nothing (shown as 0 W before).
        assert (lines["meter"].power_w, lines["meter"].stale) == (-1234, True)
        assert lines["meter"].at_ms <= went_away_ms and not lines["pv"].stale
