"""Investor nodes on a cluster of real nodes (memory transport, one manual market clock), no RPC:
a pool host with ``[shares] offer = true`` opens a programme, two nodes with ``[shares]
invest_shares = N`` buy by themselves and are issued, pool fees from a consumer's buys are paid out
to both, and after the lock-up the one with ``exit_after_lockup`` is redeemed at par while the
other keeps its shares — every node on the same state root, money conserved."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.clock import ManualClock
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import wait_until
from p2pgrid.node.app import find_service
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.shares.planning import lp_escrows
from p2pgrid.shares.rules import exit_of, host_pool_fees_uc, lockup_ends_ms, programmes
from p2pgrid.shares.service import ShareHostService, ShareInvestorService
from p2pgrid.wire import Side

pytestmark = pytest.mark.slow     # a cluster of real nodes

NOW = 1_800_000_000_000 + 60_000       # a minute into a slot
FUNDS_UC = 50_000_000
PRICE = 1_000_000
GATEWAY, HOST, LEAVER, KEEPER, CONSUMER = range(5)
HOST_CONFIG = {
    "pool.enabled": True, "pool.fee_bps": 100,
    "devices.battery": {"capacity_wh": 100_000, "max_charge_w": 50_000, "max_discharge_w": 50_000},
    "shares.offer": True, "shares.price_uc": PRICE, "shares.fee_share_bps": 5_000, "shares.cap_shares": 10,
    "shares.lockup_s": 1_800, "shares.sale_s": 3_600, "shares.payout_every_s": 600,
}
INVESTORS = {
    LEAVER: {"shares.invest_shares": 3, "shares.exit_after_lockup": True},
    KEEPER: {"shares.invest_shares": 4, "shares.invest_reserve_uc": 1_000_000},
}


async def everyone(nodes, condition):
    with trio.fail_after(30):
        await wait_until(lambda: all(condition(n.ledger.state) for n in nodes))


def shares_of(state, host, lp):
    held = programmes(state, host)[0].holding(lp)
    return held.shares if held else 0


async def test_investor_nodes_buy_earn_and_exit_by_themselves_and_every_node_agrees(tmp_path):
    clock = ManualClock(NOW)
    async with open_node_cluster(tmp_path, 5, funds_uc=FUNDS_UC, clock=clock,
                                 node_overrides={HOST: HOST_CONFIG, **INVESTORS}) as nodes:
        host, leaver, keeper, consumer = nodes[HOST], nodes[LEAVER], nodes[KEEPER], nodes[CONSUMER]
        me, lp_a, lp_b = host.key.public_key, leaver.key.public_key, keeper.key.public_key
        assert [type(s).__name__ for s in leaver.services if "Share" in type(s).__name__] == ["ShareInvestorService"]
        assert not any(isinstance(s, ShareInvestorService) for s in consumer.services + host.services)

        # Offered by the host's service, bought by the investors' services, issued by the host's.
        await everyone(nodes, lambda s: programmes(s, me) and shares_of(s, me, lp_a) == 3
                       and shares_of(s, me, lp_b) == 4)
        [programme] = programmes(host.ledger.state, me)
        clock.advance(600_000)                            # a payout makes every issued share earn
        await everyone(nodes, lambda s: programmes(s, me)[0].earning == 7)

        slot = consumer.config.zone.slot_rules.tradable_slots(clock.now_ms())[1]
        with trio.fail_after(30):
            await wait_until(lambda: any(hasattr(leg, "pool_id") for leg in consumer.trading.quote(
                Side.BUY, 300, slot, 1_000_000).legs))
        report = await consumer.trading.execute(Side.BUY, 300, slot, limit_price=1_000_000)
        assert report.filled_wh == 300, report
        fees = host_pool_fees_uc(host.ledger.state, me)
        assert fees > 0
        await everyone(nodes, lambda s: host_pool_fees_uc(s, me) == fees)

        clock.advance(600_000)                            # the payout period is over
        lp_part = fees * 5_000 // 10_000
        await everyone(nodes, lambda s: programmes(s, me)[0].paid_uc == lp_part > 0)
        paid = programmes(host.ledger.state, me)[0]
        income_a, income_b = paid.holding(lp_a).income_uc, paid.holding(lp_b).income_uc
        assert income_a + income_b == lp_part and income_a > 0 and income_b > 0
        assert abs(income_a * 4 - income_b * 3) <= 7      # pro rata 3 : 4, to the µc
        assert not exit_of(host.ledger.state, programme.programme_id, lp_a)     # locked up: nobody asked yet

        clock.set(lockup_ends_ms(programme.terms))        # the sale is still open: nobody buys back in
        await everyone(nodes, lambda s: shares_of(s, me, lp_a) == 0)
        leaver_service = find_service(leaver, ShareInvestorService)
        rounds = leaver_service.stats.rounds
        with trio.fail_after(30):
            await wait_until(lambda: leaver_service.stats.rounds >= rounds + 3)   # it had its chances
        assert leaver_service.stats.written == {"share_buy": 1, "share_exit": 1}
        assert not lp_escrows(leaver.ledger.state, lp_a) and shares_of(leaver.ledger.state, me, lp_a) == 0
        assert leaver.ledger.state.balance(lp_a) == FUNDS_UC + income_a           # principal back at par
        assert shares_of(keeper.ledger.state, me, lp_b) == 4
        assert find_service(keeper, ShareInvestorService).stats.written == {"share_buy": 1}
        assert keeper.ledger.state.balance(lp_b) == FUNDS_UC - 4 * PRICE + income_b
        assert find_service(host, ShareHostService).stats.written.get("share_redeem") == 1

        with trio.fail_after(30):
            await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                             and len({state_root(n.ledger.state) for n in nodes}) == 1)
        assert all(n.ledger.state.money_total() == 0 for n in nodes)
