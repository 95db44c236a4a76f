"""Helpers of the node RPC tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from p2pgrid.ledger.chain import decode_body
from p2pgrid.ledger.messages import Entry, Fill
from p2pgrid.node.api import peer_id_base58
from p2pgrid.node.rpc import read_endpoint
from p2pgrid.node.testing import DEFAULT_EXPORT_W
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import BookLevel, OrderStatus, Venue
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError, calls
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source

FUNDS_UC = 50_000_000


@asynccontextmanager
async def rpc_client(node):
    endpoint = read_endpoint(node.config.node.data_dir)
    async with AsyncRpcClient(endpoint["url"], token_file=endpoint["token_file"]) as client:
        yield client


def open_slot(node) -> int:
    """A slot well inside its trading window (not the first: it may close during a test)."""
    return node.config.zone.slot_rules.tradable_slots(node.clock.now_ms())[2]


async def wait_until(condition, timeout_s: float = 20) -> None:
    with trio.fail_after(timeout_s):
        while not condition():
            await trio.sleep(0.02)


async def poll(fetch, accept, timeout_s: float = 20):
    """Call ``await fetch()`` until ``accept(result)``; returns that result."""
    with trio.fail_after(timeout_s):
        while True:
            result = await fetch()
            if accept(result):
                return result
            await trio.sleep(0.02)


async def refused(call, rpc_call) -> RpcCallError:
    with pytest.raises(RpcCallError) as error:
        await call(rpc_call)
    return error.value


async def exercise_every_method(maker_call, taker_call, nodes) -> None:
    """The whole method table, through ``*_call(Call)`` of one transport (HTTP or WebSocket)."""
    maker, taker = nodes[1], nodes[2]
    info = await maker_call(calls.node_info())
    assert (info.account, info.zone, info.role) == (maker.key.public_key, maker.zone, "household")
    assert info.peer_id == peer_id_base58(maker.key.public_key)
    # The gateway's three mints and three meter registrations.
    assert info.ledger_height == maker.ledger.state.height == 6
    assert (info.slot_length_s, info.gate_s) == (900, 300)
    peers = await maker_call(calls.peers_list())
    assert {p.peer_id for p in peers} == {peer_id_base58(n.key.public_key) for n in nodes if n is not maker}

    zone, slot = maker.zone, open_slot(maker)
    order = await maker_call(calls.order_place(zone, slot, Side.SELL, 1000, 200_000, green=True, source=Source.PV))
    assert (order.owner, order.status, order.filled_wh, order.green) == (maker.key.public_key, OrderStatus.OPEN, 0, True)
    assert order.expiry_ms == maker.config.zone.slot_rules.gate_closure_ms(slot)

    book = await poll(lambda: taker_call(calls.book_get(zone, slot)), lambda b: b.asks)
    assert (book.bids, book.asks) == ((), (BookLevel(200_000, 1000, 1),))
    assert await taker_call(calls.pool_list(zone)) == []
    quote = await taker_call(calls.route_quote(zone, slot, Side.BUY, 600, 250_000))
    assert (quote.filled_wh, quote.value_uc, quote.average_price) == (600, trade_value(600, 200_000), 200_000)
    assert [(leg.venue, leg.venue_id, leg.qty_wh) for leg in quote.legs] == [(Venue.BOOK, order.order_id, 600)]

    execution = await taker_call(calls.trade_execute(zone, slot, Side.BUY, 600, 250_000))
    assert (execution.filled_wh, execution.value_uc) == (600, trade_value(600, 200_000))
    (trade,) = execution.trades
    assert (trade.buyer, trade.seller, trade.order_id, trade.slot, trade.certified) == (
        taker.key.public_key, maker.key.public_key, order.order_id, slot, True)
    assert await taker_call(calls.trade_list()) == [trade]

    maker_trades = await poll(lambda: maker_call(calls.trade_list()), lambda ts: ts)
    assert [(t.trade_id, t.qty_wh, t.price, t.seller, t.slot) for t in maker_trades] == [
        (trade.trade_id, 600, 200_000, maker.key.public_key, slot)]
    assert await maker_call(calls.trade_list(since_ms=maker_trades[0].at_ms + 1)) == []
    (mine,) = await maker_call(calls.order_list())
    assert (mine.order_id, mine.filled_wh, mine.status) == (order.order_id, 600, OrderStatus.OPEN)

    balance = await poll(lambda: taker_call(calls.ledger_balance(maker.key.public_key)),
                         lambda b: b.head_seq == 0)
    assert (balance.balance_uc, balance.locked_uc) == (FUNDS_UC + trade.value_uc, 0)
    entry = await maker_call(calls.ledger_entry(maker.key.public_key, 0))
    assert (entry.kind, entry.certified, entry.seq) == ("fill", True, 0)
    fill = decode_body(Entry(zone, maker.key.public_key, 0, entry.prev_hash, entry.time_ms, entry.kind, entry.body))
    assert isinstance(fill, Fill) and (fill.take_id, fill.qty_wh) == (trade.trade_id, 600)

    cancelled = await maker_call(calls.order_cancel(order.order_id))
    assert (cancelled.status, cancelled.filled_wh) == (OrderStatus.CANCELLED, 600)
    assert await maker_call(calls.order_list()) == []
    assert [o.status for o in await maker_call(calls.order_list(open_only=False))] == [OrderStatus.CANCELLED]
    await poll(lambda: taker_call(calls.book_get(zone, slot)), lambda b: not b.asks)

    # Refusals: each a typed application error, never made-up data.
    assert (await refused(maker_call, calls.order_cancel(order.order_id))).code == codes.UNKNOWN_ORDER
    assert (await refused(maker_call, calls.book_get("elsewhere", slot))).code == codes.INVALID_ORDER
    closed_slot = maker.config.zone.slot_rules.slot_of(maker.clock.now_ms()) - 900
    assert (await refused(maker_call, calls.order_place(zone, closed_slot, Side.BUY, 1, 1))).code == codes.INVALID_ORDER
    assert (await refused(maker_call, calls.ledger_entry(maker.key.public_key, 99))).code == codes.LEDGER_ERROR
    # Order admission: beyond the export capacity registered for the maker's meter, or its budget.
    capacity_wh = DEFAULT_EXPORT_W * 900 // 3600
    unbacked = await refused(maker_call, calls.order_place(zone, slot, Side.SELL, capacity_wh + 1, 200_000))
    assert unbacked.code == codes.INVALID_ORDER and "over_capacity" in unbacked.message
    unfunded = await refused(maker_call, calls.order_place(zone, slot, Side.BUY, 10**9, 10**9))
    assert unfunded.code == codes.INVALID_ORDER and "unfunded_bid" in unfunded.message
    assert (await refused(maker_call, calls.settlement_get(slot + 1))).code == codes.SETTLEMENT_ERROR
    for no_devices in (calls.telemetry_get(), calls.forecast_get(4)):
        error = await refused(maker_call, no_devices)
        assert (error.code, error.data) == (codes.NOT_AVAILABLE, {"type": "NotAvailable"})

    # The slot is not settled: a provisional settlement of the certified trade, and no certificates.
    provisional = await maker_call(calls.settlement_get(slot))
    assert (provisional.settled, provisional.account, provisional.contracted_wh, provisional.trade_value_uc) == (
        False, maker.key.public_key, -600, -trade.value_uc)
    assert await maker_call(calls.certs_list(maker.key.public_key)) == []
