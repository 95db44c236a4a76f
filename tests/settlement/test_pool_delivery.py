"""A pool host's battery delivers what its pools sold (``p2pgrid.pools.delivery``)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.battery import BatterySpec
from p2pgrid.devices.readings import BatteryMode
from p2pgrid.devices.series import Series
from p2pgrid.devices.simulated import SimulatedSite, SiteInputs, SiteSpec, initial_site_state, step_site
from p2pgrid.pools.delivery import (PoolDeliveryService, battery_setpoint_w, export_target_w,
                                        pool_net_sold_wh)
from p2pgrid.wire import Side

from test_settle_swaps import HOUSE, NEIGHBOUR, SLOT, SLOTS, STATION, Zone

SPEC = SiteSpec(battery=BatterySpec(capacity_wh=200_000, max_charge_w=50_000, max_discharge_w=50_000,
                                    self_discharge_per_day=0.0))


def test_net_sold_counts_the_hosts_swaps_of_the_slot_only():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)
    zone.swap(NEIGHBOUR, Side.SELL, 100)
    assert pool_net_sold_wh(zone.state, STATION.public_key, SLOT) == 200
    assert pool_net_sold_wh(zone.state, HOUSE.public_key, SLOT) == 0      # a trader hosts nothing
    assert pool_net_sold_wh(zone.state, STATION.public_key, SLOT + SLOTS.length_s) == 0


@settings(max_examples=100, deadline=None)
@given(load_w=st.floats(0, 20_000), battery_w=st.floats(-20_000, 20_000), export_w=st.floats(-20_000, 20_000))
def test_within_its_limits_the_battery_makes_the_meter_read_the_export(load_w, battery_w, export_w):
    inputs = SiteInputs(load_w=Series.constant(load_w))
    before = step_site(SPEC, inputs, initial_site_state(SPEC, 0, 50.0), 0.001)
    grid_w = load_w - before.battery.power_w
    target = battery_setpoint_w(before.battery.power_w, grid_w, export_w)
    if abs(target) > 50_000:
        return   # beyond the battery's power: clipped, reported by the device
    steered = step_site(SPEC, inputs, with_setpoint(before, target), 1.0)
    assert load_w - steered.battery.power_w == pytest.approx(-export_w, abs=1e-6)


def with_setpoint(state, battery_w):
    return replace(state, controls=replace(state.controls, battery_w=battery_w))


class SiteDevices:
    """The device service's ``reading``/``apply`` over one simulated site."""

    def __init__(self, site: SimulatedSite) -> None:
        self.site = site

    def reading(self, kind: DeviceKind):
        return self.site.reading(kind)

    async def apply(self, kind: DeviceKind, setpoint):
        return self.site.apply(setpoint)


async def test_the_host_exports_its_pool_sales_and_then_hands_the_battery_back():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)                  # 300 Wh over a 900 s slot: 1200 W to export
    now = [SLOT * 1000 + 60_000]
    site = SimulatedSite(SPEC, SiteInputs(load_w=Series.constant(1_000)), lambda: now[0], soc_pct=50)
    devices = SiteDevices(site)
    node = SimpleNamespace(ledger=SimpleNamespace(state=zone.state), key=STATION,
                           config=SimpleNamespace(zone=SimpleNamespace(slot_rules=SLOTS)),
                           clock=SimpleNamespace(now_ms=lambda: now[0]))
    now[0] += 1_000
    assert site.reading(DeviceKind.METER).power_w == pytest.approx(0)   # self-consumption: no export
    service = PoolDeliveryService()
    await service.step(node, devices)
    now[0] += 60_000
    assert service.steering
    assert site.reading(DeviceKind.METER).power_w == pytest.approx(-export_target_w(300, 900)) == -1_200
    assert site.reading(DeviceKind.BATTERY).power_w == pytest.approx(2_200)

    now[0] = (SLOT + SLOTS.length_s) * 1000 + 1_000  # next slot: the pools sold nothing there
    await service.step(node, devices)
    assert not service.steering
    assert site.reading(DeviceKind.BATTERY).mode is BatteryMode.AUTO
    assert site.state.controls.battery_w is None
