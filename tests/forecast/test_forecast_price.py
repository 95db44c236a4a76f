"""The price expert: the local price leaning on the published day-ahead reference, scored per
horizon against the simple baselines, never reading a reference value before it is published."""

from __future__ import annotations

import random

import pytest

from p2pgrid.forecast.backtest import backtest
from p2pgrid.forecast.context import SeriesContext
from p2pgrid.forecast.price import PRICE_EXPERTS, published_reference_slots, reference

SLOT_S = 3600
DAY = 24
START_S = 1_800_000_000 - 1_800_000_000 % 86400


def market(days: int, seed: int = 3) -> tuple[list[float], list[float]]:
    """A day-ahead price with a daily shape and a level that wanders day to day, and a local price
    that follows its deviations (β = 0.6) around its own level, with noise."""
    rng = random.Random(seed)
    reference_prices, local = [], []
    for _ in range(days):
        level = rng.uniform(20_000, 90_000)
        shape = [rng.gauss(0, 6_000) + 25_000 * (17 <= h <= 20) - 20_000 * (10 <= h <= 15) for h in range(DAY)]
        own_level = rng.uniform(150_000, 210_000)
        mean = sum(shape) / DAY
        for h in range(DAY):
            reference_prices.append(level + shape[h])
            local.append(own_level + 0.6 * (shape[h] - mean) + rng.gauss(0, 3_000))
    return reference_prices, local


def test_reference_expert_beats_persistence_and_yesterday_at_every_horizon():
    reference_prices, local = market(21)
    context = SeriesContext(slot_s=SLOT_S, first_slot_s=START_S, reference=tuple(reference_prices))

    def known(n: int) -> int:        # what the day-ahead auction had published when index n was forecast
        return published_reference_slots(START_S + n * SLOT_S, START_S, SLOT_S)

    result = backtest(local, context, PRICE_EXPERTS, steps=DAY, warmup=7 * DAY, reference_known=known)
    for h in range(1, DAY + 1):
        assert result.mae["reference"][h - 1] < result.mae["persistence"][h - 1], h
        assert result.mae["reference"][h - 1] < result.mae["yesterday"][h - 1], h
    assert result.skill("gate") > 0.2 and result.skill("reference") > 0.2
    # The mixture with the price expert beats every simple baseline over the horizons.
    assert result.mean_mae("gate") < min(result.mean_mae(b) for b in ("persistence", "yesterday", "smoothing"))


def test_reference_expert_never_reads_an_unpublished_value():
    class Guarded(tuple):
        limit = 0

        def __getitem__(self, index):
            if isinstance(index, int) and index >= Guarded.limit:
                raise AssertionError(f"read reference[{index}] before it was published")
            return super().__getitem__(index)

    reference_prices, local = market(4)
    n = 2 * DAY + 5                    # 05:00 on day 2: day 2 is published, day 3 is not
    Guarded.limit = published_reference_slots(START_S + n * SLOT_S, START_S, SLOT_S)
    assert Guarded.limit == 3 * DAY
    context = SeriesContext(slot_s=SLOT_S, first_slot_s=START_S, reference=Guarded(reference_prices),
                            reference_known=Guarded.limit)
    forecast = reference(local[:n], 2 * DAY, context)
    assert len(forecast) == 2 * DAY
    beyond = n + DAY                   # index on day 3, unpublished: uses day 2's same hour
    assert forecast[beyond - n] == pytest.approx(forecast[beyond - DAY - n], abs=1e-6)


def test_with_no_reference_the_expert_is_the_recent_level():
    context = SeriesContext(slot_s=SLOT_S, first_slot_s=START_S)
    assert reference([100.0, 200.0, 300.0], 2, context) == [200.0, 200.0]
    assert reference([], 2, context) == [0.0, 0.0]
