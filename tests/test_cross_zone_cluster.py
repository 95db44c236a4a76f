"""Cross-zone trading end to end: zones ``a`` and ``b`` share one ledger domain and committee and
list a grid fee for each other; zone ``c`` trades with nobody. Gossip → books of both zones →
fee-inclusive route → take → certified fill → settlement charges the fee."""

import dataclasses
import os
from types import SimpleNamespace

import pytest
import trio

from p2pgrid.ledger.chain import LockStatus, state_root
from p2pgrid.market.locality import label_trades, settlement_grid_fees
from p2pgrid.net.orders import orders_topic
from p2pgrid.net.testing import wait_until
from p2pgrid.node.api import LiveNodeApi, WrongZone
from p2pgrid.settlement.entries import trades_for_slot
from p2pgrid.settlement.rules import MeterEntry, Reason, ZoneTariffs, settle_slot
from p2pgrid.trading.messages import MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, RefuseReason, Take, TakeAnswer
from p2pgrid.trading.testing import fund, open_zoned_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, decode_signed, sign

CREDITS = 10_000_000
FEE = 30_000
FEES = {"a": {"b": FEE}, "b": {"a": FEE}}
# node:      0 op  1    2    3    4 buyer  5 seller-b  6 seller-a  7 outsider
HOMES = ["a", "b", "a", "b", "a", "b", "a", "c"]


def open_slots(node):
    rules = node.trading.config.slot_rules
    return rules.tradable_slots(node.trading.clock())[2:6]


async def converge(nodes):
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1)
    assert len({state_root(n.ledger.state) for n in nodes}) == 1
    assert all(n.ledger.state.money_total() == 0 for n in nodes)


async def wait_for_book(node, slot, zone, count):
    with trio.fail_after(30):
        await wait_until(lambda: len(node.trading.books.book(slot, zone)) >= count)


async def test_cross_zone_takes_follow_effective_prices_and_pay_the_fee(tmp_path):
    async with open_zoned_cluster("memory", HOMES, FEES, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        buyer, seller_b, seller_a, outsider = nodes[4], nodes[5], nodes[6], nodes[7]
        slot, slot2, slot3, _ = open_slots(buyer)

        # 1. B's offer is cheaper than A's by more than the fee: the buyer in A takes from B.
        seller_a.trading.place_order(Side.SELL, 1000, 200_000, slot)
        seller_b.trading.place_order(Side.SELL, 1000, 150_000, slot)
        await wait_for_book(buyer, slot, "a", 1)
        await wait_for_book(buyer, slot, "b", 1)
        assert [(lv.price, lv.qty_wh) for lv in buyer.trading.neighbour_depths(slot)["b"].asks] == [(180_000, 1000)]
        # book_get answers for a neighbour zone at fee-inclusive prices, and refuses an untraded one.
        api = LiveNodeApi(SimpleNamespace(zone="a", trading=buyer.trading))   # type: ignore[arg-type]
        snapshot = await api.book("b", slot, 10)
        assert [(lv.price, lv.qty_wh) for lv in snapshot.asks] == [(180_000, 1000)]
        assert [(lv.price, lv.qty_wh) for lv in (await api.book("a", slot, 10)).asks] == [(200_000, 1000)]
        with pytest.raises(WrongZone):
            await api.book("c", slot, 10)
        report = await buyer.trading.execute(Side.BUY, 1000, slot)
        assert report.problems == ()
        (execution,) = report.executions
        assert (execution.counterparty, execution.zone, execution.price, execution.grid_fee) == \
            (seller_b.account, "b", 150_000, FEE)
        assert report.total_uc == trade_value(1000, 150_000)     # the fee comes at settlement
        with trio.fail_after(30):
            await wait_until(lambda: execution.take_id in seller_b.ledger.state.locks
                             and seller_b.ledger.state.locks[execution.take_id].status is LockStatus.FILLED)
        lock = seller_b.ledger.state.locks[execution.take_id].lock
        assert (lock.seller_zone, lock.buyer_zone) == ("b", "a")      # settlement reads them from here
        assert seller_b.trading.trade_zones[execution.take_id] == buyer.trading.trade_zones[execution.take_id] \
            == ("b", "a")

        # 2. B is cheaper by less than the fee: the buyer stays in A.
        seller_a.trading.place_order(Side.SELL, 1000, 200_000, slot2)
        seller_b.trading.place_order(Side.SELL, 1000, 175_000, slot2)
        await wait_for_book(buyer, slot2, "a", 1)
        await wait_for_book(buyer, slot2, "b", 1)
        report2 = await buyer.trading.execute(Side.BUY, 1000, slot2)
        assert [(e.counterparty, e.zone, e.grid_fee) for e in report2.executions] == [(seller_a.account, "a", 0)]

        # 3. A seller in A into B's bid trades at bid − fee, so B's buyer pays its bid in all.
        seller_b.trading.place_order(Side.BUY, 500, 250_000, slot3)
        await wait_for_book(seller_a, slot3, "b", 1)
        report3 = await seller_a.trading.execute(Side.SELL, 500, slot3)
        assert [(e.zone, e.price, e.qty_wh) for e in report3.executions] == [("b", 250_000 - FEE, 500)]
        lock3 = seller_a.ledger.state.locks[report3.executions[0].take_id].lock
        assert (lock3.seller_zone, lock3.buyer_zone, lock3.price) == ("a", "b", 250_000 - FEE)

        await converge(nodes)
        state = buyer.ledger.state
        assert state.balance(seller_b.account) == \
            CREDITS + trade_value(1000, 150_000) - trade_value(500, 250_000 - FEE)
        assert state.balance(buyer.account) == CREDITS - trade_value(1000, 150_000) - trade_value(1000, 200_000)

        # Settlement of slot 1, from the certified trades labelled with their zones: the buyer
        # pays the fee on what was delivered (600 of 1000 Wh).
        gateway = nodes[0].account
        trades = label_trades(trades_for_slot(state, buyer.ledger.rules, slot), buyer.trading.trade_zones)
        assert [(t.seller_zone, t.buyer_zone, t.qty_wh) for t in trades] == [("b", "a", 1000)]
        tariffs = ZoneTariffs(gateway, 300_000, 50_000,
                              settlement_grid_fees(n.trading.locality for n in nodes))
        meters = [MeterEntry(seller_b.account, "b", slot, 0, 600), MeterEntry(buyer.account, "a", slot, 1000, 0)]
        settled = settle_slot(slot, trades, meters, tariffs)
        assert [(t.payer, t.payee, t.amount_uc) for t in settled.transfers if t.reason is Reason.GRID_FEE] == \
            [(buyer.account, gateway, trade_value(600, FEE))]

        # The book feed (RPC subscribers) follows the home zone only.
        changes = []
        while True:
            try:
                changes.append(buyer.trading.book_changes.receive_nowait())
            except trio.WouldBlock:
                break
        assert changes and {c.zone for c in changes} == {"a"}

        # Gossip of zone B never reached the node in C, which trades with nobody.
        assert len(outsider.trading.books) == 0
        assert outsider.neighbour_gossip == []
        assert outsider.account not in seller_b.transport.topic_peers(orders_topic("b"))
        with trio.fail_after(10):   # every node trading with B saw the certified fill consume the offer
            await wait_until(lambda: all(len(n.trading.books.book(slot, "b")) == 0 for n in nodes))


async def test_takes_across_unknown_zones_or_ledgers_are_refused_and_change_nothing(tmp_path):
    async with open_zoned_cluster("memory", HOMES, FEES, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        seller_b, outsider = nodes[5], nodes[7]
        slot = open_slots(seller_b)[0]
        offer = seller_b.trading.place_order(Side.SELL, 1000, 150_000, slot).body
        bid = seller_b.trading.place_order(Side.BUY, 1000, 150_000, slot).body
        height = seller_b.ledger.state.height
        stream = await outsider.transport.open_stream(seller_b.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES)
        good = Take(take_id=os.urandom(16), taker=outsider.account, maker=seller_b.account, order_id=offer.order_id,
                    side=Side.BUY, zone="b", slot=slot, qty_wh=100, price=offer.limit_price,
                    sent_ms=outsider.trading.clock(), taker_zone="c", ledger=outsider.ledger.rules.zone)
        cases = [
            (good, RefuseReason.ZONE_NOT_TRADED),
            (dataclasses.replace(good, order_id=bid.order_id, side=Side.SELL), RefuseReason.ZONE_NOT_TRADED),
            (dataclasses.replace(good, taker_zone="a", ledger="otherarea"), RefuseReason.WRONG_LEDGER),
        ]
        for take, reason in cases:
            await stream.send_frame(sign(dataclasses.replace(take, take_id=os.urandom(16)), outsider.key).encoded)
            answer = decode_signed(await stream.receive_frame(), TakeAnswer).body
            assert answer.status is AnswerStatus.REFUSED and answer.reason.startswith(reason.value + ":"), answer
        await stream.aclose()
        assert seller_b.ledger.state.height == height
        assert seller_b.trading.books.remaining(offer.order_id) == 1000
        assert seller_b.trading.books.remaining(bid.order_id) == 1000
        assert seller_b.trading.stats.takes_refused == {"zone_not_traded": 2, "wrong_ledger": 1}


@pytest.mark.slow
async def test_cross_zone_take_over_libp2p(tmp_path):
    async with open_zoned_cluster("libp2p", ["a", "b", "a", "b"], FEES, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        seller_a, seller_b, buyer = nodes[0], nodes[1], nodes[2]
        slot = open_slots(buyer)[0]
        seller_a.trading.place_order(Side.SELL, 1000, 200_000, slot)
        seller_b.trading.place_order(Side.SELL, 1000, 150_000, slot)
        await wait_for_book(buyer, slot, "a", 1)
        await wait_for_book(buyer, slot, "b", 1)
        report = await buyer.trading.execute(Side.BUY, 1000, slot)
        assert [(e.counterparty, e.zone, e.grid_fee) for e in report.executions] == [(seller_b.account, "b", FEE)]
        await converge(nodes)
