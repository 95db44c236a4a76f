"""Prometheus metrics of a node, served as text exposition on a loopback port.

The node never touches ``prometheus_client`` directly: it calls the small typed methods of
``NodeMetrics`` (``order_seen()``, ``trade(qty_wh, value_uc)``, …), which own the metric names,
labels and units. Each ``NodeMetrics`` has its own ``CollectorRegistry`` (not the library's
global one), so several nodes in one process (tests, in-memory simnet) do not collide.

Exposed series (``_total`` is added to counters by the exposition format)::

    p2pgrid_orders_seen_total                        orders accepted into the local book
    p2pgrid_orders_rejected_total{reason}            orders refused; reason ∈ REJECT_REASONS
    p2pgrid_gossip_latency_seconds                   histogram: publish (sent_ms) → local receipt
    p2pgrid_peers                                    connected peers
    p2pgrid_ledger_height                            certified entries held
    p2pgrid_certification_latency_seconds            histogram: entry proposed → certificate
    p2pgrid_battery_soc_wh / p2pgrid_battery_soc_ratio   state of charge (Wh, 0..1)
    p2pgrid_trades_total, p2pgrid_traded_energy_wh_total, p2pgrid_traded_value_microcredits_total
    p2pgrid_slots_settled_total
    p2pgrid_settlement_energy_wh_total{kind}         kind ∈ contracted, shortfall, excess
    p2pgrid_settlement_value_microcredits_total{kind}    kind ∈ paid, received, imbalance_paid,
                                                         imbalance_received

Labels have a fixed, small set of values (unknown rejection reasons count as ``other``), so a
misbehaving peer cannot blow up the number of series.

``serve_metrics(metrics, port=0)`` serves ``GET /metrics`` on 127.0.0.1 with a trio + h11 server
(the library's own ``start_http_server`` defaults to 0.0.0.0 and runs a thread; we need neither).
Anyone on the machine can reach it without a token, so it is bounded (``MetricsLimits``): a head
timeout, a keep-alive idle timeout, a cap on scrapers (then 503) and on connections that have not
sent a request yet (the oldest is dropped); one connection's failure ends only that connection.
Port 0 (the default) picks a free port: every fixed port in 9100–9999 belongs to some Prometheus
exporter (9100: node_exporter).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

import h11
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from p2pgrid.rpc import http11

REJECT_REASONS = frozenset({"decode", "oversize", "unknown_version", "signature", "expired",
                            "replay", "wrong_zone", "invalid", "duplicate", "rate", "other",
                            "unregistered_owner", "over_capacity", "unfunded_bid"})   # last three: admission
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._orders_seen = Counter("p2pgrid_orders_seen", "Orders accepted into the local book", registry=r)
        self._orders_rejected = Counter("p2pgrid_orders_rejected", "Orders refused, by reason",
                                        ["reason"], registry=r)
        self._gossip_latency = Histogram("p2pgrid_gossip_latency_seconds",
                                         "Gossip delay from the sender's sent_ms to local receipt",
                                         buckets=LATENCY_BUCKETS_S, registry=r)
        self._peers = Gauge("p2pgrid_peers", "Connected peers", registry=r)
        self._ledger_height = Gauge("p2pgrid_ledger_height", "Certified ledger entries held", registry=r)
        self._certification_latency = Histogram("p2pgrid_certification_latency_seconds",
                                                "Delay from proposing a ledger entry to its certificate",
                                                buckets=LATENCY_BUCKETS_S, registry=r)
        self._soc_wh = Gauge("p2pgrid_battery_soc_wh", "Battery state of charge, Wh", registry=r)
        self._soc_ratio = Gauge("p2pgrid_battery_soc_ratio", "Battery state of charge, 0..1", registry=r)
        self._trades = Counter("p2pgrid_trades", "Trades this node took part in", registry=r)
        self._traded_wh = Counter("p2pgrid_traded_energy_wh", "Energy traded, Wh", registry=r)
        self._traded_uc = Counter("p2pgrid_traded_value_microcredits", "Money traded, µc", registry=r)
        self._slots_settled = Counter("p2pgrid_slots_settled", "Delivery slots settled", registry=r)
        self._settlement_wh = Counter("p2pgrid_settlement_energy_wh", "Settled energy by kind, Wh",
                                      ["kind"], registry=r)
        self._settlement_uc = Counter("p2pgrid_settlement_value_microcredits", "Settled money by kind, µc",
                                      ["kind"], registry=r)

    # --- what the node reports ----------------------------------------------------------------

    def order_seen(self) -> None:
        self._orders_seen.inc()

    def order_rejected(self, reason: str) -> None:
        self._orders_rejected.labels(reason if reason in REJECT_REASONS else "other").inc()

    def gossip_received(self, sent_ms: int, now_ms: int) -> None:
        """A gossip message stamped ``sent_ms`` by its publisher arrived at ``now_ms``."""
        self._gossip_latency.observe(max(0, now_ms - sent_ms) / 1000)

    def set_peers(self, count: int) -> None:
        self._peers.set(count)

    def set_ledger_height(self, height: int) -> None:
        self._ledger_height.set(height)

    def entry_certified(self, proposed_ms: int, certified_ms: int) -> None:
        self._certification_latency.observe(max(0, certified_ms - proposed_ms) / 1000)

    def set_soc(self, soc_wh: int, capacity_wh: int) -> None:
        self._soc_wh.set(soc_wh)
        self._soc_ratio.set(soc_wh / capacity_wh if capacity_wh > 0 else 0.0)

    def trade(self, qty_wh: int, value_uc: int) -> None:
        self._trades.inc()
        self._traded_wh.inc(qty_wh)
        self._traded_uc.inc(value_uc)

    def slot_settled(self, contracted_wh: int, imbalance_wh: int, trade_value_uc: int,
                     imbalance_value_uc: int) -> None:
        """Signs as in ``SlotSettlement``: + bought / paid, − sold / received."""
        self._slots_settled.inc()
        self._settlement_wh.labels("contracted").inc(abs(contracted_wh))
        self._settlement_wh.labels("shortfall" if imbalance_wh < 0 else "excess").inc(abs(imbalance_wh))
        self._settlement_uc.labels("paid" if trade_value_uc >= 0 else "received").inc(abs(trade_value_uc))
        self._settlement_uc.labels("imbalance_paid" if imbalance_value_uc >= 0
                                   else "imbalance_received").inc(abs(imbalance_value_uc))

    # --- exposition ---------------------------------------------------------------------------

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


@dataclass
class MetricsServer:
    host: str
    port: int
    gate: http11.ConnectionGate

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"


@dataclass(frozen=True)
class MetricsLimits:
    """Bounds of the metrics endpoint, which anyone on the machine can reach without a token."""

    max_connections: int = 8           # scrapers that sent a valid request (Prometheus keeps one)
    max_pending: int = 32              # connections yet to send one; the oldest is dropped
    head_timeout_s: float = 5.0        # to receive a request head
    idle_timeout_s: float = 60.0       # keep-alive between scrapes (Prometheus' default interval: 15 s)


@asynccontextmanager
async def serve_metrics(metrics: NodeMetrics, *, host: str = "127.0.0.1", port: int = 0,
                        allow_non_loopback: bool = False,
                        limits: MetricsLimits = MetricsLimits()) -> AsyncIterator[MetricsServer]:
    """Serve ``GET /metrics`` while the block runs; ``server.port`` is the bound port."""
    listeners, bound = await http11.open_listeners(host, port, allow_non_loopback)
    gate = http11.ConnectionGate(limits.max_connections, limits.max_pending)

    async def serve_requests(stream: trio.SocketStream, ticket: http11.Ticket) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=16 * 1024)
        timeout = limits.head_timeout_s
        while True:
            request: object = None
            with trio.move_on_after(timeout):
                request = await http11.next_event(conn, stream)
            if not isinstance(request, h11.Request):
                return     # closed, or nothing came in time
            with trio.move_on_after(limits.head_timeout_s) as body_wait:
                await http11.read_body(conn, stream, 0)
            if body_wait.cancelled_caught:
                return     # a body that never ends
            if not gate.admit(ticket):
                response = http11.Response(503, b"too many scrapers\n", b"text/plain", close=True)
            elif request.method != b"GET" or request.target.split(b"?")[0] != b"/metrics":
                response = http11.Response(404, b"GET /metrics\n", b"text/plain")
            else:
                body, content_type = metrics.render(
                    (http11.header(request, b"accept") or b"").decode("latin-1"))
                response = http11.Response(200, body, content_type.encode())
            await http11.send_response(conn, stream, response)
            if response.close or conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
            timeout = limits.idle_timeout_s

    async def serve_connection(stream: trio.SocketStream) -> None:
        with gate.enter() as ticket:
            # A scraper that breaks HTTP is dropped without a log line: nothing to learn from it.
            await http11.contain("metrics", serve_requests(stream, ticket), stream,
                                 quiet=(h11.RemoteProtocolError, http11.BodyTooLarge))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve_connection, listeners)
        try:
            yield MetricsServer(host, bound, gate)
        finally:
            nursery.cancel_scope.cancel()
