"""Validation of an incoming order batch (pure: data and ``now_ms`` in, a verdict out).

A gossip message on ``p2pgrid/v1/<zone>/orders`` is one ``OrderBatch`` (``wire.py``): a zone, the
publisher's send time and up to 256 items, each a signed ``Order`` or ``Cancel``. The verdict
follows the Ethereum consensus p2p spec: ACCEPT (deliver and relay), IGNORE (drop, no penalty),
REJECT (drop, and the peer that sent it is scored down). Every item gets its own verdict with a
``Reason``; the batch's result is

* REJECT if the batch itself is bad or **any** item is rejected — a batch is relayed whole or not
  at all, so an honest node never relays a bad item and never gets scored down for one;
* otherwise ACCEPT if at least one item is accepted (only the accepted items are delivered);
* otherwise IGNORE.

Rules, in the order they are checked (first failure wins):

==================  ======  =======================================================================
reason              result  rule
==================  ======  =======================================================================
oversize            REJECT  batch bytes > 16 KiB, or an item larger than its kind allows
malformed           REJECT  not a canonical ``OrderBatch``; an item that is not a signed Order/Cancel
unsigned            REJECT  an item that is a bare (unsigned) Order or Cancel
unknown_version     REJECT  an item of a kind/version we do not speak
bad_signature       REJECT  an item whose signature does not verify for its owner
wrong_zone          REJECT  batch or item for another zone than this topic's
foreign_item        REJECT  an item not owned by the batch's publisher (``require_own_items``)
replayed            REJECT  batch bytes seen before; (kind, owner, order_id) seen before or twice here
expired             REJECT  order with ``expiry_ms <= now_ms - clock_disparity_ms``
slot_closed         REJECT  slot misaligned, past gate closure or beyond the trading horizon
                            by more than the clock disparity
not_yet_valid       IGNORE  created in the future, or a time rule that fails now but would pass
                            within ``clock_disparity_ms`` (clock skew or transit time: no penalty)
unregistered_owner  IGNORE  admission (with an ``Admission`` gate only): the owner has no
over_capacity               certified meter registration, a sell exceeds what its connection can
unfunded_bid                export in the slot, a bid exceeds what its owner may lock
                            (``p2pgrid.trading.admission``); judged on replicated ledger state a
                            validator may not hold yet, hence never REJECT
==================  ======  =======================================================================

Admission runs last, only when no item of the batch was rejected, over the items still accepted,
in batch order (a cancel frees what a later order of the same batch needs); an admitted item is
counted in the gate's totals at once. Only ACCEPTed items are remembered as seen: an item that was
ignored (not yet valid, not admitted) is judged afresh if it comes again.

The replay cache is bounded: an entry is kept until the item can no longer pass the time rules on
its own (an order until its expiry, a cancel until its slot's gate closure, plus the clock
disparity), then forgotten, because after that the time rules reject a replay anyway. When full,
the entries closest to expiry are evicted first.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from p2pgrid.errors import DecodeError, OversizeError, SignatureError, UnknownVersionError, WireError
from p2pgrid.net.transport import ValidationResult
from p2pgrid.units import SlotRules
from p2pgrid.wire import MAX_BATCH_BYTES, Cancel, Order, OrderBatch, Signed, decode, decode_signed

ACCEPT, IGNORE, REJECT = ValidationResult.ACCEPT, ValidationResult.IGNORE, ValidationResult.REJECT

DEFAULT_CLOCK_DISPARITY_MS = 2_000
DEFAULT_REPLAY_CACHE_ENTRIES = 200_000


class Reason(str, Enum):
    OVERSIZE = "oversize"
    MALFORMED = "malformed"
    UNSIGNED = "unsigned"
    UNKNOWN_VERSION = "unknown_version"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ZONE = "wrong_zone"
    FOREIGN_ITEM = "foreign_item"
    REPLAYED = "replayed"
    EXPIRED = "expired"
    SLOT_CLOSED = "slot_closed"
    NOT_YET_VALID = "not_yet_valid"
    UNREGISTERED_OWNER = "unregistered_owner"
    OVER_CAPACITY = "over_capacity"
    UNFUNDED_BID = "unfunded_bid"


class AdmissionVerdict(Protocol):
    @property
    def refusal(self) -> Enum | None: ...

    @property
    def detail(self) -> str: ...


class Admission(Protocol):
    """Order admission (``p2pgrid.trading.admission.AdmissionGate``): admits and counts an item,
    or says why not (a refusal whose value is a ``Reason`` value)."""

    def judge(self, signed: Signed[Order] | Signed[Cancel], now_ms: int) -> AdmissionVerdict: ...

    def admit_own(self, signed: Signed[Order] | Signed[Cancel], now_ms: int) -> None:
        """``judge`` for this node's own item: raises (a ``P2PGridError``) if not admitted."""

    def count_own(self, signed: Signed[Order], now_ms: int) -> None:
        """Count one of this node's orders published before (after a restart), unjudged."""


@dataclass(frozen=True)
class OrderRules:
    """What a zone's order topic accepts. ``slot_rules`` is the zone's slot calendar."""

    zone: str
    slot_rules: SlotRules = SlotRules()
    clock_disparity_ms: int = DEFAULT_CLOCK_DISPARITY_MS
    max_batch_bytes: int = MAX_BATCH_BYTES
    require_own_items: bool = True


@dataclass(frozen=True)
class ItemVerdict:
    index: int
    result: ValidationResult
    reason: Reason | None
    detail: str = ""
    signed: Signed[Order] | Signed[Cancel] | None = None

    @property
    def replay_key(self) -> tuple[str, bytes, bytes] | None:
        if self.signed is None:
            return None
        body = self.signed.body
        return (type(body).__name__, body.owner, body.order_id)


@dataclass(frozen=True)
class BatchVerdict:
    result: ValidationResult
    reason: Reason | None
    detail: str
    batch_id: bytes
    batch: OrderBatch | None
    items: tuple[ItemVerdict, ...]

    @property
    def accepted(self) -> tuple[Signed[Order] | Signed[Cancel], ...]:
        """The signed items to deliver (empty unless the batch is ACCEPTed)."""
        if self.result is not ACCEPT:
            return ()
        return tuple(v.signed for v in self.items if v.result is ACCEPT and v.signed is not None)

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every reason a part of this batch was not accepted (for reject counters)."""
        found = [v.reason for v in self.items if v.reason is not None]
        if self.reason is not None and not found:
            found.append(self.reason)
        return tuple(found)


class ReplayCache:
    """Keys seen recently, each forgotten after its own expiry (``now_ms`` is passed in)."""

    def __init__(self, max_entries: int = DEFAULT_REPLAY_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("a replay cache holds at least one entry")
        self.max_entries = max_entries
        self._expiry: dict[object, int] = {}
        self._heap: list[tuple[int, int, object]] = []
        self._counter = 0

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, key: object) -> bool:
        return key in self._expiry

    def add(self, key: object, expires_ms: int, now_ms: int) -> None:
        self.forget_expired(now_ms)
        if key in self._expiry:
            self._expiry[key] = max(self._expiry[key], expires_ms)
        else:
            while len(self._expiry) >= self.max_entries:
                self._evict_one()
            self._expiry[key] = expires_ms
        self._counter += 1
        heapq.heappush(self._heap, (expires_ms, self._counter, key))

    def forget_expired(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] <= now_ms:
            self._pop_heap_top()

    def _evict_one(self) -> None:
        while self._heap:
            if self._pop_heap_top():
                return

    def _pop_heap_top(self) -> bool:
        """Drop the heap top; True if that removed a live entry (not a superseded one)."""
        expires_ms, _, key = heapq.heappop(self._heap)
        if self._expiry.get(key) == expires_ms:
            del self._expiry[key]
            return True
        return False


# --- the rules ------------------------------------------------------------------------------

def compute_batch_id(data: bytes) -> bytes:
    return hashlib.sha256(b"p2pgrid/order-batch\x00" + data).digest()


def validate_order_batch(data: bytes, sender: bytes, rules: OrderRules, now_ms: int,
                         replay: ReplayCache, admission: Admission | None = None) -> BatchVerdict:
    """The verdict on one gossip message. Reads ``replay``; does not change it (see ``record``).
    With ``admission``, the items it admits are counted in its totals."""
    batch_id = compute_batch_id(data)

    def whole(reason: Reason, detail: str, batch: OrderBatch | None = None) -> BatchVerdict:
        return BatchVerdict(REJECT, reason, detail, batch_id, batch, ())

    if len(data) > rules.max_batch_bytes:
        return whole(Reason.OVERSIZE, f"batch of {len(data)} bytes exceeds {rules.max_batch_bytes}")
    try:
        batch = decode(OrderBatch, data, max_bytes=rules.max_batch_bytes)
    except OversizeError as exc:
        return whole(Reason.OVERSIZE, str(exc))
    except WireError as exc:
        return whole(Reason.MALFORMED, f"not an order batch: {exc}")
    if batch.zone != rules.zone:
        return whole(Reason.WRONG_ZONE, f"batch for zone {batch.zone!r}, topic is {rules.zone!r}", batch)
    if batch_id in replay:
        return whole(Reason.REPLAYED, "this exact batch was seen before", batch)

    verdicts = [validate_item(index, item, sender, rules, now_ms) for index, item in enumerate(batch.items)]
    return conclude(batch_id, batch, verdicts, replay, admission, now_ms)


def conclude(batch_id: bytes, batch: OrderBatch, verdicts: list[ItemVerdict], replay: ReplayCache,
             admission: Admission | None = None, now_ms: int = 0) -> BatchVerdict:
    """Apply the replay rule (and admission) to the item verdicts and derive the batch's result."""
    items = tuple(with_replay_rule(verdicts, replay))
    if admission is not None and not any(v.result is REJECT for v in items):
        items = tuple(with_admission(list(items), admission, now_ms))
    rejected = next((v for v in items if v.result is REJECT), None)
    if rejected is not None:
        return BatchVerdict(REJECT, rejected.reason, f"item {rejected.index}: {rejected.detail}", batch_id, batch, items)
    if any(v.result is ACCEPT for v in items):
        return BatchVerdict(ACCEPT, None, "", batch_id, batch, items)
    ignored = next((v for v in items if v.result is IGNORE), None)
    return BatchVerdict(IGNORE, ignored.reason if ignored else None,
                        ignored.detail if ignored else "empty batch", batch_id, batch, items)


def with_replay_rule(verdicts: list[ItemVerdict], replay: ReplayCache) -> list[ItemVerdict]:
    """Items seen before (in ``replay``) or earlier in the same list become REJECT/replayed."""
    out: list[ItemVerdict] = []
    seen_here: set[tuple[str, bytes, bytes]] = set()
    for verdict in verdicts:
        key = verdict.replay_key
        if verdict.result is not REJECT and key is not None and (key in replay or key in seen_here):
            verdict = ItemVerdict(verdict.index, REJECT, Reason.REPLAYED, f"{key[0]} {key[2].hex()} seen before",
                                  verdict.signed)
        if key is not None:
            seen_here.add(key)
        out.append(verdict)
    return out


def with_admission(verdicts: list[ItemVerdict], admission: Admission, now_ms: int) -> list[ItemVerdict]:
    """Accepted items the gate does not admit become IGNORE with its reason (in batch order)."""
    out: list[ItemVerdict] = []
    for verdict in verdicts:
        if verdict.result is ACCEPT and verdict.signed is not None:
            admitted = admission.judge(verdict.signed, now_ms)
            if admitted.refusal is not None:
                verdict = ItemVerdict(verdict.index, IGNORE, Reason(admitted.refusal.value), admitted.detail,
                                      verdict.signed)
        out.append(verdict)
    return out


def screen_own_items(items: Sequence[Signed[Order] | Signed[Cancel]], sender: bytes, rules: OrderRules,
                     now_ms: int, replay: ReplayCache) -> tuple[list[Signed[Order] | Signed[Cancel]], list[ItemVerdict]]:
    """Split this node's own signed items into (publishable, refused) before publishing.

    The same rules as for a received batch, minus decoding and signature checks (the node signed
    these itself): what other nodes would reject or ignore is never sent, so a node cannot get
    itself scored down by publishing a late or duplicate order.
    """
    verdicts = with_replay_rule([judge_decoded_item(i, s, sender, rules, now_ms) for i, s in enumerate(items)],
                                replay)
    publishable = [v.signed for v in verdicts if v.result is ACCEPT and v.signed is not None]
    return publishable, [v for v in verdicts if v.result is not ACCEPT]


def own_batch_verdict(data: bytes, items: Sequence[Signed[Order] | Signed[Cancel]], zone: str, sent_ms: int) -> BatchVerdict:
    """The ACCEPT verdict of a batch this node packed from items ``screen_own_items`` let through."""
    verdicts = tuple(ItemVerdict(i, ACCEPT, None, "", s) for i, s in enumerate(items))
    batch = OrderBatch(zone, sent_ms, tuple(s.encoded for s in items))
    return BatchVerdict(ACCEPT, None, "", compute_batch_id(data), batch, verdicts)


def validate_item(index: int, item: bytes, sender: bytes, rules: OrderRules, now_ms: int) -> ItemVerdict:
    """Decode, verify and time-check one item of a batch (without the replay rule)."""
    try:
        signed = decode_signed(item)
    except OversizeError as exc:
        return ItemVerdict(index, REJECT, Reason.OVERSIZE, str(exc))
    except UnknownVersionError as exc:
        return ItemVerdict(index, REJECT, Reason.UNKNOWN_VERSION, str(exc))
    except SignatureError as exc:
        return ItemVerdict(index, REJECT, Reason.BAD_SIGNATURE, str(exc))
    except DecodeError as exc:
        if _is_bare_order_or_cancel(item):
            return ItemVerdict(index, REJECT, Reason.UNSIGNED, "an order or cancel without a signature")
        return ItemVerdict(index, REJECT, Reason.MALFORMED, str(exc))
    except WireError as exc:
        return ItemVerdict(index, REJECT, Reason.MALFORMED, str(exc))
    return judge_decoded_item(index, signed, sender, rules, now_ms)


def judge_decoded_item(index: int, signed: Signed, sender: bytes, rules: OrderRules, now_ms: int) -> ItemVerdict:
    """Kind, zone, ownership and time rules for one verified item."""
    body = signed.body
    if not isinstance(body, (Order, Cancel)):
        return ItemVerdict(index, REJECT, Reason.MALFORMED, f"{signed.spec.kind} is not an order or a cancel")
    if body.zone != rules.zone:
        return ItemVerdict(index, REJECT, Reason.WRONG_ZONE, f"item for zone {body.zone!r}", signed)
    if rules.require_own_items and body.owner != sender:
        return ItemVerdict(index, REJECT, Reason.FOREIGN_ITEM, "item owned by another peer than the publisher",
                           signed)
    result, reason, detail = check_times(body, rules, now_ms)
    return ItemVerdict(index, result, reason, detail, signed)


def check_times(body: Order | Cancel, rules: OrderRules, now_ms: int) -> tuple[ValidationResult, Reason | None, str]:
    """Time rules with a clock-disparity window: fail now and within the window → IGNORE only."""
    slack = rules.clock_disparity_ms
    calendar = rules.slot_rules
    if body.created_ms > now_ms + slack:
        return IGNORE, Reason.NOT_YET_VALID, f"created {body.created_ms - now_ms} ms in the future"
    if not calendar.is_aligned(body.slot):
        return REJECT, Reason.SLOT_CLOSED, f"slot {body.slot} is not aligned to {calendar.length_s} s"
    opens, closes = calendar.opens_ms(body.slot), calendar.gate_closure_ms(body.slot)
    if now_ms >= closes + slack or now_ms < opens - slack:
        return REJECT, Reason.SLOT_CLOSED, f"slot {body.slot} is not open for trading at {now_ms}"
    if not opens <= now_ms < closes:
        return IGNORE, Reason.NOT_YET_VALID, f"slot {body.slot} is at the edge of its trading window"
    if isinstance(body, Order):
        if body.expiry_ms <= now_ms - slack:
            return REJECT, Reason.EXPIRED, f"expired {now_ms - body.expiry_ms} ms ago"
        if body.expiry_ms <= now_ms:
            return IGNORE, Reason.NOT_YET_VALID, "expired within the clock disparity"
    return ACCEPT, None, ""


def replay_expiry_ms(body: Order | Cancel, rules: OrderRules) -> int:
    """Until when a replay of ``body`` could still pass the time rules (so must be remembered)."""
    closes = rules.slot_rules.gate_closure_ms(body.slot)
    until = min(body.expiry_ms, closes) if isinstance(body, Order) else closes
    return until + rules.clock_disparity_ms


def record(verdict: BatchVerdict, rules: OrderRules, now_ms: int, replay: ReplayCache) -> None:
    """Remember an ACCEPTed batch and its items, so a replay of either is rejected."""
    if verdict.result is not ACCEPT:
        return
    latest = now_ms
    for item in verdict.items:
        if item.result is not ACCEPT or item.signed is None or item.replay_key is None:
            continue
        expires = replay_expiry_ms(item.signed.body, rules)
        latest = max(latest, expires)
        replay.add(item.replay_key, expires, now_ms)
    replay.add(verdict.batch_id, latest, now_ms)


class OrderBatchValidator:
    """The rules plus a replay cache (and, on a node with a ledger, the admission gate):
    ``validate`` checks a batch and records it if accepted. This is the one entry point for every
    order that reaches a book, whatever path brought it.

    ``check`` is the same verdict without recording anything: for items fetched by book
    reconciliation (``net.reconcile``), which must pass every rule gossip applies but must not
    make a gossip copy still on its way look like a replay (its relay would be scored down)."""

    def __init__(self, rules: OrderRules, replay: ReplayCache | None = None,
                 admission: Admission | None = None) -> None:
        self.rules = rules
        self.replay = replay if replay is not None else ReplayCache()
        self.admission = admission

    def check(self, data: bytes, sender: bytes, now_ms: int) -> BatchVerdict:
        return validate_order_batch(data, sender, self.rules, now_ms, self.replay, self.admission)

    def validate(self, data: bytes, sender: bytes, now_ms: int) -> BatchVerdict:
        verdict = self.check(data, sender, now_ms)
        record(verdict, self.rules, now_ms, self.replay)
        return verdict


def _is_bare_order_or_cancel(item: bytes) -> bool:
    for cls in (Order, Cancel):
        try:
            decode(cls, item)
        except WireError:
            continue
        return True
    return False
