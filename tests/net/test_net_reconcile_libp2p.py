"""Book reconciliation and protocol support between real libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.net.libp2p_host import open_libp2p_transport
from p2pgrid.net.orders import VIA_RECONCILE, open_order_gossip, wall_clock_ms
from p2pgrid.net.reconcile_messages import BOOKS_PROTOCOL
from p2pgrid.net.reconcile_service import ReconcileConfig, open_book_reconciler
from p2pgrid.net.testing import LOOPBACK, DropGossip, cluster_keys, collect_deliveries, make_order, wait_until
from p2pgrid.net.transport import peers_supporting
from p2pgrid.net.validation import OrderRules
from p2pgrid.wire import sign

pytestmark = pytest.mark.slow

RULES = OrderRules(zone="zone-a")
BOUND_S = 120       # generous: several hosts in one process on two shared cores, maybe one kept busy
FAST = ReconcileConfig(interval_s=0.3, poll_s=0.05, session_timeout_s=60.0)
ORDERS = 500


async def test_a_late_node_fills_its_book_by_pulling_and_never_asks_a_peer_without_the_protocol():
    first, late_key, plain_key = cluster_keys(3, seed=3)
    async with open_libp2p_transport(first, LOOPBACK) as transport, \
            open_order_gossip(transport, RULES, tick_s=0.05) as gossip, \
            open_book_reconciler(transport, [gossip], wall_clock_ms, FAST):
        now = wall_clock_ms()
        published = [sign(make_order(first, RULES, now, i), first) for i in range(ORDERS)]
        for signed in published:
            gossip.submit(signed)
        with trio.fail_after(BOUND_S):
            await gossip.flush()                   # nobody has joined the topic: gossipsub drops them
            await wait_until(lambda: len(gossip.items) == ORDERS)
        # A libp2p peer that speaks no p2pgrid protocol (as a JS libp2p node on the network).
        async with open_libp2p_transport(plain_key, LOOPBACK) as plain, \
                open_libp2p_transport(late_key, LOOPBACK) as late_host, \
                open_order_gossip(late := DropGossip(late_host), RULES, tick_s=0.05) as late_gossip, \
                open_book_reconciler(late, [late_gossip], wall_clock_ms, FAST) as reconciler:
            # gossipsub's message cache would still offer orders this recent to a newcomer:
            # pretend it missed them too, as a node under load does.
            late.dropping = True
            with trio.fail_after(BOUND_S):
                await late.connect(plain.listen_addrs[0])
                started = trio.current_time()
                await late.connect(transport.listen_addrs[0])
                items, vias = await collect_deliveries(late_gossip, ORDERS)
                fill_s = trio.current_time() - started
                await wait_until(lambda: reconciler.stats.sessions >= 4)    # periodic pulls went on
            assert sorted(s.encoded for s in items) == sorted(s.encoded for s in published)
            assert vias == {VIA_RECONCILE}
            assert plain.local_peer in late.peers()
            assert peers_supporting(late, BOOKS_PROTOCOL) == {first.public_key}
            assert not late.supports(plain.local_peer, BOOKS_PROTOCOL)
            assert reconciler.stats.failures == {}, reconciler.stats.last_failure
            print(f"\nlate node filled its book with {ORDERS} orders in {fill_s:.2f} s after connecting")


async def test_a_protocol_registered_after_connecting_is_learned_by_the_peer():
    keys = cluster_keys(2, seed=4)
    protocol = "/p2pgrid/test-late-handler/1"
    async with open_libp2p_transport(keys[0], LOOPBACK) as a, open_libp2p_transport(keys[1], LOOPBACK) as b:
        with trio.fail_after(BOUND_S):
            await b.connect(a.listen_addrs[0])
            await wait_until(lambda: a.local_peer in b.peers())
            await trio.sleep(0.5)                  # identify ran on connecting, before the handler
            assert not b.supports(a.local_peer, protocol)

            async def serve(stream):  # type: ignore[no-untyped-def]
                await stream.aclose()

            a.set_stream_handler(protocol, serve)
            await wait_until(lambda: b.supports(a.local_peer, protocol))
        assert not b.supports(a.local_peer, "/p2pgrid/nobody-serves-this/1")
        assert not b.supports(cluster_keys(3, seed=4)[2].public_key, protocol), "not connected"



async def test_a_peer_whose_identify_failed_is_identified_again():
    """py-libp2p identifies a peer once, on connecting, and gives up if that times out (a busy
    machine): without another try, ``supports`` would say no for the whole connection, and the
    peer would never be asked for books or ledger entries."""
    keys = cluster_keys(2, seed=5)
    async with open_libp2p_transport(keys[0], LOOPBACK) as a, open_libp2p_transport(keys[1], LOOPBACK) as b:
        with trio.fail_after(BOUND_S):
            await b.connect(a.listen_addrs[0])
            a.set_stream_handler(BOOKS_PROTOCOL, lambda stream: stream.aclose())
            await wait_until(lambda: b.supports(a.local_peer, BOOKS_PROTOCOL))
            # As if the identify exchange had timed out: nothing known of the peer's protocols.
            host = b._gen.host
            peer_id = next(p for p in host.get_connected_peers())
            host.get_peerstore().clear_protocol_data(peer_id)
            host._identified_peers.pop(peer_id, None)
            assert not b.supports(a.local_peer, BOOKS_PROTOCOL)
            await wait_until(lambda: b.supports(a.local_peer, BOOKS_PROTOCOL))
