"""Clocks: the scaled formula, agreement between processes, manual and MockClock-driven time."""

import time

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
import trio.testing

from p2pgrid.clock import ManualClock, PacedClock, ScaledClock, SystemClock, TrioClock, clock_from_config, sleep_ms, sleep_until
from p2pgrid.errors import ConfigError


def test_scaled_clock_formula_is_epoch_plus_elapsed_times_speed():
    clock = ScaledClock(sim_epoch_ms=1_000_000, speed=60.0, start_monotonic=100.0)
    assert clock.sim_ms_at(100.0) == 1_000_000
    assert clock.sim_ms_at(101.5) == 1_000_000 + 90_000      # 1.5 s real = 90 s simulated
    assert clock.sim_ms_at(99.0) == 1_000_000 - 60_000


def test_two_clocks_anchored_to_the_same_wall_instant_agree():
    anchor = time.time_ns() // 1_000_000 - 5_000                # as if the cluster started 5 s ago
    first = ScaledClock.anchored(0, 30.0, anchor)
    second = ScaledClock.anchored(0, 30.0, anchor)
    mono = time.monotonic()
    assert abs(first.sim_ms_at(mono) - second.sim_ms_at(mono)) <= 30       # ≤ 1 ms of real skew × 30
    assert abs(first.sim_ms_at(mono) - 150_000) < 30 * 1000                 # ≈ 5 s × 30, generously


def test_scaled_clock_refuses_a_non_positive_speed():
    with pytest.raises(ConfigError, match="speed"):
        ScaledClock(0, 0.0, 0.0)


def test_system_clock_is_utc_unix_ms():
    assert abs(SystemClock().now_ms() - time.time() * 1000) < 1000


def test_clock_from_config_picks_the_mode():
    assert isinstance(clock_from_config("system", 0, 1.0, 0), SystemClock)
    assert isinstance(clock_from_config("scaled", 0, 2.0, 0), ScaledClock)
    with pytest.raises(ConfigError):
        clock_from_config("lunar", 0, 1.0, 0)


def test_manual_clock_never_goes_backwards():
    clock = ManualClock(1000)
    clock.advance(500)
    assert clock.now_ms() == 1500
    with pytest.raises(ValueError):
        clock.set(1000)


async def test_sleep_until_on_a_manual_clock_wakes_when_advanced_far_enough():
    clock = ManualClock(0)
    woke = trio.Event()

    async def sleeper():
        await sleep_until(clock, 1000)
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        clock.advance(999)
        await trio.testing.wait_all_tasks_blocked()
        assert not woke.is_set()
        clock.advance(1)
        with trio.fail_after(1):
            await woke.wait()


async def test_trio_clock_follows_mock_clock(autojump_clock):
    clock = TrioClock(epoch_ms=1_700_000_000_000, speed=10.0)
    start = clock.now_ms()
    await sleep_until(clock, start + 3_600_000)                   # one simulated hour
    assert clock.now_ms() >= start + 3_600_000
    assert trio.current_time() == pytest.approx(360.0, abs=0.01)   # = 360 trio seconds at 10×
    before = clock.now_ms()
    await sleep_ms(clock, 5_000)
    assert clock.now_ms() - before >= 5_000



@settings(max_examples=200, deadline=None)
@given(epoch=st.integers(0, 2**45), speed=st.floats(0.01, 10_000), start=st.floats(0, 1e6),
       a=st.floats(0, 1e6), b=st.floats(0, 1e6))
def test_scaled_time_never_runs_backwards_and_is_the_same_formula_everywhere(epoch, speed, start, a, b):
    first, second = ScaledClock(epoch, speed, start), ScaledClock(epoch, speed, start)
    early, late = min(a, b), max(a, b)
    assert first.sim_ms_at(early) <= first.sim_ms_at(late)
    assert first.sim_ms_at(late) == second.sim_ms_at(late)


class FakeMonotonic:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_paced_clock_is_the_scaled_clock_while_the_process_keeps_up():
    real = FakeMonotonic()
    clock = PacedClock(1_000_000, 720.0, max_step_s=0.25, monotonic=real)
    for _ in range(40):                         # ticks 0.05 s apart: 2 s of real time
        real.t += 0.05
        clock.advance(real.t)
    assert clock.now_ms() == pytest.approx(1_000_000 + 2 * 720_000, abs=2)
    assert clock.lost_real_s == pytest.approx(0.0)


def test_paced_clock_lets_a_starved_process_miss_no_market_time():
    real = FakeMonotonic()
    clock = PacedClock(0, 720.0, max_step_s=0.25, monotonic=real)
    real.t += 5.0                               # the process got no CPU for 5 s
    assert clock.now_ms() == 180_000            # its nodes see 0.25 s × 720, not an hour
    clock.advance(real.t)
    assert clock.now_ms() == 180_000 and clock.lost_real_s == pytest.approx(4.75)
    real.t += 0.05
    assert clock.now_ms() == pytest.approx(180_000 + 36_000, abs=1)   # and it goes on at speed


@given(st.lists(st.tuples(st.floats(0.0, 3.0), st.booleans(), st.none() | st.floats(-1.0, 2.0)), max_size=60))
def test_paced_clock_never_goes_backwards(steps):
    """Whatever the real steps, the ticks and the pace (None: no pace at all)."""
    real = FakeMonotonic()
    paces = iter([p for _, _, p in steps if p is not None])
    paced = any(p is not None for _, _, p in steps)
    clock = PacedClock(5_000, 480.0, monotonic=real, pace=(lambda: next(paces, 1.0)) if paced else None)
    last = clock.now_ms()
    for step, tick, _ in steps:
        real.t += step
        if tick:
            clock.advance(real.t)
        now = clock.now_ms()
        assert now >= last
        last = now


async def test_paced_clock_task_advances_market_time_in_a_trio_run():
    clock = PacedClock(0, 100.0, tick_s=0.01)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(clock.run)
        with trio.fail_after(10):
            await sleep_until(clock, 2_000)      # 20 ms of real time at 100x
        nursery.cancel_scope.cancel()
    assert clock.now_ms() >= 2_000


def test_paced_clock_runs_at_its_pace_while_the_work_is_behind():
    real = FakeMonotonic()
    paces = iter([0.1] * 20 + [1.0] * 21)
    clock = PacedClock(0, 720.0, max_step_s=0.25, monotonic=real, pace=lambda: next(paces))
    real.t += 0.05
    clock.advance(real.t)                       # the first interval ran at full speed; now behind
    start = clock.now_ms()
    for _ in range(20):                         # 1 s of real time at a tenth of the speed
        real.t += 0.05
        clock.advance(real.t)
    assert clock.now_ms() - start == pytest.approx(72_000, abs=2)
    assert clock.held_real_s == pytest.approx(0.9)
    for _ in range(20):                         # caught up: full speed again
        real.t += 0.05
        clock.advance(real.t)
    assert clock.now_ms() - start == pytest.approx(72_000 + 720_000, abs=4)


def test_a_pace_of_zero_still_lets_market_time_pass():
    real = FakeMonotonic()
    clock = PacedClock(0, 720.0, monotonic=real, pace=lambda: 0.0)
    clock.advance(real.t)
    real.t += 0.05
    clock.advance(real.t)
    assert clock.now_ms() == pytest.approx(0.05 * PacedClock.MIN_PACE * 720_000, abs=1)




def test_a_sleeper_never_oversleeps_when_the_pace_rises():
    real = FakeMonotonic()
    paces = iter([0.1, 1.0])
    clock = PacedClock(0, 720.0, monotonic=real, pace=lambda: next(paces, 1.0))
    clock.advance(real.t)                        # behind: a tenth of the speed from now
    wait_s = clock.real_seconds_until(72_000)    # 72 s of market time ahead
    assert wait_s == pytest.approx(0.1)          # what it takes at full speed, not 1 s at a tenth
