"""Every gossipsub setting p2pgrid changes from py-libp2p 0.8.1's defaults, in one place.

Why each one (measured on a 2-core machine, see docs/ARCHITECTURE.md §8):

Interoperability
    ``PROTOCOLS``: ``/meshsub/1.1.0`` and ``/meshsub/1.0.0`` only. 1.2 (IDONTWANT) was about 2×
    slower here and go/js/rust peers all still speak 1.1. Strict signing and the default message
    id (publisher + sequence number) stay on, so any libp2p implementation can verify our gossip.

Settings that silently DROP messages in the library defaults
    * ``GossipSub(spam_protection_enabled=True, max_messages_per_topic_per_second=10)`` stops
      *forwarding* (and local publishing!) above 10 messages/s per (peer, topic). A relay carries
      every publisher's batches, so honest load per forwarder is (nodes × batches/s); we keep the
      protection but at ``MAX_MESSAGES_PER_TOPIC_PER_SECOND``, far above what one process can
      deliver (~150 deliveries/s), so it only ever trips on a flood.
    * Each peer's outbound ``RpcQueue`` holds 32 RPCs (``rpc_queue.OutBoundQueueSize``) and drops
      the rest. It is a constructor default captured at import, created inside
      ``Pubsub._handle_new_peer`` without arguments, so ``apply_library_limits`` swaps the class
      that module uses for one with ``OUTBOUND_QUEUE_SIZE``. Worst-case memory per peer is
      ``OUTBOUND_QUEUE_SIZE`` × 16 KiB.
    * Each subscription's channel holds ``pubsub.SUBSCRIPTION_CHANNEL_SIZE`` = 32 messages and
      drops on full. We raise it and also drain it from a dedicated task into an unbounded
      channel (libp2p_host), so a slow consumer never loses a message.

Timing
    * ``HEARTBEAT_INTERVAL_S`` = 1 (library default 120 s: a mesh would take minutes to form).
    * ``REANNOUNCE_INTERVAL_S`` = 2: py-libp2p announces a subscription once, and a peer whose
      pubsub stream was being set up at that moment never learns it (``libp2p_host``
      re-announces every node's topics to every peer this often).
    * ``adaptive_gossip_enabled=False``: its "poor health" mode sets the heartbeat to 30–60 s.

Peer scoring (py-libp2p's ``PeerScorer``; NOTE the signs)
    py-libp2p *subtracts* ``p4_invalid_messages.weight × min(count, cap)``: the weight is positive
    where go-libp2p's is negative, and the default cap of 0 disables the penalty entirely. Each
    REJECTed message costs ``INVALID_MESSAGE_WEIGHT``; counters decay by ``INVALID_MESSAGE_DECAY``
    per heartbeat (half-life ~70 s). Below ``PUBLISH_THRESHOLD`` a peer's messages are no longer
    accepted; below ``GRAYLIST_THRESHOLD`` it is ignored entirely.

    IP colocation (P7) and eclipse protection count peers per IP: on a loopback cluster every peer
    is 127.0.0.1, so both are switched off when we listen only on loopback addresses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

PROTOCOLS = ("/meshsub/1.1.0", "/meshsub/1.0.0")

DEGREE, DEGREE_LOW, DEGREE_HIGH = 6, 4, 12
HEARTBEAT_INTERVAL_S = 1
REANNOUNCE_INTERVAL_S = 2.0   # our subscriptions are sent to every peer again this often (libp2p_host)
HEARTBEAT_INITIAL_DELAY_S = 0.1
TIME_TO_LIVE_S = 60
GOSSIP_WINDOW, GOSSIP_HISTORY = 3, 5

MAX_MESSAGES_PER_TOPIC_PER_SECOND = 1000.0
OUTBOUND_QUEUE_SIZE = 1024
SUBSCRIPTION_CHANNEL_SIZE = 1024
SEEN_TTL_S = 120

INVALID_MESSAGE_WEIGHT = 10.0
INVALID_MESSAGE_CAP = 1000.0
INVALID_MESSAGE_DECAY = 0.99
GOSSIP_THRESHOLD = -20.0
PUBLISH_THRESHOLD = -50.0
GRAYLIST_THRESHOLD = -80.0
ACCEPT_PX_THRESHOLD = 0.0
IP_COLOCATION_WEIGHT = 5.0
IP_COLOCATION_THRESHOLD = 10


@dataclass(frozen=True)
class GossipConfig:
    """The router settings one host uses; ``for_addrs`` derives it from the listen addresses."""

    loopback_only: bool

    @classmethod
    def for_addrs(cls, listen_addrs: list[str] | tuple[str, ...]) -> GossipConfig:
        return cls(loopback_only=all("/ip4/127." in a or "/ip6/::1/" in a for a in listen_addrs))


def build_score_params():  # type: ignore[no-untyped-def]
    """py-libp2p ``ScoreParams`` (sign convention: positive weight = penalty for P4/P7)."""
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams

    return ScoreParams(
        p4_invalid_messages=TopicScoreParams(weight=INVALID_MESSAGE_WEIGHT, cap=INVALID_MESSAGE_CAP,
                                             decay=INVALID_MESSAGE_DECAY),
        publish_threshold=PUBLISH_THRESHOLD,
        gossip_threshold=GOSSIP_THRESHOLD,
        graylist_threshold=GRAYLIST_THRESHOLD,
        accept_px_threshold=ACCEPT_PX_THRESHOLD,
        p7_ip_colocation_weight=IP_COLOCATION_WEIGHT,
        p7_ip_colocation_threshold=IP_COLOCATION_THRESHOLD,
    )


def build_gossipsub(config: GossipConfig):  # type: ignore[no-untyped-def]
    """A ``GossipSub`` router with the settings above."""
    from libp2p.custom_types import TProtocol
    from libp2p.pubsub.gossipsub import GossipSub

    params = build_score_params()
    if config.loopback_only:
        params.p7_ip_colocation_weight = 0.0
    return GossipSub(
        protocols=[TProtocol(p) for p in PROTOCOLS],
        degree=DEGREE, degree_low=DEGREE_LOW, degree_high=DEGREE_HIGH,
        time_to_live=TIME_TO_LIVE_S,
        gossip_window=GOSSIP_WINDOW, gossip_history=GOSSIP_HISTORY,
        heartbeat_initial_delay=HEARTBEAT_INITIAL_DELAY_S,
        heartbeat_interval=HEARTBEAT_INTERVAL_S,
        score_params=params,
        adaptive_gossip_enabled=False,
        spam_protection_enabled=True,
        max_messages_per_topic_per_second=MAX_MESSAGES_PER_TOPIC_PER_SECOND,
        eclipse_protection_enabled=not config.loopback_only,
    )


def build_raw_gossipsub():  # type: ignore[no-untyped-def]
    """The library's defaults as its docs show them, for the benchmark's baseline.

    Only the heartbeat is shortened (default 120 s would not form a mesh within a benchmark);
    rate limit, queues, scoring and adaptive gossip are left as shipped.
    """
    from libp2p.custom_types import TProtocol
    from libp2p.pubsub.gossipsub import GossipSub

    return GossipSub(protocols=[TProtocol(p) for p in PROTOCOLS], degree=DEGREE, degree_low=DEGREE_LOW,
                     degree_high=DEGREE_HIGH, heartbeat_interval=HEARTBEAT_INTERVAL_S)


@functools.cache
def apply_library_limits() -> None:
    """Raise py-libp2p's module-level queue sizes (process-wide, idempotent).

    These are module constants in py-libp2p, not constructor options, so they apply to every
    pubsub in the process; ``libp2p_host`` calls this before creating one.
    """
    import libp2p.pubsub.pubsub as pubsub_module
    from libp2p.pubsub.rpc_queue import RpcQueue

    class SizedRpcQueue(RpcQueue):
        def __init__(self, max_size: int = OUTBOUND_QUEUE_SIZE, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(max_size=max_size, **kwargs)

    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = SUBSCRIPTION_CHANNEL_SIZE
    pubsub_module.RpcQueue = SizedRpcQueue  # type: ignore[misc]
