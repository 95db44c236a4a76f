"""Node services for the local RPC and the Prometheus metrics (see ``p2pgrid.service`` for the protocol).

``api_services(config)`` is what the node registers, after its ledger and trading services:

* ``NodeApiService`` — runs ``p2pgrid.node.api.LiveNodeApi`` (the one reader of the trading
  service's book changes, and the ledger follower), when ``[rpc]`` or ``[metrics]`` is enabled.
* ``RpcService`` — when ``[rpc] enabled``: serves JSON-RPC (``p2pgrid.rpc.server.serve_rpc``) on
  127.0.0.1, ``[rpc] port`` (0: a free port), with the bearer token of ``<data_dir>/rpc.token``
  (created 0600 on first start). The bound address goes to ``<data_dir>/rpc.json``.
* ``MetricsService`` — when ``[metrics] enabled``: serves ``GET /metrics`` on 127.0.0.1,
  ``[metrics] port``, and keeps ``NodeMetrics`` current; the address goes to
  ``<data_dir>/metrics.json``.

**Endpoint files.** ``rpc.json`` = ``{"url", "ws_url", "port", "pid", "token_file"}``,
``metrics.json`` = ``{"url", "port", "pid"}``; replaced atomically once the port is bound and
removed on a clean stop by the node that wrote it (and only while the file still holds what it
wrote), so a present file names a listening node or a crashed one. ``read_endpoint(data_dir,
name)`` reads one back (CLI, bots, benchmarks, simnet); ``live_endpoint`` also refuses a file
whose ``pid`` is gone (``StaleEndpoint``: the node was killed and could not remove it).

**Metrics sources.** Orders seen and gossip latency: every delivery of the node's order gossip
(a ``node.order_listeners`` callback). Rejected orders, by reason: the order gossip's counters of
rejected batches and ignored items, mapped onto ``metrics.REJECT_REASONS``, with peers and ledger
height polled every ``METRICS_PERIOD_S``. Trades (count, Wh, µc): the API's fill stream.
Certification latency is **not** reported: the ledger service exposes no hook for when an entry
was proposed and when it was certified.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.data_dir import pid_alive
from p2pgrid.errors import RpcError
from p2pgrid.net.orders import VIA_GOSSIP, OrderDelivery
from p2pgrid.node.api import LiveNodeApi, NodeApiHost
from p2pgrid.node.metrics import MetricsLimits, MetricsServer, NodeMetrics, serve_metrics
from p2pgrid.rpc.api import TradeView
from p2pgrid.rpc.auth import load_or_create_token, token_path
from p2pgrid.rpc.server import RpcLimits, RpcServer, serve_rpc
from p2pgrid.service import NodeBasics, WithLedger, WithOrderGossip
from p2pgrid.wire import Order

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

__all__ = ["MetricsService", "NodeApiService", "RpcService", "StaleEndpoint", "api_services", "live_endpoint",
           "read_endpoint", "reject_label"]

RPC_ENDPOINT = "rpc"
METRICS_ENDPOINT = "metrics"
METRICS_PERIOD_S = 0.5

# p2pgrid.net.validation.Reason values → the fixed label set of p2pgrid.node.metrics.REJECT_REASONS.
_REJECT_LABELS = {
    "oversize": "oversize", "malformed": "decode", "unsigned": "signature", "bad_signature": "signature",
    "unknown_version": "unknown_version", "wrong_zone": "wrong_zone", "foreign_item": "invalid",
    "replayed": "replay", "expired": "expired", "slot_closed": "expired", "not_yet_valid": "invalid",
    "unregistered_owner": "unregistered_owner", "over_capacity": "over_capacity", "unfunded_bid": "unfunded_bid",
}



def reject_label(reason: str) -> str:
    """The metrics label of an order-gossip rejection reason (unknown reasons: ``other``)."""
    return _REJECT_LABELS.get(reason, "other")


def api_services(config: NodeConfig) -> list[Any]:
    """The services to register for ``config``'s ``[rpc]`` and ``[metrics]`` sections (maybe none)."""
    if not (config.rpc.enabled or config.metrics.enabled):
        return []
    api = NodeApiService()
    services: list[Any] = [api]
    if config.rpc.enabled:
        services.append(RpcService(api))
    if config.metrics.enabled:
        services.append(MetricsService(api))
    return services


# --- endpoint files ----------------------------------------------------------------------------

def endpoint_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / f"{name}.json"


def write_endpoint(data_dir: Path, name: str, info: dict[str, Any]) -> None:
    path = endpoint_path(data_dir, name)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp, path)


def read_endpoint(data_dir: Path | str, name: str = RPC_ENDPOINT) -> dict[str, Any] | None:
    """The endpoint file ``name`` (``"rpc"`` or ``"metrics"``) of a node, or None if absent."""
    try:
        data = json.loads(endpoint_path(Path(data_dir), name).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_endpoint(data_dir: Path, name: str, written: dict[str, Any]) -> None:
    """Remove endpoint file ``name`` if it still holds what this node ``written`` there."""
    if read_endpoint(data_dir, name) == written:
        endpoint_path(data_dir, name).unlink(missing_ok=True)


class StaleEndpoint(RpcError):
    """An endpoint file left behind by a node that no longer runs."""


def live_endpoint(data_dir: Path | str, name: str = RPC_ENDPOINT) -> dict[str, Any] | None:
    """``read_endpoint``, raising ``StaleEndpoint`` when the process it names is gone."""
    info = read_endpoint(data_dir, name)
    if info is None:
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        raise StaleEndpoint(f"{endpoint_path(Path(data_dir), name)} names pid {pid}, which is not running "
                            "(the node was killed); start the node again")
    return info


# --- services ------------------------------------------------------------------------------------

class MetricsHost(WithOrderGossip, WithLedger, Protocol):
    """What the metrics service reads of the node: peers, ledger height, order gossip counters."""


class NodeApiService:
    """Runs the node's ``LiveNodeApi``: its book fan-out and ledger follower."""

    name = "node-api"

    def __init__(self) -> None:
        self.api: LiveNodeApi | None = None

    async def run(self, node: NodeApiHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        api = LiveNodeApi(node)
        self.api = api
        await api.run(task_status=task_status)

    def require_api(self) -> LiveNodeApi:
        if self.api is None:
            raise RuntimeError("the node-api service starts before the services that use it")
        return self.api


class RpcService:
    """JSON-RPC on 127.0.0.1 for bots and dashboards (``p2pgrid.rpc``)."""

    name = "rpc"

    def __init__(self, api: NodeApiService, limits: RpcLimits = RpcLimits()) -> None:
        self._api = api
        self.limits = limits
        self.server: RpcServer | None = None

    async def run(self, node: NodeBasics, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        data_dir = node.config.node.data_dir
        token = load_or_create_token(data_dir)
        async with serve_rpc(self._api.require_api(), token=token, port=node.config.rpc.port,
                             limits=self.limits) as server:
            self.server = server
            written = {"url": server.url, "ws_url": server.ws_url, "port": server.port, "pid": os.getpid(),
                       "token_file": str(token_path(data_dir))}
            write_endpoint(data_dir, RPC_ENDPOINT, written)
            try:
                task_status.started()
                await trio.sleep_forever()
            finally:
                remove_endpoint(data_dir, RPC_ENDPOINT, written)
                self.server = None


class MetricsService:
    """Prometheus metrics on 127.0.0.1, kept current from the node's counters."""

    name = "metrics"

    def __init__(self, api: NodeApiService, limits: MetricsLimits = MetricsLimits()) -> None:
        self._api = api
        self.limits = limits
        self.metrics = NodeMetrics()
        self.url: str | None = None
        self.server: MetricsServer | None = None
        self._rejects_counted: Counter[str] = Counter()

    def on_delivery(self, delivery: OrderDelivery) -> None:
        """Order gossip listener: count accepted orders and the batch's gossip delay (items
        fetched by book reconciliation count as seen, but have no gossip delay)."""
        if delivery.via == VIA_GOSSIP:
            self.metrics.gossip_received(delivery.sent_ms, delivery.received_ms)
        for item in delivery.items:
            if isinstance(item.body, Order):
                self.metrics.order_seen()

    def update(self, node: MetricsHost) -> None:
        """Bring gauges and the polled counters up to date with the node."""
        self.metrics.set_peers(len(node.transport.peers()))
        if node.ledger is not None:
            self.metrics.set_ledger_height(node.ledger.state.height)
        if node.order_gossip is not None:
            stats = node.order_gossip.stats
            totals = stats.rejected_batches + stats.ignored_items
            for reason, count in totals.items():
                for _ in range(count - self._rejects_counted[reason]):
                    self.metrics.order_rejected(reject_label(reason))
            self._rejects_counted = totals

    async def _count_trades(self, fills: AsyncIterator[TradeView]) -> None:
        async for trade in fills:
            self.metrics.trade(trade.qty_wh, trade.value_uc)

    async def run(self, node: MetricsHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        data_dir = node.config.node.data_dir
        node.order_listeners.append(self.on_delivery)
        try:
            async with serve_metrics(self.metrics, port=node.config.metrics.port, limits=self.limits) as server:
                self.url, self.server = server.url, server
                written = {"url": server.url, "port": server.port, "pid": os.getpid()}
                write_endpoint(data_dir, METRICS_ENDPOINT, written)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._count_trades, self._api.require_api().fill_events())
                        self.update(node)
                        task_status.started()
                        while True:
                            await trio.sleep(METRICS_PERIOD_S)
                            self.update(node)
                finally:
                    remove_endpoint(data_dir, METRICS_ENDPOINT, written)
        finally:
            node.order_listeners.remove(self.on_delivery)
