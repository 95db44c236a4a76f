"""The RPC of real nodes on real py-libp2p hosts (127.0.0.1): the whole method table over HTTP,
a trade between two nodes included."""

from __future__ import annotations

import pytest

from p2pgrid.node_rpc import open_node_cluster
from rpc_node_helpers import FUNDS_UC, exercise_every_method, rpc_client


@pytest.mark.slow
async def test_every_method_over_http_on_libp2p_nodes(tmp_path):
    async with open_node_cluster(tmp_path, 4, kind="libp2p", rpc_nodes=(1, 2), funds_uc=FUNDS_UC) as nodes:
        async with rpc_client(nodes[1]) as maker, rpc_client(nodes[2]) as taker:
            await exercise_every_method(maker.call, taker.call, nodes)
