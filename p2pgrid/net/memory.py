"""An in-memory network behind the ``Transport`` interface, for tests and large simulations.

``MemoryNetwork`` is the hub (after ethereum/ddht's in-memory cluster): it knows every open
``MemoryTransport`` by public key and address (``memory/<hex public key>``). Transports only talk
to peers they are connected to (``connect``), so partitions and sparse topologies can be built.

Gossip is flooding over the connection graph, with gossipsub's rules where they matter:

* a message is identified by (publisher, sequence number) and processed once per node; a copy
  is not even queued at a node that has queued it already (a real peer drops duplicates on
  arrival; in one process, queueing the n − 1 copies of a full mesh only costs CPU);
* every node runs the topic validator once per message before anything else; ACCEPT delivers it
  to the local subscription and relays it to connected peers subscribed to the topic, IGNORE
  drops it, REJECT drops it and lowers the score of the peer that sent it to us by
  ``REJECT_PENALTY`` per message;
* only nodes subscribed to a topic relay it; a publisher that is not subscribed sends to its
  subscribed neighbours (fanout);
* the publisher's own subscription receives its message too.

Queues are unbounded: nothing is ever dropped silently (back-pressure is the caller's problem,
as it is in a real network). Each node processes its inbound messages in one task, in order.
Streams are ``trio.testing.memory_stream_pair`` byte streams with the same framing as libp2p.
The network reads no clock, so it runs under ``trio.testing.MockClock`` as well.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from p2pgrid.identity import NodeKey
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

ADDRESS_PREFIX = "memory/"
REJECT_PENALTY = 1.0


@dataclass(frozen=True)
class _Envelope:
    topic: str
    origin: bytes
    seqno: int
    data: bytes
    forwarder: bytes

    @property
    def message_id(self) -> tuple[bytes, int]:
        return (self.origin, self.seqno)


class MemorySubscription:
    """A topic's accepted messages; ``aclose`` unsubscribes."""

    def __init__(self, transport: MemoryTransport, topic: str) -> None:
        self.topic = topic
        self._transport = transport
        self._send, self._receive = trio.open_memory_channel[GossipMessage](math.inf)

    def _deliver(self, message: GossipMessage) -> None:
        try:
            self._send.send_nowait(message)
        except trio.ClosedResourceError:
            pass  # unsubscribed while the message was in flight: nobody to deliver to

    def __aiter__(self) -> MemorySubscription:
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
        self._transport._unsubscribe(self.topic)
        self._send.close()


class MemoryTransport:
    """One node's endpoint on a ``MemoryNetwork``. Get one from ``MemoryNetwork.open_transport``."""

    def __init__(self, network: MemoryNetwork, public_key: bytes, nursery: trio.Nursery) -> None:
        self._network = network
        self._public_key = public_key
        self._nursery = nursery
        self._links: set[bytes] = set()
        # peer → our ends of the streams open to it (weak: a stream dropped after use goes by itself)
        self._streams: dict[bytes, weakref.WeakSet[trio.abc.HalfCloseableStream]] = {}
        self._subscriptions: dict[str, MemorySubscription] = {}
        self._validators: dict[str, Validator] = {}
        self._handlers: dict[str, tuple[StreamHandler, int]] = {}
        self._seen: set[tuple[bytes, int]] = set()
        self._invalid: defaultdict[tuple[bytes, str], float] = defaultdict(float)
        self._seqno = itertools.count(1)
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[_Envelope](math.inf)
        self._open = True

    # --- identity and connections ---------------------------------------------------------

    @property
    def local_peer(self) -> bytes:
        return self._public_key

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return (ADDRESS_PREFIX + self._public_key.hex(),)

    async def connect(self, addr: str) -> bytes:
        remote = self._network._lookup(addr)
        if remote is None or not remote._open or not self._open:
            raise PeerUnreachable(f"no memory transport listening at {addr}")
        if remote is not self:
            self._links.add(remote.local_peer)
            remote._links.add(self._public_key)
        await trio.lowlevel.checkpoint()
        return remote.local_peer

    def disconnect(self, peer: bytes) -> None:
        """Drop the link to ``peer`` (both directions) and every stream open over it, as a real
        disconnect does: for partition tests."""
        self._links.discard(peer)
        self._close_streams(peer)
        remote = self._network._transports.get(peer)
        if remote is not None:
            remote._links.discard(self._public_key)
            remote._close_streams(self._public_key)

    def _close_streams(self, peer: bytes) -> None:
        for stream in list(self._streams.pop(peer, ())):
            self._nursery.start_soon(stream.aclose)

    def peers(self) -> frozenset[bytes]:
        return frozenset(self._links)

    def supports(self, peer: bytes, protocol: str) -> bool:
        remote = self._network._transports.get(peer)
        return peer in self._links and remote is not None and remote._open and protocol in remote._handlers

    # --- gossip ---------------------------------------------------------------------------

    async def publish(self, topic: str, data: bytes) -> None:
        if not self._open:
            raise NetError("transport is closed")
        envelope = _Envelope(topic, self._public_key, next(self._seqno), bytes(data), self._public_key)
        self._seen.add(envelope.message_id)
        if topic in self._subscriptions:
            if self._validate(envelope) is not ValidationResult.ACCEPT:
                await trio.lowlevel.checkpoint()
                return
            self._subscriptions[topic]._deliver(GossipMessage(envelope.origin, envelope.data))
        self._relay(envelope)
        await trio.lowlevel.checkpoint()

    async def subscribe(self, topic: str, validator: Validator = accept_all) -> MemorySubscription:
        if topic in self._subscriptions:
            raise NetError(f"already subscribed to {topic}")
        subscription = MemorySubscription(self, topic)
        self._subscriptions[topic] = subscription
        self._validators[topic] = validator
        await trio.lowlevel.checkpoint()
        return subscription

    def _unsubscribe(self, topic: str) -> None:
        self._subscriptions.pop(topic, None)
        self._validators.pop(topic, None)

    def topic_peers(self, topic: str) -> frozenset[bytes]:
        return frozenset(p for p in self._links if self._network._is_subscribed(p, topic))

    def peer_score(self, peer: bytes, topic: str) -> float:
        return -REJECT_PENALTY * self._invalid[(peer, topic)]

    def _validate(self, envelope: _Envelope) -> ValidationResult:
        validator = self._validators.get(envelope.topic, accept_all)
        return validator(envelope.origin, envelope.data)

    def _relay(self, envelope: _Envelope) -> None:
        forwarded = _Envelope(envelope.topic, envelope.origin, envelope.seqno, envelope.data, self._public_key)
        for peer in sorted(self._links):
            if peer in (envelope.forwarder, envelope.origin):
                continue
            remote = self._network._transports.get(peer)
            if remote is not None and remote._open and envelope.topic in remote._subscriptions:
                remote._receive(forwarded)

    def _receive(self, envelope: _Envelope) -> None:
        """Queue a relayed message unless this node has it already (queued, processed or its own)."""
        if envelope.message_id not in self._seen:
            self._seen.add(envelope.message_id)
            self._inbox_send.send_nowait(envelope)

    async def _process_inbox(self) -> None:
        async for envelope in self._inbox_receive:
            if envelope.topic not in self._subscriptions:
                self._seen.discard(envelope.message_id)   # unsubscribed meanwhile: a later copy may count
                continue
            result = self._validate(envelope)
            if result is ValidationResult.REJECT:
                self._invalid[(envelope.forwarder, envelope.topic)] += 1
                continue
            if result is ValidationResult.IGNORE:
                continue
            self._subscriptions[envelope.topic]._deliver(GossipMessage(envelope.origin, envelope.data))
            self._relay(envelope)
            await trio.lowlevel.checkpoint()

    # --- streams --------------------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *,
                           max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._handlers[protocol] = (handler, max_frame_bytes)

    async def open_stream(self, peer: bytes, protocol: str, *,
                          max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FramedStream:
        check_public_key(peer)
        remote = self._network._transports.get(peer)
        if remote is None or not remote._open or peer not in self._links:
            raise PeerUnreachable(f"not connected to peer {peer.hex()[:16]}")
        served = remote._handlers.get(protocol)
        if served is None:
            raise ProtocolNotSupported(f"peer {peer.hex()[:16]} does not serve {protocol}")
        handler, remote_max = served
        local_end, remote_end = trio.testing.memory_stream_pair()
        self._streams.setdefault(peer, weakref.WeakSet()).add(local_end)
        remote._streams.setdefault(self._public_key, weakref.WeakSet()).add(remote_end)
        ours = _framed(local_end, peer, protocol, max_frame_bytes)
        theirs = _framed(remote_end, self._public_key, protocol, remote_max)
        remote._nursery.start_soon(_serve, handler, theirs)
        await trio.lowlevel.checkpoint()
        return ours

    async def _close(self) -> None:
        self._open = False
        for peer in list(self._links):
            self.disconnect(peer)
        for subscription in list(self._subscriptions.values()):
            await subscription.aclose()
        self._inbox_send.close()


def _framed(stream: trio.abc.HalfCloseableStream, peer: bytes, protocol: str, max_frame_bytes: int) -> ByteFramedStream:
    return ByteFramedStream(peer=peer, protocol=protocol, max_frame_bytes=max_frame_bytes,
                            read_some=stream.receive_some, write_all=stream.send_all, close=stream.aclose)


async def _serve(handler: StreamHandler, stream: FramedStream) -> None:
    try:
        await handler(stream)
    except StreamClosed:
        pass  # the opener went away: the conversation is over, nothing to report
    finally:
        await stream.aclose()


class MemoryNetwork:
    """The hub of in-memory transports. One per simulated network."""

    def __init__(self) -> None:
        self._transports: dict[bytes, MemoryTransport] = {}

    @asynccontextmanager
    async def open_transport(self, key: NodeKey | bytes, *, connect_to: tuple[str, ...] = ()
                             ) -> AsyncIterator[MemoryTransport]:
        """A transport for ``key`` (a ``NodeKey`` or a bare 32-byte public key), dialled to ``connect_to``."""
        public_key = check_public_key(key.public_key if isinstance(key, NodeKey) else key)
        if public_key in self._transports:
            raise NetError(f"peer {public_key.hex()[:16]} is already on this network")
        async with trio.open_nursery() as nursery:
            transport = MemoryTransport(self, public_key, nursery)
            self._transports[public_key] = transport
            nursery.start_soon(transport._process_inbox)
            try:
                for addr in connect_to:
                    await transport.connect(addr)
                yield transport
            finally:
                del self._transports[public_key]
                await transport._close()
                nursery.cancel_scope.cancel()

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(addr for t in self._transports.values() for addr in t.listen_addrs)

    def _lookup(self, addr: str) -> MemoryTransport | None:
        if not addr.startswith(ADDRESS_PREFIX):
            return None
        try:
            public_key = bytes.fromhex(addr[len(ADDRESS_PREFIX):])
        except ValueError:
            return None
        return self._transports.get(public_key)

    def _is_subscribed(self, peer: bytes, topic: str) -> bool:
        transport = self._transports.get(peer)
        return transport is not None and topic in transport._subscriptions
