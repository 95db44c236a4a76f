"""The trading service's housekeeping does only the work that changed, and still does all of it:

* the books follow certified trades — of orders already in the books when the ledger moves, and
  of an order whose trades were certified before its gossip arrived (applied on arrival);
* expired locks come back, and only those: the seller declines each lock naming it that is still
  open at its deadline (a decline is valid at any time), and a buyer releases its own (from an
  index of its own open locks) only once the seller's certified chain has passed the deadline;
* ``LocalBooks`` builds a book only for a new (zone, slot), and ``book()`` returns the stored
  book even when it is empty.
"""

from __future__ import annotations

import os
import time

import trio

from p2pgrid.ledger.chain import LockStatus
from p2pgrid.ledger.messages import Fill, Lock
from p2pgrid.net.orders import OrderDelivery
from p2pgrid.net.testing import wait_until
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.trading import local_books
from p2pgrid.trading.local_books import LocalBooks
from p2pgrid.trading.testing import ZONE, TradingNode, fund, open_trading_cluster
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Cancel, Order, Side, Signed, Source, sign

CREDITS = 10_000_000
PRICE = 200_000


class SteppedClock:
    """Wall clock plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


def unpublished_offer(maker: TradingNode, slot: int, now_ms: int, qty_wh: int = 1000) -> Order:
    rules = maker.trading.config.slot_rules
    return Order(order_id=os.urandom(16), owner=maker.account, side=Side.SELL, zone=ZONE, slot=slot, qty_wh=qty_wh,
                 limit_price=PRICE, green=False, source=Source.GRID, created_ms=now_ms,
                 expiry_ms=rules.gate_closure_ms(slot), nonce=1)


def lock_for(buyer: TradingNode, seller: TradingNode, order: Order, qty_wh: int, deadline_ms: int) -> Lock:
    return Lock(take_id=os.urandom(16), seller=seller.account, order_id=order.order_id, order_owner=seller.account,
                order_size_wh=order.qty_wh, qty_wh=qty_wh, price=order.limit_price,
                amount=trade_value(qty_wh, order.limit_price), deadline_ms=deadline_ms, slot=order.slot,
                green=order.green, seller_zone=ZONE, buyer_zone=ZONE)


async def certify_trade(buyer: TradingNode, seller: TradingNode, order: Order, qty_wh: int, now_ms: int) -> None:
    """A lock and its fill certified straight through the ledgers (no take protocol)."""
    lock = lock_for(buyer, seller, order, qty_wh, now_ms + 60_000)
    await buyer.ledger.submit(buyer.ledger.next_entry("lock", lock))
    await seller.ledger.submit(seller.ledger.next_entry("fill", Fill(
        take_id=lock.take_id, buyer=buyer.account, order_id=order.order_id, qty_wh=qty_wh, price=order.limit_price)))


async def test_books_follow_certified_trades_including_an_order_whose_trade_came_first(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker, observer = nodes[5], nodes[4], nodes[3]
        now = maker.trading.clock()
        slot = maker.trading.config.slot_rules.tradable_slots(now)[2]

        late = unpublished_offer(maker, slot, now)
        await certify_trade(taker, maker, late, 300, now)
        with trio.fail_after(30):
            await observer.ledger.wait_for_height(maker.ledger.state.height)
        observer.trading.on_delivery(OrderDelivery(maker.account, now, now, (sign(late, maker.key),)))
        assert observer.trading.books.remaining(late.order_id) == 700      # at once, not at a later tick

        resting = maker.trading.place_order(Side.SELL, 1000, PRICE, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: observer.trading.books.remaining(resting.order_id) == 1000)
        await certify_trade(taker, maker, resting, 400, now)
        await certify_trade(taker, maker, late, 100, now)
        with trio.fail_after(30):
            await wait_until(lambda: observer.trading.books.remaining(resting.order_id) == 600
                             and observer.trading.books.remaining(late.order_id) == 600)


async def test_expired_locks_come_back_by_the_sellers_decline_or_the_buyers_release_and_only_those(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 6, tmp_path, clock=clock) as nodes:
        await fund(nodes, CREDITS)
        maker, buyers = nodes[5], (nodes[4], nodes[3])
        now = clock()
        slot = maker.trading.config.slot_rules.tradable_slots(now)[2]
        offer = unpublished_offer(maker, slot, now)
        expiring = {}
        for buyer in buyers:
            lock = lock_for(buyer, maker, offer, 100, now + 30_000)
            await buyer.ledger.submit(buyer.ledger.next_entry("lock", lock))
            expiring[buyer.account] = lock.take_id
        late_lock = lock_for(buyers[0], maker, offer, 100, now + 3_600_000)   # not due in this test
        await buyers[0].ledger.submit(buyers[0].ledger.next_entry("lock", late_lock))
        with trio.fail_after(30):
            await wait_until(lambda: all(n.ledger.state.height == maker.ledger.state.height for n in nodes))
        assert all(n.trading.stats.releases == 0 for n in nodes)

        clock.offset_ms = 31_000
        with trio.fail_after(30):
            await wait_until(lambda: all(n.ledger.state.locks[t].status is LockStatus.RELEASED
                                         for n in nodes for t in expiring.values()))
        # Only the two buyers tried (a release whose submit timed out but was certified on
        # re-proposal is released without being counted: at most one each).
        assert [n.trading.stats.releases for n in nodes if n not in buyers] == [0, 0, 0, 0]
        assert all(b.trading.stats.releases <= 1 for b in buyers)
        # Only the seller declines (its chain decides its locks), at most once each.
        assert [n.trading.stats.declines for n in nodes if n is not maker] == [0] * 5
        assert maker.trading.stats.declines <= 2
        assert all(n.ledger.state.locks[late_lock.take_id].status is LockStatus.OPEN for n in nodes)
        assert all(n.ledger.balance(b.account) == CREDITS - trade_value(100, PRICE) for n in nodes for b in buyers[:1])


def signed_offer(key, slot: int, now_ms: int) -> Signed[Order]:
    return sign(Order(order_id=os.urandom(16), owner=key.public_key, side=Side.SELL, zone=ZONE, slot=slot, qty_wh=10,
                      limit_price=PRICE, green=False, source=Source.GRID, created_ms=now_ms,
                      expiry_ms=SlotRules().gate_closure_ms(slot), nonce=1), key)


def test_a_book_is_built_once_per_slot_and_an_empty_one_is_still_returned(monkeypatch):
    built = []

    class CountedBook(local_books.OrderBook):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(local_books, "OrderBook", CountedBook)
    rules = SlotRules()
    books = LocalBooks(ZONE, rules)
    now = 1_700_000_000_000
    slot = rules.tradable_slots(now)[2]
    maker = seeded_key("maker")
    first, second = signed_offer(maker, slot, now), signed_offer(maker, slot, now)
    assert books.on_order(first, now).change == books.on_order(second, now).change == "added"
    assert len(built) == 1                                  # no throwaway book for the second order

    for signed in (first, second):
        cancel = Cancel(order_id=signed.body.order_id, owner=maker.public_key, zone=ZONE, slot=slot, created_ms=now)
        assert books.on_cancel(sign(cancel, maker)).change == "cancelled"
    kept = books.book(slot)
    assert len(kept) == 0 and kept is books.book(slot) is built[0]   # the stored book, though empty
