"""Wire kinds of the ledger (pure): entries, their bodies, votes, certificates and stream frames.

Signed kinds (one signing path: ``p2pgrid.wire.sign`` / ``decode_signed``, domain tag per kind):

* ``p2pgrid/entry/v2`` — ``Entry(zone, account, seq, prev_hash, time_ms, kind, body)``, signed by
  ``account``. ``time_ms`` is the owner's signed timestamp (Unix ms, market time): every time limit
  of the ledger rules is judged on it (or on a signed time inside the body), never on a
  validator's clock, and it never decreases along a chain.
  ``body`` is the canonical encoding of the kind's body structure (``Transfer``, ``Fill``, …), so
  new kinds need no change here. An entry's identity is ``entry_hash`` = sha256 of its signed wire
  bytes (signature included): a certificate therefore pins the exact signed bytes, and a node that
  trusts a certificate need not re-verify the owner's signature.
* ``p2pgrid/vote/v1`` — ``Vote(validator, zone, epoch, batch_root, batch_size)``: a validator's
  signature over the Merkle root of a batch of entry hashes.
* ``p2pgrid/lock-expiry/v1`` — ``LockExpiry(validator, zone, epoch, take_id)``: a validator's
  promise never to vote for an entry consuming a lock (a quorum of them lets the buyer ``refund``).

Unsigned structures (they carry signatures inside):

* ``Certificate`` — a batch root and ≥ 2f+1 (signer, signature) pairs of ``Vote``s over it.
* ``CertifiedEntries`` — a certificate plus entries of its batch. With ``leaves`` empty the entries
  are the whole batch in order; otherwise ``leaves`` lists every entry hash of the batch and the
  entries are any subset of it (what sync sends).

Stream frames (``/p2pgrid/vote/1``, ``/p2pgrid/sync/1``) are ``[tag, body]`` arrays, see
``encode_frame`` / ``decode_frame``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Union

from p2pgrid.errors import DecodeError
from p2pgrid.wire import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, ZONE_PATTERN, Signed, from_plain, message, pack, struct, to_plain, unpack

HASH_SIZE = 32
ID_SIZE = 16
GENESIS_HASH = bytes(HASH_SIZE)
KIND_PATTERN = r"[a-z][a-z0-9_]{0,31}"
# A slot's ``settle`` entry is the largest body: about 80 bytes per metered account, so 8 KiB
# settles a community of ~90 in one entry (gossip messages carry up to 60 KiB).
MAX_ENTRY_BYTES = 8192
MAX_BODY_BYTES = 7680
MAX_BATCH_ENTRIES = 256
MAX_AMOUNT = 10**15          # 1e9 credits in µc: any single movement above this is a bug or an attack
MAX_FRAME_BYTES = 4 * 1024 * 1024


def _key() -> Any:
    return field(metadata={"size": PUBLIC_KEY_SIZE})


def _id() -> Any:
    return field(metadata={"size": ID_SIZE})


def _amount(minimum: int = 1) -> Any:
    return field(metadata={"min": minimum, "max": MAX_AMOUNT})


# --- entries ---------------------------------------------------------------------------------

ENTRY_VERSION = 2


@message("p2pgrid/entry", ENTRY_VERSION, max_bytes=MAX_ENTRY_BYTES, signer_field="account")
@dataclass(frozen=True)
class Entry:
    """One link of an account's chain. ``seq`` 0 has ``prev_hash == GENESIS_HASH``; ``time_ms`` is
    the owner's signed time of the entry, never below its predecessor's."""

    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    account: bytes = _key()
    seq: int = field(metadata={"min": 0})
    prev_hash: bytes = field(metadata={"size": HASH_SIZE})
    time_ms: int = field(metadata={"min": 0, "max": 2**53})
    kind: str = field(metadata={"pattern": KIND_PATTERN})
    body: bytes = field(metadata={"max_len": MAX_BODY_BYTES})


def entry_hash(signed: Signed[Entry]) -> bytes:
    """The identity of a signed entry: sha256 of its exact wire bytes."""
    return hashlib.sha256(signed.encoded).digest()


def hash_bytes(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@struct
@dataclass(frozen=True)
class Transfer:
    """Move ``amount`` µc from the entry's account to ``to``."""

    to: bytes = _key()
    amount: int = _amount()


@struct
@dataclass(frozen=True)
class Mint:
    """The zone gateway issues ``amount`` µc to ``to`` (the gateway's balance goes down by as much)."""

    to: bytes = _key()
    amount: int = _amount()


@struct
@dataclass(frozen=True)
class Burn:
    """An account hands ``amount`` µc back to the zone gateway (redeems them off-ledger)."""

    amount: int = _amount()


@struct
@dataclass(frozen=True)
class Lock:
    """The buyer escrows ``amount`` µc for a take on an order; consumed by the seller's fill.

    ``amount`` must cover ``trade_value(qty_wh, price)``. ``order_owner`` is the maker (seller or
    buyer); ``order_size_wh`` is the maker's order size, the bound for all fills of ``order_id``.
    """

    take_id: bytes = _id()
    seller: bytes = _key()
    order_id: bytes = _id()
    order_owner: bytes = _key()
    order_size_wh: int = _amount()
    qty_wh: int = _amount()
    price: int = _amount(0)
    amount: int = _amount(0)
    deadline_ms: int = field(metadata={"min": 0})
    # What settlement needs to know of the trade: its delivery slot and whether the maker's
    # order offered green energy (carrying certificates). Not checked by the chain rules.
    slot: int = field(default=0, metadata={"min": 0})
    green: bool = False
    # The grid zones of the two parties (``market.locality``): settlement charges the grid fee
    # between them on the delivered Wh. Empty: the ledger's own zone. Not checked by the chain
    # rules; the seller's node checks them before its fill consumes the lock.
    seller_zone: str = field(default="", metadata={"pattern": f"(|{ZONE_PATTERN})"})
    buyer_zone: str = field(default="", metadata={"pattern": f"(|{ZONE_PATTERN})"})


@struct
@dataclass(frozen=True)
class Release:
    """The buyer takes back a lock nobody consumed, once the seller's own chain has passed the
    lock's deadline (so no fill of it can ever follow)."""

    take_id: bytes = _id()


@struct
@dataclass(frozen=True)
class Refund:
    """The buyer takes back a lock its seller never decided, against ``expiries``: signed
    ``LockExpiry`` promises of a quorum (2f+1) of the committee that they never vote for an entry
    consuming the lock. A consumer needs 2f+1 votes too, so the two can never both be certified
    (an honest validator would have to have done both)."""

    take_id: bytes = _id()
    expiries: tuple[bytes, ...] = field(metadata={"max_len": 128})


@struct
@dataclass(frozen=True)
class Decline:
    """The seller hands an open lock back to the buyer (a take it will not fill), at any time."""

    take_id: bytes = _id()


@struct
@dataclass(frozen=True)
class Fill:
    """The seller delivers ``qty_wh`` of ``order_id`` at ``price`` against the buyer's lock ``take_id``."""

    take_id: bytes = _id()
    buyer: bytes = _key()
    order_id: bytes = _id()
    qty_wh: int = _amount()
    price: int = _amount(0)


# --- votes and certificates --------------------------------------------------------------------

@message("p2pgrid/vote", 1, max_bytes=512, signer_field="validator")
@dataclass(frozen=True)
class Vote:
    """A validator's signature over the Merkle root of ``batch_size`` entry hashes."""

    validator: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    epoch: int = field(metadata={"min": 0})
    batch_root: bytes = field(metadata={"size": HASH_SIZE})
    batch_size: int = field(metadata={"min": 1, "max": MAX_BATCH_ENTRIES})


@struct
@dataclass(frozen=True)
class Certificate:
    """≥ quorum signatures of distinct committee members over one batch root."""

    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    epoch: int = field(metadata={"min": 0})
    batch_root: bytes = field(metadata={"size": HASH_SIZE})
    batch_size: int = field(metadata={"min": 1, "max": MAX_BATCH_ENTRIES})
    signers: tuple[bytes, ...] = field(metadata={"max_len": 128})
    signatures: tuple[bytes, ...] = field(metadata={"max_len": 128})

    def check(self) -> None:
        if len(self.signers) != len(self.signatures):
            raise DecodeError("Certificate: one signature per signer")
        if any(len(s) != PUBLIC_KEY_SIZE for s in self.signers):
            raise DecodeError("Certificate.signers are 32-byte keys")
        if any(len(s) != SIGNATURE_SIZE for s in self.signatures):
            raise DecodeError("Certificate.signatures are 64 bytes")

    @property
    def certificate_id(self) -> bytes:
        return self.batch_root

    def vote_for(self, signer: bytes) -> Vote:
        """The vote each signature of this certificate is over."""
        return Vote(signer, self.zone, self.epoch, self.batch_root, self.batch_size)


@struct
@dataclass(frozen=True)
class CertifiedEntries:
    """A certificate with entries of its batch (all of them when ``leaves`` is empty)."""

    certificate: Certificate
    leaves: tuple[bytes, ...] = field(metadata={"max_len": MAX_BATCH_ENTRIES})
    entries: tuple[bytes, ...] = field(metadata={"max_len": MAX_BATCH_ENTRIES})


# --- stream frames ---------------------------------------------------------------------------

@struct
@dataclass(frozen=True)
class VoteRequest:
    """Proposer → validator: please vote for this batch of signed entries (in this order)."""

    request_id: int = field(metadata={"min": 0})
    entries: tuple[bytes, ...] = field(metadata={"max_len": MAX_BATCH_ENTRIES})


@struct
@dataclass(frozen=True)
class Rejection:
    """Why entry ``index`` of a request got no vote. ``final``: it never will, from this validator
    (the entry is invalid whatever else gets certified, or the validator voted for another entry
    at one of its conflict keys); otherwise it is waiting (a dependency not yet certified here, a
    time ahead of the validator's clock, credits not yet arrived) and may be voted when asked again."""

    index: int = field(metadata={"min": 0})
    reason: str = field(metadata={"max_len": 64})
    detail: str = field(metadata={"max_len": 256})
    final: bool = False


@message("p2pgrid/refusal", 1, max_bytes=512, signer_field="validator")
@dataclass(frozen=True)
class Refusal:
    """A validator's signed, durable statement that it will never vote for entry ``entry_hash``.
    2f+1 of them prove the entry can never be certified, so its owner may build another entry at
    its seq (quorum intersection: a certificate would need a validator that refused it)."""

    validator: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    epoch: int = field(metadata={"min": 0})
    entry_hash: bytes = field(metadata={"size": HASH_SIZE})
    reason: str = field(metadata={"max_len": 64})


@message("p2pgrid/lock-expiry", 1, max_bytes=256, signer_field="validator")
@dataclass(frozen=True)
class LockExpiry:
    """A validator's signed, durable promise never to vote for an entry that consumes lock
    ``take_id`` (a fill, a swap, a share issue, a charging bill). It gives one only if it has voted
    for no such entry and, by its clock, the lock's deadline passed at least the zone's
    ``lock_expiry_grace_ms`` ago; from then on it refuses every consumer of the lock."""

    validator: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    epoch: int = field(metadata={"min": 0})
    take_id: bytes = _id()


@struct
@dataclass(frozen=True)
class ExpiryRequest:
    """Buyer → validator: promise never to vote for a consumer of lock ``take_id`` (``LockExpiry``)."""

    request_id: int = field(metadata={"min": 0})
    take_id: bytes = _id()


@struct
@dataclass(frozen=True)
class ExpiryReply:
    """Validator → buyer: the signed ``LockExpiry`` (durable before it is sent), or empty with why
    not (``final``: never, e.g. it voted for a consumer; otherwise ask again later)."""

    request_id: int = field(metadata={"min": 0})
    expiry: bytes = field(metadata={"max_len": 512})
    reason: str = field(default="", metadata={"max_len": 256})
    final: bool = False


@struct
@dataclass(frozen=True)
class VoteReply:
    """Validator → proposer, per entry: ``vote`` is a signed ``Vote`` over the longest prefix of the
    request that the validator accepts (empty if none); ``rejections`` says why the entry after
    that prefix got no vote; ``refusal`` is the signed ``Refusal`` of it when the rejection is final;
    ``voted_entry`` is, with ``already_voted``, the signed entry this validator voted for at that
    seq (an owner that lost its own proposal adopts it instead of signing a second entry there)."""

    request_id: int = field(metadata={"min": 0})
    vote: bytes = field(metadata={"max_len": 512})
    rejections: tuple[Rejection, ...] = field(metadata={"max_len": MAX_BATCH_ENTRIES})
    refusal: bytes = field(default=b"", metadata={"max_len": 512})
    voted_entry: bytes = field(default=b"", metadata={"max_len": MAX_ENTRY_BYTES})


@struct
@dataclass(frozen=True)
class Confirm:
    """Proposer → validator: the batch is certified; store it and advance the heads."""

    batch: CertifiedEntries


@struct
@dataclass(frozen=True)
class Confirmed:
    """Validator → proposer: the confirmed batch is stored and applied here."""

    batch_root: bytes = field(metadata={"size": HASH_SIZE})


@struct
@dataclass(frozen=True)
class AccountHead:
    """How far a node's certified copy of one chain goes: entries ``0 .. next_seq-1``."""

    account: bytes = _key()
    next_seq: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class SyncRequest:
    """Client → server: my heads; send what I lack, at most ``max_entries`` entries per reply."""

    request_id: int = field(metadata={"min": 0})
    heads: tuple[AccountHead, ...] = field(metadata={"max_len": 100_000})
    max_entries: int = field(metadata={"min": 1, "max": 100_000})


@struct
@dataclass(frozen=True)
class SyncReply:
    """Server → client: certified entries the client lacks; ``more`` if the limit cut the reply."""

    request_id: int = field(metadata={"min": 0})
    batches: tuple[CertifiedEntries, ...] = field(metadata={"max_len": 100_000})
    more: bool


Frame = Union[VoteRequest, VoteReply, Confirm, Confirmed, SyncRequest, SyncReply, ExpiryRequest, ExpiryReply]
FRAME_TAGS: dict[str, type] = {"vote_request": VoteRequest, "vote_reply": VoteReply, "confirm": Confirm,
                               "confirmed": Confirmed, "expiry_request": ExpiryRequest, "expiry_reply": ExpiryReply,
                               "sync_request": SyncRequest, "sync_reply": SyncReply}
_TAG_OF = {cls: tag for tag, cls in FRAME_TAGS.items()}


def encode_frame(frame: Frame) -> bytes:
    return pack([_TAG_OF[type(frame)], to_plain(frame)])


def decode_frame(data: bytes) -> Frame:
    """Strictly decode one stream frame; raises ``DecodeError`` / ``OversizeError``."""
    plain = unpack(data, MAX_FRAME_BYTES)
    if not isinstance(plain, list) or len(plain) != 2 or plain[0] not in FRAME_TAGS:
        raise DecodeError("a ledger frame is [tag, body] with a known tag")
    return from_plain(FRAME_TAGS[plain[0]], plain[1])


def encode_certified(batch: CertifiedEntries) -> bytes:
    """Gossip payload on ``p2pgrid/v1/<zone>/ledger``."""
    return pack(to_plain(batch))


def decode_certified(data: bytes) -> CertifiedEntries:
    return from_plain(CertifiedEntries, unpack(data, MAX_FRAME_BYTES))


def decode_certified_entry(data: bytes) -> Signed[Entry]:
    """Decode a signed entry whose hash a verified certificate covers, *without* re-verifying the
    owner's signature: ≥ f+1 honest validators checked it before voting for these exact bytes.
    Shape, field and signer-field checks still apply. Anything not certified goes through
    ``wire.decode_signed``."""
    plain = unpack(data, MAX_ENTRY_BYTES)
    if not isinstance(plain, list) or len(plain) != 5 or plain[0] != "p2pgrid/entry" or plain[1] != ENTRY_VERSION:
        raise DecodeError(f"not a p2pgrid/entry v{ENTRY_VERSION} signed message")
    _, _, signer, body_plain, signature = plain
    if type(signer) is not bytes or type(signature) is not bytes or len(signature) != SIGNATURE_SIZE:
        raise DecodeError("bad signer or signature field")
    entry = from_plain(Entry, body_plain)
    if entry.account != signer:
        raise DecodeError("entry signed by someone other than its account")
    return Signed(entry, signer, signature, data)
