"""Sampling loops under trio's MockClock: periods, failures, hangs, staleness, back-pressure."""

from __future__ import annotations

import trio

from p2pgrid.devices.base import DeviceKind, DeviceProtocolError, Quality
from p2pgrid.devices.readings import LoadReading
from p2pgrid.devices.sampler import SampledDevice, open_sampler
from p2pgrid.devices.series import Series
from p2pgrid.devices.simulated import SimulatedSite, SiteInputs, SiteSpec

T0 = 1_782_000_000_000


def trio_clock_ms() -> int:
    return T0 + round(trio.current_time() * 1000)


class Scripted:
    """A load device whose next answers are scripted: a number, an error, or 'hang'."""

    kind = DeviceKind.LOAD

    def __init__(self, script: list[object], t_offset_ms: int = 0) -> None:
        self.script = list(script)
        self.t_offset_ms = t_offset_ms

    async def read(self) -> LoadReading:
        step = self.script.pop(0) if self.script else 100.0
        if step == "hang":
            await trio.sleep_forever()
        if isinstance(step, Exception):
            raise step
        return LoadReading(trio_clock_ms() - self.t_offset_ms, float(step))  # type: ignore


async def test_each_device_is_sampled_at_its_own_period(autojump_clock):
    site = SimulatedSite(SiteSpec(), SiteInputs(load_w=Series.constant(750)), trio_clock_ms)
    devices = {"meter": SampledDevice(site.device(DeviceKind.METER), period_s=1.0),
               "load": SampledDevice(site.device(DeviceKind.LOAD), period_s=5.0)}
    seen: dict[str, list[int]] = {"meter": [], "load": []}
    async with open_sampler(devices, trio_clock_ms) as (sampler, samples):
        with trio.move_on_after(10.5):
            async for sample in samples:
                assert sample.quality is Quality.GOOD
                seen[sample.device].append(sample.t_ms - T0)
    assert seen["meter"] == [i * 1000 for i in range(11)]
    assert seen["load"] == [0, 5000, 10000]
    assert sampler.health(trio_clock_ms()) == {"meter": Quality.GOOD, "load": Quality.GOOD}


async def test_failures_and_hangs_become_bad_samples_and_the_loop_goes_on(autojump_clock):
    device = Scripted([100.0, DeviceProtocolError("garbage"), "hang", 200.0])
    async with open_sampler({"load": SampledDevice(device, period_s=1.0, timeout_s=0.5)},
                            trio_clock_ms) as (sampler, samples):
        got = [await samples.receive() for _ in range(4)]
    assert [s.quality for s in got] == [Quality.GOOD, Quality.BAD, Quality.BAD, Quality.GOOD]
    assert got[1].error == "DeviceProtocolError: garbage"
    assert got[2].error.startswith("no answer within 0.5")
    assert got[3].reading is not None and got[3].reading.power_w == 200.0
    assert [s.t_ms - T0 for s in got] == [0, 1000, 2500, 3000]


async def test_device_silent_for_three_periods_turns_stale(autojump_clock):
    device = Scripted([1.0] + [DeviceProtocolError("down")] * 10)
    async with open_sampler({"load": SampledDevice(device, period_s=1.0)},
                            trio_clock_ms) as (sampler, samples):
        health = []
        for _ in range(5):
            await samples.receive()
            health.append(sampler.health(trio_clock_ms())["load"])
    assert health == [Quality.GOOD, Quality.BAD, Quality.BAD, Quality.BAD, Quality.STALE]


async def test_reading_with_an_old_timestamp_is_a_stale_sample(autojump_clock):
    device = Scripted([1.0], t_offset_ms=10_000)
    async with open_sampler({"load": SampledDevice(device, period_s=1.0)},
                            trio_clock_ms) as (sampler, samples):
        sample = await samples.receive()
    assert sample.quality is Quality.STALE and sample.reading is not None


async def test_slow_consumer_drops_samples_instead_of_stalling(autojump_clock):
    device = Scripted([])
    async with open_sampler({"load": SampledDevice(device, period_s=1.0)}, trio_clock_ms,
                            buffer=2) as (sampler, samples):
        await trio.sleep(9.5)
        assert sampler.dropped == 8
        assert (await samples.receive()).t_ms == T0
