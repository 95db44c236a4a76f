"""End to end: gossip → local book → take → certified fill, on a cluster of real services."""

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.messages import RefuseReason
from p2pgrid.trading.testing import fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source

CREDITS = 10_000_000


def open_slot(node):
    rules = node.trading.config.slot_rules
    return rules.tradable_slots(node.trading.clock())[2]


async def converge(nodes):
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1)
    roots = {state_root(n.ledger.state) for n in nodes}
    assert len(roots) == 1
    assert all(n.ledger.state.money_total() == 0 for n in nodes)


async def wait_for_orders(node, slot, count):
    with trio.fail_after(30):
        await wait_until(lambda: len(node.trading.books.book(slot)) >= count)


@pytest.mark.parametrize("kind", ["memory", pytest.param("libp2p", marks=pytest.mark.slow)])
async def test_buy_routed_across_two_offers_is_certified_everywhere(kind, tmp_path):
    async with open_trading_cluster(kind, 6, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        slot = open_slot(nodes[0])
        seller_a, seller_b, buyer = nodes[4], nodes[1], nodes[5]
        seller_a.trading.place_order(Side.SELL, 1000, 200_000, slot, green=True, source=Source.PV)
        seller_b.trading.place_order(Side.SELL, 500, 180_000, slot, green=True, source=Source.PV)
        await wait_for_orders(buyer, slot, 2)

        report = await buyer.trading.execute(Side.BUY, 1200, slot, limit_price=250_000)

        assert report.problems == ()
        assert sorted((e.qty_wh, e.price) for e in report.executions) == [(500, 180_000), (700, 200_000)]
        await converge(nodes)
        state = buyer.ledger.state
        assert state.balance(seller_b.account) == CREDITS + trade_value(500, 180_000)
        assert state.balance(seller_a.account) == CREDITS + trade_value(700, 200_000)
        assert state.balance(buyer.account) == CREDITS - report.total_uc
        # Every node's book follows the certified fills: B is gone, 300 Wh of A is left.
        order_a = next(iter(seller_a.trading.own_orders))
        with trio.fail_after(10):
            await wait_until(lambda: all(n.trading.books.book(slot).best_ask() == 200_000
                                         and n.trading.books.remaining(order_a) == 300 for n in nodes))


async def test_sell_into_a_resting_bid(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        slot = open_slot(nodes[0])
        bidder, seller = nodes[2], nodes[4]
        bid = bidder.trading.place_order(Side.BUY, 800, 150_000, slot)
        await wait_for_orders(seller, slot, 1)
        report = await seller.trading.execute(Side.SELL, 500, slot, limit_price=100_000)
        assert report.filled_wh == 500 and report.problems == ()
        await converge(nodes)
        assert seller.ledger.state.balance(seller.account) == CREDITS + trade_value(500, 150_000)
        assert seller.ledger.state.orders[(bidder.account, bid.body.order_id)].locked_wh == 500


async def test_five_takers_race_for_one_offer(tmp_path):
    async with open_trading_cluster("memory", 7, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        slot = open_slot(nodes[0])
        maker = nodes[6]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot)
        takers = nodes[1:6]
        for taker in takers:
            await wait_for_orders(taker, slot, 1)
        results = []

        async def take(node):
            try:
                results.append(await node.trading.take(Side.BUY, offer.body.order_id, 300))
            except Exception as exc:  # noqa: BLE001 - collected and asserted on below
                results.append(exc)

        async with trio.open_nursery() as nursery:
            for taker in takers:
                nursery.start_soon(take, taker)
        won = [r for r in results if not isinstance(r, Exception)]
        lost = [r for r in results if isinstance(r, Exception)]
        assert sum(e.qty_wh for e in won) <= 1000 and len(won) == 3
        assert all(getattr(e, "reason", None) == RefuseReason.INSUFFICIENT_REMAINING.value for e in lost), lost
        await converge(nodes)
        progress = maker.ledger.state.orders[(maker.account, offer.body.order_id)]
        assert progress.filled_wh == 900
        # Maker first: the losers were refused before they locked anything.
        assert len({r.buyer for r in maker.ledger.state.locks.values()}) == 3
        assert maker.ledger.state.locked_total() == 0
