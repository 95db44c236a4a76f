"""The readings devices return, modelled on what real systems expose (evcc, OpenEMS, SunSpec).

Every reading is frozen, carries ``t_ms`` (the instant it describes, Unix ms UTC) and a
``Quality``. Powers are floats in W (a measurement, not a settled value); energy counters are
integer Wh and only ever grow (telemetry detects and bridges resets). Signs follow
``p2pgrid.devices.base``: grid import +, export −; PV generation +; battery discharge +,
charge −; loads +.

``validate_reading`` is the one gate every adapter passes its decoded values through: a value
outside the physical range of its quantity raises ``DeviceValueError`` naming the field, so a
broken device shows up as a BAD sample instead of a plausible-looking wrong number.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields

from p2pgrid.devices.base import DeviceKind, DeviceValueError, Quality

#: Largest power any device of a site (a 300 kWp station included) may plausibly report.
MAX_PLAUSIBLE_POWER_W = 10_000_000.0
#: Inverters draw a little at night and some report it as negative generation.
PV_STANDBY_TOLERANCE_W = 100.0


class BatteryMode(enum.Enum):
    """Who decides the battery's power: the device itself (AUTO, e.g. self-consumption), a
    remote setpoint (REMOTE), or nobody (IDLE: neither charging nor discharging)."""

    AUTO = "auto"
    REMOTE = "remote"
    IDLE = "idle"


class EvStatus(enum.Enum):
    """IEC 61851 control-pilot states, as evcc reports them."""

    DISCONNECTED = "A"
    CONNECTED = "B"
    CHARGING = "C"
    ERROR = "E"


@dataclass(frozen=True)
class MeterReading:
    t_ms: int
    power_w: float
    import_wh: int
    export_wh: int
    phase_power_w: tuple[float, ...] = ()
    quality: Quality = Quality.GOOD
    kind: DeviceKind = DeviceKind.METER


@dataclass(frozen=True)
class PvReading:
    t_ms: int
    power_w: float
    lifetime_wh: int
    rated_w: float
    limit_w: float | None = None
    quality: Quality = Quality.GOOD
    kind: DeviceKind = DeviceKind.PV


@dataclass(frozen=True)
class BatteryReading:
    t_ms: int
    power_w: float
    soc_pct: float
    capacity_wh: int
    max_charge_w: float
    max_discharge_w: float
    min_soc_pct: float = 0.0
    max_soc_pct: float = 100.0
    reserve_pct: float = 0.0
    mode: BatteryMode = BatteryMode.AUTO
    setpoint_w: float | None = None
    quality: Quality = Quality.GOOD
    kind: DeviceKind = DeviceKind.BATTERY


@dataclass(frozen=True)
class EvReading:
    t_ms: int
    status: EvStatus
    current_limit_a: float
    power_w: float
    session_wh: int
    phases: int = 3
    quality: Quality = Quality.GOOD
    kind: DeviceKind = DeviceKind.EV


@dataclass(frozen=True)
class LoadReading:
    t_ms: int
    power_w: float
    quality: Quality = Quality.GOOD
    kind: DeviceKind = DeviceKind.LOAD


Reading = MeterReading | PvReading | BatteryReading | EvReading | LoadReading


def _check(ok: bool, reading: Reading, field: str, rule: str) -> None:
    if not ok:
        value = getattr(reading, field)
        raise DeviceValueError(f"{reading.kind.value} {field}={value!r} out of range: {rule}")


def _is_power(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_PLAUSIBLE_POWER_W


def _is_pct(value: float) -> bool:
    return math.isfinite(value) and 0.0 <= value <= 100.0


#: How far a reading may exceed its device's rating before it is not believed: inverters and
#: batteries briefly run a little over nameplate, never by a tenth.
NAMEPLATE_MARGIN = 1.1


def check_nameplate(reading: Reading, configured_w: float | None = None) -> Reading:
    """Return ``reading`` if its power is within what the device is rated for (PV: its
    ``rated_w`` from SunSpec model 120/121, and ``configured_w``, the configured kWp; battery: its
    charge and discharge limits), else raise ``DeviceValueError``. A reading outside the nameplate
    is a wrong scale factor, a swapped register or a lying device, and must never become metered
    (green) energy."""
    if isinstance(reading, PvReading):
        rated = min(r for r in (reading.rated_w, configured_w or math.inf) if r > 0) \
            if reading.rated_w > 0 or configured_w else 0.0
        if rated > 0:
            _check(reading.power_w <= rated * NAMEPLATE_MARGIN, reading, "power_w",
                   f"within the rating of {rated:g} W")
    elif isinstance(reading, BatteryReading):
        if reading.max_discharge_w > 0:
            _check(reading.power_w <= reading.max_discharge_w * NAMEPLATE_MARGIN, reading, "power_w",
                   f"discharging within {reading.max_discharge_w:g} W")
        if reading.max_charge_w > 0:
            _check(-reading.power_w <= reading.max_charge_w * NAMEPLATE_MARGIN, reading, "power_w",
                   f"charging within {reading.max_charge_w:g} W")
    return reading


def validate_reading(reading: Reading) -> Reading:
    """Return ``reading`` unchanged if every value is physically possible, else raise
    ``DeviceValueError`` naming the first offending field."""
    for f in fields(reading):
        value = getattr(reading, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            _check(False, reading, f.name, "must be a finite number")
    if isinstance(reading, MeterReading):
        _check(_is_power(reading.power_w), reading, "power_w", "|W| <= 10 MW")
        _check(all(_is_power(p) for p in reading.phase_power_w), reading, "phase_power_w",
               "|W| <= 10 MW")
        _check(reading.import_wh >= 0, reading, "import_wh", "counter >= 0")
        _check(reading.export_wh >= 0, reading, "export_wh", "counter >= 0")
    elif isinstance(reading, PvReading):
        _check(_is_power(reading.power_w) and reading.power_w >= -PV_STANDBY_TOLERANCE_W,
               reading, "power_w", "generation >= -100 W")
        _check(reading.lifetime_wh >= 0, reading, "lifetime_wh", "counter >= 0")
        _check(_is_power(reading.rated_w) and reading.rated_w >= 0, reading, "rated_w", ">= 0")
        _check(reading.limit_w is None or reading.limit_w >= 0, reading, "limit_w", ">= 0")
    elif isinstance(reading, BatteryReading):
        _check(_is_power(reading.power_w), reading, "power_w", "|W| <= 10 MW")
        for name in ("soc_pct", "min_soc_pct", "max_soc_pct", "reserve_pct"):
            _check(_is_pct(getattr(reading, name)), reading, name, "0..100 %")
        _check(reading.min_soc_pct <= reading.max_soc_pct, reading, "min_soc_pct",
               "<= max_soc_pct")
        _check(reading.capacity_wh >= 0, reading, "capacity_wh", ">= 0")
        for name in ("max_charge_w", "max_discharge_w"):
            value = getattr(reading, name)
            _check(_is_power(value) and value >= 0, reading, name, "0..10 MW")
    elif isinstance(reading, EvReading):
        _check(_is_power(reading.power_w) and reading.power_w >= 0, reading, "power_w",
               "0..10 MW")
        _check(0.0 <= reading.current_limit_a <= 1000.0, reading, "current_limit_a", "0..1000 A")
        _check(reading.session_wh >= 0, reading, "session_wh", ">= 0")
        _check(reading.phases in (1, 2, 3), reading, "phases", "1, 2 or 3")
    elif isinstance(reading, LoadReading):
        _check(_is_power(reading.power_w) and reading.power_w >= 0, reading, "power_w",
               "0..10 MW")
    return reading
