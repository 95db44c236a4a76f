"""The automated share flow on a cluster of real nodes (memory transport, one manual market clock):
a pool host with ``[shares] offer = true`` opens a programme by itself, an LP buys through the RPC,
the host issues it, pool fees accrue from a consumer's buys, the host pays them out, and after the
lock-up the LP's exit request is redeemed — every node ends on the same state root."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.cli.shares import share_calls
from p2pgrid.clock import ManualClock
from p2pgrid.ledger.chain import state_root
from p2pgrid.node.api import LiveNodeApi
from p2pgrid.node.app import find_service
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import ShareBuyStatus
from p2pgrid.rpc.client import RpcCallError
from p2pgrid.shares.rules import host_pool_fees_uc, lockup_ends_ms, pending_exit, programmes
from p2pgrid.shares.service import ShareHostService
from p2pgrid.wire import Side
from rpc_node_helpers import rpc_client, wait_until

pytestmark = pytest.mark.slow     # a cluster of real nodes

NOW = 1_800_000_000_000 + 60_000       # a minute into a slot
FUNDS_UC = 50_000_000
PRICE = 1_000_000
GATEWAY, HOST, LP, CONSUMER = range(4)
HOST_CONFIG = {
    "pool.enabled": True, "pool.fee_bps": 100,
    "devices.battery": {"capacity_wh": 100_000, "max_charge_w": 50_000, "max_discharge_w": 50_000},
    "shares.offer": True, "shares.price_uc": PRICE, "shares.fee_share_bps": 5_000, "shares.cap_shares": 10,
    "shares.lockup_s": 1_800, "shares.sale_s": 3_600, "shares.payout_every_s": 600,
}


def everyone(nodes, condition):
    return wait_until(lambda: all(condition(n.ledger.state) for n in nodes), timeout_s=30)


async def test_a_host_runs_its_share_programme_by_itself_and_every_node_agrees(tmp_path):
    clock = ManualClock(NOW)
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(LP,), funds_uc=FUNDS_UC, clock=clock,
                                 node_overrides={HOST: HOST_CONFIG}) as nodes:
        host, lp, consumer = nodes[HOST], nodes[LP], nodes[CONSUMER]
        me = host.key.public_key
        await everyone(nodes, lambda s: programmes(s, me))          # offered by the host's service
        [programme] = programmes(host.ledger.state, me)
        pid = programme.programme_id

        async with rpc_client(lp) as client:
            [listed] = await client.call(share_calls.shares_programmes())
            assert (listed.programme_id, listed.available_shares, listed.sale_open) == (pid, 10, True)
            buy = await client.call(share_calls.shares_buy(pid, 3, wait_s=30))
            assert (buy.status, buy.amount_uc) == (ShareBuyStatus.ISSUED, 3 * PRICE)
            with pytest.raises(RpcCallError) as refused:                # beyond the cap: the ledger's rule
                await client.call(share_calls.shares_buy(pid, 8))
            assert refused.value.code == codes.LEDGER_ERROR and "cap_exceeded" in refused.value.message
        # The host's first payout pays nothing but turns the LP's new shares into earning ones.
        await everyone(nodes, lambda s: programmes(s, me)[0].earning == 3)
        second = await LiveNodeApi(consumer).share_buy(pid, 1, 30)     # the API method, without HTTP
        assert second.status is ShareBuyStatus.ISSUED                  # earns from the next period on

        slot = consumer.config.zone.slot_rules.tradable_slots(clock.now_ms())[1]
        await wait_until(lambda: any(hasattr(leg, "pool_id") for leg in consumer.trading.quote(
            Side.BUY, 300, slot, 1_000_000).legs), timeout_s=30)
        report = await consumer.trading.execute(Side.BUY, 300, slot, limit_price=1_000_000)
        assert report.filled_wh == 300, report
        fees = host_pool_fees_uc(host.ledger.state, me)
        assert fees > 0
        await everyone(nodes, lambda s: host_pool_fees_uc(s, me) == fees)

        clock.advance(600_000)                                        # the payout period is over
        await everyone(nodes, lambda s: programmes(s, me)[0].paid_uc == fees * 5_000 // 10_000 > 0)
        async with rpc_client(lp) as client:
            [position] = await client.call(share_calls.shares_positions())
            assert (position.shares, position.earning_shares, position.locked) == (3, 3, True)
            assert position.income_uc == fees * 5_000 // 10_000          # the only earning holder
            asked = await client.call(share_calls.shares_exit(pid, 2))
            assert (asked.requested_shares, asked.pending_shares) == (2, 2)
            balance_before = lp.ledger.state.balance(lp.key.public_key)
            await trio.sleep(0.5)                                     # locked up: the host must wait
            assert programmes(host.ledger.state, me)[0].holding(lp.key.public_key).shares == 3

            clock.set(lockup_ends_ms(programme.terms))
            await everyone(nodes, lambda s: pending_exit(s, programmes(s, me)[0], lp.key.public_key) == 0)
            [position] = await client.call(share_calls.shares_positions())
            assert (position.shares, position.pending_exit_shares, position.locked) == (1, 0, False)
        assert lp.ledger.state.balance(lp.key.public_key) == balance_before + 2 * PRICE

        service = find_service(host, ShareHostService)
        assert service.stats.written.get("share_offer") == 1 and service.stats.written.get("share_redeem") == 1
        with trio.fail_after(30):
            while len({n.ledger.state.height for n in nodes}) > 1 or len({state_root(n.ledger.state)
                                                                           for n in nodes}) > 1:
                await trio.sleep(0.05)
        assert all(n.ledger.state.money_total() == 0 for n in nodes)
