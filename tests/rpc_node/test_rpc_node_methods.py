"""Every RPC method against real nodes, over a real HTTP client and a real WebSocket client."""

from __future__ import annotations

import pytest
from p2pgrid.node.api import LiveNodeApi
from p2pgrid.node.app import find_service
from p2pgrid.node.rpc import NodeApiService
from p2pgrid.rpc.api import node_api_mismatches
from rpc_node_helpers import exercise_every_method, rpc_client

pytestmark = pytest.mark.slow     # clusters of real nodes (fast: well under a second each)


async def test_every_method_over_http(cluster):
    async with rpc_client(cluster[1]) as maker, rpc_client(cluster[2]) as taker:
        await exercise_every_method(maker.call, taker.call, cluster)


async def test_every_method_over_websocket(cluster):
    async with rpc_client(cluster[1]) as maker, rpc_client(cluster[2]) as taker:
        async with maker.open_websocket() as maker_ws, taker.open_websocket() as taker_ws:
            await exercise_every_method(maker_ws.call, taker_ws.call, cluster)


async def test_the_live_api_implements_the_whole_node_api(cluster):
    api = find_service(cluster[1], NodeApiService).api
    assert isinstance(api, LiveNodeApi)
    assert node_api_mismatches(api) == []
