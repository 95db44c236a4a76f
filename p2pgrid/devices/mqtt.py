"""MQTT adapter: devices whose values arrive as published messages (Victron GX, evcc, …).

``open_mqtt_site(config)`` connects to the broker (aiomqtt, through the trio-asyncio bridge),
subscribes to every topic of every configured device, keeps the last message per topic and —
when ``keepalive_topic`` is set — publishes to it at once and every ``keepalive_interval_s``
(Venus OS stops publishing ``N/…`` topics a minute after the last ``R/<portal>/keepalive``).
When the broker goes away the site marks itself disconnected and reconnects every
``reconnect_interval_s`` until it is back; reads meanwhile raise ``DeviceUnreachable``.

``site.devices[name].read()`` builds the reading from the cached values
(``p2pgrid.devices.mqtt_map.build_reading``): garbage on a topic → ``DeviceProtocolError``,
out-of-range values → ``DeviceValueError``, old values → a STALE reading. ``apply`` publishes
``{"value": x}`` to the device's setpoint topic after clipping to the device's limits;
``apply(BatterySetpoint(None))`` publishes the map's declared hand-back instead. A device the node
still controls when the node stops is handed back before the connection closes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiomqtt
import trio

from p2pgrid.devices.aio import call_aio, require_bridge
from p2pgrid.devices.base import (
    Applied,
    BatterySetpoint,
    DeviceKind,
    DeviceUnreachable,
    EvCurrentLimit,
    PvLimit,
    SetpointRejected,
    Setpoint,
)
from p2pgrid.devices.mqtt_map import HandBack, MqttDeviceMap, TopicValue, build_reading, decode_message
from p2pgrid.devices.readings import BatteryReading, EvReading, PvReading, Reading


log = logging.getLogger(__name__)

#: Seconds a hand-back publish may take when the session ends.
HAND_BACK_TIMEOUT_S = 2.0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class MqttConfig:
    host: str
    devices: Mapping[str, MqttDeviceMap]
    port: int = 1883
    client_id: str = ""
    keepalive_topic: str | None = None
    keepalive_interval_s: float = 30.0
    max_age_s: float = 60.0
    reconnect_interval_s: float = 1.0

    @property
    def topics(self) -> list[str]:
        return sorted({b.topic for d in self.devices.values() for b in d.fields.values()})


class MqttSite:
    """The broker connection, the last value per topic, and one device per configured map."""

    def __init__(self, config: MqttConfig, clock: Callable[[], int]) -> None:
        self.config = config
        self.clock = clock
        self.latest: dict[str, TopicValue] = {}
        self.message_counts: dict[str, int] = {}
        self.connected = False
        self.connections = 0
        self._client: aiomqtt.Client | None = None
        #: device name → how to hand it back, while the node controls it
        self.hand_backs: dict[str, HandBack] = {}
        self._changed = trio.Event()
        self.devices = {name: MqttDevice(self, name, dmap)
                        for name, dmap in config.devices.items()}

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is checked after every message and every
        connect/disconnect. Wrap in ``trio.fail_after``."""
        while not predicate():
            await self._changed.wait()

    def _on_message(self, topic: str, payload: bytes) -> None:
        self.latest[topic] = decode_message(payload, self.clock())
        self.message_counts[topic] = self.message_counts.get(topic, 0) + 1
        self._notify()

    async def _session(self) -> None:
        """One broker connection, from connect to loss (runs on the asyncio side)."""
        import asyncio

        cfg = self.config
        async with aiomqtt.Client(cfg.host, port=cfg.port,
                                  identifier=cfg.client_id or None) as client:
            for topic in cfg.topics:
                await client.subscribe(topic)
            self._client, self.connected = client, True
            self.connections += 1
            self._notify()
            keepalive = asyncio.ensure_future(self._keepalive(client)) \
                if cfg.keepalive_topic else None
            try:
                async for message in client.messages:
                    payload = message.payload
                    self._on_message(str(message.topic),
                                     payload if isinstance(payload, bytes)
                                     else str(payload).encode())
            except asyncio.CancelledError:
                # The node stops while the connection is up. (When the broker dropped us there is
                # no connection left to say it on; the node's revert guard covers that case.)
                await self._hand_back_all(client)
                raise
            finally:
                if keepalive is not None:
                    keepalive.cancel()
                self._client = None

    async def _hand_back_all(self, client: aiomqtt.Client) -> None:
        """The session ends (the node stops, or the broker went away): give back every device the
        node controls, while the connection may still carry it."""
        import asyncio

        for name, hand_back in list(self.hand_backs.items()):
            try:
                await asyncio.wait_for(client.publish(hand_back.topic, json.dumps({"value": hand_back.value})),
                                       HAND_BACK_TIMEOUT_S)
                del self.hand_backs[name]
            except (aiomqtt.MqttError, asyncio.TimeoutError) as exc:
                log.warning("MQTT %s: could not hand control back on %s: %s", name, hand_back.topic, exc)

    async def _keepalive(self, client: aiomqtt.Client) -> None:
        import asyncio

        topic = self.config.keepalive_topic
        while topic is not None:
            await client.publish(topic, b"")
            await asyncio.sleep(self.config.keepalive_interval_s)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep a session up forever, reconnecting after every loss."""
        task_status.started()
        while True:
            try:
                await call_aio(self._session)
            except aiomqtt.MqttError:
                pass  # broker refused or dropped us: retried below, reads say unreachable
            self.connected = False
            self._notify()
            await trio.sleep(self.config.reconnect_interval_s)

    async def publish(self, topic: str, value: float | str) -> None:
        client = self._client
        if client is None or not self.connected:
            raise DeviceUnreachable(f"MQTT broker {self.config.host}:{self.config.port} "
                                    "not connected")
        try:
            await call_aio(client.publish, topic, json.dumps({"value": value}))
        except aiomqtt.MqttError as exc:
            raise DeviceUnreachable(f"MQTT publish to {topic} failed: {exc}") from exc


class MqttDevice:
    def __init__(self, site: MqttSite, name: str, dmap: MqttDeviceMap) -> None:
        self.site, self.name, self.map = site, name, dmap
        self.kind: DeviceKind = dmap.kind

    async def read(self) -> Reading:
        site = self.site
        if not site.connected:
            raise DeviceUnreachable(f"MQTT broker {site.config.host}:{site.config.port} not "
                                    f"connected ({self.name})")
        return build_reading(self.map, site.latest, site.clock(),
                             round(site.config.max_age_s * 1000))

    async def apply(self, setpoint: Setpoint) -> Applied:
        binding = self.map.setpoint
        if binding is None:
            raise SetpointRejected(f"MQTT device {self.name} has no setpoint topic")
        hand_back = self.map.hand_back
        if isinstance(setpoint, BatterySetpoint) and setpoint.power_w is None and hand_back is not None:
            await self.site.publish(hand_back.topic, hand_back.value)
            self.site.hand_backs.pop(self.name, None)
            return Applied(setpoint, setpoint)
        reading = await self.read()
        applied, reason, value = _clip(setpoint, reading)
        await self.site.publish(binding.topic, value * binding.scale)
        if hand_back is not None:
            self.site.hand_backs[self.name] = hand_back     # published when the session ends
        return Applied(setpoint, applied, reason)


def _clip(setpoint: Setpoint, reading: Reading) -> tuple[Setpoint, str, float]:
    if isinstance(setpoint, BatterySetpoint) and isinstance(reading, BatteryReading):
        if setpoint.power_w is None:
            raise SetpointRejected("MQTT battery map declares no hand-back (devices.adapter.topics.battery.hand_back)")
        p = setpoint.power_w
        if p > reading.max_discharge_w:
            return BatterySetpoint(reading.max_discharge_w), "max discharge power", \
                reading.max_discharge_w
        if p < -reading.max_charge_w:
            return BatterySetpoint(-reading.max_charge_w), "max charge power", \
                -reading.max_charge_w
        return setpoint, "", p
    if isinstance(setpoint, PvLimit) and isinstance(reading, PvReading) \
            and setpoint.limit_w is not None:
        limit = min(max(setpoint.limit_w, 0.0), reading.rated_w)
        return PvLimit(limit), "" if limit == setpoint.limit_w else "0..rated", limit
    if isinstance(setpoint, EvCurrentLimit) and isinstance(reading, EvReading):
        current = max(0.0, setpoint.current_a)
        return EvCurrentLimit(current), "" if current == setpoint.current_a else "negative", \
            current
    raise SetpointRejected(f"{reading.kind.value} cannot take {setpoint!r}")


@asynccontextmanager
async def open_mqtt_site(config: MqttConfig,
                         clock: Callable[[], int] = wall_clock_ms) -> AsyncIterator[MqttSite]:
    """Run an ``MqttSite`` for the duration of the block (inside ``open_device_loop()``)."""
    require_bridge()
    site = MqttSite(config, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(site.run)
        try:
            yield site
        finally:
            nursery.cancel_scope.cancel()
