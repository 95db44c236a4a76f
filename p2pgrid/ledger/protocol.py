"""The vote and sync protocols without I/O (after h11): frames in, events and frames out (pure).

``/p2pgrid/vote/1`` — one persistent stream from a proposer to each validator::

    proposer → validator   VoteRequest(request_id, entries)      please vote for these entries
    validator → proposer   VoteReply(request_id, vote over the longest accepted prefix,
                                     why the next entry was not accepted, signed refusal if final,
                                     the entry voted at its seq if ``already_voted``)
    proposer → validator   Confirm(certified batch)               it is certified: store it
    validator → proposer   Confirmed(batch_root)                  stored and applied here

A validator handles frames of one stream in order, so a ``Confirm`` is applied before the next
``VoteRequest`` on that stream is judged (the next batch may extend the confirmed one).
The proposer's ``submit`` returns once a quorum of validators has confirmed, so an entry that
depends on it (a transfer of the credits just received, a fill of the lock just certified) finds
at least a quorum of validators able to judge it. ``VoteCollector`` is the proposer's side for one
request: it checks each reply (vote signed by a member over one of *our* prefix roots, refusals
signed by the member) and says what is certified, what is refused for good (a quorum of signed
refusals) and what is still in doubt. When a quorum voted for different prefixes, the proposer
asks again for the longest prefix they share (validators vote again for entries they voted for
without judging them again), so one entry that waits never holds up the ones before it.

``/p2pgrid/sync/1`` — anti-entropy by account heads, one persistent stream::

    client → server   SyncRequest(request_id, my heads, max_entries)
    server → client   SyncReply(request_id, certified entries I lack, more)

repeated until ``more`` is false. ``SyncSession`` is the client's side: it checks every
certificate (once per batch root) and Merkle inclusion, advances its view of the heads, and
says what request to send next. The server side is a store query (``store.missing_for``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from p2pgrid.errors import LedgerError, WireError
from p2pgrid.ledger.committee import (
    CertificateInvalid, Committee, assemble_certificate, batch_root, verify_certified_entries,
)
from p2pgrid.ledger.messages import (
    AccountHead, Certificate, CertifiedEntries, Entry, Refusal, Rejection, SyncReply, SyncRequest, Vote,
    VoteReply, VoteRequest, hash_bytes,
)
from p2pgrid.wire import Signed, decode_signed


class PeerMisbehaved(LedgerError):
    """A peer sent a frame that breaks the protocol (bad vote, bad certificate, wrong id)."""


# --- votes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certified:
    """A quorum voted for the first ``size`` entries of the request: they are final."""

    certificate: Certificate
    size: int


@dataclass(frozen=True)
class RoundResult:
    """What one round of votes on a request decided, per entry of it:

    * the first ``certified`` entries are final (``certificate`` covers exactly them);
    * from ``refused_from`` on (if not None) the entries can never be certified: at least a quorum
      of validators signed a ``Refusal`` of entry ``refused_from`` (and the rest extend it);
    * the entries between are still in doubt: asked again later.
    ``adopt`` is an entry a validator voted for at the seq of an undecided entry (with
    ``already_voted``): the owner's own signed entry, which it must propose instead.
    """

    certificate: Certificate | None
    certified: int
    refused_from: int | None
    rejections: Mapping[bytes, tuple[Rejection, ...]]
    adopt: tuple[bytes, ...] = ()
    behind: tuple[bytes, ...] = ()        # validators that hold a certified entry at a seq we offer
    voted_sizes: tuple[int, ...] = ()     # the prefix each validator that answered voted for (0: none)


class VoteCollector:
    """Proposer side of one request on ``/p2pgrid/vote/1``: votes over prefixes, refusals."""

    def __init__(self, committee: Committee, request_id: int, entries: Sequence[bytes]) -> None:
        self.committee = committee
        self.request = VoteRequest(request_id, tuple(entries))
        self.entry_hashes = tuple(hash_bytes(e) for e in entries)
        self.root = batch_root(self.entry_hashes)
        self._prefix_roots: dict[int, bytes] = {len(self.entry_hashes): self.root}   # size → root, as votes come
        self._votes: dict[bytes, Signed[Vote]] = {}        # validator → its vote (over some prefix)
        self._rejections: dict[bytes, tuple[Rejection, ...]] = {}
        self._refusals: dict[int, dict[bytes, Signed[Refusal]]] = {}   # entry index → validator → refusal
        self._adopt: dict[bytes, None] = {}
        self._behind: set[bytes] = set()
        self._answered: set[bytes] = set()
        self.outcome: Certified | None = None

    def voted_size(self, validator: bytes) -> int:
        vote = self._votes.get(validator)
        return 0 if vote is None else vote.body.batch_size

    def receive_reply(self, validator: bytes, reply: VoteReply) -> Certified | None:
        """Take one validator's reply; returns the outcome once the whole request is certified."""
        if reply.request_id != self.request.request_id:
            return self.outcome
        if not self.committee.is_member(validator):
            raise PeerMisbehaved("a reply from outside the committee")
        self._answered.add(validator)
        if reply.vote:
            try:
                vote = decode_signed(reply.vote, Vote)
            except WireError as exc:
                raise PeerMisbehaved(f"unreadable vote: {exc}") from None
            body = vote.body
            if vote.signer != validator or not 0 < body.batch_size <= len(self.entry_hashes) \
                    or self._prefix_root(body.batch_size) != body.batch_root:
                raise PeerMisbehaved("a vote by someone else or for another batch")
            if body.batch_size >= self.voted_size(validator):
                self._votes[validator] = vote
        if reply.rejections:
            self._rejections[validator] = reply.rejections
            for rejection in reply.rejections:
                if rejection.reason == "seq_reused":
                    self._behind.add(validator)
        if reply.refusal:
            self._take_refusal(validator, reply.refusal)
        if reply.voted_entry:
            self._adopt[reply.voted_entry] = None
        if self.outcome is None:
            full = [v for v in self._votes.values() if v.body.batch_size == len(self.entry_hashes)]
            if len(full) >= self.committee.quorum:
                cert = assemble_certificate(self.committee, full)
                if cert is not None:
                    self.outcome = Certified(cert, len(self.entry_hashes))
        return self.outcome

    def _prefix_root(self, size: int) -> bytes:
        root = self._prefix_roots.get(size)
        if root is None:
            root = self._prefix_roots[size] = batch_root(self.entry_hashes[:size])
        return root

    def _take_refusal(self, validator: bytes, data: bytes) -> None:
        try:
            refusal = decode_signed(data, Refusal)
        except WireError as exc:
            raise PeerMisbehaved(f"unreadable refusal: {exc}") from None
        body = refusal.body
        if refusal.signer != validator or (body.zone, body.epoch) != (self.committee.zone, self.committee.epoch):
            raise PeerMisbehaved("a refusal by someone else or for another committee")
        try:
            index = self.entry_hashes.index(body.entry_hash)
        except ValueError:
            raise PeerMisbehaved("a refusal of an entry not in the request") from None
        self._refusals.setdefault(index, {})[validator] = refusal

    @property
    def all_answered(self) -> bool:
        return self._answered >= set(self.committee.validators)

    def decided(self) -> bool:
        """Nothing more to wait for: certified whole, or every validator answered."""
        return self.outcome is not None or self.all_answered

    def certifiable_prefix(self) -> int:
        """The longest prefix a quorum voted for (each vote over it or over a longer prefix)."""
        sizes = sorted((self.voted_size(v) for v in self._votes), reverse=True)
        return sizes[self.committee.quorum - 1] if len(sizes) >= self.committee.quorum else 0

    def result(self, certificate: Certificate | None = None, certified: int = 0) -> RoundResult:
        """The round's result (see ``RoundResult``), with the certificate of the first ``certified``
        entries if one was assembled (this round or the follow-up round on that prefix)."""
        if certificate is None and self.outcome is not None:
            certificate, certified = self.outcome.certificate, self.outcome.size
        refused = sorted(i for i, by in self._refusals.items() if len(by) >= self.committee.quorum and i >= certified)
        return RoundResult(certificate, certified, refused[0] if refused else None, dict(self._rejections),
                           tuple(self._adopt), tuple(sorted(self._behind)),
                           tuple(self.voted_size(v) for v in sorted(self._answered)))

    def certified_entries(self) -> CertifiedEntries:
        if self.outcome is None:
            raise LedgerError("the batch is not certified")
        return CertifiedEntries(self.outcome.certificate, (), self.request.entries[:self.outcome.size])


# --- sync ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifiedBatch:
    """Certified entries checked against their certificate: ready to store and apply."""

    certificate: Certificate
    leaves: tuple[bytes, ...]
    entries: tuple[Signed[Entry], ...]


def verify_batch(committee: Committee, batch: CertifiedEntries, trusted_roots: set[bytes],
                 known: Mapping[bytes, Signed[Entry]] | None = None) -> VerifiedBatch:
    """Check a certified batch (gossip, confirm or sync); raises ``CertificateInvalid``."""
    entries = verify_certified_entries(committee, batch, trusted_roots, known)
    leaves = batch.leaves or tuple(hash_bytes(s.encoded) for s in entries)
    return VerifiedBatch(batch.certificate, leaves, tuple(entries))


@dataclass
class SyncSession:
    """Client side of ``/p2pgrid/sync/1``: pull every certified entry the server has and we lack."""

    committee: Committee
    heads: dict[bytes, int]
    max_entries: int = 4096
    trusted_roots: set[bytes] = field(default_factory=set)
    request_id: int = 0
    done: bool = False
    received: int = 0

    def next_request(self) -> SyncRequest:
        self.request_id += 1
        return SyncRequest(self.request_id, tuple(AccountHead(a, n) for a, n in sorted(self.heads.items())),
                           self.max_entries)

    def receive_reply(self, reply: SyncReply) -> list[VerifiedBatch]:
        """Verify a reply; returns its batches. Raises ``PeerMisbehaved`` on anything wrong."""
        if reply.request_id != self.request_id:
            raise PeerMisbehaved(f"sync reply {reply.request_id} to request {self.request_id}")
        out: list[VerifiedBatch] = []
        progressed = False
        for batch in reply.batches:
            try:
                verified = verify_batch(self.committee, batch, self.trusted_roots)
            except CertificateInvalid as exc:
                raise PeerMisbehaved(f"sync sent an invalid certified batch: {exc}") from None
            for signed in verified.entries:
                account, seq = signed.body.account, signed.body.seq
                if seq >= self.heads.get(account, 0):
                    self.heads[account] = seq + 1
                    progressed = True
            self.received += len(verified.entries)
            out.append(verified)
        self.done = not reply.more or not progressed
        return out
