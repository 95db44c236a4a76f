"""Finding the peers of a zone and keeping few connections, with py-libp2p's rendezvous protocol.

Why rendezvous (``libp2p.discovery.rendezvous``), measured with py-libp2p 0.8.1 on loopback: it
found every member of a namespace in ~0.1 s, resolved a peer by id through a ``peer/<id>``
namespace, and leaves the connections sparse. Kademlia (``libp2p.kad_dht``) found peers too, but its
start-up refresh connected every host to every other, its provider records cannot be withdrawn
and ``find_providers`` answers from the local store alone once that holds anything; gossipsub
peer exchange (PX) was unreliable (heartbeat PRUNEs carried no peers). docs/ARCHITECTURE.md
("Discovery and connections") has the whole picture.

Rendezvous points. Any node may serve one (``serve_rendezvous``: the node runs py-libp2p's
``RendezvousService``); a node serving one also registers under ``RENDEZVOUS_NAMESPACE`` so that
others learn of it. A node uses up to ``max_rendezvous_points`` points: the peers it dialled by
address first (its bootstrap peers, its validators), then the points it learnt of; a peer that
answers the rendezvous protocol with "not supported" is skipped for ``NOT_A_POINT_FOR_S``. One
point going down costs nothing while another holds the same registrations.

Namespaces. A node registers (TTL ``REGISTRATION_TTL_S``, renewed every ``refresh_s``) under

* the namespace of each gossip topic it subscribes to: the topic without its last path part, so
  ``p2pgrid/v1/<zone>/orders``, ``…/pools`` and ``…/ledger`` all make ``p2pgrid/v1/<zone>``;
* ``p2pgrid/peer/<peer id>``, so that any node can find its addresses by id.

Each round it asks one point (in turn) for the members of every namespace of its topics and of
``RENDEZVOUS_NAMESPACE``, and stores what it learns in the peerstore. ``find_addrs`` resolves a
peer by id: peerstore, then the ``p2pgrid/peer/<id>`` namespace at each point.

Connections. Every ``CHECK_INTERVAL_S`` the node dials members it is not connected to and closes
surplus connections, as ``p2pgrid.net.connections`` decides. A peer that went away without us
closing it (it trimmed us, or it stopped) is not dialled for discovery again for ``BACKOFF_S``.

One ``PeerDiscovery`` serves one generation of the libp2p host (``libp2p_host``): a restarted
host gets a new one, which starts again from the dialled peers, so discovery resumes by itself.
Its logs: py-libp2p's rendezvous service logs every normally closed stream at ERROR and every
registration at INFO, gossipsub every GRAFT within a back-off at WARNING; ``quiet_library_logs``
lowers those to DEBUG.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import multiaddr
import trio
from libp2p.abc import IHost
import varint
from libp2p.custom_types import TProtocol
from libp2p.discovery.rendezvous.config import MAX_MESSAGE_SIZE, RENDEZVOUS_PROTOCOL
from libp2p.discovery.rendezvous.messages import (create_discover_message, create_register_message,
                                                  parse_peer_info)
from libp2p.discovery.rendezvous.pb.rendezvous_pb2 import Message
from libp2p.discovery.rendezvous.service import RegistrationRecord, RendezvousService
from libp2p.exceptions import BaseLibp2pError
from libp2p.io.exceptions import IOException
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.peer.peerstore import PeerStoreError
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from p2pgrid.net.connections import DiscoveryConfig, ConnectionView, connections_to_close, peers_to_dial

logger = logging.getLogger(__name__)

RENDEZVOUS_NAMESPACE = "p2pgrid/rendezvous"
REGISTRATION_TTL_S = 120          # the protocol's minimum: a node gone is forgotten within 2 min
EARLY_ROUND_S = 2.0               # ... and this often while the node has fewer than its target
WARM_UP_ROUNDS = 5                # ... and for its first rounds: peers starting with it register late
RENEW_AT = 0.9                    # registrations are renewed once this share of refresh_s has passed
DISCOVERED_ADDR_TTL_S = 600       # peerstore lifetime of addresses learnt from a point
CHECK_INTERVAL_S = 1.0            # connections are dialled and trimmed this often
BACKOFF_S = 60.0                  # a peer that closed on us (or failed a dial) is left alone this long
NOT_A_POINT_FOR_S = 300.0         # a peer that does not serve rendezvous is not asked again this long
DIAL_TIMEOUT_S = 10.0
RENDEZVOUS_TIMEOUT_S = 10.0
DISCOVER_LIMIT = 1000             # the protocol's largest page
LOOKUPS_REMEMBERED = 1024


def namespace_of(topic: str) -> str:
    """The rendezvous namespace of a gossip topic: the topic without its last path part."""
    head, _, _ = topic.rpartition("/")
    return head or topic


def peer_namespace(peer_id: ID) -> str:
    return f"p2pgrid/peer/{peer_id.to_base58()}"


def dialable(addrs: Iterable[multiaddr.Multiaddr]) -> list[multiaddr.Multiaddr]:
    """Transport addresses (``/p2p/<id>`` stripped): what the peerstore and a dial want."""
    out = []
    for addr in addrs:
        text = str(addr).split("/p2p/", 1)[0]
        if text:
            plain = multiaddr.Multiaddr(text)
            if plain not in out:
                out.append(plain)
    return out


def quiet_library_logs() -> None:
    """Lower routine py-libp2p records to DEBUG (idempotent): the rendezvous service logs each
    normally closed stream at ERROR (an empty ``StreamEOF``) and each registration at INFO;
    gossipsub warns of every GRAFT inside a PRUNE back-off ("GRAFT flood") — routine while meshes
    form and connections are trimmed, and without effect on scores here (``gossip_config`` leaves the
    behaviour penalty's weight at py-libp2p's 0): it answers with another PRUNE, as it should."""
    for name in ("libp2p.discovery.rendezvous.service", "libp2p.discovery.rendezvous.client",
                 "libp2p.discovery.rendezvous.discovery", "libp2p.pubsub.gossipsub"):
        library_logger = logging.getLogger(name)
        if not any(isinstance(f, _RoutineRendezvousRecords) for f in library_logger.filters):
            library_logger.addFilter(_RoutineRendezvousRecords())


class _RoutineRendezvousRecords(logging.Filter):
    ROUTINE = ("Registered ", "Unregistered ", "Discovered ", "Found ", "Rendezvous service started",
               "Refresh task cancelled", "New rendezvous stream", "GRAFT flood detected",
               "GRAFT: ignoring request from")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        closed = message.startswith("Error handling stream from ") and (
            message.endswith(": ") or "EOF" in message or "closed" in message.lower())
        if closed or message.startswith(self.ROUTINE):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


@dataclass
class _Members:
    """What the last rounds learnt: namespace → peer → addresses."""

    by_namespace: dict[str, dict[ID, list[multiaddr.Multiaddr]]] = field(default_factory=dict)

    def add(self, namespace: str, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        self.by_namespace.setdefault(namespace, {})[peer_id] = addrs

    def addrs_of(self, peer_id: ID, namespace: str | None = None) -> list[multiaddr.Multiaddr]:
        for name, peers in self.by_namespace.items():
            if peer_id in peers and namespace in (None, name):
                return peers[peer_id]
        return []


class PeerDiscovery:
    """Rendezvous registration, member discovery and the connection policy for one host.

    ``topics()`` lists the gossip topics subscribed, ``dialled()`` the peers dialled by address
    (with their addresses: bootstrap peers, validators — protected and asked first as points),
    ``stream_activity(peer_id)`` the newest frame time of that peer's open p2pgrid streams, and
    ``public_key_of`` says which peers are p2pgrid peers (Ed25519). Times are ``trio.current_time()``.
    """

    def __init__(self, host: IHost, router: GossipSub, config: DiscoveryConfig, *,
                 topics: Callable[[], Iterable[str]],
                 dialled: Callable[[], dict[ID, list[multiaddr.Multiaddr]]],
                 stream_activity: Callable[[ID], float | None],
                 public_key_of: Callable[[ID], bytes | None]) -> None:
        self.host = host
        self.router = router
        self.config = config
        self._topics = topics
        self._dialled = dialled
        self._stream_activity = stream_activity
        self._public_key_of = public_key_of
        self.service = RendezvousService(host) if config.serve_rendezvous else None
        self.members = _Members()
        self.looked_up: dict[ID, list[multiaddr.Multiaddr]] = {}    # answers of find_addrs
        self.points: list[ID] = []                 # the points registered with in the last round
        self.known_points: dict[ID, list[multiaddr.Multiaddr]] = {}
        self._not_points: dict[ID, float] = {}
        self._backoff: dict[ID, float] = {}
        self._connected_since: dict[ID, float] = {}
        self._closing: set[ID] = set()
        self._dialling: set[ID] = set()
        self._turn = 0
        self._registered: dict[ID, tuple[float, tuple[str, ...]]] = {}   # point → when, under what
        seed = host.get_id().to_bytes()
        self._rng = random.Random(seed)
        self.rounds = 0                            # rendezvous rounds done (for tests and status)
        self.trimmed = 0                           # connections this node closed for the bound

    # --- running --------------------------------------------------------------------------

    async def run(self) -> None:
        quiet_library_logs()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._rendezvous_loop)
            nursery.start_soon(self._connection_loop, nursery)

    async def _rendezvous_loop(self) -> None:
        while True:
            await self.rendezvous_round()
            short = len(self._connected()) < self.config.target_connections or not self.points
            pause = EARLY_ROUND_S if short or self.rounds < WARM_UP_ROUNDS else self.config.refresh_s
            await trio.sleep(pause * (0.75 + 0.5 * self._rng.random()))   # spread the points' load

    async def _connection_loop(self, nursery: trio.Nursery) -> None:
        while True:
            await self.check_connections(nursery)
            # jittered: two nodes that learnt of each other at once should rarely dial each other at once
            await trio.sleep(CHECK_INTERVAL_S * (0.5 + self._rng.random()))

    # --- rendezvous -----------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return sorted({namespace_of(t) for t in self._topics()})

    async def rendezvous_round(self) -> None:
        """Register at up to ``max_rendezvous_points`` points at once (again every ``refresh_s``) and
        learn the members of our namespaces (from one point per round, in turn). One stream per
        point and round carries it all."""
        namespaces = self.namespaces()
        own = namespaces + [peer_namespace(self.host.get_id())]
        if self.service is not None:
            own.append(RENDEZVOUS_NAMESPACE)
            self._register_locally(own)
        asked = namespaces + [RENDEZVOUS_NAMESPACE]
        if self.service is not None:
            self._learn_locally(asked)
        batch = self._point_candidates()[:self.config.max_rendezvous_points]
        now = trio.current_time()

        async def visit(index: int, point: ID, addrs: list[multiaddr.Multiaddr]) -> None:
            when, under = self._registered.get(point, (-math.inf, ()))
            due = now - when >= self.config.refresh_s * RENEW_AT or under != tuple(own)   # or a new topic
            ask = asked if index == self._turn % len(batch) else []   # one point a round, in turn
            if due or ask:
                if await self._visit(point, addrs, own if due else [], ask):
                    if due:
                        self._registered[point] = (now, tuple(own))
                elif due:
                    self._registered.pop(point, None)

        async with trio.open_nursery() as nursery:
            for index, (point, addrs) in enumerate(batch):
                nursery.start_soon(visit, index, point, addrs)
        self._turn += 1
        self.points = [point for point, _ in batch if point in self._registered]
        self.rounds += 1

    def _point_candidates(self) -> list[tuple[ID, list[multiaddr.Multiaddr]]]:
        now = trio.current_time()
        me = self.host.get_id()
        seen: set[ID] = set()
        out = []
        for peer_id, addrs in list(self._dialled().items()) + list(self.known_points.items()):
            if peer_id == me or peer_id in seen or self._not_points.get(peer_id, -1.0) > now:
                continue
            seen.add(peer_id)
            out.append((peer_id, addrs))
        return out

    async def _visit(self, point: ID, addrs: list[multiaddr.Multiaddr], register: list[str],
                     discover: list[str]) -> bool:
        """Register under ``register`` and ask for the members of ``discover`` at ``point``.

        A connection opened only for the visit (even to a bootstrap peer, which closed ours when it
        was over its bound) is closed after it once the node has its target of connections:
        otherwise every renewal would push a busy point over its bound again, and the point would
        close an older connection (perhaps a gossip mesh peer) to make room."""
        transient = point not in self.host.get_connected_peers()
        if not await self.connect(point, addrs):
            return False
        if self._listed_without_rendezvous(point):
            # Its identify listed what it serves and rendezvous is not among it: asking would only
            # get a refusal (which py-libp2p logs as a multi-line ERROR block on every round).
            self._not_points[point] = trio.current_time() + NOT_A_POINT_FOR_S
            self.known_points.pop(point, None)
            return False
        try:
            return await self._exchange_at(point, register, discover)
        finally:
            now = trio.current_time()
            activity = self._activity(point, now, rendezvous=False)
            idle = activity is None or now - activity >= self.config.idle_s
            if transient and idle and len(self._connected()) > self.config.target_connections:
                self._closing.add(point)
                with trio.CancelScope(shield=True):
                    await self._disconnect(point)

    def _listed_without_rendezvous(self, point: ID) -> bool:
        """The peer's identify message came (its protocols are known) and lists no rendezvous
        service. A point's service is set up before its host connects anywhere, so its first
        identify already lists it; unknown protocols (identify still on its way) are tried."""
        try:
            protocols = self.host.get_peerstore().get_protocols(point)
        except PeerStoreError:
            return False
        return bool(protocols) and RENDEZVOUS_PROTOCOL not in protocols

    async def _exchange_at(self, point: ID, register: list[str], discover: list[str]) -> bool:
        own_addrs = self.host.get_addrs()
        requests = [create_register_message(ns, self.host.get_id(), own_addrs, REGISTRATION_TTL_S) for ns in register]
        requests += [create_discover_message(ns, DISCOVER_LIMIT) for ns in discover]
        try:
            with trio.fail_after(RENDEZVOUS_TIMEOUT_S):
                replies = await self._exchange(point, requests)
        except (BaseLibp2pError, IOException, OSError, trio.TooSlowError, ValueError) as exc:
            if is_protocol_refusal(exc):
                self._not_points[point] = trio.current_time() + NOT_A_POINT_FOR_S
                self.known_points.pop(point, None)
            else:
                logger.debug("rendezvous point %s: %s", point, exc)
            return False
        accepted = True
        for request, reply in zip(requests, replies):
            if request.type == Message.REGISTER:
                if reply.type != Message.REGISTER_RESPONSE or reply.registerResponse.status != Message.ResponseStatus.OK:
                    logger.debug("rendezvous point %s refused %s: %s", point, request.register.ns,
                                 reply.registerResponse.statusText)
                    accepted = False
            elif reply.type == Message.DISCOVER_RESPONSE and reply.discoverResponse.status == Message.ResponseStatus.OK:
                for registration in reply.discoverResponse.registrations:
                    try:
                        peer_id, found = parse_peer_info(registration.peer)
                    except (ValueError, BaseLibp2pError) as exc:
                        logger.debug("rendezvous point %s: unreadable registration: %s", point, exc)
                        continue
                    self._learn(request.discover.ns, peer_id, found)
        return accepted

    async def _exchange(self, point: ID, requests: list[Message]) -> list[Message]:
        """Send every request on one stream (the service answers them in order), read the answers."""
        stream = await self.host.new_stream(point, [TProtocol(RENDEZVOUS_PROTOCOL)])
        try:
            for request in requests:
                data = request.SerializeToString()
                await stream.write(varint.encode(len(data)) + data)
            replies = []
            for _ in requests:
                reply = Message()
                reply.ParseFromString(await read_varint_prefixed_bytes_limited(stream, MAX_MESSAGE_SIZE))
                replies.append(reply)
            return replies
        finally:
            await stream.close()

    def _register_locally(self, namespaces: list[str]) -> None:
        """A point holds its own registrations too: it cannot open a stream to itself."""
        me = self.host.get_id()
        addrs = [a.to_bytes() for a in self.host.get_addrs()]
        if self.service is None or not addrs:
            return
        for namespace in namespaces:
            self.service.registrations.setdefault(namespace, {})[me] = RegistrationRecord(
                me, addrs, namespace, REGISTRATION_TTL_S)

    def _learn_locally(self, namespaces: list[str]) -> None:
        if self.service is None:
            return
        for namespace in namespaces:
            for peer_id, record in list(self.service.registrations.get(namespace, {}).items()):
                if not record.is_expired():
                    self._learn(namespace, peer_id, [multiaddr.Multiaddr(a) for a in record.addrs])

    def _learn(self, namespace: str, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> None:
        addrs = dialable(addrs)
        if peer_id == self.host.get_id() or not addrs or self._public_key_of(peer_id) is None:
            return
        self.host.get_peerstore().add_addrs(peer_id, addrs, DISCOVERED_ADDR_TTL_S)
        if namespace == RENDEZVOUS_NAMESPACE:
            self.known_points[peer_id] = addrs
        elif namespace == peer_namespace(peer_id):
            self.looked_up[peer_id] = addrs
            while len(self.looked_up) > LOOKUPS_REMEMBERED:
                del self.looked_up[next(iter(self.looked_up))]
        else:
            self.members.add(namespace, peer_id, addrs)

    # --- peer routing ---------------------------------------------------------------------

    async def find_addrs(self, peer_id: ID) -> list[multiaddr.Multiaddr]:
        """Addresses of ``peer_id`` from the ``p2pgrid/peer/<id>`` namespace of our points."""
        namespace = peer_namespace(peer_id)
        self._learn_locally([namespace])
        for point in [p for p in self.points if p != peer_id]:
            if peer_id in self.looked_up:
                break
            await self._visit(point, [], [], [namespace])
        return self.looked_up.get(peer_id) or self.members.addrs_of(peer_id)

    # --- connections ----------------------------------------------------------------------

    def _connected(self) -> list[ID]:
        return [p for p in self.host.get_connected_peers() if self._public_key_of(p) is not None]

    async def connect(self, peer_id: ID, addrs: list[multiaddr.Multiaddr]) -> bool:
        if peer_id in self.host.get_connected_peers():
            return True
        if not addrs:
            try:
                addrs = self.host.get_peerstore().addrs(peer_id)
            except PeerStoreError:
                return False
        try:
            with trio.fail_after(DIAL_TIMEOUT_S):
                await self.host.connect(PeerInfo(peer_id, dialable(addrs)))
        except (trio.TooSlowError, OSError, BaseLibp2pError) as exc:
            logger.debug("dialling %s: %s", peer_id, exc)
            self._backoff[peer_id] = trio.current_time() + BACKOFF_S
            return False
        return True

    async def _dial(self, peer_id: ID) -> None:
        try:
            await self.connect(peer_id, self.members.addrs_of(peer_id))
        finally:
            self._dialling.discard(peer_id)

    def _activity(self, peer_id: ID, now: float, *, rendezvous: bool = True) -> float | None:
        """When ``peer_id``'s connection was last in use: now while a rendezvous exchange runs on
        it (its streams are the library's, short-lived), else the newest p2pgrid frame."""
        for conn in self.host.get_network().get_connections(peer_id) if rendezvous else ():
            if any(stream.get_protocol() == RENDEZVOUS_PROTOCOL for stream in conn.get_streams()):
                return now
        return self._stream_activity(peer_id)

    async def check_connections(self, nursery: trio.Nursery) -> None:
        """One pass of the connection policy: note departures, dial members, close the surplus."""
        now = trio.current_time()
        connected = self._connected()
        for peer_id in set(self._connected_since) - set(connected):
            del self._connected_since[peer_id]
            if peer_id not in self._closing:
                self._backoff[peer_id] = now + BACKOFF_S     # it closed on us, or went away
        self._closing &= set(connected)
        for peer_id in connected:
            self._connected_since.setdefault(peer_id, now)
        self._backoff = {p: t for p, t in self._backoff.items() if t > now}

        known: dict[bytes, ID] = {}

        def keys_of(peer_ids: Iterable[ID]) -> list[bytes]:
            out = []
            for peer_id in peer_ids:
                key = self._public_key_of(peer_id)
                if key is not None:
                    known[key] = peer_id
                    out.append(key)
            return out

        ids = dict(zip(keys_of(connected), connected))
        members = {ns: keys_of(peers) for ns, peers in self.members.by_namespace.items()}
        dials = peers_to_dial(members, list(ids) + keys_of(self._dialling), keys_of(self._backoff),
                              target=self.config.target_connections,
                              max_connections=self.config.max_connections, rng=self._rng)
        for key in dials:
            self._dialling.add(known[key])
            nursery.start_soon(self._dial, known[key])

        dialled = set(self._dialled())
        gossiping = set(self.router.pubsub.peers) if self.router.pubsub is not None else set(ids.values())
        mesh_count: dict[ID, int] = {}
        for peers in self.router.mesh.values():
            for peer_id in peers:
                mesh_count[peer_id] = mesh_count.get(peer_id, 0) + 1
        views = [ConnectionView(peer=key, connected_since=self._connected_since[peer_id],
                                last_stream_activity=self._activity(peer_id, now),
                                mesh_topics=mesh_count.get(peer_id, 0), protected=peer_id in dialled,
                                gossip=peer_id in gossiping)
                 for key, peer_id in ids.items()]
        for key in connections_to_close(views, self.config.max_connections, now,
                                        grace_s=self.config.grace_s, idle_s=self.config.idle_s):
            self._closing.add(ids[key])
            self.trimmed += 1
            await self._disconnect(ids[key])

    async def _disconnect(self, peer_id: ID) -> None:
        try:
            await self.host.disconnect(peer_id)
        except (BaseLibp2pError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            logger.debug("closing the connection to %s: %s", peer_id, exc)


def is_protocol_refusal(exc: BaseException) -> bool:
    """py-libp2p wraps multistream-select's "na" answer in generic errors: look down the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if "not supported" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False
