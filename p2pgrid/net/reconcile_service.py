"""Book reconciliation over ``/p2pgrid/books/1`` (trio): pull the orders and cancels gossip missed.

``BookReconciler`` serves the protocol for the zones whose ``OrderGossip`` it was given
(``add``) and pulls from peers: every peer that speaks ``/p2pgrid/books/1``
(``transport.peers_supporting``: a peer that does not is never asked) as soon as it is connected,
then one peer in turn every ``interval_s`` (``peer_schedule.PeerSchedule``). One pull is one
session on a fresh stream (``reconcile_with``): digests, then the keys of the slots that differ,
then the missing items in batches of at most ``MAX_FETCH_ITEMS`` (``reconcile``,
``reconcile_messages``). What is fetched is judged by the zone's validator and delivered like
gossip (``OrderGossip.admit_fetched``).

Bad peers are contained per session. A client session ends at the first answer that breaks the
protocol (undecodable frame, wrong kind or request id, keys out of order or beyond
``max_keys_per_slot``, an item not asked for, an item the validator calls forged): the session
raises ``ReconcileError`` (a ``WireError``), is counted in ``stats.failures``, and the peer is
not asked again for ``backoff_s``. A transport error (``NetError``) or a session longer than
``session_timeout_s`` ends only that session. The server ends a stream whose request frame
cannot be decoded or is not a request; every answer is bounded by the frame limits of
``reconcile_messages``.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from p2pgrid.errors import WireError
from p2pgrid.net.orders import OrderGossip
from p2pgrid.net.peer_schedule import PeerSchedule
from p2pgrid.net.reconcile import ReconcileError, check_digest_reply, check_ids_page, differing_slots
from p2pgrid.net.requests import StreamServer
from p2pgrid.net.reconcile_messages import (
    BOOKS_PROTOCOL, MAX_BOOKS_FRAME_BYTES, MAX_DIGESTS, MAX_FETCH_ITEMS, MAX_IDS_PER_PAGE, BooksFrame, DigestReply,
    DigestRequest, FetchReply, FetchRequest, IdsReply, IdsRequest, SlotDigest, decode_books_frame, encode_books_frame,
)
from p2pgrid.net.transport import FramedStream, NetError, Transport, peers_supporting

log = logging.getLogger(__name__)

F = TypeVar("F")
Clock = Callable[[], int]


@dataclass(frozen=True)
class ReconcileConfig:
    interval_s: float = 2.0            # real seconds between pulls from one more peer, in turn
    poll_s: float = 0.5                # how often newly connected peers are looked for
    session_timeout_s: float = 30.0    # a pull that takes longer is abandoned (tried again later)
    backoff_s: float = 60.0            # a peer whose answer broke the protocol is left alone this long
    max_keys_per_slot: int = 65_536    # a server listing more keys for one slot is misbehaving


@dataclass
class ReconcileStats:
    sessions: int = 0                  # pulls that completed
    fetched_items: int = 0             # items fetched and accepted into the books
    failures: Counter[str] = field(default_factory=Counter)     # "net", "timeout", "protocol"
    served_requests: int = 0
    refused_requests: int = 0          # request frames that ended their stream
    last_failure: str = ""


class BookReconciler:
    """Serve and pull ``/p2pgrid/books/1`` for the zones added (module docstring)."""

    def __init__(self, transport: Transport, clock: Clock, config: ReconcileConfig = ReconcileConfig()) -> None:
        self.transport = transport
        self.clock = clock
        self.config = config
        self.zones: dict[str, OrderGossip] = {}
        self.stats = ReconcileStats()
        self._request_ids = itertools.count(1)
        self._backoff_until: dict[bytes, float] = {}
        self._server = StreamServer(self._answer_frame)

    def add(self, gossip: OrderGossip) -> None:
        """Reconcile (and serve) the books of ``gossip``'s zone too."""
        self.zones[gossip.rules.zone] = gossip

    # --- client -------------------------------------------------------------------------------

    async def reconcile_with(self, peer: bytes) -> int:
        """Pull what ``peer`` holds and we lack; returns the number of items accepted.

        Raises ``NetError`` (transport) or ``ReconcileError`` / ``WireError`` (a bad answer)."""
        zones = sorted(self.zones)
        stream = await self.transport.open_stream(peer, BOOKS_PROTOCOL, max_frame_bytes=MAX_BOOKS_FRAME_BYTES)
        try:
            now = self.clock()
            mine: list[SlotDigest] = []
            for zone in zones:
                self.zones[zone].items.prune(now)
                mine += self.zones[zone].items.digests([zone])
            request = DigestRequest(next(self._request_ids), tuple(zones), tuple(mine[:MAX_DIGESTS]))
            reply = await self._ask(stream, request, DigestReply)
            check_digest_reply(reply.differing, zones, MAX_DIGESTS)
            added = 0
            for digest in reply.differing:
                gossip = self.zones[digest.zone]
                missing = await self._missing_keys(stream, gossip, digest)
                for start in range(0, len(missing), MAX_FETCH_ITEMS):
                    chunk = missing[start:start + MAX_FETCH_ITEMS]
                    fetched = await self._ask(stream, FetchRequest(next(self._request_ids), digest.zone, tuple(chunk)),
                                              FetchReply)
                    verdict = gossip.admit_fetched(fetched.items, chunk, peer)
                    added += len(verdict.accepted)
                    self.stats.fetched_items += len(verdict.accepted)
                    if verdict.forged:
                        raise ReconcileError(f"sent {len(verdict.forged)} bad items, e.g. {verdict.forged[0]}")
            self.stats.sessions += 1
            if added:
                log.debug("pulled %d orders and cancels gossip had not brought from %s", added, peer.hex()[:16])
            return added
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _missing_keys(self, stream: FramedStream, gossip: OrderGossip, digest: SlotDigest) -> list[bytes]:
        """The keys of (zone, slot) the peer holds and we lack, listed page by page."""
        missing: list[bytes] = []
        after, listed = b"", 0
        while True:
            page = await self._ask(stream, IdsRequest(next(self._request_ids), digest.zone, digest.slot, after,
                                                      MAX_IDS_PER_PAGE), IdsReply)
            check_ids_page(page, after, MAX_IDS_PER_PAGE)
            listed += len(page.keys)
            if listed > self.config.max_keys_per_slot:
                raise ReconcileError(f"more than {self.config.max_keys_per_slot} keys listed for one slot")
            missing += [key for key in page.keys if gossip.items.lacks(key)]
            if not page.more:
                return missing
            after = page.keys[-1]

    async def _ask(self, stream: FramedStream, request: BooksFrame, expected: type[F]) -> F:
        await stream.send_frame(encode_books_frame(request))
        answer = decode_books_frame(await stream.receive_frame())
        if not isinstance(answer, expected):
            raise ReconcileError(f"expected {expected.__name__}, got {type(answer).__name__}")
        if answer.request_id != request.request_id:     # type: ignore[attr-defined]
            raise ReconcileError("an answer to another request")
        return answer

    async def _reconcile_quietly(self, peer: bytes) -> None:
        what = ""
        with trio.move_on_after(self.config.session_timeout_s) as scope:
            try:
                await self.reconcile_with(peer)
            except NetError as exc:
                what, detail = "net", str(exc)
            except WireError as exc:        # ReconcileError included: the peer broke the protocol
                what, detail = "protocol", str(exc)
                self._backoff_until[peer] = trio.current_time() + self.config.backoff_s
                log.info("book reconciliation with %s: %s; not asked again for %g s",
                         peer.hex()[:16], detail, self.config.backoff_s)
        if scope.cancelled_caught:
            what, detail = "timeout", f"no answer within {self.config.session_timeout_s:g} s"
        if what:
            self.stats.failures[what] += 1
            self.stats.last_failure = f"{peer.hex()[:16]}: {what}: {detail}"[:300]
            log.debug("book reconciliation with %s failed: %s", peer.hex()[:16], self.stats.last_failure)

    async def _pull(self) -> None:
        schedule = PeerSchedule(self.config.interval_s)
        while True:
            now_s = trio.current_time()
            peers = [p for p in peers_supporting(self.transport, BOOKS_PROTOCOL)
                     if self._backoff_until.get(p, 0.0) <= now_s]
            for peer in schedule.due(peers, now_s):
                await self._reconcile_quietly(peer)
            await trio.sleep(self.config.poll_s)

    # --- server -------------------------------------------------------------------------------

    async def _answer_frame(self, data: bytes, peer: bytes) -> bytes | None:
        try:
            answer = self.answer(decode_books_frame(data))
        except WireError:
            answer = None
        if answer is None:
            self.stats.refused_requests += 1
            return None                     # not a request we serve: end the stream
        self.stats.served_requests += 1
        return encode_books_frame(answer)

    def answer(self, request: BooksFrame) -> BooksFrame | None:
        """The answer to one request frame (None: not a request). Zones we do not keep are empty."""
        if isinstance(request, DigestRequest):
            now = self.clock()
            zones = [zone for zone in request.zones if zone in self.zones]
            theirs: list[SlotDigest] = []
            for zone in zones:
                self.zones[zone].items.prune(now)
                theirs += self.zones[zone].items.digests([zone])
            differing = differing_slots(request.digests, theirs, zones)
            return DigestReply(request.request_id, tuple(differing[:MAX_DIGESTS]))
        if isinstance(request, IdsRequest):
            gossip = self.zones.get(request.zone)
            if gossip is None:
                return IdsReply(request.request_id, (), False)
            keys, more = gossip.items.keys(request.zone, request.slot, request.after, request.limit)
            return IdsReply(request.request_id, tuple(keys), more)
        if isinstance(request, FetchRequest):
            gossip = self.zones.get(request.zone)
            held = [gossip.items.get(key) for key in request.keys] if gossip is not None else []
            return FetchReply(request.request_id, tuple(s.encoded for s in held if s is not None))
        return None

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the protocol and pull from peers until cancelled."""
        self.transport.set_stream_handler(BOOKS_PROTOCOL, self._server.serve, max_frame_bytes=MAX_BOOKS_FRAME_BYTES)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pull)
                task_status.started()
        finally:
            await self._server.aclose()     # the transport outlives this service (see net.requests)


@asynccontextmanager
async def open_book_reconciler(transport: Transport, gossips: Iterable[OrderGossip], clock: Clock,
                               config: ReconcileConfig = ReconcileConfig()) -> AsyncIterator[BookReconciler]:
    """Serve and pull ``/p2pgrid/books/1`` for the zones of ``gossips`` until the block exits."""
    reconciler = BookReconciler(transport, clock, config)
    for gossip in gossips:
        reconciler.add(gossip)
    async with trio.open_nursery() as nursery:
        await nursery.start(reconciler.run)
        try:
            yield reconciler
        finally:
            nursery.cancel_scope.cancel()
