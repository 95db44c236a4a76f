import pytest
import trio

from p2pgrid.net.requests import RequestStreams, StreamServer
from p2pgrid.net.testing import open_cluster
from p2pgrid.net.transport import NetError

PROTOCOL = "/p2pgrid/test-echo/1"


async def echo(data: bytes, peer: bytes) -> bytes:
    return peer[:4] + data


async def test_many_requests_share_one_stream_and_answers_come_back_in_order():
    async with open_cluster("memory", 2) as (a, b):
        server = StreamServer(echo)
        b.set_stream_handler(PROTOCOL, server.serve)
        client = RequestStreams(a, PROTOCOL, 1024)
        replies = []

        async def ask(i: int) -> None:
            replies.append((i, await client.request(b.local_peer, bytes([i]))))

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(ask, i)
        assert sorted(replies) == [(i, a.local_peer[:4] + bytes([i])) for i in range(20)]
        assert len(server._served) == 1          # one persistent stream carried all 20


async def test_a_closed_server_ends_its_streams_and_the_client_reconnects_to_a_new_one():
    async with open_cluster("memory", 2) as (a, b):
        old = StreamServer(echo)
        b.set_stream_handler(PROTOCOL, old.serve)
        client = RequestStreams(a, PROTOCOL, 1024)
        assert await client.request(b.local_peer, b"x") == a.local_peer[:4] + b"x"
        await old.aclose()                        # the service behind the protocol stopped

        async def answer_new(data: bytes, peer: bytes) -> bytes:
            return b"new:" + data

        b.set_stream_handler(PROTOCOL, StreamServer(answer_new).serve)
        assert await client.request(b.local_peer, b"y") == b"new:y"


async def test_an_unreachable_peer_is_a_net_error():
    async with open_cluster("memory", 2) as (a, b):
        a.disconnect(b.local_peer)
        with pytest.raises(NetError):
            await RequestStreams(a, PROTOCOL, 1024).request(b.local_peer, b"x")


async def test_a_request_cancelled_before_its_answer_never_hands_that_answer_to_the_next_request():
    async with open_cluster("memory", 2) as (a, b):
        slow_first = trio.Event()

        async def answer_late_once(data: bytes, peer: bytes) -> bytes:
            if data == b"first":
                await slow_first.wait()          # answered only after the client gave up on it
            return b"re:" + data

        b.set_stream_handler(PROTOCOL, StreamServer(answer_late_once).serve)
        client = RequestStreams(a, PROTOCOL, 1024)
        with trio.move_on_after(0.2) as scope:
            await client.request(b.local_peer, b"first")
        assert scope.cancelled_caught
        slow_first.set()
        with trio.fail_after(10):
            assert await client.request(b.local_peer, b"second") == b"re:second"
