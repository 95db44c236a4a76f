"""Subscriptions on real nodes: book updates and fills while a trade happens; a stalled subscriber
is dropped while the node keeps trading."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from p2pgrid.node.app import find_service
from p2pgrid.node.rpc import NodeApiService, RpcService
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc.client import calls
from p2pgrid.rpc.server import RpcLimits
from p2pgrid.rpc.subscriptions import Topic
from p2pgrid.wire import Side
from rpc_node_helpers import FUNDS_UC, open_slot, rpc_client, wait_until

pytestmark = pytest.mark.slow     # clusters of real nodes (fast: well under a second each)


async def next_matching(stream, accept, timeout_s: float = 20):
    with trio.fail_after(timeout_s):
        async for event in stream:
            if accept(event):
                return event
    raise AssertionError("the subscription ended")


async def test_subscribers_receive_book_updates_and_fills_while_a_trade_happens(cluster):
    maker, taker = cluster[1], cluster[2]
    zone, slot = maker.zone, open_slot(maker)
    async with rpc_client(maker) as maker_rpc, rpc_client(taker) as taker_rpc:
        async with maker_rpc.open_websocket() as maker_ws, taker_rpc.open_websocket() as taker_ws:
            async with maker_ws.subscribe("book", zone=zone, slot=slot) as maker_book, \
                    maker_ws.subscribe("fills") as maker_fills, \
                    taker_ws.subscribe("book", zone=zone, slot=slot) as taker_book, \
                    taker_ws.subscribe("fills") as taker_fills:
                order = await maker_rpc.call(calls.order_place(zone, slot, Side.SELL, 1000, 200_000))
                for book in (maker_book, taker_book):       # the taker's copy came by gossip
                    added = await next_matching(book, lambda u: True)
                    assert (added.slot, added.side, added.price, added.qty_wh, added.orders) == (
                        slot, Side.SELL, 200_000, 1000, 1)

                execution = await taker_rpc.call(calls.trade_execute(zone, slot, Side.BUY, 400, None))
                (trade,) = execution.trades

                for fills in (maker_fills, taker_fills):
                    fill = await next_matching(fills, lambda t: True)
                    assert (fill.trade_id, fill.order_id, fill.qty_wh, fill.price, fill.certified) == (
                        trade.trade_id, order.order_id, 400, 200_000, True)
                    assert (fill.buyer, fill.seller) == (taker.key.public_key, maker.key.public_key)
                for book in (maker_book, taker_book):
                    reduced = await next_matching(book, lambda u: u.qty_wh != 1000)
                    assert (reduced.price, reduced.qty_wh, reduced.seq > added.seq) == (200_000, 600, True)

                await maker_rpc.call(calls.order_cancel(order.order_id))
                for book in (maker_book, taker_book):
                    gone = await next_matching(book, lambda u: True)
                    assert (gone.price, gone.qty_wh, gone.orders) == (200_000, 0, 0)
    assert maker.ledger.state.balance(maker.key.public_key) == FUNDS_UC + trade.value_uc


@pytest.fixture
async def small_buffer_cluster(tmp_path):
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(1, 2), funds_uc=FUNDS_UC,
                                        rpc_limits=RpcLimits(subscriber_buffer=16)) as nodes:
        yield nodes


async def test_a_stalled_subscriber_is_dropped_and_the_node_keeps_trading(small_buffer_cluster):
    maker, taker = small_buffer_cluster[1], small_buffer_cluster[2]
    zone, slot = maker.zone, open_slot(maker)
    server = find_service(maker, RpcService).server
    api = find_service(maker, NodeApiService).api
    headers = [(b"authorization", f"Bearer {server.token}".encode())]
    async with rpc_client(maker) as maker_rpc, rpc_client(taker) as taker_rpc:
        async with trio_websocket.open_websocket_url(server.ws_url, extra_headers=headers,
                                                     message_queue_size=1) as stalled:
            await stalled.send_message(json.dumps({"jsonrpc": "2.0", "method": "subscribe",
                                                   "params": {"topic": "book"}, "id": 1}))
            stalled_sub = json.loads(await stalled.get_message())["result"]
            # From here on the stalled client reads nothing, while the maker keeps quoting.
            placed = 0
            with trio.fail_after(30):
                while server.hub.stats.dropped_connections == 0:
                    batch = [calls.order_place(zone, slot, Side.SELL, 100, 250_000 + placed + i) for i in range(50)]
                    await maker_rpc.batch(batch)
                    placed += len(batch)
            assert server.hub.subscriber_count(Topic.BOOK) == 0
            assert api.book_feed.dropped == 0          # the node itself lost nothing

            # The node keeps trading, and a new subscriber is served.
            async with maker_rpc.open_websocket() as ws, ws.subscribe("fills") as fills:
                await wait_until(lambda: len(taker.trading.books.book(slot)) >= placed)
                execution = await taker_rpc.call(calls.trade_execute(zone, slot, Side.BUY, 250, None))
                assert execution.filled_wh == 250
                fill = await next_matching(fills, lambda t: True)
                assert fill.trade_id == execution.trades[0].trade_id

            # The stalled client, reading again, finds what was buffered and then the notice.
            with trio.fail_after(10):
                while True:
                    message = json.loads(await stalled.get_message())
                    if message["method"] == "subscription_dropped":
                        break
            assert message["params"]["subscription"] == stalled_sub
            assert "too slow" in message["params"]["reason"]


async def test_a_node_outside_the_committee_streams_its_fills_and_sees_them_certified(tmp_path):
    """Node 4 is no validator: it learns the maker's certified fill by gossip (or sync) only."""
    async with open_node_cluster(tmp_path, 5, n_validators=4, rpc_nodes=(4,), funds_uc=FUNDS_UC) as nodes:
        maker, outsider = nodes[1], nodes[4]
        zone, slot = maker.zone, open_slot(maker)
        maker.trading.place_order(Side.SELL, 1000, 200_000, slot)
        async with rpc_client(outsider) as rpc, rpc.open_websocket() as ws, ws.subscribe("fills") as fills:
            await wait_until(lambda: len(outsider.trading.books.book(slot)) == 1)
            execution = await rpc.call(calls.trade_execute(zone, slot, Side.BUY, 300, None))
            fill = await next_matching(fills, lambda t: True)
            assert (fill.trade_id, fill.buyer, fill.seller) == (
                execution.trades[0].trade_id, outsider.key.public_key, maker.key.public_key)
            with trio.fail_after(20):
                while (await rpc.call(calls.ledger_balance(maker.key.public_key))).head_seq != 0:
                    await trio.sleep(0.02)
            mine = await rpc.call(calls.ledger_balance(outsider.key.public_key))
            assert (mine.balance_uc, mine.locked_uc) == (FUNDS_UC - execution.value_uc, 0)
