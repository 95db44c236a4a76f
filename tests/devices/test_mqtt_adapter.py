"""The MQTT adapter against a real mosquitto broker on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Sequence

import aiomqtt
import pytest
import trio

from p2pgrid.devices.aio import call_aio
from p2pgrid.devices.base import (
    BatterySetpoint,
    DeviceProtocolError,
    DeviceUnreachable,
    DeviceValueError,
    Quality,
)
from p2pgrid.devices.mqtt import MqttConfig, open_mqtt_site
from p2pgrid.devices.mqtt_map import victron_keepalive_topic, victron_maps
from p2pgrid.devices.sampler import SampledDevice, open_sampler

LOOPBACK = "127.0.0.1"
PORTAL = "c0619ab1"
SOC = f"N/{PORTAL}/battery/512/Soc"
BAT_W = f"N/{PORTAL}/battery/512/Dc/0/Power"
SETPOINT = f"W/{PORTAL}/vebus/276/Hub4/L1/AcPowerSetpoint"


class StepClock:
    def __init__(self, t_ms: int = 1_782_000_000_000) -> None:
        self.t_ms = t_ms

    def __call__(self) -> int:
        return self.t_ms


def config(port: int, **overrides) -> MqttConfig:
    maps = victron_maps(PORTAL, battery_capacity_wh=10_000, battery_max_charge_w=5_000,
                        battery_max_discharge_w=4_000, pv_rated_w=6_000)
    settings = dict(host=LOOPBACK, port=port, devices={"battery": maps["battery"]},
                    keepalive_topic=victron_keepalive_topic(PORTAL), keepalive_interval_s=30,
                    reconnect_interval_s=0.05, max_age_s=60)
    settings.update(overrides)
    return MqttConfig(**settings)


async def publish(port: int, messages: Sequence[tuple[str, str | bytes]]) -> None:
    async def run() -> None:
        async with aiomqtt.Client(LOOPBACK, port=port) as client:
            for topic, payload in messages:
                await client.publish(topic, payload, qos=1)

    await call_aio(run)


async def collect(port: int, topic: str, count: int, ready: trio.Event, done: trio.Event,
                  out: list[bytes]) -> None:
    """Subscribe to ``topic``, gather ``count`` payloads into ``out``, then set ``done``."""
    async def run() -> None:
        async with aiomqtt.Client(LOOPBACK, port=port) as client:
            await client.subscribe(topic)
            ready.set()
            async for message in client.messages:
                out.append(bytes(message.payload))  # type: ignore[arg-type]
                if len(out) >= count:
                    return

    await call_aio(run)
    done.set()


async def test_battery_reading_from_victron_topics(mosquitto):
    clock = StepClock()
    async with open_mqtt_site(config(mosquitto.port), clock) as site:
        with trio.fail_after(10):
            await site.wait_until(lambda: site.connected)
            await publish(mosquitto.port, [(BAT_W, json.dumps({"value": 1500})),
                                           (SOC, json.dumps({"value": 71.5}))])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 1)
        reading = await site.devices["battery"].read()
        assert reading.soc_pct == 71.5 and reading.power_w == -1500  # Victron + is charging
        assert reading.quality is Quality.GOOD and reading.t_ms == clock.t_ms
        clock.t_ms += 61_000
        assert (await site.devices["battery"].read()).quality is Quality.STALE


async def test_keepalive_is_published_on_connect(mosquitto):
    ready, done, seen = trio.Event(), trio.Event(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, mosquitto.port, f"R/{PORTAL}/keepalive", 1, ready, done,
                           seen)
        with trio.fail_after(10):
            await ready.wait()
        async with open_mqtt_site(config(mosquitto.port), StepClock()):
            with trio.fail_after(10):
                await done.wait()
    assert seen == [b""]


async def test_setpoint_is_clipped_and_published(mosquitto):
    ready, done, seen = trio.Event(), trio.Event(), []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect, mosquitto.port, SETPOINT, 1, ready, done, seen)
        async with open_mqtt_site(config(mosquitto.port), StepClock()) as site:
            with trio.fail_after(10):
                await ready.wait()
                await site.wait_until(lambda: site.connected)
                await publish(mosquitto.port, [(BAT_W, "0"), (SOC, "50")])
                await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 1)
            applied = await site.devices["battery"].apply(BatterySetpoint(-9_000))
            assert applied.clipped and applied.applied == BatterySetpoint(-5_000)
            with trio.fail_after(10):
                await done.wait()
    # Victron's ESS setpoint counts charging positive
    assert json.loads(seen[0]) == {"value": 5000.0}


async def test_garbage_then_out_of_range_then_good(mosquitto):
    async with open_mqtt_site(config(mosquitto.port), StepClock()) as site:
        battery = site.devices["battery"]
        with trio.fail_after(10):
            await site.wait_until(lambda: site.connected)
            await publish(mosquitto.port, [(BAT_W, "0"), (SOC, b"\x00garbage")])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 1)
        with pytest.raises(DeviceProtocolError, match="Soc"):
            await battery.read()
        with trio.fail_after(10):
            await publish(mosquitto.port, [(SOC, '{"value": 250}')])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 2)
        with pytest.raises(DeviceValueError, match="soc_pct"):
            await battery.read()
        with trio.fail_after(10):
            await publish(mosquitto.port, [(SOC, '{"value": 42}')])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 3)
        assert (await battery.read()).soc_pct == 42


async def test_broker_that_goes_away_is_unreachable_then_reconnects(mosquitto):
    async with open_mqtt_site(config(mosquitto.port), StepClock()) as site:
        battery = site.devices["battery"]
        with trio.fail_after(10):
            await site.wait_until(lambda: site.connected)
            await publish(mosquitto.port, [(BAT_W, "0"), (SOC, "30")])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 1)
        assert (await battery.read()).soc_pct == 30
        await mosquitto.stop()
        with trio.fail_after(10):
            await site.wait_until(lambda: not site.connected)
        with pytest.raises(DeviceUnreachable):
            await battery.read()
        await mosquitto.start()
        with trio.fail_after(10):
            await site.wait_until(lambda: site.connected and site.connections >= 2)
            await publish(mosquitto.port, [(SOC, "31")])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 2)
        assert (await battery.read()).soc_pct == 31


async def test_sampler_over_mqtt_reports_bad_while_broker_is_down(mosquitto):
    clock = StepClock()
    async with open_mqtt_site(config(mosquitto.port), clock) as site:
        with trio.fail_after(10):
            await site.wait_until(lambda: site.connected)
            await publish(mosquitto.port, [(BAT_W, "0"), (SOC, "30")])
            await site.wait_until(lambda: site.message_counts.get(SOC, 0) >= 1)
        devices = {"battery": SampledDevice(site.devices["battery"], period_s=0.02)}
        async with open_sampler(devices, clock) as (sampler, samples):
            with trio.fail_after(10):
                assert (await samples.receive()).quality is Quality.GOOD
                await mosquitto.stop()
                sample = await samples.receive()
                while sample.quality is Quality.GOOD:
                    sample = await samples.receive()
                assert sample.quality is Quality.BAD
                assert sample.error.startswith("DeviceUnreachable")
            assert sampler.health(clock.t_ms)["battery"] is Quality.BAD
            assert sampler.health(clock.t_ms + 1_000)["battery"] is Quality.STALE
