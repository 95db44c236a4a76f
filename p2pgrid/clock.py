"""The one clock a node reads market time from (Unix ms, UTC).

Pure code never reads a clock: it takes ``now_ms``. The shell asks this object, and only this one.

* ``SystemClock``  — production: the UTC wall clock.
* ``ScaledClock``  — simnet: ``sim_epoch_ms + (monotonic − start_monotonic) × speed``. Every process
  uses this same formula. Separate processes agree without talking because they share an absolute
  **wall-clock anchor** (``anchor_wall_ms``): each process converts it once to its own monotonic
  origin (``ScaledClock.anchored``), then runs on its monotonic clock, immune to wall-clock steps.
* ``PacedClock``   — simnet, every node in one process: scaled time that slows down when the
  process falls behind (its pacer task runs late) instead of jumping ahead of its nodes, and, given
  a ``pace``, while the nodes' work piles up (a backlog of ledger entries or settlements), so a
  starved run gives the same results, only later.
* ``ManualClock``  — unit tests: stepped by hand; ``sleep_until`` waiters wake when it is advanced.
* ``TrioClock``    — async tests: ``epoch_ms + trio.current_time() × 1000 × speed``, so a
  ``trio.testing.MockClock`` (autojump or stepped) drives market time.

Do not speed up trio's own clock under real libp2p hosts (py-libp2p reads ``time.time()``); scale
market time with ``ScaledClock`` instead.

Every clock also answers ``real_seconds_until(t_ms)``: how long trio must sleep (in trio seconds)
for market time to reach ``t_ms``; ``sleep_until(clock, t_ms)`` is built on it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Protocol

import trio

from p2pgrid.errors import ConfigError


class Clock(Protocol):
    def now_ms(self) -> int: ...

    def real_seconds_until(self, t_ms: int) -> float: ...


class SystemClock:
    """UTC wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def real_seconds_until(self, t_ms: int) -> float:
        return max(0.0, (t_ms - self.now_ms()) / 1000)


@dataclass(frozen=True)
class ScaledClock:
    """Simulated time running ``speed`` times faster than the monotonic clock from ``start_monotonic``."""

    sim_epoch_ms: int
    speed: float
    start_monotonic: float

    def __post_init__(self) -> None:
        if not self.speed > 0 or not math.isfinite(self.speed):
            raise ConfigError(f"clock.speed must be a positive number, got {self.speed}")

    @classmethod
    def anchored(cls, sim_epoch_ms: int, speed: float, anchor_wall_ms: int) -> ScaledClock:
        """The clock on which sim time equals ``sim_epoch_ms`` at wall-clock instant ``anchor_wall_ms``.

        Reads both clocks once, here, to translate the shared wall-clock anchor into this process's
        monotonic time; from then on only the monotonic clock is read.
        """
        wall_s, mono_s = time.time(), time.monotonic()
        return cls(sim_epoch_ms, speed, mono_s - (wall_s - anchor_wall_ms / 1000))

    def now_ms(self) -> int:
        return self.sim_ms_at(time.monotonic())

    def sim_ms_at(self, monotonic_s: float) -> int:
        """The formula, exposed so every process (and every test) computes it the same way."""
        return self.sim_epoch_ms + math.floor((monotonic_s - self.start_monotonic) * self.speed * 1000)

    def real_seconds_until(self, t_ms: int) -> float:
        return max(0.0, (t_ms - self.now_ms()) / 1000 / self.speed)


class PacedClock:
    """Market time running ``speed`` times faster than real time, for nodes sharing one process,
    that never runs ahead of the process: each real interval counts for at most ``max_step_s``.

    ``run`` (a task) folds the real time elapsed since its last tick into market time every
    ``tick_s``, capped at ``max_step_s``. While the process keeps up, that is the scaled clock;
    when it is starved — another process holds the cores, or its own work keeps the event loop
    busy — the pacer runs late and market time advances only ``max_step_s × speed`` per late tick,
    so no node finds that a quarter hour of market time passed between two of its steps (a meter
    never read, a deadline missed). Between ticks it reads the same formula, capped the same way,
    so it never decreases.

    A process can keep its timers and still lack throughput: its nodes' work (entries waiting for
    votes, slots waiting for settlement) then grows with market time. ``pace`` (called once per
    tick) returns the share of ``speed`` market time runs at until the next tick, in
    ``(0, 1]``: the owner of the nodes says how far behind their work is, and market time waits
    for it — never stops (a pace is clamped to at least ``MIN_PACE``), so nothing that waits for
    market time can deadlock against it. ``held_real_s`` is the real time not counted that way."""

    MIN_PACE = 0.01

    def __init__(self, start_ms: int, speed: float, *, tick_s: float = 0.05, max_step_s: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic,
                 pace: Callable[[], float] | None = None) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ConfigError(f"clock speed must be a positive number, got {speed}")
        self.speed = speed
        self.tick_s = tick_s
        self.max_step_s = max_step_s
        self._monotonic = monotonic
        self._pace = pace
        self._rate = 1.0             # the pace until the next tick
        self._base_ms = float(start_ms)
        self._base_real = monotonic()
        self.lost_real_s = 0.0       # real time not counted as market time (the process was behind)
        self.held_real_s = 0.0       # real time not counted because the pace was below 1 (work behind)

    def now_ms(self) -> int:
        return math.floor(self._base_ms + self._counted(self._monotonic()) * self._rate * self.speed * 1000)

    def _counted(self, real_now: float) -> float:
        return min(max(real_now - self._base_real, 0.0), self.max_step_s)

    def real_seconds_until(self, t_ms: int) -> float:
        # At full speed, whatever the pace now: the pace may rise before then, and a sleeper that
        # woke early sleeps again (``sleep_until``), one that woke late missed market time.
        return max(0.0, (t_ms - self.now_ms()) / 1000 / self.speed)

    def advance(self, real_now: float) -> None:
        """Fold the real time since the last call into market time (what each tick does), then
        ask the pace for the next interval."""
        counted = self._counted(real_now)
        self.lost_real_s += max(0.0, real_now - self._base_real - counted)
        self.held_real_s += counted * (1.0 - self._rate)
        self._base_ms += counted * self._rate * self.speed * 1000
        self._base_real = real_now
        if self._pace is not None:
            pace = self._pace()
            self._rate = min(1.0, max(self.MIN_PACE, pace)) if math.isfinite(pace) else 1.0

    async def run(self) -> None:
        while True:
            await trio.sleep(self.tick_s)
            self.advance(self._monotonic())


@dataclass
class ManualClock:
    """A clock that moves only when told to; for unit tests."""

    now: int = 0
    _changed: list[trio.Event] = field(default_factory=list, repr=False)

    def now_ms(self) -> int:
        return self.now

    def set(self, t_ms: int) -> None:
        if t_ms < self.now:
            raise ValueError("a ManualClock never goes backwards")
        self.now = t_ms
        waiters, self._changed = self._changed, []
        for event in waiters:
            event.set()

    def advance(self, delta_ms: int) -> None:
        self.set(self.now + delta_ms)

    def real_seconds_until(self, t_ms: int) -> float:
        return math.inf if t_ms > self.now else 0.0

    async def wait_changed(self) -> None:
        event = trio.Event()
        self._changed.append(event)
        await event.wait()


@dataclass(frozen=True)
class TrioClock:
    """Market time from trio's clock: ``epoch_ms + trio.current_time() × 1000 × speed``.

    Under ``trio.testing.MockClock`` (e.g. ``autojump_threshold=0``) tests run hours of market time
    in milliseconds. Must be read inside a trio run.
    """

    epoch_ms: int = 0
    speed: float = 1.0

    def now_ms(self) -> int:
        return self.epoch_ms + math.floor(trio.current_time() * 1000 * self.speed)

    def real_seconds_until(self, t_ms: int) -> float:
        return max(0.0, (t_ms - self.now_ms()) / 1000 / self.speed)


async def sleep_until(clock: Clock, t_ms: int) -> None:
    """Sleep until market time ``clock.now_ms()`` reaches ``t_ms``."""
    while clock.now_ms() < t_ms:
        if isinstance(clock, ManualClock):
            await clock.wait_changed()
            continue
        # Sleep at least 1 ms of trio time: rounding must not turn this into a busy loop.
        await trio.sleep(max(clock.real_seconds_until(t_ms), 0.001))


async def sleep_ms(clock: Clock, delta_ms: int) -> None:
    """Sleep ``delta_ms`` of market time."""
    await sleep_until(clock, clock.now_ms() + delta_ms)


def clock_from_config(mode: str, sim_epoch_ms: int, speed: float, anchor_wall_ms: int) -> Clock:
    """The clock a ``[clock]`` config section describes."""
    if mode == "system":
        return SystemClock()
    if mode == "scaled":
        return ScaledClock.anchored(sim_epoch_ms, speed, anchor_wall_ms)
    raise ConfigError(f"clock.mode: unknown mode {mode!r}")
