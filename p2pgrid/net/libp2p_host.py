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

Subscriptions. Each subscription has a pump task that moves messages from py-libp2p's bounded
channel (which drops when full) into an unbounded one, so a slow consumer never loses messages.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p import create_yamux_muxer_option, new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache
from libp2p.pubsub.score import PeerScorer
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pgrid.identity import NodeKey
from p2pgrid.net import gossip_config
from p2pgrid.net.libp2p_containment import (ContainedPubsub, contained_service, inject_reader_failure,
                                            inject_task_failures)
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


# --- subscriptions --------------------------------------------------------------------------

class Libp2pSubscription:
    def __init__(self, transport: Libp2pTransport, topic: str) -> None:
        self.topic = topic
        self._transport = transport
        self._send, self._receive = trio.open_memory_channel[GossipMessage](math.inf)
        self._cancel = trio.CancelScope()

    async def _pump(self, source, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        with self._cancel:
            task_status.started()
            async for message in source:
                sender = public_key_of(ID(message.from_id))
                if sender is None:
                    continue  # our validator already refuses non-Ed25519 publishers
                self._send.send_nowait(GossipMessage(sender, bytes(message.data)))
        self._send.close()

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
        self._cancel.cancel()
        self._send.close()
        await self._transport._unsubscribe(self.topic)


# --- the transport --------------------------------------------------------------------------

class Libp2pTransport:
    """A running libp2p host behind the ``Transport`` interface."""

    def __init__(self, key: NodeKey, host: IHost, pubsub: Pubsub, router: GossipSub,
                 scorer: _IgnoreAwareScorer, nursery: trio.Nursery) -> None:
        self._public_key = key.public_key  # cached: NodeKey derives it from the seed on each call
        self._host = host
        self._pubsub = pubsub
        self._router = router
        self._scorer = scorer
        self._nursery = nursery
        self._subscriptions: dict[str, Libp2pSubscription] = {}
        self.bootstrap_failures: list[str] = []

    @property
    def local_peer(self) -> bytes:
        return self._public_key

    @property
    def peer_id(self) -> str:
        """The libp2p peer ID (base58), for logs and for other libp2p implementations."""
        return self._host.get_id().to_base58()

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self._host.get_addrs())

    @property
    def host(self) -> IHost:
        """The py-libp2p host itself: for ``p2pgrid.net`` tests and benchmarks only."""
        return self._host

    def inject_failures(self) -> None:
        """Tests only: fail a task in each pubsub service and the next subscription read
        (``p2pgrid.net.libp2p_containment``), as py-libp2p's own tasks have failed."""
        inject_task_failures(self._pubsub, self._router)
        inject_reader_failure(self._pubsub)

    async def connect(self, addr: str) -> bytes:
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        except (ValueError, BaseLibp2pError) as exc:
            raise PeerUnreachable(f"not a dialable /p2p/ multiaddr: {addr!r} ({exc})") from exc
        public_key = public_key_of(info.peer_id)
        if public_key is None:
            raise PeerUnreachable(f"{addr} is not an Ed25519 peer")
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await self._host.connect(info)
        except (trio.TooSlowError, OSError, BaseLibp2pError) as exc:
            raise PeerUnreachable(f"cannot connect to {addr}: {exc}") from exc
        return public_key

    def peers(self) -> frozenset[bytes]:
        keys = (public_key_of(p) for p in self._host.get_connected_peers())
        return frozenset(k for k in keys if k is not None)

    # --- gossip ---------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        await self._pubsub.publish(topic, data)
        # py-libp2p may not yield while publishing; let the subscription pumps drain the
        # library's bounded channels between publishes of a burst.
        await trio.lowlevel.checkpoint()

    async def subscribe(self, topic: str, validator: Validator = accept_all) -> Libp2pSubscription:
        if topic in self._subscriptions:
            raise NetError(f"already subscribed to {topic}")
        self._pubsub.set_topic_validator(topic, self._wrap(validator), False)
        source = await self._pubsub.subscribe(topic)
        subscription = Libp2pSubscription(self, topic)
        self._subscriptions[topic] = subscription
        await self._nursery.start(subscription._pump, source)
        return subscription

    async def _unsubscribe(self, topic: str) -> None:
        if self._subscriptions.pop(topic, None) is None:
            return
        self._pubsub.remove_topic_validator(topic)
        try:
            await self._pubsub.unsubscribe(topic)
        except BaseLibp2pError:
            pass  # the host is shutting down: there is nobody left to tell

    def _wrap(self, validator: Validator):  # type: ignore[no-untyped-def]
        scorer = self._scorer
        msg_id_of = self._pubsub._msg_id_constructor

        def libp2p_validator(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            scorer.skip_next_penalty = False
            sender = public_key_of(ID(msg.from_id))
            result = ValidationResult.REJECT if sender is None else validator(sender, bytes(msg.data))
            if result is ValidationResult.IGNORE:
                scorer.note_ignored(msg_id_of(msg))
            return result is ValidationResult.ACCEPT

        return libp2p_validator

    def topic_peers(self, topic: str) -> frozenset[bytes]:
        keys = (public_key_of(p) for p in self._pubsub.peer_topics.get(topic, ()))
        return frozenset(k for k in keys if k is not None)

    def mesh_peers(self, topic: str) -> frozenset[bytes]:
        keys = (public_key_of(p) for p in self._router.mesh.get(topic, ()))
        return frozenset(k for k in keys if k is not None)

    def peer_score(self, peer: bytes, topic: str) -> float:
        return self._scorer.score(peer_id_of(peer), [topic])

    # --- streams --------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *,
                           max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        async def serve(stream: INetStream) -> None:
            remote = public_key_of(stream.muxed_conn.peer_id)
            if remote is None:
                await stream.reset()
                return
            framed = _framed(stream, remote, protocol, max_frame_bytes)
            try:
                await handler(framed)
            except StreamClosed:
                pass  # the opener went away: the conversation is over, nothing to report
            finally:
                await framed.aclose()

        self._host.set_stream_handler(TProtocol(protocol), serve)

    async def open_stream(self, peer: bytes, protocol: str, *,
                          max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FramedStream:
        peer_id = peer_id_of(peer)
        if peer_id not in self._host.get_connected_peers():
            raise PeerUnreachable(f"not connected to peer {peer.hex()[:16]}")
        try:
            stream = await self._host.new_stream(peer_id, [TProtocol(protocol)])
        except BaseLibp2pError as exc:
            if _is_protocol_refusal(exc):
                raise ProtocolNotSupported(f"peer {peer.hex()[:16]} does not serve {protocol}: {exc}") from exc
            raise PeerUnreachable(f"cannot open {protocol} to {peer.hex()[:16]}: {exc}") from exc
        return _framed(stream, peer, protocol, max_frame_bytes)


def _is_protocol_refusal(exc: BaseException) -> bool:
    """py-libp2p wraps multistream-select's "na" answer in generic errors: look down the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if "not supported" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


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

def build_host(key: NodeKey, *, mdns: bool = False) -> IHost:
    """A libp2p host with the node's identity, Noise, and yamux (mplex as fallback)."""
    key_pair = create_new_key_pair(key.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(key_pair=key_pair, sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
                    muxer_opt=create_yamux_muxer_option(), enable_mDNS=mdns)


@asynccontextmanager
async def open_libp2p_transport(key: NodeKey, listen_addrs: Sequence[str] = DEFAULT_LISTEN_ADDRS,
                                bootstrap: Sequence[str] = (), *, mdns: bool = False,
                                raw_router: bool = False) -> AsyncIterator[Libp2pTransport]:
    """Run a libp2p node for ``key`` listening on ``listen_addrs``, dialled to ``bootstrap``.

    Bootstrap peers that cannot be reached do not stop the node: they are listed in
    ``transport.bootstrap_failures`` (and logged).

    ``raw_router=True`` uses py-libp2p's default gossipsub settings (benchmark baseline only; it
    still applies the process-wide queue sizes unless the process never called
    ``gossip_config.apply_library_limits``).
    """
    if not raw_router:
        gossip_config.apply_library_limits()
    config = gossip_config.GossipConfig.for_addrs(tuple(listen_addrs))
    host = build_host(key, mdns=mdns)
    router = gossip_config.build_raw_gossipsub() if raw_router else gossip_config.build_gossipsub(config)
    scorer = _IgnoreAwareScorer(router.scorer.params)
    router.scorer = scorer
    pubsub = ContainedPubsub(host, router, strict_signing=True, seen_ttl=gossip_config.SEEN_TTL_S)
    pubsub.validation_cache = _IgnoreAwareValidationCache(scorer, pubsub.validation_cache.ttl,
                                                          pubsub.validation_cache.max_size)
    async with host.run([multiaddr.Multiaddr(a) for a in listen_addrs]):
        # One peer's failing task stays with that task (p2pgrid.net.libp2p_containment).
        async with contained_service(pubsub), contained_service(router):
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                transport = Libp2pTransport(key, host, pubsub, router, scorer, nursery)
                if not raw_router:
                    nursery.start_soon(_reannounce_subscriptions, pubsub)
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
                    await _disconnect_everyone(host)


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


async def _disconnect_everyone(host: IHost) -> None:
    """Close every connection before pubsub stops.

    Otherwise a message arriving during shutdown makes py-libp2p's pubsub read loop schedule a
    task on its already-closed nursery ("Nursery is closed to new arrivals"), which escapes as an
    exception group from the host.
    """
    with trio.move_on_after(SHUTDOWN_TIMEOUT_S, shield=True):
        for peer_id in list(host.get_connected_peers()):
            try:
                await host.disconnect(peer_id)
            except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # already going away: nothing left to close
