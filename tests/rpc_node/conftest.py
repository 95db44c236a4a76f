"""Fixtures: a 4-node cluster of real ``Node``s (ledger, trading, RPC) on the in-memory transport.

Every node is a validator (n = 4, quorum 3) and node 0 is the zone gateway; nodes 1 and 2 serve
RPC on 127.0.0.1, node 1 also serves metrics. Real HTTP (httpx) and WebSocket (trio-websocket)
clients talk to them through ``p2pgrid.rpc.client``.
"""

from __future__ import annotations

import pytest

from p2pgrid.node.testing import open_node_cluster
from rpc_node_helpers import FUNDS_UC


@pytest.fixture
async def cluster(tmp_path):
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(1, 2), metrics_nodes=(1,),
                                        funds_uc=FUNDS_UC) as nodes:
        yield nodes
