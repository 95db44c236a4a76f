"""JSON-RPC 2.0 conformance, auth, limits and error mapping over real HTTP and WebSocket."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
import trio_websocket

from p2pgrid.errors import DeviceError, SettlementError
from p2pgrid.market.errors import PoolFrozen
from p2pgrid.rpc.testing import UnknownEntry


def call(method, params=None, request_id=1):
    body = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        body["params"] = params
    return body


async def post(http, payload, **kwargs):
    content = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return await http.post("", content=content, **kwargs)


async def error_of(http, payload):
    response = await post(http, payload)
    answer = response.json()
    return answer["error"]["code"], answer


# --- batches and notifications ----------------------------------------------------------------

async def test_batch_answers_each_call_in_order_and_skips_notifications(http, node):
    batch = [call("node_info", request_id="a"),
             {"jsonrpc": "2.0", "method": "telemetry_get"},           # notification
             call("no_such_method", request_id=2),
             call("book_get", {"zone": "z1", "slot": node.next_slot()}, request_id=3)]
    response = await post(http, batch)
    answers = response.json()
    assert response.status_code == 200
    assert [a["id"] for a in answers] == ["a", 2, 3]
    assert answers[1]["error"]["code"] == -32601
    assert node.calls["telemetry"] == 1     # the notification was executed


async def test_notification_is_executed_and_answered_with_no_content(http, node):
    slot = node.next_slot()
    notification = {"jsonrpc": "2.0", "method": "order_place",
                    "params": {"zone": "z1", "slot": slot, "side": "buy", "qty_wh": 10, "limit_price": 1}}
    response = await post(http, notification)
    assert response.status_code == 204 and response.content == b""
    assert node.calls["place_order"] == 1


async def test_failing_notification_is_not_answered(http, node):
    response = await post(http, {"jsonrpc": "2.0", "method": "no_such_method"})
    assert response.status_code == 204


async def test_batch_of_only_notifications_gets_no_body(http):
    response = await post(http, [{"jsonrpc": "2.0", "method": "node_info"}] * 3)
    assert response.status_code == 204


async def test_empty_batch_is_one_invalid_request(http):
    code, answer = await error_of(http, [])
    assert code == -32600 and answer["id"] is None


async def test_batch_over_the_limit_is_refused_whole(http, node):
    code, _ = await error_of(http, [call("node_info", request_id=i) for i in range(101)])
    assert code == -32600 and "node_info" not in node.calls


async def test_batch_of_invalid_items_answers_each(http):
    response = await post(http, [1, 2])
    assert [a["error"]["code"] for a in response.json()] == [-32600, -32600]


# --- each error code ----------------------------------------------------------------------------

async def test_parse_error_for_malformed_json(http):
    code, answer = await error_of(http, b'{"jsonrpc": "2.0", "method": "node_info", "id": 1')
    assert code == -32700 and answer["id"] is None


async def test_parse_error_for_bytes_that_are_not_utf8(http):
    code, _ = await error_of(http, b"\xff\xfe{}")
    assert code == -32700


@pytest.mark.parametrize("request_obj", [
    {"jsonrpc": "1.0", "method": "node_info", "id": 1},
    {"method": "node_info", "id": 1},
    {"jsonrpc": "2.0", "method": 5, "id": 1},
    {"jsonrpc": "2.0", "method": "node_info", "params": "zone", "id": 1},
    {"jsonrpc": "2.0", "method": "node_info", "id": 1.5},
    {"jsonrpc": "2.0", "method": "node_info", "id": 1, "extra": True},
    42,
], ids=["wrong-version", "no-version", "method-not-string", "params-scalar", "fractional-id",
        "unknown-member", "not-an-object"])
async def test_invalid_request(http, request_obj):
    code, answer = await error_of(http, request_obj)
    assert code == -32600


async def test_invalid_request_echoes_a_valid_id(http):
    _, answer = await error_of(http, {"jsonrpc": "1.0", "method": "node_info", "id": "x7"})
    assert answer["id"] == "x7"


async def test_method_not_found(http):
    code, answer = await error_of(http, call("node_explode", request_id=9))
    assert code == -32601 and answer["id"] == 9


@pytest.mark.parametrize("params", [
    {"zone": "z1", "slot": "1767226500"},         # string instead of int
    {"zone": "z1", "slot": 1767226500.0},         # float instead of int
    {"zone": "z1", "slot": True},                 # bool is not an int
    {"zone": "Z 1", "slot": 1767226500},          # zone pattern
    {"zone": "z1"},                               # missing slot
    {"zone": "z1", "slot": 1767226500, "levels": 3},   # unknown param
    {"zone": "z1", "slot": 1767226500, "depth": 0},    # out of range
    ["z1", 1767226500, 5, "extra"],               # too many positional
], ids=["str-int", "float-int", "bool-int", "zone-pattern", "missing", "unknown", "range", "positional"])
async def test_invalid_params_for_book_get(http, node, params):
    code, answer = await error_of(http, call("book_get", params))
    assert code == -32602
    assert "book" not in node.calls


@pytest.mark.parametrize("method, params", [
    ("order_cancel", {"order_id": "ABCDEF"}),
    ("order_cancel", {"order_id": "00" * 15}),
    ("route_quote", {"zone": "z1", "slot": 0, "side": "short", "qty_wh": 1}),
    ("route_quote", {"zone": "z1", "slot": 0, "side": "buy", "qty_wh": 0}),
    ("order_place", {"zone": "z1", "slot": 0, "side": "buy", "qty_wh": 1, "limit_price": 1, "green": "yes"}),
    ("ledger_balance", {"account": "00" * 31}),
])
async def test_invalid_params_for_typed_fields(http, method, params):
    code, _ = await error_of(http, call(method, params))
    assert code == -32602


async def test_internal_error_hides_the_detail(http, node):
    node.failures["telemetry"] = RuntimeError("secret internals")
    code, answer = await error_of(http, call("telemetry_get"))
    assert code == -32603 and "secret" not in json.dumps(answer)


@pytest.mark.parametrize("failure, expected", [
    (UnknownEntry("no entry"), -32050),
    (PoolFrozen("frozen"), -32034),
    (SettlementError("not yet"), -32060),
    (DeviceError("meter offline"), -32070),
])
async def test_node_errors_map_to_documented_application_codes(http, node, failure, expected):
    node.failures["ledger_entry"] = failure
    code, answer = await error_of(http, call("ledger_entry", {"account": "00" * 32, "seq": 0}))
    assert code == expected
    assert answer["error"]["data"] == {"type": type(failure).__name__}


async def test_market_rule_violation_is_an_application_error(http, node):
    code, answer = await error_of(http, call("order_place", {"zone": "z1", "slot": 0, "side": "buy",
                                                             "qty_wh": 1, "limit_price": 1}))
    assert code == -32031 and answer["error"]["data"]["type"] == "InvalidOrder"


async def test_subscribe_over_http_is_refused(http):
    code, _ = await error_of(http, call("subscribe", {"topic": "book"}))
    assert code == -32004


# --- auth ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer wrong-token-wrong-token"},
                                     {"authorization": "Basic dGVzdA=="}],
                         ids=["missing", "wrong", "other-scheme"])
async def test_without_the_token_http_is_401_and_nothing_runs(server, node, headers):
    slot = node.next_slot()
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        response = await anonymous.post("", headers=headers, json=call(
            "order_place", {"zone": "z1", "slot": slot, "side": "buy", "qty_wh": 1, "limit_price": 1}))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == -32001
    assert node.calls == {} and server.refused_unauthorized == 1


async def test_without_the_token_websocket_handshake_is_401(server, node):
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(server.ws_url):
            pass
    assert rejected.value.status_code == 401
    assert node.calls == {}


# --- other transport rules ----------------------------------------------------------------------

async def test_get_is_405(http):
    response = await http.get("")
    assert response.status_code == 405


async def test_websocket_errors_use_the_same_codes(server, token):
    async with trio_websocket.open_websocket_url(
            server.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        answers = []
        for message in ['{"jsonrpc"', json.dumps(call("nope")), json.dumps(call("book_get", {"zone": 1})),
                        json.dumps(call("unsubscribe", {"subscription": "abc"}))]:
            await ws.send_message(message)
            answers.append(json.loads(await ws.get_message())["error"]["code"])
    assert answers == [-32700, -32601, -32602, -32006]


# --- raw HTTP edge cases ------------------------------------------------------------------------

async def raw_exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        received = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return received


async def test_oversize_headers_are_refused_with_431(server, node):
    answer = await raw_exchange(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    assert node.calls == {}


async def test_garbage_instead_of_http_is_refused_with_400(server):
    answer = await raw_exchange(server.port, b"HELLO\x00\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400")


async def test_websocket_upgrade_after_a_keep_alive_request_is_refused(server, token):
    body = json.dumps(call("node_info")).encode()
    first = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
             + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    answer = await raw_exchange(server.port, first + upgrade)
    assert answer.startswith(b"HTTP/1.1 200")
    assert b"HTTP/1.1 400" in answer and b"own connection" in answer


async def test_websocket_batch_answers_in_order_and_notifications_get_nothing(server, node, token):
    async with trio_websocket.open_websocket_url(
            server.ws_url, extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        await ws.send_message(json.dumps([call("node_info", request_id=1),
                                          {"jsonrpc": "2.0", "method": "telemetry_get"},
                                          call("peers_list", request_id=2)]))
        batch_answer = json.loads(await ws.get_message())
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "method": "telemetry_get"}))
        await ws.send_message(json.dumps(call("peers_list", request_id=3)))
        next_answer = json.loads(await ws.get_message())
    assert [a["id"] for a in batch_answer] == [1, 2]
    assert next_answer["id"] == 3           # the notification in between was not answered
    assert node.calls["telemetry"] == 2


async def test_run_rpc_is_a_trio_service_reporting_its_port(node, token):
    from p2pgrid.rpc.server import run_rpc

    async with trio.open_nursery() as nursery:
        running = await nursery.start(lambda task_status: run_rpc(node, token=token, task_status=task_status))
        async with httpx.AsyncClient(base_url=running.url, headers={"authorization": f"Bearer {token}"}) as client:
            assert (await client.post("", json=call("node_info"))).status_code == 200
        nursery.cancel_scope.cancel()
