"""The node's RPC and metrics services: endpoint files, token, Prometheus series from a real
trade, and a node without a ledger answering what it can."""

from __future__ import annotations

import re
import stat

import httpx
import pytest
import trio

from p2pgrid.clock import SystemClock
from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.transport import ValidationResult
from p2pgrid.net.validation import Reason
from p2pgrid.node.app import Node, find_service
from p2pgrid.node.metrics import REJECT_REASONS
from p2pgrid.node.rpc import MetricsService, RpcService, read_endpoint, reject_label
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import OrderStatus
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError, calls
from p2pgrid.units import trade_value
from p2pgrid.wire import Side
from rpc_node_helpers import open_slot, rpc_client, wait_until


def sample(text: str, series: str) -> float | None:
    """The value of one exposed series (name with labels, exactly as exposed), or None."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


@pytest.mark.slow
async def test_metrics_follow_orders_rejects_peers_ledger_and_trades(cluster):
    gateway, maker, taker, other = cluster
    url = read_endpoint(maker.config.node.data_dir, "metrics")["url"]
    assert url == find_service(maker, MetricsService).url and url.startswith("http://127.0.0.1:")
    slot = open_slot(maker)
    order = maker.trading.place_order(Side.SELL, 1000, 200_000, slot)
    other.trading.place_order(Side.BUY, 500, 150_000, slot)                  # seen by gossip
    # A garbage batch, judged by the maker's topic validator as its transport would: rejected.
    assert maker.order_gossip.validate(other.key.public_key, b"\x93not a batch") is ValidationResult.REJECT
    await wait_until(lambda: len(taker.trading.books.book(slot)) == 2)
    report = await taker.trading.execute(Side.BUY, 400, slot, None)
    assert report.filled_wh == 400

    expected = {
        "p2pgrid_trades_total": 1.0,
        "p2pgrid_traded_energy_wh_total": 400.0,
        "p2pgrid_traded_value_microcredits_total": float(trade_value(400, 200_000)),
        "p2pgrid_peers": 3.0,
        "p2pgrid_ledger_height": None,      # filled in below: whatever the maker holds by then
        'p2pgrid_orders_rejected_total{reason="decode"}': 1.0,
    }
    async with httpx.AsyncClient(timeout=10) as http:
        with trio.fail_after(20):
            while True:
                text = (await http.get(url)).text
                expected["p2pgrid_ledger_height"] = float(maker.ledger.state.height)
                if all(sample(text, series) == value for series, value in expected.items()):
                    break
                await trio.sleep(0.05)
    assert sample(text, "p2pgrid_orders_seen_total") >= 1.0          # the other node's bid
    assert sample(text, "p2pgrid_gossip_latency_seconds_count") >= 1.0
    assert order.body.order_id in maker.trading.own_orders


def test_every_gossip_rejection_reason_has_a_metrics_label():
    assert {reject_label(r.value) for r in Reason} <= REJECT_REASONS
    assert reject_label("something new") == "other"


@pytest.mark.slow
async def test_endpoint_files_name_the_ports_and_go_away_on_a_clean_stop(tmp_path):
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(1,), metrics_nodes=(1,)) as nodes:
        data_dir = nodes[1].config.node.data_dir
        rpc = read_endpoint(data_dir)
        metrics = read_endpoint(data_dir, "metrics")
        server = find_service(nodes[1], RpcService).server
        assert (rpc["port"], rpc["url"], rpc["ws_url"]) == (server.port, server.url, server.ws_url)
        assert metrics["url"] == f"http://127.0.0.1:{metrics['port']}/metrics"
        assert stat.S_IMODE((data_dir / "rpc.token").stat().st_mode) == 0o600
        assert read_endpoint(nodes[0].config.node.data_dir) is None        # RPC not enabled there
        async with AsyncRpcClient(rpc["url"], token="wrong-token-0123456789") as intruder:
            with pytest.raises(RpcCallError) as refused:
                await intruder.call(calls.node_info())
        assert refused.value.code == -32001
        async with rpc_client(nodes[1]) as client:
            assert (await client.call(calls.node_info())).account == nodes[1].key.public_key
    assert read_endpoint(data_dir) is None and read_endpoint(data_dir, "metrics") is None


@pytest.mark.slow
async def test_a_node_without_a_ledger_answers_info_gossips_orders_and_refuses_market_calls(tmp_path):
    key = NodeKey.generate()
    config = build_config({"node": {"data_dir": str(tmp_path / "solo"), "name": "solo"}, "rpc": {"enabled": True}},
                          base_dir=tmp_path)
    async with MemoryNetwork().open_transport(key) as transport, trio.open_nursery() as nursery:
        node = await nursery.start(Node(config, key, SystemClock(), transport).run)
        async with rpc_client(node) as client:
            info = await client.call(calls.node_info())
            assert (info.account, info.ledger_height) == (key.public_key, 0)
            assert await client.call(calls.peers_list()) == []
            slot = open_slot(node)
            # Orders are only signed and gossiped there (`p2pgrid order place` on a gossip-only node).
            placed = await client.call(calls.order_place(node.zone, slot, Side.BUY, 1, 1))
            assert (placed.owner, placed.status) == (key.public_key, OrderStatus.OPEN)
            assert node.stats.orders_published == 1
            for call in (calls.book_get(node.zone, slot), calls.order_list(), calls.ledger_balance(key.public_key)):
                with pytest.raises(RpcCallError) as refused:
                    await client.call(call)
                assert refused.value.code == codes.NOT_AVAILABLE
        nursery.cancel_scope.cancel()
