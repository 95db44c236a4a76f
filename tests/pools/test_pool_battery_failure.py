"""A pool host whose battery stops answering after gate closure trims its pools on the ledger:
the frozen pool it still owes delivery for (a ``pool_update`` dated after gate closure that only
lowers the cap) and its live pools, so buyers can no longer buy energy it cannot deliver. Real
nodes on the memory transport, one manual market clock; the battery is the node's simulated one,
and its failure is what the node's device service reports (stale readings)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from p2pgrid.clock import ManualClock
from p2pgrid.devices.base import DeviceError, DeviceKind
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import wait_until
from p2pgrid.pools.node_service import BatteryWatch
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.pools.entries import POOL_UPDATE_KIND
from p2pgrid.wire import Side

NOW = 1_800_000_000_000 + 60_000       # a minute into a slot
FUNDS_UC = 50_000_000
HOST, CONSUMER = 4, 5
HOST_CONFIG = {"pool.enabled": True, "devices.sample_period_ms": 100,
               "devices.battery": {"capacity_wh": 100_000, "max_charge_w": 50_000, "max_discharge_w": 50_000}}


async def everyone(nodes, condition, timeout_s: float = 30):
    with trio.fail_after(timeout_s):
        await wait_until(lambda: all(condition(n.ledger.state) for n in nodes))


def cap_of(state, host, slot):
    record = state.pools.get(host.pool_host.pool_id(slot))
    return None if record is None else record.pool.energy_cap_wh


async def stops_answering(*args):
    raise DeviceError("battery: no answer on its bus")


@pytest.mark.slow     # a cluster of real nodes
async def test_a_host_whose_battery_fails_after_gate_closure_trims_its_pools_and_buyers_cannot_buy(tmp_path):
    clock = ManualClock(NOW)
    async with open_node_cluster(tmp_path, 6, funds_uc=FUNDS_UC, clock=clock, node_overrides={HOST: HOST_CONFIG}) as nodes:
        host, consumer = nodes[HOST], nodes[CONSUMER]
        rules = host.config.zone.slot_rules
        frozen, live = rules.tradable_slots(NOW)[:2]
        await everyone(nodes, lambda s: cap_of(s, host, frozen) and cap_of(s, host, live))
        cap = cap_of(host.ledger.state, host, frozen)

        clock.set(rules.gate_closure_ms(frozen) + 1_000)     # the first pool is frozen, its slot not begun
        with trio.fail_after(30):
            await wait_until(lambda: any(hasattr(leg, "pool_id")
                                         for leg in consumer.trading.quote(Side.BUY, 100, live, 1_000_000).legs))
        bought = await consumer.trading.execute(Side.BUY, 100, live, limit_price=1_000_000)
        assert bought.filled_wh == 100, bought                # a working battery backs the live pool
        assert cap_of(host.ledger.state, host, frozen) == cap  # the clock's jump was no battery failure

        battery = host.telemetry.device_set.devices[host.telemetry.device_set.of_kind(DeviceKind.BATTERY)]
        battery.read = stops_answering
        clock.advance(2_000)                                   # missed readings: the battery goes stale
        await everyone(nodes, lambda s: cap_of(s, host, frozen) == 0 and cap_of(s, host, live) == 0)

        own = await host.ledger.store.account_entries(host.key.public_key)
        updates = [e.body for e in own if e.body.kind == POOL_UPDATE_KIND]
        assert any(e.time_ms >= rules.gate_closure_ms(frozen) for e in updates)   # dated after the gate
        assert host.pool_host.stats.frozen_trims == 1
        state = consumer.ledger.state
        assert state.pools[host.pool_host.pool_id(frozen)].pool.energy_wh == 0
        refused = await consumer.trading.execute(Side.BUY, 100, live, limit_price=1_000_000)
        assert refused.filled_wh == 0, refused                # nothing left to buy from it
        with trio.fail_after(30):
            await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes}) == 1)
        assert all(n.ledger.state.money_total() == 0 for n in nodes)



class Telemetry:
    """What ``BatteryWatch`` reads of a device service: which devices are stale."""

    def __init__(self) -> None:
        self.stale: set[str] = set()
        self.device_set = SimpleNamespace(of_kind=lambda kind: "battery" if kind is DeviceKind.BATTERY else None)

    def stale_devices(self) -> set[str]:
        return self.stale


async def test_a_battery_has_failed_once_it_stays_stale_for_the_hold_not_at_a_clock_jump(autojump_clock):
    telemetry = Telemetry()
    watch = BatteryWatch(SimpleNamespace(telemetry=telemetry), hold_s=1.0)
    assert not watch.failed()
    telemetry.stale = {"battery"}         # a market clock that jumps: stale until the next sample
    assert not watch.failed()
    await trio.sleep(0.5)
    telemetry.stale = set()
    assert not watch.failed()
    telemetry.stale = {"battery"}         # it stops answering (the host asks every tick)
    assert not watch.failed()
    await trio.sleep(0.99)
    assert not watch.failed()
    await trio.sleep(0.02)
    assert watch.failed()
    assert not BatteryWatch(SimpleNamespace(), hold_s=0).failed()   # no device service: no failure reported
