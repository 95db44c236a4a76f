"""Nodes meter their own slots from their devices; the gateway registers the meters from its config
and settles every slot — a small community of real ``Node``s over the in-memory transport.

Slots are 2 s long on the system clock (gate 1 s, grace 3 s, the gateway's W 0.5 s), so a few
slots pass in a test.
Each node's simulated site is driven by a constant series (Wh per slot): the seller generates
3000 Wh of PV against a 1000 Wh load (exports 2000), the buyer and the idle node only consume.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import trio
import trio_asyncio

from p2pgrid.clock import SystemClock
from p2pgrid.config import build_config
from p2pgrid.devices.service import has_devices
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import cluster_keys, wait_until
from p2pgrid.node.app import Node, close_ledger_store
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.gateway import GatewayMeterRegistrar
from p2pgrid.settlement.node_service import MeterNodeService, metered_of
from p2pgrid.settlement.entries import (
    certificates_of, meter_entries_for_slot, meter_registration_of, settled_slots, settlement_of,
)
from p2pgrid.devices.telemetry_store import SlotTelemetry
from p2pgrid.settlement.metering import decode_meter_reading
from p2pgrid.settlement.service import load_or_create_meter_key
from p2pgrid.wire import Side, Source

SLOT_S, GATE_S, GRACE_S = 2, 1, 3
CREDITS = 50_000_000
EXPORT_W = 10_000_000
RETAIL, FEED_IN = 300_000, 80_000
SITES = {                      # Wh per slot: load, pv (kWp big enough not to clip 3000 Wh per 4 s)
    "gateway": (0, 0),
    "seller": (1000, 3000),
    "buyer": (1500, 0),
    "idle": (500, 0),
}
NAMES = tuple(SITES)


def write_site(data_dir: Path, load_wh: int, pv_wh: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (data_dir / "site.json").write_text(json.dumps({"load": [load_wh], "pv": [pv_wh]}))


def node_config(root: Path, name: str, keys, meters: dict[str, str]):
    i = NAMES.index(name)
    gateway = keys[0].public_key.hex()
    raw = {
        "node": {"data_dir": str(root / name), "name": name},
        "zone": {"id": "meterzone", "gateway_account": gateway,
                 "slots": {"length_s": SLOT_S, "horizon_s": 3600, "gate_s": GATE_S, "grace_s": GRACE_S},
                 "tariffs": {"retail_price": RETAIL, "feed_in_price": FEED_IN},
                 "validators": [{"public_key": k.public_key.hex(), "address": f"memory/{k.public_key.hex()}"}
                                for k in keys]},
        "network": {"publish_interval_ms": 50},
        "agent": {"strategy": "none"},    # the test places every order itself (the default would run the agent)
        "devices": {"series_file": "site.json", "series_start_s": 0, "sample_period_ms": 50,
                    "meter": {"key_file": "meter.key"}},
    }
    if SITES[name][1]:
        raw["devices"]["pv"] = {"kwp": 10_000.0}
    if i == 0:
        # W = 0.5 s: on a 2 s slot clock the default 30 s would hold every settlement back.
        raw["gateway"] = {"fund_uc": CREDITS, "fund_accounts": [k.public_key.hex() for k in keys[1:]],
                          # export_w: the sites' 10 MWp (order admission: 5555 Wh per 2 s slot).
                          "meters": [{"account": a, "meter_key": m, "export_w": EXPORT_W} for a, m in meters.items()],
                          "settle_delay_ms": 500}
    return build_config(raw, base_dir=root)


class Community:
    """Four real nodes on one memory network; each can be stopped and started again on its data dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = cluster_keys(len(NAMES), seed=11)
        self.network = MemoryNetwork()
        self.nodes: dict[str, Node] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._finished: dict[str, trio.Event] = {}
        meters = {}
        for name, key in zip(NAMES, self.keys):
            write_site(root / name, *SITES[name])
            if name != "gateway":
                meters[key.public_key.hex()] = load_or_create_meter_key(root / name).public_key.hex()
        self.configs = {name: node_config(root, name, self.keys, meters) for name in NAMES}

    async def start(self, nursery: trio.Nursery, name: str) -> Node:
        await nursery.start(self._run, name)
        return self.nodes[name]

    async def _run(self, name: str, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        key = self.keys[NAMES.index(name)]
        self._finished[name] = done = trio.Event()
        node = None
        try:
            with trio.CancelScope() as self._scopes[name]:
                others = tuple(a for a in self.network.addresses if a != f"memory/{key.public_key.hex()}")
                async with self.network.open_transport(key, connect_to=others) as transport:
                    node = Node(self.configs[name], key, SystemClock(), transport)
                    async with trio.open_nursery() as inner:
                        await inner.start(node.run)
                        self.nodes[name] = node
                        task_status.started()
        finally:
            if node is not None:
                await close_ledger_store(node)
            done.set()

    async def stop(self, name: str) -> None:
        self._scopes[name].cancel()
        await self._finished[name].wait()
        del self.nodes[name]

    def account(self, name: str) -> bytes:
        return self.keys[NAMES.index(name)].public_key


def service_of(node: Node, kind: type):
    return next(s for s in node.services if isinstance(s, kind))


async def converge(nodes) -> None:
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({state_root(n.ledger.state) for n in nodes}) == 1, 0.02)


async def started_metering(community: Community) -> None:
    with trio.fail_after(30):
        for name in NAMES[1:]:
            node = community.nodes[name]
            await service_of(node, MeterNodeService).started.wait()
            await wait_until(lambda: node.ledger.state.balance(node.key.public_key) == CREDITS, 0.02)


def readings_of(node: Node, account: bytes) -> list:
    state = node.ledger.state
    return [r.reading for k, r in sorted(state.extra.items()) if k.startswith(f"meter/{account.hex()}/")]


@pytest.mark.slow
async def test_nodes_trade_meter_their_devices_and_the_gateway_registers_and_settles_every_slot(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="p2pgrid.settlement.node_service")
    community = Community(tmp_path)
    rules = community.configs["gateway"].zone.slot_rules
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        for name in NAMES:
            await community.start(nursery, name)
        nodes = community.nodes
        gateway, seller, buyer = nodes["gateway"], nodes["seller"], nodes["buyer"]
        registrar = service_of(gateway, GatewayMeterRegistrar)
        with trio.fail_after(30):
            await registrar.done.wait()
        meter_keys = [m.meter_key for m in community.configs["gateway"].gateway.meters]
        assert len(meter_keys) == 3
        assert all(meter_registration_of(gateway.ledger.state, bytes.fromhex(k)) for k in meter_keys)
        await started_metering(community)
        # The gateway is the grid: it meters nothing.
        assert not any(isinstance(s, MeterNodeService) and s.meter for s in gateway.services)
        # Each metered node says from which slot it meters, once its meter is registered.
        starts = [re.search(r"metering from slot \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \((\d+)\)", r.getMessage())
                  for r in caplog.records if "metering from slot" in r.getMessage()]
        assert len(starts) == 3 and all(m is not None and int(m.group(1)) % SLOT_S == 0 for m in starts)

        slot = rules.tradable_slots(SystemClock().now_ms())[1]   # trading for it closes 2-4 s from now
        seller.trading.place_order(Side.SELL, 1200, 200_000, slot, green=True, source=Source.PV)
        with trio.fail_after(10):
            await wait_until(lambda: len(buyer.trading.books.book(slot)) >= 1, 0.02)
        report = await buyer.trading.execute(Side.BUY, 1000, slot, limit_price=250_000)
        assert report.problems == () and report.filled_wh == 1000

        # Settled over the three meters' readings (one certified after the gateway's first settle
        # of the slot, on a busy machine, is taken in by a reconciliation settle).
        metered = {community.account(name) for name in ("seller", "buyer", "idle")}
        with trio.fail_after(60):
            await wait_until(lambda: all((s := settlement_of(n.ledger.state, slot)) is not None
                                         and metered <= {m.account for m in s.meter_entries}
                                         for n in nodes.values()), 0.05)
        await converge(list(nodes.values()))
        state = gateway.ledger.state
        settled = settlement_of(state, slot)
        by_account = {m.account: m for m in meter_entries_for_slot(state, slot)}
        seller_meter = by_account[community.account("seller")]
        assert abs(seller_meter.export_wh - 2000) <= 2 and seller_meter.import_wh == 0
        assert abs(seller_meter.green_wh - 3000) <= 2 and seller_meter.green_source is Source.PV
        assert abs(by_account[community.account("buyer")].import_wh - 1500) <= 2
        assert abs(by_account[community.account("idle")].import_wh - 500) <= 2
        assert community.account("gateway") not in by_account
        assert settled.delivery(report.executions[0].take_id).delivered_wh == 1000
        certs = certificates_of(state, slot)
        assert total_wh(certs.issued) == seller_meter.green_wh
        assert total_wh(certs.retired_by(community.account("buyer"))) == 1000
        assert all(n.ledger.state.money_total() == 0 for n in nodes.values())
        # Every slot metered since the meters were registered, up to the traded one, is settled.
        metered_slots = {r.slot for r in readings_of(gateway, community.account("idle"))}
        assert slot in metered_slots
        assert {s for s in metered_slots if s <= slot} <= set(settled_slots(state))
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_meter_counters_continue_monotone_and_telemetry_is_kept_across_a_node_restart(tmp_path):
    community = Community(tmp_path)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        for name in NAMES:
            await community.start(nursery, name)
        await started_metering(community)
        buyer_account = community.account("buyer")
        gateway = community.nodes["gateway"]
        with trio.fail_after(30):
            await wait_until(lambda: len(readings_of(gateway, buyer_account)) >= 1, 0.05)
        before = readings_of(community.nodes["buyer"], buyer_account)
        slots_before = dict(community.nodes["buyer"].telemetry.slots)
        await community.stop("buyer")

        buyer = await community.start(nursery, "buyer")
        # The restarted device service reloaded its history from telemetry.sqlite.
        assert {s: slots_before[s] for s in slots_before} == {s: buyer.telemetry.slots[s] for s in slots_before}
        with trio.fail_after(30):
            await wait_until(lambda: len(readings_of(gateway, buyer_account)) >= len(before) + 1, 0.05)
        readings = readings_of(gateway, buyer_account)
        assert [r.slot for r in readings] == sorted({r.slot for r in readings})
        for previous, reading in zip(readings, readings[1:]):
            assert reading.import_start_wh == previous.import_total_wh      # no gap, never backwards
            assert reading.import_total_wh >= previous.import_total_wh
        first_after = readings[len(before)]
        assert first_after.import_start_wh == before[-1].import_total_wh > 0
        nursery.cancel_scope.cancel()


def test_a_slot_is_reported_only_when_complete_and_pv_is_its_green_energy():
    assert metered_of(None) is None
    assert metered_of(SlotTelemetry(0, 10, 0, 10.0, 0.0, complete=False)) is None
    assert metered_of(SlotTelemetry(0, 10, 0, 10.0, 0.0, complete=True)) == (10, 0, 0, Source.NONE)
    assert metered_of(SlotTelemetry(0, 0, 900, 100.0, 999.6, complete=True)) == (0, 900, 1000, Source.PV)


def test_devices_run_on_nodes_that_have_them_whatever_the_strategy(tmp_path):
    base = {"node": {"data_dir": str(tmp_path)}}
    assert not has_devices(build_config(base, base_dir=tmp_path))
    assert has_devices(build_config({**base, "agent": {"strategy": "agent"}}, base_dir=tmp_path))
    assert has_devices(build_config({**base, "agent": {"strategy": "profile"},
                                     "devices": {"series_file": "site.json"}}, base_dir=tmp_path))
    assert has_devices(build_config({**base, "devices": {"pv": {"kwp": 4.0}}}, base_dir=tmp_path))


def test_gateway_meter_registrations_are_checked_in_the_config(tmp_path):
    from p2pgrid.errors import ConfigError

    base = {"node": {"data_dir": str(tmp_path)}}
    same = {"account": "a" * 64, "meter_key": "a" * 64}
    with pytest.raises(ConfigError, match="gateway.meters"):
        build_config({**base, "gateway": {"meters": [same]}}, base_dir=tmp_path)
    twice = [{"account": "a" * 64, "meter_key": "b" * 64}, {"account": "c" * 64, "meter_key": "b" * 64}]
    with pytest.raises(ConfigError, match="listed twice"):
        build_config({**base, "gateway": {"meters": twice}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="meter_key"):
        build_config({**base, "gateway": {"meters": [{"account": "a" * 64, "meter_key": "xyz"}]}}, base_dir=tmp_path)


def test_the_gateways_settle_delay_w_is_a_config_field_in_market_ms(tmp_path):
    from p2pgrid.errors import ConfigError
    from p2pgrid.settlement.service import DEFAULT_SETTLE_DELAY_MS

    base = {"node": {"data_dir": str(tmp_path)}}
    assert build_config(base, base_dir=tmp_path).gateway.settle_delay_ms == DEFAULT_SETTLE_DELAY_MS == 30_000
    assert build_config({**base, "gateway": {"settle_delay_ms": 0}}, base_dir=tmp_path).gateway.settle_delay_ms == 0
    with pytest.raises(ConfigError, match="settle_delay_ms"):
        build_config({**base, "gateway": {"settle_delay_ms": -1}}, base_dir=tmp_path)


class RecordingLedger:
    """Takes every submitted entry (no committee): what ``MeterService`` uses of a ledger."""

    def __init__(self, me: bytes) -> None:
        from p2pgrid.ledger.chain import LedgerState

        self.me, self.state, self.submitted = me, LedgerState(), []
        self.rules = type("Rules", (), {"zone": "meterzone"})()

    def is_in_doubt(self, entry):
        return False

    def in_doubt_entries(self):
        return []

    def next_entry(self, kind, body):
        return (kind, body)

    async def submit(self, entry):
        self.submitted.append(entry)


async def test_meter_service_waits_for_the_slot_to_close_and_its_turn_and_reads_until_the_due():
    from p2pgrid.identity import NodeKey
    from p2pgrid.settlement.service import MeterService
    from p2pgrid.units import SlotRules

    rules = SlotRules(length_s=900, horizon_s=86400, gate_s=300, grace_s=300)
    slot = 1_800_000_000 // 900 * 900
    now = [slot * 1000]
    closed: set[int] = set()
    ledger = RecordingLedger(cluster_keys(1, seed=3)[0].public_key)
    meter = MeterService(ledger, NodeKey.generate(), rules, lambda s: (100, 0, 0, Source.NONE), lambda: now[0],
                         is_closed=lambda s: s in closed, delay_ms=20_000,
                         until_ms=rules.metering_due_ms(slot + 1800))
    end = rules.slot_end_ms(slot)
    now[0] = end + 10_000                       # ended, closed, but not its turn yet
    closed.add(slot)
    assert await meter.meter_due() == []
    now[0] = end + 30_000
    assert await meter.meter_due() == [slot]
    now[0] = rules.slot_end_ms(slot + 900) + 30_000
    assert await meter.meter_due() == []         # its turn, but the device has not closed it yet
    now[0] = rules.metering_due_ms(slot + 900) - 1
    closed.add(slot + 900)
    # No margin before the due: validators judge the reading's own signed time, not their clocks.
    assert await meter.meter_due() == [slot + 900]
    now[0] = rules.metering_due_ms(slot + 1800)  # never closed before its due: not read at all
    assert await meter.meter_due() == [] and meter.skipped_late == [slot + 1800]
    now[0] = rules.slot_end_ms(slot + 2700) + 30_000
    closed.add(slot + 2700)
    assert await meter.meter_due() == []         # due after until_ms: metering has ended
    assert meter.submitted == [slot, slot + 900] and len(ledger.submitted) == 2
    created = [decode_meter_reading(body.reading).body.created_ms for _, body in ledger.submitted]
    assert created == [end + 30_000, rules.metering_due_ms(slot + 900) - 1]


async def test_meter_service_started_late_reads_the_slots_since_the_node_started_that_are_not_due_yet():
    """Metering waits for the meter's registration; the slots that ended meanwhile are still read
    when metering starts, unless their due has passed (then they settle without a reading)."""
    from p2pgrid.identity import NodeKey
    from p2pgrid.settlement.service import MeterService
    from p2pgrid.units import SlotRules

    rules = SlotRules(length_s=900, horizon_s=86400, gate_s=300, grace_s=1800)
    started = 1_800_000_000 // 900 * 900
    # The registration arrived three slots after the start: the start slot is past its due, the
    # next two are not.
    now = [rules.slot_end_ms(started + 1800) + 1]
    ledger = RecordingLedger(cluster_keys(1, seed=4)[0].public_key)
    meter = MeterService(ledger, NodeKey.generate(), rules, lambda s: (100, 0, 0, Source.NONE), lambda: now[0],
                         first_slot=started)
    assert await meter.meter_due() == [started + 900, started + 1800]
    assert meter.skipped_late == [started]
    registered_at_start = MeterService(ledger, NodeKey.generate(), rules, lambda s: (100, 0, 0, Source.NONE),
                                       lambda: now[0])
    assert registered_at_start.next_slot == started + 2700     # without first_slot: from the slot in progress


def test_the_gateway_registers_meters_only_after_its_funding(tmp_path):
    from p2pgrid.settlement.gateway import GatewayFunder, gateway_services

    keys = cluster_keys(3, seed=5)
    raw = {"node": {"data_dir": str(tmp_path)}, "zone": {"gateway_account": keys[0].public_key.hex()},
           "gateway": {"meters": [{"account": keys[1].public_key.hex(), "meter_key": keys[2].public_key.hex()}]}}
    (registrar,) = gateway_services(build_config(raw, base_dir=tmp_path))
    assert isinstance(registrar, GatewayMeterRegistrar) and registrar.after is None
    raw["gateway"]["fund_accounts"] = [keys[1].public_key.hex()]
    funder, registrar = gateway_services(build_config(raw, base_dir=tmp_path))
    assert isinstance(funder, GatewayFunder) and registrar.after is funder.done


async def test_a_settlement_too_large_for_one_entry_is_left_unsettled_and_the_gateway_carries_on(monkeypatch):
    from p2pgrid.errors import DecodeError
    from p2pgrid.settlement import service as settlement_service
    from p2pgrid.settlement.entries import SettlementLedgerRules, SlotInputs
    from p2pgrid.settlement.rules import ImbalancePrices

    class OversizeLedger(RecordingLedger):
        def next_entry(self, kind, body):
            raise DecodeError("Entry.body: longer than 1536 bytes")

    monkeypatch.setattr(settlement_service, "has_meters", lambda state: True)
    monkeypatch.setattr(settlement_service, "inputs_by_slot",
                        lambda state, rules: {900: SlotInputs(meters=frozenset({b"m" * 32}))})
    monkeypatch.setattr(settlement_service, "plan_settlement", lambda state, rules, slot, inputs: ("settle", object()))
    ledger = OversizeLedger(cluster_keys(1, seed=4)[0].public_key)
    ledger.rules = SettlementLedgerRules("meterzone", b"g" * 32, prices=ImbalancePrices(300_000, 80_000))
    settler = settlement_service.SettlementService(ledger, lambda: 10_000_000)
    assert await settler.settle_due() == []
    assert settler.too_large == {900} and settler.settled == [] and ledger.submitted == []
    assert await settler.settle_due() == []      # not tried again


def test_a_refused_mint_is_retried_as_the_same_entry_until_another_entry_takes_its_seq():
    from p2pgrid.ledger.messages import entry_hash
    from p2pgrid.settlement.gateway import _superseded

    mint = type("Signed", (), {})()
    mint.body = type("Entry", (), {"seq": 3})()
    mint.encoded = b"mint at seq 3"
    assert not _superseded([mint], {0: b"a", 1: b"b"})                # seq 3 still open
    assert not _superseded([mint], {3: entry_hash(mint)})             # it is the entry certified there
    assert _superseded([mint], {3: b"another entry's hash"})          # the chain went another way
