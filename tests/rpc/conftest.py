"""Fixtures: a fake node behind a real RPC server on 127.0.0.1, and real HTTP / WebSocket clients."""

from __future__ import annotations

import httpx
import pytest

from p2pgrid.rpc.server import RpcLimits, serve_rpc
from p2pgrid.rpc.testing import FakeNode, seeded_fake_node

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture
def token() -> str:
    return TOKEN


@pytest.fixture
def node() -> FakeNode:
    return seeded_fake_node()


@pytest.fixture
def limits() -> RpcLimits:
    return RpcLimits()


@pytest.fixture
async def server(node, limits):
    async with serve_rpc(node, token=TOKEN, port=0, limits=limits) as running:
        yield running


@pytest.fixture
async def http(server):
    async with httpx.AsyncClient(base_url=server.url, timeout=10,
                                 headers={"authorization": f"Bearer {TOKEN}"}) as client:
        yield client
