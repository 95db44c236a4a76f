"""The telemetry history in SQLite: slots and downsampled power survive a restart of the device
service on the same data dir (a real database file in tmp_path)."""

from __future__ import annotations

import json

import trio

from p2pgrid.config import build_config
from p2pgrid.devices.service import HISTORY_BUCKET_MS, DeviceService, simulated_device_set
from p2pgrid.devices.telemetry import Bucket
from p2pgrid.devices.telemetry_store import TELEMETRY_DB, SlotTelemetry, open_telemetry_store, regroup
from p2pgrid.net.testing import wait_until

START_MS = 1_700_000_100_000 // 900_000 * 900_000      # a slot start


class ManualClock:
    def __init__(self, now_ms: int) -> None:
        self.t = now_ms

    def now_ms(self) -> int:
        return self.t


async def test_store_round_trips_slots_and_buckets_and_replaces_a_growing_bucket(tmp_path):
    slot = SlotTelemetry(START_MS // 1000, 400, 0, 400.0, 12.5, True)
    async with open_telemetry_store(tmp_path / TELEMETRY_DB) as store:
        await store.save([slot], {"meter": [Bucket(START_MS, 1, 100.0, 100.0, 100.0, 100.0)]})
        await store.save([], {"meter": [Bucket(START_MS, 2, 150.0, 100.0, 200.0, 200.0)]})
    async with open_telemetry_store(tmp_path / TELEMETRY_DB) as store:
        assert await store.slots() == [slot]
        assert await store.buckets() == {"meter": [Bucket(START_MS, 2, 150.0, 100.0, 200.0, 200.0)]}
        await store.prune(keep_from_slot=slot.slot + 900, keep_from_ms=START_MS + 1)
        assert await store.slots() == [] and await store.buckets() == {}


def test_regroup_weights_means_by_sample_count():
    fine = [Bucket(0, 1, 10.0, 10.0, 10.0, 10.0), Bucket(60_000, 3, 30.0, 20.0, 40.0, 25.0)]
    assert regroup(fine, 120_000) == [Bucket(0, 4, 25.0, 10.0, 40.0, 25.0)]
    assert regroup(fine, 60_000) == fine


def host_for(tmp_path, clock, **meter):
    data = tmp_path / "n"
    data.mkdir(exist_ok=True)
    (data / "energy.json").write_text(json.dumps({"load": [400, 800, 200], "pv": [0, 1000, 1000]}))
    config = build_config({"node": {"data_dir": str(data)},
                           "devices": {"series_file": "energy.json", "series_start_s": START_MS // 1000,
                                       "pv": {"kwp": 8.0}, "meter": meter}}, base_dir=tmp_path)
    return type("Host", (), {"config": config, "clock": clock, "telemetry": None})()


async def run_for_slots(service: DeviceService, host, clock: ManualClock, minutes: int) -> None:
    """Advance market time minute by minute, waiting for each minute's samples."""
    await run_steps(service, host, clock, [1] * minutes)


async def run_steps(service: DeviceService, host, clock: ManualClock, steps: list[int]) -> None:
    """Advance market time by each step (minutes), waiting for that moment's samples."""
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run, host)
        for minutes in steps:
            clock.t += minutes * 60_000
            with trio.fail_after(10):
                await wait_until(lambda: len(service.last) == 3
                                 and all(s.t_ms == clock.t for s in service.last.values()), 0.005)
        nursery.cancel_scope.cancel()


async def test_telemetry_history_and_slots_survive_a_restart_of_the_device_service(tmp_path):
    clock = ManualClock(START_MS)
    host = host_for(tmp_path, clock)
    first = DeviceService(simulated_device_set(host.config, clock.now_ms), period_s=0.005)
    await run_for_slots(first, host, clock, 2 * 15 + 1)
    slots = first.completed_slots()
    assert [s.slot for s in slots if s.complete] == [START_MS // 1000, START_MS // 1000 + 900]
    history = first.history("meter")
    assert len(history) >= 30
    assert (tmp_path / "n" / TELEMETRY_DB).exists()

    # Restart: a new service (new simulated site, empty memory) on the same data dir, an hour later.
    clock.t += 3600_000
    second = DeviceService(simulated_device_set(host.config, clock.now_ms), period_s=0.005)
    await run_for_slots(second, host, clock, 2)
    assert second.completed_slots()[:len(slots)] == slots             # the slots measured before
    assert second.closed_until_ms >= START_MS + 2 * 900_000
    restored = second.history("meter")
    assert restored[:len(history)] == history                         # the power history before
    assert restored[-1].start_ms >= clock.t - 2 * HISTORY_BUCKET_MS   # ... then the new samples
    hourly = second.history("meter", 3600_000)
    assert sum(b.count for b in hourly) == sum(b.count for b in restored)


async def test_without_persistence_nothing_is_written(tmp_path):
    clock = ManualClock(START_MS)
    host = host_for(tmp_path, clock)
    service = DeviceService(simulated_device_set(host.config, clock.now_ms), period_s=0.005, persist=False)
    await run_for_slots(service, host, clock, 16)
    assert service.completed_slots() and not (tmp_path / "n" / TELEMETRY_DB).exists()


async def run_with_a_gap(service: DeviceService, host, clock: ManualClock, gap_minutes: int) -> None:
    """Two minutes sampled, then no sample for ``gap_minutes`` (the sampler starved), then on
    minute by minute past the first slot's end."""
    await run_steps(service, host, clock, [1, 1, gap_minutes] + [1] * (17 - 2 - gap_minutes))


async def test_a_sampling_gap_longer_than_the_meters_max_gap_leaves_the_slot_unmetered(tmp_path):
    clock = ManualClock(START_MS)
    service = DeviceService(simulated_device_set((host := host_for(tmp_path, clock)).config, clock.now_ms),
                            period_s=0.005, persist=False)
    await run_with_a_gap(service, host, clock, 5)         # default: max(60 s, a quarter of 900 s)
    assert [s.complete for s in service.completed_slots() if s.slot == START_MS // 1000] == [False]


async def test_a_configured_max_gap_keeps_a_slot_with_a_longer_gap_metered(tmp_path):
    clock = ManualClock(START_MS)
    host = host_for(tmp_path, clock, max_gap_s=600)
    service = DeviceService(simulated_device_set(host.config, clock.now_ms), period_s=0.005, persist=False)
    await run_with_a_gap(service, host, clock, 5)
    assert [s.complete for s in service.completed_slots() if s.slot == START_MS // 1000] == [True]
