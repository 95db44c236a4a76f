"""A 6-node community over the memory transport: a storage station run by the agent strategy sells
its stored energy into the evening, and two households whose agents need energy then buy it —
from nowhere else, since nobody else offers.

Market time is a ``ManualClock`` the test moves a few minutes at a time; every agent's tick is
called by the test (the service loop only adds a sleep around the same call), devices are sampled
by each node's real ``DeviceService``. The evening is dear in the published day-ahead reference,
so both the station's and the households' price outlooks put the evening above the day's mean.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from p2pgrid.agent.agent_trader import AgentTrader
from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config
from p2pgrid.devices.base import Quality
from p2pgrid.devices.service import DeviceService, simulated_device_set
from p2pgrid.ledger.chain import LockStatus
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.testing import ZONE, AgentTestHost as Host, fund, open_trading_cluster
from p2pgrid.wire import Side, Source

pytestmark = pytest.mark.slow

SLOT_S = 900
DAY_START_S = 1_800_000_000 - 1_800_000_000 % 86400
START_MS = (DAY_START_S + 17 * 3600) * 1000 + 60_000      # 17:01 UTC
CREDITS = 50_000_000
SAMPLE_PERIOD_S = 0.02
SLOTS = 4 * 24


def reference_prices() -> list[int]:
    """Day-ahead €/MWh × 1000 per 15-min slot: cheap at midday, dear 17–21 h."""
    hour = [(k * SLOT_S // 3600) % 24 for k in range(2 * SLOTS)]
    return [40_000 + 60_000 * (17 <= h <= 21) - 20_000 * (10 <= h <= 15) for h in hour]


def node_config(tmp_path, name, *, load_wh, pv_wh, battery=None, arbitrage=False):
    data_dir = tmp_path / name
    data_dir.mkdir(parents=True, exist_ok=True)
    series_start_s = START_MS // 1000 - 60
    (data_dir / "energy.json").write_text(json.dumps({"load": load_wh, "pv": pv_wh}))
    (data_dir / "reference.json").write_text(json.dumps({"start_s": DAY_START_S, "slot_s": SLOT_S,
                                                         "prices": reference_prices()}))
    devices: dict[str, Any] = {"series_file": "energy.json", "series_start_s": series_start_s}
    if battery is not None:
        devices["battery"] = battery
    raw = {"node": {"data_dir": str(data_dir), "name": name}, "zone": {"id": ZONE},
           "agent": {"strategy": "agent", "horizon_slots": 24, "min_qty_wh": 20, "offer_lead_slots": 3,
                     "reference_prices_file": "reference.json", "arbitrage": arbitrage},
           "devices": devices}
    return build_config(raw, base_dir=tmp_path)


async def fresh_samples(hosts) -> None:
    now = hosts[0].clock.now_ms()
    with trio.fail_after(20):
        await wait_until(lambda: all(
            len(h.telemetry.last) == len(h.telemetry.device_set.devices)
            and all(s.t_ms >= now and s.quality is Quality.GOOD for s in h.telemetry.last.values())
            for h in hosts), 0.01)


async def test_station_sells_evening_energy_the_households_buy_from_nowhere_else(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 6, tmp_path, clock=clock.now_ms) as nodes:
        await fund(nodes, CREDITS)
        # The station: a full 40 kWh battery, no sun in the evening, no load of its own.
        station_config = node_config(tmp_path, "station", load_wh=[0] * SLOTS, pv_wh=[0] * SLOTS, arbitrage=True,
                                     battery={"capacity_wh": 40_000, "max_charge_w": 20_000,
                                              "max_discharge_w": 20_000, "initial_soc": 0.95,
                                              "soc_min": 0.1, "soc_max": 0.95})
        # Two households with an evening load, no PV and no battery: they must buy or import.
        household_configs = [node_config(tmp_path, f"household-{i}", load_wh=[600 + 100 * i] * SLOTS,
                                         pv_wh=[0] * SLOTS) for i in range(2)]
        station = Host(station_config, nodes[5].key, clock, nodes[5].trading)
        households = [Host(c, nodes[3 + i].key, clock, nodes[3 + i].trading) for i, c in enumerate(household_configs)]
        hosts = [station, *households]
        async with trio.open_nursery() as nursery:
            for host in hosts:
                service = DeviceService(simulated_device_set(host.config, clock.now_ms), period_s=SAMPLE_PERIOD_S)
                await nursery.start(service.run, host)
                host.agent = AgentTrader()
                host.agent.slot_s = SLOT_S
            await fresh_samples(hosts)
            for _ in range(10):                         # 17:01 to 17:51 market time
                for host in hosts:
                    await host.agent.tick(host, nursery)
                # A take's lock lives a minute of market time: let the buys finish before time moves.
                with trio.fail_after(30):
                    await wait_until(lambda: not any(h.agent.buying for h in households), 0.02)
                clock.advance(5 * 60_000)
                await fresh_samples(hosts)
            nursery.cancel_scope.cancel()
        # Every node holds every certified entry before the cluster closes (a confirm in flight
        # would write to a closed store).
        with trio.fail_after(20):
            await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1, 0.01)

        # The station offered evening energy from its battery, at the expected (dear) evening price.
        offers = [o.body for o in station.trading.own_orders.values()] + list(station.agent.sell_orders.values())
        assert offers and all(o.side is Side.SELL and o.source is Source.BATTERY for o in offers)
        assert all(17 <= (o.slot - DAY_START_S) // 3600 <= 21 for o in offers)
        # What the households bought was certified, from the station only, and nobody else offered.
        state = nodes[0].ledger.state
        bought = [r for r in state.locks.values() if r.status is LockStatus.FILLED and r.filled_wh]
        buyers = {h.key.public_key for h in households}
        assert bought and {r.buyer for r in bought} <= buyers
        assert {r.lock.seller for r in bought} == {station.key.public_key}
        for household in households:
            assert household.agent.counters.bought_wh > 0
            assert household.agent.counters.offers == 0
        assert sum(r.filled_wh for r in bought) == sum(h.agent.counters.bought_wh for h in households)
        assert station.agent.sold_wh(station, bought[0].lock.slot) > 0
        assert station.agent.counters.plans < station.agent.counters.ticks    # plans were reused
