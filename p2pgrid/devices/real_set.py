"""The node's real hardware as a ``DeviceSet``: SunSpec Modbus TCP units or an MQTT broker.

``real_device_set(config, clock_ms)`` builds, from ``[devices.adapter]`` (``p2pgrid.config.
AdapterSection``), one device per kind, named by its kind like the simulated set:

* ``meter``, ``pv``, ``battery`` — the devices the adapter names. SunSpec: each Modbus unit
  (``host``/``port``/``unit_id`` plus ``[[devices.adapter.units]]``) serves the kinds listed in
  its ``devices``; which SunSpec model carries them is discovered on the device (meter
  203/204/201/202, inverter 103/101/102 + nameplate 120 + controls 123, battery 802 + storage
  controls 124). Several PV inverters are summed into one ``pv``; one meter and one battery at
  most. MQTT: the preset topic map (``generic`` or ``victron``) with single fields overridden by
  ``topics``/``scales``; ratings no topic carries come from ``[devices.pv]``/``[devices.battery]``.
* ``load`` — derived, never read from hardware: by the bus balance of ``p2pgrid.devices.base``
  (``grid + pv + battery = load``) from the latest readings of the others, stamped with the
  oldest of them so that a silent meter makes the load go stale too.

Readings are stamped with ``clock_ms`` (the node's market clock).

**Links.** Devices talk through connections that live as long as the set is sampled:
``open_device_links(device_set)`` opens them (an asyncio bridge if the caller has none, the MQTT
session with its reconnect loop) and closes them (Modbus connections) at the end. Opening a set
that is already open is a no-op, so both a caller and the node's device service may open it.
Sets without links (the simulated one) pass straight through. While open, each Modbus unit's
model chain is read once it answers (``discovered``), and a configured kind whose models the unit
lacks is logged as a warning (its reads stay BAD, naming the missing model).

**Failures never crash the node.** Every device error reaches the sampler as a BAD sample;
after a Modbus unit went away its devices answer ``DeviceUnreachable`` at once for
``poll_interval_ms`` instead of each waiting for a connect timeout, then it is tried again.
MQTT reconnects every ``poll_interval_ms`` by itself.

**Setpoints.** ``apply`` goes to the device when it can take it — a SunSpec battery with storage
controls (model 124), an MQTT battery with a setpoint topic — and otherwise raises
``SetpointRejected`` saying why (no model 124, no topic, ``battery_control = false``, a kind
that takes no setpoints).

**Giving control back.** A battery under the node's control returns to its own control
(``BatterySetpoint(None)``: SunSpec ``StorCtl_Mod = 0``, MQTT the map's declared hand-back, e.g.
``<prefix>/battery/mode`` ← ``"auto"`` or Victron ESS mode 1):

* when the links close (the node stops, also on Ctrl-C: shielded and bounded);
* when no setpoint came for ``devices.adapter.revert_s`` (a stale controller), by the node;
* by the device itself after the same time: every SunSpec setpoint carries the revert timeout
  (model 124 ``InOutWRte_RvrtTms``), so a node that hangs or is killed cannot leave it behind.

The planner repeats a standing setpoint every third of ``revert_s``. Failures to hand back are
WARNING lines, at most one a minute (``p2pgrid.logs.RateLimitedWarning``).

**Nameplate.** A reading beyond what the device is rated for (PV: SunSpec model 120 ``WRtg``,
model 121 ``WMax``, the configured kWp; battery: its charge and discharge limits; 10 % margin) is
a ``DeviceValueError``: a BAD sample, never metered, never part of the derived load.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import trio
import trio_asyncio  # type: ignore[import-untyped]

from p2pgrid.devices.aio import open_device_loop
from p2pgrid.devices.base import (
    Applied,
    BatterySetpoint,
    DeviceError,
    DeviceKind,
    DeviceProtocolError,
    DeviceUnreachable,
    Quality,
    Setpoint,
    SetpointRejected,
)
from p2pgrid.devices.device import Device
from p2pgrid.devices.mqtt import MqttConfig, MqttSite
from p2pgrid.devices.mqtt_map import HandBack, MqttDeviceMap, TopicBinding, victron_keepalive_topic, victron_maps
from p2pgrid.devices.readings import (
    LoadReading,
    check_nameplate,
    PvReading,
    Reading,
    validate_reading,
)
from p2pgrid.devices.sunspec import (
    SunSpecBattery,
    SunSpecClient,
    SunSpecEndpoint,
    SunSpecInverter,
    SunSpecMeter,
)
from p2pgrid.devices.device_set import DeviceSet
from p2pgrid.devices.sunspec_readings import INVERTER_MODELS, METER_MODELS
from p2pgrid.errors import ConfigError
from p2pgrid.logs import RateLimitedWarning

if TYPE_CHECKING:
    from p2pgrid.config import AdapterSection, NodeConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SunSpec models that make a unit a device of each kind (what discovery looks for).
KIND_MODELS: dict[DeviceKind, tuple[int, ...]] = {
    DeviceKind.METER: METER_MODELS,
    DeviceKind.PV: INVERTER_MODELS,
    DeviceKind.BATTERY: (802,),
}
#: Fields the generic MQTT preset reads from ``<prefix>/<device>/<field>``; the rest are ratings.
GENERIC_MEASURED = {
    DeviceKind.METER: ("power_w", "import_wh", "export_wh"),
    DeviceKind.PV: ("power_w", "lifetime_wh"),
    DeviceKind.BATTERY: ("power_w", "soc_pct"),
}
SETPOINT_FIELD = "setpoint"
#: The generic preset hands a battery back by publishing "auto" to ``<prefix>/battery/mode``;
#: ``topics["battery.hand_back"]`` names another topic.
MODE_FIELD = "mode"
AUTO_MODE = "auto"
HAND_BACK_FIELD = "hand_back"
NO_BATTERY_CONTROL = "battery control is off (devices.adapter.battery_control = false)"


class ModbusLink:
    """One Modbus unit's connection, shared by the devices it serves: one request at a time (a
    SunSpec read is several Modbus requests that must not interleave), and after the unit went
    away, ``DeviceUnreachable`` at once until ``retry_s`` has passed."""

    def __init__(self, client: SunSpecClient, retry_s: float) -> None:
        self.client = client
        self.retry_s = retry_s
        self._lock = trio.Lock()
        self._down_until = -math.inf

    @property
    def name(self) -> str:
        ep = self.client.endpoint
        return f"{ep.host}:{ep.port} unit {ep.unit_id}"

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        async with self._lock:
            wait = self._down_until - trio.current_time()
            if wait > 0:
                raise DeviceUnreachable(f"SunSpec unit {self.name} is down; next try in {wait:.1f} s")
            try:
                return await fn()
            except DeviceUnreachable:
                await trio.lowlevel.checkpoint_if_cancelled()   # a cancelled request says nothing of the unit
                self._down_until = trio.current_time() + self.retry_s
                raise


class RealDevice:
    """A hardware device as the set shows it: requests through its unit's link (SunSpec), the
    last reading kept for the derived load, setpoints only where they are allowed."""

    def __init__(self, device: Device, *, link: ModbusLink | None = None, control: bool = True,
                 no_control_reason: str = "", configured_w: float | None = None) -> None:
        self.device = device
        self.configured_w = configured_w       # PV: the configured rating (kWp) this device is held to
        self.kind: DeviceKind = device.kind
        self.link = link
        self.control = control
        self.no_control_reason = no_control_reason
        self.last: Reading | None = None
        self.controlling = False                 # a battery setpoint of ours is in force
        self.last_command_s = -math.inf          # trio time of the last battery setpoint applied

    async def read(self) -> Reading:
        try:
            reading = await self.link.call(self.device.read) if self.link else await self.device.read()
        finally:
            # A trio cancellation crosses into asyncio as a cancelled future; the library may then
            # report a failed request, or the answer may have arrived first. Either way a cancelled
            # read must end as Cancelled, not as a sample (the sampler's channel is closed by then).
            await trio.lowlevel.checkpoint_if_cancelled()
        check_nameplate(reading, self.configured_w)   # before it is kept: the derived load must not use it
        self.last = reading
        return reading

    async def apply(self, setpoint: Setpoint) -> Applied:
        apply = getattr(self.device, "apply", None)
        if not self.control:
            raise SetpointRejected(f"{self.kind.value}: {self.no_control_reason}")
        if apply is None:
            raise SetpointRejected(f"{self.kind.value} takes no setpoints")
        if self.link is None:
            applied: Applied = await apply(setpoint)
        else:
            applied = await self.link.call(lambda: apply(setpoint))
        if isinstance(setpoint, BatterySetpoint):
            self.controlling = setpoint.power_w is not None
            self.last_command_s = trio.current_time()
        return applied

    async def hand_back(self) -> None:
        """Return the battery to its own control (the setpoint that is no setpoint)."""
        await self.apply(BatterySetpoint(None))


class SummedPv:
    """Several PV inverters seen as one: powers, counters and ratings add up; the reading is as
    old as its oldest part, and fails if any part fails (a partial sum would understate PV)."""

    kind = DeviceKind.PV

    def __init__(self, inverters: Sequence[RealDevice], configured_w: float | None = None) -> None:
        self.inverters = list(inverters)
        self.configured_w = configured_w       # the configured rating (kWp) of all of them

    async def read(self) -> PvReading:
        parts = [await inverter.read() for inverter in self.inverters]
        readings = [r for r in parts if isinstance(r, PvReading)]
        if len(readings) != len(parts):
            raise DeviceProtocolError("a PV unit returned something that is not a PV reading")
        limited = any(r.limit_w is not None for r in readings)
        reading = PvReading(
            t_ms=min(r.t_ms for r in readings),
            power_w=sum(r.power_w for r in readings),
            lifetime_wh=sum(r.lifetime_wh for r in readings),
            rated_w=sum(r.rated_w for r in readings),
            limit_w=sum(r.rated_w if r.limit_w is None else r.limit_w for r in readings) if limited else None,
            quality=_worst(r.quality for r in readings),
        )
        validate_reading(reading)
        return check_nameplate(reading, self.configured_w)

    async def apply(self, setpoint: Setpoint) -> Applied:
        raise SetpointRejected("curtailing several PV inverters at once is not supported")


class DerivedLoad:
    """The household load from the bus balance over the latest meter, PV and battery readings."""

    kind = DeviceKind.LOAD

    def __init__(self, meter: RealDevice, others: Sequence[RealDevice]) -> None:
        self.meter = meter
        self.others = list(others)

    async def read(self) -> LoadReading:
        parts = [self.meter.last, *(device.last for device in self.others)]
        if any(reading is None for reading in parts):
            missing = [d.kind.value for d in (self.meter, *self.others) if d.last is None]
            raise DeviceUnreachable(f"load is derived from {', '.join(missing)}: no reading yet")
        readings = [r for r in parts if r is not None]
        power = sum(float(getattr(r, "power_w", 0.0)) for r in readings)
        # Parts read a moment apart can sum to a little below zero when power swings: no load
        # is negative, so that is read as none.
        reading = LoadReading(min(r.t_ms for r in readings), max(0.0, power), _worst(r.quality for r in readings))
        validate_reading(reading)
        return reading


def _worst(qualities: Any) -> Quality:
    order = [Quality.GOOD, Quality.STALE, Quality.BAD]
    return max(qualities, key=order.index, default=Quality.GOOD)


@dataclass
class RealDeviceSet(DeviceSet):
    """A ``DeviceSet`` of hardware, with the connections ``open_device_links`` runs."""

    links: tuple[ModbusLink, ...] = ()
    mqtt_site: MqttSite | None = None
    #: Unit name → the kinds its SunSpec models make it, once the unit answered (links open).
    discovered: dict[str, frozenset[DeviceKind]] = field(default_factory=dict)
    links_open: bool = False
    #: seconds after the last battery setpoint that the node hands the battery back itself
    revert_s: float = math.inf

    def open_links(self) -> AbstractAsyncContextManager[None]:
        return open_device_links(self)


# --- building the set from config ----------------------------------------------------------------

def real_device_set(config: NodeConfig, clock_ms: Callable[[], int]) -> RealDeviceSet:
    """The devices behind ``[devices.adapter]`` (see the module docstring)."""
    adapter = config.devices.adapter
    if adapter is None:
        raise ConfigError("devices.adapter: required when devices.mode = \"real\"")
    if adapter.kind == "sunspec":
        return _sunspec_set(config, adapter, clock_ms)
    return _mqtt_set(config, adapter, clock_ms)


def _pv_rating(config: NodeConfig, adapter: AdapterSection) -> float | None:
    if adapter.pv_rated_w:
        return float(adapter.pv_rated_w)
    pv = config.devices.pv
    return pv.kwp * 1000 if pv is not None and pv.kwp > 0 else None


def _with_load(devices: dict[str, RealDevice | SummedPv]) -> dict[str, Device]:
    out: dict[str, Device] = dict(devices)
    meter = devices.get(DeviceKind.METER.value)
    if isinstance(meter, RealDevice):
        parts: list[RealDevice] = []
        for device in devices.values():
            parts += device.inverters if isinstance(device, SummedPv) else [device]
        out[DeviceKind.LOAD.value] = DerivedLoad(meter, [d for d in parts if d is not meter])
    return out


def _sunspec_set(config: NodeConfig, adapter: AdapterSection, clock_ms: Callable[[], int]) -> RealDeviceSet:
    units = [(adapter.host, adapter.effective_port, adapter.unit_id, adapter.devices)]
    units += [(u.host, u.port, u.unit_id, u.devices) for u in adapter.units]
    timeout_s = adapter.timeout_ms / 1000
    rated_w = _pv_rating(config, adapter)
    links: list[ModbusLink] = []
    meters, inverters, batteries = [], [], []
    for host, port, unit_id, roles in units:
        client = SunSpecClient(SunSpecEndpoint(host, port, unit_id, timeout_s))
        link = ModbusLink(client, adapter.poll_interval_ms / 1000)
        links.append(link)
        if "meter" in roles:
            meters.append(RealDevice(SunSpecMeter(client, import_positive=adapter.meter_import_positive,
                                                  clock=clock_ms), link=link))
        if "pv" in roles:
            inverters.append(RealDevice(SunSpecInverter(client, rated_w=rated_w, clock=clock_ms), link=link))
        if "battery" in roles:
            batteries.append(RealDevice(
                SunSpecBattery(client, discharge_positive=adapter.battery_discharge_positive,
                               revert_s=adapter.revert_s, clock=clock_ms),
                link=link, control=adapter.battery_control,
                no_control_reason=NO_BATTERY_CONTROL))
    devices: dict[str, RealDevice | SummedPv] = {}
    if meters:
        devices[DeviceKind.METER.value] = meters[0]
    if len(inverters) == 1:
        inverters[0].configured_w = rated_w
        devices[DeviceKind.PV.value] = inverters[0]
    elif inverters:
        devices[DeviceKind.PV.value] = SummedPv(inverters, configured_w=rated_w)
    if batteries:
        devices[DeviceKind.BATTERY.value] = batteries[0]
    return RealDeviceSet(_with_load(devices), links=tuple(links), revert_s=adapter.revert_s)


def _mqtt_maps(config: NodeConfig, adapter: AdapterSection) -> dict[str, MqttDeviceMap]:
    """Role → topic map: the preset, then the ``topics``/``scales`` overrides."""
    battery = config.devices.battery
    rated_w = _pv_rating(config, adapter)
    if "battery" in adapter.devices and battery is None and adapter.topic_map == "victron":
        raise ConfigError("devices.battery: the Victron preset takes the battery's capacity and power "
                          "limits from [devices.battery]")
    if "pv" in adapter.devices and rated_w is None and "pv.rated_w" not in adapter.topics:
        raise ConfigError("devices.adapter.pv_rated_w: the PV rating is needed (or [devices.pv] kwp)")
    ratings: dict[DeviceKind, dict[str, float | int | str]] = {
        DeviceKind.METER: {},
        DeviceKind.PV: {"rated_w": rated_w} if rated_w is not None else {},
        DeviceKind.BATTERY: {} if battery is None else {
            "capacity_wh": battery.capacity_wh, "max_charge_w": float(battery.max_charge_w),
            "max_discharge_w": float(battery.max_discharge_w), "min_soc_pct": battery.soc_min * 100,
            "max_soc_pct": battery.soc_max * 100},
    }
    presets: dict[str, tuple[dict[str, TopicBinding], dict[str, float | int | str], TopicBinding | None,
                             HandBack | None]] = {}
    if adapter.topic_map == "victron":
        instances = {f"{service}_instance": n for service, n in adapter.victron_instances.items()}
        maps = victron_maps(adapter.portal_id, **instances,
                            battery_capacity_wh=battery.capacity_wh if battery else 0,
                            battery_max_charge_w=float(battery.max_charge_w) if battery else 0.0,
                            battery_max_discharge_w=float(battery.max_discharge_w) if battery else 0.0,
                            pv_rated_w=rated_w or 0.0)
        victron_names = {"meter": "grid", "pv": "pv", "battery": "battery"}
        for role in adapter.devices:
            dmap = maps[victron_names[role]]
            presets[role] = (dict(dmap.fields), {**ratings[dmap.kind], **dmap.constants}, dmap.setpoint,
                             dmap.hand_back)
    else:
        prefix = adapter.topic_prefix.rstrip("/")
        for role in adapter.devices:
            kind = DeviceKind(role)
            fields = {name: TopicBinding(f"{prefix}/{role}/{name}") for name in GENERIC_MEASURED[kind]}
            setpoint = TopicBinding(f"{prefix}/{role}/{SETPOINT_FIELD}") if kind is DeviceKind.BATTERY else None
            hand_back = HandBack(f"{prefix}/{role}/{MODE_FIELD}", AUTO_MODE) if setpoint is not None else None
            presets[role] = (fields, dict(ratings[kind]), setpoint, hand_back)
    return {role: _overridden(role, *presets[role], adapter) for role in adapter.devices}


def _overridden(role: str, fields: dict[str, TopicBinding], constants: dict[str, float | int | str],
                setpoint: TopicBinding | None, hand_back: HandBack | None, adapter: AdapterSection) -> MqttDeviceMap:
    for key in sorted(set(adapter.topics) | set(adapter.scales)):
        device, _, name = key.partition(".")
        if device != role:
            continue
        if name == HAND_BACK_FIELD:
            hand_back = HandBack(adapter.topics[key], hand_back.value if hand_back else AUTO_MODE)
            continue
        current = setpoint if name == SETPOINT_FIELD else fields.get(name)
        topic = adapter.topics.get(key) or (current.topic if current else None)
        if topic is None:
            raise ConfigError(f"devices.adapter.scales.{key}: no topic carries {key} (set devices.adapter.topics)")
        binding = TopicBinding(topic, adapter.scales.get(key, current.scale if current else 1.0),
                               current.enum if current else {})
        if name == SETPOINT_FIELD:
            setpoint = binding
        else:
            fields[name] = binding
            constants.pop(name, None)
    if not adapter.battery_control:
        setpoint = hand_back = None
    try:
        return MqttDeviceMap(DeviceKind(role), fields, constants, setpoint, hand_back)
    except ConfigError as exc:
        raise ConfigError(f"devices.adapter ({adapter.topic_map} topics): {exc}") from None


def _mqtt_set(config: NodeConfig, adapter: AdapterSection, clock_ms: Callable[[], int]) -> RealDeviceSet:
    victron = adapter.topic_map == "victron"
    mqtt = MqttConfig(
        host=adapter.host, port=adapter.effective_port, devices=_mqtt_maps(config, adapter),
        client_id=adapter.client_id,
        keepalive_topic=victron_keepalive_topic(adapter.portal_id) if victron else None,
        keepalive_interval_s=adapter.keepalive_s, max_age_s=adapter.max_age_ms / 1000,
        reconnect_interval_s=adapter.poll_interval_ms / 1000)
    site = MqttSite(mqtt, clock_ms)
    devices: dict[str, RealDevice | SummedPv] = {
        role: RealDevice(device, control=adapter.battery_control or device.kind is not DeviceKind.BATTERY,
                         no_control_reason=NO_BATTERY_CONTROL)
        for role, device in site.devices.items()}
    return RealDeviceSet(_with_load(devices), mqtt_site=site, revert_s=adapter.revert_s)


# --- running the links ---------------------------------------------------------------------------

async def discover_kinds(client: SunSpecClient) -> frozenset[DeviceKind]:
    """The kinds of device a SunSpec unit's models make it (reads its model chain)."""
    models = await client.models()
    return frozenset(kind for kind, ids in KIND_MODELS.items() if any(m in models for m in ids))


async def _discover(device_set: RealDeviceSet, link: ModbusLink, expected: frozenset[DeviceKind]) -> None:
    """Read the unit's model chain once it answers, and say which configured kinds it lacks."""
    failures = 0
    while True:
        try:
            found = await link.call(lambda: discover_kinds(link.client))
            break
        except DeviceError as exc:
            if not failures:   # say it once; an absent unit is normal at night, garbage is not
                level = logging.INFO if isinstance(exc, DeviceUnreachable) else logging.WARNING
                log.log(level, "SunSpec unit %s: model chain not read (%s); trying again", link.name, exc)
            failures += 1
            await trio.sleep(link.retry_s)
    device_set.discovered[link.name] = found
    if missing := expected - found:
        log.warning("SunSpec unit %s has no model for %s (it has models for %s)", link.name,
                    ", ".join(sorted(k.value for k in missing)), ", ".join(sorted(k.value for k in found)) or "nothing")


def _expected_kinds(device_set: RealDeviceSet) -> dict[ModbusLink, frozenset[DeviceKind]]:
    expected: dict[ModbusLink, set[DeviceKind]] = {link: set() for link in device_set.links}
    for device in device_set.devices.values():
        for part in device.inverters if isinstance(device, SummedPv) else [device]:
            if isinstance(part, RealDevice) and part.link is not None:
                expected[part.link].add(part.kind)
    return {link: frozenset(kinds) for link, kinds in expected.items()}


HAND_BACK_TIMEOUT_S = 5.0
FAULT_WARNING_INTERVAL_S = 60.0


def _controllable_batteries(device_set: RealDeviceSet) -> list[RealDevice]:
    return [d for d in device_set.devices.values()
            if isinstance(d, RealDevice) and d.kind is DeviceKind.BATTERY and d.control]


async def _enforce_revert(battery: RealDevice, revert_s: float) -> None:
    """Hand the battery back once the node's setpoints stopped for ``revert_s``: the controller is
    stale (its planner stopped, or hands no fresh setpoint), so its last rate must not stand.
    A SunSpec battery also reverts by itself (model 124 ``InOutWRte_RvrtTms``); MQTT has no such
    register, so this is its only guard while the node runs."""
    warnings = RateLimitedWarning(log, FAULT_WARNING_INTERVAL_S)
    while True:
        if not battery.controlling:
            await trio.sleep(revert_s / 4)      # how late a hand-back may come: a quarter of revert_s
            continue
        silent_s = trio.current_time() - battery.last_command_s
        if silent_s < revert_s:
            await trio.sleep(revert_s - silent_s)
            continue
        try:
            await battery.hand_back()
            log.warning("battery: no setpoint for %.0f s; control handed back to the battery", silent_s)
        except DeviceError as exc:
            warnings.warn(trio.current_time(), "battery: could not hand control back: %s", exc)
            await trio.sleep(revert_s / 4)


async def _hand_back_modbus_batteries(device_set: RealDeviceSet) -> None:
    """At close, give back every SunSpec battery the node still controls (MQTT batteries are given
    back by their session as it ends, ``MqttSite``)."""
    for battery in _controllable_batteries(device_set):
        if battery.controlling and battery.link is not None:
            try:
                await battery.hand_back()
                log.info("battery: control handed back at stop")
            except DeviceError as exc:
                log.warning("battery: could not hand control back at stop: %s", exc)


@asynccontextmanager
async def open_device_links(device_set: DeviceSet | None) -> AsyncIterator[None]:
    """Run ``device_set``'s connections for the block (see the module docstring)."""
    if not isinstance(device_set, RealDeviceSet) or device_set.links_open:
        yield
        return
    device_set.links_open = True
    try:
        async with AsyncExitStack() as stack:
            if trio_asyncio.current_loop.get() is None:
                await stack.enter_async_context(open_device_loop())
            nursery = await stack.enter_async_context(trio.open_nursery())
            if device_set.mqtt_site is not None:
                await nursery.start(device_set.mqtt_site.run)
            for link, kinds in _expected_kinds(device_set).items():
                nursery.start_soon(_discover, device_set, link, kinds)
            for battery in _controllable_batteries(device_set):
                nursery.start_soon(_enforce_revert, battery, device_set.revert_s)
            try:
                yield
            finally:
                # Shielded and bounded: the node is stopping (often cancelled), and a battery left
                # in remote mode at its last rate is the one thing that must not outlive it.
                with trio.CancelScope(shield=True), trio.move_on_after(HAND_BACK_TIMEOUT_S):
                    await _hand_back_modbus_batteries(device_set)
                nursery.cancel_scope.cancel()
                # Shielded: an unshielded await in a cancelled scope would raise Cancelled and
                # swallow whatever exception the block is leaving with.
                with trio.CancelScope(shield=True):
                    for link in device_set.links:
                        await link.client.aclose()
    finally:
        device_set.links_open = False


__all__ = ["DerivedLoad", "ModbusLink", "RealDevice", "RealDeviceSet", "SummedPv", "discover_kinds",
           "open_device_links", "real_device_set"]
