"""Frames of the book reconciliation protocol ``/p2pgrid/books/1`` (pure; see ``reconcile``).

One persistent stream from a client (the node that pulls) to a server; each request frame gets
one answer frame, in order::

    client → server   DigestRequest(request_id, zones, my digest per (zone, slot))
    server → client   DigestReply(request_id, the server's digests of the slots that differ)
    client → server   IdsRequest(request_id, zone, slot, after, limit)        (per differing slot,
    server → client   IdsReply(request_id, item keys > after, sorted, more)    paged)
    client → server   FetchRequest(request_id, zone, keys)                    (≤ 256 keys)
    server → client   FetchReply(request_id, signed items)                    (wire bytes, as gossiped)

A frame is ``[tag, body]`` (canonical msgpack, ``wire``), the tag a versioned domain such as
``p2pgrid/books-digests/v1``; an unknown tag is a ``DecodeError``. Frames are not signed: the
stream is authenticated by the transport (Noise), and every item inside a ``FetchReply`` carries
its owner's signature and is judged by the order validator like a gossiped one.

An **item key** (49 bytes) names one signed item: ``kind || owner || order_id`` with kind ``0x00``
for an ``Order`` and ``0x01`` for a ``Cancel``. A **slot digest** is the number of keys a node
holds for (zone, slot) and the sha256 of them, sorted (``reconcile.compute_digest``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from p2pgrid.errors import DecodeError
from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, from_plain, pack, struct, to_plain, unpack

BOOKS_PROTOCOL = "/p2pgrid/books/1"
MAX_BOOKS_FRAME_BYTES = 1024 * 1024
ORDER_ID_SIZE = 16
ITEM_KEY_SIZE = 1 + PUBLIC_KEY_SIZE + ORDER_ID_SIZE
DIGEST_SIZE = 32
MAX_ZONES = 16                  # zones one request names (a home zone and its neighbours)
MAX_DIGESTS = 4096              # (zone, slot) digests per request or reply
MAX_IDS_PER_PAGE = 4096         # keys per IdsReply (≈ 200 KiB)
MAX_FETCH_ITEMS = 256           # keys per FetchRequest, items per FetchReply (≤ 512 B each)
MAX_ITEM_BYTES = 512            # the larger of an order's and a cancel's size limit


def _zone() -> Any:
    return field(metadata={"pattern": ZONE_PATTERN})


def _request_id() -> Any:
    return field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class SlotDigest:
    """What a node holds of one (zone, slot): how many item keys, and their digest."""

    zone: str = _zone()
    slot: int = field(metadata={"min": 0})
    count: int = field(metadata={"min": 0})
    digest: bytes = field(metadata={"size": DIGEST_SIZE})


@struct
@dataclass(frozen=True)
class DigestRequest:
    """Client → server: the zones I reconcile and my digest of every slot I hold of them."""

    request_id: int = _request_id()
    zones: tuple[str, ...] = field(metadata={"max_len": MAX_ZONES})
    digests: tuple[SlotDigest, ...] = field(metadata={"max_len": MAX_DIGESTS})


@struct
@dataclass(frozen=True)
class DigestReply:
    """Server → client: my digests of the slots of the requested zones where I hold items and
    my digest differs from yours (a slot you did not list counts as empty)."""

    request_id: int = _request_id()
    differing: tuple[SlotDigest, ...] = field(metadata={"max_len": MAX_DIGESTS})


@struct
@dataclass(frozen=True)
class IdsRequest:
    """Client → server: the keys you hold for (zone, slot) above ``after`` (b"" = from the first)."""

    request_id: int = _request_id()
    zone: str = _zone()
    slot: int = field(metadata={"min": 0})
    after: bytes = field(metadata={"max_len": ITEM_KEY_SIZE})
    limit: int = field(metadata={"min": 1, "max": MAX_IDS_PER_PAGE})


@struct
@dataclass(frozen=True)
class IdsReply:
    """Server → client: up to ``limit`` keys above ``after``, ascending; ``more`` if others follow."""

    request_id: int = _request_id()
    keys: tuple[bytes, ...] = field(metadata={"max_len": MAX_IDS_PER_PAGE})
    more: bool


@struct
@dataclass(frozen=True)
class FetchRequest:
    """Client → server: send me the signed items of these keys (of ``zone``)."""

    request_id: int = _request_id()
    zone: str = _zone()
    keys: tuple[bytes, ...] = field(metadata={"max_len": MAX_FETCH_ITEMS})


@struct
@dataclass(frozen=True)
class FetchReply:
    """Server → client: the signed items (wire bytes) of the keys I still hold, in request order."""

    request_id: int = _request_id()
    items: tuple[bytes, ...] = field(metadata={"max_len": MAX_FETCH_ITEMS})


BooksFrame = Union[DigestRequest, DigestReply, IdsRequest, IdsReply, FetchRequest, FetchReply]
BOOKS_FRAME_TAGS: dict[str, type] = {
    "p2pgrid/books-digests/v1": DigestRequest,
    "p2pgrid/books-digests-reply/v1": DigestReply,
    "p2pgrid/books-ids/v1": IdsRequest,
    "p2pgrid/books-ids-reply/v1": IdsReply,
    "p2pgrid/books-fetch/v1": FetchRequest,
    "p2pgrid/books-fetch-reply/v1": FetchReply,
}
_TAG_OF = {cls: tag for tag, cls in BOOKS_FRAME_TAGS.items()}


def encode_books_frame(frame: BooksFrame) -> bytes:
    return pack([_TAG_OF[type(frame)], to_plain(frame)])


def decode_books_frame(data: bytes) -> BooksFrame:
    """Strictly decode one frame; raises ``DecodeError`` / ``OversizeError`` (both ``WireError``)."""
    plain = unpack(data, MAX_BOOKS_FRAME_BYTES)
    if not isinstance(plain, list) or len(plain) != 2 or plain[0] not in BOOKS_FRAME_TAGS:
        raise DecodeError("a books frame is [tag, body] with a known tag")
    frame: BooksFrame = from_plain(BOOKS_FRAME_TAGS[plain[0]], plain[1])
    return frame
