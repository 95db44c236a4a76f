"""Transport limits over real HTTP and WebSocket: body size, per-connection rate, timeouts."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio_websocket

from p2pgrid.rpc.server import RpcLimits


def call(method, params=None, request_id=1):
    body = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        body["params"] = params
    return body


async def post(http, payload):
    return await http.post("", content=json.dumps(payload))


@pytest.fixture
def limits():
    return RpcLimits(max_body_bytes=2048, rate_per_s=0.001, burst=5)


async def test_oversize_body_is_413_with_an_error_object(http, node):
    response = await post(http, call("node_info", {"pad": "x" * 4000}))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == -32600
    assert node.calls == {}


async def test_oversize_chunked_body_is_413(http, node):
    async def chunks():
        for _ in range(10):
            yield b" " * 500

    response = await http.post("", content=chunks())
    assert response.status_code == 413 and node.calls == {}


async def test_rate_limit_refuses_calls_over_the_burst_with_429(http, node):
    statuses = [(await post(http, call("node_info"))).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5
    assert statuses[5:] == [429, 429]
    response = await post(http, call("node_info"))
    assert response.json()["error"]["code"] == -32005
    assert node.calls["node_info"] == 5


async def test_rate_limit_is_per_connection(server, http, token, node):
    for _ in range(5):
        await post(http, call("node_info"))
    assert (await post(http, call("node_info"))).status_code == 429
    async with httpx.AsyncClient(base_url=server.url, headers={"authorization": f"Bearer {token}"}) as other:
        assert (await other.post("", json=call("node_info"))).status_code == 200


async def test_oversize_websocket_message_closes_with_1009(server, token):
    async with trio_websocket.open_websocket_url(
            server.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        await ws.send_message(json.dumps(call("node_info", {"pad": "x" * 4000})))
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            with trio.fail_after(10):
                await ws.get_message()
    assert closed.value.reason.code == 1009


async def test_a_batch_takes_one_token_per_call_and_is_refused_whole(http, node):
    first = await post(http, [call("node_info", request_id=i) for i in range(4)])
    refused = await post(http, [call("peers_list", request_id=i) for i in range(2)])
    assert first.status_code == 200 and refused.status_code == 429
    assert [a["error"]["code"] for a in refused.json()] == [-32005, -32005]
    assert "peers" not in node.calls


async def test_websocket_calls_are_rate_limited_per_connection(server, node, token):
    async with trio_websocket.open_websocket_url(
            server.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        codes = []
        for i in range(6):
            await ws.send_message(json.dumps(call("node_info", request_id=i)))
            answer = json.loads(await ws.get_message())
            codes.append(answer["error"]["code"] if "error" in answer else 0)
    assert codes == [0] * 5 + [-32005]
    assert node.calls["node_info"] == 5


async def test_half_sent_request_head_is_dropped_after_the_head_timeout(server, node, mock_clock):
    """Slowloris: a head that never completes holds the connection only head_timeout_s (3 s)."""
    mock_clock.autojump_threshold = 0.05     # jump the clock once everyone waits for the network
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    started = trio.current_time()
    async with stream:
        await stream.send_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
        with trio.fail_after(60):
            closed_with = await stream.receive_some(1024)
    assert closed_with == b""
    assert 3 <= trio.current_time() - started < 60
    assert node.calls == {}


async def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server, token, mock_clock):
    mock_clock.autojump_threshold = 0.05
    body = json.dumps(call("node_info")).encode()
    request = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(request)
        received = b""
        with trio.fail_after(600):
            while not received.endswith(b"}"):
                received += await stream.receive_some(65536)
            answered = trio.current_time()
            closed_with = await stream.receive_some(1024)
    assert received.startswith(b"HTTP/1.1 200") and closed_with == b""
    assert 60 <= trio.current_time() - answered < 600
