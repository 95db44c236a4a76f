"""Sellers hand back locks they will not consume (real services, memory transport).

One writer per lock: only the seller's chain decides a lock, and the buyer's ``release`` waits until
that chain is dated at or past the deadline. So a seller that will not consume a lock declines it —
at once when it refuses the take, and at the deadline for any lock left open — and the buyer's
credits come back without waiting for anything else the seller might write.
"""

from __future__ import annotations

import os
import time

import trio

from p2pgrid.ledger.chain import LockStatus, state_root
from p2pgrid.ledger.messages import Lock
from p2pgrid.net.testing import wait_until
from p2pgrid.pools.entries import compute_pool_id
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig
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


async def test_a_maker_declines_the_lock_of_a_take_it_refuses_long_before_the_deadline(tmp_path):
    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker = nodes[4], nodes[1]
        slot = maker.trading.config.slot_rules.tradable_slots(maker.trading.clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, PRICE, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: taker.trading.books.remaining(offer.order_id) == 1000)
        await taker.trading.take(Side.BUY, offer.order_id, 600)
        refused = None
        try:
            await taker.trading.take(Side.BUY, offer.order_id, 500)     # locked, then refused: 400 left
        except TakeRefused as exc:
            refused = exc
        assert refused is not None and refused.available_wh == 400
        [lock] = [t for t, r in taker.ledger.state.locks.items()
                  if r.buyer == taker.account and r.lock.qty_wh == 500]
        deadline = taker.ledger.state.locks[lock].lock.deadline_ms
        with trio.fail_after(30):
            await wait_until(lambda: taker.ledger.state.locks[lock].status is LockStatus.RELEASED)
        # Back long before the deadline: only the maker's decline can do that (the taker's release
        # waits for the maker's chain to pass the deadline). A decline whose submit timed out but
        # was certified on re-proposal is not counted: at most one.
        assert taker.trading.clock() < deadline
        assert maker.trading.stats.declines <= 1 and taker.trading.stats.releases == 0
        assert taker.ledger.balance() == CREDITS - trade_value(600, PRICE)
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
