"""Maker-first takes: a buyer locks credits only after the maker reserved (``/p2pgrid/take/2``).

A maker that does not answer — it accepts the stream and never replies, hangs up, or cannot be
reached at all — costs the buyer no lock, its offers are skipped by the router for a back-off
period, and its score falls. A buyer that reserves and never locks blocks the order only until its
hold lapses.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import trio

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LockStatus
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.messages import MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, RefuseReason, Take, TakeAnswer
from p2pgrid.trading.service import TakeFailed, TakeRefused
from p2pgrid.trading.testing import ZONE, TradingNode, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Order, Side, Source, decode_signed, sign

CREDITS = 10_000_000
CHEAP, DEAR = 150_000, 200_000
REPLY_TIMEOUT_S = 1.0


def open_slot(node: TradingNode) -> int:
    return node.trading.config.slot_rules.tradable_slots(node.trading.clock())[2]


def locks_of(node: TradingNode, buyer: TradingNode) -> list:
    """The locks ``buyer`` holds, as ``node``'s replica has them."""
    return [r for r in node.ledger.state.locks.values() if r.buyer == buyer.account]


def open_locks_of(buyer: TradingNode) -> list:
    return [r for r in locks_of(buyer, buyer) if r.status is LockStatus.OPEN]


class Unresponsive:
    """Take streams that reach this maker are read and never answered (``silent``) or closed at
    once (``hang_up``); ``frames`` counts the requests that reached it."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.frames = 0

    async def serve(self, stream) -> None:
        if self.how == "hang_up":
            self.frames += 1
            return
        while True:
            await stream.receive_frame()
            self.frames += 1


@pytest.mark.parametrize("how", ["silent", "hang_up"])
@pytest.mark.parametrize("kind", ["memory", pytest.param("libp2p", marks=pytest.mark.slow)])
async def test_a_maker_that_does_not_answer_costs_the_buyer_nothing_and_is_skipped(kind, how, tmp_path):
    async with open_trading_cluster(kind, 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, honest, buyer = nodes[4], nodes[3], nodes[1]
        buyer.trading.config = dataclasses.replace(buyer.trading.config, reserve_timeout_s=REPLY_TIMEOUT_S)
        slot = open_slot(buyer)
        cheap = maker.trading.place_order(Side.SELL, 1000, CHEAP, slot).body
        honest.trading.place_order(Side.SELL, 1000, DEAR, slot)
        with trio.fail_after(30):
            await wait_until(lambda: len(buyer.trading.books.book(slot)) == 2)
        unresponsive = Unresponsive(how)
        maker.transport.set_stream_handler(TAKE_PROTOCOL, unresponsive.serve, max_frame_bytes=MAX_TAKE_BYTES)

        started = trio.current_time()
        with trio.fail_after(30):
            report = await buyer.trading.execute(Side.BUY, 500, slot)
        # The cheap offer was tried first, unanswered (a broken stream is retried once on a fresh
        # one); the rest of the same execution went elsewhere.
        asked = {"silent": 1, "hang_up": 2}[how]
        assert unresponsive.frames == asked
        assert [(e.counterparty, e.price) for e in report.executions] == [(honest.account, DEAR)], report
        assert trio.current_time() - started < REPLY_TIMEOUT_S + 10
        assert not [r for r in locks_of(buyer, buyer) if r.lock.seller == maker.account]   # never locked for it
        assert buyer.ledger.balance() == CREDITS - trade_value(500, DEAR)
        with trio.fail_after(30):           # the honest maker's fill reaches the buyer's replica
            await wait_until(lambda: open_locks_of(buyer) == [])
        assert buyer.trading.maker_scores()[maker.account] == pytest.approx(-1.0, abs=0.01)
        assert buyer.trading.stats.maker_silences == 1

        # Skipped afterwards without being asked: neither quoted nor taken directly.
        plan = buyer.trading.quote(Side.BUY, 500, slot)
        assert cheap.order_id not in {leg.order_id for leg in plan.legs}
        with trio.fail_after(30):
            again = await buyer.trading.execute(Side.BUY, 300, slot)
        assert again.filled_wh == 300 and unresponsive.frames == asked
        with pytest.raises(TakeFailed, match="skipped"):
            await buyer.trading.take(Side.BUY, cheap.order_id, 100)
        assert unresponsive.frames == asked
        assert not [r for r in locks_of(buyer, buyer) if r.lock.seller == maker.account]


async def test_an_unreachable_maker_that_was_never_on_the_network_costs_nothing(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        buyer = nodes[1]
        stranger = NodeKey(os.urandom(32))          # never registered, funded nor connected
        slot = open_slot(buyer)
        now = buyer.trading.clock()
        offer = sign(Order(order_id=os.urandom(16), owner=stranger.public_key, side=Side.SELL, zone=ZONE, slot=slot,
                           qty_wh=1000, limit_price=CHEAP, green=False, source=Source.GRID, created_ms=now,
                           expiry_ms=buyer.trading.config.slot_rules.gate_closure_ms(slot), nonce=1), stranger)
        buyer.trading.books.on_order(offer, now)
        report = await buyer.trading.execute(Side.BUY, 500, slot)
        assert report.filled_wh == 0 and "unreachable" in report.problems[0], report
        assert buyer.ledger.balance() == CREDITS and locks_of(buyer, buyer) == []
        assert buyer.trading.standing.is_backing_off(stranger.public_key, trio.current_time())
        assert buyer.trading.quote(Side.BUY, 500, slot).legs == ()


async def test_a_buyer_that_reserves_and_never_locks_blocks_the_order_only_until_the_hold_lapses(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, squatter, buyer = nodes[4], nodes[3], nodes[1]
        maker.trading.config = dataclasses.replace(maker.trading.config, hold_s=1.0)
        slot = open_slot(buyer)
        offer = maker.trading.place_order(Side.SELL, 1000, CHEAP, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: buyer.trading.books.remaining(offer.order_id) == 1000)
        stream = await squatter.transport.open_stream(maker.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES)

        async def squat() -> TakeAnswer:
            await stream.send_frame(sign(Take(take_id=os.urandom(16), taker=squatter.account, maker=maker.account,
                                              order_id=offer.order_id, side=Side.BUY, zone=ZONE, slot=slot,
                                              qty_wh=800, price=CHEAP, sent_ms=maker.trading.clock()),
                                         squatter.key).encoded)
            return decode_signed(await stream.receive_frame(), TakeAnswer).body

        answer = await squat()
        assert (answer.status, answer.hold_ms) == (AnswerStatus.RESERVED, 1000)
        held_at = trio.current_time()

        try:
            await buyer.trading.take(Side.BUY, offer.order_id, 1000)
        except TakeRefused as refused:          # while held: 200 Wh left, and nothing locked
            assert (refused.reason, refused.available_wh) == (RefuseReason.INSUFFICIENT_REMAINING.value, 200)
        else:
            assert trio.current_time() - held_at >= 1.0, "the take got the whole order while 800 Wh were held"
        assert locks_of(buyer, buyer) == []
        with trio.fail_after(30):
            await wait_until(lambda: maker.trading.desk.reserved(offer.order_id, trio.current_time()) == 0)
        assert trio.current_time() - held_at >= 1.0
        # The squatter cannot simply reserve again: a taker whose hold lapsed is refused a while.
        again = await squat()
        assert again.status is AnswerStatus.REFUSED and again.reason.startswith(RefuseReason.LAPSED_HOLDS.value)
        execution = await buyer.trading.take(Side.BUY, offer.order_id, 1000)
        assert execution.qty_wh == 1000
        assert maker.trading.desk.lapsed == 1 and locks_of(maker, squatter) == locks_of(squatter, squatter) == []


async def test_a_bidder_that_does_not_answer_a_sell_take_is_skipped_too(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        bidder, seller = nodes[4], nodes[1]
        seller.trading.config = dataclasses.replace(seller.trading.config, take_timeout_s=REPLY_TIMEOUT_S)
        slot = open_slot(seller)
        bid = bidder.trading.place_order(Side.BUY, 1000, DEAR, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: seller.trading.books.remaining(bid.order_id) == 1000)
        unresponsive = Unresponsive("silent")
        bidder.transport.set_stream_handler(TAKE_PROTOCOL, unresponsive.serve, max_frame_bytes=MAX_TAKE_BYTES)
        with trio.fail_after(30):
            report = await seller.trading.execute(Side.SELL, 500, slot)
        assert report.filled_wh == 0 and unresponsive.frames == 1
        assert seller.trading.standing.silences(bidder.account) == 1
        assert seller.trading.quote(Side.SELL, 500, slot).legs == ()
        assert not seller.ledger.state.locks and not bidder.ledger.state.locks
