"""The connection policy (``p2pgrid.net.connections``): which connections to close above the
bound, which members to dial below the target. Pure functions, worked examples and properties."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pgrid.errors import ConfigError
from p2pgrid.net.connections import (GRACE_S, STREAM_IDLE_S, ConnectionView, DiscoveryConfig,
                                     connections_to_close, peers_to_dial)

NOW = 1000.0


def peer(i: int) -> bytes:
    return bytes([i]) * 32


def view(i: int, *, age: float = 60.0, active_ago: float | None = None, mesh: int = 0,
         protected: bool = False, gossip: bool = True) -> ConnectionView:
    return ConnectionView(peer(i), NOW - age, None if active_ago is None else NOW - active_ago, mesh, protected,
                          gossip)


def test_nothing_is_closed_at_or_below_the_bound():
    views = [view(i) for i in range(4)]
    assert connections_to_close(views, 4, NOW) == []
    assert connections_to_close(views, 10, NOW) == []


def test_the_surplus_is_closed_non_mesh_peers_first_then_the_longest_idle():
    views = [view(1, mesh=2), view(2, mesh=0, active_ago=40), view(3, mesh=0, active_ago=300), view(4, mesh=1)]
    assert connections_to_close(views, 2, NOW) == [peer(3), peer(2)]
    assert connections_to_close(views, 1, NOW) == [peer(3), peer(2), peer(4)]


def test_protected_young_and_busy_connections_are_never_closed():
    views = [view(1, protected=True), view(2, age=GRACE_S / 2), view(3, active_ago=STREAM_IDLE_S / 3),
             view(4, mesh=3)]
    assert connections_to_close(views, 0, NOW) == [peer(4)]   # fewer than the surplus: all it may


def test_young_connections_do_not_push_out_established_ones_until_their_grace_is_over():
    views = [view(1), view(2), view(3, age=1), view(4, age=2)]
    assert connections_to_close(views, 2, NOW) == []
    assert connections_to_close(views, 1, NOW) == [peer(1)]


def test_connections_without_gossip_go_first_but_nothing_is_closed_below_the_bound():
    views = [view(1), view(2, gossip=False, mesh=0), view(3, mesh=0), view(4, gossip=False, protected=True)]
    assert connections_to_close(views, 16, NOW) == []
    assert connections_to_close(views, 3, NOW) == [peer(2)]
    assert connections_to_close(views, 2, NOW) == [peer(2), peer(1)]


def test_dials_go_to_each_thin_namespace_first_then_up_to_the_target():
    members = {"p2pgrid/v1/home": [peer(i) for i in range(1, 20)], "p2pgrid/v1/next": [peer(30), peer(31), peer(32)]}
    dials = peers_to_dial(members, [peer(1)], [], target=5, max_connections=16, rng=random.Random(1))
    assert len(dials) == 4 and len(set(dials)) == 4
    assert len(set(dials) & {peer(30), peer(31), peer(32)}) == 2     # two links into the neighbour zone
    assert peer(1) not in dials


def test_peers_in_back_off_are_not_dialled_and_the_bound_caps_dials():
    members = {"z": [peer(i) for i in range(1, 10)]}
    dials = peers_to_dial(members, [], [peer(i) for i in range(1, 8)], target=8, max_connections=16,
                          rng=random.Random(2))
    assert sorted(dials) == [peer(8), peer(9)]
    full = [peer(i) for i in range(40, 56)]
    assert peers_to_dial(members, full, [], target=20, max_connections=16, rng=random.Random(2)) == []


def test_a_config_whose_target_exceeds_its_bound_is_refused():
    with pytest.raises(ConfigError, match="target_connections"):
        DiscoveryConfig(max_connections=4, target_connections=5)


views_strategy = st.lists(
    st.builds(ConnectionView, peer=st.binary(min_size=32, max_size=32),
              connected_since=st.floats(NOW - 100, NOW), last_stream_activity=st.none() | st.floats(NOW - 100, NOW),
              mesh_topics=st.integers(0, 3), protected=st.booleans(), gossip=st.booleans()),
    max_size=40, unique_by=lambda v: v.peer)


@given(views_strategy, st.integers(0, 40))
def test_closing_never_touches_a_kept_connection_and_reaches_the_bound_when_it_can(views, bound):
    closed = connections_to_close(views, bound, NOW)
    by_peer = {v.peer: v for v in views}
    assert len(closed) == len(set(closed))
    for p in closed:
        v = by_peer[p]
        assert not v.protected and NOW - v.connected_since >= GRACE_S
        assert v.last_stream_activity is None or NOW - v.last_stream_activity >= STREAM_IDLE_S
    closable = [v for v in views if not v.protected and NOW - v.connected_since >= GRACE_S
                and (v.last_stream_activity is None or NOW - v.last_stream_activity >= STREAM_IDLE_S)]
    settled = sum(1 for v in views if NOW - v.connected_since >= GRACE_S)
    assert len(closed) == min(len(closable), max(0, settled - bound))
    if closed and any(not v.gossip for v in closable):
        assert not by_peer[closed[0]].gossip                  # gossip-less connections go first


@given(st.lists(st.integers(1, 60), unique=True, max_size=40), st.lists(st.integers(1, 60), unique=True, max_size=20),
       st.integers(1, 16), st.integers(0, 2**32))
def test_dialling_never_exceeds_the_bound_nor_redials(members, connected, target, seed):
    members_map = {"a": [peer(i) for i in members[::2]], "b": [peer(i) for i in members[1::2]]}
    linked = [peer(i) for i in connected]
    dials = peers_to_dial(members_map, linked, [], target=target, max_connections=16, rng=random.Random(seed))
    assert len(set(dials)) == len(dials)
    assert not set(dials) & set(linked)
    assert len(linked) + len(dials) <= max(16, len(linked))
