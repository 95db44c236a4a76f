"""``[devices] mode = "real"``: the device set built from config, sampled like the node does,
against a real pymodbus SunSpec server and a real mosquitto on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config, load_config
from p2pgrid.devices.aio import call_aio
from p2pgrid.devices.base import BatterySetpoint, DeviceKind, DeviceUnreachable, PvLimit, Quality, SetpointRejected
from p2pgrid.devices.readings import BatteryMode, BatteryReading, MeterReading, PvReading
from p2pgrid.devices.real_set import DerivedLoad, RealDeviceSet, open_device_links, real_device_set
from p2pgrid.devices.service import DeviceService
from p2pgrid.devices.sunspec_registers import SunSpecModelError, model_addresses, model_def
from p2pgrid.errors import ConfigError
from p2pgrid.identity import NodeKey
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import wait_until
from p2pgrid.node.app import Node

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


EXAMPLES = Path(__file__).resolve().parents[2] / "node-configs"
#: Sampling period in real seconds (also each read's timeout): short, so tests run fast.
PERIOD_S = 0.05
SLOT_MS = 900_000
START_MS = 1_800_000_000_000 - 1_800_000_000_000 % SLOT_MS

COMMON = (1, {"Mn": "p2pgrid", "Md": "sim", "SN": "0001"})
NAMEPLATE = (120, {"DERTyp": 4, "WRtg": 8000, "WRtg_SF": 0})
STORAGE = (124, {"WChaMax": 5_000, "WChaMax_SF": 0, "StorCtl_Mod": 0, "InWRte": 0, "OutWRte": 0,
                 "InOutWRte_SF": -1, "WChaDisChaGra_SF": 0, "MinRsvPct": 10, "MinRsvPct_SF": 0})


def meter(w: float, imp: int, exp: int) -> tuple[int, dict]:
    # Scale factors as a real meter uses them: W in 0.1 W, energies in 10 Wh.
    return (203, {"W": w, "WphA": w / 2, "WphB": w / 4, "WphC": w / 4, "W_SF": -1,
                  "TotWhImp": imp, "TotWhExp": exp, "TotWh_SF": 1, "Hz": 50.0, "Hz_SF": -2})


def inverter(w: float = 4321.0, wh: int = 9_876_500) -> tuple[int, dict]:
    return (103, {"W": w, "W_SF": 0, "WH": wh, "WH_SF": 2})


def battery(soc: float = 55.5, w: float = -1500.0) -> tuple[int, dict]:
    return (802, {"WHRtg": 10_000, "WHRtg_SF": 0, "WChaRteMax": 5_000, "WDisChaRteMax": 4_000,
                  "WChaDisChaMax_SF": 0, "SoCMax": 100, "SoCMin": 5, "SoCRsvMin": 10,
                  "SoC": soc, "SoC_SF": -1, "W": w, "W_SF": 0, "AHRtg": 200, "AHRtg_SF": 0,
                  "V": 51.2, "V_SF": -1, "A": -29.3, "A_SF": -1, "CellV_SF": -3, "AMax_SF": 0})


def meter_models(minute: int) -> list:
    """A meter that counts 1500 Wh import and 150 Wh export in the middle of the first slot.

    The counters change mid-slot, never at its edges: a read in flight while the test changes the
    registers and the clock is stamped with the new time but has the old counters, which would
    move energy across a slot edge if the counters changed there."""
    imported = minute >= 8
    return [COMMON, meter(-1234.4, 1_000_000 + 1500 * imported, 250_000 + 150 * imported)]


def real_config(tmp_path: Path, **adapter):
    raw = {"node": {"data_dir": str(tmp_path / "n")}, "agent": {"strategy": "agent"},
           "devices": {"mode": "real", "pv": {"kwp": 6.0},
                       "battery": {"capacity_wh": 9600, "max_charge_w": 4000, "max_discharge_w": 3000},
                       "adapter": adapter}}
    return build_config(raw, base_dir=tmp_path)


def sunspec_config(tmp_path: Path, inverter_port: int, meter_port: int, **extra):
    return real_config(tmp_path, kind="sunspec", host=LOOPBACK, port=inverter_port, devices=["pv", "battery"],
                       units=[{"host": LOOPBACK, "port": meter_port, "devices": ["meter"]}],
                       timeout_ms=1000, poll_interval_ms=50, **extra)


class Host:
    """What DeviceService needs of a node."""

    def __init__(self, config, clock) -> None:
        self.config, self.clock, self.telemetry = config, clock, None


def fresh(service: DeviceService, clock: ManualClock, names) -> bool:
    return all(name in service.last and service.last[name].quality is Quality.GOOD
               and service.last[name].t_ms == clock.now_ms() for name in names)


async def wait_fresh(service: DeviceService, clock: ManualClock, names=("meter", "pv", "battery", "load")) -> None:
    with trio.fail_after(15):
        await wait_until(lambda: fresh(service, clock, names), 0.005)


# --- config -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["household-real-sunspec", "household-real-victron"])
def test_example_real_configs_load_and_build_a_device_set(name):
    config = load_config(EXAMPLES / f"{name}.toml")
    assert config.devices.mode == "real" and config.agent.strategy == "agent"
    device_set = real_device_set(config, lambda: START_MS)
    assert {n: d.kind for n, d in device_set.devices.items()} == {
        "meter": DeviceKind.METER, "pv": DeviceKind.PV, "battery": DeviceKind.BATTERY, "load": DeviceKind.LOAD}


def test_sunspec_example_reads_the_meter_from_its_own_unit():
    adapter = load_config(EXAMPLES / "household-real-sunspec.toml").devices.adapter
    assert adapter.devices == ("pv", "battery")
    assert [(u.host, u.unit_id, u.devices) for u in adapter.units] == [("192.168.1.51", 240, ("meter",))]
    device_set = real_device_set(load_config(EXAMPLES / "household-real-sunspec.toml"), lambda: 0)
    assert [link.name for link in device_set.links] == ["192.168.1.50:502 unit 1", "192.168.1.51:502 unit 240"]


def test_victron_example_subscribes_to_the_gx_topics_and_writes_the_ess_setpoint():
    device_set = real_device_set(load_config(EXAMPLES / "household-real-victron.toml"), lambda: 0)
    site = device_set.mqtt_site
    assert site is not None and site.config.keepalive_topic == "R/c0619ab1/keepalive"
    assert "N/c0619ab1/grid/30/Ac/Energy/Forward" in site.config.topics
    battery_map = site.config.devices["battery"]
    assert battery_map.setpoint.topic == "W/c0619ab1/vebus/276/Hub4/L1/AcPowerSetpoint"
    assert battery_map.constants["capacity_wh"] == 9600           # from [devices.battery]
    assert site.config.devices["pv"].constants["rated_w"] == 6000  # from [devices.pv] kwp


def test_port_zero_means_the_protocol_default(tmp_path):
    assert real_config(tmp_path, kind="sunspec").devices.adapter.effective_port == 502
    assert real_config(tmp_path, kind="mqtt").devices.adapter.effective_port == 1883
    assert real_config(tmp_path, kind="mqtt", port=1884).devices.adapter.effective_port == 1884


@pytest.mark.parametrize("adapter, message", [
    ({"bogus": 1}, r"devices\.adapter\.bogus: unknown key"),
    ({"devices": []}, r"devices\.adapter\.devices: name at least one"),
    ({"devices": ["meter", "heat pump"]}, r"devices\.adapter\.devices\[1\]: 'heat pump' is not one of"),
    ({"units": [{"host": "h", "devices": ["meter"]}]}, r"more than one meter"),
    ({"units": [{"devices": ["pv"]}]}, r"devices\.adapter\.units\[0\]\.host: required"),
    ({"units": [{"host": "h", "bogus": 1}]}, r"devices\.adapter\.units\[0\]\.bogus: unknown key"),
    ({"kind": "mqtt", "units": [{"host": "h", "devices": ["pv"]}]}, r"only SunSpec has Modbus units"),
    ({"kind": "mqtt", "topic_map": "victron"}, r"devices\.adapter\.portal_id: required"),
    ({"topic_map": "homeassistant"}, r"devices\.adapter\.topic_map"),
    ({"victron_instances": {"heater": 3}}, r"victron_instances\.heater: unknown service"),
    ({"topics": {"soc": "x"}}, r"devices\.adapter\.topics\.soc: expected '<device>\.<field>'"),
    ({"scales": {"ev.power_w": 2.0}}, r"devices\.adapter\.scales\.ev\.power_w"),
    ({"port": 70000}, r"devices\.adapter\.port: 70000 is above"),
])
def test_invalid_adapter_sections_are_refused_by_name(tmp_path, adapter, message):
    with pytest.raises(ConfigError, match=message):
        real_config(tmp_path, **adapter)


@pytest.mark.parametrize("adapter, message", [
    ({"kind": "mqtt", "topics": {"battery.temperature": "t"}}, r"unknown fields \['temperature'\]"),
    ({"kind": "mqtt", "scales": {"meter.l1_w": 2.0}}, r"no topic carries meter\.l1_w"),
])
def test_mqtt_maps_that_cannot_be_built_are_refused_when_the_set_is_built(tmp_path, adapter, message):
    config = real_config(tmp_path, **adapter)
    with pytest.raises(ConfigError, match=message):
        real_device_set(config, lambda: 0)


def test_mqtt_battery_without_ratings_is_refused(tmp_path):
    raw = {"node": {"data_dir": "n"}, "devices": {"mode": "real", "adapter": {
        "kind": "mqtt", "topic_map": "victron", "portal_id": "abc", "devices": ["battery"]}}}
    with pytest.raises(ConfigError, match=r"devices\.battery"):
        real_device_set(build_config(raw, base_dir=tmp_path), lambda: 0)
    raw["devices"]["adapter"].update(topic_map="generic")
    with pytest.raises(ConfigError, match=r"capacity_wh"):
        real_device_set(build_config(raw, base_dir=tmp_path), lambda: 0)


def test_mqtt_overrides_replace_a_topic_and_its_scale(tmp_path):
    config = real_config(tmp_path, kind="mqtt", topic_prefix="home/", topics={"battery.soc_pct": "bms/soc",
                         "battery.capacity_wh": "bms/capacity", "battery.setpoint": "ess/set"},
                         scales={"meter.import_wh": 1000.0, "battery.setpoint": -1.0})
    maps = real_device_set(config, lambda: 0).mqtt_site.config.devices
    assert maps["meter"].fields["import_wh"].topic == "home/meter/import_wh"
    assert maps["meter"].fields["import_wh"].scale == 1000.0
    assert maps["battery"].fields["soc_pct"].topic == "bms/soc"
    assert "capacity_wh" not in maps["battery"].constants    # now read from its topic
    assert (maps["battery"].setpoint.topic, maps["battery"].setpoint.scale) == ("ess/set", -1.0)
    read_only = real_config(tmp_path, kind="mqtt", battery_control=False)
    assert real_device_set(read_only, lambda: 0).mqtt_site.config.devices["battery"].setpoint is None


# --- SunSpec, sampled like the node does --------------------------------------------------------

async def start_units(sunspec_server, battery_models=(battery(), STORAGE)):
    inverter_unit = sunspec_server([COMMON, inverter(), NAMEPLATE, *battery_models])
    meter_unit = sunspec_server(meter_models(0))
    await inverter_unit.start()
    await meter_unit.start()
    return inverter_unit, meter_unit


async def test_sunspec_units_are_sampled_with_signs_scale_factors_and_slot_energies(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    clock = ManualClock(START_MS)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    device_set = real_device_set(config, clock.now_ms)
    service = DeviceService(device_set, period_s=PERIOD_S)
    host = Host(config, clock)
    async with open_device_links(device_set), trio.open_nursery() as nursery:
        await nursery.start(service.run, host)
        assert host.telemetry is service
        for minute in range(16):                       # one slot, sampled every market minute
            meter_unit.set_models(meter_models(minute))
            clock.set(START_MS + minute * 60_000)
            await wait_fresh(service, clock)
        grid, pv, bat, load = (service.last[n].reading for n in ("meter", "pv", "battery", "load"))
        assert grid.power_w == pytest.approx(-1234.4)             # exporting; W_SF = -1
        assert grid.phase_power_w == pytest.approx((-617.2, -308.6, -308.6))
        assert (grid.import_wh, grid.export_wh) == (1_001_500, 250_150)   # counters read at TotWh_SF = 1
        assert (pv.power_w, pv.lifetime_wh, pv.rated_w) == (4321, 9_876_500, 8000)   # rating from model 120
        assert bat.power_w == -1500 and bat.soc_pct == pytest.approx(55.5)   # charging; SoC_SF = -1
        assert load.power_w == pytest.approx(-1234.4 + 4321 - 1500)         # grid + pv + battery
        with trio.fail_after(15):
            await wait_until(lambda: len(device_set.discovered) == 2, 0.005)
        assert device_set.discovered == {
            f"{LOOPBACK}:{inverter_unit.port} unit 1": {DeviceKind.PV, DeviceKind.BATTERY},
            f"{LOOPBACK}:{meter_unit.port} unit 1": {DeviceKind.METER}}
        slot = {s.slot: s for s in service.completed_slots()}[START_MS // 1000]
        assert slot.complete
        assert (slot.import_wh, slot.export_wh) == (1500, 150)
        assert slot.pv_wh == pytest.approx(4321 / 4) and slot.load_wh == pytest.approx(1586.6 / 4)
        nursery.cancel_scope.cancel()


@dataclass
class SampledUnits:
    inverter_unit: Any
    meter_unit: Any
    clock: ManualClock
    device_set: RealDeviceSet
    service: DeviceService


@asynccontextmanager
async def sampled_units(sunspec_server, tmp_path: Path, period_s: float = PERIOD_S) -> AsyncIterator[SampledUnits]:
    """Two SunSpec units (PV + battery, meter) sampled by a ``DeviceService`` for the block."""
    inverter_unit, meter_unit = await start_units(sunspec_server)
    clock = ManualClock(START_MS)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    device_set = real_device_set(config, clock.now_ms)
    service = DeviceService(device_set, period_s=period_s)
    async with open_device_links(device_set), trio.open_nursery() as nursery:
        await nursery.start(service.run, Host(config, clock))
        yield SampledUnits(inverter_unit, meter_unit, clock, device_set, service)
        nursery.cancel_scope.cancel()


async def test_a_unit_that_goes_away_turns_bad_then_stale_and_comes_back(tmp_path, sunspec_server):
    async with sampled_units(sunspec_server, tmp_path) as units:
        meter_unit, clock, service = units.meter_unit, units.clock, units.service
        await wait_fresh(service, clock)
        await meter_unit.stop()
        with trio.fail_after(15):
            await wait_until(lambda: "DeviceUnreachable" in service.last["meter"].error, 0.005)
        assert service.last["meter"].quality is Quality.BAD
        clock.advance(5 * 60_000)                      # market time goes on; PV and battery still answer
        await wait_fresh(service, clock, ("pv", "battery"))
        assert service.stale_devices() == {"meter", "load"}   # the load is derived from the meter
        await meter_unit.start()                       # same port: the device is back
        await wait_fresh(service, clock)
        assert service.stale_devices() == set()


async def test_a_battery_setpoint_reaches_the_storage_control_registers(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    clock = ManualClock(START_MS)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    device_set = real_device_set(config, clock.now_ms)
    service = DeviceService(device_set, period_s=PERIOD_S)
    async with open_device_links(device_set), trio.open_nursery() as nursery:
        await nursery.start(service.run, Host(config, clock))
        await wait_fresh(service, clock)
        applied = await service.apply(DeviceKind.BATTERY, BatterySetpoint(-2000.0))
        assert not applied.clipped
        mdef = model_def(124)
        model_at = model_addresses(inverter_unit.image, 40000)[124]
        written = {a - model_at: v for a, v in inverter_unit.writes}
        assert written[mdef.point("InWRte").offset] == [400]      # 40 % of WChaMax at InOutWRte_SF = -1
        assert written[mdef.point("StorCtl_Mod").offset] == [1]   # bit 0: limit charging
        clock.advance(1000)
        with trio.fail_after(15):
            await wait_until(lambda: service.battery() is not None
                             and service.battery().t_ms == clock.now_ms(), 0.005)
        reading = service.battery()
        assert isinstance(reading, BatteryReading)
        assert reading.mode is BatteryMode.REMOTE and reading.setpoint_w == pytest.approx(-2000)
        clipped = await service.apply(DeviceKind.BATTERY, BatterySetpoint(9000.0))
        assert clipped.applied == BatterySetpoint(4000.0) and clipped.reason == "max discharge power"
        with pytest.raises(SetpointRejected, match="meter takes no setpoints"):
            await service.apply(DeviceKind.METER, BatterySetpoint(1.0))
        with pytest.raises(SetpointRejected, match="battery cannot take PvLimit"):
            await service.apply(DeviceKind.BATTERY, PvLimit(1.0))
        nursery.cancel_scope.cancel()


async def test_a_battery_without_storage_controls_or_control_off_rejects_setpoints(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server, battery_models=(battery(),))
    clock = ManualClock(START_MS)
    for control, message in ((True, "no storage controls"), (False, "battery_control = false")):
        config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port, battery_control=control)
        device_set = real_device_set(config, clock.now_ms)
        async with open_device_links(device_set):
            assert isinstance(await device_set.devices["battery"].read(), BatteryReading)
            with pytest.raises(SetpointRejected, match=message):
                await device_set.devices["battery"].apply(BatterySetpoint(-1000.0))
    assert inverter_unit.writes == []


async def test_a_missing_model_is_reported_at_start_and_reads_bad(tmp_path, sunspec_server, caplog):
    inverter_unit = sunspec_server([COMMON, inverter(), NAMEPLATE])   # no battery model 802
    meter_unit = sunspec_server(meter_models(0))
    await inverter_unit.start()
    await meter_unit.start()
    device_set = real_device_set(sunspec_config(tmp_path, inverter_unit.port, meter_unit.port), lambda: START_MS)
    with caplog.at_level(logging.WARNING, logger="p2pgrid.devices.real_set"):
        async with open_device_links(device_set):
            with trio.fail_after(15):
                await wait_until(lambda: len(device_set.discovered) == 2, 0.005)
            with pytest.raises(SunSpecModelError, match="802"):
                await device_set.devices["battery"].read()
    assert any("has no model for battery" in r.getMessage() for r in caplog.records)


async def test_links_open_their_own_bridge_and_an_absent_device_is_unreachable(tmp_path):
    config = sunspec_config(tmp_path, free_port(), free_port())
    device_set = real_device_set(config, lambda: START_MS)
    async with open_device_links(device_set):
        assert device_set.links_open
        async with open_device_links(device_set):      # nested: a no-op
            pass
        assert device_set.links_open
        with pytest.raises(DeviceUnreachable):
            await device_set.devices["meter"].read()
        with pytest.raises(DeviceUnreachable, match="next try in"):   # within poll_interval: no new connect
            await device_set.devices["meter"].read()
        with pytest.raises(DeviceUnreachable, match="no reading yet"):
            await device_set.devices["load"].read()
    assert not device_set.links_open


async def test_several_inverters_add_up_to_one_pv(tmp_path, sunspec_server):
    first = sunspec_server([COMMON, inverter(1000.0, 100_000), NAMEPLATE])
    second = sunspec_server([COMMON, inverter(500.0, 50_000)])
    for server in (first, second):
        await server.start()
    config = real_config(tmp_path, host=LOOPBACK, port=first.port, devices=["pv"], pv_rated_w=3000,
                         units=[{"host": LOOPBACK, "port": second.port, "devices": ["pv"]}])
    device_set = real_device_set(config, lambda: START_MS)
    assert set(device_set.devices) == {"pv"}                  # no meter: no derived load
    async with open_device_links(device_set):
        reading = await device_set.devices["pv"].read()
        assert (reading.power_w, reading.lifetime_wh, reading.rated_w) == (1500, 150_000, 8000 + 3000)
        with pytest.raises(SetpointRejected, match="several PV inverters"):
            await device_set.devices["pv"].apply(PvLimit(1000.0))


# --- MQTT, sampled like the node does ------------------------------------------------------------

async def publish(port: int, messages) -> None:
    async def run() -> None:
        async with aiomqtt.Client(LOOPBACK, port=port) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1, retain=True)

    await call_aio(run)


async def collect_one(port: int, topic: str, ready: trio.Event, out: list[bytes]) -> None:
    async def run() -> None:
        async with aiomqtt.Client(LOOPBACK, port=port) as client:
            await client.subscribe(topic)
            ready.set()
            async for message in client.messages:
                out.append(bytes(message.payload))  # type: ignore[arg-type]
                return

    await call_aio(run)


SITE_VALUES = [("site/meter/power_w", "-800"), ("site/meter/import_wh", "1200.5"),
               ("site/meter/export_wh", '{"value": 300.25}'), ("site/pv/power_w", "2000"),
               ("site/pv/lifetime_wh", "5000"), ("site/battery/power_w", "-700"), ("bms/soc", "64.5")]


async def test_mqtt_broker_topics_are_sampled_and_a_setpoint_is_published(tmp_path, mosquitto):
    clock = ManualClock(START_MS)
    config = real_config(tmp_path, kind="mqtt", host=LOOPBACK, port=mosquitto.port, topic_prefix="site",
                         topics={"battery.soc_pct": "bms/soc"},
                         scales={"meter.import_wh": 1000.0, "meter.export_wh": 1000.0}, poll_interval_ms=50)
    device_set = real_device_set(config, clock.now_ms)
    service = DeviceService(device_set, period_s=PERIOD_S)
    await publish(mosquitto.port, SITE_VALUES)        # retained: the node sees them when it subscribes
    ready, seen = trio.Event(), []
    async with open_device_links(device_set), trio.open_nursery() as nursery:
        await nursery.start(service.run, Host(config, clock))
        await wait_fresh(service, clock)
        grid, pv, bat, load = (service.last[n].reading for n in ("meter", "pv", "battery", "load"))
        assert (grid.power_w, grid.import_wh, grid.export_wh) == (-800, 1_200_500, 300_250)   # kWh → Wh
        assert (pv.power_w, pv.rated_w) == (2000, 6000)
        assert (bat.power_w, bat.soc_pct, bat.capacity_wh, bat.max_discharge_w) == (-700, 64.5, 9600, 3000)
        assert load.power_w == pytest.approx(-800 + 2000 - 700)

        nursery.start_soon(collect_one, mosquitto.port, "site/battery/setpoint", ready, seen)
        with trio.fail_after(10):
            await ready.wait()
        applied = await service.apply(DeviceKind.BATTERY, BatterySetpoint(-5000.0))
        assert applied.applied == BatterySetpoint(-4000.0) and applied.reason == "max charge power"
        with trio.fail_after(10):
            await wait_until(lambda: seen, 0.005)
        assert json.loads(seen[0]) == {"value": -4000.0}

        await mosquitto.stop()                         # the broker goes away
        with trio.fail_after(15):
            await wait_until(lambda: "not connected" in service.last["battery"].error, 0.005)
        assert service.last["battery"].quality is Quality.BAD
        clock.advance(5 * 60_000)
        with trio.fail_after(15):
            await wait_until(lambda: service.stale_devices() == {"meter", "pv", "battery", "load"}, 0.005)
        await mosquitto.start()                        # back (a fresh broker: nothing retained)
        with trio.fail_after(15):
            await wait_until(lambda: device_set.mqtt_site.connections >= 2, 0.005)
        await publish(mosquitto.port, SITE_VALUES)
        await wait_fresh(service, clock)
        nursery.cancel_scope.cancel()


async def test_mqtt_battery_with_control_off_rejects_setpoints(tmp_path, mosquitto):
    config = real_config(tmp_path, kind="mqtt", host=LOOPBACK, port=mosquitto.port, topic_prefix="site",
                         devices=["battery"], topics={"battery.soc_pct": "bms/soc"}, battery_control=False)
    device_set = real_device_set(config, lambda: START_MS)
    assert isinstance(device_set, RealDeviceSet) and set(device_set.devices) == {"battery"}
    await publish(mosquitto.port, SITE_VALUES)
    async with open_device_links(device_set):
        with trio.fail_after(15):
            await device_set.mqtt_site.wait_until(lambda: "bms/soc" in device_set.mqtt_site.latest)
        with pytest.raises(SetpointRejected, match="battery_control = false"):
            await device_set.devices["battery"].apply(BatterySetpoint(-1000.0))


# --- a whole node ----------------------------------------------------------------------------------

async def test_a_node_in_real_mode_meters_its_slots_from_the_sunspec_meter(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    clock = ManualClock(START_MS)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    device_set = real_device_set(config, clock.now_ms)
    service = DeviceService(device_set, period_s=PERIOD_S)
    key = NodeKey.generate()
    async with MemoryNetwork().open_transport(key) as transport:
        node = Node(config, key, clock, transport, extra_services=[service])
        async with open_device_links(device_set), trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert node.telemetry is service
            for minute in range(16):
                meter_unit.set_models(meter_models(minute))
                clock.set(START_MS + minute * 60_000)
                await wait_fresh(service, clock)
            slot = {s.slot: s for s in node.telemetry.completed_slots()}[START_MS // 1000]
            assert slot.complete and (slot.import_wh, slot.export_wh) == (1500, 150)
            assert node.telemetry.snapshot()["devices"]["battery"]["soc_pct"] == pytest.approx(55.5)
            nursery.cancel_scope.cancel()


async def test_the_device_service_builds_the_real_set_from_config(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    clock = ManualClock(START_MS)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    service = DeviceService(period_s=PERIOD_S)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run, Host(config, clock))
        assert isinstance(service.device_set, RealDeviceSet)
        await wait_fresh(service, clock)
        assert service.battery().capacity_wh == 10_000       # from the device's model 802
        nursery.cancel_scope.cancel()


def test_victron_instances_choose_the_services_topics(tmp_path):
    config = real_config(tmp_path, kind="mqtt", topic_map="victron", portal_id="abc",
                         victron_instances={"grid": 31, "battery": 513, "vebus": 277})
    maps = real_device_set(config, lambda: 0).mqtt_site.config.devices
    assert maps["meter"].fields["power_w"].topic == "N/abc/grid/31/Ac/Power"
    assert maps["pv"].fields["power_w"].topic == "N/abc/pvinverter/20/Ac/Power"     # default instance
    assert maps["battery"].fields["soc_pct"].topic == "N/abc/battery/513/Soc"
    assert maps["battery"].setpoint.topic == "W/abc/vebus/277/Hub4/L1/AcPowerSetpoint"


class Remembered:
    """Stands for a RealDevice whose last reading is given."""

    def __init__(self, reading) -> None:
        self.kind, self.last = reading.kind, reading


powers = st.floats(-20_000, 20_000, allow_nan=False)
instants = st.integers(START_MS, START_MS + 10_000)


@settings(max_examples=60, deadline=None)
@given(grid=powers, pv=st.floats(0, 20_000), bat=powers, t=st.lists(instants, min_size=3, max_size=3))
async def test_the_derived_load_closes_the_bus_balance(grid, pv, bat, t):
    meter_dev = Remembered(MeterReading(t[0], grid, 0, 0))
    others = [Remembered(PvReading(t[1], pv, 0, 20_000.0)),
              Remembered(BatteryReading(t[2], bat, 50.0, 10_000, 5e3, 5e3))]
    load = await DerivedLoad(meter_dev, others).read()
    assert load.power_w == pytest.approx(max(0.0, grid + pv + bat))    # grid + pv + battery = load
    assert load.t_ms == min(t)                                          # as old as its oldest part
