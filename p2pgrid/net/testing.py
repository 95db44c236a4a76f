"""Test tools for the network, kept in the package so node tests and simnet can use them too.

``open_cluster(kind, n)`` starts ``n`` connected transports (``"memory"`` or ``"libp2p"`` on
127.0.0.1) with deterministic keys (``bootstrap_links`` for a sparse start that discovery fills); ``wait_for_mesh`` waits until every node has all its
connected peers as gossip peers on a topic; ``make_order`` builds a valid order for the rules;
``bad_order_batches`` is the table of invalid inputs (one per class) the validator must reject;
``DropGossip`` wraps a transport so that it misses other peers' gossip on demand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from p2pgrid.identity import NodeKey
from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.transport import Transport, ValidationResult, Validator, accept_all
from p2pgrid.net.validation import OrderRules, Reason
from p2pgrid.wire import Cancel, Order, OrderBatch, Side, Source, encode, pack, sign, signing_bytes, to_plain

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
POLL_S = 0.02


def cluster_keys(n: int, seed: int = 0) -> list[NodeKey]:
    """``n`` deterministic node keys (different ``seed`` → different keys)."""
    return [NodeKey(bytes([seed % 256, i % 256, i // 256]) + bytes(29)) for i in range(n)]


def cluster_links(n: int) -> list[tuple[int, int]]:
    """Who dials whom: each node dials node 0 and its predecessor (a hub plus a chain)."""
    links = {(i, 0) for i in range(1, n)} | {(i, i - 1) for i in range(2, n)}
    return sorted(links)


def bootstrap_links(n: int, k: int = 2) -> list[tuple[int, int]]:
    """Each node dials only the first ``k`` nodes (its bootstrap peers); discovery does the rest."""
    return [(i, j) for i in range(1, n) for j in range(min(i, k))]


@asynccontextmanager
async def open_cluster(kind: str, n: int, *, seed: int = 0, links: Sequence[tuple[int, int]] | None = None,
                       discovery: Callable[[int], DiscoveryConfig] | None = None) -> AsyncIterator[list[Transport]]:
    """``n`` running, connected transports of ``kind`` ("memory" or "libp2p"); on libp2p node ``i``
    finds peers and bounds its connections as ``discovery(i)`` says (default: ``DiscoveryConfig()``)."""
    keys = cluster_keys(n, seed)
    async with AsyncExitStack() as stack:
        transports: list[Transport] = []
        if kind == "memory":
            network = MemoryNetwork()
            for key in keys:
                transports.append(await stack.enter_async_context(network.open_transport(key)))
        elif kind == "libp2p":
            from p2pgrid.net.libp2p_host import open_libp2p_transport

            for i, key in enumerate(keys):
                config = discovery(i) if discovery is not None else DiscoveryConfig()
                transports.append(await stack.enter_async_context(open_libp2p_transport(key, LOOPBACK, discovery=config)))
        else:
            raise ValueError(f"unknown transport kind {kind!r}")
        async with trio.open_nursery() as nursery:  # dialling takes ~0.25 s each on libp2p
            for dialer, listener in (cluster_links(n) if links is None else links):
                nursery.start_soon(transports[dialer].connect, transports[listener].listen_addrs[0])
        yield transports


async def wait_until(condition, poll_s: float = POLL_S) -> None:  # type: ignore[no-untyped-def]
    """Poll ``condition()`` until true; put it inside ``trio.fail_after``."""
    while not condition():
        await trio.sleep(poll_s)


def has_mesh(transport: Transport, topic: str) -> bool:
    """All connected peers are gossip peers on ``topic`` (and, on libp2p, in the mesh if it is small)."""
    peers = transport.peers()
    if not peers or transport.topic_peers(topic) != peers:
        return False
    mesh_peers = getattr(transport, "mesh_peers", None)
    return mesh_peers is None or len(mesh_peers(topic)) >= min(len(peers), 4)


async def wait_for_mesh(transports: Sequence[Transport], topic: str) -> None:
    """Wait (inside ``trio.fail_after``) until every transport has a mesh on ``topic``."""
    await wait_until(lambda: all(has_mesh(t, topic) for t in transports))


async def collect_deliveries(service: Any, count: int) -> tuple[list[Any], set[str]]:
    """Receive deliveries of an ``OrderGossip`` until ``count`` items came; the items and the
    paths (``via``) they came by."""
    items: list[Any] = []
    vias: set[str] = set()
    while len(items) < count:
        delivery = await service.deliveries.receive()
        items += delivery.items
        vias.add(delivery.via)
    return items, vias


class DropGossip:
    """A transport whose topic validators drop other peers' gossip while ``dropping`` is set, as
    a node under load misses messages: what it lacks then can only come from pulling."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.dropping = False

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    async def subscribe(self, topic: str, validator: Validator = accept_all):  # type: ignore[no-untyped-def]
        def gated(sender: bytes, data: bytes) -> ValidationResult:
            if self.dropping and sender != self.inner.local_peer:
                return ValidationResult.IGNORE
            return validator(sender, data)
        return await self.inner.subscribe(topic, gated)


def make_order(owner: NodeKey, rules: OrderRules, now_ms: int, number: int, **changes) -> Order:  # type: ignore[no-untyped-def]
    """A valid sell order for the first slot open at ``now_ms``, with order id from ``number``."""
    slot = changes.pop("slot") if "slot" in changes else rules.slot_rules.tradable_slots(now_ms)[0]
    fields = dict(order_id=number.to_bytes(16, "big"), owner=owner.public_key, side=Side.SELL,
                  zone=rules.zone, slot=slot, qty_wh=1000 + number % 1000, limit_price=200_000 + number,
                  green=True, source=Source.PV, created_ms=now_ms, expiry_ms=now_ms + 600_000, nonce=number)
    fields.update(changes)
    return Order(**fields)


# --- bad inputs, one per class the order validator must reject --------------------------------

def bad_order_batches(owner: NodeKey, stranger: NodeKey, rules: OrderRules, now_ms: int
                      ) -> dict[str, tuple[bytes, Reason]]:
    """Batches published by ``owner`` that ``rules`` must REJECT, each with its expected reason.

    Shared by the validator's unit tests, the network tests and simnet's byzantine peer.
    ``stranger`` is another key (for foreign and wrongly signed items).
    """
    calendar = rules.slot_rules

    def order(number: int = 1, **changes) -> Order:  # type: ignore[no-untyped-def]
        return make_order(owner, rules, now_ms, number, **changes)

    def batch(*items: bytes, zone: str = rules.zone) -> bytes:
        return encode(OrderBatch(zone, now_ms, tuple(items)))

    def signed(body: Order | Cancel | None = None) -> bytes:
        return sign(body if body is not None else order(), owner).encoded

    def tampered() -> bytes:
        good = sign(order(), owner)
        forged = dataclasses.replace(good.body, qty_wh=good.body.qty_wh + 1)
        return pack([good.spec.kind, good.spec.version, good.signer, to_plain(forged), good.signature])

    def signed_by_stranger() -> bytes:
        body = to_plain(order())
        signature = stranger.sign(signing_bytes("p2pgrid/order/v1", stranger.public_key, body))
        return pack(["p2pgrid/order", 1, stranger.public_key, body, signature])

    def unknown_version() -> bytes:
        body = to_plain(order())
        signature = owner.sign(signing_bytes("p2pgrid/order/v9", owner.public_key, body))
        return pack(["p2pgrid/order", 9, owner.public_key, body, signature])

    other_zone = "zz-" + rules.zone[:29] if not rules.zone.startswith("zz-") else "yy-" + rules.zone[3:]
    open_slot = order().slot
    past_slot = calendar.slot_of(now_ms) - calendar.length_s
    beyond_horizon = calendar.slot_of(now_ms + (calendar.horizon_s + 3600) * 1000)
    a_cancel = Cancel(order().order_id, owner.public_key, rules.zone, open_slot, now_ms)
    return {
        "garbage_bytes": (b"\xc1\x00\xff", Reason.MALFORMED),
        "batch_not_canonical": (pack({"zone": rules.zone}), Reason.MALFORMED),
        "oversize_batch": (b"\x90" * (rules.max_batch_bytes + 1), Reason.OVERSIZE),
        "oversize_item": (batch(pack(["p2pgrid/order", 1, b"x" * 600, [], b""])), Reason.OVERSIZE),
        "unsigned_order": (batch(encode(order())), Reason.UNSIGNED),
        "unsigned_cancel": (batch(encode(a_cancel)), Reason.UNSIGNED),
        "tampered_order": (batch(tampered()), Reason.BAD_SIGNATURE),
        "signed_by_someone_else": (batch(signed_by_stranger()), Reason.BAD_SIGNATURE),
        "unknown_version": (batch(unknown_version()), Reason.UNKNOWN_VERSION),
        "wrong_zone_batch": (batch(signed(), zone=other_zone), Reason.WRONG_ZONE),
        "wrong_zone_item": (batch(signed(order(zone=other_zone))), Reason.WRONG_ZONE),
        "foreign_item": (batch(sign(make_order(stranger, rules, now_ms, 1), stranger).encoded), Reason.FOREIGN_ITEM),
        "expired": (batch(signed(order(created_ms=now_ms - 60_000, expiry_ms=now_ms - 10_000))), Reason.EXPIRED),
        "slot_misaligned": (batch(signed(order(slot=open_slot + 1))), Reason.SLOT_CLOSED),
        "slot_past_gate_closure": (batch(signed(order(slot=past_slot))), Reason.SLOT_CLOSED),
        "slot_beyond_horizon": (batch(signed(order(slot=beyond_horizon))), Reason.SLOT_CLOSED),
        "same_order_twice_in_batch": (batch(signed(), signed()), Reason.REPLAYED),
        "one_bad_item_among_good": (batch(signed(order(1)), tampered(), signed(order(3))), Reason.BAD_SIGNATURE),
    }
