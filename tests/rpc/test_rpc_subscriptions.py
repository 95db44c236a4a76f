"""Subscriptions over a real WebSocket: book updates, fills, telemetry, settlements, back-pressure."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from p2pgrid.rpc.api import BookUpdate, SlotSettlement, Telemetry
from p2pgrid.rpc.client import AsyncRpcClient, SubscriptionDropped, calls, open_ws_rpc
from p2pgrid.rpc.server import RpcLimits
from p2pgrid.rpc.subscriptions import Topic
from p2pgrid.rpc.testing import FAKE_ACCOUNT
from p2pgrid.wire import Side


async def wait_for(condition, timeout=10):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0)


async def test_book_subscription_receives_updates_for_its_zone_and_slot(server, node, token):
    slot = node.next_slot()
    async with open_ws_rpc(server.ws_url, token) as ws:
        async with ws.subscribe("book", zone="z1", slot=slot) as updates:
            node.add_external_order(Side.SELL, slot + 900, 100, 1)      # another slot: filtered out
            node.add_external_order(Side.SELL, slot, 250, 259_000)
            with trio.fail_after(10):
                update = await updates.__anext__()
    assert isinstance(update, BookUpdate)
    assert (update.slot, update.side, update.price, update.qty_wh) == (slot, Side.SELL, 259_000, 250)


async def test_fills_subscription_receives_trades_executed_over_http(server, node, token):
    slot = node.next_slot()
    async with AsyncRpcClient(server.url, token=token) as client, client.open_websocket() as ws:
        async with ws.subscribe("fills") as fills, ws.subscribe("book", zone="z1") as book:
            execution = await client.call(calls.trade_execute("z1", slot, Side.BUY, 1200))
            with trio.fail_after(10):
                received = [await fills.__anext__() for _ in execution.trades]
                level_changes = [await book.__anext__() for _ in range(2)]
    assert [t.qty_wh for t in received] == [1000, 200]
    assert all(t.buyer == FAKE_ACCOUNT for t in received)
    assert [(u.price, u.qty_wh) for u in level_changes] == [(260_000, 0), (262_000, 900)]


async def test_telemetry_and_settlement_subscriptions(server, node, token):
    async with open_ws_rpc(server.ws_url, token) as ws:
        async with ws.subscribe("telemetry") as telemetry, ws.subscribe("settlements") as settlements:
            node.push_telemetry(Telemetry(1, 3000, 800, 2000, -200, 6000, 10000))
            node.push_settlement(SlotSettlement(900, FAKE_ACCOUNT, 10, 12, 2, 3, 1, True))
            with trio.fail_after(10):
                reading = await telemetry.__anext__()
                settled = await settlements.__anext__()
    assert reading.pv_w == 3000 and settled.imbalance_wh == 2


async def test_unsubscribe_stops_the_stream_and_the_hub_forgets_it(server, node, token):
    async with open_ws_rpc(server.ws_url, token) as ws:
        async with ws.subscribe("book"):
            assert server.hub.subscriber_count(Topic.BOOK) == 1
        assert server.hub.subscriber_count(Topic.BOOK) == 0
        assert await ws.call(calls.node_info())   # connection still usable


async def test_closing_the_connection_forgets_its_subscriptions(server, token):
    async with open_ws_rpc(server.ws_url, token) as ws:
        await ws.request("subscribe", {"topic": "fills"})
        await ws.request("subscribe", {"topic": "telemetry"})
        assert server.hub.subscriber_count() == 2
    await wait_for(lambda: server.hub.subscriber_count() == 0)


async def test_filters_apply_to_the_book_topic_only(server, token):
    async with open_ws_rpc(server.ws_url, token) as ws:
        with pytest.raises(Exception) as refused:
            await ws.request("subscribe", {"topic": "fills", "zone": "z1"})
    assert getattr(refused.value, "code", None) == -32602


@pytest.fixture
def limits():
    return RpcLimits(subscriber_buffer=32)


async def test_stalled_subscriber_is_dropped_with_a_notice_and_the_node_keeps_going(server, node, token):
    """One client subscribes and stops reading its socket; a healthy one keeps reading.

    Events are published in rounds paced by the healthy reader (no sleeps): the stalled
    connection's buffer fills, it is dropped with a notice, the healthy one sees every event and
    the node never waits (its feed drops nothing).
    """
    slot = node.next_slot()
    headers = [(b"authorization", f"Bearer {token}".encode())]
    async with open_ws_rpc(server.ws_url, token) as healthy, healthy.subscribe("book") as updates:
        async with trio_websocket.open_websocket_url(server.ws_url, extra_headers=headers,
                                                     message_queue_size=1) as stalled:
            await stalled.send_message(json.dumps({"jsonrpc": "2.0", "method": "subscribe",
                                                   "params": {"topic": "book"}, "id": 1}))
            stalled_sub = json.loads(await stalled.get_message())["result"]
            # From here on the stalled client reads nothing: its socket buffers fill up.
            published = 0
            with trio.fail_after(20):
                while server.hub.stats.dropped_connections == 0:
                    for _ in range(16):
                        published += 1
                        node.book_feed.publish(BookUpdate("z1", slot, published, Side.BUY, 1, published, 1))
                    for _ in range(16):
                        await updates.__anext__()
                for _ in range(10):         # the node goes on; the healthy subscriber too
                    for _ in range(16):
                        published += 1
                        node.book_feed.publish(BookUpdate("z1", slot, published, Side.BUY, 1, published, 1))
                    last = [await updates.__anext__() for _ in range(16)][-1]
            assert last.seq == published
            assert node.book_feed.dropped == 0
            assert server.hub.stats.dropped_subscriptions == 1
            assert server.hub.subscriber_count(Topic.BOOK) == 1

            # The stalled client, reading again, finds buffered events and then the notice.
            with trio.fail_after(10):
                while True:
                    message = json.loads(await stalled.get_message())
                    if message["method"] == "subscription_dropped":
                        break
                    assert message["params"]["subscription"] == stalled_sub
    assert message["params"]["subscription"] == stalled_sub
    assert "too slow" in message["params"]["reason"]


async def test_client_sees_a_drop_as_subscription_dropped(server, node, token):
    slot = node.next_slot()
    async with open_ws_rpc(server.ws_url, token, buffer=1) as ws, ws.subscribe("book") as updates:
        published = 0
        with trio.fail_after(20):
            while server.hub.stats.dropped_connections == 0:
                published += 1
                node.book_feed.publish(BookUpdate("z1", slot, published, Side.BUY, 1, published, 1))
                await trio.sleep(0)
            with pytest.raises(SubscriptionDropped):
                async for _ in updates:
                    pass
