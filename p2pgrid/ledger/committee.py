"""The zone committee: who votes, what a vote is worth, when votes make a certificate (pure).

A committee of ``n`` validators tolerates ``f = (n - 1) // 3`` faulty ones; ``quorum = n - f``
(``2f + 1`` when ``n = 3f + 1``). Any two quorums share at least ``f + 1`` validators, so at least
one honest validator, and an honest validator never votes for two different entries at one
conflict key — hence two certificates at one ``(account, seq)`` (or for two consumers of one
lock) are impossible while at most ``f`` validators are faulty.

**Voting rule** (``decide_vote``): a validator judges a request's entries in order on a scratch
copy of its certified state and votes for the **longest prefix** it accepts; for the first entry
it does not accept it says why (``Rejection``; the entries after it extend it and wait with it).
An entry is accepted if it has a valid owner signature, extends its account's head (the certified
head, or an earlier entry of the same request), passes ``chain.validate_entry`` (which reads no
clock), and for every conflict key it claims this validator has never voted for a *different*
entry. An entry identical to one voted before at its seq is voted again without being judged
again (a proposer whose replies were lost gets the same vote); a different one is refused
``already_voted`` with the entry that was voted, so an owner that lost its own proposal can adopt
it. The only clock check: an entry dated more than ``rules.clock_skew_ms`` after ``now_ms`` waits
(``not_yet``), it is never refused. Validity being a monotone function of the entry and its
certified past, an entry one honest validator votes for is voted by every honest validator once
it holds the same certified dependencies; so a *final* rejection is final at every honest
validator, and the validator signs it as a ``Refusal``. The caller must persist the new
conflict-key records durably *before* it sends the vote (``store.record_votes``), so a crash
cannot make it vote twice.

**Certificates.** A vote signs ``Vote(validator, zone, epoch, batch_root, batch_size)`` where
``batch_root`` is the Merkle root of the batch's entry hashes. A certificate collects ≥ quorum
signatures of distinct members; checking one costs one signature per member per batch, however
many entries it covers, plus hashing for Merkle inclusion. Signatures that verified are memoised
by exact (vote, signature) pair (``VerifiedVotes``), so a certificate seen again costs no
signature checks, while a forged signature is never taken from the memo.

**Expiry promises** (``decide_expiry``): a buyer whose seller never decided its lock asks for
``LockExpiry`` promises. A validator promises when it has voted for no consumer of the lock (its
record at ``chain.lock_fate_key``), the lock is not filled, and by its clock the lock's deadline
passed ``rules.lock_expiry_grace_ms`` ago; it records the promise at that same key, so it never
votes for a consumer afterwards, and promises again when asked again. The clock here decides
only *when* a promise is given, never whether an entry is valid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.errors import DecodeError, LedgerError, OversizeError
from p2pgrid.ledger import merkle
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, LedgerRules, LedgerState, LockStatus, RejectReason, apply_entry,
    conflict_keys, lock_fate_key, validate_entry, validate_signed_entry,
)
from p2pgrid.ledger.messages import (
    Certificate, CertifiedEntries, Entry, Refusal, Rejection, Vote, decode_certified_entry, hash_bytes,
)
from p2pgrid.wire import Signed, Signer, sign, signing_bytes, spec_of, to_plain, verify_signature


class CertificateInvalid(LedgerError):
    """A certificate (or certified batch) that does not prove what it claims."""


@dataclass(frozen=True)
class Committee:
    """The validators of one zone for one epoch."""

    zone: str
    epoch: int
    validators: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.validators or len(set(self.validators)) != len(self.validators):
            raise LedgerError("a committee lists one or more distinct validators")

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        return self.n - self.f

    def is_member(self, key: bytes) -> bool:
        return key in self.validators


def batch_root(entry_hashes: Sequence[bytes]) -> bytes:
    return merkle.compute_root(entry_hashes)


# --- voting ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class VoteDecision:
    """What a validator concluded about a request: the accepted prefix (``entry_hashes``, may be
    empty), the conflict-key records to persist before voting, and why the entry after the prefix
    was not accepted (``rejections``: none if the whole request was accepted)."""

    entry_hashes: tuple[bytes, ...]
    new_records: tuple[tuple[bytes, bytes], ...]     # (conflict key, entry hash) to persist first
    rejections: tuple[Rejection, ...]
    entries: tuple[Signed[Entry], ...] = ()          # the decoded, verified entries voted for
    refused_hash: bytes = b""                        # hash of the rejected entry, if it decoded
    already_voted_key: bytes = b""                   # the seq key voted for another entry, if so

    @property
    def accepted(self) -> bool:
        return bool(self.entry_hashes)

    @property
    def final_rejection(self) -> Rejection | None:
        return next((r for r in self.rejections if r.final), None)


def seq_key(entry: Entry) -> bytes:
    """The conflict key every entry claims: its place ``(account, seq)``."""
    return b"seq/" + entry.account + entry.seq.to_bytes(8, "big")


def decide_vote(state: LedgerState, voted: Mapping[bytes, bytes], entries: Sequence[bytes],
                rules: LedgerRules, now_ms: int) -> VoteDecision:
    """Apply the voting rule to a request of signed entry bytes (see module docstring)."""
    scratch = state.overlay()
    hashes: list[bytes] = []
    records: list[tuple[bytes, bytes]] = []
    decoded: list[Signed[Entry]] = []
    claimed: dict[bytes, bytes] = {}
    if not entries:
        return VoteDecision((), (), (Rejection(0, RejectReason.MALFORMED.value, "empty request", True),))
    for index, data in enumerate(entries):
        h = hash_bytes(data)
        try:
            signed = validate_signed_entry(data)
            entry = signed.body
            own = seq_key(entry)
            if voted.get(own) == h and scratch.head(entry.account).next_seq == entry.seq:
                # Voted before, as it is: vote again without judging again (lost replies recover).
                apply_entry(scratch, signed, rules)
            else:
                if entry.time_ms > now_ms + rules.clock_skew_ms:
                    raise EntryRejected(RejectReason.NOT_YET,
                                        f"dated {entry.time_ms - now_ms} ms after this validator's clock")
                body = validate_entry(scratch, signed, rules)
                for key in conflict_keys(entry, body):
                    earlier = claimed.get(key) or voted.get(key)
                    if earlier is not None and earlier != h:
                        return _stop(hashes, records, decoded, index, h, EntryRejected(
                            RejectReason.ALREADY_VOTED, "voted for another entry at this key"),
                            already_voted_key=key if key == own else b"")
                    if earlier is None:
                        records.append((key, h))
                    claimed[key] = h
                apply_entry(scratch, signed, rules, body)
        except EntryRejected as exc:
            return _stop(hashes, records, decoded, index, h, exc)
        except ChainInconsistent as exc:
            # Re-applying an entry voted before failed on this state: it waits for what it needs.
            return _stop(hashes, records, decoded, index, h,
                         EntryRejected(RejectReason.MISSING_DEPENDENCY, str(exc)))
        except Exception as exc:  # noqa: BLE001 — a kind's rule that breaks on some body must
            # not take the validator down with it (one bad entry would stop a whole committee):
            # the entry is refused, naming the failure, and the validator keeps serving.
            return _stop(hashes, records, decoded, index, h, EntryRejected(
                RejectReason.MALFORMED, f"a rule failed on this entry: {type(exc).__name__}: {exc}"))
        hashes.append(h)
        decoded.append(signed)
    return VoteDecision(tuple(hashes), tuple(records), (), tuple(decoded))


def _stop(hashes: list[bytes], records: list[tuple[bytes, bytes]], decoded: list[Signed[Entry]], index: int,
          refused: bytes, exc: EntryRejected, already_voted_key: bytes = b"") -> VoteDecision:
    """The decision when entry ``index`` is not accepted: the prefix before it, and why."""
    kept = {h for h in hashes}
    rejection = Rejection(index, exc.reason.value, exc.detail[:256], exc.is_final)
    return VoteDecision(tuple(hashes), tuple(r for r in records if r[1] in kept), (rejection,), tuple(decoded),
                        refused, already_voted_key)


def expiry_mark(take_id: bytes) -> bytes:
    """What a validator records at a lock's fate key when it promises the lock's expiry: no entry
    hash (it is the hash of a text no signed entry starts with)."""
    return hashlib.sha256(b"p2pgrid/lock-expiry-promise/" + take_id).digest()


@dataclass(frozen=True)
class ExpiryDecision:
    """``promised``: give the ``LockExpiry``; ``record``: the (fate key, mark) to persist first
    (None when promised before). Otherwise ``reason``, and ``final`` if it never will."""

    promised: bool
    record: tuple[bytes, bytes] | None = None
    reason: str = ""
    final: bool = False


def decide_expiry(state: LedgerState, voted: Mapping[bytes, bytes], take_id: bytes, rules: LedgerRules,
                  now_ms: int) -> ExpiryDecision:
    """Whether this validator promises never to vote for a consumer of lock ``take_id`` (see the
    module docstring)."""
    key, mark = lock_fate_key(take_id), expiry_mark(take_id)
    earlier = voted.get(key)
    if earlier == mark:
        return ExpiryDecision(True)                     # promised before: the same promise again
    record = state.locks.get(take_id)
    if record is None:
        return ExpiryDecision(False, reason=f"no certified lock {take_id.hex()} here (yet)")
    if record.status is LockStatus.FILLED:
        return ExpiryDecision(False, reason="the lock is filled", final=True)
    if earlier is not None:
        # Voted for a consumer not certified (here) yet: it may still be, or be given up by its owner.
        return ExpiryDecision(False, reason="voted for an entry consuming this lock")
    expires_ms = record.lock.deadline_ms + rules.lock_expiry_grace_ms
    if now_ms < expires_ms:
        return ExpiryDecision(False, reason=f"the lock's deadline passed less than the grace ago "
                                            f"({expires_ms - now_ms} ms to go by this validator's clock)")
    return ExpiryDecision(True, (key, mark))


def make_refusal(committee: Committee, key: Signer, entry_hash: bytes, reason: str) -> Signed[Refusal]:
    return sign(Refusal(key.public_key, committee.zone, committee.epoch, entry_hash, reason[:64]), key)


def make_vote(committee: Committee, key: Signer, entry_hashes: Sequence[bytes]) -> Signed[Vote]:
    return sign(Vote(key.public_key, committee.zone, committee.epoch, batch_root(entry_hashes),
                     len(entry_hashes)), key)


# --- certificates ----------------------------------------------------------------------------

def verify_vote_signature(vote: Vote, signature: bytes) -> bool:
    domain = spec_of(Vote).domain
    return verify_signature(vote.validator, signing_bytes(domain, vote.validator, to_plain(vote)), signature)


class VerifiedVotes:
    """A bounded memo of vote signatures that verified: exact ``(vote, signature)`` pairs.

    Checking a signature is a pure function of (public key, message, signature), so a pair that
    verified once verifies again; the memo saves the Ed25519 work when the same certificate is
    checked again — arriving by gossip, confirm and sync, or at each of the nodes of a simulation
    that share one process (there, every node checking every certificate would otherwise pay the
    signatures once per node on the same cores). It is keyed by the whole vote *and* the
    signature bytes, never by (validator, batch root) alone: a forged signature over a root that
    is cached is a different key, so it is verified, and fails. Oldest pairs are forgotten first.
    """

    def __init__(self, capacity: int = 1 << 16) -> None:
        self.capacity = capacity
        self._pairs: dict[tuple[Vote, bytes], None] = {}

    def check(self, vote: Vote, signature: bytes) -> bool:
        key = (vote, signature)
        if key in self._pairs:
            return True
        if not verify_vote_signature(vote, signature):
            return False
        if len(self._pairs) >= self.capacity:
            del self._pairs[next(iter(self._pairs))]
        self._pairs[key] = None
        return True

    def __len__(self) -> int:
        return len(self._pairs)


VERIFIED_VOTES = VerifiedVotes()   # shared by every certificate check of this process


def assemble_certificate(committee: Committee, votes: Iterable[Signed[Vote]]) -> Certificate | None:
    """A certificate from the valid, distinct members' votes on one root, once there are a quorum."""
    by_root: dict[tuple[bytes, int], dict[bytes, bytes]] = {}
    for vote in votes:
        body = vote.body
        if (body.zone, body.epoch) != (committee.zone, committee.epoch) or not committee.is_member(vote.signer):
            continue
        by_root.setdefault((body.batch_root, body.batch_size), {})[vote.signer] = vote.signature
    for (root, size), sigs in by_root.items():
        if len(sigs) >= committee.quorum:
            signers = tuple(sorted(sigs))
            return Certificate(committee.zone, committee.epoch, root, size, signers,
                               tuple(sigs[s] for s in signers))
    return None


def verify_certificate(committee: Committee, cert: Certificate, verified: VerifiedVotes = VERIFIED_VOTES) -> None:
    """Raise ``CertificateInvalid`` unless ≥ quorum distinct members signed this root (signature
    checks go through the ``verified`` memo)."""
    if (cert.zone, cert.epoch) != (committee.zone, committee.epoch):
        raise CertificateInvalid(f"certificate for {cert.zone} epoch {cert.epoch}, committee is "
                                 f"{committee.zone} epoch {committee.epoch}")
    if len(set(cert.signers)) != len(cert.signers):
        raise CertificateInvalid("a signer appears twice")
    outsiders = [s for s in cert.signers if not committee.is_member(s)]
    if outsiders:
        raise CertificateInvalid(f"{len(outsiders)} signer(s) are not committee members")
    if len(cert.signers) < committee.quorum:
        raise CertificateInvalid(f"{len(cert.signers)} signatures, quorum is {committee.quorum}")
    for signer, signature in zip(cert.signers, cert.signatures):
        if not verified.check(cert.vote_for(signer), signature):
            raise CertificateInvalid(f"bad vote signature from {signer.hex()[:8]}")


def verify_certified_entries(committee: Committee, batch: CertifiedEntries,
                             trusted_roots: set[bytes] | None = None,
                             known: Mapping[bytes, Signed[Entry]] | None = None) -> list[Signed[Entry]]:
    """The entries of ``batch``, after checking the certificate and that each entry is in its
    batch. ``trusted_roots`` caches roots whose certificate was checked already (and is updated);
    ``known`` maps entry hashes to entries this node decoded already (they are not decoded again)."""
    hashes = check_certified_inclusion(committee, batch, trusted_roots)
    try:
        known = known or {}
        return [known.get(h) or decode_certified_entry(data) for h, data in zip(hashes, batch.entries)]
    except (DecodeError, OversizeError) as exc:
        raise CertificateInvalid(f"certified entry does not decode: {exc}") from None


def check_certified_inclusion(committee: Committee, batch: CertifiedEntries,
                              trusted_roots: set[bytes] | None = None) -> list[bytes]:
    """The entry hashes of ``batch``, after checking the certificate and that each entry is in its
    batch, without decoding the entries (``verify_certified_entries`` does that too)."""
    cert = batch.certificate
    if trusted_roots is None or cert.batch_root not in trusted_roots:
        verify_certificate(committee, cert)
    hashes = [hash_bytes(data) for data in batch.entries]
    if batch.leaves:
        if len(batch.leaves) != cert.batch_size or batch_root(batch.leaves) != cert.batch_root:
            raise CertificateInvalid("leaves do not match the certified root")
        leaf_set = set(batch.leaves)
        if any(h not in leaf_set for h in hashes):
            raise CertificateInvalid("an entry is not in the certified batch")
    elif len(hashes) != cert.batch_size or batch_root(hashes) != cert.batch_root:
        raise CertificateInvalid("entries do not match the certified root")
    if trusted_roots is not None:
        trusted_roots.add(cert.batch_root)
    return hashes
