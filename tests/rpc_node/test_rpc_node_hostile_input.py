"""Hostile input against a running node's servers (RPC over HTTP and WebSocket, metrics), over
real sockets on 127.0.0.1. Each case asserts what the server answers and that the node still
answers ``node_info`` and its book afterwards; each table ends with a trade through the node.

The nodes run with short head timeouts and small caps (``LIMITS``) so that the cases about time
and caps finish quickly; the behaviour does not depend on the numbers.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Callable

import httpx
import pytest
import trio
import trio_websocket

from p2pgrid.node.app import find_service
from p2pgrid.node.metrics import MetricsLimits
from p2pgrid.node.rpc import MetricsService, RpcService, read_endpoint
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc.auth import read_token
from p2pgrid.rpc.client import calls
from p2pgrid.rpc.server import RpcLimits
from p2pgrid.wire import Side
from rpc_node_helpers import FUNDS_UC, open_slot, poll, rpc_client

RPC_LIMITS = RpcLimits(head_timeout_s=2.0, max_subscriptions=4, max_body_bytes=64 * 1024, max_pending=32)
METRICS_LIMITS = MetricsLimits(head_timeout_s=0.5, max_connections=2, max_pending=4)
BOUND_S = 30        # generous: the answer is awaited, never timed


@pytest.fixture
async def cluster(tmp_path):
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(1, 2), metrics_nodes=(1,), funds_uc=FUNDS_UC,
                                 rpc_limits=RPC_LIMITS, metrics_limits=METRICS_LIMITS) as nodes:
        yield nodes


# --- raw sockets ------------------------------------------------------------------------------

async def exchange(port: int, data: bytes, *, then_close: bool = False, half_close: bool = False) -> bytes:
    """Send ``data`` and read until the server closes (with ``then_close``: close at once; with
    ``half_close``: end our side of the connection, then read)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    received = b""
    async with stream:
        await stream.send_all(data)
        if then_close:
            return b""
        if half_close:
            await stream.send_eof()
        with trio.fail_after(BOUND_S):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


def post(token: str, body: bytes, *, headers: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n" + headers
            + b"\r\n" + body)


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def status_and_json(raw: bytes) -> tuple[int, object]:
    _, _, body = raw.partition(b"\r\n\r\n")
    return status_of(raw), (json.loads(body) if body else None)


def error_code(raw: bytes) -> tuple[int, int]:
    status, answer = status_and_json(raw)
    assert isinstance(answer, dict), raw
    return status, answer["error"]["code"]


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One masked client frame (RFC 6455 §5.2), payload under 64 KiB."""
    mask = os.urandom(4)
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return bytes([0x80 | opcode]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_upgrade(token: str) -> bytes:
    return (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n\r\n")


def call(method: str, request_id: object = 1, params: object = None) -> bytes:
    message = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode()


# --- after each case --------------------------------------------------------------------------

async def assert_node_serves(node) -> None:
    async with rpc_client(node) as client:
        info = await client.call(calls.node_info())
        assert info.account == node.key.public_key
        await client.call(calls.book_get(node.zone, open_slot(node)))


async def assert_node_trades(maker, taker) -> None:
    slot = open_slot(maker)
    async with rpc_client(maker) as sell, rpc_client(taker) as buy:
        await sell.call(calls.order_place(maker.zone, slot, Side.SELL, 500, 200_000))
        await poll(lambda: buy.call(calls.book_get(maker.zone, slot)), lambda b: b.asks)
        execution = await buy.call(calls.trade_execute(maker.zone, slot, Side.BUY, 500, 250_000))
    assert execution.filled_wh == 500


def token_of(node) -> str:
    return read_token(read_endpoint(node.config.node.data_dir)["token_file"])


# --- RPC over HTTP ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    request: Callable[[str], bytes]          # token → bytes on the wire
    check: Callable[[bytes], None]
    then_close: bool = False
    half_close: bool = False


def assert_case(case: Case, raw: bytes) -> None:
    try:
        case.check(raw)
    except AssertionError as failed:
        raise AssertionError(f"case {case.name!r}: {failed}") from None


def expect(status: int, code: int) -> Callable[[bytes], None]:
    def check(raw: bytes) -> None:
        assert error_code(raw) == (status, code), raw[:300]
    return check


def expect_closed_without_answer(raw: bytes) -> None:
    assert raw == b""


def expect_status(status: int) -> Callable[[bytes], None]:
    def check(raw: bytes) -> None:
        assert status_of(raw) == status, raw[:300]
    return check


def surrogate_id_echoed(raw: bytes) -> None:
    status, answer = status_and_json(raw)
    assert status == 200 and answer["id"] == "\ud800" and "result" in answer
    assert b"\\ud800" in raw                       # escaped: the body is valid UTF-8


HTTP_CASES = [
    Case("10,000-deep nested JSON", lambda t: post(t, b"[" * 10_000 + b"]" * 10_000), expect(200, -32700)),
    Case("lone surrogate in method", lambda t: post(t, b'{"jsonrpc":"2.0","method":"\\ud800","id":1}'),
         expect(200, -32601)),
    Case("lone surrogate in id", lambda t: post(t, b'{"jsonrpc":"2.0","method":"node_info","id":"\\ud800"}'),
         surrogate_id_echoed),
    Case("malformed chunked body", lambda t: (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.encode()
                                              + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n"),
         expect(400, -32600)),
    Case("client gone mid-body", lambda t: post(t, b'{"jsonrpc"').replace(b"Length: 10", b"Length: 99"),
         expect_closed_without_answer, then_close=True),
    Case("body shorter than its length, then EOF",
         lambda t: post(t, b'{"jsonrpc"').replace(b"Length: 10", b"Length: 99"), expect(400, -32600),
         half_close=True),
    Case("not JSON", lambda t: post(t, b"\xff\xfe{"), expect(200, -32700)),
    Case("no token", lambda t: post("", call("node_info")), expect(401, -32001)),
    Case("GET instead of POST", lambda t: b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + t.encode()
         + b"\r\n\r\n", expect(405, -32600)),
    Case("oversize body", lambda t: post(t, call("node_info", params={"pad": "x" * 70_000})), expect(413, -32600)),
    Case("TLS hello on the HTTP port", lambda t: b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
         expect_status(400)),
    Case("a head that never ends", lambda t: b"POST / HTTP/1.1\r\nHost: x\r\n", expect_closed_without_answer),
    Case("unknown method", lambda t: post(t, call("no_such_method")), expect(200, -32601)),
]


async def test_rpc_http_answers_each_hostile_input_and_the_node_keeps_serving(cluster):
    node = cluster[1]
    port, token = read_endpoint(node.config.node.data_dir)["port"], token_of(node)
    for case in HTTP_CASES:
        with trio.fail_after(BOUND_S):
            raw = await exchange(port, case.request(token), then_close=case.then_close, half_close=case.half_close)
        assert_case(case, raw)
        await assert_node_serves(node)
    await assert_node_trades(cluster[2], node)


# --- RPC over WebSocket -----------------------------------------------------------------------

async def ws_answer(ws, message: str) -> dict:
    await ws.send_message(message)
    with trio.fail_after(BOUND_S):
        return json.loads(await ws.get_message())


async def test_rpc_websocket_answers_each_hostile_input_and_the_node_keeps_serving(cluster):
    node = cluster[1]
    endpoint = read_endpoint(node.config.node.data_dir)
    token = token_of(node)
    auth = [(b"authorization", f"Bearer {token}".encode())]

    # Invalid UTF-8 in a text frame: close code 1007, then the TCP connection ends.
    stream = await trio.open_tcp_stream("127.0.0.1", endpoint["port"])
    async with stream:
        await stream.send_all(ws_upgrade(token))
        received = b""
        with trio.fail_after(BOUND_S):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(65536)
            assert received.startswith(b"HTTP/1.1 101")
            await stream.send_all(ws_frame(0x1, b'{"m":"\xff\xfe"}'))
            while chunk := await stream.receive_some(65536):
                received += chunk
    _, _, frames = received.partition(b"\r\n\r\n")
    assert frames[0] == 0x88 and frames[2:4] == struct.pack("!H", 1007)       # close, code 1007
    await assert_node_serves(node)

    async with trio_websocket.open_websocket_url(endpoint["ws_url"], extra_headers=auth) as ws:
        deep = await ws_answer(ws, "[" * 10_000 + "]" * 10_000)
        assert deep["error"]["code"] == -32700
        lone = await ws_answer(ws, '{"jsonrpc":"2.0","method":"\\ud800","id":"\\udfff"}')
        assert (lone["error"]["code"], lone["id"]) == (-32601, "\udfff")
        codes = []
        for i in range(RPC_LIMITS.max_subscriptions + 1):
            answer = await ws_answer(ws, call("subscribe", i, {"topic": "book"}).decode())
            codes.append(answer["error"]["code"] if "error" in answer else 0)
        assert codes == [0] * RPC_LIMITS.max_subscriptions + [-32008]
    await assert_node_serves(node)

    async with trio_websocket.open_websocket_url(endpoint["ws_url"], extra_headers=auth) as ws:
        await ws.send_message(call("node_info", params={"pad": "x" * 70_000}).decode())
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            with trio.fail_after(BOUND_S):
                await ws.get_message()
    assert closed.value.reason.code == 1009
    await assert_node_serves(node)

    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(endpoint["ws_url"]):
            pass
    assert rejected.value.status_code == 401
    await assert_node_serves(node)
    await assert_node_trades(cluster[2], node)


# --- half-open flood --------------------------------------------------------------------------

async def test_a_half_open_flood_does_not_starve_a_client_with_the_token(cluster):
    """200 connections that send nothing (or half a head) while a client keeps calling: every call
    is answered. The flood is larger than ``max_pending``, so the oldest idle ones are dropped."""
    node = cluster[1]
    port = read_endpoint(node.config.node.data_dir)["port"]
    flood: list[trio.SocketStream] = []
    answered = 0
    with trio.fail_after(BOUND_S):
        for i in range(200):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            if i % 2:
                await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            flood.append(stream)
            if i % 4 == 0:
                async with rpc_client(node) as client:     # a new connection in the middle of the flood
                    assert (await client.call(calls.node_info())).account == node.key.public_key
                answered += 1
    assert answered == 50 and find_service(node, RpcService).server.gate.evicted > 0
    for stream in flood:
        await stream.aclose()
    await assert_node_trades(cluster[2], node)


# --- metrics ------------------------------------------------------------------------------------

def scrape() -> bytes:
    return b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


async def assert_scrape_works(url: str) -> None:
    async with httpx.AsyncClient(timeout=BOUND_S) as client:
        response = await client.get(url)
    assert response.status_code == 200 and b"p2pgrid_peers" in response.content


METRICS_CASES = [
    Case("silent connection", lambda _: b"", expect_closed_without_answer),
    Case("half a head", lambda _: b"GET /metrics HTTP/1.1\r\n", expect_closed_without_answer),
    Case("garbage", lambda _: b"\x16\x03\x01\x00\x00\r\n\r\n", expect_closed_without_answer),
    Case("wrong path", lambda _: b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", expect_status(404)),
    Case("POST", lambda _: b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
         expect_status(404)),
    Case("body that never ends", lambda _: b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nab",
         expect_closed_without_answer),
]


async def test_metrics_answers_each_hostile_input_and_the_node_keeps_serving(cluster):
    node = cluster[1]
    url = find_service(node, MetricsService).url
    port = read_endpoint(node.config.node.data_dir, "metrics")["port"]
    for case in METRICS_CASES:
        assert_case(case, await exchange(port, case.request("")))
        await assert_scrape_works(url)
        await assert_node_serves(node)

    # A connection cap: two keep-alive scrapers hold it, a third is told 503, a later one is served.
    held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(METRICS_LIMITS.max_connections)]
    for stream in held:
        await stream.send_all(scrape())
        with trio.fail_after(BOUND_S):
            assert (await stream.receive_some(65536)).startswith(b"HTTP/1.1 200")
    assert status_of(await exchange(port, scrape())) == 503
    for stream in held:
        await stream.aclose()
    with trio.fail_after(BOUND_S):
        while find_service(node, MetricsService).server.gate.admitted:
            await trio.sleep(0.02)
    await assert_scrape_works(url)

    # More silent connections than the pending cap: the oldest are dropped, a scraper is served.
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3 * METRICS_LIMITS.max_pending)]
    await assert_scrape_works(url)
    for stream in silent:
        await stream.aclose()
    await assert_node_trades(cluster[2], node)
