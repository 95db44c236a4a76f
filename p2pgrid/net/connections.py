"""Which peers to dial and which connections to close: the connection policy, as pure functions.

A node keeps a **bounded** number of connections (``max_connections``, documented in
docs/ARCHITECTURE.md "Discovery and connections"). ``libp2p_host`` and ``discovery`` feed these
functions a snapshot of the node's connections and act on the answer; nothing here does I/O or
reads a clock (``now`` is passed in, in seconds of one monotonic clock).

Closing (``connections_to_close``): nothing is closed while the count of connections past their
grace period is at or below the bound (a new connection — often a peer's short rendezvous visit,
which it closes itself — does not push out an established one). Above it, the surplus is closed
among the connections that are

* not protected — the peers this node dialled itself by address (bootstrap peers, validators);
* past their grace period (``grace_s``): a new connection first gets the time to join the gossip
  mesh or carry the stream it was opened for;
* idle: no p2pgrid stream on it moved a frame within ``idle_s``. ``idle_s`` is longer than any
  request of the protocols may take (takes and swaps 20 s, votes 10 s), so a connection is never
  cut under a request in flight; persistent streams that are merely open do not hold it.

Connections without a gossip stream go first (py-libp2p opens a peer's pubsub stream once and
never again if that fails: such a connection carries no gossip), then those in fewest gossip
meshes, then the ones idle longest. Gossipsub repairs its mesh from the remaining connections at
its next heartbeat. Nothing is closed below the bound: closing connections that had no gossip
stream yet, whatever the count, was tried and made an overloaded machine worse (the streams were
only slow; 30 nodes ended with 0 to 5 connections and delivered nothing).

Dialling (``peers_to_dial``): discovery lists the members of each namespace (a zone); the node
dials members it is not connected to until it has ``target`` connections, and whatever the count,
at least ``min_per_namespace`` (at most ``target``) connected members in every namespace it
discovers (a neighbour zone whose orders it reads), never beyond the bound. Peers in back-off (they closed on us, or a
dial failed) are skipped. ``rng`` chooses among candidates, so dials spread over the zone.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from p2pgrid.errors import ConfigError

GRACE_S = 10.0           # a new connection is not closed for this long
STREAM_IDLE_S = 30.0     # a connection whose streams moved no frame for this long is idle
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_TARGET_CONNECTIONS = 8
MIN_PER_NAMESPACE = 2
DEFAULT_REFRESH_S = 45.0          # rendezvous registrations renewed (and members asked for) this often


@dataclass(frozen=True)
class ConnectionView:
    """What the policy needs to know of one connected peer."""

    peer: bytes                          # the peer's public key
    connected_since: float
    last_stream_activity: float | None   # newest frame on an open p2pgrid stream, if any
    mesh_topics: int                     # gossip topics whose mesh holds this peer
    protected: bool                      # dialled by address: bootstrap peers, validators
    gossip: bool = True                  # a gossip (pubsub) stream runs on it


def is_idle(view: ConnectionView, now: float, idle_s: float = STREAM_IDLE_S) -> bool:
    return view.last_stream_activity is None or now - view.last_stream_activity >= idle_s


def connections_to_close(views: Collection[ConnectionView], max_connections: int, now: float, *,
                         grace_s: float = GRACE_S, idle_s: float = STREAM_IDLE_S) -> list[bytes]:
    """The peers whose connections to close to come back to ``max_connections`` (module docstring).

    May return fewer than the surplus when too many connections are protected, young or in use;
    never a protected, young or busy one.
    """
    closable = [v for v in views
                if not v.protected and now - v.connected_since >= grace_s and is_idle(v, now, idle_s)]
    closable.sort(key=lambda v: (v.gossip, v.mesh_topics, v.last_stream_activity or v.connected_since, v.peer))
    settled = sum(1 for v in views if now - v.connected_since >= grace_s)
    surplus = settled - max_connections      # young connections count once their grace is over
    return [v.peer for v in closable[:surplus]] if surplus > 0 else []


def peers_to_dial(members: Mapping[str, Iterable[bytes]], connected: Collection[bytes],
                  skip: Collection[bytes], *, target: int, max_connections: int, rng: random.Random,
                  min_per_namespace: int = MIN_PER_NAMESPACE) -> list[bytes]:
    """Members to dial now (module docstring), in the order to dial them."""
    room = max_connections - len(connected)
    if room <= 0:
        return []
    chosen: list[bytes] = []
    taken = set(connected) | set(skip)

    def pick(pool: Iterable[bytes], count: int) -> None:
        candidates = sorted(set(pool) - taken)
        rng.shuffle(candidates)
        for peer in candidates[:max(0, min(count, room - len(chosen)))]:
            chosen.append(peer)
            taken.add(peer)

    for namespace in sorted(members):
        pool = set(members[namespace])
        linked = len(pool & set(connected)) + len(pool & set(chosen))
        pick(pool, min(min_per_namespace, target) - linked)
    everyone = set().union(*members.values()) if members else set()
    pick(everyone, target - len(connected) - len(chosen))
    return chosen


@dataclass(frozen=True)
class DiscoveryConfig:
    """How a libp2p node finds peers and how many connections it keeps (``[network]`` config)."""

    enabled: bool = True
    serve_rendezvous: bool = False
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    target_connections: int = DEFAULT_TARGET_CONNECTIONS
    max_rendezvous_points: int = 3
    refresh_s: float = DEFAULT_REFRESH_S
    grace_s: float = GRACE_S
    idle_s: float = STREAM_IDLE_S

    def __post_init__(self) -> None:
        if not 1 <= self.target_connections <= self.max_connections:
            raise ConfigError(f"network: target_connections ({self.target_connections}) must be between 1 "
                              f"and max_connections ({self.max_connections})")
        if self.max_rendezvous_points < 1:
            raise ConfigError("network: max_rendezvous_points must be at least 1")
