"""How ``LiveNodeApi`` turns the node's derived state into RPC values, without a cluster: settlement
lines in the API's signs, certificate ranges, telemetry signs, forecasts from measured slots, and
the refusals of a node that lacks the part a read needs."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from p2pgrid.cli.dashboard import render_node_dashboard

from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config
from p2pgrid.devices.api import NoReadingYet, telemetry_view
from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.readings import BatteryReading, LoadReading, MeterReading, PvReading
from p2pgrid.devices.service import DeviceService, SlotTelemetry
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LedgerState
from p2pgrid.node.api import LiveNodeApi, TelemetryForecasts
from p2pgrid.node.status import NodeStatus
from p2pgrid.rpc.api import CertificateStatus, SlotSettlement, Telemetry
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.settlement.api import NotASlot, certificate_id, certificate_views, settlement_view
from p2pgrid.settlement.certificates import certify_slot
from p2pgrid.settlement.entries import certificates_key
from p2pgrid.settlement.rules import MeterEntry, TradeRecord, ZoneTariffs, settle_slot
from p2pgrid.units import trade_value
from p2pgrid.wire import Source

SLOT = 1_800_000_000 - 1_800_000_000 % 900
GATEWAY = b"\xee" * 32
SELLER, BUYER, OUTSIDER = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
ACCOUNTS = (SELLER, BUYER, OUTSIDER, b"\x04" * 32)
RETAIL, FEED_IN = 300_000, 80_000
TARIFFS = ZoneTariffs(GATEWAY, RETAIL, FEED_IN)


def trade(n: int, seller: bytes, buyer: bytes, qty_wh: int, price: int, green: bool = False) -> TradeRecord:
    return TradeRecord(n.to_bytes(16, "big"), SLOT, seller, buyer, "z", "z", qty_wh, price, green)


def meter(account: bytes, import_wh: int = 0, export_wh: int = 0, green_wh: int = 0) -> MeterEntry:
    return MeterEntry(account, "z", SLOT, import_wh, export_wh, green_wh, Source.PV if green_wh else Source.NONE,
                      entry_hash=account[:1] * 32)


# --- settlement ---------------------------------------------------------------------------------

def test_a_short_seller_and_an_over_importing_buyer_each_pay_their_100_wh_at_retail():
    settled = settle_slot(SLOT, [trade(1, SELLER, BUYER, 600, 200_000)],
                          [meter(SELLER, export_wh=500), meter(BUYER, import_wh=700)], TARIFFS)
    value, shortfall = trade_value(600, 200_000), trade_value(100, RETAIL)
    assert settlement_view(settled, SELLER, final=True) == SlotSettlement(
        SLOT, SELLER, contracted_wh=-600, metered_wh=-500, imbalance_wh=100, trade_value_uc=-value,
        imbalance_value_uc=shortfall, settled=True)
    assert settlement_view(settled, BUYER, final=False) == SlotSettlement(
        SLOT, BUYER, contracted_wh=600, metered_wh=700, imbalance_wh=100, trade_value_uc=value,
        imbalance_value_uc=shortfall, settled=False)


def test_an_account_not_in_the_slot_reads_zeros():
    settled = settle_slot(SLOT, [trade(1, SELLER, BUYER, 600, 200_000)], [], TARIFFS)
    assert settlement_view(settled, OUTSIDER, final=True) == SlotSettlement(SLOT, OUTSIDER, 0, 0, 0, 0, 0, True)


def test_surplus_export_is_received_at_feed_in_as_a_negative_imbalance_value():
    settled = settle_slot(SLOT, [], [meter(SELLER, export_wh=1000)], TARIFFS)
    view = settlement_view(settled, SELLER, final=True)
    assert (view.metered_wh, view.imbalance_wh, view.imbalance_value_uc) == (-1000, -1000, -trade_value(1000, FEED_IN))


@st.composite
def slots(draw: st.DrawFn) -> tuple[list[TradeRecord], list[MeterEntry]]:
    trades = []
    for i in range(draw(st.integers(0, 8))):
        seller, buyer = draw(st.lists(st.sampled_from(ACCOUNTS), min_size=2, max_size=2, unique=True))
        trades.append(trade(i, seller, buyer, draw(st.integers(1, 5_000)), draw(st.integers(0, 400_000)),
                            draw(st.booleans())))
    metered = draw(st.lists(st.sampled_from(ACCOUNTS), unique=True))
    meters = [meter(a, draw(st.integers(0, 6_000)), draw(st.integers(0, 6_000)), draw(st.integers(0, 6_000)))
              for a in metered]
    return trades, meters


@settings(max_examples=150, deadline=None)
@given(slots())
def test_the_views_of_every_account_conserve_money_and_energy_signs(inputs):
    trades, meters = inputs
    settled = settle_slot(SLOT, trades, meters, TARIFFS)
    views = [settlement_view(settled, line.account, final=True) for line in settled.lines]
    assert sum(v.trade_value_uc + v.imbalance_value_uc for v in views) == 0      # gateway included
    assert sum(v.trade_value_uc for v in views) == 0 == sum(v.contracted_wh for v in views)
    for view, line in zip(views, settled.lines):
        assert view.imbalance_wh == view.metered_wh - view.contracted_wh
        assert view.trade_value_uc + view.imbalance_value_uc == -line.net_uc


# --- certificates -------------------------------------------------------------------------------

def test_certificates_list_the_units_an_account_holds_and_those_it_retired():
    settled = settle_slot(SLOT, [trade(1, SELLER, BUYER, 600, 200_000, green=True)],
                          [meter(SELLER, export_wh=500, green_wh=800), meter(BUYER, import_wh=300)], TARIFFS)
    state = LedgerState()
    state.certificates[certificates_key(SLOT)] = certify_slot(settled)
    held = certificate_views(state, SELLER)
    bought = certificate_views(state, BUYER)
    assert [(c.owner, c.slot, c.qty_wh, c.source, c.status, c.meter_entry) for c in held] == [
        (SELLER, SLOT, 300, Source.PV, CertificateStatus.ACTIVE, SELLER[:1] * 32)]
    # 500 Wh delivered moved to the buyer, who consumed 300 Wh of it: 300 retired, 200 held.
    assert sorted((c.status, c.qty_wh) for c in bought) == [(CertificateStatus.ACTIVE, 200),
                                                           (CertificateStatus.RETIRED, 300)]
    assert len({c.cert_id for c in held + bought}) == 3 and all(len(c.cert_id) == 16 for c in held + bought)
    assert certificate_views(state, OUTSIDER) == []


def test_a_certificate_id_names_one_unit_range_of_one_meter_entry():
    certs = certify_slot(settle_slot(SLOT, [], [meter(SELLER, green_wh=10), meter(BUYER, green_wh=10)], TARIFFS))
    (a,), (b,) = certs.holdings_of(SELLER), certs.holdings_of(BUYER)
    assert certificate_id(a) != certificate_id(b) and certificate_id(a) == certificate_id(a)


# --- telemetry ----------------------------------------------------------------------------------

class FakeDevices:
    def __init__(self, readings, stale=()):
        self.readings, self.stale = readings, set(stale)

    def reading(self, kind):
        return self.readings.get(kind)

    def stale_devices(self, now_ms=None):
        return self.stale


def battery(t_ms: int, power_w: float) -> BatteryReading:
    return BatteryReading(t_ms, power_w, soc_pct=40.0, capacity_wh=10_000, max_charge_w=3000, max_discharge_w=3000)


def test_telemetry_turns_a_discharging_battery_into_negative_battery_w_and_reads_the_meter():
    devices = FakeDevices({DeviceKind.BATTERY: battery(1_000, 800.0), DeviceKind.LOAD: LoadReading(1_200, 500.4),
                           DeviceKind.PV: PvReading(1_100, 1_500.0, 0, 5_000.0),
                           DeviceKind.METER: MeterReading(1_150, -1_799.6, 0, 0)}, stale={"pv"})
    view = telemetry_view(devices, 2_000)
    assert (view.at_ms, view.pv_w, view.load_w, view.battery_w, view.grid_w) == (1_200, 1_500, 500, -800, -1_800)
    assert (view.soc_wh, view.capacity_wh, view.stale) == (4_000, 10_000, ("pv",))


def test_telemetry_without_a_meter_balances_the_site_and_without_a_battery_has_no_capacity():
    devices = FakeDevices({DeviceKind.LOAD: LoadReading(5, 700.0), DeviceKind.PV: PvReading(5, 200.0, 0, 5_000.0)})
    view = telemetry_view(devices, 10)
    assert (view.grid_w, view.battery_w, view.soc_wh, view.capacity_wh, view.stale) == (500, 0, 0, 0, ())


def test_telemetry_before_any_reading_is_a_transient_device_error():
    with pytest.raises(NoReadingYet):
        telemetry_view(FakeDevices({}), 0)


# --- the API over a node without a cluster ---------------------------------------------------------

def fake_node(tmp_path, *, telemetry=None, services=(), now_ms=SLOT * 1000 + 60_000, agent=None):
    config = build_config({"node": {"data_dir": str(tmp_path)}, "devices": {"base_load_w": 400}}, base_dir=tmp_path)
    return SimpleNamespace(config=config, clock=ManualClock(now_ms), key=NodeKey.generate(), telemetry=telemetry,
                           services=list(services), agent=agent, ledger=None, trading=None, zone=config.zone.id)


def measured(slot: int, load_wh: float, pv_wh: float) -> SlotTelemetry:
    return SlotTelemetry(slot, 0, 0, load_wh, pv_wh, True)


async def test_a_node_without_devices_or_ledger_refuses_these_reads_as_not_available(tmp_path):
    api = LiveNodeApi(fake_node(tmp_path))
    for read in (api.telemetry(), api.forecast(4), api.settlement(SLOT), api.certificates(SELLER)):
        with pytest.raises(NotAvailable):
            await read


async def test_a_node_whose_device_service_is_starting_answers_no_reading_yet(tmp_path):
    api = LiveNodeApi(fake_node(tmp_path, services=[DeviceService()]))
    with pytest.raises(NoReadingYet, match="starting"):
        await api.telemetry()


async def test_forecast_before_any_measured_slot_holds_the_base_load_from_the_current_slot(tmp_path):
    node = fake_node(tmp_path, telemetry=DeviceService())
    forecast = await LiveNodeApi(node).forecast(3)
    assert forecast.made_ms == node.clock.now_ms()
    assert [(p.slot, p.pv_wh, p.load_wh) for p in forecast.points] == [(SLOT + k * 900, 0, 100) for k in range(3)]


async def test_forecast_without_an_agent_runs_the_gates_over_measured_slots_and_fills_gaps(tmp_path):
    devices = DeviceService()
    node = fake_node(tmp_path, telemetry=devices, now_ms=(SLOT + 4 * 900) * 1000 + 5)
    api = LiveNodeApi(node)
    devices.slots = {SLOT: measured(SLOT, 250.0, 40.0), SLOT + 900: measured(SLOT + 900, 250.0, 40.0)}
    first = await api.forecast(2)
    assert first.made_ms == (SLOT + 1800) * 1000
    assert [(p.slot, p.load_wh, p.pv_wh) for p in first.points] == [(SLOT + 3600, 250, 40), (SLOT + 4500, 250, 40)]
    # Slot +2 was never measured: it repeats slot +1; slot +3 is new.
    devices.slots[SLOT + 2700] = measured(SLOT + 2700, 250.0, 40.0)
    second = await api.forecast(1)
    assert second.made_ms == (SLOT + 3600) * 1000
    assert api._own_forecasts is not None and api._own_forecasts.load.history == [250.0] * 4


def test_telemetry_forecasts_ignore_slots_already_seen():
    forecasts = TelemetryForecasts(900, 4)
    forecasts.update([measured(SLOT, 100.0, 0.0)])
    forecasts.update([measured(SLOT, 100.0, 0.0), measured(SLOT + 900, 300.0, 10.0)])
    assert forecasts.load.history == [100.0, 300.0] and forecasts.pv.history == [0.0, 10.0]


async def test_settlement_of_an_instant_that_starts_no_slot_is_refused(tmp_path):
    from p2pgrid.node.ledger import ledger_config

    config = build_config({"node": {"data_dir": str(tmp_path)},
                           "zone": {"gateway_account": GATEWAY.hex(), "validators": [{"public_key": SELLER.hex()}]}},
                          base_dir=tmp_path)
    node = fake_node(tmp_path)
    node.config = config
    node.ledger = SimpleNamespace(state=LedgerState(), rules=ledger_config(config).rules)
    api = LiveNodeApi(node)
    with pytest.raises(NotASlot):
        await api.settlement(SLOT + 1)
    assert await api.settlement(SLOT) == SlotSettlement(SLOT, node.key.public_key, 0, 0, 0, 0, 0, False)


# --- dashboard ------------------------------------------------------------------------------------

def rendered(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def node_status() -> NodeStatus:
    return NodeStatus(name="n1", role="household", zone="local", account="ab" * 32, pid=1, state="running",
                      listen_addrs=(), peers=3, orders_seen=0, orders_by_slot={}, rejects={}, ignored={},
                      orders_published=0, batches_received=0, market_now_ms=SLOT * 1000, updated_wall_ms=0)


def test_the_dashboard_shows_soc_powers_and_the_last_settlement_when_given():
    telemetry = Telemetry(SLOT * 1000, 1200, 600, -338, -262, 4658, 10_000, ("pv",))
    settled = SlotSettlement(SLOT, b"\x01" * 32, -600, -500, 100, -120_000, 30_000, True)
    text = rendered(render_node_dashboard(node_status(), telemetry, settled))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "SoC 4.7/10.0 kWh (46 %)" in text and "battery 338 W discharging" in text
    assert "grid 262 W exporting" in text and "stale: pv" in text
    assert "contracted sold 600 Wh" in text and "metered exported 500 Wh" in text
    assert "trades received 0.120000 cr" in text and "imbalance paid 0.030000 cr" in text
    plain = rendered(render_node_dashboard(node_status()))
    assert "SoC" not in plain and "settled" not in plain
