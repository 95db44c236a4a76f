"""Discovery, dial on demand and the connection bound on real py-libp2p hosts (127.0.0.1).

A node that knows one rendezvous point learns the members of its zone from it; ``open_stream`` to
a peer it is not connected to dials it — by the address discovery stored, or, for a peer of
another zone, by looking its id up at the point — also after its host was restarted. A point with
more connections than its bound closes idle ones, never the peers it dialled itself nor a
connection whose stream is in use.
"""

from __future__ import annotations

import pytest
import trio

from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.libp2p_host import peer_id_of
from p2pgrid.net.testing import open_cluster, wait_until
from p2pgrid.net.transport import PeerUnreachable

BOUND_S = 60
ECHO = "/p2pgrid/test-echo/1"
HOME = "p2pgrid/v1/home/orders"
AWAY = "p2pgrid/v1/away/orders"


async def echo(stream) -> None:
    while True:
        await stream.send_frame(await stream.receive_frame())


async def round_trip(transport, peer: bytes, data: bytes = b"ping") -> bytes:
    with trio.fail_after(BOUND_S):
        stream = await transport.open_stream(peer, ECHO)
        try:
            await stream.send_frame(data)
            return await stream.receive_frame()
        finally:
            await stream.aclose()


def knows_member(transport, other) -> bool:
    discovery = transport.discovery
    return discovery is not None and any(
        peer_id_of(other.local_peer) in members for members in discovery.members.by_namespace.values())


@pytest.mark.slow
async def test_open_stream_dials_a_peer_it_is_not_connected_to_by_what_discovery_found():
    # Node 0 serves a rendezvous point; 1, 2 (zone "home") and 3 (zone "away") know only node 0.
    # A target of one connection keeps discovery from dialling members by itself.
    def config(i: int) -> DiscoveryConfig:
        return DiscoveryConfig(serve_rendezvous=i == 0, target_connections=1)

    async with open_cluster("libp2p", 4, seed=21, links=[(1, 0), (2, 0), (3, 0)], discovery=config) as transports:
        point, buyer, maker, stranger = transports
        for transport, topic in zip(transports, (HOME, HOME, HOME, AWAY)):
            transport.set_stream_handler(ECHO, echo)
            await transport.subscribe(topic)
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: knows_member(buyer, maker))
        assert not knows_member(buyer, stranger)           # another zone's member is not listed
        assert maker.local_peer not in buyer.peers()
        assert stranger.local_peer not in buyer.peers()

        assert await round_trip(buyer, maker.local_peer) == b"ping"          # by the stored address
        assert maker.local_peer in buyer.peers()
        assert await round_trip(buyer, stranger.local_peer, b"by id") == b"by id"   # looked up at the point
        assert peer_id_of(stranger.local_peer) in buyer.discovery.looked_up

        nobody = bytes(range(32))
        with pytest.raises(PeerUnreachable, match="no address"), trio.fail_after(BOUND_S):
            await buyer.open_stream(nobody, ECHO)

        # A restarted host starts from an empty peerstore: discovery resumes from the dialled point.
        buyer.inject_daemon_failure()
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: buyer.restarts == 1 and buyer.discovery is not None
                             and buyer.discovery.rounds > 0 and buyer.discovery.points)
        assert await round_trip(buyer, stranger.local_peer, b"again") == b"again"


@pytest.mark.slow
async def test_a_node_above_its_bound_closes_idle_connections_but_not_protected_or_busy_ones():
    bound = 4

    def config(i: int) -> DiscoveryConfig:
        if i == 0:   # the crowded node: short grace so the test need not wait 10 s
            return DiscoveryConfig(serve_rendezvous=True, max_connections=bound, target_connections=2, grace_s=0.5)
        return DiscoveryConfig(enabled=False)

    async with open_cluster("libp2p", 9, seed=22, links=[(i, 0) for i in range(2, 9)], discovery=config) as transports:
        crowded, dialled_by_it, busy = transports[0], transports[1], transports[2]
        crowded.set_stream_handler(ECHO, echo)
        await crowded.connect(dialled_by_it.listen_addrs[0])          # protected: it dialled that peer
        assert len(crowded.peers()) == 8
        round_trips = 0

        async def keep_busy() -> None:
            nonlocal round_trips
            stream = await busy.open_stream(crowded.local_peer, ECHO)
            while True:
                await stream.send_frame(b"busy")
                assert await stream.receive_frame() == b"busy"
                round_trips += 1
                await trio.sleep(0.2)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_busy)
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: len(crowded.peers()) <= bound)
                await trio.sleep(2)                      # a few more passes of the policy
            assert len(crowded.peers()) <= bound
            assert {dialled_by_it.local_peer, busy.local_peer} <= crowded.peers()
            before = round_trips
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: round_trips > before)       # its stream was never cut
            nursery.cancel_scope.cancel()
        assert crowded.discovery.trimmed >= 8 - bound
