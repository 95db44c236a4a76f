"""The example market-maker bot on a 4-node cluster: it places and cancels quotes through the RPC,
other nodes trade against them, and its fills are certified in every node's ledger."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.node.app import find_service
from p2pgrid.node.rpc import NodeApiService, read_endpoint
from p2pgrid.rpc.api import OrderStatus
from p2pgrid.rpc.client import RpcClient
from p2pgrid.units import trade_value
from p2pgrid.wire import Side
from rpc_node_helpers import FUNDS_UC, open_slot, wait_until
from simnet.bots.market_maker import MakerParams, run

pytestmark = pytest.mark.slow     # clusters of real nodes (fast: well under a second each)


async def test_market_maker_quotes_cancels_and_its_fills_reach_the_ledger(cluster):
    gateway, bot_node, taker, other = cluster
    bot = bot_node.key.public_key
    api = find_service(bot_node, NodeApiService).api
    zone, slot = bot_node.zone, open_slot(bot_node)
    # Someone else's quotes give the bot a book mid to quote around: (190k + 210k) / 2 = 200k.
    other.trading.place_order(Side.BUY, 2000, 190_000, slot)
    other.trading.place_order(Side.SELL, 2000, 210_000, slot)
    await wait_until(lambda: len(bot_node.trading.books.book(slot)) == 2)

    takes = [(Side.BUY, 300), (Side.SELL, 200)]      # one per pause between the bot's rounds
    executed = []

    async def take_from_the_bot(side: Side, qty_wh: int) -> None:
        # Trade with the bot's current quotes: wait until the taker's book holds exactly them
        # (the cancels of the previous round's quotes and the new quotes travel by gossip).
        quotes = {o.order_id for o in await api.list_orders(open_only=True)}
        assert len(quotes) == 2
        await wait_until(lambda: {s.body.order_id for s in taker.trading.books.live_orders()
                                  if s.body.owner == bot} == quotes)
        report = await taker.trading.execute(side, qty_wh, slot, 205_000 if side is Side.BUY else 195_000)
        assert (report.filled_wh, report.problems) == (qty_wh, ())
        executed.extend(report.executions)
        # The bot reads its inventory from trade_list next round: wait until its node knows.
        await wait_until(lambda: {e.take_id for e in executed} <= set(api.trade_ids()))

    def pause(_seconds: float) -> None:
        trio.from_thread.run(take_from_the_bot, *takes.pop(0))

    endpoint = read_endpoint(bot_node.config.node.data_dir)
    lines: list[str] = []
    with RpcClient(endpoint["url"], token_file=endpoint["token_file"]) as client:
        live = await trio.to_thread.run_sync(lambda: run(
            client, zone=None, slot=slot, params=MakerParams(spread_ppm=20_000, quote_wh=500),
            rounds=3, interval_s=0, say=lines.append, sleep=pause))

    # Round 1 quoted 198k / 202k; the taker bought 300 Wh of the ask at 202k; round 2 requoted
    # skewed by the short inventory; the taker sold 200 Wh into the new bid; round 3 requoted.
    assert [(e.price, e.qty_wh) for e in executed][0] == (202_000, 300)
    bid_price = executed[1].price
    assert 190_000 < bid_price < 200_000
    assert len(live) == 2
    history = {o.order_id: o for o in await api.list_orders(open_only=False)}
    assert sum(o.status is OrderStatus.CANCELLED for o in history.values()) == 4     # rounds 1 and 2
    assert all(history[i].status is OrderStatus.OPEN for i in live)

    expected = FUNDS_UC + trade_value(300, 202_000) - trade_value(200, bid_price)
    await wait_until(lambda: all(n.ledger.state.balance(bot) == expected for n in cluster))
    assert len({state_root(n.ledger.state) for n in cluster}) == 1
    assert all(n.ledger.state.money_total() == 0 for n in cluster)
    trades = await api.list_trades(0, 100)
    assert sorted((t.qty_wh, t.buyer == bot) for t in trades) == [(200, True), (300, False)]
    assert ["inventory +0 Wh" in lines[1], "inventory -300 Wh" in lines[2], "inventory -100 Wh" in lines[3]] == [True] * 3

