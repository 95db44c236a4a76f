"""Sampling loops: read every device at its own period and hand each result on as a ``Sample``.

One trio task per device ticks at the device's period (trio time, so ``MockClock`` drives it in
tests); a tick that overruns skips the ticks it missed rather than bunching up. Each tick:

* ``read()`` within ``timeout`` (default: the period): a reading → a GOOD sample (or STALE, if
  the device says so or its timestamp is older than ``missed_periods`` periods);
* any ``DeviceError`` or a timeout → a BAD sample carrying the error text; the loop goes on.

Samples go to a trio memory channel without blocking: when the consumer lags and the buffer is
full, the sample is dropped and counted in ``dropped`` (fresh data matters more than complete
data here; the meter's counters make up for lost samples when slot energy is computed).

``health(now_ms)`` tells, per device, GOOD (last sample good and recent), BAD (last attempt
failed but a good reading is recent) or STALE (no good reading for more than
``missed_periods`` periods, ``p2pgrid.devices.telemetry.is_stale``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from p2pgrid.devices.base import DeviceKind, Quality
from p2pgrid.devices.device import Device
from p2pgrid.devices.readings import Reading
from p2pgrid.devices.telemetry import DEFAULT_MISSED_PERIODS, is_stale
from p2pgrid.errors import ConfigError, DeviceError

DEFAULT_BUFFER = 256


@dataclass(frozen=True)
class Sample:
    device: str
    kind: DeviceKind
    t_ms: int
    quality: Quality
    reading: Reading | None
    error: str = ""


@dataclass(frozen=True)
class SampledDevice:
    device: Device
    period_s: float
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise ConfigError("sampling period_s must be > 0")


class Sampler:
    def __init__(self, devices: Mapping[str, SampledDevice], send: trio.MemorySendChannel[Sample],
                 clock: Callable[[], int],
                 missed_periods: int = DEFAULT_MISSED_PERIODS) -> None:
        self.devices = dict(devices)
        self.clock = clock
        self.missed_periods = missed_periods
        self.dropped = 0
        self.last_good_ms: dict[str, int | None] = {name: None for name in devices}
        self.last_sample: dict[str, Sample] = {}
        self._send = send

    async def sample_once(self, name: str) -> Sample:
        entry = self.devices[name]
        timeout = entry.timeout_s if entry.timeout_s is not None else entry.period_s
        period_ms = round(entry.period_s * 1000)
        reading: Reading | None = None
        error = ""
        try:
            with trio.move_on_after(timeout):
                reading = await entry.device.read()
            if reading is None:
                error = f"no answer within {timeout:g} s"
        except DeviceError as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = self.clock()
        if reading is None:
            sample = Sample(name, entry.device.kind, now, Quality.BAD, None, error)
        else:
            quality = reading.quality
            if quality is Quality.GOOD and is_stale(reading.t_ms, now, period_ms,
                                                    self.missed_periods):
                quality = Quality.STALE
            sample = Sample(name, entry.device.kind, reading.t_ms, quality, reading)
            if quality is Quality.GOOD:
                self.last_good_ms[name] = reading.t_ms
        self.last_sample[name] = sample
        try:
            self._send.send_nowait(sample)
        except trio.WouldBlock:
            self.dropped += 1
        return sample

    async def _loop(self, name: str) -> None:
        period = self.devices[name].period_s
        next_tick = trio.current_time()
        while True:
            await self.sample_once(name)
            next_tick += period
            now = trio.current_time()
            if next_tick < now:  # overran: skip the missed ticks
                next_tick += (now - next_tick) // period * period + period
            await trio.sleep_until(next_tick)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        async with trio.open_nursery() as nursery:
            for name in self.devices:
                nursery.start_soon(self._loop, name)
            task_status.started()

    def health(self, now_ms: int) -> dict[str, Quality]:
        out = {}
        for name, entry in self.devices.items():
            period_ms = round(entry.period_s * 1000)
            last = self.last_sample.get(name)
            if is_stale(self.last_good_ms[name], now_ms, period_ms, self.missed_periods):
                out[name] = Quality.STALE
            elif last is not None and last.quality is not Quality.GOOD:
                out[name] = last.quality
            else:
                out[name] = Quality.GOOD
        return out


@asynccontextmanager
async def open_sampler(devices: Mapping[str, SampledDevice], clock: Callable[[], int],
                       buffer: int = DEFAULT_BUFFER,
                       missed_periods: int = DEFAULT_MISSED_PERIODS
                       ) -> AsyncIterator[tuple[Sampler, trio.MemoryReceiveChannel[Sample]]]:
    """Run a sampler for the block; yields it and the channel its samples arrive on."""
    send, receive = trio.open_memory_channel[Sample](buffer)
    sampler = Sampler(devices, send, clock, missed_periods)
    # Channels close after the nursery: a device read that finishes despite cancellation (some
    # asyncio clients do) may still send its sample, and must not meet a closed channel.
    async with send, receive, trio.open_nursery() as nursery:
        await nursery.start(sampler.run)
        try:
            yield sampler, receive
        finally:
            nursery.cancel_scope.cancel()
