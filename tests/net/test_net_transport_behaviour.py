"""The Transport contract, checked on both implementations (in-memory and real libp2p on 127.0.0.1)."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.net.framing import FrameDecoder, encode_frame, encode_uvarint
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import cluster_keys, open_cluster, wait_for_mesh, wait_until
from p2pgrid.net.transport import (
    FrameTooLarge, PeerUnreachable, ProtocolNotSupported, StreamClosed, Transport, ValidationResult, accept_all,
)

TOPIC = "p2pgrid/v1/test/things"
BOUND_S = 60  # generous: two shared cores, several hosts in one process

KINDS = [pytest.param("memory", id="memory"),
         pytest.param("libp2p", id="libp2p", marks=pytest.mark.slow)]


def by_prefix(sender: bytes, data: bytes) -> ValidationResult:
    if data.startswith(b"bad"):
        return ValidationResult.REJECT
    if data.startswith(b"ignore"):
        return ValidationResult.IGNORE
    return ValidationResult.ACCEPT


@pytest.mark.parametrize("kind", KINDS)
async def test_transport_names_peers_by_public_key(kind):
    async with open_cluster(kind, 3) as nodes:
        keys = cluster_keys(3)
        assert [n.local_peer for n in nodes] == [k.public_key for k in keys]
        assert isinstance(nodes[0], Transport)
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: nodes[0].peers() == {keys[1].public_key, keys[2].public_key})
        assert keys[0].public_key in nodes[1].peers()


@pytest.mark.parametrize("kind", KINDS)
async def test_every_node_receives_every_accepted_message_with_its_publisher(kind):
    async with open_cluster(kind, 4) as nodes:
        subscriptions = [await n.subscribe(TOPIC, by_prefix) for n in nodes]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            await nodes[3].publish(TOPIC, b"hello")
            for subscription in subscriptions:
                message = await subscription.receive()
                assert (message.sender, message.data) == (nodes[3].local_peer, b"hello")


@pytest.mark.parametrize("kind", KINDS)
async def test_rejected_message_reaches_nobody_and_only_the_sender_is_scored_down(kind):
    async with open_cluster(kind, 3) as nodes:
        # node 1 is the attacker: its own validator lets anything out.
        subscriptions = [await n.subscribe(TOPIC, accept_all if i == 1 else by_prefix) for i, n in enumerate(nodes)]
        attacker, honest = nodes[1].local_peer, nodes[2].local_peer
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            assert nodes[0].peer_score(attacker, TOPIC) == 0
            for data in (b"bad-1", b"ignore-1", b"fine"):
                await nodes[1].publish(TOPIC, data)
            for i in (0, 2):
                assert (await subscriptions[i].receive()).data == b"fine"
            await wait_until(lambda: nodes[0].peer_score(attacker, TOPIC) < 0)
            await wait_until(lambda: nodes[2].peer_score(attacker, TOPIC) < 0)
        assert nodes[0].peer_score(honest, TOPIC) == 0, "an honest relay must not be scored down"
        assert nodes[2].peer_score(nodes[0].local_peer, TOPIC) == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_each_reject_costs_score_and_ignore_costs_nothing(kind):
    async with open_cluster(kind, 2) as nodes:
        receiver = await nodes[0].subscribe(TOPIC, by_prefix)
        await nodes[1].subscribe(TOPIC, accept_all)
        sender = nodes[1].local_peer

        async def send_then_mark(data: bytes, mark: bytes) -> float:
            # One connection: messages are processed in order, so when the mark arrives the
            # message before it has been judged.
            await nodes[1].publish(TOPIC, data)
            await nodes[1].publish(TOPIC, mark)
            assert (await receiver.receive()).data == mark
            return nodes[0].peer_score(sender, TOPIC)

        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            after_ignore = await send_then_mark(b"ignore-1", b"mark-1")
            after_one_reject = await send_then_mark(b"bad-1", b"mark-2")
            after_another_ignore = await send_then_mark(b"ignore-2", b"mark-3")
            after_two_rejects = await send_then_mark(b"bad-2", b"mark-4")
        assert after_ignore == 0
        assert after_one_reject < 0
        assert after_another_ignore == pytest.approx(after_one_reject, rel=0.1)
        assert after_two_rejects == pytest.approx(2 * after_one_reject, rel=0.1)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_node_receives_its_own_messages_after_its_own_validator(kind):
    async with open_cluster(kind, 2) as nodes:
        subscription = await nodes[0].subscribe(TOPIC, by_prefix)
        await nodes[1].subscribe(TOPIC, by_prefix)
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            await nodes[0].publish(TOPIC, b"bad-own")
            await nodes[0].publish(TOPIC, b"own")
            message = await subscription.receive()
        assert (message.sender, message.data) == (nodes[0].local_peer, b"own")


async def echo_reversed(stream):
    while True:
        frame = await stream.receive_frame()
        await stream.send_frame(frame[::-1])


@pytest.mark.parametrize("kind", KINDS)
async def test_persistent_stream_carries_many_round_trips(kind):
    async with open_cluster(kind, 2) as nodes:
        nodes[0].set_stream_handler("/p2pgrid/echo/1", echo_reversed)
        with trio.fail_after(BOUND_S):
            stream = await nodes[1].open_stream(nodes[0].local_peer, "/p2pgrid/echo/1")
            assert stream.peer == nodes[0].local_peer
            payloads = [b"", b"x", bytes(range(256)) * 40] + [b"round-trip %d" % i for i in range(200)]
            for payload in payloads:
                await stream.send_frame(payload)
                assert await stream.receive_frame() == payload[::-1]
            await stream.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_handler_sees_the_openers_public_key_and_can_pipeline(kind):
    seen = []

    async def answer_twice(stream):
        seen.append(stream.peer)
        for _ in range(2):
            await stream.send_frame(await stream.receive_frame())

    async with open_cluster(kind, 2) as nodes:
        nodes[0].set_stream_handler("/p2pgrid/twice/1", answer_twice)
        with trio.fail_after(BOUND_S):
            stream = await nodes[1].open_stream(nodes[0].local_peer, "/p2pgrid/twice/1")
            await stream.send_frame(b"one")
            await stream.send_frame(b"two")
            assert [await stream.receive_frame(), await stream.receive_frame()] == [b"one", b"two"]
            with pytest.raises(StreamClosed):
                await stream.receive_frame()
        assert seen == [nodes[1].local_peer]


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_refuses_oversize_frames_on_both_sides(kind):
    async with open_cluster(kind, 2) as nodes:
        outcome = []

        async def small_frames_only(stream):
            try:
                await stream.receive_frame()
            except FrameTooLarge:
                outcome.append("refused")

        nodes[0].set_stream_handler("/p2pgrid/small/1", small_frames_only, max_frame_bytes=100)
        with trio.fail_after(BOUND_S):
            stream = await nodes[1].open_stream(nodes[0].local_peer, "/p2pgrid/small/1", max_frame_bytes=1000)
            with pytest.raises(FrameTooLarge):
                await stream.send_frame(b"x" * 1001)
            await stream.send_frame(b"x" * 101)
            await wait_until(lambda: outcome == ["refused"])


@pytest.mark.parametrize("kind", KINDS)
async def test_unknown_protocol_and_unknown_peer_are_typed_errors(kind):
    async with open_cluster(kind, 2) as nodes:
        with trio.fail_after(BOUND_S):
            with pytest.raises(ProtocolNotSupported):
                await nodes[1].open_stream(nodes[0].local_peer, "/p2pgrid/nobody-serves-this/1")
            with pytest.raises(PeerUnreachable):
                await nodes[1].open_stream(bytes(32), "/p2pgrid/echo/1")


async def test_memory_partition_stops_gossip_until_healed():
    async with open_cluster("memory", 3, links=[(1, 0), (2, 1)]) as nodes:
        subscriptions = [await n.subscribe(TOPIC) for n in nodes]
        nodes[2].disconnect(nodes[1].local_peer)
        await nodes[0].publish(TOPIC, b"during partition")
        assert (await subscriptions[1].receive()).data == b"during partition"
        await nodes[2].connect(nodes[1].listen_addrs[0])
        await nodes[0].publish(TOPIC, b"after healing")
        with trio.fail_after(5):
            assert (await subscriptions[2].receive()).data == b"after healing"


async def test_memory_transport_runs_under_a_mock_clock(autojump_clock):
    network = MemoryNetwork()
    keys = cluster_keys(2)
    async with network.open_transport(keys[0]) as a, network.open_transport(keys[1]) as b:
        await b.connect(a.listen_addrs[0])
        subscription = await a.subscribe(TOPIC)
        await b.publish(TOPIC, b"tick")
        assert (await subscription.receive()).data == b"tick"


async def test_memory_connect_to_unknown_address_is_unreachable():
    async with open_cluster("memory", 1) as (node,):
        with pytest.raises(PeerUnreachable):
            await node.connect("memory/" + "00" * 32)


def test_frame_decoder_reassembles_frames_split_anywhere():
    frames = [b"", b"a", b"hello" * 100, bytes(300)]
    wire = b"".join(encode_frame(f, 1000) for f in frames)
    for cut in range(1, 12):
        decoder, out = FrameDecoder(1000), []
        for start in range(0, len(wire), cut):
            decoder.feed(wire[start:start + cut])
            while (frame := decoder.next_frame()) is not None:
                out.append(frame)
        assert out == frames and not decoder.has_partial_frame


def test_frame_decoder_refuses_a_huge_length_before_the_payload_arrives():
    decoder = FrameDecoder(1000)
    decoder.feed(encode_uvarint(10**9))
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    endless = FrameDecoder(1000)
    endless.feed(b"\xff" * 11)
    with pytest.raises(FrameTooLarge):
        endless.next_frame()


@pytest.mark.parametrize("kind", KINDS)
async def test_unbatched_burst_far_above_library_limits_arrives_whole(kind):
    # py-libp2p's defaults drop this: > 10 messages/s per topic, > 32 queued per peer and per
    # subscription. gossip_config raises those limits; this proves nothing is dropped silently.
    count = 200
    async with open_cluster(kind, 3) as nodes:
        subscriptions = [await n.subscribe(TOPIC) for n in nodes]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            for i in range(count):
                await nodes[0].publish(TOPIC, b"burst %d" % i)
            for subscription in subscriptions:
                got = [(await subscription.receive()).data for _ in range(count)]
                assert sorted(got) == sorted(b"burst %d" % i for i in range(count))


@pytest.mark.slow
async def test_libp2p_node_starts_with_unreachable_bootstrap_and_dials_bootstrap_peers():
    from p2pgrid.net.libp2p_host import open_libp2p_transport, peer_id_of

    first_key, second_key, absent_key = cluster_keys(3, seed=5)
    absent = f"/ip4/127.0.0.1/tcp/9/p2p/{peer_id_of(absent_key.public_key).to_base58()}"
    async with open_libp2p_transport(first_key) as first:
        assert first.peer_id == peer_id_of(first_key.public_key).to_base58()
        async with open_libp2p_transport(second_key, bootstrap=[absent, first.listen_addrs[0]]) as second:
            assert len(second.bootstrap_failures) == 1
            assert second.peers() == {first_key.public_key}
        with pytest.raises(PeerUnreachable):
            await first.connect("/ip4/127.0.0.1/tcp/9")


@pytest.mark.parametrize("kind", KINDS)
async def test_request_helpers_answer_on_persistent_and_one_shot_streams(kind):
    from p2pgrid.net.streams import answer_each_frame, request_once

    async def shout(peer: bytes, request: bytes) -> bytes:
        return peer[:2] + request.upper()

    async with open_cluster(kind, 2) as nodes:
        nodes[0].set_stream_handler("/p2pgrid/shout/1", answer_each_frame(shout))
        prefix = nodes[1].local_peer[:2]
        with trio.fail_after(BOUND_S):
            assert await request_once(nodes[1], nodes[0].local_peer, "/p2pgrid/shout/1", b"once") == prefix + b"ONCE"
            stream = await nodes[1].open_stream(nodes[0].local_peer, "/p2pgrid/shout/1")
            for word in (b"many", b"round", b"trips"):
                await stream.send_frame(word)
                assert await stream.receive_frame() == prefix + word.upper()
            await stream.aclose()
