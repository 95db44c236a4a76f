"""The node's devices as a service: run them, sample them, keep per-slot energies, flag stale ones.

``DeviceService`` (name ``devices``) runs on every node that has devices (``has_devices``: the
agent strategy, which plans from them, or any configured series file, PV array, battery or real
adapter); it sets ``node.telemetry`` to itself. Its closed slots feed the node's signed meter
readings (``p2pgrid.settlement.node_service``). Its devices come from a ``DeviceSet``:

* **simulated** (``devices.mode = "simulated"``): one ``SimulatedSite`` built from ``[devices]``
  (PV array, battery) and driven by energy series: ``devices.series_file`` in the data dir (JSON
  ``{"load": [Wh per slot], "pv": [Wh per slot]}``, as simnet writes ``energy.json``) from
  ``devices.series_start_s`` on, step-held per zone slot; without a file the load is the constant
  ``devices.base_load_w`` and there is no PV input. The site advances on the node's market clock.
* **real** (``devices.mode = "real"``): the hardware behind ``[devices.adapter]``
  (``p2pgrid.devices.real_set``: SunSpec Modbus TCP units, MQTT topic maps), whose connections
  stay open while the service samples; tests and callers may pass any ``DeviceSet`` instead.

Sampling uses ``p2pgrid.devices.sampler`` at ``devices.sample_period_ms`` (real time). Staleness is
judged in market time: under a scaled clock a real sampling period spans ``speed`` times more
market time, so the number of missed periods allowed scales with the clock's speed.

What the service keeps (in memory, bounded; persisted in ``<data_dir>/telemetry.sqlite`` through
``p2pgrid.devices.telemetry_store`` every ``FLUSH_S`` real seconds and at stop, and reloaded at start, so
a restart keeps the history):

* the last sample of each device and ``stale_devices(now_ms)`` (sampler health STALE or a device
  that never answered);
* per delivery slot: metered grid import/export (``p2pgrid.devices.telemetry.slot_energy`` over the
  meter's counters, exact at slot edges) and load / PV energy (mean sampled power × slot length);
  a slot is closed when the first meter reading after its end arrives (so its edges are
  bracketed); ``completed_slots()`` lists the closed slots, oldest first; ``closed_until_ms`` is
  the end of the newest closed slot (a slot ending at or before it will not change any more);
* a downsampled history of every device's power (``HISTORY_BUCKET_MS`` buckets,
  ``HISTORY_BUCKETS`` of them), for dashboards and ``telemetry_get``; buckets reloaded from the
  store fill in the time before the restart.

``apply(kind, setpoint)`` sends a setpoint to the device of that kind and returns ``Applied``.

A device whose samples are BAD is reported as a WARNING at once and then at most once a minute
while it stays so (``p2pgrid.logs.RateLimitedWarning``), and with one INFO line when it is back.
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.devices.base import Applied, DeviceKind, Quality, Setpoint, SetpointRejected
from p2pgrid.devices.battery import BatterySpec
from p2pgrid.devices.device_set import DeviceSet
from p2pgrid.devices.pv import PvArraySpec
from p2pgrid.devices.readings import BatteryReading, MeterReading, Reading
from p2pgrid.devices.sampler import Sample, SampledDevice, open_sampler
from p2pgrid.devices.series import Series
from p2pgrid.devices.simulated import SimulatedSite, SiteInputs, SiteSpec, step_site
from p2pgrid.devices.telemetry import (Bucket, CounterPoint, MeterCounters, SlotEnergy, bridge_resets, downsample,
                                       slot_energy)
from p2pgrid.devices.telemetry_store import TELEMETRY_DB, SlotTelemetry, TelemetryStore, open_telemetry_store, regroup
from p2pgrid.errors import ConfigError
from p2pgrid.logs import RateLimitedWarning
from p2pgrid.service import NodeBasics

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

HISTORY_BUCKET_MS = 60_000
HISTORY_BUCKETS = 24 * 60
SLOTS_KEPT = 4 * 96
METER_POINTS_KEPT = 20_000
BASE_MISSED_PERIODS = 3
FLUSH_S = 2.0                # real seconds between writes of the telemetry history
FAULT_WARNING_INTERVAL_S = 60.0   # a device that keeps failing: one WARNING a minute at most


class WithDevices(NodeBasics, Protocol):
    """A node with a device-service slot: ``telemetry`` is the ``DeviceService`` once it runs."""

    telemetry: DeviceService | None


def _series_from_wh(start_ms: int, slot_s: int, energies: list[float]) -> Series:
    return Series.of(start_ms, slot_s * 1000, [wh * 3600 / slot_s for wh in energies])


def simulated_device_set(config: NodeConfig, clock_ms: Callable[[], int]) -> DeviceSet:
    """A simulated site from ``[devices]`` and the optional series file (see module docstring)."""
    devices = config.devices
    slot_s = config.zone.slots.length_s
    load = Series.constant(float(devices.base_load_w))
    pv_series: Series | None = None
    if devices.series_file:
        path = config.node.data_dir / devices.series_file
        try:
            data = json.loads(path.read_text())
            start_ms = devices.series_start_s * 1000
            load = _series_from_wh(start_ms, slot_s, [float(v) for v in data["load"]])
            if data.get("pv"):
                pv_series = _series_from_wh(start_ms, slot_s, [float(v) for v in data["pv"]])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"devices.series_file: cannot read {path}: {exc}") from exc
    pv_spec = PvArraySpec(peak_w=devices.pv.kwp * 1000, tilt_deg=devices.pv.tilt_deg,
                          azimuth_deg=devices.pv.azimuth_deg) if devices.pv is not None and devices.pv.kwp > 0 else None
    battery_spec, soc_pct = None, 50.0
    if devices.battery is not None:
        b = devices.battery
        one_way = math.sqrt(b.round_trip_efficiency)
        battery_spec = BatterySpec(capacity_wh=b.capacity_wh, max_charge_w=b.max_charge_w,
                                   max_discharge_w=b.max_discharge_w, charge_efficiency=one_way,
                                   discharge_efficiency=one_way, self_discharge_per_day=b.self_discharge_per_day,
                                   min_soc_pct=b.soc_min * 100, max_soc_pct=b.soc_max * 100, reserve_pct=0.0)
        soc_pct = b.initial_soc * 100
    inputs = SiteInputs(load_w=load, pv_available_w=pv_series if pv_spec is not None else None)
    site = SimulatedSite(SiteSpec(pv=pv_spec, battery=battery_spec), inputs, clock_ms, soc_pct=soc_pct)
    # A step of no time fills in the powers at the start, so the first readings are not all zero.
    site.state = step_site(site.spec, site.inputs, site.state, 0.0)
    kinds = [DeviceKind.METER, DeviceKind.LOAD]
    kinds += [DeviceKind.PV] if pv_spec is not None else []
    kinds += [DeviceKind.BATTERY] if battery_spec is not None else []
    return DeviceSet({kind.value: site.device(kind) for kind in kinds}, site)


def device_set_for(config: NodeConfig, clock_ms: Callable[[], int]) -> DeviceSet:
    if config.devices.mode == "simulated":
        return simulated_device_set(config, clock_ms)
    from p2pgrid.devices.real_set import real_device_set  # imports the asyncio adapters: only when needed
    return real_device_set(config, clock_ms)


@dataclass
class _SlotAccumulator:
    power_sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, power_w: float) -> None:
        self.power_sums[kind] = self.power_sums.get(kind, 0.0) + power_w
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def energy_wh(self, kind: str, slot_s: int) -> float:
        count = self.counts.get(kind, 0)
        return self.power_sums.get(kind, 0.0) / count * slot_s / 3600 if count else 0.0


class DeviceService:
    """See the module docstring. ``persist=False`` keeps everything in memory only."""

    name = "devices"

    def __init__(self, device_set: DeviceSet | None = None, *, period_s: float | None = None,
                 persist: bool = True) -> None:
        self._faults: dict[str, RateLimitedWarning] = {}
        self.device_set = device_set
        self.period_s = period_s
        self.persist = persist
        self.last: dict[str, Sample] = {}
        self.last_good: dict[str, Reading] = {}            # per device: its last GOOD reading (dashboards)
        self.slots: dict[int, SlotTelemetry] = {}
        self.closed_until_ms: int | None = None
        self._accumulators: dict[int, _SlotAccumulator] = {}
        self._meter_points: deque[MeterReading] = deque(maxlen=METER_POINTS_KEPT)
        self._history: dict[str, deque[tuple[int, float]]] = {}
        self._stored_buckets: dict[str, list[Bucket]] = {}   # history from before a restart
        self._unsaved_slots: list[SlotTelemetry] = []
        self._dirty_since_ms: dict[str, int] = {}            # per device: oldest point not written yet
        self._sampler: Any = None
        self._clock_ms: Callable[[], int] = lambda: 0
        self._slot_s = 900
        self._max_gap_ms = 225_000
        self._rules: Any = None
        self.samples_seen = 0

    async def run(self, node: WithDevices, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._clock_ms = node.clock.now_ms
        self._rules = node.config.zone.slot_rules
        self._slot_s = node.config.zone.slots.length_s
        self._max_gap_ms = 1000 * (node.config.devices.meter.max_gap_s or max(60, self._slot_s // 4))
        if self.device_set is None:
            self.device_set = device_set_for(node.config, self._clock_ms)
        if not self.persist:
            await self._sample(node, task_status)
            return
        data_dir = node.config.node.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        async with open_telemetry_store(data_dir / TELEMETRY_DB) as store:
            await self._reload(store)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._flush_every, store)
                    await self._sample(node, task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await self.flush(store)

    async def _sample(self, node: WithDevices, task_status: Any) -> None:
        devices = self.device_set.devices if self.device_set is not None else {}
        period_s = self.period_s if self.period_s is not None else node.config.devices.sample_period_ms / 1000
        speed = float(getattr(node.clock, "speed", 1.0))
        missed = max(BASE_MISSED_PERIODS, math.ceil(BASE_MISSED_PERIODS * speed))
        sampled = {name: SampledDevice(device, period_s) for name, device in devices.items()}
        links = self.device_set.open_links() if self.device_set is not None else nullcontext()
        async with links, open_sampler(sampled, self._clock_ms, missed_periods=missed) as (sampler, samples):
            self._sampler = sampler
            node.telemetry = self
            task_status.started()
            async for sample in samples:
                self.record(sample)
                self._report(sample)

    def _report(self, sample: Sample) -> None:
        """A device that keeps failing is a WARNING, at most one a minute per device (and one
        line when it answers again); a healthy sample says nothing."""
        faults = self._faults.setdefault(sample.device, RateLimitedWarning(log, FAULT_WARNING_INTERVAL_S))
        if sample.quality is Quality.BAD:
            faults.warn(trio.current_time(), "device %s: %s", sample.device, sample.error or "bad reading")
        elif sample.quality is Quality.GOOD:
            faults.cleared("device %s answers again", sample.device)

    # --- persistence ----------------------------------------------------------------------------

    async def _reload(self, store: TelemetryStore) -> None:
        """Take back what an earlier run of this node stored (bounded like the live data)."""
        now = self._clock_ms()
        for s in await store.slots(since_slot=self._rules.slot_of(now) - SLOTS_KEPT * self._slot_s):
            self.slots[s.slot] = s
        if self.slots:
            self.closed_until_ms = self._rules.slot_end_ms(max(self.slots))
        self._stored_buckets = await store.buckets(since_ms=now - HISTORY_BUCKETS * HISTORY_BUCKET_MS)

    async def flush(self, store: TelemetryStore) -> None:
        """Write the slots closed and the history buckets touched since the last flush."""
        slots, self._unsaved_slots = self._unsaved_slots, []
        buckets: dict[str, list[Bucket]] = {}
        for device, since in self._dirty_since_ms.items():
            start = since // HISTORY_BUCKET_MS * HISTORY_BUCKET_MS
            buckets[device] = downsample(((t, v) for t, v in self._history.get(device, ()) if t >= start),
                                         HISTORY_BUCKET_MS)
        self._dirty_since_ms = {}
        await store.save(slots, buckets)

    async def _flush_every(self, store: TelemetryStore) -> None:
        while True:
            await trio.sleep(FLUSH_S)
            await self.flush(store)
            if self.slots:
                await store.prune(min(self.slots), self._clock_ms() - HISTORY_BUCKETS * HISTORY_BUCKET_MS)

    # --- recording ------------------------------------------------------------------------------

    def record(self, sample: Sample) -> None:
        """Take one sample into the last values, the slot accumulators and the history."""
        self.samples_seen += 1
        self.last[sample.device] = sample
        reading = sample.reading
        if reading is None or sample.quality is not Quality.GOOD:
            return
        self.last_good[sample.device] = reading
        # A power reading describes the moments just before it (a simulated site reports its last
        # step, a real device an average over its last interval): it counts for that instant's slot.
        slot = self._rules.slot_of(reading.t_ms - 1)
        power = float(getattr(reading, "power_w", 0.0))
        if slot not in self.slots:          # a late reading of a closed slot: its mean stands
            self._accumulators.setdefault(slot, _SlotAccumulator()).add(reading.kind.value, power)
        if isinstance(reading, MeterReading):
            # Slots close on the meter's clock: a slot's energy needs a meter reading past its end.
            self._meter_points.append(reading)
            self._close_ended_slots(reading.t_ms)
        history = self._history.setdefault(sample.device, deque(maxlen=HISTORY_BUCKETS * 60))
        history.append((reading.t_ms, power))
        self._dirty_since_ms[sample.device] = min(self._dirty_since_ms.get(sample.device, reading.t_ms),
                                                  reading.t_ms)

    def _close_ended_slots(self, now_ms: int) -> None:
        current = self._rules.slot_of(now_ms)
        for slot in sorted(s for s in self._accumulators if s < current):
            acc = self._accumulators.pop(slot)
            energy = self._meter_energy(slot)
            closed = SlotTelemetry(slot, energy.import_wh, energy.export_wh,
                                   acc.energy_wh(DeviceKind.LOAD.value, self._slot_s),
                                   acc.energy_wh(DeviceKind.PV.value, self._slot_s), energy.complete)
            self.slots[slot] = closed
            self._unsaved_slots.append(closed)
            self.closed_until_ms = max(self.closed_until_ms or 0, self._rules.slot_end_ms(slot))
        while len(self.slots) > SLOTS_KEPT:
            del self.slots[min(self.slots)]

    def _meter_energy(self, slot: int) -> SlotEnergy:
        points = list(self._meter_points)
        counters = MeterCounters(bridge_resets(CounterPoint(r.t_ms, r.import_wh) for r in points),
                                 bridge_resets(CounterPoint(r.t_ms, r.export_wh) for r in points))
        return slot_energy(counters, slot, self._rules, self._max_gap_ms)

    # --- what the node asks ----------------------------------------------------------------------

    def completed_slots(self) -> list[SlotTelemetry]:
        return [self.slots[s] for s in sorted(self.slots)]

    def reading(self, kind: DeviceKind) -> Reading | None:
        """The last good reading of the device of ``kind`` (None if it never answered well)."""
        name = self.device_set.of_kind(kind) if self.device_set else None
        sample = self.last.get(name) if name else None
        if sample is None or sample.reading is None:
            return None
        return sample.reading

    def battery(self) -> BatteryReading | None:
        reading = self.reading(DeviceKind.BATTERY)
        return reading if isinstance(reading, BatteryReading) else None

    def stale_devices(self, now_ms: int | None = None) -> set[str]:
        if self._sampler is None:
            return set(self.device_set.devices) if self.device_set else set()
        health = self._sampler.health(self._clock_ms() if now_ms is None else now_ms)
        return {name for name, quality in health.items() if quality is Quality.STALE}

    def history(self, device: str, bucket_ms: int = HISTORY_BUCKET_MS) -> list[Bucket]:
        """Downsampled power history of ``device`` (W): the buckets stored before a restart that end
        before the first live sample, then the live samples (``HISTORY_BUCKET_MS`` is the finest
        grain of the stored part)."""
        live = self._history.get(device, ())
        first_live = live[0][0] if live else None
        stored = [b for b in self._stored_buckets.get(device, ())
                  if first_live is None or b.start_ms + HISTORY_BUCKET_MS <= first_live]
        return regroup(stored + downsample(live, bucket_ms), bucket_ms)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view (RPC ``telemetry_get``, dashboards)."""
        now = self._clock_ms()
        stale = self.stale_devices(now)
        devices: dict[str, Any] = {}
        for name, sample in self.last.items():
            devices[name] = {"kind": sample.kind.value, "t_ms": sample.t_ms, "quality": sample.quality.value,
                             "stale": name in stale, "error": sample.error,
                             "power_w": getattr(sample.reading, "power_w", None)}
            if isinstance(sample.reading, BatteryReading):
                devices[name]["soc_pct"] = sample.reading.soc_pct
        slots = [{"slot": s.slot, "import_wh": s.import_wh, "export_wh": s.export_wh,
                  "load_wh": round(s.load_wh), "pv_wh": round(s.pv_wh), "complete": s.complete}
                 for s in self.completed_slots()[-8:]]
        return {"now_ms": now, "devices": devices, "stale": sorted(stale), "slots": slots}

    async def apply(self, kind: DeviceKind, setpoint: Setpoint) -> Applied:
        name = self.device_set.of_kind(kind) if self.device_set else None
        device = self.device_set.devices.get(name) if self.device_set and name else None
        if device is None or not hasattr(device, "apply"):
            raise SetpointRejected(f"no controllable {kind.value} device")
        return await device.apply(setpoint)   # type: ignore[attr-defined]


def has_devices(config: NodeConfig) -> bool:
    """Whether the node has devices behind its meter to run (see the module docstring)."""
    devices = config.devices
    return (config.agent.strategy == "agent" or bool(devices.series_file) or devices.pv is not None
            or devices.battery is not None or devices.mode == "real")


def device_services(config: NodeConfig) -> list[Any]:
    """The services of this module the node runs, by config (the registry, ``p2pgrid.node.registry``, adds them)."""
    return [DeviceService()] if has_devices(config) else []


__all__ = ["DeviceService", "SlotTelemetry", "WithDevices", "device_services", "device_set_for",
           "has_devices", "simulated_device_set"]
