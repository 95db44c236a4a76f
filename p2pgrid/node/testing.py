"""Clusters of real nodes for tests, benchmarks and demos (not production).

``open_node_cluster(data_dir, n)`` yields ``n`` real nodes (``Node``) — every service of the registry their
config calls for — on one in-memory or libp2p network, with a committee, a gateway and, if asked,
funds, RPC and metrics on 127.0.0.1. Every node but the gateway has a meter registered for its
account, with an export capacity of ``export_w`` W, so that order admission
(``p2pgrid.trading.admission``), which is on in every node with a ledger, admits its orders (bids
need ``funds_uc`` as well).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from p2pgrid.clock import Clock, SystemClock
from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import ledger_topic
from p2pgrid.net.orders import orders_topic
from p2pgrid.net.testing import cluster_keys, open_cluster, wait_for_mesh
from p2pgrid.node.app import Node, find_service
from p2pgrid.node.metrics import MetricsLimits
from p2pgrid.node.rpc import MetricsService, RpcService
from p2pgrid.rpc.server import RpcLimits
from p2pgrid.settlement.service import register_meters

__all__ = ["CLUSTER_ZONE", "meter_key_of", "open_node_cluster"]

CLUSTER_ZONE = "rpczone"
DEFAULT_EXPORT_W = 1_000_000    # 1 MW: 250 kWh per 15-minute slot, more than any test offers


@asynccontextmanager
async def open_node_cluster(data_dir: Path, n: int = 4, *, kind: str = "memory", n_validators: int = 4,
                            rpc_nodes: Sequence[int] = (), metrics_nodes: Sequence[int] = (),
                            funds_uc: int = 0, seed: int = 7, rpc_limits: RpcLimits | None = None,
                            metrics_limits: MetricsLimits | None = None,
                            overrides: Mapping[str, Any] | None = None,
                            node_overrides: Mapping[int, Mapping[str, Any]] | None = None,
                            clock: Clock | None = None,
                            export_w: int | None = DEFAULT_EXPORT_W) -> AsyncIterator[list[Node]]:
    """``n`` real ``Node``s (ledger, trading, RPC and metrics services) on one network of ``kind``
    (``"memory"``, or ``"libp2p"`` hosts on 127.0.0.1), fully connected, all on ``clock`` (default:
    the system clock).

    Node 0's key is the zone gateway and the first ``n_validators`` nodes are the committee. Nodes
    in ``rpc_nodes`` / ``metrics_nodes`` serve RPC / metrics on 127.0.0.1 (ports 0; ``rpc_limits``
    replaces the RPC's default limits, ``metrics_limits`` the metrics endpoint's). With ``funds_uc`` the gateway mints that much to every
    other node before the block starts, and registers a meter for each of them with ``export_w``
    (None: no meters; their orders are then not admitted). ``overrides`` (dotted config keys) apply to every node,
    then ``node_overrides[i]`` to node ``i`` (e.g. ``{"agent.strategy": "agent"}``). For tests,
    benchmarks and demos, not production."""
    keys = cluster_keys(n, seed)
    async with AsyncExitStack() as stack:
        # One trio-asyncio loop for the whole cluster, outliving every node's store: the ledger's
        # stream handlers (sync) run in the transports' tasks, which outlive the nodes, and a
        # store query of theirs on a loop already closed ends in asyncio's CancelledError.
        await stack.enter_async_context(trio_asyncio.open_loop())
        # Takes and votes are direct streams: every node of a small community dials all others.
        full_mesh = [(i, j) for i in range(n) for j in range(i)]
        transports = await stack.enter_async_context(open_cluster(kind, n, seed=seed, links=full_mesh))
        zone = {"id": CLUSTER_ZONE, "gateway_account": keys[0].public_key.hex(),
                "validators": [{"public_key": k.public_key.hex(), "address": t.listen_addrs[0]}
                               for k, t in list(zip(keys, transports))[:n_validators]]}
        nursery = await stack.enter_async_context(trio.open_nursery())
        nodes: list[Node] = []
        for i, (key, transport) in enumerate(zip(keys, transports)):
            node_dir = Path(data_dir) / f"n{i}"
            node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)   # as `p2pgrid init` leaves it
            # A test cluster's nodes place no orders of their own unless a test asks (the node
            # default, "auto", would run the agent strategy on every node with devices).
            raw = {"node": {"data_dir": str(node_dir), "name": f"n{i}"}, "zone": zone,
                   "agent": {"strategy": "none"}, "network": {"publish_interval_ms": 50},
                   "rpc": {"enabled": i in rpc_nodes}, "metrics": {"enabled": i in metrics_nodes}}
            config = build_config(raw, base_dir=Path(data_dir),
                                  overrides={**(overrides or {}), **(node_overrides or {}).get(i, {})})
            node = Node(config, key, clock or SystemClock(), transport)
            if rpc_limits is not None and config.rpc.enabled:
                find_service(node, RpcService).limits = rpc_limits
            if metrics_limits is not None and config.metrics.enabled:
                find_service(node, MetricsService).limits = metrics_limits
            nodes.append(await nursery.start(node.run))
        with trio.fail_after(60):
            await wait_for_mesh(transports, orders_topic(CLUSTER_ZONE))
            await wait_for_mesh(transports, ledger_topic(CLUSTER_ZONE))
        if funds_uc or export_w is not None:
            gateway = nodes[0].ledger
            if gateway is None:
                raise RuntimeError("the gateway node runs no ledger")
            if funds_uc:
                entries = [gateway.next_entry("mint", Mint(to=node.key.public_key, amount=funds_uc))
                           for node in nodes[1:]]
                async with trio.open_nursery() as minting:
                    for entry in entries:
                        minting.start_soon(gateway.submit, entry)
            if export_w is not None:
                meters = {node.key.public_key: meter_key_of(i, seed).public_key for i, node in enumerate(nodes) if i}
                await register_meters(gateway, meters.items(), nodes[0].clock.now_ms(),
                                      {meter: export_w for meter in meters.values()})
            with trio.fail_after(30):
                for node in nodes:
                    if node.ledger is not None:
                        await node.ledger.wait_for_height(gateway.state.height)
        yield nodes
        nursery.cancel_scope.cancel()


def meter_key_of(index: int, seed: int = 7) -> NodeKey:
    """The meter key registered for node ``index`` of a cluster built with ``seed``."""
    return NodeKey(hashlib.sha256(f"p2pgrid/test-meter/{seed}/{index}".encode()).digest())
