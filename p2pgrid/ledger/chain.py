"""Account chains: entry rules per kind, and the ledger state they derive (pure).

Rules, in the style of the Ethereum consensus specs (``validate_*`` raise, ``process_*`` mutate):

1. **Chains.** Every account has a hash chain. Entry ``seq`` extends the account's certified head:
   ``seq == head.next_seq`` and ``prev_hash == head.last_hash`` (``GENESIS_HASH`` for seq 0), and
   its signed ``time_ms`` is not below its predecessor's (``head.last_time_ms``). Entries belong to
   one zone (``rules.zone``).
2. **Only an account's own chain debits it voluntarily.** Every kind below debits at most the
   entry's own account; credits to others are fine. The one exception is a zone settlement, whose
   postings are *obligations* (below).
3. **Credit limit.** A voluntary debit may take an ordinary account's *spendable* balance down to
   ``-rules.credit_limit_uc`` and no further. Spendable = balance + obligations: what settlements
   charged an account is owed to the gateway but does not shrink what the account may spend, so
   no chain but the account's own can turn one of its debits from valid to invalid. The zone
   **gateway** has no limit: it is where credits enter and leave the zone.
4. **Money is conserved exactly**: every µc leaving one balance enters another or an open lock, so
   ``sum(balances) + sum(open locks) == 0`` always (``LedgerState.money_total()``).

**Validity is a deterministic, monotone function of the entry and its certified causal past.**
No rule reads a validator's clock: every time limit is judged on the entry's signed ``time_ms``
(or a signed time inside its body), so a validator that votes for an entry and one that judges it
later with the same certified dependencies agree. A rule that still needs something certified
elsewhere raises ``EntryRejected`` with a *waiting* reason (``RejectReason.is_final`` is False: a
missing lock or predecessor, credits not yet arrived, the seller's chain not yet past a deadline);
the validator then simply does not vote yet and is asked again. Only *final* rejections (the entry
can never become valid) may be signed as refusals. The one clock check left is in
``committee.decide_vote``: an entry dated more than ``rules.clock_skew_ms`` ahead of the
validator's clock waits, it is never refused.

Kinds (``KINDS`` is a registry: other modules add kinds with ``register_kind``):

=========  ==================================================================================
transfer   account → ``to``: ``amount``; never to itself
mint       gateway only: gateway → ``to``
burn       not the gateway: account → gateway (credits redeemed off-ledger)
lock       buyer escrows ``amount`` ≥ trade_value(qty, price) for take ``take_id`` on an order;
           ``time_ms < deadline_ms``; a take id is locked at most once ever (conflict key
           ``take/<take_id>``: two chains racing for one take id cannot both be certified). If
           the buyer is the order's owner (a bid), its locks for that order may not exceed the
           order size.
fill       the seller consumes an open lock it is named in, with ``time_ms < deadline_ms``:
           ``qty_wh`` ≤ the locked quantity, same price and order; the seller receives
           trade_value(qty, price), the buyer the rest of the lock. If the seller owns the order,
           its fills of that order may not exceed the order size.
decline    the seller hands a lock it is named in back to the buyer, at any time (a no-op if the
           lock was returned already; refused once it is filled)
release    the buyer takes an open lock back once the **seller's own chain** has passed the
           deadline (its certified head's ``time_ms`` ≥ ``deadline_ms``); a no-op if the lock
           was returned already; refused once it is filled
refund     the buyer takes an open lock back against ``LockExpiry`` promises of a quorum of the
           committee (each a validator's signed promise never to vote for a consumer of the
           lock); a no-op if the lock was returned already; refused once it is filled
=========  ==================================================================================

**One writer per lock.** A lock's fate is decided by the seller's chain alone: its fills (and any
other kind that consumes a lock: swaps, share issues, charging bills) must be dated before the
deadline, and chain times never decrease, so once the seller's chain has an entry at or past the
deadline no consumer of the lock can follow — which is exactly when the buyer's ``release``
becomes valid. Fill and release can therefore never both be valid, at any validator, whatever the
vote timing; decline and release may both be certified and return the lock once (the second is a
no-op), in either order.

**A seller that vanished.** If the seller never writes again, the buyer asks the validators for
``LockExpiry`` promises (``committee.decide_expiry``): a validator gives one once, by its clock,
the deadline passed ``lock_expiry_grace_ms`` ago and it has voted for no consumer of the lock,
and records it durably at the lock's *fate key* (``lock_fate_key``), which every consumer (fill,
swap, share issue, charging bill) also claims — so from then on it refuses them all
(``already_voted``). With promises of a quorum the buyer certifies a ``refund``. A consumer and a
refund can never both be certified: each needs 2f+1 validators, so some honest validator would
have had to vote for the consumer and promise the expiry. The refund's validity is a function of
the entry (the signatures) and the certified lock only; only *when* promises are given reads a
clock, which decides nothing but how soon a refund is possible. The one case this cannot decide:
a seller's fill that stayed undelivered to a quorum for the whole grace while others promised —
neither side then reaches 2f+1 (documented in docs/PROTOCOL.md; the grace makes it a partition
longer than an hour of market time).

``apply_entry`` applies an already-certified entry: certificates are final, so it re-checks only
what keeps the state well-formed (chain link, lock state) and never the balance. Balances are
sums, so the state derived from a set of certified entries does not depend on the order they are
applied in, as long as each entry comes after its chain predecessor and what it refers to
(``is_ready``; ``derive_state`` does exactly that).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedDict

from p2pgrid.errors import DecodeError, LedgerError, OversizeError, SignatureError, UnknownVersionError
from p2pgrid.ledger import merkle
from p2pgrid.ledger.extra import ExtraMap, ExtraOverlay, Overlay
from p2pgrid.ledger.messages import (
    GENESIS_HASH, MAX_BODY_BYTES, Burn, Decline, Entry, Fill, Lock, LockExpiry, Mint, Refund, Release, Transfer,
    entry_hash,
)
from p2pgrid.units import trade_value
from p2pgrid.wire import Signed, decode, decode_signed, pack, to_plain


class RejectReason(str, enum.Enum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ZONE = "wrong_zone"
    SEQ_GAP = "seq_gap"
    SEQ_REUSED = "seq_reused"
    WRONG_PREV_HASH = "wrong_prev_hash"
    UNKNOWN_KIND = "unknown_kind"
    BAD_BODY = "bad_body"
    WRONG_KIND_FOR_ACCOUNT = "wrong_kind_for_account"
    OVERDRAFT = "overdraft"
    DUPLICATE_TAKE = "duplicate_take"
    LOCK_TOO_SMALL = "lock_too_small"
    NO_LOCK = "no_lock"
    LOCK_CLOSED = "lock_closed"
    LOCK_MISMATCH = "lock_mismatch"
    FILL_EXCEEDS_LOCK = "fill_exceeds_lock"
    ORDER_OVERFILLED = "order_overfilled"
    DEADLINE_PASSED = "deadline_passed"
    DEADLINE_NOT_REACHED = "deadline_not_reached"
    ALREADY_VOTED = "already_voted"
    TIME_BACKWARDS = "time_backwards"
    NOT_YET = "not_yet"
    MISSING_DEPENDENCY = "missing_dependency"

    @property
    def is_final(self) -> bool:
        """False for reasons that more certified history (or time) can remove: the validator
        waits instead of refusing for good."""
        return self not in _WAITING_REASONS


_WAITING_REASONS = frozenset({
    # SEQ_REUSED waits too: the validator holds a certified entry at that seq, most likely this
    # very one, and the owner has to catch up (sync) rather than give the entry up.
    RejectReason.SEQ_GAP, RejectReason.SEQ_REUSED, RejectReason.OVERDRAFT, RejectReason.NO_LOCK, RejectReason.DEADLINE_NOT_REACHED,
    RejectReason.NOT_YET, RejectReason.MISSING_DEPENDENCY,
})


class EntryRejected(LedgerError):
    """An entry breaks a rule. ``reason`` says which; ``detail`` says how, for people."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail

    @property
    def is_final(self) -> bool:
        return self.reason.is_final


class ChainInconsistent(LedgerError):
    """Certified entries contradict each other: more than f validators misbehaved."""


@dataclass(frozen=True)
class LedgerRules:
    """The zone's ledger parameters (part of the zone config, equal on every node)."""

    zone: str
    gateway: bytes
    credit_limit_uc: int = 0
    # How far ahead of a validator's clock an entry's signed time may be before the validator
    # waits for it (it never refuses for it). Market ms; the one clock the rules ever look at.
    clock_skew_ms: int = 5_000
    # The committee (its validators' keys and epoch): a buyer's ``refund`` carries a quorum of
    # their ``LockExpiry`` promises. ``LedgerService`` fills these from its committee when empty.
    committee: tuple[bytes, ...] = ()
    committee_epoch: int = 0
    # How long after a lock's deadline (market ms, by its own clock) a validator first promises
    # never to vote for a consumer of it. Liveness only — validity never reads it: it keeps a
    # seller's fill that is still on its way from meeting validators that promised already.
    lock_expiry_grace_ms: int = 3_600_000

    @property
    def quorum(self) -> int:
        """2f+1 of the committee (n − f, f = ⌊(n−1)/3⌋)."""
        n = len(self.committee)
        return n - (n - 1) // 3


@dataclass(frozen=True)
class ChainHead:
    """The certified tip of one chain: the next seq to certify, the hash it must link to and the
    signed time of the last entry (the next may not be dated earlier)."""

    next_seq: int = 0
    last_hash: bytes = GENESIS_HASH
    last_time_ms: int = 0


class LockStatus(str, enum.Enum):
    OPEN = "open"
    FILLED = "filled"
    RELEASED = "released"


@dataclass(frozen=True)
class LockRecord:
    """A certified lock; once ``FILLED``, ``filled_wh`` is the quantity the fill traded (settlement
    reads the slot's trades from these)."""

    buyer: bytes
    lock: Lock
    status: LockStatus = LockStatus.OPEN
    filled_wh: int = 0


@dataclass(frozen=True)
class OrderProgress:
    """Per (owner, order id): its size, Wh filled, and (bids) Wh locked by the owner."""

    size_wh: int
    filled_wh: int = 0
    locked_wh: int = 0


class Heads(dict):  # type: ignore[type-arg]
    """``LedgerState.heads``: a dict of chain heads that keeps the sum of their ``next_seq`` (the
    state's height) as heads are written, so services that poll the height to see whether
    anything changed pay nothing per account."""

    __slots__ = ("height",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.height: int = sum(head.next_seq for head in self.values())

    def __setitem__(self, account: bytes, head: ChainHead) -> None:
        old = dict.get(self, account)
        dict.__setitem__(self, account, head)
        self.height += head.next_seq - (old.next_seq if old is not None else 0)

    def __delitem__(self, account: bytes) -> None:
        self.height -= self[account].next_seq
        dict.__delitem__(self, account)

    # The other ways a dict changes (nothing in the rules uses them) count the heads again.
    def _recount(self) -> None:
        self.height = sum(head.next_seq for head in self.values())

    def update(self, *args: Any, **kwargs: Any) -> None:
        dict.update(self, *args, **kwargs)
        self._recount()

    def __ior__(self, other: Any) -> Heads:
        self.update(other)
        return self

    def pop(self, *args: Any) -> Any:
        value = dict.pop(self, *args)
        self._recount()
        return value

    def popitem(self) -> Any:
        item = dict.popitem(self)
        self._recount()
        return item

    def setdefault(self, account: bytes, head: Any = None) -> Any:
        value = dict.setdefault(self, account, head)
        self._recount()
        return value

    def clear(self) -> None:
        dict.clear(self)
        self.height = 0


class WriteLog(dict):  # type: ignore[type-arg]
    """``LedgerState.orders``: a dict that also remembers the keys written lately, so a reader can
    follow what changed (``written_since``) instead of comparing every order on every change.
    Only the last ``KEEP`` writes are kept: a reader further behind is told to read everything."""

    KEEP = 65_536
    __slots__ = ("_log", "writes")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._log: deque[Any] = deque(maxlen=self.KEEP)   # keys written, oldest first
        self.writes = 0                                     # writes ever logged

    def __setitem__(self, key: Any, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self._log.append(key)
        self.writes += 1

    def written_since(self, writes: int) -> list[Any] | None:
        """The keys written after write number ``writes`` (repeats possible), or None when they
        are not all kept any more."""
        behind = self.writes - writes
        if behind < 0 or behind > len(self._log):
            return None
        return list(itertools.islice(self._log, len(self._log) - behind, None))


@dataclass
class LedgerState:
    """State derived from certified entries. Mutable on purpose (as in the consensus specs):
    ``apply_entry`` updates it in place; ``overlay()`` gives a cheap scratch copy whose writes do
    not reach this one (a validator checks a batch on an overlay)."""

    heads: MutableMapping[bytes, ChainHead] = field(default_factory=Heads)
    balances: MutableMapping[bytes, int] = field(default_factory=dict)
    locks: MutableMapping[bytes, LockRecord] = field(default_factory=dict)
    orders: MutableMapping[tuple[bytes, bytes], OrderProgress] = field(default_factory=WriteLog)
    pools: MutableMapping[bytes, Any] = field(default_factory=dict)          # placeholder: swap/pool kinds
    certificates: MutableMapping[bytes, Any] = field(default_factory=dict)   # placeholder: green certs
    extra: MutableMapping[str, Any] = field(default_factory=ExtraMap)        # namespaces of added kinds (indexed)

    def __post_init__(self) -> None:
        if not isinstance(self.extra, (ExtraMap, ExtraOverlay)):
            self.extra = ExtraMap(self.extra)

    def head(self, account: bytes) -> ChainHead:
        return self.heads.get(account) or ChainHead()

    def balance(self, account: bytes) -> int:
        return self.balances.get(account, 0)

    def obligations(self, account: bytes) -> int:
        """µc settlements charged ``account`` (owed to the gateway; see chain rule 3)."""
        return self.extra.get(obligation_key(account), 0)

    def spendable(self, account: bytes) -> int:
        """What the credit limit is checked against: the balance, obligations not counted."""
        return self.balance(account) + self.obligations(account)

    def locked_total(self) -> int:
        return sum(r.lock.amount for r in self.locks.values() if r.status is LockStatus.OPEN)

    def money_total(self) -> int:
        """Always 0: balances (gateway included) plus credits held in open locks."""
        return sum(self.balances.values()) + self.locked_total()

    def overlay(self) -> LedgerState:
        layers = [Overlay(getattr(self, name)) for name in _STATE_FIELDS[:-1]]
        return LedgerState(*layers, ExtraOverlay(self.extra))  # type: ignore[arg-type]

    def copy(self) -> LedgerState:
        return LedgerState(*(dict(getattr(self, name)) for name in _STATE_FIELDS[:-1]),  # type: ignore[arg-type]
                           ExtraMap(self.extra))

    @property
    def height(self) -> int:
        """Number of certified entries applied (kept by ``Heads``; summed for other mappings)."""
        heads = self.heads
        if type(heads) is Heads:
            return heads.height
        return sum(h.next_seq for h in heads.values())


def obligation_key(account: bytes) -> str:
    return f"owed/{account.hex()}"


def add_obligation(state: LedgerState, account: bytes, amount_uc: int) -> None:
    """Record that a settlement debited ``account`` by ``amount_uc`` (> 0) on the gateway's behalf."""
    state.extra[obligation_key(account)] = state.obligations(account) + amount_uc


def settle_obligation(state: LedgerState, account: bytes, amount_uc: int) -> None:
    """A settlement credited ``account`` ``amount_uc`` (> 0): it first pays back what earlier
    settlements charged (a reconciliation reversing a charge), so spendable grows only by the
    rest — never by a refund of money it was allowed to keep spending."""
    owed = state.obligations(account)
    if owed:
        # Kept at 0 rather than deleted: a scratch overlay cannot delete what its base holds.
        state.extra[obligation_key(account)] = owed - min(owed, amount_uc)


_STATE_FIELDS = ("heads", "balances", "locks", "orders", "pools", "certificates", "extra")   # extra last (indexed)


# --- kind registry ---------------------------------------------------------------------------

Validate = Callable[[LedgerState, Entry, Any, LedgerRules], None]
Apply = Callable[[LedgerState, Entry, Any, LedgerRules], None]


def _no_keys(entry: Entry, body: Any) -> tuple[bytes, ...]:
    return ()


def _always_ready(state: LedgerState, entry: Entry, body: Any) -> bool:
    return True


@dataclass(frozen=True)
class KindRules:
    """How one entry kind is checked and applied.

    ``validate`` raises ``EntryRejected`` (it sees no clock: times come from the entry); ``apply`` mutates
    the state for a certified entry; ``conflict_keys`` names objects besides ``(account, seq)`` that
    at most one certified entry may consume; ``is_ready`` says whether the objects a certified entry
    refers to (e.g. the lock a fill consumes) are already in the state."""

    kind: str
    body_type: type
    validate: Validate
    apply: Apply
    conflict_keys: Callable[[Entry, Any], tuple[bytes, ...]] = _no_keys
    is_ready: Callable[[LedgerState, Entry, Any], bool] = _always_ready


KINDS: dict[str, KindRules] = {}


def register_kind(rules: KindRules) -> KindRules:
    if rules.kind in KINDS:
        raise ValueError(f"entry kind {rules.kind!r} registered twice")
    KINDS[rules.kind] = rules
    return rules


def kind_rules(kind: str) -> KindRules:
    rules = KINDS.get(kind)
    if rules is None:
        raise EntryRejected(RejectReason.UNKNOWN_KIND, kind)
    return rules


def decode_body(entry: Entry) -> Any:
    return _decode_body(entry.kind, entry.body)


@functools.lru_cache(maxsize=8192)
def _decode_body(kind: str, body: bytes) -> Any:
    # Bodies are immutable bytes and decoded bodies frozen, so one decoding may serve every
    # check and apply of the same entry (a node judges, stores and applies each entry in turn).
    rules = kind_rules(kind)
    try:
        # A body is bounded by the entry's own field limit, not by the default limit of a
        # stand-alone message: a zone's settle of ~90 postings needs more than 4 KiB.
        return decode(rules.body_type, body, MAX_BODY_BYTES)
    except (DecodeError, OversizeError) as exc:
        raise EntryRejected(RejectReason.BAD_BODY, str(exc)) from None


def body_of_kind(kind: str, body: Any) -> bytes:
    """Canonical body bytes for ``kind`` (checks the body has the kind's type)."""
    rules = kind_rules(kind)
    if type(body) is not rules.body_type:
        raise TypeError(f"{kind} takes a {rules.body_type.__name__} body")
    return pack(to_plain(body))


# --- whole entries ---------------------------------------------------------------------------

def validate_signed_entry(data: bytes) -> Signed[Entry]:
    """Decode an entry and verify its owner's signature."""
    try:
        return decode_signed(data, Entry)
    except SignatureError as exc:
        raise EntryRejected(RejectReason.BAD_SIGNATURE, str(exc)) from None
    except (DecodeError, OversizeError, UnknownVersionError) as exc:
        raise EntryRejected(RejectReason.MALFORMED, str(exc)) from None


def validate_link(state: LedgerState, entry: Entry, rules: LedgerRules) -> None:
    if entry.zone != rules.zone:
        raise EntryRejected(RejectReason.WRONG_ZONE, f"{entry.zone} is not {rules.zone}")
    head = state.head(entry.account)
    if entry.seq < head.next_seq:
        raise EntryRejected(RejectReason.SEQ_REUSED, f"seq {entry.seq} is certified already (head {head.next_seq})")
    if entry.seq > head.next_seq:
        raise EntryRejected(RejectReason.SEQ_GAP, f"seq {entry.seq} after certified head {head.next_seq}")
    if entry.prev_hash != head.last_hash:
        raise EntryRejected(RejectReason.WRONG_PREV_HASH, f"seq {entry.seq} does not link to the certified head")
    if entry.time_ms < head.last_time_ms:
        raise EntryRejected(RejectReason.TIME_BACKWARDS,
                            f"dated {entry.time_ms}, before its predecessor ({head.last_time_ms})")


def validate_entry(state: LedgerState, signed: Signed[Entry], rules: LedgerRules) -> Any:
    """Every rule of the entry's kind, judged on its certified causal past. Returns the decoded body."""
    entry = signed.body
    validate_link(state, entry, rules)
    body = decode_body(entry)
    KINDS[entry.kind].validate(state, entry, body, rules)
    return body


def apply_entry(state: LedgerState, signed: Signed[Entry], rules: LedgerRules, body: Any = None) -> LedgerState:
    """Apply a certified entry (see module docstring for what is re-checked). Returns ``state``."""
    entry = signed.body
    head = state.head(entry.account)
    if entry.seq != head.next_seq or entry.prev_hash != head.last_hash:
        raise ChainInconsistent(f"certified entry {entry.account.hex()[:8]}#{entry.seq} does not extend its head")
    if body is None:
        try:
            body = decode_body(entry)
        except EntryRejected as exc:
            raise ChainInconsistent(f"certified entry has {exc}") from None
    KINDS[entry.kind].apply(state, entry, body, rules)
    state.heads[entry.account] = ChainHead(entry.seq + 1, entry_hash(signed), entry.time_ms)
    return state


def process_entry(state: LedgerState, signed: Signed[Entry], rules: LedgerRules) -> LedgerState:
    """Validate then apply: what a validator does to its scratch state for each entry of a batch."""
    body = validate_entry(state, signed, rules)
    return apply_entry(state, signed, rules, body)


def conflict_keys(entry: Entry, body: Any = None) -> tuple[bytes, ...]:
    """Objects at most one certified entry may claim: always ``(account, seq)``, plus kind-specific."""
    own = b"seq/" + entry.account + entry.seq.to_bytes(8, "big")   # committee.seq_key
    if body is None:
        body = decode_body(entry)
    return (own, *KINDS[entry.kind].conflict_keys(entry, body))


def is_ready(state: LedgerState, signed: Signed[Entry]) -> bool:
    """Can this certified entry be applied now (its predecessor and referenced objects are in)?"""
    entry = signed.body
    if state.head(entry.account).next_seq != entry.seq:
        return False
    return KINDS[entry.kind].is_ready(state, entry, decode_body(entry))


def apply_ready(state: LedgerState, pending: MutableMapping[tuple[bytes, int], Signed[Entry]],
                rules: LedgerRules) -> list[Signed[Entry]]:
    """Apply every pending certified entry that can be applied, repeatedly; remove them from
    ``pending``. Entries still waiting (a predecessor or lock not yet known) stay there."""
    applied: list[Signed[Entry]] = []
    progress = True
    while progress and pending:
        progress = False
        for account in sorted({acct for acct, _ in pending}):
            while True:
                key = (account, state.head(account).next_seq)
                signed = pending.get(key)
                if signed is None or not is_ready(state, signed):
                    break
                apply_entry(state, signed, rules)
                del pending[key]
                applied.append(signed)
                progress = True
    return applied


def derive_state(entries: Iterable[Signed[Entry]], rules: LedgerRules) -> tuple[LedgerState, dict[tuple[bytes, int], Signed[Entry]]]:
    """The state a set of certified entries derives, and the entries that cannot be applied yet."""
    pending = {(s.body.account, s.body.seq): s for s in entries}
    state = LedgerState()
    apply_ready(state, pending, rules)
    return state, pending


# --- state root ------------------------------------------------------------------------------

def _leaf_head(a: bytes, h: ChainHead) -> bytes:
    return pack(["head", a, [h.next_seq, h.last_hash, h.last_time_ms]])


def _leaf_balance(a: bytes, v: int) -> bytes:
    return pack(["balance", a, v])


def _leaf_lock(t: bytes, r: LockRecord) -> bytes:
    return pack(["lock", t, [r.buyer, to_plain(r.lock), r.status.value, r.filled_wh]])


def _leaf_order(o: tuple[bytes, bytes], p: OrderProgress) -> bytes:
    return pack(["order", o[0] + o[1], [p.size_wh, p.filled_wh, p.locked_wh]])


def _leaf_pool(k: bytes, v: Any) -> bytes:
    return pack(["pool", k, _canonical(v)])


def _leaf_certificate(k: bytes, v: Any) -> bytes:
    return pack(["certificate", k, _canonical(v)])


def _leaf_extra(k: str, v: Any) -> bytes:
    return pack(["extra", k, _canonical(v)])


# One leaf encoding per state field, in ``_STATE_FIELDS`` order.
_LEAF_OF: tuple[tuple[str, Callable[[Any, Any], bytes]], ...] = (
    ("heads", _leaf_head), ("balances", _leaf_balance), ("locks", _leaf_lock),
    ("orders", _leaf_order), ("pools", _leaf_pool), ("certificates", _leaf_certificate),
    ("extra", _leaf_extra))


def state_leaves(state: LedgerState) -> list[bytes]:
    """The derived state as sorted, canonically encoded (category, key, value) leaves."""
    leaves = [leaf(k, v) for name, leaf in _LEAF_OF for k, v in getattr(state, name).items()]
    leaves.sort()
    return leaves


def _canonical(value: Any) -> Any:
    """Plain, order-independent data for any state value an added kind keeps (wire structures,
    enums, mappings, sets, sequences, ints, bytes, str)."""
    if hasattr(value, "__wire_fields__"):
        return to_plain(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return sorted(([_canonical(k), _canonical(v)] for k, v in value.items()), key=pack)
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=pack)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_canonical(getattr(value, f.name)) for f in dataclasses.fields(value)]
    return value


def state_root(state: LedgerState) -> bytes:
    """Merkle root over the sorted derived state: equal roots ⇔ equal states."""
    return merkle.compute_root(state_leaves(state))


class StateRootCache:
    """``state_root`` of a live state, re-encoding only what changed since the last call.

    A node reports its root often (status, RPC) while its state holds thousands of leaves and
    changes by a few per entry; encoding every leaf each time was most of a busy node's CPU.
    This keeps each leaf's hash next to the value it encodes and reuses it while the state still
    holds that very value object. That is sound because state values are never mutated in place
    — every rule stores a new record (``replace(...)``), which overlays depend on as well. The
    leaf order is fixed by the leaf's (category, key) prefix alone (both are self-delimiting in
    msgpack and unique within the state), so hashes are kept sorted by that prefix.
    Applying an entry always raises ``state.height``: an unchanged (state, height) pair returns
    the last root without looking at the state at all. Hashing the sorted leaf hashes into the
    root is still linear in the number of leaves, but costs two short hashes per leaf."""

    def __init__(self) -> None:
        self._state: LedgerState | None = None
        self._height = -1
        self._root = merkle.EMPTY_ROOT
        self._values: dict[tuple[str, Any], tuple[Any, bytes]] = {}   # (field, key) -> (value, prefix)
        self._hashes: SortedDict = SortedDict()                       # prefix -> leaf hash

    def root(self, state: LedgerState) -> bytes:
        height = state.height
        if state is self._state and height == self._height:
            return self._root
        if state is not self._state:
            self._values.clear()
            self._hashes.clear()
        present: set[tuple[str, Any]] = set()
        for name, leaf in _LEAF_OF:
            for key, value in getattr(state, name).items():
                place = (name, key)
                present.add(place)
                known = self._values.get(place)
                if known is not None and known[0] is value:
                    continue
                encoded = leaf(key, value)
                prefix = _leaf_prefix(encoded)
                self._values[place] = (value, prefix)
                self._hashes[prefix] = merkle.leaf_hash(encoded)
        if len(present) != len(self._values):
            for place in [p for p in self._values if p not in present]:
                del self._hashes[self._values.pop(place)[1]]
        self._state, self._height = state, height
        self._root = merkle.root_of_leaf_hashes(list(self._hashes.values()))
        return self._root


def _leaf_prefix(leaf: bytes) -> bytes:
    """The array header, category and key of an encoded leaf: what orders it among the others."""
    category_end = 1 + _packed_length(leaf, 1)
    return leaf[:category_end + _packed_length(leaf, category_end)]


def _packed_length(data: bytes, at: int) -> int:
    """Length of the msgpack str or bin that starts at ``data[at]`` (the kinds leaf keys use)."""
    tag = data[at]
    if 0xA0 <= tag <= 0xBF:                       # fixstr
        return 1 + (tag & 0x1F)
    if tag in (0xC4, 0xD9):                       # bin8, str8
        return 2 + data[at + 1]
    if tag in (0xC5, 0xDA):                       # bin16, str16
        return 3 + int.from_bytes(data[at + 1:at + 3], "big")
    if tag in (0xC6, 0xDB):                       # bin32, str32
        return 5 + int.from_bytes(data[at + 1:at + 5], "big")
    raise LedgerError(f"state leaf key of msgpack type 0x{tag:02x}")


# --- money kinds -----------------------------------------------------------------------------

def validate_debit(state: LedgerState, rules: LedgerRules, account: bytes, amount: int) -> None:
    """Rule 3. Waiting, not final: credits from other chains may yet arrive at this validator."""
    if account == rules.gateway:
        return
    spendable = state.spendable(account)
    if spendable - amount < -rules.credit_limit_uc:
        raise EntryRejected(RejectReason.OVERDRAFT,
                            f"spendable {spendable} - {amount} is below the credit limit -{rules.credit_limit_uc}")


def _move(state: LedgerState, source: bytes, target: bytes, amount: int) -> None:
    state.balances[source] = state.balance(source) - amount
    state.balances[target] = state.balance(target) + amount


def validate_transfer(state: LedgerState, entry: Entry, body: Transfer, rules: LedgerRules) -> None:
    if body.to == entry.account:
        raise EntryRejected(RejectReason.BAD_BODY, "a transfer to oneself")
    validate_debit(state, rules, entry.account, body.amount)


def process_transfer(state: LedgerState, entry: Entry, body: Transfer, rules: LedgerRules) -> None:
    _move(state, entry.account, body.to, body.amount)


def validate_mint(state: LedgerState, entry: Entry, body: Mint, rules: LedgerRules) -> None:
    if entry.account != rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the zone gateway mints")
    if body.to == rules.gateway:
        raise EntryRejected(RejectReason.BAD_BODY, "the gateway mints to another account")


def process_mint(state: LedgerState, entry: Entry, body: Mint, rules: LedgerRules) -> None:
    _move(state, entry.account, body.to, body.amount)


def validate_burn(state: LedgerState, entry: Entry, body: Burn, rules: LedgerRules) -> None:
    if entry.account == rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "the gateway does not burn to itself")
    validate_debit(state, rules, entry.account, body.amount)


def process_burn(state: LedgerState, entry: Entry, body: Burn, rules: LedgerRules) -> None:
    _move(state, entry.account, rules.gateway, body.amount)


# --- locks and fills -------------------------------------------------------------------------

def take_key(take_id: bytes) -> bytes:
    """The conflict key of every entry that creates a lock record ``take_id`` (any kind)."""
    return b"take/" + take_id


def _take_keys(entry: Entry, body: Lock) -> tuple[bytes, ...]:
    return (take_key(body.take_id),)


def lock_fate_key(take_id: bytes) -> bytes:
    """The conflict key of every entry that consumes lock ``take_id`` (fill, swap, share issue,
    charging bill) and of a validator's ``LockExpiry`` promise for it: a validator that promised
    never votes for a consumer, and one that voted for a consumer never promises."""
    return b"fate/" + take_id


def _fill_keys(entry: Entry, body: Fill) -> tuple[bytes, ...]:
    return (lock_fate_key(body.take_id),)


def validate_lock(state: LedgerState, entry: Entry, body: Lock, rules: LedgerRules) -> None:
    buyer = entry.account
    if body.seller == buyer:
        raise EntryRejected(RejectReason.BAD_BODY, "buyer and seller are the same account")
    if body.order_owner not in (buyer, body.seller):
        raise EntryRejected(RejectReason.BAD_BODY, "the order belongs to neither side")
    if body.qty_wh > body.order_size_wh:
        raise EntryRejected(RejectReason.ORDER_OVERFILLED, f"{body.qty_wh} Wh locked on an order of {body.order_size_wh} Wh")
    if body.take_id in state.locks:
        raise EntryRejected(RejectReason.DUPLICATE_TAKE, f"take {body.take_id.hex()} is locked already")
    if body.amount < trade_value(body.qty_wh, body.price):
        raise EntryRejected(RejectReason.LOCK_TOO_SMALL,
                            f"{body.amount} µc < value {trade_value(body.qty_wh, body.price)} µc")
    if entry.time_ms >= body.deadline_ms:
        raise EntryRejected(RejectReason.DEADLINE_PASSED, "the lock is dated at or after its own deadline")
    if body.order_owner == buyer:
        progress = state.orders.get((buyer, body.order_id))
        if progress is not None and progress.size_wh != body.order_size_wh:
            raise EntryRejected(RejectReason.LOCK_MISMATCH, "order size differs from earlier locks")
        locked = progress.locked_wh if progress else 0
        if locked + body.qty_wh > body.order_size_wh:
            raise EntryRejected(RejectReason.ORDER_OVERFILLED,
                                f"{locked} + {body.qty_wh} Wh locked on an order of {body.order_size_wh} Wh")
    validate_debit(state, rules, buyer, body.amount)


def process_lock(state: LedgerState, entry: Entry, body: Lock, rules: LedgerRules) -> None:
    if body.take_id in state.locks:
        raise ChainInconsistent(f"take {body.take_id.hex()} locked twice")
    buyer = entry.account
    state.balances[buyer] = state.balance(buyer) - body.amount
    state.locks[body.take_id] = LockRecord(buyer, body)
    if body.order_owner == buyer:
        key = (buyer, body.order_id)
        progress = state.orders.get(key) or OrderProgress(body.order_size_wh)
        state.orders[key] = OrderProgress(progress.size_wh, progress.filled_wh, progress.locked_wh + body.qty_wh)


def known_lock(state: LedgerState, take_id: bytes) -> LockRecord:
    """The certified lock record ``take_id``; *waits* (``no_lock``) while this state lacks it."""
    record = state.locks.get(take_id)
    if record is None:
        raise EntryRejected(RejectReason.NO_LOCK, f"no certified lock for take {take_id.hex()} (yet)")
    return record


def consumable_lock(state: LedgerState, entry: Entry, take_id: bytes) -> LockRecord:
    """The open lock ``take_id`` that ``entry`` (its seller's chain) may consume: named seller,
    still open, and ``entry`` dated before the deadline. Every kind that consumes a lock in the
    seller's chain (fill, swap, share issue, charging bill) checks this, so the buyer's release,
    which waits for the seller's chain to pass the deadline, can never meet a consumer."""
    record = known_lock(state, take_id)
    if record.lock.seller != entry.account:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "the lock names another seller")
    if record.status is not LockStatus.OPEN:
        raise EntryRejected(RejectReason.LOCK_CLOSED, f"lock {take_id.hex()} is {record.status.value}")
    if entry.time_ms >= record.lock.deadline_ms:
        raise EntryRejected(RejectReason.DEADLINE_PASSED, "the entry is dated at or after the lock's deadline")
    return record


def _lock_known(state: LedgerState, entry: Entry, body: Release | Fill | Decline) -> bool:
    return body.take_id in state.locks


def return_lock(state: LedgerState, take_id: bytes) -> None:
    """Hand an open lock back to its buyer (a no-op once it is not open: release and decline may
    both be certified, in either order)."""
    record = state.locks[take_id]
    if record.status is LockStatus.FILLED:
        raise ChainInconsistent(f"certified entry returns lock {take_id.hex()} which is filled")
    if record.status is LockStatus.OPEN:
        state.balances[record.buyer] = state.balance(record.buyer) + record.lock.amount
        state.locks[take_id] = LockRecord(record.buyer, record.lock, LockStatus.RELEASED)


def seller_passed_deadline(state: LedgerState, record: LockRecord) -> bool:
    """Whether the seller's certified chain has an entry dated at or after the lock's deadline:
    from then on no entry of that chain can consume the lock."""
    return state.head(record.lock.seller).last_time_ms >= record.lock.deadline_ms


def buyers_unfilled_lock(state: LedgerState, entry: Entry, take_id: bytes) -> LockRecord:
    """The lock ``take_id`` that ``entry`` (its buyer's chain) may take back: the buyer's, not filled."""
    record = known_lock(state, take_id)
    if record.buyer != entry.account:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "only the buyer takes its lock back")
    if record.status is LockStatus.FILLED:
        raise EntryRejected(RejectReason.LOCK_CLOSED, f"lock {take_id.hex()} is filled")
    return record


def validate_release(state: LedgerState, entry: Entry, body: Release, rules: LedgerRules) -> None:
    record = buyers_unfilled_lock(state, entry, body.take_id)
    if not seller_passed_deadline(state, record):
        raise EntryRejected(RejectReason.DEADLINE_NOT_REACHED,
                            "the seller's chain has not passed the lock's deadline: it may still fill it")


def _release_ready(state: LedgerState, entry: Entry, body: Release) -> bool:
    record = state.locks.get(body.take_id)
    return record is not None and seller_passed_deadline(state, record)


def process_release(state: LedgerState, entry: Entry, body: Release, rules: LedgerRules) -> None:
    return_lock(state, body.take_id)


def validate_refund(state: LedgerState, entry: Entry, body: Refund, rules: LedgerRules) -> None:
    buyers_unfilled_lock(state, entry, body.take_id)
    promised = expiry_signers(body.expiries, body.take_id, rules)
    if not rules.committee or len(promised) < rules.quorum:
        raise EntryRejected(RejectReason.BAD_BODY,
                            f"{len(promised)} valid expiry promises of the committee, {rules.quorum} needed")


def expiry_signers(expiries: Iterable[bytes], take_id: bytes, rules: LedgerRules) -> set[bytes]:
    """The committee members whose valid ``LockExpiry`` for ``take_id`` is among ``expiries``."""
    members = set(rules.committee)
    signers: set[bytes] = set()
    for data in expiries:
        try:
            expiry = decode_signed(data, LockExpiry).body
        except (DecodeError, OversizeError, SignatureError, UnknownVersionError):
            continue
        if (expiry.validator in members and expiry.take_id == take_id and expiry.zone == rules.zone
                and expiry.epoch == rules.committee_epoch):
            signers.add(expiry.validator)
    return signers


def process_refund(state: LedgerState, entry: Entry, body: Refund, rules: LedgerRules) -> None:
    return_lock(state, body.take_id)


def validate_decline(state: LedgerState, entry: Entry, body: Decline, rules: LedgerRules) -> None:
    record = known_lock(state, body.take_id)
    if record.lock.seller != entry.account:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "only the lock's seller declines it")
    if record.status is LockStatus.FILLED:
        raise EntryRejected(RejectReason.LOCK_CLOSED, f"lock {body.take_id.hex()} is filled")


def process_decline(state: LedgerState, entry: Entry, body: Decline, rules: LedgerRules) -> None:
    return_lock(state, body.take_id)


def validate_fill(state: LedgerState, entry: Entry, body: Fill, rules: LedgerRules) -> None:
    record = consumable_lock(state, entry, body.take_id)
    lock = record.lock
    if record.buyer != body.buyer:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "the lock names another buyer")
    if lock.order_id != body.order_id or lock.price != body.price:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "the lock is for another order or price")
    if body.qty_wh > lock.qty_wh:
        raise EntryRejected(RejectReason.FILL_EXCEEDS_LOCK, f"{body.qty_wh} Wh > {lock.qty_wh} Wh locked")
    if lock.order_owner == entry.account:
        progress = state.orders.get((entry.account, body.order_id))
        if progress is not None and progress.size_wh != lock.order_size_wh:
            raise EntryRejected(RejectReason.LOCK_MISMATCH, "the lock states another order size")
        filled = progress.filled_wh if progress else 0
        if filled + body.qty_wh > lock.order_size_wh:
            raise EntryRejected(RejectReason.ORDER_OVERFILLED,
                                f"{filled} + {body.qty_wh} Wh filled on an order of {lock.order_size_wh} Wh")


def process_fill(state: LedgerState, entry: Entry, body: Fill, rules: LedgerRules) -> None:
    record = _certified_open_lock(state, body.take_id)
    lock = record.lock
    value = trade_value(body.qty_wh, body.price)
    state.balances[entry.account] = state.balance(entry.account) + value
    state.balances[record.buyer] = state.balance(record.buyer) + lock.amount - value
    state.locks[body.take_id] = LockRecord(record.buyer, lock, LockStatus.FILLED, body.qty_wh)
    key = (lock.order_owner, lock.order_id)
    progress = state.orders.get(key) or OrderProgress(lock.order_size_wh)
    state.orders[key] = OrderProgress(progress.size_wh, progress.filled_wh + body.qty_wh, progress.locked_wh)


def _certified_open_lock(state: LedgerState, take_id: bytes) -> LockRecord:
    record = state.locks.get(take_id)
    if record is None or record.status is not LockStatus.OPEN:
        raise ChainInconsistent(f"certified entry consumes lock {take_id.hex()} which is not open")
    return record


register_kind(KindRules("transfer", Transfer, validate_transfer, process_transfer))
register_kind(KindRules("mint", Mint, validate_mint, process_mint))
register_kind(KindRules("burn", Burn, validate_burn, process_burn))
register_kind(KindRules("lock", Lock, validate_lock, process_lock, _take_keys))
register_kind(KindRules("release", Release, validate_release, process_release, is_ready=_release_ready))
register_kind(KindRules("decline", Decline, validate_decline, process_decline, is_ready=_lock_known))
register_kind(KindRules("fill", Fill, validate_fill, process_fill, _fill_keys, is_ready=_lock_known))
register_kind(KindRules("refund", Refund, validate_refund, process_refund, is_ready=_lock_known))


# --- building entries ------------------------------------------------------------------------

def build_entry(rules: LedgerRules, account: bytes, head: ChainHead, kind: str, body: Any, time_ms: int) -> Entry:
    """The unsigned entry extending ``head`` of ``account``, dated ``time_ms`` or, if the clock
    reads earlier than the predecessor's date, at that date (chain times never decrease). Sign
    it with ``wire.sign``."""
    return Entry(rules.zone, account, head.next_seq, head.last_hash, max(time_ms, head.last_time_ms), kind,
                 body_of_kind(kind, body))
