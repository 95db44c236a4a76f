"""Every RPC method, called over real HTTP on 127.0.0.1 against the fake node."""

from __future__ import annotations

import trio

from p2pgrid.rpc.api import (Certificate, CertificateStatus, LedgerEntryView, OrderStatus,
                             PeerInfo, SlotSettlement, Source)
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError, RpcClient, calls
from p2pgrid.rpc.methods import METHODS
from p2pgrid.rpc.testing import FAKE_ACCOUNT, OTHER_ACCOUNT
from p2pgrid.wire import Side

CALLED_IN_THIS_FILE = {
    "node_info", "peers_list", "book_get", "pool_list", "route_quote", "order_place", "order_cancel",
    "order_list", "trade_execute", "trade_list", "ledger_balance", "ledger_entry", "telemetry_get",
    "forecast_get", "settlement_get", "certs_list",
}


async def rpc(http, method, params=None):
    body = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    response = await http.post("", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "error" not in answer, answer
    return answer["result"]


def test_every_served_method_is_tested_here_or_in_the_subscription_tests():
    tested_elsewhere = {"subscribe", "unsubscribe",                                   # test_rpc_subscriptions.py
                        "shares_programmes", "shares_buy", "shares_exit", "shares_positions",  # test_shares_methods.py
                        "charging_tariffs", "charging_start", "charging_sessions",             # test_charging_methods.py
                        "charging_release",
                        "gateway_approve",                                                     # test_gateway_methods.py
                        "flex_requests", "flex_offers", "flex_awards", "flex_settlements",     # test_flex_methods.py
                        "flex_request",
                        "ppa_offer", "ppa_accept", "ppa_show", "ppa_list", "ppa_positions",    # tests/ppa/test_ppa_rpc_cli.py
                        "ppa_terminate"}
    assert set(METHODS) == CALLED_IN_THIS_FILE | tested_elsewhere


async def test_node_info_reports_identity_and_slot_calendar(http, node):
    info = await rpc(http, "node_info")
    assert info["account"] == FAKE_ACCOUNT.hex()
    assert (info["zone"], info["slot_length_s"], info["gate_s"]) == ("z1", 900, 300)
    assert info["now_ms"] == node.now_ms


async def test_peers_list_returns_connected_peers(http, node):
    node.peer_list.append(PeerInfo("12D3KooWPeer", ("/ip4/127.0.0.1/tcp/4001",), 5))
    assert await rpc(http, "peers_list") == [
        {"peer_id": "12D3KooWPeer", "addrs": ["/ip4/127.0.0.1/tcp/4001"], "connected_ms": 5}]


async def test_book_get_returns_best_levels_first_limited_to_depth(http, node):
    slot = node.next_slot()
    book = await rpc(http, "book_get", {"zone": "z1", "slot": slot, "depth": 2})
    assert [lv["price"] for lv in book["bids"]] == [240_000, 238_000]
    assert [lv["price"] for lv in book["asks"]] == [260_000, 262_000]
    assert book["asks"][0] == {"price": 260_000, "qty_wh": 1000, "orders": 1}


async def test_pool_list_by_position_params(http, node):
    pools = await rpc(http, "pool_list", ["z1", node.next_slot()])
    assert len(pools) == 1
    assert pools[0]["energy_wh"] == 50_000 and pools[0]["price"] == 250_000
    assert await rpc(http, "pool_list", ["z1", node.next_slot() + 900]) == []


async def test_route_quote_splits_between_book_and_pool_and_executes_nothing(http, node):
    slot = node.next_slot()
    quote = await rpc(http, "route_quote", {"zone": "z1", "slot": slot, "side": "buy", "qty_wh": 1500})
    assert quote["filled_wh"] == 1500
    assert [leg["venue"] for leg in quote["legs"]] == ["book", "book"]
    assert quote["value_uc"] == 1000 * 260_000 // 1000 + 500 * 262_000 // 1000
    limited = await rpc(http, "route_quote", {"zone": "z1", "slot": slot, "side": "buy", "qty_wh": 1500,
                                              "limit_price": 255_000})
    assert [leg["venue"] for leg in limited["legs"]] == ["pool"]
    assert node.trades == []


async def test_order_place_list_and_cancel_round_trip(http, node):
    slot = node.next_slot()
    placed = await rpc(http, "order_place", {"zone": "z1", "slot": slot, "side": "sell", "qty_wh": 700,
                                             "limit_price": 255_000, "green": True, "source": "pv"})
    assert placed["status"] == "open" and placed["owner"] == FAKE_ACCOUNT.hex()
    assert len(placed["order_id"]) == 32
    listed = await rpc(http, "order_list")
    assert [o["order_id"] for o in listed] == [placed["order_id"]]
    cancelled = await rpc(http, "order_cancel", {"order_id": placed["order_id"]})
    assert cancelled["status"] == "cancelled"
    assert await rpc(http, "order_list", {"open_only": True}) == []
    assert len(await rpc(http, "order_list", {"open_only": False})) == 1


async def test_trade_execute_then_trade_list_and_balance_move(http, node):
    slot = node.next_slot()
    execution = await rpc(http, "trade_execute", {"zone": "z1", "slot": slot, "side": "sell",
                                                  "qty_wh": 400, "limit_price": 230_000})
    assert execution["filled_wh"] == 400
    assert execution["value_uc"] == 400 * 240_000 // 1000
    trades = await rpc(http, "trade_list", {"since_ms": 0, "limit": 10})
    assert [t["qty_wh"] for t in trades] == [400]
    assert trades[0]["seller"] == FAKE_ACCOUNT.hex() and trades[0]["buyer"] == OTHER_ACCOUNT.hex()
    balance = await rpc(http, "ledger_balance", {"account": FAKE_ACCOUNT.hex()})
    assert balance["balance_uc"] == 96_000


async def test_ledger_entry_returns_a_known_entry(http, node):
    node.entries[(FAKE_ACCOUNT, 0)] = LedgerEntryView(FAKE_ACCOUNT, 0, bytes(32), b"\x01" * 32, "mint",
                                                      b"\x93\x01\x02\x03", True)
    entry = await rpc(http, "ledger_entry", {"account": FAKE_ACCOUNT.hex(), "seq": 0})
    assert entry["kind"] == "mint" and entry["body"] == "93010203" and entry["certified"] is True


async def test_telemetry_and_forecast(http, node):
    telemetry = await rpc(http, "telemetry_get")
    assert telemetry["soc_wh"] == 5000 and telemetry["capacity_wh"] == 10000
    forecast = await rpc(http, "forecast_get", {"slots": 3})
    assert len(forecast["points"]) == 3
    assert forecast["points"][1]["slot"] - forecast["points"][0]["slot"] == 900


async def test_settlement_get_and_certs_list(http, node):
    slot = node.next_slot()
    node.settlements[slot] = SlotSettlement(slot, FAKE_ACCOUNT, 1000, 900, -100, 250_000, -20_000, True)
    node.certs.append(Certificate(b"\x07" * 16, FAKE_ACCOUNT, slot, 900, Source.PV,
                                  CertificateStatus.ACTIVE, b"\x08" * 32))
    settled = await rpc(http, "settlement_get", {"slot": slot})
    assert settled["imbalance_wh"] == -100 and settled["settled"] is True
    certs = await rpc(http, "certs_list", {"account": FAKE_ACCOUNT.hex()})
    assert certs[0]["source"] == "pv" and certs[0]["qty_wh"] == 900


async def test_sync_client_decodes_typed_results(server, node, token):
    slot = node.next_slot()

    def use_sync_client():
        with RpcClient(server.url, token=token) as client:
            book = client.call(calls.book_get("z1", slot, depth=1))
            order = client.call(calls.order_place("z1", slot, Side.BUY, 300, 200_000))
            results = client.batch([calls.order_cancel(order.order_id), calls.order_cancel(order.order_id)])
            return book, order, results

    book, order, results = await trio.to_thread.run_sync(use_sync_client)
    assert book.asks[0].price == 260_000 and len(book.bids) == 1
    assert order.side is Side.BUY and order.status is OrderStatus.OPEN
    assert results[0].status is OrderStatus.CANCELLED
    assert isinstance(results[1], RpcCallError) and results[1].code == -32032


async def test_async_client_decodes_typed_results(server, node, token):
    async with AsyncRpcClient(server.url, token=token) as client:
        quote = await client.call(calls.route_quote("z1", node.next_slot(), Side.SELL, 500))
        info, pools = await client.batch([calls.node_info(), calls.pool_list("z1")])
    assert quote.filled_wh == 500 and quote.legs[0].venue_id == next(iter(node.orders))
    assert info.account == FAKE_ACCOUNT and pools[0].fee_ppm == 3000
