"""The RPC reads of a real node's derived state, over real RPC on in-memory clusters of real nodes
(the transport is covered by ``test_rpc_node_libp2p``):

* a slot traded, metered and settled by the gateway's settlement service: ``settlement_get``
  (provisional, then certified), ``certs_list`` (held and retired units) and the ``settlements``
  subscription;
* a node running the ``agent`` strategy with simulated PV and battery: ``telemetry_get``, the
  ``telemetry`` subscription and ``forecast_get`` before and after a slot was measured.

Market time is an ``OffsetClock``: the system clock plus jumps the test makes, so a slot ends and
its metering deadline passes in a moment while every service keeps its real pacing.
"""

from __future__ import annotations

import time

import pytest
import trio

from p2pgrid.ledger.testing import seeded_key
from p2pgrid.node.api import dashboard_readings
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import CertificateStatus
from p2pgrid.rpc.client import RpcCallError, calls
from p2pgrid.settlement.entries import meter_entries_for_slot
from p2pgrid.settlement.service import DEFAULT_SETTLE_DELAY_MS, MeterService, register_meters
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source
from rpc_node_helpers import FUNDS_UC, open_slot, poll, rpc_client, wait_until

pytestmark = pytest.mark.slow     # clusters of real nodes

PRICE = 200_000
SOLD_WH = 600


class OffsetClock:
    """The system clock plus an offset the test moves forward (market time jumps, real time runs)."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    def real_seconds_until(self, t_ms: int) -> float:
        return max(0.0, (t_ms - self.now_ms()) / 1000)

    def jump_to(self, t_ms: int) -> None:
        self.offset_ms += max(0, t_ms - self.now_ms())


EXPORT_W = 10_000      # these meters replace the cluster's: the seller's offer needs an export capacity


async def next_event(stream, timeout_s: float = 30):
    with trio.fail_after(timeout_s):
        async for event in stream:
            return event
    raise AssertionError("the subscription ended")


async def ok_call(client, call):
    """The answer to ``call``, asked again while the node answers ``NoReadingYet`` (devices starting)."""
    with trio.fail_after(20):
        while True:
            try:
                return await client.call(call)
            except RpcCallError as error:
                if error.code != codes.DEVICE_ERROR:
                    raise
            await trio.sleep(0.05)


async def test_a_settled_slot_is_read_streamed_and_its_green_certificates_listed(tmp_path):
    clock = OffsetClock()
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(1, 2), funds_uc=FUNDS_UC, clock=clock) as nodes:
        gateway, seller, buyer = nodes[0], nodes[1], nodes[2]
        retail = seller.config.zone.tariffs.retail_price
        rules = seller.config.zone.slot_rules
        meter_keys = {n.key.public_key: seeded_key(f"meter-{i}") for i, n in enumerate(nodes) if n in (seller, buyer)}
        with trio.fail_after(30):
            await register_meters(gateway.ledger, ((a, k.public_key) for a, k in meter_keys.items()), clock.now_ms(),
                                  {k.public_key: EXPORT_W for k in meter_keys.values()})
        await wait_until(lambda: all(n.ledger.state.height == gateway.ledger.state.height for n in nodes))

        zone, slot = seller.zone, open_slot(seller)
        async with rpc_client(seller) as seller_rpc, rpc_client(buyer) as buyer_rpc:
            await seller_rpc.call(calls.order_place(zone, slot, Side.SELL, SOLD_WH, PRICE, green=True,
                                                    source=Source.PV))
            await wait_until(lambda: buyer.trading.books.book(slot).best_ask() == PRICE)
            execution = await buyer_rpc.call(calls.trade_execute(zone, slot, Side.BUY, SOLD_WH, None))
            value = trade_value(SOLD_WH, PRICE)
            assert execution.value_uc == value

            # Before any meter entry: provisional, every traded Wh undelivered.
            provisional = await poll(lambda: seller_rpc.call(calls.settlement_get(slot)), lambda s: s.contracted_wh)
            assert (provisional.settled, provisional.contracted_wh, provisional.metered_wh,
                    provisional.imbalance_wh, provisional.trade_value_uc, provisional.imbalance_value_uc) == (
                False, -SOLD_WH, 0, SOLD_WH, -value, trade_value(SOLD_WH, retail))

            # The seller exports 500 Wh of 800 Wh generated (PV); the buyer imports 700 Wh.
            energy = {seller.key.public_key: (0, 500, 800, Source.PV), buyer.key.public_key: (700, 0, 0, Source.NONE)}
            meters = [MeterService(n.ledger, meter_keys[n.key.public_key], rules,
                                   lambda s, a=n.key.public_key: energy[a] if s == slot else None, clock.now_ms,
                                   poll_s=0.05) for n in (seller, buyer)]
            async with buyer_rpc.open_websocket() as ws, ws.subscribe("settlements") as settlements:
                async with trio.open_nursery() as nursery:
                    for meter in meters:
                        await nursery.start(meter.run)
                    clock.jump_to(rules.slot_end_ms(slot) + 10_000)
                    await wait_until(lambda: all(m.submitted == [slot] for m in meters))
                    # The gateway settles it once W (its certification bound) has passed after the due.
                    clock.jump_to(rules.metering_due_ms(slot) + DEFAULT_SETTLE_DELAY_MS + 1_000)
                    streamed = await next_event(settlements)
                    nursery.cancel_scope.cancel()

            # Each side delivered 100 Wh less than contracted: 100 Wh at the retail price each.
            shortfall = trade_value(100, retail)
            assert streamed == await buyer_rpc.call(calls.settlement_get(slot))
            assert (streamed.slot, streamed.account, streamed.settled) == (slot, buyer.key.public_key, True)
            assert (streamed.contracted_wh, streamed.metered_wh, streamed.imbalance_wh,
                    streamed.trade_value_uc, streamed.imbalance_value_uc) == (SOLD_WH, 700, 100, value, shortfall)
            sold = await poll(lambda: seller_rpc.call(calls.settlement_get(slot)), lambda s: s.settled)
            assert (sold.settled, sold.contracted_wh, sold.metered_wh, sold.imbalance_wh,
                    sold.trade_value_uc, sold.imbalance_value_uc) == (True, -SOLD_WH, -500, 100, -value, shortfall)
            assert dashboard_readings(seller) == (None, sold)
            await poll(lambda: seller_rpc.call(calls.ledger_balance(buyer.key.public_key)),
                       lambda b: b.balance_uc == FUNDS_UC - value - shortfall)

            # 800 Wh issued to the seller; the 500 Wh delivered moved to the buyer, who retired them.
            (reading,) = [m for m in meter_entries_for_slot(seller.ledger.state, slot)
                          if m.account == seller.key.public_key]
            (held,) = await seller_rpc.call(calls.certs_list(seller.key.public_key))
            (retired,) = await seller_rpc.call(calls.certs_list(buyer.key.public_key))
            assert (held.owner, held.slot, held.qty_wh, held.source, held.status, held.meter_entry) == (
                seller.key.public_key, slot, 300, Source.PV, CertificateStatus.ACTIVE, reading.entry_hash)
            assert (retired.owner, retired.qty_wh, retired.status, retired.meter_entry) == (
                buyer.key.public_key, 500, CertificateStatus.RETIRED, reading.entry_hash)
            assert held.cert_id != retired.cert_id
            assert await buyer_rpc.call(calls.certs_list(buyer.key.public_key)) == [retired]


PLAIN_NODE, DEVICE_NODE, AGENT_NODE = 1, 2, 3
BASE_LOAD_W = 600
CAPACITY_WH = 10_000
DEVICES = {"devices.base_load_w": BASE_LOAD_W, "devices.sample_period_ms": 200,
           "devices.battery": {"capacity_wh": CAPACITY_WH, "max_charge_w": 3000, "max_discharge_w": 3000,
                               "initial_soc": 0.5}}


async def test_device_nodes_serve_telemetry_a_telemetry_stream_and_forecasts(tmp_path):
    """Node 3 runs the agent (its forecasts are the agent's); node 2 has the same devices and no
    agent (the API runs the gates itself); node 1 has no devices."""
    clock = OffsetClock()
    # Start just after a slot starts, so no slot ends on its own while the test runs.
    clock.jump_to((clock.now_ms() // 900_000 + 1) * 900_000 + 1_000)
    overrides = {DEVICE_NODE: DEVICES, AGENT_NODE: {**DEVICES, "agent.strategy": "agent"}}
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(PLAIN_NODE, DEVICE_NODE, AGENT_NODE), funds_uc=FUNDS_UC,
                                 clock=clock, node_overrides=overrides) as nodes:
        agent_node = nodes[AGENT_NODE]
        rules = agent_node.config.zone.slot_rules
        async with rpc_client(agent_node) as rpc, rpc_client(nodes[PLAIN_NODE]) as plain_rpc, \
                rpc_client(nodes[DEVICE_NODE]) as device_rpc:
            for no_devices in (calls.telemetry_get(), calls.forecast_get(2)):
                with pytest.raises(RpcCallError) as refused:
                    await plain_rpc.call(no_devices)
                assert refused.value.code == codes.NOT_AVAILABLE and "no device service" in refused.value.message

            before = clock.now_ms()
            reading = await ok_call(rpc, calls.telemetry_get())
            assert before - 5_000 <= reading.at_ms <= clock.now_ms()
            # (``stale`` is not asserted: a loaded test machine may let a 200 ms sampler fall behind.)
            assert (reading.capacity_wh, reading.pv_w) == (CAPACITY_WH, 0)
            assert 1_000 <= reading.soc_wh <= 9_500            # within the battery's SoC band
            # The meter sees what the site balances: load + charging − PV (± rounding of each).
            assert abs(reading.grid_w - (reading.load_w + reading.battery_w - reading.pv_w)) <= 3
            assert abs(reading.load_w - BASE_LOAD_W) <= 1

            shown, no_settlement = dashboard_readings(agent_node)
            assert shown is not None and shown.capacity_wh == CAPACITY_WH and no_settlement is None

            async with rpc.open_websocket() as ws, ws.subscribe("telemetry") as telemetry:
                first = await next_event(telemetry)
                second = await next_event(telemetry)
                assert first.at_ms < second.at_ms and second.capacity_wh == CAPACITY_WH

            # Nothing measured yet: the current load held constant over the next slots.
            now_slot = rules.slot_of(clock.now_ms())
            for client in (rpc, device_rpc):
                forecast = await ok_call(client, calls.forecast_get(4))
                assert [p.slot for p in forecast.points] == [now_slot + k * 900 for k in range(4)]
                assert all((p.pv_wh, p.load_wh) == (0, BASE_LOAD_W // 4) for p in forecast.points)
                assert forecast.made_ms >= before

            # The slot ends: the device services measure it, the gates learn it (the agent's at its
            # next tick, the API's own at the next call), and forecasts are made from it.
            clock.jump_to(rules.slot_end_ms(now_slot) + 1_000)
            for client in (rpc, device_rpc):
                measured = await poll(lambda: client.call(calls.forecast_get(3)),
                                      lambda f: f.made_ms == rules.slot_end_ms(now_slot), timeout_s=30)
                assert [p.slot for p in measured.points] == [now_slot + 900 + k * 900 for k in range(3)]
                assert all(abs(p.load_wh - BASE_LOAD_W // 4) <= 2 and p.pv_wh == 0 for p in measured.points)
