"""A partition that cuts takers off the committee: takes wait, then complete after the heal;
nothing is ever certified twice."""

import dataclasses

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.service import TakeFailed
from p2pgrid.trading.testing import fund, open_trading_cluster
from p2pgrid.wire import Side

CREDITS = 10_000_000


def split(nodes, minority):
    """Cut every link between ``minority`` and the rest; return a function that heals it."""
    majority = [n for n in nodes if n not in minority]
    for a in minority:
        for b in majority:
            a.transport.disconnect(b.account)

    async def heal():
        for a in minority:
            for b in majority:
                await a.transport.connect(b.transport.listen_addrs[0])
    return heal


async def test_takes_cut_off_from_the_committee_wait_and_complete_after_heal(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker = nodes[4], nodes[5]
        slot = maker.trading.config.slot_rules.tradable_slots(maker.trading.clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: taker.trading.books.remaining(offer.order_id) == 1000)
        heal = split(nodes, [maker, taker])          # the committee (nodes 0-3) is on the other side

        result = []

        async def take():
            result.append(await taker.trading.take(Side.BUY, offer.order_id, 600))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take)
            with trio.fail_after(30):
                await wait_until(lambda: taker.trading.stats.quorum_retries >= 2)
            assert result == []
            assert all(lock.buyer != taker.account for lock in nodes[0].ledger.state.locks.values())
            await heal()
        assert result and result[0].qty_wh == 600
        with trio.fail_after(30):
            await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes}) == 1)
        assert maker.ledger.state.orders[(maker.account, offer.order_id)].filled_wh == 600
        assert all(n.ledger.state.money_total() == 0 for n in nodes)


async def test_a_partition_that_never_heals_fails_the_take_cleanly(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker = nodes[4], nodes[5]
        taker.trading.config = dataclasses.replace(taker.trading.config, take_timeout_s=2.0)
        slot = maker.trading.config.slot_rules.tradable_slots(maker.trading.clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: taker.trading.books.remaining(offer.order_id) == 1000)
        split(nodes, [maker, taker])
        with pytest.raises(TakeFailed, match="timed out"):
            await taker.trading.take(Side.BUY, offer.order_id, 600)
        assert (maker.account, offer.order_id) not in nodes[0].ledger.state.orders
        assert all(lock.buyer != taker.account for lock in nodes[0].ledger.state.locks.values())
