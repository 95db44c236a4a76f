"""Sellers hand back locks they will not consume (real services, memory transport).

One writer per lock: only the seller's chain decides a lock, and the buyer's ``release`` waits until
that chain is dated at or past the deadline. A maker refuses what it can before the buyer locks
(maker-first takes); a seller that will not consume a lock declines it — before it answers when it
refuses a confirmed take, and at the deadline for any lock left open — and the buyer's credits
come back without waiting for anything else the seller might write.
"""

from __future__ import annotations

import os
import time

import pytest
import trio

from p2pgrid.ledger.chain import LockStatus, state_root
from p2pgrid.ledger.messages import Lock
from p2pgrid.net.testing import wait_until
from p2pgrid.pools.entries import compute_pool_id
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig
from p2pgrid.trading.messages import LOCK_RELEASED, RefuseReason
from p2pgrid.trading.service import TakeRefused
from p2pgrid.trading.testing import ZONE, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side

CREDITS = 10_000_000
PRICE = 200_000
STATION = 1
POOLS = PoolHostConfig(battery=lambda: BatteryLimits(available_wh=40_000, power_limit_w=40_000), slots_ahead=2,
                       tick_s=0.1, announce_interval_s=1.0, lock_wait_s=1.0)


class SteppedClock:
    """Wall clock plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms


async def converge(nodes) -> None:
    with trio.fail_after(30):
        await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes}) == 1)


async def offer_in_the_takers_book(nodes):
    """Fund the cluster; node 4 offers 1000 Wh; returns (maker, taker, offer) once node 1 sees it."""
    await fund(nodes, CREDITS)
    maker, taker = nodes[4], nodes[1]
    slot = maker.trading.config.slot_rules.tradable_slots(maker.trading.clock())[2]
    offer = maker.trading.place_order(Side.SELL, 1000, PRICE, slot).body
    with trio.fail_after(30):
        await wait_until(lambda: taker.trading.books.remaining(offer.order_id) == 1000)
    return maker, taker, offer


async def test_a_take_the_maker_refuses_before_the_lock_locks_nothing(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        maker, taker, offer = await offer_in_the_takers_book(nodes)
        await taker.trading.take(Side.BUY, offer.order_id, 600)
        with pytest.raises(TakeRefused) as refused:
            await taker.trading.take(Side.BUY, offer.order_id, 500)     # refused at the reservation: 400 left
        assert refused.value.available_wh == 400
        assert [r.lock.qty_wh for r in taker.ledger.state.locks.values() if r.buyer == taker.account] == [600]
        assert taker.ledger.balance() == CREDITS - trade_value(600, PRICE)
        assert maker.trading.stats.declines == 0
        await converge(nodes)


async def test_a_maker_that_refuses_after_the_lock_declines_it_before_it_answers(tmp_path, monkeypatch):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        maker, taker, offer = await offer_in_the_takers_book(nodes)
        # The maker withdraws its offer while the buyer certifies its lock (after ``reserved``).
        real_certify = taker.trading._certify

        async def certify_then_maker_cancels(entry):
            certificate = await real_certify(entry)
            if entry.body.kind == "lock":
                maker.trading.cancel_order(offer.order_id)
            return certificate

        monkeypatch.setattr(taker.trading, "_certify", certify_then_maker_cancels)
        with pytest.raises(TakeRefused) as refused:
            await taker.trading.take(Side.BUY, offer.order_id, 500)
        assert refused.value.reason == RefuseReason.UNKNOWN_ORDER.value
        assert str(refused.value).endswith(LOCK_RELEASED)
        [lock] = [t for t, r in taker.ledger.state.locks.items() if r.buyer == taker.account]
        # The decline was certified before the refusal was sent: the maker's replica has it now.
        assert maker.ledger.state.locks[lock].status is LockStatus.RELEASED
        deadline = taker.ledger.state.locks[lock].lock.deadline_ms
        with trio.fail_after(30):
            await wait_until(lambda: taker.ledger.state.locks[lock].status is LockStatus.RELEASED)
        assert taker.trading.clock() < deadline and taker.trading.stats.releases == 0
        assert maker.trading.stats.declines == 1
        assert taker.ledger.balance() == CREDITS and taker.ledger.state.locked_total() == 0
        await converge(nodes)


async def test_a_pool_host_declines_a_lock_of_its_pool_left_open_at_its_deadline(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock, pool_host=STATION,
                                    pool_config=POOLS) as nodes:
        await fund(nodes, CREDITS)
        station, buyer = nodes[STATION], nodes[3]
        slot = station.trading.config.slot_rules.tradable_slots(clock())[1]
        pool_id = compute_pool_id(station.account, ZONE, slot)
        with trio.fail_after(30):
            await wait_until(lambda: pool_id in buyer.ledger.state.pools)
        # A buyer locks for a pool buy and never sends the request (it crashed, say).
        lock = Lock(take_id=os.urandom(16), seller=station.account, order_id=pool_id, order_owner=station.account,
                    order_size_wh=100, qty_wh=100, price=300_000, amount=30_000, deadline_ms=clock() + 20_000,
                    slot=slot)
        await buyer.ledger.submit(buyer.ledger.next_entry("lock", lock))
        with trio.fail_after(30):
            await wait_until(lambda: lock.take_id in station.ledger.state.locks)
        assert station.ledger.state.locks[lock.take_id].status is LockStatus.OPEN
        clock.offset_ms += 21_000
        with trio.fail_after(30):
            await wait_until(lambda: all(n.ledger.state.locks.get(lock.take_id) is not None and
                                         n.ledger.state.locks[lock.take_id].status is LockStatus.RELEASED
                                         for n in nodes))
        assert station.pool_host.stats.expired_declined == 1
        assert buyer.ledger.balance() == CREDITS
        await converge(nodes)


async def test_a_buyer_whose_seller_vanished_after_the_lock_gets_it_back_by_a_quorum_of_expiry_promises(tmp_path):
    """The seller is an account no node runs: its chain never passes the deadline, so ``release``
    never becomes valid. Once the deadline is the expiry grace behind, the buyer's housekeeping
    collects the validators' promises and certifies a ``refund``; every replica agrees."""
    clock = SteppedClock()
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock) as nodes:
        await fund(nodes, CREDITS)
        buyer = nodes[1]
        vanished = os.urandom(32)
        take_id, order_id = os.urandom(16), os.urandom(16)
        deadline = clock() + 60_000
        await buyer.ledger.submit(buyer.ledger.next_entry("lock", Lock(
            take_id=take_id, seller=vanished, order_id=order_id, order_owner=vanished, order_size_wh=500,
            qty_wh=500, price=PRICE, amount=trade_value(500, PRICE), deadline_ms=deadline)))
        assert buyer.ledger.balance() == CREDITS - trade_value(500, PRICE)
        clock.offset_ms += 60_000 + buyer.ledger.rules.lock_expiry_grace_ms // 2
        # Half the grace after the deadline: no validator promises yet, the lock stays.
        promises, reasons = await buyer.ledger.collect_expiries(take_id)
        assert promises == [] and all("grace" in r for r in reasons.values())
        clock.offset_ms += buyer.ledger.rules.lock_expiry_grace_ms
        with trio.fail_after(60):
            await wait_until(lambda: all(n.ledger.state.locks.get(take_id) is not None
                                         and n.ledger.state.locks[take_id].status is LockStatus.RELEASED
                                         for n in nodes))
        assert buyer.trading.stats.refunds == 1 and buyer.trading.stats.releases == 0
        assert buyer.ledger.balance() == CREDITS and buyer.ledger.state.locked_total() == 0
        await converge(nodes)
