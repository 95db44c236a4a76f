"""The "agent" strategy in a memory-transport trading cluster: the node trades from its own
(simulated) devices through forecasts and the battery plan.

Market time is a ``ManualClock`` the test moves; the agent's ticks are called by the test (the
service loop only adds a sleep around the same call), and devices are sampled by the real
``DeviceService`` in trio time. Each test waits for a fresh sample after moving market time.
"""

import json
import math

import pytest
import trio

from p2pgrid.agent.agent_trader import AgentTrader, expected_p2p
from p2pgrid.agent.pricing import limit_price, RepricingRule, SlotMarket
from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config
from p2pgrid.devices.base import DeviceKind, Quality
from p2pgrid.devices.device_set import DeviceSet
from p2pgrid.devices.service import DeviceService, simulated_device_set
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.testing import ZONE, AgentTestHost as AgentHost, fund, open_trading_cluster
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side

pytestmark = pytest.mark.slow

SLOT_S = 900
START_MS = 1_800_000_000_000 - 1_800_000_000_000 % (SLOT_S * 1000) + 60_000   # one minute into a slot
CREDITS = 50_000_000
SAMPLE_PERIOD_S = 0.02


def agent_config(tmp_path, name, *, load_wh, pv_wh, soc=0.5, **agent):
    data_dir = tmp_path / name
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "energy.json").write_text(json.dumps({"load": load_wh, "pv": pv_wh}))
    raw = {
        "node": {"data_dir": str(data_dir), "name": name},
        "zone": {"id": ZONE},
        "agent": {"strategy": "agent", "horizon_slots": 16, "min_qty_wh": 20, **agent},
        "devices": {"series_file": "energy.json", "series_start_s": START_MS // 1000 - 60,
                    "pv": {"kwp": 10.0},
                    "battery": {"capacity_wh": 10_000, "max_charge_w": 4_000, "max_discharge_w": 4_000,
                                "initial_soc": soc, "soc_min": 0.1, "soc_max": 0.95}},
    }
    return build_config(raw, base_dir=tmp_path)


class Freezable:
    """Wraps a device; once frozen it stops answering (its reads hang)."""

    def __init__(self, inner):
        self.inner = inner
        self.kind = inner.kind
        self.frozen = False

    async def read(self):
        if self.frozen:
            await trio.sleep_forever()
        return await self.inner.read()

    async def apply(self, setpoint):
        if self.frozen:
            await trio.sleep_forever()
        return await self.inner.apply(setpoint)


async def fresh_samples(host: AgentHost) -> None:
    """Wait until every answering device gave a good reading at the current market time.

    A read can miss its (real-time) timeout on a busy machine; that BAD sample is dated now too,
    so only a GOOD one proves the device was heard."""
    now = host.clock.now_ms()
    telemetry = host.telemetry
    with trio.fail_after(10):
        await wait_until(lambda: all(
            s.t_ms >= now and s.quality is Quality.GOOD for name, s in telemetry.last.items()
            if not getattr(telemetry.device_set.devices[name], "frozen", False))
            and len(telemetry.last) == len(telemetry.device_set.devices), 0.01)


async def quiesce(nodes) -> None:
    """Wait until every node holds every certified entry: closing a cluster while a confirm is in
    flight lets the memory transport's stream handler write to a ledger store already closed."""
    with trio.fail_after(20):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1, 0.01)
    await trio.sleep(0.2)   # let the confirms' replies drain (no condition to observe for them)
    with trio.fail_after(20):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1, 0.01)


async def start_agent(nursery, host: AgentHost, device_set: DeviceSet | None = None) -> AgentTrader:
    service = DeviceService(device_set or simulated_device_set(host.config, host.clock.now_ms),
                            period_s=SAMPLE_PERIOD_S)
    await nursery.start(service.run, host)
    await fresh_samples(host)
    trader = AgentTrader()
    trader.slot_s = SLOT_S
    host.agent = trader
    return trader


def own_sells(host: AgentHost, slot: int) -> list:
    return [s.body for s in host.trading.own_orders.values() if s.body.slot == slot and s.body.side is Side.SELL]


async def test_agent_offers_follow_the_plan_and_limits_move_toward_feed_in_as_the_gate_nears(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock.now_ms) as nodes:
        await fund(nodes, CREDITS)
        config = agent_config(tmp_path, "agent", load_wh=[150] * 200, pv_wh=[1200] * 200,
                              reprice_ramp_s=3600, offer_lead_slots=3, tick_ms=100)
        host = AgentHost(config, nodes[4].key, clock, nodes[4].trading)
        rules = config.zone.slot_rules
        async with trio.open_nursery() as nursery:
            trader = await start_agent(nursery, host)
            await trader.tick(host, nursery)
            window = rules.tradable_slots(clock.now_ms())[1:4]
            for slot in window:
                offered = sum(o.qty_wh for o in own_sells(host, slot))
                assert offered == trader.planned_export_wh(slot) > 0
                assert all(o.green for o in own_sells(host, slot)
                           if o.source.value == "pv")
            # Follow one slot toward its gate: its limit only falls, toward feed-in, as computed.
            slot = window[-1]
            market = SlotMarket(slot, config.zone.tariffs.retail_price, config.zone.tariffs.feed_in_price,
                                expected_p2p(config))
            limits = []
            while rules.tradable_slots(clock.now_ms())[1] <= slot:
                limits.append(max(o.limit_price for o in own_sells(host, slot)))
                expected = limit_price(Side.SELL, market, clock.now_ms(), rules.gate_closure_ms(slot),
                                       RepricingRule(3600))
                assert abs(limits[-1] - expected) < config.agent.reprice_min_change
                clock.advance(5 * 60_000)
                await fresh_samples(host)
                await trader.tick(host, nursery)
            assert limits == sorted(limits, reverse=True) and limits[0] > limits[-1]
            assert limits[-1] >= config.zone.tariffs.feed_in_price
            assert limits[-1] - config.zone.tariffs.feed_in_price < limits[0] - config.zone.tariffs.feed_in_price
            assert trader.counters.replaced > 0
            nursery.cancel_scope.cancel()
        await quiesce(nodes)


async def test_agent_battery_setpoint_is_obeyed_and_soc_moves_as_planned(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock.now_ms) as nodes:
        # Evening load with no PV, a full-ish battery: the plan discharges into the load.
        config = agent_config(tmp_path, "agent", load_wh=[700] * 200, pv_wh=[0] * 200, soc=0.9)
        host = AgentHost(config, nodes[4].key, clock, nodes[4].trading)
        async with trio.open_nursery() as nursery:
            trader = await start_agent(nursery, host)
            await trader.tick(host, nursery)
            planned = trader.decision.plan.slots[0]
            assert planned.setpoint_w < 0                                  # discharging
            assert trader.setpoint_w == planned.setpoint_w
            site = host.telemetry.device_set.site
            assert site.state.controls.battery_w == -planned.setpoint_w    # bus convention: + discharges
            before = host.telemetry.battery().soc_pct * 100                # Wh (capacity 10 kWh)
            clock.advance(5 * 60_000)
            await fresh_samples(host)
            after = host.telemetry.battery().soc_pct * 100
            limits = trader.decision.plan
            one_way = math.sqrt(config.devices.battery.round_trip_efficiency)
            expected = planned.setpoint_w * 300 / 3600 / one_way          # stored Wh over 5 minutes
            assert after - before == pytest.approx(expected, rel=0.05)
            assert limits is trader.decision.plan
            nursery.cancel_scope.cancel()
        await quiesce(nodes)


async def test_agent_stops_trading_and_cancels_its_sells_when_a_device_goes_stale(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock.now_ms) as nodes:
        config = agent_config(tmp_path, "agent", load_wh=[100] * 200, pv_wh=[1500] * 200)
        host = AgentHost(config, nodes[4].key, clock, nodes[4].trading)
        device_set = simulated_device_set(config, clock.now_ms)
        meter = Freezable(device_set.devices["meter"])
        device_set.devices["meter"] = meter
        async with trio.open_nursery() as nursery:
            trader = await start_agent(nursery, host, device_set)
            await trader.tick(host, nursery)
            mine = {oid for oid, s in host.trading.own_orders.items() if s.body.side is Side.SELL}
            assert mine and trader.counters.offers == len(mine)
            other = nodes[1].trading
            with trio.fail_after(10):
                await wait_until(lambda: all(other.books.signed_order(oid) is not None for oid in mine))

            meter.frozen = True
            clock.advance(60_000)                          # > 3 sample periods of market time
            await fresh_samples(host)
            with trio.fail_after(10):
                await wait_until(lambda: host.telemetry.last["meter"].quality is not Quality.GOOD, 0.01)
            assert host.telemetry.stale_devices() == {"meter"}
            offers_before = trader.counters.offers
            await trader.tick(host, nursery)
            assert not any(s.body.side is Side.SELL for s in host.trading.own_orders.values())
            assert trader.counters.device_stale
            with trio.fail_after(10):                      # the cancels reach the other nodes' books
                await wait_until(lambda: all(other.books.signed_order(oid) is None for oid in mine))
            for _ in range(3):
                clock.advance(5 * 60_000)
                await fresh_samples(host)
                await trader.tick(host, nursery)
            assert trader.counters.offers == offers_before
            assert not host.trading.own_orders
            assert host.telemetry.device_set.site.state.controls.battery_w is None   # device's own mode

            meter.frozen = False                           # answering again: trading resumes
            clock.advance(60_000)
            await fresh_samples(host)
            await trader.tick(host, nursery)
            assert not trader.counters.device_stale and trader.counters.offers > offers_before
            nursery.cancel_scope.cancel()
        await quiesce(nodes)


async def test_agent_never_offers_more_than_its_planned_export_even_while_being_bought_from(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock.now_ms) as nodes:
        await fund(nodes, CREDITS)
        # A cloudy, changing day: PV and load vary slot by slot, so plans (and offers) change.
        pv = [round(900 + 700 * math.sin(i / 2.3)) for i in range(200)]
        load = [round(300 + 250 * math.cos(i / 1.7)) for i in range(200)]
        config = agent_config(tmp_path, "agent", load_wh=load, pv_wh=[max(0, v) for v in pv],
                              offer_lead_slots=4, reprice_ramp_s=7200)
        host = AgentHost(config, nodes[4].key, clock, nodes[4].trading)
        rules = config.zone.slot_rules
        buyer = nodes[2].trading
        sold_any = False
        async with trio.open_nursery() as nursery:
            trader = await start_agent(nursery, host)
            for step in range(14):
                await trader.tick(host, nursery)
                window = rules.tradable_slots(clock.now_ms())[1:5]
                for slot in window:
                    assert trader.offered_wh(host, slot) <= trader.planned_export_wh(slot)
                if step % 3 == 1:                           # a neighbour buys part of the nearest offer
                    slot = window[0]
                    # Wait for one of the agent's *current* offers: the buyer's book may still hold
                    # an offer the agent has just re-priced (replaced), which its maker refuses.
                    with trio.fail_after(20):
                        await wait_until(lambda: any(buyer.books.signed_order(o.order_id) is not None
                                                     for o in own_sells(host, slot)) or not own_sells(host, slot))
                    if own_sells(host, slot):
                        report = await buyer.execute(Side.BUY, 150, slot, config.zone.tariffs.retail_price)
                        sold_any = sold_any or report.filled_wh > 0
                        with trio.fail_after(20):
                            await wait_until(lambda: trader.sold_wh(host, slot) >= report.filled_wh)
                        assert trader.offered_wh(host, slot) <= trader.planned_export_wh(slot)
                clock.advance(7 * 60_000)
                await fresh_samples(host)
            assert sold_any
            nursery.cancel_scope.cancel()
        await quiesce(nodes)


async def test_agent_buys_its_need_from_the_book_when_it_is_cheaper_than_retail(tmp_path):
    clock = ManualClock(START_MS)
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock.now_ms) as nodes:
        await fund(nodes, CREDITS)
        config = agent_config(tmp_path, "agent", load_wh=[900] * 200, pv_wh=[0] * 200, soc=0.1)
        host = AgentHost(config, nodes[4].key, clock, nodes[4].trading)
        rules = config.zone.slot_rules
        slot = rules.tradable_slots(clock.now_ms())[1]
        seller = nodes[3].trading
        seller.place_order(Side.SELL, 5000, 200_000, slot)          # cheaper than retail (300 000)
        with trio.fail_after(10):
            await wait_until(lambda: host.trading.quote(Side.BUY, 100, slot, 250_000).filled_wh == 100)
        async with trio.open_nursery() as nursery:
            trader = await start_agent(nursery, host)
            await trader.tick(host, nursery)
            need = next(i.qty_wh for i in trader.decision.orders if i.slot == slot and i.side is Side.BUY)
            with trio.fail_after(30):
                await wait_until(lambda: trader.bought.get(slot, 0) > 0 and slot not in trader.buying)
            assert trader.bought[slot] == need
            assert trader.committed_wh(host)[slot] == need
            await trader.tick(host, nursery)                        # bought: no second execution
            assert all(not (i.slot == slot and i.side is Side.BUY) for i in trader.decision.orders)
            assert host.trading.own_orders == {}                    # bids are never rested
            nursery.cancel_scope.cancel()
        await quiesce(nodes)


def test_slot_rules_of_the_test_zone_match_the_cluster():
    assert SlotRules().length_s == SLOT_S
    assert DeviceKind.BATTERY.value == "battery"
