"""Pure parts of the RPC: JSON codec, token bucket, token file, loopback rule."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import stat
import types
import typing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.rpc import api
from p2pgrid.rpc.auth import is_authorized, load_or_create_token, read_token, token_path
from p2pgrid.rpc.codec import DecodeJsonError, from_json, to_json
from p2pgrid.rpc.errors import NotLoopbackError, TokenFileError
from p2pgrid.rpc.ratelimit import TokenBucket
from p2pgrid.rpc.server import serve_rpc
from p2pgrid.rpc.jsonrpc import handle_payload
from p2pgrid.rpc.methods import METHODS
from p2pgrid.rpc.subscriptions import Session, SubscriptionHub
from p2pgrid.rpc.testing import FakeNode, seeded_fake_node

API_TYPES = [api.NodeInfo, api.PeerInfo, api.BookSnapshot, api.BookUpdate, api.PoolView, api.RouteQuote,
             api.OrderRequest, api.OrderView, api.TradeView, api.Execution, api.Balance,
             api.LedgerEntryView, api.Telemetry, api.Forecast, api.SlotSettlement, api.Certificate]


def strategy_for(hint):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return st.none() | strategy_for(inner)
    if origin is tuple:
        return st.lists(strategy_for(typing.get_args(hint)[0]), max_size=3).map(tuple)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return st.builds(hint, **{f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(hint)})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    return {int: st.integers(-(2**63), 2**63 - 1), bool: st.booleans(), str: st.text(max_size=8),
            bytes: st.binary(max_size=33)}[hint]


@pytest.mark.parametrize("cls", API_TYPES, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_api_value_survives_a_json_round_trip(cls, data):
    value = data.draw(strategy_for(cls))
    wire = json.loads(json.dumps(to_json(value)))
    assert from_json(cls, wire) == value


def test_json_form_uses_integers_and_hex():
    update = api.TradeView(b"\x01\x02", b"\xff", b"\x00", b"\x0a", "z1", 900, 1500, 300_000, 450_000,
                           api.Venue.BOOK, True, 5)
    assert to_json(update)["trade_id"] == "0102" and to_json(update)["value_uc"] == 450_000
    assert to_json(update)["venue"] == "book"


@pytest.mark.parametrize("bad", [{"price": "1", "qty_wh": 1, "orders": 1},
                                 {"price": 1.5, "qty_wh": 1, "orders": 1},
                                 {"price": True, "qty_wh": 1, "orders": 1},
                                 {"qty_wh": 1, "orders": 1}])
def test_from_json_rejects_wrong_shapes(bad):
    with pytest.raises(DecodeJsonError):
        from_json(api.BookLevel, bad)


def test_token_bucket_allows_the_burst_then_the_rate():
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.try_take(1, 0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.try_take(1, 0.5) and not bucket.try_take(1, 0.5)
    assert not bucket.try_take(4, 100.0)             # never more than the burst at once
    assert bucket.try_take(3, 100.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.floats(0, 0.5)), max_size=60))
def test_token_bucket_never_admits_more_than_burst_plus_rate_times_time(steps):
    bucket, now, admitted = TokenBucket(rate=10.0, burst=5), 0.0, 0
    for count, dt in steps:
        now += dt
        admitted += count if bucket.try_take(count, now) else 0
    assert admitted <= 5 + 10.0 * now + 1e-9


def test_token_file_is_created_0600_and_read_back(tmp_path):
    token = load_or_create_token(tmp_path / "data")
    path = token_path(tmp_path / "data")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path / "data") == token == read_token(path)
    assert len(token) >= 32


def test_token_file_readable_by_others_is_refused(tmp_path):
    load_or_create_token(tmp_path)
    os.chmod(token_path(tmp_path), 0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        load_or_create_token(tmp_path)


def test_missing_token_file_is_a_clear_error(tmp_path):
    with pytest.raises(TokenFileError, match="cannot read"):
        read_token(tmp_path / "absent")


@pytest.mark.parametrize("header, ok", [(b"Bearer sekret-token-value", True), (b"bearer sekret-token-value", True),
                                        (b"Bearer sekret-token-valuf", False), (b"sekret-token-value", False),
                                        (None, False), (b"Bearer ", False)])
def test_bearer_header_check(header, ok):
    assert is_authorized(header, "sekret-token-value") is ok


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
async def test_rpc_refuses_to_bind_beyond_loopback(host):
    with pytest.raises(NotLoopbackError):
        async with serve_rpc(FakeNode(), token="x" * 20, host=host):
            pass


async def test_rpc_binds_loopback_with_an_ephemeral_port():
    async with serve_rpc(FakeNode(), token="x" * 20, port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"


def test_fake_node_implements_the_whole_node_api():
    assert api.node_api_mismatches(FakeNode()) == []


def test_node_api_check_names_what_is_missing_or_different():
    class HalfNode:
        async def node_info(self):
            ...

        async def book(self, zone, slot):
            ...

        async def peers(self):
            ...

        def telemetry(self):
            ...

    problems = api.node_api_mismatches(HalfNode())
    assert "book: parameters ['zone', 'slot'], expected ['zone', 'slot', 'depth']" in problems
    assert "telemetry: must be async" in problems
    assert "place_order: missing" in problems
    assert not any(p.startswith(("node_info", "peers")) for p in problems)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
request_like = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0"]), "method": st.sampled_from(sorted(METHODS) + ["nope"])},
    optional={"params": st.just({}) | st.just([]) | json_values,
              "id": st.integers(-5, 5) | st.text(max_size=3) | json_values})

SLOT = seeded_fake_node().next_slot()
VALID_PARAMS = {
    "node_info": {}, "peers_list": [], "book_get": {"zone": "z1", "slot": SLOT}, "pool_list": ["z1"],
    "route_quote": ["z1", SLOT, "buy", 100], "order_list": {"open_only": False}, "trade_list": {},
    "order_place": {"zone": "z1", "slot": SLOT, "side": "sell", "qty_wh": 5, "limit_price": 1},
    "trade_execute": {"zone": "z1", "slot": SLOT, "side": "sell", "qty_wh": 5},
    "ledger_balance": {"account": "00" * 32}, "telemetry_get": {}, "forecast_get": [2],
    "settlement_get": [SLOT], "certs_list": ["11" * 32],
    "shares_programmes": {}, "shares_positions": [], "shares_exit": {"programme_id": "00" * 16, "shares": 1},
    "shares_buy": {"programme_id": "00" * 16, "shares": 1, "wait_s": 0},
    "charging_tariffs": {"station": None}, "charging_sessions": {"role": "station"},
    "charging_start": {"tariff_id": "00" * 16, "max_wh": 1000, "wait_s": 0, "hours": 1},
    "charging_release": ["00" * 16],
}
valid_request = st.builds(lambda method, request_id: {"jsonrpc": "2.0", "method": method,
                                                      "params": VALID_PARAMS[method], "id": request_id},
                          st.sampled_from(sorted(VALID_PARAMS)), st.integers(0, 9) | st.text(max_size=2))
any_request = request_like | valid_request


def is_response(obj):
    return (isinstance(obj, dict) and obj.get("jsonrpc") == "2.0" and "id" in obj
            and (("result" in obj) != ("error" in obj))
            and ("error" not in obj or type(obj["error"]["code"]) is int))


@settings(max_examples=150, deadline=None)
@given(payload=json_values | any_request | st.lists(any_request, max_size=4))
async def test_any_json_payload_gets_a_well_formed_answer_or_none(payload):
    node = seeded_fake_node()
    text = await handle_payload(json.dumps(payload), METHODS, node, Session(SubscriptionHub()),
                                admit=lambda n: True)
    if text is None:
        return
    answer = json.loads(text)
    answers = answer if isinstance(answer, list) else [answer]
    assert answers and all(is_response(a) for a in answers)
    assert all(a["error"]["code"] != -32603 for a in answers if "error" in a)
