"""The gate: it converges to a clearly best expert and its backtest is honest."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.forecast.backtest import backtest
from p2pgrid.forecast.experts import SeriesContext
from p2pgrid.forecast.gate import GateConfig, GateConfigError, new_gate, observe, step, weights, combine, issue

CONTEXT = SeriesContext(slot_s=3600)   # 24 slots per day keeps tests fast


def periodic_series(days: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [100 + 80 * math.sin(2 * math.pi * (i % 24) / 24) + rng.uniform(-noise, noise) for i in range(days * 24)]


def run(series: list[float], experts: tuple[str, ...], steps: int):
    state = new_gate(experts, GateConfig(steps=steps))
    for n in range(len(series) + 1):
        state, forecast = step(state, series[:n], CONTEXT)
    return state, forecast


def test_gate_converges_to_the_one_expert_that_is_exact():
    # A noiseless daily cycle: "yesterday" is exact at every horizon, persistence is not.
    series = periodic_series(days=12)
    state, forecast = run(series, ("persistence", "yesterday"), steps=12)
    assert all(row[1] > 0.999 for row in weights(state))
    assert forecast.values == pytest.approx(series[-24:-12], abs=1e-6)


def test_gate_converges_to_a_clearly_best_expert():
    # A daily cycle rising 5 per day: yesterday errs by 5, smoothing lags the trend (~5/alpha)
    # and persistence misses the cycle. Yesterday should take (almost) all weight.
    series = [value + 5 * (i // 24) for i, value in enumerate(periodic_series(days=16))]
    experts = ("persistence", "yesterday", "smoothing")
    state, _ = run(series, experts, steps=12)
    assert all(row[1] > 0.9 for row in weights(state))


def test_gate_prefers_persistence_one_step_ahead_on_a_random_walk():
    rng = random.Random(7)
    series, level = [], 500.0
    for _ in range(24 * 10):
        level += rng.gauss(0, 20)
        series.append(level)
    state, _ = run(series, ("persistence", "yesterday", "smoothing"), steps=6)
    assert weights(state)[0][0] > 0.9


def test_weights_are_equal_before_any_error_is_known():
    state = new_gate(("persistence", "yesterday"), GateConfig(steps=3))
    assert weights(state) == ((0.5, 0.5),) * 3


def test_observe_scores_each_pending_forecast_at_its_own_horizon():
    state = new_gate(("persistence", "yesterday"), GateConfig(steps=2, windows=(10,)))
    state = issue(state, 0, [[1.0, 2.0], [5.0, 5.0]])          # targets 0 and 1
    state = observe(state, 0, 3.0)
    assert state.mae[0][0][0] == 2.0 and state.mae[0][1][0] == 2.0   # |1-3|, |5-3| at h=1
    state = observe(state, 1, 2.0)
    assert state.mae[0][0][1] == 0.0 and state.mae[0][1][1] == 3.0  # |2-2|, |5-2| at h=2
    assert state.issues == ()                                        # fully scored, dropped


def test_combine_is_the_weighted_sum():
    assert combine([(0.25, 0.75)], [[4.0], [8.0]]) == (7.0,)


def test_backtest_reports_skill_against_persistence():
    series = periodic_series(days=10, noise=5.0)
    result = backtest(series, CONTEXT, ("persistence", "yesterday", "smoothing"), steps=6, warmup=48)
    assert result.samples[0] == len(series) - 48
    assert result.skill("persistence") == 0.0
    assert result.skill("yesterday", horizon=6) > 0.5   # 6 h ahead the daily cycle wins clearly
    assert result.mean_mae("gate") <= min(result.mean_mae(n) for n in ("persistence", "yesterday")) * 1.05


def test_backtest_needs_the_persistence_reference():
    with pytest.raises(ValueError):
        backtest([1.0] * 30, CONTEXT, ("yesterday",), steps=2, warmup=0)


def test_unknown_experts_and_bad_configs_are_rejected():
    with pytest.raises(GateConfigError):
        new_gate(("oracle",), GateConfig(steps=4))
    with pytest.raises(GateConfigError):
        GateConfig(steps=0)
    with pytest.raises(GateConfigError):
        GateConfig(steps=4, etas=(-1.0,))


@settings(max_examples=40, deadline=None)
@given(series=st.lists(st.floats(0, 5000, allow_nan=False), min_size=1, max_size=80))
def test_gate_forecast_is_a_convex_combination_of_the_experts(series):
    state = new_gate(("persistence", "yesterday", "smoothing"), GateConfig(steps=5))
    for n in range(len(series) + 1):
        state, forecast = step(state, series[:n], CONTEXT)
        for h0, row in enumerate(forecast.weights):
            assert sum(row) == pytest.approx(1.0) and min(row) >= 0.0
            values = [f[h0] for f in forecast.experts.values()]
            assert min(values) - 1e-6 <= forecast.values[h0] <= max(values) + 1e-6
