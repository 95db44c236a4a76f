"""The pace of a one-process simulation follows its nodes' backlog (simnet.pacing)."""

from simnet.pacing import QUEUED_ENTRIES_PER_NODE, SETTLE_SLOTS_BEHIND, SLOW_PACE, Backlog, pace_for


def test_a_zone_that_keeps_up_runs_at_full_speed():
    assert pace_for(Backlog(nodes=17, queued_entries=17 * QUEUED_ENTRIES_PER_NODE, settle_slots_behind=1)) == 1.0


def test_entries_piling_up_slow_market_time_down():
    assert pace_for(Backlog(nodes=17, queued_entries=17 * QUEUED_ENTRIES_PER_NODE + 1,
                            settle_slots_behind=0)) == SLOW_PACE


def test_a_gateway_behind_with_its_settlements_slows_market_time_down():
    assert pace_for(Backlog(nodes=17, queued_entries=0, settle_slots_behind=SETTLE_SLOTS_BEHIND + 1)) == SLOW_PACE
    assert pace_for(Backlog(nodes=17, queued_entries=0, settle_slots_behind=SETTLE_SLOTS_BEHIND)) == 1.0


def test_no_live_node_is_not_a_division_by_zero():
    assert pace_for(Backlog(nodes=0, queued_entries=0, settle_slots_behind=0)) == 1.0
    assert pace_for(Backlog(nodes=0, queued_entries=QUEUED_ENTRIES_PER_NODE + 1, settle_slots_behind=0)) == SLOW_PACE
