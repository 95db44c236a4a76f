"""Pools in live trading: a station hosts a pool, buys are routed across book and pool, swaps are
certified, and every node derives the same state."""

import dataclasses
import os

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.market.router import BookLeg, PoolLeg
from p2pgrid.net.testing import wait_until
from p2pgrid.net.transport import NetError, ValidationResult
from p2pgrid.pools.entries import PoolRecord, compute_pool_id
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig
from p2pgrid.pools.messages import (
    MAX_SWAP_BYTES, SWAP_PROTOCOL, SwapAnswer, SwapRefuseReason, SwapRequest, SwapStatus,
)
from p2pgrid.trading.testing import ZONE, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source, decode_signed, encode, sign

CREDITS = 10_000_000
OPERATOR, STATION, HOUSEHOLD_A, HOUSEHOLD_B, CONSUMER_A, CONSUMER_B = range(6)


def battery() -> BatteryLimits:
    return BatteryLimits(available_wh=40_000, power_limit_w=40_000)   # cap per pool: 10 kWh in 15 min


POOLS = PoolHostConfig(battery=battery, fee_bps=30, initial_credits_uc=400_000, seed_energy_wh=2_000,
                       slots_ahead=3, tick_s=0.1, announce_interval_s=1.0, lock_wait_s=1.0)


class SteppedClock:
    """Wall clock plus an offset the test can move forward."""

    def __init__(self) -> None:
        import time
        self._time = time
        self.offset_ms = 0

    def __call__(self) -> int:
        return self._time.time_ns() // 1_000_000 + self.offset_ms


def trading_slot(node) -> int:
    return node.trading.config.slot_rules.tradable_slots(node.trading.clock())[2]


async def wait_for_pool(nodes, slot) -> bytes:
    pool_id = compute_pool_id(nodes[STATION].account, ZONE, slot)
    with trio.move_on_after(30):
        await wait_until(lambda: all(n.pools.pools(slot) for n in nodes if n is not nodes[STATION]))
        return pool_id
    host = nodes[STATION]
    raise AssertionError(("pool never seen", slot, host.pool_host.stats, [n.ledger.state.height for n in nodes],
                          [len(n.pools.pools(slot)) for n in nodes], host.ledger.state.balance(host.account),
                          sorted(r.pool.slot for r in host.ledger.state.pools.values()),
                          host.trading.config.slot_rules.tradable_slots(host.trading.clock())[:3]))


async def settle(nodes):
    """Until the host has opened its pools and every node holds the same ledger: stopping a cluster
    in the middle of a certification makes teardown noisy (stores close under live handlers)."""
    host = nodes[STATION].pool_host
    with trio.fail_after(30):
        await wait_until(lambda: all(host.record(host.pool_id(s)) for s in
                                     host.slot_rules.tradable_slots(host.clock())[:POOLS.slots_ahead]))
    await converge(nodes)


async def converge(nodes):
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({state_root(n.ledger.state) for n in nodes}) == 1)
    assert all(n.ledger.state.money_total() == 0 for n in nodes)


@pytest.mark.parametrize("kind", ["memory", pytest.param("libp2p", marks=pytest.mark.slow)])
async def test_buy_routed_across_book_and_pool_is_certified_everywhere(kind, tmp_path):
    async with open_trading_cluster(kind, 6, tmp_path, pool_host=STATION, pool_config=POOLS) as nodes:
        await fund(nodes, CREDITS)
        slot = trading_slot(nodes[0])
        station, consumer_a, consumer_b = nodes[STATION], nodes[CONSUMER_A], nodes[CONSUMER_B]
        nodes[HOUSEHOLD_A].trading.place_order(Side.SELL, 500, 180_000, slot, green=True, source=Source.PV)
        nodes[HOUSEHOLD_B].trading.place_order(Side.SELL, 800, 230_000, slot, green=True, source=Source.PV)
        pool_id = await wait_for_pool(nodes, slot)
        with trio.fail_after(30):
            await wait_until(lambda: len(consumer_a.trading.books.book(slot)) == 2)

        plan = consumer_a.trading.quote(Side.BUY, 1500, slot, 300_000)
        assert {type(leg) for leg in plan.legs} == {BookLeg, PoolLeg}     # the router splits book and pool
        pool_leg = next(leg for leg in plan.legs if isinstance(leg, PoolLeg))
        assert pool_leg.pool_id == pool_id and 0 < pool_leg.energy_wh < 1500

        report_a = await consumer_a.trading.execute(Side.BUY, 1500, slot, limit_price=300_000)
        assert report_a.filled_wh == 1500 and report_a.problems == (), report_a
        venues_a = {e.counterparty for e in report_a.executions}
        assert venues_a == {station.account, nodes[HOUSEHOLD_A].account, nodes[HOUSEHOLD_B].account}
        assert all(e.price <= 300_000 for e in report_a.executions)

        with trio.fail_after(10):
            await wait_until(lambda: all(len(n.trading.books.book(slot)) == 0 for n in (consumer_a, consumer_b)))
        reports = []   # the book is empty now: two buyers race for the pool, which sequences them

        async def buy(node):
            reports.append((node, await node.trading.execute(Side.BUY, 100, slot, limit_price=400_000)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(buy, consumer_a)
            nursery.start_soon(buy, consumer_b)
        assert all(r.filled_wh == 100 for _, r in reports), reports
        sale = await nodes[HOUSEHOLD_A].trading.execute(Side.SELL, 300, slot, limit_price=100_000)
        assert sale.filled_wh == 300 and {e.counterparty for e in sale.executions} == {station.account}

        await settle(nodes)
        state = consumer_b.ledger.state
        record = state.pools[pool_id]
        assert isinstance(record, PoolRecord) and record.pool.energy_wh <= record.pool.energy_cap_wh
        pool_buys = [e for r in [report_a] + [r for _, r in reports] for e in r.executions
                     if e.counterparty == station.account]
        assert record.energy_out_wh == sum(e.qty_wh for e in pool_buys)
        assert record.energy_in_wh == 300 and record.swaps == len(pool_buys) + len(sale.executions)
        assert state.balance(station.account) == CREDITS + sum(e.value_uc for e in pool_buys) - sale.total_uc

        def spent(node):   # credits a refused swap still holds in a lock come back at its deadline
            held = sum(r.lock.amount for r in state.locks.values()
                       if r.buyer == node.account and r.status.value == "open")
            return CREDITS - state.balance(node.account) - held

        assert spent(consumer_a) == report_a.total_uc + sum(r.total_uc for n, r in reports if n is consumer_a)
        assert spent(consumer_b) == sum(r.total_uc for n, r in reports if n is consumer_b)
        book_a = [e for e in report_a.executions if e.counterparty == nodes[HOUSEHOLD_A].account]
        assert sum(e.value_uc for e in book_a) == trade_value(500, 180_000)


async def ask(stream, payload: bytes) -> SwapAnswer:
    await stream.send_frame(payload)
    return decode_signed(await stream.receive_frame(), SwapAnswer).body


async def test_each_bad_swap_request_is_refused_with_its_reason_and_changes_nothing(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock, pool_host=STATION, pool_config=POOLS) as nodes:
        await fund(nodes, CREDITS)
        station, attacker, other = nodes[STATION], nodes[4], nodes[3]
        rules = station.trading.config.slot_rules
        slot = trading_slot(station)
        pool_id = await wait_for_pool(nodes, slot)
        record_before = station.ledger.state.pools[pool_id]
        balances_before = dict(station.ledger.state.balances)
        good = SwapRequest(request_id=os.urandom(16), trader=attacker.account, host=station.account, pool_id=pool_id,
                           zone=ZONE, slot=slot, side=Side.SELL, energy_wh=100, limit_uc=1,
                           expires_ms=rules.gate_closure_ms(slot))
        stream = await attacker.transport.open_stream(station.account, SWAP_PROTOCOL, max_frame_bytes=MAX_SWAP_BYTES)

        def signed(**changes):
            return sign(dataclasses.replace(good, request_id=os.urandom(16), **changes), attacker.key).encoded

        cases = [
            ("unsigned", encode(good), SwapRefuseReason.MALFORMED),
            ("garbage", os.urandom(64), SwapRefuseReason.MALFORMED),
            ("signed by a third party", sign(dataclasses.replace(good, trader=other.account), other.key).encoded,
             SwapRefuseReason.MALFORMED),
            ("another host", signed(host=other.account), SwapRefuseReason.NOT_HOST),
            ("unknown pool", signed(pool_id=os.urandom(16)), SwapRefuseReason.UNKNOWN_POOL),
            ("wrong zone", signed(zone="otherzone"), SwapRefuseReason.WRONG_ZONE),
            ("wrong slot", signed(slot=slot + rules.length_s), SwapRefuseReason.WRONG_SLOT),
            ("below the seller's limit", signed(limit_uc=10**9), SwapRefuseReason.SLIPPAGE),
            ("above the buyer's limit", signed(side=Side.BUY, limit_uc=1), SwapRefuseReason.SLIPPAGE),
            ("more energy than the pool holds", signed(side=Side.BUY, energy_wh=10**6, limit_uc=10**12),
             SwapRefuseReason.INSUFFICIENT_LIQUIDITY),
            ("a sale beyond the battery's cap", signed(energy_wh=9_000), SwapRefuseReason.CAPACITY),
            ("expired", signed(expires_ms=clock() - 1), SwapRefuseReason.EXPIRED),
            ("buy without a certified lock", signed(side=Side.BUY, limit_uc=10**8), SwapRefuseReason.BAD_LOCK),
        ]
        for case, payload, reason in cases:
            with trio.fail_after(30):
                answer = await ask(stream, payload)
            assert answer.status is SwapStatus.REFUSED, case
            assert answer.reason.startswith(reason.value), (case, answer.reason)

        clock.offset_ms = rules.gate_closure_ms(slot) - clock() + 1
        late = signed(expires_ms=rules.gate_closure_ms(slot) + 60_000)
        assert (await ask(stream, late)).reason.startswith(SwapRefuseReason.POOL_FROZEN.value)

        with pytest.raises(NetError):
            await stream.send_frame(b"\x00" * (MAX_SWAP_BYTES + 1))
        raw = await attacker.transport.open_stream(station.account, SWAP_PROTOCOL, max_frame_bytes=MAX_SWAP_BYTES * 4)
        await raw.send_frame(b"\x00" * (MAX_SWAP_BYTES + 1))
        with pytest.raises(NetError), trio.fail_after(10):
            await raw.receive_frame()      # the host drops a stream that sends an oversize frame

        state = station.ledger.state
        assert state.pools[pool_id] == record_before
        assert {a: state.balance(a) for a in balances_before} == balances_before
        assert not any(key.startswith("swap/") for key in state.extra)
        assert station.pool_host.stats.swaps == 0
        await settle(nodes)


async def test_forged_pool_announcements_are_rejected(tmp_path):
    async with open_trading_cluster("memory", 4, tmp_path, pool_host=STATION, pool_config=POOLS) as nodes:
        await fund(nodes, CREDITS)
        slot = trading_slot(nodes[0])
        await wait_for_pool(nodes, slot)
        host, client = nodes[STATION].pool_host, nodes[2].pools
        genuine = host.announcement()
        forged_state = dataclasses.replace(genuine.body.pools[0], energy_wh=genuine.body.pools[0].energy_cap_wh + 1)
        relayed = sign(dataclasses.replace(genuine.body, pools=(forged_state,)), nodes[STATION].key).encoded
        assert client.validate_announcement(nodes[STATION].account, genuine.encoded) is ValidationResult.ACCEPT
        assert client.validate_announcement(nodes[3].account, genuine.encoded) is ValidationResult.REJECT
        assert client.validate_announcement(nodes[STATION].account, relayed) is ValidationResult.REJECT
        assert client.validate_announcement(nodes[STATION].account, b"junk") is ValidationResult.REJECT
        await settle(nodes)
