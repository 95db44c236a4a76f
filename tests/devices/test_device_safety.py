"""Device safety against a real pymodbus SunSpec server and a real mosquitto on 127.0.0.1: the
battery goes back to its own control when the node stops or its setpoints stop, the revert timeout
is written with every setpoint, MQTT maps declare their hand-back, readings beyond the nameplate
are BAD and never metered, repeated faults are rate-limited warnings.

Waits are on conditions with generous bounds, never on fixed sleeps.
"""

from __future__ import annotations

import json
import logging

import aiomqtt
import pytest
import trio

from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config
from p2pgrid.devices.aio import call_aio
from p2pgrid.devices.base import BatterySetpoint, DeviceKind, DeviceValueError, Quality
from p2pgrid.devices.mqtt_map import MqttDeviceMap, TopicBinding
from p2pgrid.devices.real_set import open_device_links, real_device_set
from p2pgrid.devices.sunspec_registers import model_addresses, model_def
from p2pgrid.errors import ConfigError
from p2pgrid.logs import RateLimitedWarning
from p2pgrid.net.testing import wait_until
from test_real_device_set import (COMMON, LOOPBACK, NAMEPLATE, SITE_VALUES, START_MS, STORAGE, battery, inverter,
                                  meter_models, publish, real_config, sampled_units, start_units, sunspec_config,
                                  wait_fresh)

BOUND_S = 30
STORCTL = model_def(124).point("StorCtl_Mod").offset
REVERT = model_def(124).point("InOutWRte_RvrtTms").offset


def storage_writes(unit) -> list[tuple[int, list[int]]]:
    """(offset in model 124, registers) of every write the unit received, in order."""
    at = model_addresses(unit.image, 40000)[124]
    return [(address - at, values) for address, values in unit.writes]


def mode_writes(unit) -> list[int]:
    return [values[0] for offset, values in storage_writes(unit) if offset == STORCTL]


# --- SunSpec ------------------------------------------------------------------------------------

async def test_every_setpoint_carries_the_revert_timeout_written_before_the_mode(tmp_path, sunspec_server):
    inverter_unit, meter_unit = await start_units(sunspec_server)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port, revert_s=45.0)
    device_set = real_device_set(config, ManualClock(START_MS).now_ms)
    async with open_device_links(device_set):
        await device_set.devices["battery"].apply(BatterySetpoint(-2000.0))
    offsets = [offset for offset, _ in storage_writes(inverter_unit)]
    assert dict(storage_writes(inverter_unit))[REVERT] == [45]
    assert offsets.index(REVERT) < offsets.index(STORCTL)      # the timeout is armed before the rate applies


async def test_the_battery_is_handed_back_when_the_links_close(tmp_path, sunspec_server):
    """Ctrl-C: the node's scope is cancelled; the battery must not stay in remote mode."""
    inverter_unit, meter_unit = await start_units(sunspec_server)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port)
    device_set = real_device_set(config, ManualClock(START_MS).now_ms)
    with trio.CancelScope() as node_scope:
        async with open_device_links(device_set):
            await device_set.devices["battery"].apply(BatterySetpoint(1500.0))
            assert mode_writes(inverter_unit) == [2]              # discharging under remote control
            node_scope.cancel()
            await trio.sleep_forever()
    assert mode_writes(inverter_unit) == [2, 0]                   # StorCtl_Mod 0: the battery's own control


async def test_the_battery_is_handed_back_when_setpoints_stop(tmp_path, sunspec_server):
    """A stale controller: the node keeps running but no setpoint comes for revert_s."""
    inverter_unit, meter_unit = await start_units(sunspec_server)
    config = sunspec_config(tmp_path, inverter_unit.port, meter_unit.port, revert_s=1.0)
    device_set = real_device_set(config, ManualClock(START_MS).now_ms)
    async with open_device_links(device_set):
        battery_device = device_set.devices["battery"]
        await battery_device.apply(BatterySetpoint(-1000.0))
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: not battery_device.controlling, 0.01)
        assert mode_writes(inverter_unit) == [1, 0]
    assert mode_writes(inverter_unit) == [1, 0]                   # nothing more to hand back at close


async def test_a_pv_reading_beyond_the_nameplate_is_bad_and_never_metered(tmp_path, sunspec_server):
    """32 kW from an inverter rated 8 kW (model 120): BAD, no PV energy, no load made of it."""
    async with sampled_units(sunspec_server, tmp_path) as units:
        inverter_unit, meter_unit, clock, service = units.inverter_unit, units.meter_unit, units.clock, units.service
        inverter_unit.set_models([COMMON, inverter(w=32_000.0), NAMEPLATE, battery(), STORAGE])
        for minute in range(16):
            meter_unit.set_models(meter_models(minute))
            clock.set(START_MS + minute * 60_000)
            await wait_fresh(service, clock, ("meter", "battery"))
            with trio.fail_after(BOUND_S):        # (a busy machine may also time a read out: also BAD)
                await wait_until(lambda: "pv" in service.last and service.last["pv"].t_ms == clock.now_ms()
                                 and "rating" in service.last["pv"].error, 0.005)
        slot = {s.slot: s for s in service.completed_slots()}[START_MS // 1000]
        assert slot.pv_wh == 0
        load = service.last["load"]
        assert load.reading is None or load.reading.power_w < 10_000      # not 28 kW made of a bogus PV


async def test_a_pv_reading_beyond_the_configured_kwp_is_bad(tmp_path, sunspec_server):
    """No nameplate model: the configured 6 kWp is the rating."""
    unit = sunspec_server([COMMON, inverter(w=7_000.0)])
    meter_unit = sunspec_server(meter_models(0))
    await unit.start()
    await meter_unit.start()
    config = real_config(tmp_path, kind="sunspec", host=LOOPBACK, port=unit.port, devices=["pv"],
                         timeout_ms=1000, poll_interval_ms=50)
    device_set = real_device_set(config, ManualClock(START_MS).now_ms)
    async with open_device_links(device_set):
        with pytest.raises(DeviceValueError, match="rating of 6000 W"):
            await device_set.devices["pv"].read()
        unit.set_models([COMMON, inverter(w=5_900.0)])
        assert (await device_set.devices["pv"].read()).power_w == 5_900


# --- MQTT ---------------------------------------------------------------------------------------

def mqtt_config(tmp_path, port: int, *, topics=None, **extra):
    return real_config(tmp_path, kind="mqtt", host=LOOPBACK, port=port, topic_prefix="site", devices=["battery"],
                       topics={"battery.soc_pct": "bms/soc", **(topics or {})}, poll_interval_ms=50, **extra)


class Collector:
    """Every message on ``topics``, as a separate client of the broker sees it."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.port, self.topics = port, topics
        self.messages: list[tuple[str, object]] = []
        self.ready = trio.Event()

    async def run(self) -> None:
        async def session() -> None:
            async with aiomqtt.Client(LOOPBACK, port=self.port) as client:
                for topic in self.topics:
                    await client.subscribe(topic)
                self.ready.set()
                async for message in client.messages:
                    self.messages.append((str(message.topic), json.loads(bytes(message.payload))["value"]))

        await call_aio(session)


async def test_an_mqtt_battery_is_handed_back_on_request_on_stop_and_when_setpoints_stop(tmp_path, mosquitto, nursery):
    collector = Collector(mosquitto.port, ["site/battery/setpoint", "site/battery/mode"])
    nursery.start_soon(collector.run)
    with trio.fail_after(BOUND_S):
        await collector.ready.wait()
    await publish(mosquitto.port, SITE_VALUES)
    device_set = real_device_set(mqtt_config(tmp_path, mosquitto.port, revert_s=1.0), lambda: START_MS)
    site = device_set.mqtt_site
    battery_device = device_set.devices["battery"]

    async def wait_for(message) -> None:
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: collector.messages[-1:] == [message], 0.01)

    with trio.CancelScope() as node_scope:
        async with open_device_links(device_set):
            with trio.fail_after(BOUND_S):
                await site.wait_until(lambda: {"bms/soc", "site/battery/power_w"} <= set(site.latest))
            await battery_device.apply(BatterySetpoint(-500.0))
            await wait_for(("site/battery/setpoint", -500.0))
            await battery_device.apply(BatterySetpoint(None))            # on request
            await wait_for(("site/battery/mode", "auto"))
            await battery_device.apply(BatterySetpoint(-600.0))
            await wait_for(("site/battery/setpoint", -600.0))
            await wait_for(("site/battery/mode", "auto"))                 # no setpoint for revert_s
            await battery_device.apply(BatterySetpoint(-700.0))
            await wait_for(("site/battery/setpoint", -700.0))
            node_scope.cancel()                                           # the node stops
            await trio.sleep_forever()
    await wait_for(("site/battery/mode", "auto"))
    assert [m for m in collector.messages if m[0] == "site/battery/mode"] == [("site/battery/mode", "auto")] * 3


def test_an_mqtt_map_that_can_take_control_must_declare_how_to_give_it_back():
    fields = {name: TopicBinding(f"b/{name}") for name in ("power_w", "soc_pct")}
    constants = {"capacity_wh": 1000, "max_charge_w": 500.0, "max_discharge_w": 500.0}
    with pytest.raises(ConfigError, match="hand-back"):
        MqttDeviceMap(DeviceKind.BATTERY, fields, constants, setpoint=TopicBinding("b/set"))


def test_the_hand_back_topic_can_be_configured(tmp_path):
    config = mqtt_config(tmp_path, 1883, topics={"battery.hand_back": "ems/auto"})
    dmap = real_device_set(config, lambda: 0).mqtt_site.config.devices["battery"]
    assert (dmap.hand_back.topic, dmap.hand_back.value) == ("ems/auto", "auto")
    victron = build_config({"node": {"data_dir": str(tmp_path)}, "devices": {
        "mode": "real", "battery": {"capacity_wh": 9600, "max_charge_w": 4000, "max_discharge_w": 3000},
        "adapter": {"kind": "mqtt", "topic_map": "victron", "portal_id": "abc", "devices": ["battery"]}}},
        base_dir=tmp_path)
    hand_back = real_device_set(victron, lambda: 0).mqtt_site.config.devices["battery"].hand_back
    assert (hand_back.topic, hand_back.value) == ("W/abc/settings/0/Settings/CGwacs/Hub4Mode", 1)


# --- repeated faults ------------------------------------------------------------------------------

def test_a_repeated_fault_is_one_warning_per_interval_naming_what_was_held_back(caplog):
    logger = logging.getLogger("p2pgrid.test.faults")
    warnings = RateLimitedWarning(logger, 60.0)
    with caplog.at_level(logging.DEBUG, logger="p2pgrid.test.faults"):
        for second in range(0, 150, 2):                 # a unit failing every 2 s for 150 s
            warnings.warn(float(second), "unit %s unreachable", "a")
        warnings.cleared("unit %s answers again", "a")
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert lines == [("WARNING", "unit a unreachable"),
                     ("WARNING", "unit a unreachable (29 more like it in the last 60 s)"),
                     ("WARNING", "unit a unreachable (29 more like it in the last 60 s)"),
                     ("INFO", "unit a answers again")]


async def test_an_unreachable_unit_is_a_warning_once_then_quiet_then_back(tmp_path, sunspec_server, caplog):
    """It used to be an INFO line every 2 s that never warned. (Sampled every 0.5 s, so that no read
    of a unit that is there times out on a busy machine: the outage is the only fault.)"""
    def meter_lines(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level and r.getMessage().startswith("device meter")]

    with caplog.at_level(logging.DEBUG, logger="p2pgrid.devices.service"):
        async with sampled_units(sunspec_server, tmp_path, period_s=0.5) as units:
            await wait_fresh(units.service, units.clock)
            await units.meter_unit.stop()
            with trio.fail_after(BOUND_S):          # the repeats while the unit is away
                await wait_until(lambda: len(meter_lines(logging.DEBUG)) >= 6, 0.01)
            await units.meter_unit.start()
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: "device meter answers again" in meter_lines(logging.INFO), 0.01)
    (warning,) = meter_lines(logging.WARNING)      # refused or silent: either way one line, with why
    assert "DeviceUnreachable" in warning or "no answer within" in warning
