"""Reading validation, Applied reports and the asyncio-bridge guard."""

from __future__ import annotations

import math

import pytest

from p2pgrid.devices.aio import NoAsyncioBridge
from p2pgrid.devices.base import Applied, BatterySetpoint, DeviceValueError
from p2pgrid.devices.readings import (
    BatteryReading,
    EvReading,
    EvStatus,
    LoadReading,
    MeterReading,
    PvReading,
    validate_reading,
)
from p2pgrid.devices.sunspec import SunSpecClient, SunSpecEndpoint

GOOD = [
    MeterReading(1, -2500.0, 10, 20, (-800.0, -900.0, -800.0)),
    PvReading(1, -3.0, 0, 5000.0, 2500.0),
    BatteryReading(1, 1000.0, 50.0, 10_000, 5000.0, 5000.0, 5.0, 95.0, 10.0),
    EvReading(1, EvStatus.CHARGING, 16.0, 11_040.0, 1200),
    LoadReading(1, 0.0),
]


@pytest.mark.parametrize("reading", GOOD)
def test_plausible_readings_pass(reading):
    assert validate_reading(reading) is reading


@pytest.mark.parametrize("reading,field", [
    (MeterReading(1, math.nan, 0, 0), "power_w"),
    (MeterReading(1, 0.0, -1, 0), "import_wh"),
    (MeterReading(1, 0.0, 0, 0, (2e7,)), "phase_power_w"),
    (PvReading(1, -500.0, 0, 5000.0), "power_w"),
    (BatteryReading(1, 0.0, 101.0, 1, 1.0, 1.0), "soc_pct"),
    (BatteryReading(1, 0.0, 50.0, 1, 1.0, 1.0, min_soc_pct=60, max_soc_pct=50), "min_soc_pct"),
    (BatteryReading(1, math.inf, 50.0, 1, 1.0, 1.0), "power_w"),
    (EvReading(1, EvStatus.CHARGING, 16.0, -1.0, 0), "power_w"),
    (EvReading(1, EvStatus.CHARGING, 16.0, 1.0, 0, phases=4), "phases"),
    (LoadReading(1, -1.0), "power_w"),
])
def test_impossible_values_name_their_field(reading, field):
    with pytest.raises(DeviceValueError, match=field):
        validate_reading(reading)


def test_applied_is_clipped_exactly_when_it_differs():
    assert not Applied(BatterySetpoint(100), BatterySetpoint(100.0)).clipped
    assert Applied(BatterySetpoint(100), BatterySetpoint(50), "max").clipped


async def test_adapter_outside_the_bridge_says_how_to_fix_it():
    with pytest.raises(NoAsyncioBridge, match="open_device_loop"):
        await SunSpecClient(SunSpecEndpoint("127.0.0.1", 1)).read_registers(40000, 2)
