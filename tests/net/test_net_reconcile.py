"""Books that converge: ``/p2pgrid/books/1`` pulls what gossip missed, through the same validator.

In-memory network here (real libp2p hosts: ``test_net_reconcile_libp2p.py``).
"""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.orders import VIA_RECONCILE, open_neighbour_gossip, open_order_gossip, wall_clock_ms
from p2pgrid.net.peer_schedule import PeerSchedule
from p2pgrid.net.reconcile import (
    CANCEL_KIND, ORDER_KIND, OpenItems, compute_digest, item_key, peek_item_key,
)
from p2pgrid.net.reconcile_messages import (
    BOOKS_PROTOCOL, MAX_BOOKS_FRAME_BYTES, DigestReply, DigestRequest, FetchReply, FetchRequest, IdsReply,
    IdsRequest, SlotDigest, decode_books_frame, encode_books_frame,
)
from p2pgrid.net.reconcile_service import BookReconciler, ReconcileConfig, open_book_reconciler
from p2pgrid.net.testing import DropGossip, cluster_keys, collect_deliveries, make_order, wait_until
from p2pgrid.errors import NetError, WireError
from p2pgrid.net.transport import StreamClosed, ValidationResult, peers_supporting
from p2pgrid.net.validation import OrderRules
from p2pgrid.trading.local_books import LocalBooks
from p2pgrid.wire import Cancel, OrderBatch, encode, pack, sign, to_plain

RULES = OrderRules(zone="zone-a")
BOUND_S = 60
FAST = ReconcileConfig(interval_s=0.2, poll_s=0.02, session_timeout_s=10.0, backoff_s=3600.0)
QUIET = dataclasses.replace(FAST, interval_s=3600.0)     # only new peers are pulled from by itself


@asynccontextmanager
async def open_node(network: MemoryNetwork, key, config: ReconcileConfig = FAST, *,  # type: ignore[no-untyped-def]
                    connect=True, drop=False):
    async with AsyncExitStack() as stack:
        raw = await stack.enter_async_context(
            network.open_transport(key, connect_to=network.addresses if connect else ()))
        transport = DropGossip(raw) if drop else raw
        gossip = await stack.enter_async_context(open_order_gossip(transport, RULES, tick_s=0.05))
        reconciler = await stack.enter_async_context(open_book_reconciler(transport, [gossip], wall_clock_ms, config))
        yield transport, gossip, reconciler


def orders(owner, count: int, now: int, first: int = 0):  # type: ignore[no-untyped-def]
    return [sign(make_order(owner, RULES, now, first + i), owner) for i in range(count)]


# --- the digest -----------------------------------------------------------------------------

KEYS = st.binary(min_size=49, max_size=49)


@given(st.lists(KEYS, unique=True, max_size=40), st.randoms(use_true_random=False))
def test_a_digest_does_not_depend_on_the_order_of_its_keys(keys, rng):
    shuffled = list(keys)
    rng.shuffle(shuffled)
    assert compute_digest("zone-a", 900, keys) == compute_digest("zone-a", 900, shuffled)


@given(st.lists(KEYS, unique=True, max_size=20), st.lists(KEYS, unique=True, max_size=20))
def test_two_slots_have_the_same_digest_exactly_when_they_hold_the_same_keys(a, b):
    same = set(a) == set(b)
    assert (compute_digest("zone-a", 900, a) == compute_digest("zone-a", 900, b)) is same


def test_a_digest_names_its_zone_and_slot():
    keys = [bytes(49)]
    assert compute_digest("zone-a", 900, keys).digest != compute_digest("zone-b", 900, keys).digest
    assert compute_digest("zone-a", 900, keys).digest != compute_digest("zone-a", 1800, keys).digest


SIGNER = cluster_keys(1, seed=7)[0]
NOW = 1_700_000_000_000
POOL = orders(SIGNER, 6, NOW)
CANCELS = [sign(Cancel(s.body.order_id, SIGNER.public_key, RULES.zone, s.body.slot, NOW + 1), SIGNER) for s in POOL[:3]]


@settings(max_examples=60, deadline=None)
@given(st.permutations(POOL + CANCELS))
def test_held_items_give_one_digest_whatever_order_they_arrived_in_cancels_included(arrival):
    held = OpenItems(RULES.slot_rules)
    for signed in arrival:
        held.add(signed, NOW)
    slot = POOL[0].body.slot
    expected = [item_key(c.body) for c in CANCELS] + [item_key(s.body) for s in POOL[3:]]
    assert held.digest(RULES.zone, slot) == compute_digest(RULES.zone, slot, expected)
    assert all(held.lacks(item_key(s.body)) is False for s in POOL)    # a cancelled order is not "missing"


def test_open_items_forget_orders_at_expiry_and_everything_at_gate_closure():
    held = OpenItems(RULES.slot_rules)
    short, long_ = orders(SIGNER, 2, NOW)
    short = sign(dataclasses.replace(short.body, expiry_ms=NOW + 1000), SIGNER)
    cancel = CANCELS[0]
    for signed in (short, long_, cancel):
        assert held.add(signed, NOW)
    assert not held.add(long_, NOW), "held already"
    held.prune(NOW + 1000)
    assert item_key(short.body) not in held and item_key(long_.body) in held
    closure = RULES.slot_rules.gate_closure_ms(long_.body.slot)
    held.prune(closure)
    assert len(held) == 0
    assert not held.add(long_, closure), "a closed slot takes nothing"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3_600_000), st.booleans()), min_size=1, max_size=30),
       st.lists(st.integers(0, 4 * 3_600_000), max_size=8))
def test_pruning_by_closing_time_keeps_exactly_what_a_full_scan_would(items, prune_times):
    """``prune`` pops what closed from a heap; the result equals judging every held item."""
    held = OpenItems(RULES.slot_rules)
    made = []
    for i, (n, expires_in, cancel) in enumerate(items):
        order = make_order(SIGNER, RULES, NOW, n)
        order = dataclasses.replace(order, order_id=i.to_bytes(16, "big"), expiry_ms=NOW + 1 + expires_in)
        made.append(sign(order, SIGNER))
        if cancel:
            made.append(sign(Cancel(order_id=order.order_id, owner=order.owner, zone=order.zone, slot=order.slot,
                                    created_ms=NOW), SIGNER))
    for signed in made:
        held.add(signed, NOW)
    by_key = {item_key(s.body): s for s in made}
    for t in sorted(NOW + dt for dt in prune_times):
        before = {k for k in by_key if k in held}
        held._pruned_ms = None                      # prune now, whatever the rate limit
        held.prune(t)
        assert {k for k in by_key if k in held} == {k for k in before if held._open(by_key[k].body, t)}


def test_keys_are_listed_in_pages_above_a_key():
    held = OpenItems(RULES.slot_rules)
    for signed in POOL:
        held.add(signed, NOW)
    slot = POOL[0].body.slot
    first, more = held.keys(RULES.zone, slot, b"", 4)
    rest, done = held.keys(RULES.zone, slot, first[-1], 4)
    assert more and not done and len(first) == 4 and len(rest) == 2
    assert first + rest == sorted(item_key(s.body) for s in POOL)


def test_an_item_key_is_read_from_its_wire_bytes():
    assert peek_item_key(POOL[0].encoded) == ORDER_KIND + SIGNER.public_key + POOL[0].body.order_id
    assert peek_item_key(CANCELS[0].encoded)[:1] == CANCEL_KIND


def test_the_schedule_pulls_new_peers_at_once_then_one_in_turn():
    schedule = PeerSchedule(10.0)
    a, b, c = b"a" * 32, b"b" * 32, b"c" * 32
    assert schedule.due({a, b}, 0.0) == [a, b]
    assert schedule.due({a, b}, 5.0) == []
    assert schedule.due({a, b, c}, 6.0) == [c]
    turns = [schedule.due({a, b, c}, t) for t in (10.0, 20.0, 30.0, 40.0)]
    assert turns == [[a], [b], [c], [a]]
    assert schedule.due({a, c}, 41.0) == []
    assert schedule.due({a, b, c}, 42.0) == [b], "a peer that comes back is pulled from again"


def test_the_schedule_pulls_from_many_new_peers_a_few_at_a_time():
    schedule = PeerSchedule(10.0, burst=2)
    peers = {bytes([i]) * 32 for i in range(5)}
    rounds = [schedule.due(peers, t) for t in (0.0, 0.5, 1.0, 1.5)]
    assert rounds == [sorted(peers)[:2], sorted(peers)[2:4], sorted(peers)[4:], []]


# --- two nodes ------------------------------------------------------------------------------

async def test_a_node_that_starts_after_the_orders_were_published_gets_them_all():
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0]) as (_, first, _):
        published = orders(keys[0], 300, wall_clock_ms())
        for signed in published:
            first.submit(signed)
        await first.flush()              # to nobody: no peer has joined the topic yet
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: len(first.items) == 300)
            async with open_node(network, keys[1]) as (_, late, reconciler):
                items, vias = await collect_deliveries(late, 300)
        assert sorted(s.encoded for s in items) == sorted(s.encoded for s in published)
        assert vias == {VIA_RECONCILE} and late.stats.delivered_batches == 0
        assert late.stats.reconciled_items == 300 and reconciler.stats.failures == {}
        slot = published[0].body.slot
        assert late.items.digest(RULES.zone, slot) == first.items.digest(RULES.zone, slot)


async def test_orders_a_node_dropped_from_gossip_are_pulled_later():
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0]) as (_, maker, _), \
            open_node(network, keys[1], drop=True) as (transport, busy, reconciler):
        transport.dropping = True
        published = orders(keys[0], 40, wall_clock_ms())
        for signed in published:
            maker.submit(signed)
        with trio.fail_after(BOUND_S):
            await maker.flush()
            items, vias = await collect_deliveries(busy, 40)
        assert {s.body.order_id for s in items} == {s.body.order_id for s in published}
        assert vias == {VIA_RECONCILE}
        assert busy.stats.ignored_items == {} and busy.stats.delivered_batches == 0   # gossip brought nothing
        assert reconciler.stats.fetched_items == 40


async def test_a_cancelled_order_is_not_resurrected_by_a_peer_that_missed_the_cancel():
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0], QUIET) as (_, owner, owner_reconciler), \
            open_node(network, keys[1], QUIET, drop=True) as (transport, other, other_reconciler):
        books = LocalBooks(RULES.zone, RULES.slot_rules)
        now = wall_clock_ms()
        [order] = orders(keys[0], 1, now)
        with trio.fail_after(BOUND_S):
            # Each has pulled from the other once, on connecting; from now on only when told to.
            await wait_until(lambda: owner_reconciler.stats.sessions == other_reconciler.stats.sessions == 1)
            owner.submit(order)
            await owner.flush()
            for item in (await collect_deliveries(other, 1))[0]:
                books.on_order(item, now)
            assert books.remaining(order.body.order_id) == order.body.qty_wh
            transport.dropping = True                  # the cancel goes past ``other``
            cancel = sign(Cancel(order.body.order_id, keys[0].public_key, RULES.zone, order.body.slot, now + 1),
                          keys[0])
            owner.submit(cancel)
            await owner.flush()
            await wait_until(lambda: item_key(cancel.body) in owner.items)
            # The owner pulls from the peer that still holds the order: nothing comes back.
            assert await owner_reconciler.reconcile_with(keys[1].public_key) == 0
            assert item_key(order.body) not in owner.items
            # The peer pulls from the owner: it gets the cancel, and its book drops the order.
            assert await other_reconciler.reconcile_with(keys[0].public_key) == 1, other.stats
            items, _ = await collect_deliveries(other, 1)
        assert [type(s.body) for s in items] == [Cancel]
        books.on_cancel(items[0])
        assert books.remaining(order.body.order_id) == 0
        assert item_key(order.body) not in other.items and item_key(cancel.body) in other.items
        slot = order.body.slot
        assert other.items.digest(RULES.zone, slot) == owner.items.digest(RULES.zone, slot)
        assert await owner_reconciler.reconcile_with(keys[1].public_key) == 0


async def test_a_peer_without_the_protocol_is_never_asked():
    keys = cluster_keys(3)
    network = MemoryNetwork()
    async with open_node(network, keys[0]) as (_, maker, _):
        async with network.open_transport(keys[2], connect_to=network.addresses) as plain:   # no books protocol
            async with open_node(network, keys[1]) as (transport, _, reconciler):
                published = orders(keys[0], 5, wall_clock_ms())
                for signed in published:
                    maker.submit(signed)
                with trio.fail_after(BOUND_S):
                    await maker.flush()
                    await wait_until(lambda: reconciler.stats.sessions >= 5)
                assert plain.local_peer in transport.peers()
                assert peers_supporting(transport, BOOKS_PROTOCOL) == {keys[0].public_key}
                assert reconciler.stats.failures == {}, reconciler.stats.last_failure


# --- bad answers and bad requests -----------------------------------------------------------

SLOT_DIGEST = SlotDigest(RULES.zone, 0, 1, b"\x01" * 32)


def valid_slot_digest() -> SlotDigest:
    slot = RULES.slot_rules.tradable_slots(wall_clock_ms())[0]
    return dataclasses.replace(SLOT_DIGEST, slot=slot)


def tampered(signed) -> bytes:  # type: ignore[no-untyped-def]
    forged = dataclasses.replace(signed.body, qty_wh=signed.body.qty_wh + 1)
    return pack([signed.spec.kind, signed.spec.version, signed.signer, to_plain(forged), signed.signature])


def bad_answers(victim_order):  # type: ignore[no-untyped-def]
    """Scripts of a lying server: request → answer bytes, one per way of breaking the protocol."""
    key = item_key(victim_order.body)
    digest = valid_slot_digest()

    def honest_until_fetch(fetch_answer):  # type: ignore[no-untyped-def]
        def answer(request):  # type: ignore[no-untyped-def]
            if isinstance(request, DigestRequest):
                return encode_books_frame(DigestReply(request.request_id, (digest,)))
            if isinstance(request, IdsRequest):
                return encode_books_frame(IdsReply(request.request_id, (key,), False))
            return fetch_answer(request)
        return answer

    def unsorted_ids(request):  # type: ignore[no-untyped-def]
        if isinstance(request, DigestRequest):
            return encode_books_frame(DigestReply(request.request_id, (digest,)))
        return encode_books_frame(IdsReply(request.request_id, (b"\x00" + b"\x09" * 48, b"\x00" + b"\x01" * 48), False))

    def endless_ids(request):  # type: ignore[no-untyped-def]
        if isinstance(request, DigestRequest):
            return encode_books_frame(DigestReply(request.request_id, (digest,)))
        following = int.from_bytes(request.after or bytes(49), "big") + 1
        return encode_books_frame(IdsReply(request.request_id, (following.to_bytes(49, "big"),), True))

    other = orders(cluster_keys(1, seed=9)[0], 1, wall_clock_ms())[0]
    return {
        "garbage": lambda request: b"\xc1\x00",
        "wrong_frame_kind": lambda request: encode_books_frame(IdsReply(request.request_id, (), False)),
        "wrong_request_id": lambda request: encode_books_frame(DigestReply(request.request_id + 7, ())),
        "zone_not_asked_for": lambda request: encode_books_frame(
            DigestReply(request.request_id, (dataclasses.replace(digest, zone="zone-z"),))),
        "unsorted_keys": unsorted_ids,
        "endless_key_pages": endless_ids,
        "item_not_asked_for": honest_until_fetch(
            lambda request: encode_books_frame(FetchReply(request.request_id, (other.encoded,)))),
        "forged_item": honest_until_fetch(
            lambda request: encode_books_frame(FetchReply(request.request_id, (tampered(victim_order),)))),
        "undecodable_item": honest_until_fetch(
            lambda request: encode_books_frame(FetchReply(request.request_id, (b"\xc1",)))),
        "oversize_frame": lambda request: b"\x00" * (MAX_BOOKS_FRAME_BYTES + 1),
    }


async def serve_script(script, stream) -> None:  # type: ignore[no-untyped-def]
    while True:
        try:
            request = decode_books_frame(await stream.receive_frame())
        except StreamClosed:
            return
        data = script(request)
        if len(data) > MAX_BOOKS_FRAME_BYTES:     # send what a framing check would refuse to write
            from p2pgrid.net.framing import encode_uvarint
            await stream._write_all(encode_uvarint(len(data)) + data)    # type: ignore[attr-defined]
            continue
        await stream.send_frame(data)


@pytest.mark.parametrize("case", sorted(bad_answers(orders(SIGNER, 1, NOW)[0])))
async def test_a_bad_answer_ends_only_its_session_and_the_books_stay_clean(case):
    keys = cluster_keys(3)
    network = MemoryNetwork()
    config = dataclasses.replace(QUIET, max_keys_per_slot=50)
    async with open_node(network, keys[0], QUIET) as (_, maker, _), \
            open_node(network, keys[1], config) as (_, victim, reconciler), \
            network.open_transport(keys[2], connect_to=network.addresses) as liar:
        [order] = orders(keys[0], 1, wall_clock_ms())
        script = bad_answers(order)[case]
        liar.set_stream_handler(BOOKS_PROTOCOL, lambda stream: serve_script(script, stream),
                                max_frame_bytes=2 * MAX_BOOKS_FRAME_BYTES)
        with trio.fail_after(BOUND_S):
            with pytest.raises(NetError if case == "oversize_frame" else WireError):
                await reconciler.reconcile_with(liar.local_peer)
            await reconciler._reconcile_quietly(liar.local_peer)
            expected = "net" if case == "oversize_frame" else "protocol"
            # (its own loop may have pulled from the new peer once too, before the backoff)
            assert set(reconciler.stats.failures) == {expected}, reconciler.stats.last_failure
            assert 1 <= reconciler.stats.failures[expected] <= 2
            assert (liar.local_peer in reconciler._backoff_until) is (expected == "protocol")
            assert len(victim.items) == 0 and victim.stats.reconciled_items == 0
            # Contained: an honest peer is still pulled from.
            maker.submit(order)
            await maker.flush()
            await wait_until(lambda: len(maker.items) == 1)
            assert await reconciler.reconcile_with(keys[0].public_key) in (0, 1)     # gossip may have won
            await wait_until(lambda: item_key(order.body) in victim.items)


async def test_a_bad_request_ends_its_stream_and_the_server_goes_on():
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0], QUIET) as (_, server, server_reconciler), \
            open_node(network, keys[1], QUIET) as (transport, client, client_reconciler):
        server.submit(orders(keys[0], 1, wall_clock_ms())[0])
        with trio.fail_after(BOUND_S):
            await server.flush()
            await wait_until(lambda: len(client.items) == 1)
            for garbage in (b"\xc1", encode_books_frame(DigestReply(1, ()))):     # undecodable; not a request
                stream = await transport.open_stream(keys[0].public_key, BOOKS_PROTOCOL)
                await stream.send_frame(garbage)
                with pytest.raises(StreamClosed):
                    await stream.receive_frame()
            assert server_reconciler.stats.refused_requests == 2
            assert await client_reconciler.reconcile_with(keys[0].public_key) == 0
        assert server_reconciler.answer(FetchRequest(1, "zone-z", (bytes(49),))) == FetchReply(1, ())
        assert server_reconciler.answer(IdsRequest(1, "zone-z", 0, b"", 10)) == IdsReply(1, (), False)


def test_reconciler_without_zones_answers_empty():
    reconciler = BookReconciler(None, wall_clock_ms)   # type: ignore[arg-type]
    assert reconciler.answer(DigestRequest(3, ("zone-a",), (SLOT_DIGEST,))) == DigestReply(3, ())


async def test_a_neighbour_zone_read_only_converges_too():
    """A node of zone-b that reads zone-a's orders (``market.locality``) pulls them like its own."""
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0]) as (_, home, _):
        published = orders(keys[0], 20, wall_clock_ms())
        for signed in published:
            home.submit(signed)
        await home.flush()
        async with AsyncExitStack() as stack:
            transport = await stack.enter_async_context(network.open_transport(keys[1], connect_to=network.addresses))
            own = await stack.enter_async_context(open_order_gossip(transport, OrderRules("zone-b"), tick_s=0.05))
            [neighbour] = await stack.enter_async_context(
                open_neighbour_gossip(transport, ["zone-a"], RULES.slot_rules, wall_clock_ms, tick_s=0.05))
            reconciler = await stack.enter_async_context(open_book_reconciler(transport, [own, neighbour],
                                                                              wall_clock_ms, FAST))
            with trio.fail_after(BOUND_S):
                items, vias = await collect_deliveries(neighbour, 20)
            assert {s.body.order_id for s in items} == {s.body.order_id for s in published}
            assert vias == {VIA_RECONCILE} and len(own.items) == 0
            assert reconciler.stats.failures == {}


async def test_the_late_gossip_copy_of_a_fetched_order_is_relayed_not_taken_for_a_replay():
    """Pulling must not make gossip still on its way look like a replay: the validator would
    REJECT the batch and score its honest relay down (five such and its messages are dropped)."""
    keys = cluster_keys(2)
    network = MemoryNetwork()
    async with open_node(network, keys[0], QUIET) as (_, maker, _), \
            open_node(network, keys[1], QUIET, drop=True) as (transport, busy, reconciler):
        transport.dropping = True
        [order] = orders(keys[0], 1, wall_clock_ms())
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: reconciler.stats.sessions == 1)
            maker.submit(order)
            await maker.flush()
            await wait_until(lambda: len(maker.items) == 1)
            assert await reconciler.reconcile_with(keys[0].public_key) == 1
        late_copy = encode(OrderBatch(RULES.zone, wall_clock_ms(), (order.encoded,)))
        assert busy.validate(keys[0].public_key, late_copy) is ValidationResult.ACCEPT
        assert busy.items.holds(order)                  # so the copy is relayed, not delivered again
        replay = encode(OrderBatch(RULES.zone, wall_clock_ms() + 1, (order.encoded,)))
        assert busy.validate(keys[0].public_key, replay) is ValidationResult.REJECT, "a second gossip copy is one"
