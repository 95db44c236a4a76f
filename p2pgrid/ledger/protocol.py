"""The vote and sync protocols without I/O (after h11): frames in, events and frames out (pure).

``/p2pgrid/vote/1`` — one persistent stream from a proposer to each validator::

    proposer → validator   VoteRequest(request_id, entries)      please vote for this batch
    validator → proposer   VoteReply(request_id, vote | rejections)
    proposer → validator   Confirm(certified batch)               it is certified: store it
    validator → proposer   Confirmed(batch_root)                  stored and applied here

A validator handles frames of one stream in order, so a ``Confirm`` is applied before the next
``VoteRequest`` on that stream is judged (the next batch may extend the confirmed one).
The proposer's ``submit`` returns once a quorum of validators has confirmed, so an entry that
depends on it (a transfer of the credits just received, a fill of the lock just certified) finds
at least a quorum of validators able to judge it. ``VoteCollector`` is the proposer's side for one batch: it checks each reply (vote signed by a
member, over *our* root) and says when a certificate is ready or can no longer be reached.

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
    AccountHead, Certificate, CertifiedEntries, Entry, Rejection, SyncReply, SyncRequest, Vote,
    VoteReply, VoteRequest, hash_bytes,
)
from p2pgrid.wire import Signed, decode_signed


class PeerMisbehaved(LedgerError):
    """A peer sent a frame that breaks the protocol (bad vote, bad certificate, wrong id)."""


# --- votes -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Certified:
    """Enough votes arrived: the batch is final."""

    certificate: Certificate


@dataclass(frozen=True)
class QuorumImpossible:
    """Too many validators rejected the batch for a quorum to form. ``rejections`` by validator."""

    rejections: Mapping[bytes, tuple[Rejection, ...]]


class VoteCollector:
    """Proposer side of one batch on ``/p2pgrid/vote/1``."""

    def __init__(self, committee: Committee, request_id: int, entries: Sequence[bytes]) -> None:
        self.committee = committee
        self.request = VoteRequest(request_id, tuple(entries))
        self.entry_hashes = tuple(hash_bytes(e) for e in entries)
        self.root = batch_root(self.entry_hashes)
        self._votes: dict[bytes, Signed[Vote]] = {}
        self._rejections: dict[bytes, tuple[Rejection, ...]] = {}
        self._sent: set[bytes] = set()
        self.outcome: Certified | QuorumImpossible | None = None

    def mark_sent(self, validator: bytes) -> None:
        """The request is on its way to ``validator``: from now on it may vote, heard or not."""
        self._sent.add(validator)

    def receive_reply(self, validator: bytes, reply: VoteReply) -> Certified | QuorumImpossible | None:
        """Take one validator's reply; returns the outcome once decided (then always the same).
        Replies after the outcome still count in ``votes_received``: a validator that voted for a
        batch that failed anyway is bound to it (see ``LedgerService``'s entries in doubt)."""
        if reply.request_id != self.request.request_id:
            return self.outcome
        if not self.committee.is_member(validator):
            raise PeerMisbehaved("a reply from outside the committee")
        if reply.vote:
            try:
                vote = decode_signed(reply.vote, Vote)
            except WireError as exc:
                raise PeerMisbehaved(f"unreadable vote: {exc}") from None
            body = vote.body
            if vote.signer != validator or body.batch_root != self.root or body.batch_size != len(self.entry_hashes):
                raise PeerMisbehaved("a vote by someone else or for another batch")
            self._votes[validator] = vote
        else:
            self._rejections[validator] = reply.rejections
        if self.outcome is not None:
            return self.outcome
        if len(self._votes) >= self.committee.quorum:
            cert = assemble_certificate(self.committee, self._votes.values())
            if cert is not None:
                self.outcome = Certified(cert)
        elif self.committee.n - len(self._rejections) < self.committee.quorum:
            self.outcome = QuorumImpossible(dict(self._rejections))
        return self.outcome

    @property
    def votes_received(self) -> int:
        """Validators that voted for the batch: once any did, its entries may yet be certified."""
        return len(self._votes)

    @property
    def may_have_votes(self) -> bool:
        """Whether some validator may be bound to this batch: one voted, or (no outcome reached)
        one was sent the request and has not answered — its vote may be on the way, or lost."""
        unanswered = self._sent - self._votes.keys() - self._rejections.keys()
        return bool(self._votes) or (self.outcome is None and bool(unanswered))

    def certified_entries(self) -> CertifiedEntries:
        if not isinstance(self.outcome, Certified):
            raise LedgerError("the batch is not certified")
        return CertifiedEntries(self.outcome.certificate, (), self.request.entries)


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
