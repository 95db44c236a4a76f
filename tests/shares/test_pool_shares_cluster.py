"""Pool shares on a live ledger: LPs buy shares, the pool earns fees from routed buys, the host pays
the LP part out, and every node derives the same state."""

import pytest
import trio

from p2pgrid.invest.statement import share_statement
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import wait_until
from p2pgrid.pools.entries import compute_pool_id
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig
from p2pgrid.shares.rules import (
    ShareOffer, compute_payout, host_pool_fees_uc, lp_positions, next_programme_id, plan_share_buy, plan_share_issue,
    programme_of,
)
from p2pgrid.trading.testing import ZONE, fund, open_trading_cluster
from p2pgrid.wire import Side

CREDITS = 10_000_000
PRICE = 500_000
OPERATOR, STATION, LP_A, LP_B, CONSUMER = range(5)
POOLS = PoolHostConfig(battery=lambda: BatteryLimits(available_wh=40_000, power_limit_w=40_000), fee_bps=100,
                       initial_credits_uc=400_000, seed_energy_wh=2_000, slots_ahead=3, tick_s=0.1,
                       announce_interval_s=1.0, lock_wait_s=10.0)   # generous: the machine is shared


async def certify(node, kind, body):
    return await node.ledger.submit(node.ledger.next_entry(kind, body))


async def everyone_sees(nodes, condition):
    with trio.fail_after(30):
        await wait_until(lambda: all(condition(n.ledger.state) for n in nodes))


async def pay_out(station, programme_id):
    body = compute_payout(station.ledger.state, programme_of(station.ledger.state, programme_id))
    await certify(station, "share_payout", body)
    return body


async def converge(nodes):
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({state_root(n.ledger.state) for n in nodes}) == 1)


@pytest.mark.parametrize("kind", ["memory", pytest.param("libp2p", marks=pytest.mark.slow)])
async def test_lps_buy_shares_the_pool_earns_fees_and_every_node_agrees_on_the_payout(kind, tmp_path):
    async with open_trading_cluster(kind, 5, tmp_path, pool_host=STATION, pool_config=POOLS) as nodes:
        await fund(nodes, CREDITS)
        station, consumer = nodes[STATION], nodes[CONSUMER]
        rules = station.trading.config.slot_rules
        now = station.trading.clock()
        lockup = rules.slot_of(now) + 8 * rules.length_s
        programme_id = next_programme_id(station.ledger.state, station.account, ZONE)
        await certify(station, "share_offer", ShareOffer(
            programme_id=programme_id, zone=ZONE, price_uc=PRICE, fee_share_bps=5_000, lockup_until_slot=lockup,
            cap_shares=10, sale_until_ms=now + 600_000))
        await everyone_sees(nodes, lambda s: programme_of(s, programme_id) is not None)

        buys = []
        for lp, shares in ((nodes[LP_A], 3), (nodes[LP_B], 1)):
            body = plan_share_buy(programme_of(lp.ledger.state, programme_id), lp.account, shares,
                                  lp.ledger.head().next_seq, lp.trading.clock() + 120_000)
            await certify(lp, "share_buy", body)
            buys.append(body)
        # Validators judge an issue against their own state: every node must hold the purchases.
        await everyone_sees(nodes, lambda s: all(plan_share_issue(s, b.buy_id) for b in buys))
        for body in buys:
            await certify(station, "share_issue", plan_share_issue(station.ledger.state, body.buy_id))
        first = await pay_out(station, programme_id)         # shares start earning from here
        assert first.amount_uc == 0

        slot = rules.tradable_slots(station.trading.clock())[2]
        pool_id = compute_pool_id(station.account, ZONE, slot)
        await everyone_sees([consumer], lambda s: pool_id in s.pools)
        with trio.fail_after(30):
            await wait_until(lambda: consumer.pools.pools(slot))
        fees_before = host_pool_fees_uc(station.ledger.state, station.account)
        swaps = 0
        for qty in (400, 300):
            report = await consumer.trading.execute(Side.BUY, qty, slot, limit_price=1_000_000)
            assert report.filled_wh == qty and report.problems == (), report
            swaps += sum(1 for e in report.executions if e.counterparty == station.account)
        # A payout is judged against each validator's certified swaps: wait until all hold them.
        await everyone_sees(nodes, lambda s: s.pools[pool_id].swaps == swaps)
        fees = host_pool_fees_uc(station.ledger.state, station.account) - fees_before
        assert fees > 0

        payout = await pay_out(station, programme_id)
        assert payout.fees_uc == fees and payout.amount_uc == fees * 5_000 // 10_000 > 0
        paid = {p.lp: p.amount_uc for p in payout.payments}
        assert sum(paid.values()) == payout.amount_uc and paid[nodes[LP_A].account] >= 3 * paid[nodes[LP_B].account]

        await converge(nodes)
        for node in nodes:
            state = node.ledger.state
            assert state.money_total() == 0
            programme = programme_of(state, programme_id)
            assert programme.outstanding == 4 and programme.paid_uc == payout.amount_uc
            [position] = lp_positions(state, nodes[LP_A].account)
            assert position.shares == 3 and position.income_uc == paid[nodes[LP_A].account]
        lp_b = nodes[LP_B]
        statement = share_statement(await lp_b.ledger.store.all_entries(), lp_b.ledger.rules, lp_b.account)
        assert statement.reconciled and statement.income_uc == paid[lp_b.account]
