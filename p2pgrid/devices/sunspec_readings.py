"""From decoded SunSpec models to p2pgrid readings and back to setpoint registers (pure).

Which models feed which reading:

* grid meter — 201/202/203/204 (AC meters): ``W`` (SunSpec meters count import positive; a
  meter wired the other way is configured with ``import_positive=False``), ``WphA..C``,
  ``TotWhImp`` / ``TotWhExp`` (acc32 counters, floored to whole Wh).
* PV inverter — 101/102/103: ``W``, ``WH`` (lifetime); rated power from nameplate 120 ``WRtg``
  when present, else from configuration; curtailment from immediate controls 123
  (``WMaxLimPct`` of rated, active when ``WMaxLim_Ena`` = 1).
* battery — 802 (battery base): ``W``, ``SoC``, ``WHRtg``, ``WChaRteMax``, ``WDisChaRteMax``,
  ``SoCMin``/``SoCMax``, ``SoCRsvMin``. The 802 text does not fix the sign of ``W``; the default
  here is discharge positive (OpenEMS), configurable. Control goes through 124 (basic storage):
  ``StorCtl_Mod`` bit 0 limits charging to ``InWRte`` % of ``WChaMax``, bit 1 limits discharging
  to ``OutWRte`` % of ``WChaMax`` (both bits with 0 % holds the battery, no bits = automatic).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from p2pgrid.devices.base import Applied, BatterySetpoint, DeviceProtocolError, PvLimit
from p2pgrid.devices.readings import BatteryMode, BatteryReading, MeterReading, PvReading
from p2pgrid.devices.sunspec_registers import Value

METER_MODELS = (203, 204, 201, 202)
INVERTER_MODELS = (103, 101, 102)
STORCTL_CHARGE = 0b01
STORCTL_DISCHARGE = 0b10


def _required(values: Mapping[str, Value], model: str, name: str) -> float:
    value = values.get(name)
    if value is None or isinstance(value, str):
        raise DeviceProtocolError(f"SunSpec {model} point {name} not implemented")
    return float(value)


def _optional(values: Mapping[str, Value] | None, name: str) -> float | None:
    if values is None:
        return None
    value = values.get(name)
    return None if value is None or isinstance(value, str) else float(value)


def meter_reading(values: Mapping[str, Value], t_ms: int,
                  import_positive: bool = True) -> MeterReading:
    sign = 1.0 if import_positive else -1.0
    phases = tuple(sign * p for name in ("WphA", "WphB", "WphC")
                   if (p := _optional(values, name)) is not None)
    return MeterReading(
        t_ms=t_ms,
        power_w=sign * _required(values, "meter", "W"),
        import_wh=math.floor(_required(values, "meter", "TotWhImp")),
        export_wh=math.floor(_required(values, "meter", "TotWhExp")),
        phase_power_w=phases,
    )


def pv_reading(inverter: Mapping[str, Value], t_ms: int, *,
               nameplate: Mapping[str, Value] | None = None,
               controls: Mapping[str, Value] | None = None,
               rated_w: float | None = None,
               settings: Mapping[str, Value] | None = None) -> PvReading:
    """The inverter's rating is the smaller of what the device says: nameplate ``WRtg`` (model
    120) and its configured maximum ``WMax`` (model 121); ``rated_w`` when it says neither."""
    ratings = [r for r in (_optional(nameplate, "WRtg"), _optional(settings, "WMax")) if r]
    rated = min(ratings) if ratings else rated_w
    if rated is None:
        raise DeviceProtocolError("SunSpec inverter has no nameplate (120) and no rated_w set")
    limit = None
    if _optional(controls, "WMaxLim_Ena") == 1:
        pct = _optional(controls, "WMaxLimPct")
        limit = None if pct is None else rated * pct / 100.0
    return PvReading(t_ms=t_ms, power_w=_required(inverter, "inverter", "W"),
                     lifetime_wh=math.floor(_required(inverter, "inverter", "WH")),
                     rated_w=rated, limit_w=limit)


def battery_reading(battery: Mapping[str, Value], t_ms: int, *,
                    storage: Mapping[str, Value] | None = None,
                    discharge_positive: bool = True) -> BatteryReading:
    sign = 1.0 if discharge_positive else -1.0
    mode, setpoint = BatteryMode.AUTO, None
    ctl = _optional(storage, "StorCtl_Mod")
    wcha_max = _optional(storage, "WChaMax")
    if ctl:
        mode = BatteryMode.REMOTE
        in_pct = _optional(storage, "InWRte") or 0.0
        out_pct = _optional(storage, "OutWRte") or 0.0
        if wcha_max is not None:
            if int(ctl) & STORCTL_CHARGE and in_pct > 0:
                setpoint = -wcha_max * in_pct / 100.0
            elif int(ctl) & STORCTL_DISCHARGE and out_pct > 0:
                setpoint = wcha_max * out_pct / 100.0
            else:
                mode, setpoint = BatteryMode.IDLE, 0.0
    reserve = _optional(battery, "SoCRsvMin")
    if reserve is None:
        reserve = _optional(storage, "MinRsvPct") or 0.0
    return BatteryReading(
        t_ms=t_ms,
        power_w=sign * _required(battery, "battery", "W"),
        soc_pct=_required(battery, "battery", "SoC"),
        capacity_wh=math.floor(_required(battery, "battery", "WHRtg")),
        max_charge_w=_required(battery, "battery", "WChaRteMax"),
        max_discharge_w=_required(battery, "battery", "WDisChaRteMax"),
        min_soc_pct=_optional(battery, "SoCMin") or 0.0,
        max_soc_pct=_optional(battery, "SoCMax") or 100.0,
        reserve_pct=reserve,
        mode=mode,
        setpoint_w=setpoint,
    )


def storage_control(setpoint: BatterySetpoint, wcha_max: float, max_discharge_w: float,
                    revert_s: float = 0.0) -> tuple[dict[str, float], Applied]:
    """Model-124 points to write for ``setpoint``, and what will be applied (clipped to the
    device's charge/discharge limits, reported). With ``revert_s`` the rates carry a revert
    timeout (``InOutWRte_RvrtTms``, written before the mode that enables them): a device whose
    controller falls silent returns to its own control by itself."""
    p = setpoint.power_w
    if p is None:
        return {"StorCtl_Mod": 0}, Applied(setpoint, setpoint)
    if wcha_max <= 0:
        raise DeviceProtocolError("SunSpec storage WChaMax must be > 0 to take a setpoint")
    applied, reason = p, ""
    if p < -wcha_max:
        applied, reason = -wcha_max, "max charge power"
    elif p > min(max_discharge_w, wcha_max):
        applied, reason = min(max_discharge_w, wcha_max), "max discharge power"
    pct = abs(applied) / wcha_max * 100.0
    revert = {"InOutWRte_RvrtTms": math.ceil(revert_s)} if revert_s > 0 else {}
    if applied < 0:
        points = {"InWRte": pct, "OutWRte": 0.0, **revert, "StorCtl_Mod": STORCTL_CHARGE}
    elif applied > 0:
        points = {"InWRte": 0.0, "OutWRte": pct, **revert, "StorCtl_Mod": STORCTL_DISCHARGE}
    else:
        points = {"InWRte": 0.0, "OutWRte": 0.0, **revert,
                  "StorCtl_Mod": STORCTL_CHARGE | STORCTL_DISCHARGE}
    return points, Applied(setpoint, BatterySetpoint(applied), reason)


def inverter_limit(limit: PvLimit, rated_w: float) -> tuple[dict[str, float], Applied]:
    """Model-123 points to write for a curtailment limit (clipped to 0..rated, reported)."""
    if limit.limit_w is None:
        return {"WMaxLim_Ena": 0}, Applied(limit, limit)
    applied, reason = limit.limit_w, ""
    if applied < 0:
        applied, reason = 0.0, "negative limit"
    elif applied > rated_w:
        applied, reason = rated_w, "inverter rating"
    return ({"WMaxLimPct": applied / rated_w * 100.0, "WMaxLim_Ena": 1},  # limit, then enable
            Applied(limit, PvLimit(applied), reason))
