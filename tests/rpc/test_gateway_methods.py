"""``gateway_approve`` over real HTTP against the fake node, as ``p2pgrid zone approve`` calls it."""

from __future__ import annotations

import pytest

from p2pgrid.cli.zone import gateway_calls
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import ApprovalView
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError
from p2pgrid.rpc.testing import OTHER_ACCOUNT

METER_KEY = bytes(range(32))


async def test_approving_registers_and_funds_once_and_a_second_approval_is_refused(server, node, token):
    node.fund_uc = 5_000_000
    async with AsyncRpcClient(server.url, token=token) as rpc:
        first = await rpc.call(gateway_calls.gateway_approve(OTHER_ACCOUNT, METER_KEY, 3_000))
        assert first == ApprovalView(OTHER_ACCOUNT, METER_KEY, 3_000, 5_000_000)
        with pytest.raises(RpcCallError) as twice:
            await rpc.call(gateway_calls.gateway_approve(OTHER_ACCOUNT, METER_KEY, 3_000, fund_uc=1))
        assert twice.value.code == codes.LEDGER_ERROR and "registered already" in twice.value.message
    assert node.balances[OTHER_ACCOUNT] == 5_000_000          # the refused approval wrote nothing


async def test_an_explicit_amount_replaces_the_zones_funding(server, node, token):
    node.fund_uc = 5_000_000
    async with AsyncRpcClient(server.url, token=token) as rpc:
        approval = await rpc.call(gateway_calls.gateway_approve(OTHER_ACCOUNT, METER_KEY, 0, fund_uc=0))
    assert (approval.export_w, approval.funded_uc) == (0, 0)


async def test_bad_params_are_invalid_params(server, node, token):
    async with AsyncRpcClient(server.url, token=token) as rpc:
        with pytest.raises(RpcCallError) as negative:
            await rpc.call(gateway_calls.gateway_approve(OTHER_ACCOUNT, METER_KEY, -1))
    assert negative.value.code == codes.INVALID_PARAMS
    assert node.approvals == {}
