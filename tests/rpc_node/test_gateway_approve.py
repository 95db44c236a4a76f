"""``gateway_approve`` on real nodes (memory transport): the gateway certifies the meter
registration v2 and the funding, every node sees both, and approving twice, the same account with
another meter, or on a node that is not the gateway is refused with nothing written."""

from __future__ import annotations

import pytest

from p2pgrid.identity import NodeKey
from p2pgrid.node.api import LiveNodeApi
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.onboarding.api import AlreadyApproved, NotTheGateway
from p2pgrid.rpc.api import ApprovalView
from p2pgrid.settlement.entries import account_registration_of, meter_registration_of
from p2pgrid.settlement.metering import export_w_of
from rpc_node_helpers import wait_until

pytestmark = pytest.mark.slow     # a cluster of real nodes

FUND_UC = 7_000_000


async def test_the_gateway_admits_a_neighbour_once(tmp_path):
    neighbour, meter, other_meter = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    async with open_node_cluster(tmp_path, 4, export_w=None,
                                 node_overrides={0: {"gateway.fund_uc": FUND_UC}}) as nodes:
        gateway = nodes[0]
        api = LiveNodeApi(gateway)
        approval = await api.approve_member(neighbour.public_key, meter.public_key, 3_000, None)
        assert approval == ApprovalView(neighbour.public_key, meter.public_key, 3_000, FUND_UC)

        def admitted(state):
            registration = meter_registration_of(state, meter.public_key)
            return (registration is not None and registration.account == neighbour.public_key
                    and export_w_of(registration) == 3_000 and state.balance(neighbour.public_key) == FUND_UC)

        await wait_until(lambda: all(admitted(n.ledger.state) for n in nodes), timeout_s=30)
        head = gateway.ledger.state.head(gateway.key.public_key)

        with pytest.raises(AlreadyApproved, match="registered already"):
            await api.approve_member(neighbour.public_key, meter.public_key, 3_000, None)
        with pytest.raises(AlreadyApproved, match="account .* registered already"):
            await api.approve_member(neighbour.public_key, other_meter.public_key, 3_000, 1)
        with pytest.raises(NotTheGateway):
            await LiveNodeApi(nodes[1]).approve_member(NodeKey.generate().public_key, other_meter.public_key, 0, 0)
        assert gateway.ledger.state.head(gateway.key.public_key) == head                 # nothing written
        assert account_registration_of(gateway.ledger.state, neighbour.public_key).meter_key == meter.public_key
        assert gateway.ledger.state.balance(neighbour.public_key) == FUND_UC

        # A second neighbour with nothing to export, funded with an amount of its own.
        second, second_meter = NodeKey.generate(), NodeKey.generate()
        assert (await api.approve_member(second.public_key, second_meter.public_key, 0, 1_000)).funded_uc == 1_000
        await wait_until(lambda: nodes[3].ledger.state.balance(second.public_key) == 1_000, timeout_s=30)
        assert export_w_of(meter_registration_of(nodes[3].ledger.state, second_meter.public_key)) == 0
