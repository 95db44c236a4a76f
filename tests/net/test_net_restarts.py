"""The restart budget of the libp2p host (pure): pauses double, old failures are forgotten, and
one failure more than the policy allows within its window means giving up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pgrid.net.restarts import RestartBudget, RestartPolicy

POLICY = RestartPolicy(max_restarts=3, window_s=60, first_delay_s=1, max_delay_s=3)


def test_pauses_double_up_to_the_longest_and_the_failure_after_the_allowed_ones_gives_up():
    budget = RestartBudget(POLICY)
    assert [budget.next_delay(t) for t in (0, 5, 9)] == [1, 2, 3]
    assert budget.next_delay(12) is None
    assert budget.recent_failures == 4


def test_failures_older_than_the_window_are_forgotten():
    budget = RestartBudget(POLICY)
    assert [budget.next_delay(t) for t in (0, 10, 20)] == [1, 2, 3]
    assert budget.next_delay(60) == 3          # the failure at 0 left the window: 3 within it
    assert budget.next_delay(85) == 2          # those at 10 and 20 too: 60 and 85 remain


def test_a_node_failing_once_a_day_restarts_every_time_after_the_first_pause():
    budget = RestartBudget(POLICY)
    assert [budget.next_delay(day * 86_400) for day in range(30)] == [1] * 30


def test_no_restarts_allowed_gives_up_at_once():
    assert RestartBudget(RestartPolicy(max_restarts=0)).next_delay(0) is None


@pytest.mark.parametrize("bad", [dict(max_restarts=-1), dict(window_s=0), dict(first_delay_s=-1),
                                 dict(first_delay_s=40, max_delay_s=30)])
def test_inconsistent_policies_are_refused(bad):
    with pytest.raises(ValueError):
        RestartPolicy(**bad)


@given(st.lists(st.floats(min_value=0, max_value=10_000, allow_nan=False), max_size=40).map(sorted))
def test_gives_up_exactly_when_more_failures_than_allowed_fall_within_one_window(times):
    budget = RestartBudget(POLICY)
    for index, now in enumerate(times):
        in_window = sum(1 for t in times[:index + 1] if t > now - POLICY.window_s)
        delay = budget.next_delay(now)
        if in_window > POLICY.max_restarts:
            assert delay is None
            return
        assert delay is not None and POLICY.first_delay_s <= delay <= POLICY.max_delay_s
