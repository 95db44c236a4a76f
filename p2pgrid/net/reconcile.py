"""Books that converge: what a node holds of each (zone, slot), and how two nodes compare it (pure).

Gossip is best effort: a node that was not in the mesh when an order was published (it joined
late, restarted, or its single link was busy) never receives it again. Reconciliation repairs
that by *pulling* (``reconcile_service``, protocol ``/p2pgrid/books/1``,
``reconcile_messages``):

1. the client sends one digest per (zone, slot) it holds; the server answers with its digests of
   the slots where they differ — when the books agree, that is one small round trip;
2. for each differing slot the client lists the server's item keys (paged, bounded);
3. it fetches the signed items it lacks, at most ``MAX_FETCH_ITEMS`` per request.

Every fetched item is judged by the zone's order validator exactly as if it had arrived by
gossip from its owner (``OrderGossip.admit_fetched``), so reconciliation is no way around it.

``OpenItems`` is what a node holds, fed by every item its order gossip delivers (its own
included) and by fetched ones: per (zone, slot) the signed orders still open and the cancels
(tombstones). A cancel removes its order and stays until the slot's gate closure, so a
cancelled order is never fetched again (``lacks``) and two nodes that both saw the cancel agree
whether or not they saw the order. An order leaves at its expiry, everything of a slot at its gate
closure. Fills are not tracked here: they are ledger facts, applied to the books by the trading
service (``trading.service``), also to an order that arrives late.

Digest of a slot: ``sha256(DIGEST_DOMAIN || zone || 0x00 || slot (8 bytes, big endian) || keys
sorted ascending)`` together with the number of keys: equal sets give equal digests whatever the
order items arrived in.

Time: ``now_ms`` (Unix ms, market time) is passed in.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2pgrid.errors import DecodeError, WireError
from p2pgrid.net.reconcile_messages import ITEM_KEY_SIZE, MAX_ITEM_BYTES, ORDER_ID_SIZE, IdsReply, SlotDigest
from p2pgrid.units import SlotRules
from p2pgrid.wire import PUBLIC_KEY_SIZE, Cancel, Order, Signed, unpack

DIGEST_DOMAIN = b"p2pgrid/books-digest/v1\x00"
ORDER_KIND, CANCEL_KIND = b"\x00", b"\x01"
_KIND_OF_WIRE = {"p2pgrid/order": ORDER_KIND, "p2pgrid/cancel": CANCEL_KIND}
PRUNE_EVERY_MS = 1000


class ReconcileError(WireError):
    """A reconciliation answer that breaks the protocol (the peer's fault: the session ends)."""


def item_key(body: Order | Cancel) -> bytes:
    """``kind || owner || order_id`` (49 bytes)."""
    kind = ORDER_KIND if isinstance(body, Order) else CANCEL_KIND
    return kind + body.owner + body.order_id


def owner_of_key(key: bytes) -> bytes:
    """The owner's public key inside an item key."""
    return key[1:1 + PUBLIC_KEY_SIZE]


def order_key_of(cancel_key: bytes) -> bytes:
    """The key of the order a cancel key names."""
    return ORDER_KIND + cancel_key[1:]


def peek_item_key(item: bytes) -> bytes:
    """The key an item's wire bytes *claim* (kind, owner, order id), before any verification.

    Used to match a fetched item with the key asked for before the validator judges it (which
    also verifies that owner and signature agree). Raises ``DecodeError``."""
    plain = unpack(item, MAX_ITEM_BYTES)
    if not isinstance(plain, list) or len(plain) != 5 or plain[0] not in _KIND_OF_WIRE:
        raise DecodeError("not a signed order or cancel")
    body = plain[3]
    if not isinstance(body, list) or len(body) < 2:
        raise DecodeError("not a signed order or cancel")
    order_id, owner = body[0], body[1]
    if type(order_id) is not bytes or len(order_id) != ORDER_ID_SIZE \
            or type(owner) is not bytes or len(owner) != PUBLIC_KEY_SIZE:
        raise DecodeError("order id or owner of the wrong size")
    return _KIND_OF_WIRE[plain[0]] + owner + order_id


def compute_digest(zone: str, slot: int, keys: Iterable[bytes]) -> SlotDigest:
    """The digest of one (zone, slot) holding ``keys`` (in any order)."""
    ordered = sorted(keys)
    hasher = hashlib.sha256(DIGEST_DOMAIN + zone.encode() + b"\x00" + slot.to_bytes(8, "big"))
    for key in ordered:
        hasher.update(key)
    return SlotDigest(zone, slot, len(ordered), hasher.digest())


@dataclass
class _Slot:
    items: dict[bytes, Signed[Order] | Signed[Cancel]]
    ordered: list[bytes] | None = None        # sorted keys, cached until the slot changes
    digest: SlotDigest | None = None


class OpenItems:
    """The signed orders and cancels a node holds, per (zone, slot) (module docstring)."""

    def __init__(self, slot_rules: SlotRules) -> None:
        self.slot_rules = slot_rules
        self._slots: dict[tuple[str, int], _Slot] = {}
        self._where: dict[bytes, tuple[str, int]] = {}      # key → its (zone, slot)
        # (when it closes, key) of every item added: pruning pops what closed, so it costs what
        # closed since the last prune, not a scan of everything held
        self._closing: list[tuple[int, bytes]] = []
        self._pruned_ms: int | None = None

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where

    # --- changes ----------------------------------------------------------------------------

    def add(self, signed: Signed[Order] | Signed[Cancel], now_ms: int) -> bool:
        """Hold one validated item; False if it changes nothing (held, cancelled, closed)."""
        body = signed.body
        key = item_key(body)
        if key in self._where or not self._open(body, now_ms):
            return False
        if isinstance(body, Order) and CANCEL_KIND + key[1:] in self._where:
            return False                                    # cancelled before it arrived
        if isinstance(body, Cancel):
            self._remove(order_key_of(key))
        place = (body.zone, body.slot)
        slot = self._slots.get(place)
        if slot is None:
            slot = self._slots[place] = _Slot({})
        slot.items[key] = signed
        slot.ordered = slot.digest = None
        self._where[key] = place
        heapq.heappush(self._closing, (self._closes_ms(body), key))
        return True

    def prune(self, now_ms: int) -> None:
        """Forget what closed: orders at their expiry, whole slots at gate closure (at most once
        per ``PRUNE_EVERY_MS``)."""
        if self._pruned_ms is not None and now_ms - self._pruned_ms < PRUNE_EVERY_MS:
            return
        self._pruned_ms = now_ms
        closing = self._closing
        while closing and closing[0][0] <= now_ms:
            self._remove(heapq.heappop(closing)[1])     # a no-op for a key removed already (cancelled)

    def _remove(self, key: bytes) -> None:
        place = self._where.pop(key, None)
        if place is None:
            return
        slot = self._slots[place]
        del slot.items[key]
        slot.ordered = slot.digest = None
        if not slot.items:
            del self._slots[place]

    def _open(self, body: Order | Cancel, now_ms: int) -> bool:
        return now_ms < self._closes_ms(body)

    def _closes_ms(self, body: Order | Cancel) -> int:
        """When an item stops mattering: its slot's gate closure, or an order's expiry if sooner."""
        closure = self.slot_rules.gate_closure_ms(body.slot)
        return min(closure, body.expiry_ms) if isinstance(body, Order) else closure

    # --- queries ----------------------------------------------------------------------------

    def lacks(self, key: bytes) -> bool:
        """True if fetching ``key`` could change something: not held, and not an order whose
        cancel is held."""
        if key in self._where:
            return False
        return not (key[:1] == ORDER_KIND and CANCEL_KIND + key[1:] in self._where)

    def holds(self, signed: Signed[Order] | Signed[Cancel]) -> bool:
        """True if exactly this signed item (same bytes) is held."""
        held = self.get(item_key(signed.body))
        return held is not None and held.encoded == signed.encoded

    def get(self, key: bytes) -> Signed[Order] | Signed[Cancel] | None:
        place = self._where.get(key)
        return None if place is None else self._slots[place].items[key]

    def digests(self, zones: Iterable[str]) -> list[SlotDigest]:
        """The digest of every slot held of ``zones``, by (zone, slot)."""
        wanted = set(zones)
        return [self.digest(zone, slot) for zone, slot in sorted(self._slots) if zone in wanted]

    def digest(self, zone: str, slot: int) -> SlotDigest:
        held = self._slots.get((zone, slot))
        if held is None:
            return compute_digest(zone, slot, ())
        if held.digest is None:
            held.digest = compute_digest(zone, slot, self._ordered(held))
        return held.digest

    def keys(self, zone: str, slot: int, after: bytes, limit: int) -> tuple[list[bytes], bool]:
        """Up to ``limit`` keys of (zone, slot) above ``after``, ascending, and whether more follow."""
        held = self._slots.get((zone, slot))
        if held is None:
            return [], False
        ordered = self._ordered(held)
        start = bisect.bisect_right(ordered, after)
        page = ordered[start:start + limit]
        return page, start + limit < len(ordered)

    @staticmethod
    def _ordered(held: _Slot) -> list[bytes]:
        if held.ordered is None:
            held.ordered = sorted(held.items)
        return held.ordered


# --- the client's checks of a server's answers ------------------------------------------------

def differing_slots(mine: Sequence[SlotDigest], theirs: Sequence[SlotDigest],
                    zones: Iterable[str]) -> list[SlotDigest]:
    """What a server answers: its digests, among ``theirs``, of ``zones``' slots that hold
    something and differ from the client's ``mine`` (a slot missing from ``mine`` is empty)."""
    wanted = set(zones)
    known = {(d.zone, d.slot): d for d in mine}
    out = []
    for digest in theirs:
        if digest.zone not in wanted or digest.count == 0:
            continue
        other = known.get((digest.zone, digest.slot))
        if other is None or (other.count, other.digest) != (digest.count, digest.digest):
            out.append(digest)
    return out


def check_digest_reply(differing: Sequence[SlotDigest], zones: Iterable[str], max_slots: int) -> None:
    """A server names only requested zones, each slot once. Raises ``ReconcileError``."""
    wanted = set(zones)
    seen: set[tuple[str, int]] = set()
    for digest in differing:
        place = (digest.zone, digest.slot)
        if digest.zone not in wanted or place in seen:
            raise ReconcileError(f"digest of {place} not asked for or sent twice")
        seen.add(place)
    if len(seen) > max_slots:
        raise ReconcileError(f"{len(seen)} differing slots, more than the {max_slots} expected at most")


def check_ids_page(reply: IdsReply, after: bytes, limit: int) -> None:
    """Keys of the right size, strictly ascending, above ``after``, at most ``limit``. Raises
    ``ReconcileError``."""
    if len(reply.keys) > limit:
        raise ReconcileError(f"{len(reply.keys)} keys in a page of at most {limit}")
    previous = after
    for key in reply.keys:
        if len(key) != ITEM_KEY_SIZE or key[:1] not in (ORDER_KIND, CANCEL_KIND):
            raise ReconcileError("an item key of the wrong shape")
        if key <= previous:
            raise ReconcileError("item keys not strictly ascending after the one asked for")
        previous = key
    if reply.more and not reply.keys:
        raise ReconcileError("an empty page that says more follow")
