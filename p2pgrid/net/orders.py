"""Order gossip for one zone (trio): batched, paced publishing and validated delivery.

Topic ``p2pgrid/v1/<zone>/orders``. Each message is one ``OrderBatch`` of signed orders and
cancels (``wire.py``).

Publishing. ``submit(signed)`` queues one of this node's signed orders or cancels; every
``tick_s`` the queue is packed into as few batches as fit (``batching.pack_signed_batches``: ≤ 16
KiB, ≤ 256 items each) and published, at most one batch per ``min_publish_gap_s`` so that a burst
becomes a steady stream the network can carry. ``flush()`` publishes the queue at once. Before
packing, the queue is screened with the same rules other nodes apply (``screen_own_items``):
items they would reject or ignore (expired, slot closed, sent twice) stay home and are counted in
``stats.refused_own_items``, so a node never gets itself scored down. The transport runs the
validator on our own batches too; for a batch we just packed it skips decoding and signature
checks (we signed every item) and only records it in the replay cache. When the transport
cannot publish for now (a ``NetError``: a libp2p host being restarted), what was not sent goes
back to the queue for the next tick.

Receiving. The topic validator is ``validation.OrderBatchValidator`` (ACCEPT / IGNORE / REJECT
with a reason, replay cache). It runs inside the transport, before relaying; each ACCEPTed batch
is then delivered as one ``OrderDelivery`` on ``deliveries``, holding only the accepted items.
The node's own batches are delivered too, so the book sees one stream. ``stats`` counts what was
published, delivered, rejected and ignored (by reason) for the dashboard and metrics.

Reconciliation. Every delivered item (our own included) is also kept in ``items``
(``reconcile.OpenItems``: the open orders and cancels per slot), which ``/p2pgrid/books/1``
compares with peers (``reconcile_service``). ``admit_fetched`` judges items fetched that way with
the topic's validator, as one single-item batch published by each item's owner — the very check
gossip applies — and delivers the accepted ones on ``deliveries`` like gossip (``via`` says
which path brought them), so the books and counters see one stream.

Neighbour zones. A node that trades with other zones (``market.locality``) also subscribes to
their order topics, read-only: ``open_neighbour_gossip`` opens one ``OrderGossip`` per neighbour
zone, each validating with that zone's ``OrderRules`` (so an item of any other zone is still
rejected as ``wrong_zone``), and the node never submits to them. A node that does not trade
with a zone never subscribes to its topic, so that zone's gossip stays away from it.

Admission. On a node with a ledger, ``admission`` is the node's admission gate
(``p2pgrid.trading.admission.AdmissionGate``; the validator calls it for every received item, and
``submit`` for each of this node's own, raising its ``OrderNotAdmitted`` so that an order other
nodes would not admit fails where it is placed instead of vanishing). Without one (a node with no
ledger, or a low-level test of the gossip alone) nothing is judged on ledger facts.

Time comes from ``clock()`` (Unix ms): wall clock in production, the simnet clock in simulations.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from p2pgrid.errors import WireError
from p2pgrid.net.batching import pack_signed_batches
from p2pgrid.net.reconcile import OpenItems, item_key, owner_of_key, peek_item_key
from p2pgrid.net.transport import NetError, Transport, ValidationResult
from p2pgrid.net.validation import (
    Admission, BatchVerdict, OrderBatchValidator, OrderRules, Reason, compute_batch_id, own_batch_verdict, record,
    screen_own_items,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Cancel, Order, OrderBatch, Signed, encode

TOPIC_KINDS = ("orders", "pools", "ledger")
DEFAULT_TICK_S = 0.25
DEFAULT_MIN_PUBLISH_GAP_S = 0.02
ADMISSION_REASONS = frozenset({Reason.UNREGISTERED_OWNER, Reason.OVER_CAPACITY, Reason.UNFUNDED_BID})

Clock = Callable[[], int]

logger = logging.getLogger(__name__)


def topic_name(zone: str, kind: str) -> str:
    """``p2pgrid/v1/<zone>/<kind>`` for kind in orders, pools, ledger."""
    if kind not in TOPIC_KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; expected one of {TOPIC_KINDS}")
    return f"p2pgrid/v1/{zone}/{kind}"


def orders_topic(zone: str) -> str:
    return topic_name(zone, "orders")


def pools_topic(zone: str) -> str:
    return topic_name(zone, "pools")


def ledger_topic(zone: str) -> str:
    return topic_name(zone, "ledger")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


VIA_GOSSIP, VIA_RECONCILE = "gossip", "reconcile"

# Verdicts on a fetched item that only a forging or broken peer can earn (the item itself is
# bad); the others (replayed, expired, slot closed, not yet valid, admission rules) can follow
# from timing or a state that changed, and cost the answering peer nothing.
FORGED_ITEM_REASONS = frozenset({Reason.OVERSIZE, Reason.MALFORMED, Reason.UNSIGNED, Reason.UNKNOWN_VERSION,
                                 Reason.BAD_SIGNATURE, Reason.WRONG_ZONE, Reason.FOREIGN_ITEM})


@dataclass(frozen=True)
class OrderDelivery:
    """Accepted items: who sent them, when (their clock), when they arrived (ours), the items.

    ``via`` is ``"gossip"`` (one accepted batch; ``sender`` published it) or ``"reconcile"``
    (fetched from ``sender`` with ``/p2pgrid/books/1``; ``sent_ms`` is then our receipt time)."""

    sender: bytes
    sent_ms: int
    received_ms: int
    items: tuple[Signed[Order] | Signed[Cancel], ...]
    via: str = VIA_GOSSIP


@dataclass(frozen=True)
class FetchedVerdict:
    """What ``admit_fetched`` made of one reply: items delivered, refused (by reason), forged."""

    accepted: tuple[Signed[Order] | Signed[Cancel], ...]
    refused: Counter[str]
    forged: tuple[str, ...]          # why items the peer should never have sent were refused


@dataclass
class OrderGossipStats:
    published_batches: int = 0
    published_items: int = 0
    delivered_batches: int = 0
    delivered_items: int = 0
    rejected_batches: Counter[str] = field(default_factory=Counter)
    ignored_items: Counter[str] = field(default_factory=Counter)
    refused_own_items: Counter[str] = field(default_factory=Counter)
    reconciled_items: int = 0                                         # fetched and accepted
    refused_fetched_items: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected_batches.values())


class OrderGossip:
    """The order gossip service of one zone. Start it with ``open_order_gossip``."""

    def __init__(self, transport: Transport, rules: OrderRules, clock: Clock = wall_clock_ms, *,
                 tick_s: float = DEFAULT_TICK_S, min_publish_gap_s: float = DEFAULT_MIN_PUBLISH_GAP_S,
                 admission: Admission | None = None) -> None:
        self.transport = transport
        self.rules = rules
        self.topic = orders_topic(rules.zone)
        self.clock = clock
        self.tick_s = tick_s
        self.min_publish_gap_s = min_publish_gap_s
        self.validator = OrderBatchValidator(rules, admission=admission)
        self.stats = OrderGossipStats()
        self.items = OpenItems(rules.slot_rules)
        self._local_peer = transport.local_peer
        self._pending: list[Signed[Order] | Signed[Cancel]] = []
        self._accepted: dict[bytes, BatchVerdict] = {}
        self._own: dict[bytes, BatchVerdict] = {}
        self._publish_lock = trio.Lock()
        self._queued = trio.Event()      # set when something waits for the next tick
        self._send, self.deliveries = trio.open_memory_channel[OrderDelivery](math.inf)

    # --- publishing -----------------------------------------------------------------------

    def submit(self, signed: Signed[Order] | Signed[Cancel]) -> None:
        """Queue one of this node's signed orders or cancels for the next tick (after admission,
        which raises if other nodes would not admit it)."""
        if not isinstance(signed.body, (Order, Cancel)):
            raise TypeError(f"order gossip carries orders and cancels, not {type(signed.body).__name__}")
        if signed.body.zone != self.rules.zone:
            raise ValueError(f"{type(signed.body).__name__} for zone {signed.body.zone!r} submitted to zone "
                             f"{self.rules.zone!r}")
        if self.rules.require_own_items and signed.signer != self._local_peer:
            raise ValueError("only this node's own orders can be gossiped (require_own_items)")
        if self.admission is not None:
            self.admission.admit_own(signed, self.clock())   # raises if other nodes would not admit it
        self._pending.append(signed)
        self._queued.set()

    @property
    def admission(self) -> Admission | None:
        """The admission gate (None: orders are not judged on ledger facts)."""
        return self.validator.admission

    @admission.setter
    def admission(self, gate: Admission | None) -> None:
        self.validator.admission = gate

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Publish everything queued now, paced; returns the number of batches published.

        Items other nodes would not accept now (expired, slot closed, sent before) are dropped
        and counted in ``stats.refused_own_items`` instead of being published.
        """
        async with self._publish_lock:
            queued, self._pending = self._pending, []
            if not queued:
                return 0
            now = self.clock()
            items, refused = screen_own_items(queued, self._local_peer, self.rules, now, self.validator.replay)
            for verdict in refused:
                self.stats.refused_own_items[(verdict.reason or Reason.MALFORMED).value] += 1
            published = sent_items = 0
            for data, chunk in pack_signed_batches(self.rules.zone, now, items, self.rules.max_batch_bytes):
                if published:
                    await trio.sleep(self.min_publish_gap_s)
                # Our own batch skips decoding and signature checks in validate(): we built it.
                batch_id = compute_batch_id(data)
                self._own[batch_id] = own_batch_verdict(data, chunk, self.rules.zone, now)
                try:
                    await self.transport.publish(self.topic, data)
                except NetError as exc:
                    # The transport is down for now (a libp2p host restarting): the rest waits for
                    # the next tick, screened again then.
                    self._pending[:0] = items[sent_items:]
                    logger.info("order gossip: publishing paused (%s); %d items wait", exc, len(items) - sent_items)
                    return published
                finally:
                    self._own.pop(batch_id, None)  # validate() has taken it, unless publishing failed
                published += 1
                sent_items += len(chunk)
                self.stats.published_batches += 1
                self.stats.published_items += len(chunk)
            return published

    async def _publish_every_tick(self) -> None:
        """Publish what is queued at the next tick (ticks every ``tick_s`` on the trio clock). A
        tick with nothing queued is skipped without waking up: an idle node costs nothing here."""
        while True:
            await self._queued.wait()
            await trio.sleep_until((math.floor(trio.current_time() / self.tick_s) + 1) * self.tick_s)
            self._queued = trio.Event()
            await self.flush()
            if self._pending:               # put back by a failed publish: the next tick tries again
                self._queued.set()
            self.items.prune(self.clock())

    # --- receiving ------------------------------------------------------------------------

    def validate(self, sender: bytes, data: bytes) -> ValidationResult:
        """The topic validator (runs inside the transport, synchronously)."""
        own = self._own.pop(compute_batch_id(data), None) if sender == self._local_peer else None
        if own is not None:
            record(own, self.rules, self.clock(), self.validator.replay)
            self._accepted[own.batch_id] = own
            return ValidationResult.ACCEPT
        verdict = self.validator.validate(data, sender, self.clock())
        if verdict.result is ValidationResult.REJECT:
            self.stats.rejected_batches[(verdict.reason or Reason.MALFORMED).value] += 1
        for item in verdict.items:
            if item.result is ValidationResult.IGNORE and item.reason is not None:
                self.stats.ignored_items[item.reason.value] += 1
                if item.reason in ADMISSION_REASONS:
                    logger.debug("order gossip: item %d of a batch from %s not admitted (%s): %s", item.index,
                                 sender.hex()[:12], item.reason.value, item.detail)
        if verdict.result is ValidationResult.ACCEPT:
            self._accepted[verdict.batch_id] = verdict
        return verdict.result

    async def _deliver_accepted(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        subscription = await self.transport.subscribe(self.topic, self.validate)
        task_status.started()
        try:
            async for message in subscription:
                verdict = self._accepted.pop(compute_batch_id(message.data), None)
                if verdict is None or verdict.batch is None:
                    continue  # cannot happen: the transport delivers only what validate() accepted
                now = self.clock()
                # Items reconciliation brought first are relayed (accepted) but not delivered again.
                items = tuple(item for item in verdict.accepted if not self.items.holds(item))
                for item in items:
                    self.items.add(item, now)
                self.items.prune(now)       # what closed goes as new items come (at most once per PRUNE_EVERY_MS)
                self.stats.delivered_batches += 1
                self.stats.delivered_items += len(items)
                if items:
                    self._send.send_nowait(OrderDelivery(message.sender, verdict.batch.sent_ms, now, items))
        finally:
            with trio.CancelScope(shield=True):
                await subscription.aclose()

    # --- reconciliation -------------------------------------------------------------------

    def admit_fetched(self, items: Sequence[bytes], asked: Iterable[bytes], source: bytes) -> FetchedVerdict:
        """Judge items fetched from ``source`` for the keys ``asked``, and deliver those accepted.

        Each item must be one we asked for, and is then judged by the topic's validator as a
        batch of one published by its owner (the same rules, replay cache and admission checks
        as gossip; ``OrderBatchValidator.check``: not recorded as seen, so the gossip copy of an
        item still on its way is accepted and relayed, not taken for a replay that would score its
        honest relay down — it is not delivered twice). Accepted items join ``items`` and go out
        on ``deliveries``."""
        now = self.clock()
        accepted: list[Signed[Order] | Signed[Cancel]] = []
        refused: Counter[str] = Counter()
        forged: list[str] = []
        unanswered = set(asked)
        for data in items:
            try:
                key = peek_item_key(data)
            except WireError as exc:
                forged.append(f"{Reason.MALFORMED.value}: {exc}")
                continue
            if key not in unanswered:
                forged.append("an item that was not asked for (or sent twice)")
                continue
            unanswered.discard(key)
            batch = encode(OrderBatch(self.rules.zone, now, (data,)))
            verdict = self.validator.check(batch, owner_of_key(key), now)
            item = verdict.items[0] if verdict.items else None
            if verdict.result is ValidationResult.ACCEPT and item is not None and item.signed is not None \
                    and item_key(item.signed.body) == key:
                accepted.append(item.signed)
                continue
            reason = (item.reason if item is not None else None) or verdict.reason or Reason.MALFORMED
            refused[reason.value] += 1
            if reason in FORGED_ITEM_REASONS:
                forged.append(f"{reason.value}: {item.detail if item is not None else verdict.detail}")
        for reason, count in refused.items():
            self.stats.refused_fetched_items[reason] += count
        if accepted:
            for item in accepted:
                self.items.add(item, now)
            self.stats.reconciled_items += len(accepted)
            self._send.send_nowait(OrderDelivery(source, now, now, tuple(accepted), VIA_RECONCILE))
        return FetchedVerdict(tuple(accepted), refused, tuple(forged))


@asynccontextmanager
async def open_order_gossip(transport: Transport, rules: OrderRules, clock: Clock = wall_clock_ms, *,
                            tick_s: float = DEFAULT_TICK_S, min_publish_gap_s: float = DEFAULT_MIN_PUBLISH_GAP_S,
                            admission: Admission | None = None) -> AsyncIterator[OrderGossip]:
    """Subscribe to the zone's order topic and run the publisher until the block exits."""
    service = OrderGossip(transport, rules, clock, tick_s=tick_s, min_publish_gap_s=min_publish_gap_s,
                          admission=admission)
    async with trio.open_nursery() as nursery:
        await nursery.start(service._deliver_accepted)
        nursery.start_soon(service._publish_every_tick)
        try:
            yield service
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_neighbour_gossip(transport: Transport, zones: Iterable[str], slot_rules: SlotRules,
                                clock: Clock = wall_clock_ms, *, tick_s: float = DEFAULT_TICK_S,
                                admission: Admission | None = None) -> AsyncIterator[list[OrderGossip]]:
    """Read-only order gossip of each zone in ``zones`` (a node's neighbour zones, which share
    its slot calendar and ledger domain, hence one ``admission`` gate): subscribed and
    validated, never published to."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_order_gossip(transport, OrderRules(zone, slot_rules), clock,
                                                                 tick_s=tick_s, admission=admission))
               for zone in sorted(set(zones))]
