"""End to end on an in-memory cluster: a household buys 300 Wh from the station's pool through
``PoolClient``, meters post their readings, the operator's ``SettlementService`` settles the slot —
the swap's lock carries the pool's slot, and the station, which exported only 200 Wh, pays the
shortfall on every node's ledger."""

from __future__ import annotations

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.settlement.entries import (
    certificates_of, compute_settlement, settlement_of, swap_trade_id, swap_trades_for_slot, unsettled_slots,
)
from p2pgrid.pools.entries import compute_pool_id, compute_swap
from p2pgrid.pools.host import BatteryLimits, PoolHostConfig
from p2pgrid.settlement.service import DEFAULT_SETTLE_DELAY_MS, MeterService, SettlementService, register_meters
from p2pgrid.trading.testing import ZONE, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source

STATION, HOUSE = 1, 2
RETAIL, FEED_IN = 300_000, 80_000
POOLS = PoolHostConfig(battery=lambda: BatteryLimits(available_wh=40_000, power_limit_w=40_000), fee_bps=30,
                       initial_credits_uc=400_000, seed_energy_wh=2_000, slots_ahead=3, tick_s=0.1,
                       announce_interval_s=1.0, lock_wait_s=1.0)


class SteppedClock:
    """Market time that only moves when the test says so (Unix ms)."""

    def __init__(self) -> None:
        import time
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms


async def converge(nodes) -> None:
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({n.ledger.state_root() for n in nodes}) == 1)
    # The services' incremental roots (kept across every swap, settle and certificate) are the
    # roots of their states encoded afresh.
    assert all(n.ledger.state_root() == state_root(n.ledger.state) for n in nodes)


@pytest.mark.slow
async def test_a_pool_buy_settles_on_every_node_with_the_stations_shortfall_priced_at_retail(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 4, tmp_path, clock=clock, pool_host=STATION, pool_config=POOLS,
                                    settlement_prices=ImbalancePrices(RETAIL, FEED_IN)) as nodes:
        operator, station, house = nodes[0], nodes[STATION], nodes[HOUSE]
        rules = operator.trading.config.slot_rules
        await fund(nodes, 10_000_000)
        meter_keys = {n.account: seeded_key(f"swap-cluster-meter-{i}") for i, n in enumerate(nodes) if i > 0}
        with trio.fail_after(30):
            await register_meters(operator.ledger, ((a, k.public_key) for a, k in meter_keys.items()), clock())
        slot = rules.tradable_slots(clock())[2]
        pool_id = compute_pool_id(station.account, ZONE, slot)
        with trio.fail_after(30):
            await wait_until(lambda: any(p.pool_id == pool_id for p in house.pools.pools(slot)))
        pool = next(p for p in house.pools.pools(slot) if p.pool_id == pool_id)
        _, quote = compute_swap(pool, Side.BUY, 300, clock())

        bought = await house.pools.swap(Side.BUY, pool_id, 300, 2 * quote.credits_uc)

        assert bought.energy_wh == 300
        await converge(nodes)
        for node in nodes:
            state, ledger_rules = node.ledger.state, node.ledger.rules
            assert state.locks[bought.request_id].lock.slot == slot        # the pool's slot, not 0
            [trade] = swap_trades_for_slot(state, ledger_rules, slot)
            assert (trade.seller, trade.buyer) == (station.account, house.account)
            assert (trade.qty_wh, trade.value_uc) == (bought.energy_wh, bought.credits_uc)
            assert slot in unsettled_slots(state)
            assert compute_settlement(state, ledger_rules, slot)[0].swaps == (bought.request_id,)

        # The station's battery exports only 200 of the 300 Wh; the household imports all 300.
        energy = {station.account: (0, 200, 200, Source.PV), house.account: (300, 0, 0, Source.NONE)}
        meters = [MeterService(n.ledger, meter_keys[n.account], rules,
                               lambda s, a=n.account: energy[a] if s == slot else None, clock, poll_s=0.02)
                  for n in nodes if n.account in energy]
        settler = SettlementService(operator.ledger, clock, poll_s=0.02)
        async with trio.open_nursery() as nursery:
            for service in (*meters, settler):
                await nursery.start(service.run)
            clock.now_ms = rules.slot_end_ms(slot) + 10_000
            with trio.fail_after(30):
                await wait_until(lambda: all(m.submitted == [slot] for m in meters))
            clock.now_ms = rules.metering_due_ms(slot) + DEFAULT_SETTLE_DELAY_MS     # due + W
            # Settled over both readings: one that reached the gateway after its first settle of
            # the slot (a busy machine) is taken in by a reconciliation settle.
            metered = set(energy)
            with trio.fail_after(60):
                await wait_until(lambda: all(
                    (s := settlement_of(n.ledger.state, slot)) is not None
                    and {m.account for m in s.meter_entries} == metered for n in nodes))
            await converge(nodes)
            nursery.cancel_scope.cancel()

        settled = settlement_of(house.ledger.state, slot)
        assert settled.delivery(swap_trade_id(bought.request_id)).delivered_wh == 200
        assert settled.line(station.account).paid_for(Reason.SHORTFALL) == -trade_value(100, RETAIL)
        assert settled.line(house.account).paid_for(Reason.EXTRA_IMPORT) == 0
        assert settled.total_uc == 0 and all(n.ledger.state.money_total() == 0 for n in nodes)
        assert total_wh(certificates_of(house.ledger.state, slot).retired_by(house.account)) == 200
