"""``LedgerService``: one node's ledger, run under trio (the imperative shell).

What it does, all behind one object:

* **Submit** (any node): ``next_entry(kind, body)`` builds and signs this node's next entry on its
  local tip, dated by its clock; ``await submit(entry)`` queues it. A batcher task first writes
  the batch to the store (``proposals``: after a crash it is offered again exactly as it was —
  the owner never signs two entries at one seq), then sends it to every validator as one
  ``VoteRequest`` over persistent ``/p2pgrid/vote/1`` streams. Each validator votes for the
  longest prefix it accepts; a quorum's common prefix is certified (asking again for that prefix
  if their votes covered different lengths), stored, applied, confirmed to the validators and
  gossiped on ``p2pgrid/v1/<zone>/ledger``. ``submit`` returns the ``Certificate`` once a quorum
  of validators has confirmed it (or after ``vote_timeout_s``), so an entry that depends on it —
  spending the credits just received, filling the lock just certified — finds a quorum able to
  judge it. An entry a quorum *refused* with signed refusals (``Refusal``) is given up, with the
  entries extending it: ``submit`` raises ``BatchRejected`` and the tip falls back. Anything
  else undecided (validators waiting for a dependency or for the entry's time, or silent) stays
  **in doubt**: ``submit`` raises ``EntryInDoubt`` and the batcher offers it again, unchanged,
  with a growing pause, until it is certified or refused — never replaced by another entry.
* **Validate** (committee members): judge each ``VoteRequest`` with ``committee.decide_vote``
  against the certified state (validity reads no clock but "not dated too far ahead"), persist
  the new vote records with the voted bytes (``store.record_votes``, committed), and only then
  reply with the signed vote. Requests are judged one at a time (a lock), so two conflicting
  requests can never both pass the never-vote-twice check. A validator that waits for certified
  entries it lacks pulls them from the proposer at once. Vote records of entries certified here
  are pruned (the certified state enforces their keys from then on).
* **Replicate** (every node): accept certified batches from gossip, confirms and sync; verify the
  certificate (cached per batch root) and inclusion, store, and apply what is ready. Gossiped
  batches are checked once (in the topic validator) and stored in groups: whatever arrived while
  the previous group was being written shares one transaction.
  ``sync_with(peer)`` pulls everything missing over ``/p2pgrid/sync/1``; the service serves it.
  Anti-entropy pulls only from peers that speak that protocol (``transport.peers_supporting``):
  each one as soon as it is connected, then one in turn per ``sync_interval_s``.

API for other services (trading, settlement, node, RPC)::

    async with open_ledger_service(key, LedgerConfig(rules, committee), store, transport, clock) as ledger:
        entry = ledger.next_entry("lock", Lock(...))      # signed, extends the local tip
        certificate = await ledger.submit(entry)           # certified, stored, gossiped
        ledger.state                                       # LedgerState: balances, locks, orders, …
        ledger.state_root(), ledger.balance(account), ledger.head(account)
        await ledger.wait_for_height(n)                    # until n certified entries are applied
        await ledger.sync_with(peer) / ledger.sync_all()   # pull what we lack now

``state`` is the derived ``LedgerState`` (read-only for callers). Time: ``clock()`` returns Unix
ms of market time; it dates this node's entries and, at a validator, only decides whether an
entry is dated too far ahead to be judged yet (``LedgerRules.clock_skew_ms``). Stream handlers run in the transport's tasks;
they are cancelled when the service stops, before its store closes.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from dataclasses import dataclass
from typing import Any

import trio
from nacl.signing import SigningKey

from p2pgrid.errors import LedgerError, NetError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import (
    ChainHead, EntryRejected, LedgerRules, LedgerState, RejectReason, apply_entry, apply_ready,
    StateRootCache, build_entry, expiry_signers, validate_entry,
)
from p2pgrid.ledger.committee import (
    CertificateInvalid, Committee, check_certified_inclusion, decide_expiry, decide_vote, make_refusal, make_vote,
)
from p2pgrid.ledger.messages import (
    MAX_FRAME_BYTES, Certificate, CertifiedEntries, Confirm, Confirmed, Entry, ExpiryReply, ExpiryRequest, LockExpiry,
    Rejection, SyncReply, SyncRequest, VoteReply, VoteRequest, decode_certified, decode_frame, encode_certified, encode_frame, entry_hash, hash_bytes,
)
from p2pgrid.ledger.protocol import (
    PeerMisbehaved, RoundResult, SyncSession, VerifiedBatch, VoteCollector, verify_batch,
)
from p2pgrid.ledger.store import LedgerStore
from p2pgrid.net.peer_schedule import PeerSchedule
from p2pgrid.net.transport import FramedStream, StreamClosed, Transport, ValidationResult, peers_supporting
from p2pgrid.wire import Signed, decode_signed, sign

log = logging.getLogger(__name__)

VOTE_PROTOCOL = "/p2pgrid/vote/1"
SYNC_PROTOCOL = "/p2pgrid/sync/1"
SYNC_PEERS_POLL_S = 1.0      # how often anti-entropy looks for newly connected peers
GOSSIP_MAX_BYTES = 60 * 1024
GOSSIP_STORE_GROUP = 64      # gossiped batches stored in one transaction, at most


def ledger_topic(zone: str) -> str:
    return f"p2pgrid/v1/{zone}/ledger"


def wall_clock_ms() -> int:
    return int(time.time() * 1000)


class _FastSigner:
    """The node key with its Ed25519 signing key expanded once (``NodeKey.sign`` re-derives it
    from the seed on every call, which costs as much as the signature itself)."""

    def __init__(self, key: NodeKey) -> None:
        self._signing_key = SigningKey(key.seed)
        self.public_key = key.public_key

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature


class BatchRejected(LedgerError):
    """The committee refused the entry (or one it extends) for good. ``reasons``: validator →
    rejections."""

    def __init__(self, message: str, reasons: dict[bytes, tuple[Any, ...]] | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons or {}


class EntryInDoubt(BatchRejected):
    """One round of votes did not decide the entry (validators waiting for a dependency, for its
    time, or not answering). The ledger keeps proposing it, unchanged, until it is decided."""


_RETRY_FIRST_S = 0.1     # first pause before entries in doubt are offered again (real seconds)
_RETRY_MAX_S = 3.0       # the pause doubles up to this while they stay undecided
# Waiting reasons that mean "this validator lacks certified entries the proposer has".
_DEPENDENCY_REASONS = frozenset({"seq_gap", "no_lock", "missing_dependency", "overdraft", "deadline_not_reached"})


@dataclass(frozen=True)
class LedgerConfig:
    """Ledger settings of one node (the zone's rules and committee are the same on every node)."""

    rules: LedgerRules
    committee: Committee
    max_batch: int = 256          # entries per vote request (one signature per validator per batch)
    vote_timeout_s: float = 10.0  # give up on a batch whose quorum does not answer in time
    sync_max_entries: int = 4096  # entries per sync reply
    batch_linger_s: float = 0.002 # how long the first queued entry waits for others to join it
    sync_interval_s: float = 10.0 # anti-entropy: sync with each peer speaking /p2pgrid/sync/1 once
                                  # connected, then one such peer per interval in turn; 0 turns it off


class _ValidatorLink:
    """The proposer's end of one persistent ``/p2pgrid/vote/1`` stream: requests and confirms go
    out in order; one reader task hands each reply to whoever waits for it (votes by request id,
    confirmations by batch root), so a confirm and the next vote request can be in flight at once."""

    def __init__(self, stream: FramedStream) -> None:
        self.stream = stream
        self.broken = False
        self._replies: dict[int, tuple[trio.Event, list[VoteReply | ExpiryReply]]] = {}
        self._confirmed: dict[bytes, trio.Event] = {}

    async def read_replies(self) -> None:
        try:
            while True:
                frame = decode_frame(await self.stream.receive_frame())
                if isinstance(frame, (VoteReply, ExpiryReply)):
                    waiting = self._replies.pop(frame.request_id, None)
                    if waiting is not None:
                        waiting[1].append(frame)
                        waiting[0].set()
                elif isinstance(frame, Confirmed):
                    event = self._confirmed.pop(frame.batch_root, None)
                    if event is not None:
                        event.set()
                else:
                    break   # a validator does not send anything else: stop trusting this stream
        except (NetError, WireError):
            pass
        finally:
            self.broken = True
            for event, _ in self._replies.values():
                event.set()
            for event in self._confirmed.values():
                event.set()

    async def request_vote(self, request: VoteRequest) -> VoteReply:
        reply = await self._request(request)
        if not isinstance(reply, VoteReply):
            raise PeerMisbehaved("the validator answered a vote request with another frame")
        return reply

    async def request_expiry(self, request: ExpiryRequest) -> ExpiryReply:
        reply = await self._request(request)
        if not isinstance(reply, ExpiryReply):
            raise PeerMisbehaved("the validator answered an expiry request with another frame")
        return reply

    async def _request(self, request: VoteRequest | ExpiryRequest) -> VoteReply | ExpiryReply:
        event, box = trio.Event(), []
        self._replies[request.request_id] = (event, box)
        try:
            await self.stream.send_frame(encode_frame(request))
            await event.wait()
        finally:
            self._replies.pop(request.request_id, None)
        if not box:
            raise StreamClosed("the validator's vote stream broke")
        return box[0]

    async def confirm(self, batch: CertifiedEntries) -> trio.Event:
        event = self._confirmed[batch.certificate.batch_root] = trio.Event()
        await self.stream.send_frame(encode_frame(Confirm(batch)))
        return event

    async def aclose(self) -> None:
        self.broken = True
        await self.stream.aclose()


class _VoteJournal:
    """Group commit of a validator's vote records: ``persist`` returns once the records are
    durable; records handed in while a commit runs go to disk together in the next one. Commits
    run in a task of their own (``run``), never in a request's task: a proposer that is also a
    validator must not end up writing every other proposer's records instead of certifying."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store
        self._records: list[tuple[bytes, bytes]] = []
        self._entries: dict[bytes, Signed[Entry]] = {}
        self._written = trio.Event()
        self._wanted = trio.Event()
        self._error: BaseException | None = None

    async def persist(self, records: Sequence[tuple[bytes, bytes]], entries: dict[bytes, Signed[Entry]]) -> None:
        if self._error is not None:
            raise LedgerError(f"vote records could not be written: {self._error}")
        self._records.extend(records)
        self._entries.update(entries)
        written = self._written
        self._wanted.set()
        await written.wait()
        if self._error is not None:
            raise LedgerError(f"vote records could not be written: {self._error}")

    async def run(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            if not self._records:
                continue
            batch, batch_entries, done = self._records, self._entries, self._written
            self._records, self._entries, self._written = [], {}, trio.Event()
            try:
                # Shielded: waiters are told "durable" when this ends, so it must end with the
                # commit done (or failed), never cut off halfway by the service stopping.
                with trio.CancelScope(shield=True):
                    await self._store.record_votes(batch, batch_entries)
            except LedgerError as exc:
                self._error = exc
            finally:
                done.set()


@dataclass
class _Pending:
    entry: Signed[Entry]
    done: trio.Event
    certificate: Certificate | None = None
    error: LedgerError | None = None


class LedgerService:
    """See the module docstring. Build with ``open_ledger_service``."""

    def __init__(self, key: NodeKey, config: LedgerConfig, store: LedgerStore, transport: Transport,
                 clock: Callable[[], int] = wall_clock_ms) -> None:
        self.key = key
        self.me = key.public_key   # NodeKey derives it from the seed on each access: keep it
        self._signer = _FastSigner(key)
        if not config.rules.committee:
            # The rules carry the committee (a refund's expiry promises are checked against it).
            config = dataclasses.replace(config, rules=dataclasses.replace(
                config.rules, committee=config.committee.validators, committee_epoch=config.committee.epoch))
        self.config = config
        self.store = store
        self.transport = transport
        self.clock = clock
        self.state = LedgerState()
        self._root_cache = StateRootCache()
        self._waiting: dict[tuple[bytes, int], Signed[Entry]] = {}   # certified, not yet applicable
        self._trusted_roots: set[bytes] = set()     # certificates whose signatures were checked
        self._complete_roots: set[bytes] = set()    # whole batches already stored and applied
        # validated gossip, not yet consumed: message hash → (checked batch, whole batch?)
        self._gossip_checked: dict[bytes, tuple[VerifiedBatch, bool]] = {}
        self._decoded: dict[bytes, Signed[Entry]] = {}    # entries decoded here lately, by hash
        self._in_flight: dict[bytes, trio.Event] = {}     # batch roots being stored right now
        self._voted: dict[bytes, bytes] = {}                       # conflict key → entry hash voted for
        self._voted_at: dict[bytes, tuple[bytes, int]] = {}        # conflict key → (account, seq) voted
        self._vote_lock = trio.Lock()
        self._votes_journal = _VoteJournal(store)
        self._fetching: set[bytes] = set()                         # peers being pulled from right now
        self._in_doubt: dict[bytes, dict[int, Signed[Entry]]] = {}   # account → seq → entry proposed, undecided
        self._dropped: set[bytes] = set()            # entries a quorum refused (and entries extending them)
        self._doubt_rounds: dict[bytes, int] = {}    # entry hash → rounds it stayed undecided (for the log)
        # account → (certified height, seq, overlay with own entries before seq, last one's (seq, hash))
        self._views: dict[bytes, tuple[int, int, LedgerState, tuple[int, bytes] | None]] = {}
        self._queued: dict[bytes, _Pending] = {}     # entry hash → its place in the queue
        self._queued_of: dict[bytes, dict[bytes, _Pending]] = {}   # the same, per account
        # the same, per account and seq (entry hash → entry, in queueing order): _own_view looks
        # entries up by seq, and a burst of one chain's entries must not cost a scan each
        self._queued_at: dict[bytes, dict[int, dict[bytes, Signed[Entry]]]] = {}
        self._tips: dict[bytes, ChainHead] = {}
        self._queue_send, self._queue_receive = trio.open_memory_channel[_Pending](math.inf)
        # gossiped batches, checked, waiting to be stored (in groups: ``_store_gossip``)
        self._gossip_ready_send, self._gossip_ready_receive = trio.open_memory_channel[
            tuple[VerifiedBatch, bool]](math.inf)
        self._links: dict[bytes, _ValidatorLink] = {}
        self._nursery: trio.Nursery | None = None   # set by run()
        self._poked = trio.CancelScope()             # cancelled: the batcher looks at its waiting entries again
        self._handler_scopes: set[trio.CancelScope] = set()
        self._stopped = False
        self._request_ids = itertools.count(1)
        self._applied = trio.Condition()
        self.is_validator = config.committee.is_member(key.public_key)

    @property
    def rules(self) -> LedgerRules:
        return self.config.rules

    @property
    def committee(self) -> Committee:
        return self.config.committee

    # --- reading ------------------------------------------------------------------------------

    def state_root(self) -> bytes:
        return self._root_cache.root(self.state)

    def balance(self, account: bytes | None = None) -> int:
        return self.state.balance(account or self.me)

    def head(self, account: bytes | None = None) -> ChainHead:
        return self.state.head(account or self.me)

    @property
    def queued_entries(self) -> int:
        """Entries submitted here and not decided yet: how far this proposer is behind its committee."""
        return len(self._queued)

    def is_in_doubt(self, entry: Signed[Entry]) -> bool:
        """Whether some validator may have voted for ``entry`` without it being certified: the
        ledger then keeps its tip on top of it and offers exactly this entry again first."""
        held = self._in_doubt.get(entry.body.account, {}).get(entry.body.seq)
        return held is not None and entry_hash(held) == entry_hash(entry)

    def in_doubt_entries(self) -> list[Signed[Entry]]:
        """This node's entries proposed and not yet decided (reloaded after a restart too), in
        chain order: services that build on their own earlier entries (meter counters, a slot's
        settle) continue from these instead of signing a second entry for the same thing."""
        return [entry for account in sorted(self._in_doubt) for _, entry in sorted(self._in_doubt[account].items())]

    async def wait_for_height(self, height: int) -> None:
        """Block until at least ``height`` certified entries are applied."""
        async with self._applied:
            while self.state.height < height:
                await self._applied.wait()

    # --- submitting ---------------------------------------------------------------------------

    async def wait_for_lock(self, take_id: bytes, owner: bytes, timeout_s: float) -> bool:
        """Until the certified lock ``take_id`` is in our state (pulling ``owner``'s chain first,
        then waiting for what gossip brings), at most ``timeout_s``; returns whether it is."""
        if take_id in self.state.locks:
            return True
        with trio.move_on_after(timeout_s):
            try:
                await self.sync_with(owner)
            except (NetError, LedgerError):
                pass   # the lock may still arrive by gossip; the wait below decides
            while take_id not in self.state.locks:
                await self.wait_for_height(self.state.height + 1)
        return take_id in self.state.locks

    def next_entry(self, kind: str, body: Any) -> Signed[Entry]:
        """Sign this node's next entry, dated by its clock and extending its local tip (certified
        head, then the entries in doubt or queued on it). Submit entries in the order they were built."""
        account = self.me
        tip = self._tips.get(account) or self._settled_tip(account)
        signed = sign(build_entry(self.rules, account, tip, kind, body, self.clock()), self._signer)
        self._tips[account] = ChainHead(tip.next_seq + 1, entry_hash(signed), signed.body.time_ms)
        self._remember([signed])
        return signed

    def _remember(self, entries: Sequence[Signed[Entry]]) -> None:
        """Keep recently decoded entries so confirms and gossip of them need no decoding again."""
        if len(self._decoded) > 16_384:
            self._decoded.clear()
        for signed in entries:
            self._decoded[entry_hash(signed)] = signed

    async def submit(self, entry: Signed[Entry]) -> Certificate:
        """Certify ``entry`` (batched with others); returns its certificate once stored and gossiped.

        Raises ``BatchRejected`` if a quorum of validators refused it for good (or an entry it
        extends), and ``EntryInDoubt`` (a ``BatchRejected``) if one round of votes did not decide
        it: the ledger then keeps proposing it, unchanged, until it is certified or refused."""
        try:
            await self._precheck(entry)
        except trio.Cancelled:
            # The caller stopped waiting, but the entry is signed and later entries of the chain
            # may extend it already: finish judging it in the background (proposed, or given up
            # as any entry not valid here), never leave a hole that every later entry waits on.
            self._finish_precheck_later(entry)
            raise
        pending = self._enqueue(entry)
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.certificate  # type: ignore[return-value]

    async def _precheck(self, entry: Signed[Entry]) -> None:
        """Judge the entry on this node's own certified state (with its own entries in doubt or
        queued before it) before any validator sees it. An owner proposes only what its own
        certified view already makes valid: what it depends on is then certified, so every
        validator gets it too (it pulls from the proposer), and an entry that waits can never hold
        the chain up for good. One that is not valid here yet — credits or a lock on their way —
        gets ``vote_timeout_s`` to become valid; otherwise it is given up before binding anyone."""
        account = entry.body.account
        problem: EntryRejected | None = None
        with trio.move_on_after(self.config.vote_timeout_s):
            while True:
                if entry_hash(entry) in self._queued or self.is_in_doubt(entry):
                    return
                view = self._own_view(account, entry.body.seq)
                if view is None:
                    return          # built on entries this node no longer holds: the batcher answers it
                try:
                    validate_entry(view, entry, self.rules)
                    self._dropped.discard(entry_hash(entry))   # the same bytes may have been given up before
                    return
                except EntryRejected as exc:
                    problem = exc
                if problem.is_final:
                    break
                async with self._applied:
                    await self._applied.wait()
        assert problem is not None
        self._dropped.add(entry_hash(entry))
        self._tips[account] = self._settled_tip(account)
        self._poked.cancel()    # entries queued on top of this one are answered now, not at the next submission
        raise BatchRejected(f"not valid on this node's certified state, not proposed: {problem}",
                            {self.me: (Rejection(0, problem.reason.value, problem.detail[:256], True),)})

    def _finish_precheck_later(self, entry: Signed[Entry]) -> None:
        async def finish() -> None:
            try:
                await self._precheck(entry)
            except BatchRejected:
                return
            self._enqueue(entry)

        if self._nursery is not None and entry_hash(entry) not in self._queued and not self.is_in_doubt(entry):
            try:
                self._nursery.start_soon(finish)
            except RuntimeError:
                pass    # the service is stopping: the chain restarts from its stored proposals

    def _own_view(self, account: bytes, seq: int) -> LedgerState | None:
        """The certified state with this node's undecided entries of ``account`` before ``seq``
        applied on top (a scratch overlay), or None if one of them is not at hand. The overlay of
        the last call is kept and extended while nothing certified changes, so entries submitted
        in a row cost one apply each, not one per entry queued before them."""
        head = self.state.head(account).next_seq
        if seq <= head:
            return self.state
        cached = self._views.get(account)
        if cached is not None and cached[0] == self.state.height and cached[1] <= seq and (
                cached[3] is None or ((kept := self._own_entry_at(account, cached[3][0])) is not None
                                      and entry_hash(kept) == cached[3][1])):
            _, upto, view, last = cached
        else:
            upto, view, last = head, self.state.overlay(), None
        for at in range(upto, seq):
            before = self._own_entry_at(account, at)
            if before is None:
                return None
            try:
                apply_entry(view, before, self.rules)
            except (LedgerError, KeyError):
                self._views.pop(account, None)
                return None
            last = (at, entry_hash(before))
        self._views[account] = (self.state.height, seq, view, last)
        return view

    def _own_entry_at(self, account: bytes, seq: int) -> Signed[Entry] | None:
        """This node's undecided entry of ``account`` at ``seq``: the one in doubt, else the one
        queued last at that seq."""
        in_doubt = self._in_doubt.get(account)
        entry = in_doubt.get(seq) if in_doubt is not None else None
        if entry is None:
            queued = self._queued_at.get(account, {}).get(seq)
            if queued:
                entry = next(reversed(queued.values()))
        return entry

    def _enqueue(self, entry: Signed[Entry]) -> _Pending:
        """Queue ``entry`` for certification, once: the same entry submitted again (a retry, a
        re-proposal) waits for the one already queued instead of racing it for its seq."""
        key = entry_hash(entry)
        pending = self._queued.get(key)
        if pending is None:
            pending = _Pending(entry, trio.Event())
            self._queued[key] = pending
            self._queued_of.setdefault(entry.body.account, {})[key] = pending
            self._queued_at.setdefault(entry.body.account, {}).setdefault(entry.body.seq, {})[key] = entry
            self._queue_send.send_nowait(pending)
        return pending

    def _finish(self, pending: _Pending) -> None:
        key, account = entry_hash(pending.entry), pending.entry.body.account
        if self._queued.pop(key, None) is not None:
            of_account = self._queued_of[account]
            del of_account[key]
            if not of_account:
                del self._queued_of[account]
            at_account = self._queued_at[account]
            at_seq = at_account[pending.entry.body.seq]
            del at_seq[key]
            if not at_seq:
                del at_account[pending.entry.body.seq]
                if not at_account:
                    del self._queued_at[account]
        pending.done.set()

    async def _batcher(self) -> None:
        """Certify queued entries batch by batch; entries in doubt are offered again (first, since
        everything after them extends them) with a growing pause while they stay undecided. The
        pause runs on its own deadline: a node that keeps submitting must not starve its entries in
        doubt (whatever it submits meanwhile extends them and waits for them)."""
        waiting: list[_Pending] = []
        retry_in = _RETRY_FIRST_S
        retry_at = trio.current_time() + retry_in
        while True:
            with trio.move_on_at(retry_at if self._in_doubt else math.inf):
                if not waiting or not self._has_ready(waiting):
                    with trio.CancelScope() as self._poked:
                        waiting.append(await self._queue_receive.receive())
                await trio.sleep(self.config.batch_linger_s)   # let concurrent submitters join the batch
            if self._in_doubt and trio.current_time() >= retry_at:
                self._repropose_in_doubt()
                retry_in = min(retry_in * 2, _RETRY_MAX_S)
                retry_at = trio.current_time() + retry_in
            while True:
                try:
                    waiting.append(self._queue_receive.receive_nowait())
                except trio.WouldBlock:
                    break
            batch, waiting = self._take_batch(waiting)
            if batch:
                had_doubt = bool(self._in_doubt)
                if await self._certify_batch(batch):
                    retry_in = _RETRY_FIRST_S      # something was decided: the rest may follow soon
                if self._in_doubt and (not had_doubt or retry_at > trio.current_time() + retry_in):
                    retry_at = trio.current_time() + retry_in

    def _has_ready(self, waiting: list[_Pending]) -> bool:
        """Whether some waiting entry extends its chain's certified head (can be batched now)."""
        return any(p.entry.body.seq == self.state.head(p.entry.body.account).next_seq for p in waiting)

    def _take_batch(self, queued: list[_Pending]) -> tuple[list[_Pending], list[_Pending]]:
        """Entries that extend their certified head contiguously, in chain order, up to
        ``max_batch``; the rest wait (tasks may submit a chain's entries out of order). Entries
        certified already, or extending an entry refused for good, are answered at once."""
        queued.sort(key=lambda p: (p.entry.body.account, p.entry.body.seq))
        batch: list[_Pending] = []
        rest: list[_Pending] = []
        expect: dict[bytes, tuple[int, bytes]] = {}
        for p in queued:
            entry = p.entry.body
            head = self.state.head(entry.account)
            want, link = expect.get(entry.account, (head.next_seq, head.last_hash))
            if entry.seq < head.next_seq:
                p.error = EntryRejected(RejectReason.SEQ_REUSED, f"seq {entry.seq} is certified already")
                self._finish(p)
            elif entry.prev_hash in self._dropped:
                self._dropped.add(entry_hash(p.entry))
                p.error = BatchRejected("an earlier entry of this chain was refused by the committee")
                self._finish(p)
            elif entry.seq == want and entry.prev_hash == link and len(batch) < self.config.max_batch:
                batch.append(p)
                expect[entry.account] = (entry.seq + 1, entry_hash(p.entry))
            else:
                rest.append(p)
        return batch, rest

    async def _certify_batch(self, batch: list[_Pending]) -> bool:
        """One round of votes on ``batch`` (see ``protocol.RoundResult``): store, apply and spread
        the certified prefix, forget what a quorum refused, keep the rest in doubt. The entries are
        kept durably first, so after a crash they are offered again as they were. Returns whether
        anything was decided."""
        entries = [p.entry for p in batch]
        await self.store.save_proposals(entries)
        result, certified = await self._vote_round(entries)
        decided = False
        if certified is not None:
            done = batch[:result.certified]
            try:
                await self.receive_certified(certified, verified=True)   # durable before any answer
            except LedgerError as exc:
                for p in done:
                    p.error = exc
                    self._finish(p)
            else:
                for p in done:
                    self._forget_in_doubt(p.entry)
                confirmations = await self._spread(certified)
                self._nursery.start_soon(self._answer, done, certified.certificate, confirmations)
            decided = True
        rest = batch[result.certified:]
        refused_from = None if result.refused_from is None else result.refused_from - result.certified
        adopted = await self._adopt(rest, result.adopt)
        if adopted is not None:
            refused_from = adopted if refused_from is None else min(refused_from, adopted)
        for index, p in enumerate(rest):
            account = p.entry.body.account
            if refused_from is not None and index >= refused_from:
                if index == refused_from:
                    await self.store.drop_proposals(account, p.entry.body.seq)
                self._dropped.add(entry_hash(p.entry))
                self._forget_in_doubt(p.entry)
                p.error = BatchRejected(_describe(result.rejections), dict(result.rejections))
                decided = True
            else:
                self._in_doubt.setdefault(account, {})[p.entry.body.seq] = p.entry
                rounds = self._doubt_rounds[entry_hash(p.entry)] = self._doubt_rounds.get(entry_hash(p.entry), 0) + 1
                if index == 0 and rounds in (5, 20, 100):
                    log.warning("entry %s#%d (%s) still undecided after %d rounds: %s; votes by prefix %s",
                                account.hex()[:8], p.entry.body.seq, p.entry.body.kind, rounds,
                                _describe_waiting(result.rejections), result.voted_sizes)
                p.error = EntryInDoubt("no quorum of votes yet (" + _describe_waiting(result.rejections)
                                       + "); it will be proposed again", dict(result.rejections))
            self._tips[account] = self._settled_tip(account) if refused_from is not None else (
                self._tips.get(account) or self._settled_tip(account))
            self._finish(p)
        for validator in result.behind:      # it holds certified entries we lack: catch up
            self._nursery.start_soon(self._sync_quietly, validator)
        return decided

    async def _vote_round(self, entries: list[Signed[Entry]]) -> tuple[RoundResult, CertifiedEntries | None]:
        """Ask every validator; if a quorum voted for different prefixes, ask again for the longest
        prefix they share (validators vote again for what they voted for, without judging it again)."""
        collector = await self._collect(entries)
        if collector.outcome is not None:
            return collector.result(), collector.certified_entries()
        prefix = collector.certifiable_prefix()
        if prefix:
            again = await self._collect(entries[:prefix])
            if again.outcome is not None:
                return collector.result(again.outcome.certificate, prefix), again.certified_entries()
        return collector.result(), None

    async def _collect(self, entries: list[Signed[Entry]]) -> VoteCollector:
        collector = VoteCollector(self.committee, next(self._request_ids), [e.encoded for e in entries])
        with trio.move_on_after(self.config.vote_timeout_s):
            async with trio.open_nursery() as nursery:
                for validator in self.committee.validators:
                    nursery.start_soon(self._ask_vote, validator, collector, nursery.cancel_scope)
        return collector

    async def _adopt(self, rest: list[_Pending], offered: Sequence[bytes]) -> int | None:
        """Take back an entry of ours that a validator voted for at the seq of one we offer now (we
        lost it: a new data dir, an old backup): it is offered instead, and ours from that seq on
        are given up. Returns the index in ``rest`` from which ours are given up, if any."""
        places = {(p.entry.body.account, p.entry.body.seq): i for i, p in enumerate(rest)}
        first: int | None = None
        for data in offered:
            try:
                theirs = decode_signed(data, Entry)
            except WireError:
                continue
            index = places.get((theirs.body.account, theirs.body.seq))
            if index is None or theirs.signer != self.me or entry_hash(theirs) == entry_hash(rest[index].entry):
                continue
            await self.store.drop_proposals(self.me, theirs.body.seq)
            await self.store.save_proposals([theirs])
            self._in_doubt.setdefault(self.me, {})[theirs.body.seq] = theirs
            first = index if first is None else min(first, index)
        return first

    def _forget_in_doubt(self, entry: Signed[Entry]) -> None:
        self._doubt_rounds.pop(entry_hash(entry), None)
        held = self._in_doubt.get(entry.body.account)
        if held is not None and entry.body.seq in held and entry_hash(held[entry.body.seq]) == entry_hash(entry):
            del held[entry.body.seq]
            if not held:
                del self._in_doubt[entry.body.account]

    def _settled_tip(self, account: bytes) -> ChainHead:
        """Where the next entry of ``account`` goes: on the certified head, and on top of the
        entries that continue it and are still on their way — in doubt (offered again first),
        queued or being voted on — never past one given up. Building below one of them would
        make a second entry at its seq."""
        tip = self.state.head(account)
        on_way = {(e.body.seq, e.body.prev_hash): e for e in self._in_doubt.get(account, {}).values()}
        for p in self._queued_of.get(account, {}).values():
            if entry_hash(p.entry) not in self._dropped:
                on_way.setdefault((p.entry.body.seq, p.entry.body.prev_hash), p.entry)
        while (entry := on_way.get((tip.next_seq, tip.last_hash))) is not None:
            tip = ChainHead(tip.next_seq + 1, entry_hash(entry), entry.body.time_ms)
        return tip

    def _repropose_in_doubt(self) -> None:
        """Queue again every entry in doubt that is not certified yet."""
        for account, entries in list(self._in_doubt.items()):
            head = self.state.head(account).next_seq
            live = {seq: e for seq, e in entries.items() if seq >= head}
            if live:
                self._in_doubt[account] = live
                for seq in sorted(live):
                    self._enqueue(live[seq])
            else:
                del self._in_doubt[account]

    async def _answer(self, batch: list[_Pending], certificate: Certificate,
                      confirmations: list[tuple[_ValidatorLink, trio.Event]]) -> None:
        """Answer the submitters once a quorum of validators has applied the batch (so entries
        that depend on it find validators able to judge them), or after the vote timeout."""
        needed = self.committee.quorum - (1 if self.is_validator else 0)
        confirmed = 0
        enough = trio.Event()

        async def wait_one(link: _ValidatorLink, event: trio.Event) -> None:
            nonlocal confirmed
            await event.wait()
            if not link.broken:
                confirmed += 1
                if confirmed >= needed:
                    enough.set()

        if needed > 0:
            with trio.move_on_after(self.config.vote_timeout_s):
                async with trio.open_nursery() as nursery:
                    for link, event in confirmations:
                        nursery.start_soon(wait_one, link, event)
                    await enough.wait()
                    nursery.cancel_scope.cancel()
        for p in batch:
            p.certificate = certificate
            self._finish(p)

    async def _ask_vote(self, validator: bytes, collector: VoteCollector, scope: trio.CancelScope) -> None:
        try:
            if validator == self.me:
                reply = await self.handle_vote_request(collector.request, self.me)
            else:
                link = await self._link(validator)
                reply = await link.request_vote(collector.request)
            collector.receive_reply(validator, reply)
            if collector.decided():
                scope.cancel()
        except (NetError, WireError, PeerMisbehaved):
            link = self._links.pop(validator, None)   # a broken or lying validator: reopen next time
            if link is not None:
                await link.aclose()

    async def _link(self, validator: bytes) -> _ValidatorLink:
        link = self._links.get(validator)
        if link is None or link.broken:
            stream = await self.transport.open_stream(validator, VOTE_PROTOCOL, max_frame_bytes=MAX_FRAME_BYTES)
            link = self._links[validator] = _ValidatorLink(stream)
            self._nursery.start_soon(link.read_replies)
        return link

    async def _spread(self, batch: CertifiedEntries) -> list[tuple[_ValidatorLink, trio.Event]]:
        """Confirm a certified batch to the validators we have links to (first: the submitters
        wait for them) and gossip it to everyone (in the background); returns the events that fire
        when each validator has applied it."""
        confirmations = []
        for validator, link in list(self._links.items()):
            try:
                confirmations.append((link, await link.confirm(batch)))
            except NetError:
                self._links.pop(validator, None)
        self._nursery.start_soon(self._gossip, batch)
        return confirmations

    async def _gossip(self, batch: CertifiedEntries) -> None:
        for part in split_for_gossip(batch, GOSSIP_MAX_BYTES):
            try:
                await self.transport.publish(ledger_topic(self.rules.zone), encode_certified(part))
            except NetError:
                pass  # gossip is best effort: anti-entropy sync repairs what it misses

    # --- validating ---------------------------------------------------------------------------

    async def handle_vote_request(self, request: VoteRequest, peer: bytes | None = None) -> VoteReply:
        """The validator's answer: a signed vote over the longest prefix it accepts, persisted
        before it is returned, and why the next entry got none (signed, when that is final).

        Requests are judged one at a time against the records of every vote decided so far (so two
        conflicting requests can never both pass the never-vote-twice check), but the records are
        made durable by **group commit**: every request decided while a commit is running joins
        the next one, and each reply waits for the commit that holds its records. One slow disk
        write no longer queues every proposer of the zone behind it."""
        if not self.is_validator:
            return VoteReply(request.request_id, b"", ())
        async with self._vote_lock:     # no await inside: decisions and records stay in step
            decision = decide_vote(self.state, self._voted, request.entries, self.rules, self.clock())
            by_hash = {entry_hash(e): e for e in decision.entries}
            for key, h in decision.new_records:
                self._voted[key] = h
                voted = by_hash[h].body
                self._voted_at[key] = (voted.account, voted.seq)
        if decision.new_records:
            await self._votes_journal.persist(decision.new_records, by_hash)
        self._remember(decision.entries)
        vote = make_vote(self.committee, self._signer, decision.entry_hashes).encoded if decision.accepted else b""
        final = decision.final_rejection
        refusal = (make_refusal(self.committee, self._signer, decision.refused_hash, final.reason).encoded
                   if final is not None and decision.refused_hash else b"")
        voted_entry = (await self.store.voted_entry(decision.already_voted_key) or b""
                       if decision.already_voted_key else b"")
        if peer is not None and peer != self.me and any(
                not r.final and r.reason in _DEPENDENCY_REASONS for r in decision.rejections):
            self._fetch_from(peer)   # the proposer holds what this validator waits for
        return VoteReply(request.request_id, vote, decision.rejections, refusal, voted_entry)

    async def handle_expiry_request(self, request: ExpiryRequest) -> ExpiryReply:
        """The validator's answer to a buyer asking it to promise never to vote for a consumer of
        a lock (``committee.decide_expiry``): the signed ``LockExpiry``, recorded durably at the
        lock's fate key before it is sent, or why not."""
        if not self.is_validator:
            return ExpiryReply(request.request_id, b"", "not a validator of this zone", True)
        async with self._vote_lock:     # no await inside: decided against every vote recorded so far
            decision = decide_expiry(self.state, self._voted, request.take_id, self.rules, self.clock())
            if decision.record is not None:
                key, mark = decision.record
                self._voted[key] = mark
                self._voted_at[key] = (b"", -1)      # kept until the lock is gone (never by seq)
        if not decision.promised:
            return ExpiryReply(request.request_id, b"", decision.reason, decision.final)
        if decision.record is not None:
            await self._votes_journal.persist([decision.record], {})
        expiry = sign(LockExpiry(self.me, self.committee.zone, self.committee.epoch, request.take_id), self._signer)
        return ExpiryReply(request.request_id, expiry.encoded)

    async def collect_expiries(self, take_id: bytes) -> tuple[list[bytes], dict[bytes, str]]:
        """Ask every validator for its ``LockExpiry`` of lock ``take_id`` (within the vote
        timeout); returns the promises given and, per validator that gave none, why."""
        request = ExpiryRequest(next(self._request_ids), take_id)
        promises: list[bytes] = []
        reasons: dict[bytes, str] = {}
        answered: set[bytes] = set()

        async def ask(validator: bytes) -> None:
            try:
                if validator == self.me:
                    reply = await self.handle_expiry_request(request)
                else:
                    reply = await (await self._link(validator)).request_expiry(request)
            except (NetError, WireError, PeerMisbehaved) as exc:
                reasons[validator] = f"unreachable: {exc}"
                link = self._links.pop(validator, None)
                if link is not None:
                    await link.aclose()
                return
            answered.add(validator)
            if reply.expiry and expiry_signers([reply.expiry], take_id, self.rules) == {validator}:
                promises.append(reply.expiry)
            else:
                reasons[validator] = reply.reason or "answered no valid promise"

        with trio.move_on_after(self.config.vote_timeout_s):
            async with trio.open_nursery() as nursery:
                for validator in self.committee.validators:
                    nursery.start_soon(ask, validator)
        for validator in self.committee.validators:
            if validator not in answered and validator not in reasons:
                reasons[validator] = "no answer in time"
        return promises, reasons

    async def _serve_votes(self, stream: FramedStream) -> None:
        while True:
            try:
                frame = decode_frame(await stream.receive_frame())
            except WireError:
                return   # a peer that speaks garbage loses its stream
            if isinstance(frame, VoteRequest):
                await stream.send_frame(encode_frame(await self.handle_vote_request(frame, stream.peer)))
            elif isinstance(frame, ExpiryRequest):
                await stream.send_frame(encode_frame(await self.handle_expiry_request(frame)))
            elif isinstance(frame, Confirm):
                try:
                    await self.receive_certified(frame.batch)
                except LedgerError:
                    return
                await stream.send_frame(encode_frame(Confirmed(frame.batch.certificate.batch_root)))
            else:
                return

    def _fetch_from(self, peer: bytes) -> None:
        """Pull from ``peer`` in the background, one pull per peer at a time."""
        if peer not in self._fetching and self._nursery is not None:
            self._fetching.add(peer)
            self._nursery.start_soon(self._sync_quietly, peer)

    async def _sync_quietly(self, peer: bytes) -> None:
        try:
            await self.sync_with(peer)
        except (NetError, LedgerError, WireError):
            pass   # the next anti-entropy round tries again
        finally:
            self._fetching.discard(peer)

    async def _prune_votes(self) -> None:
        """Forget vote records of entries certified here: the certified state enforces them now."""
        stale = [k for k, (account, seq) in self._voted_at.items()
                 if 0 <= seq < self.state.head(account).next_seq]      # seq −1: an expiry promise
        if stale:
            await self.store.prune_votes()
            for key in stale:
                self._voted.pop(key, None)
                self._voted_at.pop(key, None)

    # --- replicating --------------------------------------------------------------------------

    async def receive_certified(self, batch: CertifiedEntries, *, verified: bool = False) -> int:
        """Verify, store and apply a certified batch; returns how many entries were new."""
        root = batch.certificate.batch_root
        while root in self._in_flight:          # the same batch from gossip and confirm at once
            await self._in_flight[root].wait()
        if root in self._complete_roots:
            return 0
        if verified:
            self._trusted_roots.add(root)
        checked = verify_batch(self.committee, batch, self._trusted_roots, self._decoded)
        return await self._receive_checked([(checked, not batch.leaves)])

    async def _receive_checked(self, group: Sequence[tuple[VerifiedBatch, bool]]) -> int:
        """Store (one transaction) and apply batches checked against their certificates; the flag
        says the batch came whole. A batch whose root another task is storing waits for it."""
        pending = list(group)
        while True:
            pending = [(c, whole) for c, whole in pending if c.certificate.batch_root not in self._complete_roots]
            busy = next((self._in_flight[c.certificate.batch_root] for c, _ in pending
                         if c.certificate.batch_root in self._in_flight), None)
            if busy is None:
                break
            await busy.wait()
        if not pending:
            return 0
        events = {c.certificate.batch_root: trio.Event() for c, _ in pending}
        self._in_flight.update(events)
        try:
            added = await self._store_and_apply([c for c, _ in pending])
            self._complete_roots.update(c.certificate.batch_root for c, whole in pending if whole)
        finally:
            for root, event in events.items():
                del self._in_flight[root]
                event.set()
        return added

    async def _store_and_apply(self, batches: Sequence[VerifiedBatch]) -> int:
        fresh = self._unknown(batches)
        if not fresh:
            return 0
        await self.store.add_certified([(b.certificate, b.leaves, b.entries) for b in fresh])
        # Other tasks may have stored and applied some of these while we waited for the disk.
        added = 0
        for b in self._unknown(fresh):
            for s in b.entries:
                self._waiting[(s.body.account, s.body.seq)] = s
                added += 1
        if apply_ready(self.state, self._waiting, self.rules):
            async with self._applied:
                self._applied.notify_all()
        return added

    def _unknown(self, batches: Sequence[VerifiedBatch]) -> list[VerifiedBatch]:
        """The parts of ``batches`` neither applied nor waiting yet."""
        out: list[VerifiedBatch] = []
        for b in batches:
            new = tuple(s for s in b.entries if s.body.seq >= self.state.head(s.body.account).next_seq
                        and (s.body.account, s.body.seq) not in self._waiting)
            if new:
                out.append(VerifiedBatch(b.certificate, b.leaves, new))
        return out

    def _gossip_validator(self, sender: bytes, data: bytes) -> ValidationResult:
        try:
            batch = decode_certified(data)
        except WireError:
            return ValidationResult.REJECT
        # A batch we already have is still ACCEPTed: we must relay it to peers that lack it. Its
        # entries need no decoding then (the consumer skips it), only the inclusion check.
        try:
            if batch.certificate.batch_root in self._complete_roots:
                check_certified_inclusion(self.committee, batch, self._trusted_roots)
                return ValidationResult.ACCEPT
            checked = verify_batch(self.committee, batch, self._trusted_roots, self._decoded)
        except CertificateInvalid:
            return ValidationResult.REJECT
        if len(self._gossip_checked) > 1024:
            self._gossip_checked.clear()   # never consumed (unsubscribed): do not grow without bound
        self._gossip_checked[hash_bytes(data)] = (checked, not batch.leaves)
        return ValidationResult.ACCEPT

    async def _consume_gossip(self, subscription: Any) -> None:
        """Pass each gossiped batch, checked (by the validator, as a rule), on to the storer."""
        async for message in subscription:
            validated = self._gossip_checked.pop(hash_bytes(message.data), None)
            if validated is None:
                try:
                    batch = decode_certified(message.data)
                    if batch.certificate.batch_root in self._complete_roots:
                        continue
                    validated = (verify_batch(self.committee, batch, self._trusted_roots, self._decoded),
                                 not batch.leaves)
                except (WireError, LedgerError):
                    continue   # already judged by the validator
            self._gossip_ready_send.send_nowait(validated)

    async def _store_gossip(self) -> None:
        """Store gossiped batches in groups: what arrived while the last group was being written
        goes to disk in one transaction, so under load one commit (and one crossing to the store's
        thread) serves many batches, and a node that keeps up stores each batch at once."""
        async for first in self._gossip_ready_receive:
            group = [first]
            while len(group) < GOSSIP_STORE_GROUP:
                try:
                    group.append(self._gossip_ready_receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                await self._receive_checked(group)
            except LedgerError:
                for one in group:   # an inconsistent batch must not keep its neighbours out
                    try:
                        await self._receive_checked([one])
                    except LedgerError:
                        continue

    async def sync_with(self, peer: bytes) -> int:
        """Pull every certified entry ``peer`` has and we lack; returns how many were new."""
        # Only the contiguous certified prefix counts: entries waiting beyond a gap (e.g. recent
        # gossip) do not, or the gap would never be asked for.
        heads = {a: h.next_seq for a, h in self.state.heads.items()}
        session = SyncSession(self.committee, heads, self.config.sync_max_entries, self._trusted_roots)
        stream = await self.transport.open_stream(peer, SYNC_PROTOCOL, max_frame_bytes=MAX_FRAME_BYTES)
        added = 0
        try:
            while not session.done:
                await stream.send_frame(encode_frame(session.next_request()))
                reply = decode_frame(await stream.receive_frame())
                if not isinstance(reply, SyncReply):
                    raise PeerMisbehaved("expected a sync reply")
                added += await self._store_and_apply(session.receive_reply(reply))
        finally:
            await stream.aclose()
        return added

    async def sync_all(self) -> int:
        """Sync with every connected peer that speaks ``/p2pgrid/sync/1``, one after the other."""
        added = 0
        for peer in sorted(peers_supporting(self.transport, SYNC_PROTOCOL)):
            try:
                added += await self.sync_with(peer)
            except (NetError, LedgerError):
                continue
        return added

    async def _serve_sync(self, stream: FramedStream) -> None:
        while True:
            try:
                request = decode_frame(await stream.receive_frame())
            except WireError:
                return
            if not isinstance(request, SyncRequest):
                return
            heads = {h.account: h.next_seq for h in request.heads}
            limit = min(request.max_entries, self.config.sync_max_entries)
            batches, more = await self.store.missing_for(heads, limit)
            reply = SyncReply(request.request_id, tuple(b.as_message() for b in batches), more)
            await stream.send_frame(encode_frame(reply))

    # --- running ------------------------------------------------------------------------------

    async def _load(self) -> None:
        await self.store.save_zone(self.rules, self.committee)
        self.state, self._waiting = await self.store.load_state(self.rules)
        await self.store.prune_votes()
        votes = await self.store.votes()
        self._voted = {key: h for key, (h, _, _) in votes.items()}
        self._voted_at = {key: (account, seq) for key, (_, account, seq) in votes.items()}
        # What this node proposed and never saw decided is in doubt: it is offered again as it
        # was, and nothing else is ever signed at its seq.
        for entry in await self.store.proposals(self.me):
            self._in_doubt.setdefault(self.me, {})[entry.body.seq] = entry
        self._tips.pop(self.me, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._load()
        subscription = await self.transport.subscribe(ledger_topic(self.rules.zone), self._gossip_validator)
        self.transport.set_stream_handler(SYNC_PROTOCOL, partial(self._guarded, serve=self._serve_sync),
                                          max_frame_bytes=MAX_FRAME_BYTES)
        if self.is_validator:
            self.transport.set_stream_handler(VOTE_PROTOCOL, partial(self._guarded, serve=self._serve_votes),
                                              max_frame_bytes=MAX_FRAME_BYTES)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._batcher)
                nursery.start_soon(self._votes_journal.run)
                self._repropose_in_doubt()
                nursery.start_soon(self._consume_gossip, subscription)
                nursery.start_soon(self._store_gossip)
                if self.config.sync_interval_s > 0:
                    nursery.start_soon(self._anti_entropy)
                task_status.started()
        finally:
            # Leave the topic, and stop serving streams: they run in the transport's tasks, which
            # outlive this service, and must not touch a store about to close. A restarted service
            # on the same transport then takes over.
            self._stopped = True
            for scope in list(self._handler_scopes):
                scope.cancel()
            with trio.CancelScope(shield=True):
                await subscription.aclose()

    async def _guarded(self, stream: FramedStream, *, serve: Callable[[FramedStream], Any]) -> None:
        """Serve an incoming stream only while this service runs (see ``run``)."""
        if self._stopped:
            await stream.aclose()
            return
        with trio.CancelScope() as scope:
            self._handler_scopes.add(scope)
            try:
                await serve(stream)
            finally:
                self._handler_scopes.discard(scope)

    async def _anti_entropy(self) -> None:
        """Keep pulling: gossip is best effort, sync makes it complete. Each peer that speaks
        ``/p2pgrid/sync/1`` is pulled from as soon as it is connected (and identified), then one
        peer in turn per ``sync_interval_s`` (``net.peer_schedule``); other peers are never asked."""
        interval = self.config.sync_interval_s
        schedule = PeerSchedule(interval)
        pruned_at = trio.current_time()
        while True:
            for peer in schedule.due(peers_supporting(self.transport, SYNC_PROTOCOL), trio.current_time()):
                try:
                    await self.sync_with(peer)
                except (NetError, LedgerError):
                    continue   # that peer is gone or misbehaved; its next turn tries again
            if trio.current_time() - pruned_at >= interval:
                pruned_at = trio.current_time()
                await self._prune_votes()
            await trio.sleep(min(SYNC_PEERS_POLL_S, interval))


@asynccontextmanager
async def open_ledger_service(key: NodeKey, config: LedgerConfig, store: LedgerStore, transport: Transport,
                              clock: Callable[[], int] = wall_clock_ms) -> AsyncIterator[LedgerService]:
    """Run a ``LedgerService`` for the duration of the block (loaded from ``store`` first)."""
    service = LedgerService(key, config, store, transport, clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()


def split_for_gossip(batch: CertifiedEntries, max_bytes: int) -> list[CertifiedEntries]:
    """A batch as one gossip message, or several (each with all leaves) if it is too large."""
    if len(encode_certified(batch)) <= max_bytes:
        return [batch]
    leaves = batch.leaves or tuple(hash_bytes(e) for e in batch.entries)
    room = max(1, max_bytes - 32 * len(leaves) - 1024)
    parts: list[CertifiedEntries] = []
    current: list[bytes] = []
    size = 0
    for data in batch.entries:
        if current and size + len(data) > room:
            parts.append(CertifiedEntries(batch.certificate, leaves, tuple(current)))
            current, size = [], 0
        current.append(data)
        size += len(data) + 3
    if current:
        parts.append(CertifiedEntries(batch.certificate, leaves, tuple(current)))
    return parts


def _describe(rejections: dict[bytes, tuple[Any, ...]] | Any) -> str:
    reasons = sorted({r.reason for rs in rejections.values() for r in rs})
    return "the committee refused the entry: " + ", ".join(reasons or ["no reason given"])


def _describe_waiting(rejections: dict[bytes, tuple[Any, ...]] | Any) -> str:
    reasons = sorted({r.reason for rs in rejections.values() for r in rs})
    return "waiting: " + ", ".join(reasons) if reasons else "validators did not answer in time"


__all__ = ["BatchRejected", "EntryInDoubt", "LedgerConfig", "LedgerService", "SYNC_PROTOCOL", "VOTE_PROTOCOL", "ledger_topic",
           "open_ledger_service", "split_for_gossip", "EntryRejected", "RejectReason"]
