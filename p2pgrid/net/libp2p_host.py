"""The ``Transport`` interface on py-libp2p 0.8.1 (TCP, Noise, yamux/mplex, gossipsub).

``open_libp2p_transport(key, listen_addrs, bootstrap)`` is an async context manager: it builds a
host whose libp2p identity is the node's Ed25519 key (same 32-byte seed, so the peer ID embeds the
account's public key), listens, starts gossipsub with the settings of ``gossip_config``, dials the
bootstrap addresses and yields a ``Libp2pTransport``. Everything libp2p stays in this module.

Validators. py-libp2p validators answer only valid/invalid, and every invalid message counts
against the peer that forwarded it. To give IGNORE its meaning (drop without penalty) the host
installs ``_IgnoreAwareScorer``: our validator wrapper marks the message id it IGNOREd, and the
scorer skips the penalty for it. This relies on py-libp2p calling ``on_invalid_message``
synchronously right after a *synchronous* validator returns (``Pubsub.push_msg``), which is why
validators must be synchronous.

Containment. pubsub and gossipsub run under ``p2pgrid.net.libp2p_containment``: a failing task
of one peer or one message (and a failing pubsub stream reader) is logged once with its cause and
ends only itself, where py-libp2p would stop the service and, with it, the node.

Restarts. What containment cannot confine to one peer — one of the library's own loops failing
(pubsub's peer queues, the gossipsub heartbeat), or any error escaping the host (the swarm) —
ends that *generation* of the host instead of the node. The supervisor logs the failure once, at
WARNING with its cause, tears the host down whole (connections, listeners, pubsub, gossipsub: a
new swarm brings a new pubsub notifee, so none outlives its pubsub) and, after a pause set by
``restarts.RestartBudget``, builds a new host with the same key on the addresses the old one had
bound. What the services gave the transport lives outside the generation and is applied to the
new host: stream handlers, subscriptions (each ``Libp2pSubscription`` keeps its channel and its
validator; a new pump feeds it from the new pubsub) and peers (each peer this transport dialled,
or the old host was connected to, is dialled again, retried for ``REDIAL_FOR_S``; discovery starts
afresh on the new host). Services keep their ``Transport`` object and see a short gap: streams of
the old host end with ``StreamClosed``, ``open_stream`` dials its peer again, and ``publish`` /
``connect`` wait for the new host (``TransportDown`` after ``RESTART_WAIT_S``, or if the host goes
down under them). Peer scores start afresh. One failure more than the policy allows within its
window ends the transport with ``TransportFailed``: the node stops with that error.

Discovery and connections. Each host runs ``discovery.PeerDiscovery`` (unless disabled): it finds
the peers of the node's gossip topics at rendezvous points and keeps the connections within
``DiscoveryConfig.max_connections`` (``connections``). ``open_stream`` to a peer that is not
connected dials it on demand, by the peerstore's addresses or a lookup by id at the points. The
streams handed out are tracked so that the policy never closes a connection whose stream is in use.

Subscriptions. Each subscription has a pump task that moves messages from py-libp2p's bounded
channel (which drops when full) into an unbounded one, so a slow consumer never loses messages.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.identity.identify_push.identify_push import ID_PUSH as IDENTIFY_PUSH
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache
from libp2p.pubsub.score import PeerScorer
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pgrid.identity import NodeKey
from p2pgrid.net import gossip_config
from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.discovery import PeerDiscovery, dialable, is_protocol_refusal
from p2pgrid.net.libp2p_containment import (ContainedPubsub, contained_service, describe_failure,
                                            inject_heartbeat_failure, inject_reader_failure,
                                            inject_task_failures)
from p2pgrid.net.restarts import RestartBudget, RestartPolicy
from p2pgrid.net.streams import ByteFramedStream
from p2pgrid.net.transport import (
    DEFAULT_MAX_FRAME_BYTES,
    FramedStream,
    GossipMessage,
    NetError,
    PeerUnreachable,
    ProtocolNotSupported,
    StreamClosed,
    StreamHandler,
    ValidationResult,
    Validator,
    accept_all,
    check_public_key,
)

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_ADDRS = ("/ip4/127.0.0.1/tcp/0",)
IGNORED_IDS_REMEMBERED = 4096
CONNECT_TIMEOUT_S = 20.0
SHUTDOWN_TIMEOUT_S = 5.0
RESTART_WAIT_S = 30.0          # publish / connect wait this long for a restarting host
REDIAL_FOR_S = 120.0           # after a restart, the old peers are dialled again for this long
REDIAL_PAUSES_S = (0.5, 8.0)   # first and longest pause between rounds of re-dialling
DIAL_ON_DEMAND_TIMEOUT_S = 10.0
LIBRARY_PRUNER_GRACE_S = 10 * 365 * 86400.0   # py-libp2p's pruner: no connection ever leaves grace
TEARDOWN_TIMEOUT_S = 15.0      # a failed host that takes longer to stop is abandoned
IDENTIFY_PUSH_DELAY_S = 0.2    # handlers registered within this time share one identify push
IDENTIFY_RETRY_S = 5.0         # how often peers whose identify failed (or never ran) are identified again


async def _identify_unidentified(host: Any) -> None:
    """Identify again every connected peer the library has not identified. It identifies a peer
    once, when the connection opens, and gives up for good if that times out (10 s: a busy
    machine); ``supports`` would then say no for that peer for as long as the connection lasts,
    so book reconciliation and ledger anti-entropy would never ask it. Uses the library's own
    scheduler (a no-op for a peer identified or being identified)."""
    schedule = getattr(host, "_schedule_identify", None)
    identified = getattr(host, "_identified_peers", None)
    if schedule is None or identified is None:
        return      # another py-libp2p: nothing to repair with
    while True:
        await trio.sleep(IDENTIFY_RETRY_S)
        for peer_id in host.get_connected_peers():
            if peer_id not in identified:
                schedule(peer_id, reason="retry")


class TransportDown(NetError):
    """The libp2p host is being restarted: it went down under this call or was not back in time."""


class TransportFailed(NetError):
    """The libp2p host failed more often than the restart policy allows; the transport has stopped."""


# --- identities -----------------------------------------------------------------------------

def peer_id_of(public_key: bytes) -> ID:
    """The libp2p peer ID of a 32-byte Ed25519 public key (identity multihash)."""
    from libp2p.crypto.ed25519 import Ed25519PublicKey

    return ID.from_pubkey(Ed25519PublicKey.from_bytes(check_public_key(public_key)))


def public_key_of(peer_id: ID) -> bytes | None:
    """The 32-byte Ed25519 public key embedded in ``peer_id``, or None for other key types."""
    key = peer_id.extract_public_key()
    if key is None or key.get_type().name != "Ed25519":
        return None
    raw = key.to_bytes()
    return raw if len(raw) == 32 else None


# --- IGNORE without penalty -----------------------------------------------------------------

class _IgnoreAwareScorer(PeerScorer):
    """py-libp2p's scorer, except that a message our validator IGNOREd costs nobody score."""

    def __init__(self, params) -> None:  # type: ignore[no-untyped-def]
        super().__init__(params)
        self.ignored_ids: OrderedDict[bytes, None] = OrderedDict()
        self.skip_next_penalty = False

    def note_ignored(self, msg_id: bytes) -> None:
        self.ignored_ids[msg_id] = None
        self.ignored_ids.move_to_end(msg_id)
        while len(self.ignored_ids) > IGNORED_IDS_REMEMBERED:
            self.ignored_ids.popitem(last=False)
        self.skip_next_penalty = True

    def on_invalid_message(self, peer: ID, topic: str) -> None:
        if self.skip_next_penalty:
            return  # cleared per message by _IgnoreAwareValidationCache / the validator wrapper
        super().on_invalid_message(peer, topic)


class _IgnoreAwareValidationCache(ValidationCache):
    """On a cache hit for an IGNOREd message (a duplicate from another peer), skip the penalty too."""

    def __init__(self, scorer: _IgnoreAwareScorer, ttl: int, max_size: int) -> None:
        super().__init__(ttl, max_size)
        self._scorer = scorer

    def get(self, msg_id: bytes):  # type: ignore[no-untyped-def]
        self._scorer.skip_next_penalty = msg_id in self._scorer.ignored_ids
        return super().get(msg_id)


# --- one life of the host -------------------------------------------------------------------

@dataclass(eq=False)
class _Generation:
    """The py-libp2p objects of one life of the host: what a restart replaces."""

    host: IHost
    pubsub: Pubsub
    router: GossipSub
    scorer: _IgnoreAwareScorer
    nursery: trio.Nursery      # pumps, re-announcing, re-dialling: they end with the generation
    discovery: PeerDiscovery | None = None
    down: bool = False
    identify_push_due: bool = False


class _Failure:
    """The first failure of a generation's own loops (``on_daemon_failure``); wakes its supervisor."""

    def __init__(self) -> None:
        self.event = trio.Event()
        self.where = ""
        self.exc: BaseException | None = None
        self.host: IHost | None = None     # the generation's, whose peers are dialled again
        self.connected: frozenset[ID] = frozenset()   # its peers when it went down

    def report(self, where: str, exc: BaseException) -> None:
        if self.exc is None:
            self.where, self.exc = where, exc
            self.event.set()


# --- subscriptions --------------------------------------------------------------------------

class Libp2pSubscription:
    """One topic's messages. It outlives host restarts: each generation gets a pump into it."""

    def __init__(self, transport: Libp2pTransport, topic: str, validator: Validator) -> None:
        self.topic = topic
        self.validator = validator
        self._transport = transport
        self._send, self._receive = trio.open_memory_channel[GossipMessage](math.inf)
        self._generation: _Generation | None = None     # the one whose pubsub feeds this
        self._pump_scope = trio.CancelScope()

    async def _pump(self, source, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        with trio.CancelScope() as scope:
            self._pump_scope = scope
            task_status.started()
            async for message in source:
                sender = public_key_of(ID(message.from_id))
                if sender is None:
                    continue  # our validator already refuses non-Ed25519 publishers
                try:
                    self._send.send_nowait(GossipMessage(sender, bytes(message.data)))
                except trio.ClosedResourceError:
                    return    # closed by aclose() while a message was on its way

    def __aiter__(self) -> Libp2pSubscription:
        return self

    async def __anext__(self) -> GossipMessage:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> GossipMessage:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StreamClosed(f"subscription to {self.topic} is closed") from None

    async def aclose(self) -> None:
        self._pump_scope.cancel()
        self._send.close()
        await self._transport._unsubscribe(self)


# --- the transport --------------------------------------------------------------------------

class Libp2pTransport:
    """A libp2p host behind the ``Transport`` interface, restarted when the library fails
    (module docstring). Obtain it from ``open_libp2p_transport``."""

    def __init__(self, key: NodeKey, listen_addrs: tuple[str, ...], *, mdns: bool, raw_router: bool,
                 restart_policy: RestartPolicy, discovery: DiscoveryConfig = DiscoveryConfig()) -> None:
        self._key = key
        self.discovery_config = discovery
        self._public_key = key.public_key  # cached: NodeKey derives it from the seed on each call
        self._listen = listen_addrs
        self._mdns = mdns
        self._raw_router = raw_router
        self._budget = RestartBudget(restart_policy)
        self._gen: _Generation | None = None
        self._up = trio.Event()
        self._bring_up_lock = trio.Lock()
        self._started = False
        self._bound: tuple[str, ...] = ()      # transport addresses the last host listened on
        self._addrs: tuple[str, ...] = ()      # what listen_addrs said last
        self._subscriptions: dict[str, Libp2pSubscription] = {}
        self._serving: dict[str, Callable[[INetStream], Awaitable[None]]] = {}
        self._dialled: dict[ID, list[multiaddr.Multiaddr]] = {}
        self._streams: dict[ID, set[ByteFramedStream]] = {}    # open p2pgrid streams, per peer
        self._dial_locks: dict[ID, trio.Lock] = {}
        self.bootstrap_failures: list[str] = []
        self.restarts = 0                      # hosts built again after a failure
        self.last_failure: str | None = None   # where and why the last host failed, for status and logs

    @property
    def local_peer(self) -> bytes:
        return self._public_key

    @property
    def peer_id(self) -> str:
        """The libp2p peer ID (base58), for logs and for other libp2p implementations."""
        return peer_id_of(self._public_key).to_base58()

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        gen = self._gen
        if gen is not None:
            self._addrs = tuple(str(a) for a in gen.host.get_addrs())
        return self._addrs

    @property
    def is_up(self) -> bool:
        """False while the host is being restarted."""
        return self._gen is not None

    def _current(self) -> _Generation:
        gen = self._gen
        if gen is None:
            raise TransportDown("the libp2p host is restarting")
        return gen

    async def _wait_up(self) -> _Generation:
        with trio.move_on_after(RESTART_WAIT_S):
            while (gen := self._gen) is None:
                await self._up.wait()
            return gen
        raise TransportDown(f"the libp2p host is restarting and was not back within {RESTART_WAIT_S:g} s")

    # --- for p2pgrid.net tests and benchmarks ---------------------------------------------

    @property
    def host(self) -> IHost:
        """The current py-libp2p host itself: for ``p2pgrid.net`` tests and benchmarks only."""
        return self._current().host

    @property
    def pubsub(self) -> Pubsub:
        return self._current().pubsub

    @property
    def router(self) -> GossipSub:
        return self._current().router

    @property
    def discovery(self) -> PeerDiscovery | None:
        """The current host's discovery (None while restarting or when disabled): for tests."""
        gen = self._gen
        return None if gen is None else gen.discovery

    def inject_failures(self) -> None:
        """Tests only: fail a task in each pubsub service and the next subscription read
        (``p2pgrid.net.libp2p_containment``), as py-libp2p's own tasks have failed."""
        gen = self._current()
        inject_task_failures(gen.pubsub, gen.router)
        inject_reader_failure(gen.pubsub)

    def inject_daemon_failure(self) -> None:
        """Tests only: make the gossipsub heartbeat, one of the library's own loops, fail once."""
        inject_heartbeat_failure(self._current().router)

    # --- peers ----------------------------------------------------------------------------

    async def connect(self, addr: str) -> bytes:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except (ValueError, BaseLibp2pError) as exc:
            raise PeerUnreachable(f"not a dialable /p2p/ multiaddr: {addr!r} ({exc})") from exc
        public_key = public_key_of(info.peer_id)
        if public_key is None:
            raise PeerUnreachable(f"{addr} is not an Ed25519 peer")
        gen = await self._wait_up()
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await gen.host.connect(info)
        except (trio.TooSlowError, OSError, BaseLibp2pError) as exc:
            raise PeerUnreachable(f"cannot connect to {addr}: {exc}") from exc
        except Exception as exc:
            if gen.down:
                raise TransportDown(f"the libp2p host went down while connecting to {addr}") from exc
            raise
        self._dialled[info.peer_id] = list(info.addrs)    # dialled again after a restart
        return public_key

    def peers(self) -> frozenset[bytes]:
        gen = self._gen
        if gen is None:
            return frozenset()
        keys = (public_key_of(p) for p in gen.host.get_connected_peers())
        return frozenset(k for k in keys if k is not None)

    def supports(self, peer: bytes, protocol: str) -> bool:
        """What the peer listed in its last identify message (sent on connecting, pushed again
        when it registers a protocol: ``set_stream_handler``)."""
        gen = self._gen
        if gen is None or len(peer) != 32:
            return False
        peer_id = peer_id_of(peer)
        if peer_id not in gen.host.get_connected_peers():
            return False
        try:
            return bool(gen.host.get_peerstore().supports_protocols(peer_id, [protocol]))
        except PeerStoreError:
            return False

    # --- gossip ---------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        gen = await self._wait_up()
        try:
            await gen.pubsub.publish(topic, data)
        except Exception as exc:
            if gen.down:
                raise TransportDown(f"the libp2p host went down while publishing on {topic}") from exc
            raise
        # py-libp2p may not yield while publishing; let the subscription pumps drain the
        # library's bounded channels between publishes of a burst.
        await trio.lowlevel.checkpoint()

    async def subscribe(self, topic: str, validator: Validator = accept_all) -> Libp2pSubscription:
        if topic in self._subscriptions:
            raise NetError(f"already subscribed to {topic}")
        subscription = Libp2pSubscription(self, topic, validator)
        self._subscriptions[topic] = subscription
        async with self._bring_up_lock:    # a host coming up attaches it itself
            gen = self._gen
            if gen is not None:
                try:
                    await self._attach(gen, subscription)
                except Exception:
                    if not gen.down:
                        del self._subscriptions[topic]
                        raise
                    # the host went down meanwhile: the next one attaches it
        return subscription

    async def _attach(self, gen: _Generation, subscription: Libp2pSubscription) -> None:
        """Feed ``subscription`` from ``gen``'s pubsub, with its validator."""
        if subscription._generation is gen or self._subscriptions.get(subscription.topic) is not subscription:
            return
        subscription._generation = gen
        gen.pubsub.set_topic_validator(subscription.topic, self._wrap(gen, subscription.validator), False)
        source = await gen.pubsub.subscribe(subscription.topic)
        await gen.nursery.start(subscription._pump, source)

    async def _unsubscribe(self, subscription: Libp2pSubscription) -> None:
        if self._subscriptions.get(subscription.topic) is not subscription:
            return
        del self._subscriptions[subscription.topic]
        gen = subscription._generation
        if gen is None or gen.down:
            return
        gen.pubsub.remove_topic_validator(subscription.topic)
        try:
            await gen.pubsub.unsubscribe(subscription.topic)
        except BaseLibp2pError:
            pass  # the host is shutting down: there is nobody left to tell

    @staticmethod
    def _wrap(gen: _Generation, validator: Validator):  # type: ignore[no-untyped-def]
        scorer = gen.scorer
        msg_id_of = gen.pubsub._msg_id_constructor

        def libp2p_validator(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            scorer.skip_next_penalty = False
            sender = public_key_of(ID(msg.from_id))
            result = ValidationResult.REJECT if sender is None else validator(sender, bytes(msg.data))
            if result is ValidationResult.IGNORE:
                scorer.note_ignored(msg_id_of(msg))
            return result is ValidationResult.ACCEPT

        return libp2p_validator

    def topic_peers(self, topic: str) -> frozenset[bytes]:
        gen = self._gen
        if gen is None:
            return frozenset()
        keys = (public_key_of(p) for p in gen.pubsub.peer_topics.get(topic, ()))
        return frozenset(k for k in keys if k is not None)

    def mesh_peers(self, topic: str) -> frozenset[bytes]:
        gen = self._gen
        if gen is None:
            return frozenset()
        keys = (public_key_of(p) for p in gen.router.mesh.get(topic, ()))
        return frozenset(k for k in keys if k is not None)

    def peer_score(self, peer: bytes, topic: str) -> float:
        gen = self._gen
        return 0.0 if gen is None else gen.scorer.score(peer_id_of(peer), [topic])

    # --- streams --------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *,
                           max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        async def serve(stream: INetStream) -> None:
            remote = public_key_of(stream.muxed_conn.peer_id)
            if remote is None:
                await stream.reset()
                return
            framed = self._track(stream.muxed_conn.peer_id, _framed(stream, remote, protocol, max_frame_bytes))
            try:
                await handler(framed)
            except StreamClosed:
                pass  # the opener went away: the conversation is over, nothing to report
            finally:
                await framed.aclose()

        self._serving[protocol] = serve        # every later host serves it too
        gen = self._gen
        if gen is not None:
            gen.host.set_stream_handler(TProtocol(protocol), serve)
            self._push_protocols(gen)

    def _push_protocols(self, gen: _Generation) -> None:
        """Tell connected peers our protocol list again (identify push): they identified us when
        the connection opened, maybe before this handler existed, and ``supports`` reads that."""
        if gen.identify_push_due or not gen.host.get_connected_peers():
            return
        gen.identify_push_due = True

        async def push() -> None:
            await trio.sleep(IDENTIFY_PUSH_DELAY_S)    # one push for handlers registered together
            gen.identify_push_due = False
            # Only to peers that said they take pushes (the library logs an ERROR for the others).
            store = gen.host.get_peerstore()
            takers = {p for p in gen.host.get_connected_peers() if store.supports_protocols(p, [IDENTIFY_PUSH])}
            if takers:
                await push_identify_to_peers(gen.host, takers)   # best effort: failures are logged by the library

        gen.nursery.start_soon(push)

    async def open_stream(self, peer: bytes, protocol: str, *,
                          max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FramedStream:
        peer_id = peer_id_of(peer)
        gen = self._gen
        if gen is None:
            raise TransportDown(f"cannot open {protocol} to {peer.hex()[:16]}: the libp2p host is restarting")
        for attempt in range(2):
            if peer_id not in gen.host.get_connected_peers():
                await self._dial_on_demand(gen, peer_id, peer)
            try:
                stream = await gen.host.new_stream(peer_id, [TProtocol(protocol)])
                break
            except BaseLibp2pError as exc:
                if is_protocol_refusal(exc):
                    raise ProtocolNotSupported(f"peer {peer.hex()[:16]} does not serve {protocol}: {exc}") from exc
                if attempt or _has_live_connection(gen.host, peer_id):
                    raise PeerUnreachable(f"cannot open {protocol} to {peer.hex()[:16]}: {exc}") from exc
                # The peer closed the connection (its connection policy) before the swarm let go of
                # it: drop what is left of it and dial again, once.
                logger.debug("opening %s to %s failed (%s): dialling it again", protocol, peer_id, exc)
                await _drop_connection(gen.host, peer_id)
            except Exception as exc:
                if gen.down:
                    raise TransportDown(f"the libp2p host went down while opening {protocol}") from exc
                raise
        return self._track(peer_id, _framed(stream, peer, protocol, max_frame_bytes))

    async def _dial_on_demand(self, gen: _Generation, peer_id: ID, peer: bytes) -> None:
        """Connect to a peer we are not connected to: by the addresses the peerstore holds (from
        discovery, identify or an earlier connection), else by asking the rendezvous points."""
        async with self._dial_locks.setdefault(peer_id, trio.Lock()):
            if peer_id in gen.host.get_connected_peers():
                return
            tried: list[str] = []
            for lookup in (self._stored_addrs, self._looked_up_addrs):
                addrs = await lookup(gen, peer_id)
                if not addrs or [str(a) for a in addrs] == tried:
                    continue
                tried = [str(a) for a in addrs]
                try:
                    with trio.fail_after(DIAL_ON_DEMAND_TIMEOUT_S):
                        await gen.host.connect(PeerInfo(peer_id, addrs))
                    return
                except (trio.TooSlowError, OSError, BaseLibp2pError) as exc:
                    logger.debug("dialling %s on demand at %s: %s", peer_id, tried, exc)
                except Exception as exc:
                    if gen.down:
                        raise TransportDown(f"the libp2p host went down while dialling {peer.hex()[:16]}") from exc
                    raise
        what = f"no address reached ({', '.join(tried)})" if tried else "no address known or discovered"
        raise PeerUnreachable(f"not connected to peer {peer.hex()[:16]}, and dialling it failed: {what}")

    @staticmethod
    async def _stored_addrs(gen: _Generation, peer_id: ID) -> list[multiaddr.Multiaddr]:
        try:
            return dialable(gen.host.get_peerstore().addrs(peer_id))
        except PeerStoreError:
            return []

    @staticmethod
    async def _looked_up_addrs(gen: _Generation, peer_id: ID) -> list[multiaddr.Multiaddr]:
        return [] if gen.discovery is None else await gen.discovery.find_addrs(peer_id)

    def _track(self, peer_id: ID, stream: ByteFramedStream) -> ByteFramedStream:
        """Remember an open stream: the connection policy does not close a connection in use."""
        self._streams.setdefault(peer_id, set()).add(stream)
        if len(self._streams) > 4 * self.discovery_config.max_connections:
            for other in [p for p, streams in self._streams.items() if all(s.is_closed for s in streams)]:
                del self._streams[other]
        return stream

    def _stream_activity(self, peer_id: ID) -> float | None:
        """The newest frame time of ``peer_id``'s open streams (closed ones are forgotten)."""
        streams = self._streams.get(peer_id)
        if not streams:
            self._streams.pop(peer_id, None)
            return None
        streams -= {s for s in streams if s.is_closed}
        return max((s.last_active for s in streams), default=None)

    # --- supervision: one generation of the host after another ----------------------------

    async def _supervise(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the host; restart it after each failure the budget allows (module docstring).

        Errors while the first host starts are the caller's (``open_libp2p_transport`` raises
        them), as they would be without supervision.
        """
        listen, redial = self._listen, {}
        while True:
            failure = _Failure()
            try:
                await self._run_generation(listen, redial, failure, task_status)
            except Exception as exc:   # noqa: BLE001 — the boundary between the host and the node
                if not self._started:
                    raise
                if failure.exc is not None:
                    logger.debug("libp2p host: stopping after %s failed also raised %s", failure.where,
                                 describe_failure(exc))
                failure.report("host", exc)
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(self._restart_delay(failure))
            if failure.host is not None:
                redial = self._redial_targets(failure.host, failure.connected)
            listen = self._bound or self._listen
            self.restarts += 1

    def _restart_delay(self, failure: _Failure) -> float:
        """Log ``failure`` once and say how long to pause; ``TransportFailed`` beyond the budget."""
        where, exc = ((failure.where, failure.exc) if failure.exc is not None
                      else ("host", RuntimeError("the libp2p host stopped by itself")))
        self.last_failure = f"{where}: {describe_failure(exc)}"
        delay = self._budget.next_delay(trio.current_time())
        policy, count = self._budget.policy, self._budget.recent_failures
        if delay is None:
            raise TransportFailed(f"the libp2p host failed {count} times within {policy.window_s:g} s; "
                                  f"giving up (last: libp2p {self.last_failure})") from exc
        logger.warning("libp2p %s failed: %s; restarting the libp2p host in %.1f s (failure %d of at most %d "
                       "within %g s)", where, describe_failure(exc), delay, count, policy.max_restarts,
                       policy.window_s)
        return delay

    async def _run_generation(self, listen: Sequence[str], redial: dict[ID, list[multiaddr.Multiaddr]],
                              failure: _Failure, task_status: Any) -> None:
        """Build, run and tear down one host; returns once one of its own loops failed."""
        host = failure.host = build_host(self._key, mdns=self._mdns,
                                         max_connections=hard_connection_cap(self.discovery_config))
        router = gossip_config.build_raw_gossipsub() if self._raw_router else \
            gossip_config.build_gossipsub(gossip_config.GossipConfig.for_addrs(self._listen))
        scorer = _IgnoreAwareScorer(router.scorer.params)
        router.scorer = scorer
        pubsub = ContainedPubsub(host, router, strict_signing=True, seen_ttl=gossip_config.SEEN_TTL_S)
        pubsub.validation_cache = _IgnoreAwareValidationCache(scorer, pubsub.validation_cache.ttl,
                                                              pubsub.validation_cache.max_size)
        for protocol, serve in self._serving.items():
            host.set_stream_handler(TProtocol(protocol), serve)
        with trio.CancelScope() as teardown:
            async with host.run([multiaddr.Multiaddr(a) for a in listen]):
                if self._started and listen and not host.get_transport_addrs():
                    self._bound = ()          # the next attempt listens where it was configured to
                    raise TransportDown(f"could not listen on {', '.join(listen)}")
                async with contained_service(pubsub, on_daemon_failure=failure.report), \
                        contained_service(router, on_daemon_failure=failure.report):
                    async with trio.open_nursery() as nursery:
                        gen = _Generation(host, pubsub, router, scorer, nursery)
                        if self.discovery_config.enabled and not self._raw_router:
                            gen.discovery = PeerDiscovery(
                                host, router, self.discovery_config, topics=lambda: list(self._subscriptions),
                                dialled=lambda: dict(self._dialled), stream_activity=self._stream_activity,
                                public_key_of=public_key_of)
                        try:
                            await _first_of(pubsub.wait_until_ready, failure.event.wait)
                            if failure.exc is None:
                                await self._bring_up(gen, redial)
                                task_status.started()
                                await failure.event.wait()
                            teardown.deadline = trio.current_time() + TEARDOWN_TIMEOUT_S
                        finally:
                            failure.connected = frozenset(host.get_connected_peers())
                            self._take_down(gen)
                            nursery.cancel_scope.cancel()
                            await _close_host(host)
        if teardown.cancelled_caught:
            logger.warning("libp2p host: the failed host did not stop within %g s; abandoned", TEARDOWN_TIMEOUT_S)

    async def _bring_up(self, gen: _Generation, redial: dict[ID, list[multiaddr.Multiaddr]]) -> None:
        """Give ``gen`` everything the services registered, then make it the current host."""
        async with self._bring_up_lock:
            for subscription in list(self._subscriptions.values()):
                await self._attach(gen, subscription)
            for protocol, serve in self._serving.items():   # those set while subscribing
                gen.host.set_stream_handler(TProtocol(protocol), serve)
            self._bound = tuple(str(a) for a in gen.host.get_transport_addrs()) or self._bound
            self._gen = gen
            self._up.set()
        if not self._raw_router:
            gen.nursery.start_soon(_reannounce_subscriptions, gen.pubsub)
        if gen.discovery is not None:
            gen.nursery.start_soon(gen.discovery.run)
        gen.nursery.start_soon(_identify_unidentified, gen.host)
        if self._started:
            logger.info("libp2p host restarted on %s; dialling %d known peers again",
                        ", ".join(self.listen_addrs), len(redial))
            gen.nursery.start_soon(self._redial, gen, redial)
        self._started = True

    def _take_down(self, gen: _Generation) -> None:
        gen.down = True
        if self._gen is gen:
            self._gen = None
            self._up = trio.Event()

    def _redial_targets(self, old_host: IHost, connected: frozenset[ID]) -> dict[ID, list[multiaddr.Multiaddr]]:
        """Every peer this transport dialled, and every peer the old host was connected to (not
        every peer its peerstore knew: discovery fills it with a whole zone)."""
        targets = {peer_id: list(addrs) for peer_id, addrs in self._dialled.items()}
        store = old_host.get_peerstore()
        for peer_id in connected:
            try:
                addrs = store.addrs(peer_id)
            except PeerStoreError:
                continue          # expired meanwhile
            known = targets.setdefault(peer_id, [])
            known += [a for a in addrs if a not in known]
        own = old_host.get_id()
        return {p: a for p, a in targets.items() if a and p != own and public_key_of(p) is not None}

    async def _redial(self, gen: _Generation, targets: dict[ID, list[multiaddr.Multiaddr]]) -> None:
        pending = dict(targets)
        pause = REDIAL_PAUSES_S[0]
        with trio.move_on_after(REDIAL_FOR_S):
            while pending:
                async with trio.open_nursery() as nursery:
                    for peer_id, addrs in list(pending.items()):
                        nursery.start_soon(self._redial_one, gen, peer_id, addrs, pending)
                if pending:
                    await trio.sleep(pause)
                    pause = min(2 * pause, REDIAL_PAUSES_S[1])
        if pending:
            logger.info("libp2p host restarted: %d of %d peers not reachable after %g s; given up",
                        len(pending), len(targets), REDIAL_FOR_S)

    @staticmethod
    async def _redial_one(gen: _Generation, peer_id: ID, addrs: list[multiaddr.Multiaddr],
                          pending: dict[ID, list[multiaddr.Multiaddr]]) -> None:
        if peer_id not in gen.host.get_connected_peers():     # it may have dialled us first
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await gen.host.connect(PeerInfo(peer_id, addrs))
            except (trio.TooSlowError, OSError, BaseLibp2pError) as exc:
                logger.debug("re-dialling %s after a restart: %s", peer_id, exc)
                return
        pending.pop(peer_id, None)


def _framed(stream: INetStream, peer: bytes, protocol: str, max_frame_bytes: int) -> ByteFramedStream:
    async def read_some(n: int) -> bytes:
        try:
            return await stream.read(n)
        except StreamEOF:
            return b""

    return ByteFramedStream(peer=peer, protocol=protocol, max_frame_bytes=max_frame_bytes,
                            read_some=read_some, write_all=stream.write, close=stream.close,
                            transport_errors=(BaseLibp2pError,))


# --- building a host ------------------------------------------------------------------------

def hard_connection_cap(config: DiscoveryConfig) -> int:
    """The swarm's own limit, above which py-libp2p refuses connections (ours trims above
    ``max_connections``; the room between absorbs bursts of new, still protected connections)."""
    return max(4 * config.max_connections, config.max_connections + 32)


def build_host(key: NodeKey, *, mdns: bool = False, max_connections: int = 300) -> IHost:
    """A libp2p host with the node's identity, Noise, and yamux (mplex as fallback).

    py-libp2p's own connection manager is kept to a hard cap: its auto-connector would dial
    every peer of the peerstore (which discovery fills with a whole zone) up to half the cap, and
    its pruner never closes a connection carrying a stream, which every gossipsub peer does.
    Watermarks of 0 stop the first (it dials up to their mean); the second then finds nothing
    past its grace period.
    The connection policy of ``p2pgrid.net.discovery`` does both jobs instead.
    """
    key_pair = create_new_key_pair(key.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    limits = ConnectionConfig(max_connections=max_connections, min_connections=0, low_watermark=0,
                              high_watermark=0, grace_period=LIBRARY_PRUNER_GRACE_S)
    return new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
                    muxer_opt=create_yamux_muxer_option(), enable_mDNS=mdns, connection_config=limits)


@asynccontextmanager
async def open_libp2p_transport(key: NodeKey, listen_addrs: Sequence[str] = DEFAULT_LISTEN_ADDRS,
                                bootstrap: Sequence[str] = (), *, mdns: bool = False,
                                raw_router: bool = False, restart_policy: RestartPolicy = RestartPolicy(),
                                discovery: DiscoveryConfig = DiscoveryConfig()) -> AsyncIterator[Libp2pTransport]:
    """Run a libp2p node for ``key`` listening on ``listen_addrs``, dialled to ``bootstrap``.

    Bootstrap peers that cannot be reached do not stop the node: they are listed in
    ``transport.bootstrap_failures`` (and logged). The host is restarted when the library fails,
    within ``restart_policy`` (module docstring); beyond it, ``TransportFailed`` is raised here.

    ``raw_router=True`` uses py-libp2p's default gossipsub settings (benchmark baseline only; it
    still applies the process-wide queue sizes unless the process never called
    ``gossip_config.apply_library_limits``).
    """
    if not raw_router:
        gossip_config.apply_library_limits()
    transport = Libp2pTransport(key, tuple(listen_addrs), mdns=mdns, raw_router=raw_router,
                                restart_policy=restart_policy, discovery=discovery)
    async with trio.open_nursery() as nursery:
        await nursery.start(transport._supervise)
        for addr in bootstrap:
            try:
                await transport.connect(addr)
            except PeerUnreachable as exc:
                # A node whose bootstrap peers are down still starts: others may dial it.
                transport.bootstrap_failures.append(str(exc))
                logger.warning("bootstrap peer unreachable: %s", exc)
        try:
            yield transport
        finally:
            nursery.cancel_scope.cancel()


async def _first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Wait until the first of ``waits`` returns."""
    async with trio.open_nursery() as nursery:
        for wait in waits:
            nursery.start_soon(_then_cancel, wait, nursery.cancel_scope)


async def _then_cancel(wait: Callable[[], Awaitable[object]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _reannounce_subscriptions(pubsub: Pubsub) -> None:
    """Tell every peer our topics again, every ``gossip_config.REANNOUNCE_INTERVAL_S``.

    py-libp2p announces a subscription once, to the peers whose pubsub stream is up at that
    moment; a peer whose stream is still being set up (its hello already built) never learns it,
    so it never puts us in its mesh for that topic nor sends us that topic's messages directly
    (seen: 2 of 5 loopback nodes without an orders mesh after 30 s while a node started under
    load). Receivers ignore a subscription they already know, so repeating it costs one small RPC
    per peer per interval.
    """
    while True:
        await trio.sleep(gossip_config.REANNOUNCE_INTERVAL_S)
        topics = sorted(pubsub.topic_ids)
        if not topics or not pubsub.peers:
            continue
        packet = rpc_pb2.RPC()
        packet.subscriptions.extend(rpc_pb2.RPC.SubOpts(subscribe=True, topicid=t) for t in topics)
        try:
            await pubsub.message_all_peers(packet.SerializeToString())
        except BaseLibp2pError as exc:      # a peer going away mid-send: next interval tries again
            logger.debug("re-announcing subscriptions failed: %s", exc)


def _has_live_connection(host: IHost, peer_id: ID) -> bool:
    for conn in host.get_network().get_connections(peer_id):
        muxed = conn.muxed_conn
        if not getattr(conn, "is_closed", False) and not getattr(muxed, "is_closed", False) \
                and getattr(muxed, "is_established", True):
            return True
    return False


async def _drop_connection(host: IHost, peer_id: ID) -> None:
    try:
        await host.disconnect(peer_id)
    except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # already gone: that is what we wanted


async def _close_host(host: IHost) -> None:
    """Close every connection, then the host itself (its listeners: the port is free again).

    Connections are closed before pubsub stops: otherwise a message arriving during shutdown makes
    py-libp2p's pubsub read loop schedule a task on its already-closed nursery ("Nursery is closed
    to new arrivals"), which escapes as an exception group from the host. Shielded and bounded:
    this also runs while the node is being cancelled.
    """
    with trio.move_on_after(SHUTDOWN_TIMEOUT_S, shield=True):
        for peer_id in list(host.get_connected_peers()):
            try:
                await host.disconnect(peer_id)
            except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # already going away: nothing left to close
        try:
            await host.close()
        except Exception as exc:           # noqa: BLE001 — a host that fails to close is gone anyway
            logger.debug("closing the libp2p host: %s", describe_failure(exc))
