"""The metrics endpoint over real HTTP on 127.0.0.1."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from p2pgrid.node.metrics import NodeMetrics, serve_metrics
from p2pgrid.rpc.errors import NotLoopbackError


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_endpoint_exposes_the_node_counters():
    metrics = NodeMetrics()
    for _ in range(3):
        metrics.order_seen()
    metrics.order_rejected("signature")
    metrics.order_rejected("made-up reason from a peer")
    metrics.gossip_received(sent_ms=1_000, now_ms=1_040)
    metrics.set_peers(4)
    metrics.set_ledger_height(120)
    metrics.entry_certified(proposed_ms=0, certified_ms=300)
    metrics.set_soc(7_500, 10_000)
    metrics.trade(1500, 450_000)
    metrics.slot_settled(contracted_wh=1500, imbalance_wh=-100, trade_value_uc=450_000, imbalance_value_uc=30_000)
    async with serve_metrics(metrics, port=0) as server, httpx.AsyncClient() as client:
        response = await client.get(server.url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    assert got[("p2pgrid_orders_seen_total", ())] == 3
    assert got[("p2pgrid_orders_rejected_total", (("reason", "signature"),))] == 1
    assert got[("p2pgrid_orders_rejected_total", (("reason", "other"),))] == 1
    assert got[("p2pgrid_gossip_latency_seconds_count", ())] == 1
    assert got[("p2pgrid_gossip_latency_seconds_bucket", (("le", "0.05"),))] == 1
    assert got[("p2pgrid_gossip_latency_seconds_bucket", (("le", "0.025"),))] == 0
    assert got[("p2pgrid_peers", ())] == 4
    assert got[("p2pgrid_ledger_height", ())] == 120
    assert got[("p2pgrid_certification_latency_seconds_sum", ())] == pytest.approx(0.3)
    assert got[("p2pgrid_battery_soc_ratio", ())] == 0.75
    assert got[("p2pgrid_traded_energy_wh_total", ())] == 1500
    assert got[("p2pgrid_slots_settled_total", ())] == 1
    assert got[("p2pgrid_settlement_energy_wh_total", (("kind", "shortfall"),))] == 100
    assert got[("p2pgrid_settlement_value_microcredits_total", (("kind", "imbalance_paid"),))] == 30_000


async def test_metrics_server_answers_404_elsewhere_and_keeps_the_connection():
    async with serve_metrics(NodeMetrics()) as server, httpx.AsyncClient() as client:
        missing = await client.get(server.url.replace("/metrics", "/secrets"))
        again = await client.get(server.url)
    assert missing.status_code == 404 and again.status_code == 200


async def test_two_nodes_in_one_process_do_not_share_counters():
    a, b = NodeMetrics(), NodeMetrics()
    a.order_seen()
    assert samples(b.render()[0].decode())[("p2pgrid_orders_seen_total", ())] == 0


async def test_metrics_refuse_a_non_loopback_bind():
    with pytest.raises(NotLoopbackError):
        async with serve_metrics(NodeMetrics(), host="0.0.0.0"):
            pass
