"""How much flexibility a home's own devices can give without breaking their limits (pure).

An offer is only worth its penalty if it can be delivered: these functions size it from what the
agent knows of its devices at offer time, never beyond a device's limits.

* **Battery** (``agent.battery.BatteryLimits``): for a ``down`` request it discharges, at most
  ``max_discharge_w`` per slot and in total what lies above its floor (``max(min_soc_wh,
  reserve_wh)``, the household's backup reserve stays untouched) after discharge losses; for an
  ``up`` request it charges, at most ``max_charge_w`` per slot and in total the room below
  ``max_soc_wh`` before charge losses. The energy is handed out slot by slot, earliest first.
* **EV** (``EvSession``): for a ``down`` request it pauses charging in the event slots, but only if
  what it still needs can be charged between the event's end and its departure at its charging
  power (the driver's departure time is a hard limit); it then offers, per slot, what it would
  have drawn (its power, up to what it still needs). For an ``up`` request it offers nothing (its
  charging is in its baseline already).

``home_limits`` adds both. A home without either offers nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.flex.rules import Direction

__all__ = ["EvSession", "battery_flex_wh", "ev_flex_wh", "home_limits"]

MS_PER_H = 3_600_000


def _per_slot_wh(power_w: int, slot_s: int) -> int:
    return power_w * slot_s // 3600


def _spread(total_wh: int, per_slot_wh: int, n_slots: int) -> tuple[int, ...]:
    out = []
    for _ in range(n_slots):
        take = max(0, min(per_slot_wh, total_wh))
        out.append(take)
        total_wh -= take
    return tuple(out)


def battery_flex_wh(direction: Direction, limits: BatteryLimits, soc_wh: int, n_slots: int,
                    slot_s: int) -> tuple[int, ...]:
    """Wh per slot the battery can move at its connection, from state of charge ``soc_wh``."""
    if direction is Direction.DOWN:
        floor = max(limits.min_soc_wh, limits.reserve_wh)
        available = int(max(0, soc_wh - floor) * limits.discharge_efficiency)
        return _spread(available, _per_slot_wh(limits.max_discharge_w, slot_s), n_slots)
    ceiling = limits.max_soc_wh if limits.max_soc_wh is not None else limits.capacity_wh
    room = int(max(0, ceiling - soc_wh) / limits.charge_efficiency)
    return _spread(room, _per_slot_wh(limits.max_charge_w, slot_s), n_slots)


@dataclass(frozen=True)
class EvSession:
    """An EV plugged in at home: charging at ``max_charge_w``, ``need_wh`` still to add by ``departure_ms``."""

    plugged_in_ms: int
    departure_ms: int
    need_wh: int
    max_charge_w: int


def ev_flex_wh(direction: Direction, ev: EvSession, slots: Sequence[int], slot_s: int) -> tuple[int, ...]:
    """Wh per slot the EV can shed by pausing its charge (module docstring)."""
    if direction is not Direction.DOWN or not slots:
        return tuple(0 for _ in slots)
    event_end_ms = (slots[-1] + slot_s) * 1000
    after_ms = max(0, ev.departure_ms - event_end_ms)
    if ev.max_charge_w * after_ms // MS_PER_H < ev.need_wh:
        return tuple(0 for _ in slots)     # the car would leave short: the driver's limit wins
    out, need = [], ev.need_wh
    for slot in slots:
        plugged = ev.plugged_in_ms <= slot * 1000 and (slot + slot_s) * 1000 <= ev.departure_ms
        take = min(_per_slot_wh(ev.max_charge_w, slot_s), need) if plugged else 0
        out.append(take)
        need -= take
    return tuple(out)


def home_limits(direction: Direction, slots: Sequence[int], slot_s: int, battery: BatteryLimits | None = None,
                soc_wh: int = 0, ev: EvSession | None = None) -> tuple[int, ...] | None:
    """Wh per slot the home's devices can move together, or None if they can move nothing."""
    total = [0] * len(slots)
    if battery is not None:
        total = [a + b for a, b in zip(total, battery_flex_wh(direction, battery, soc_wh, len(slots), slot_s))]
    if ev is not None:
        total = [a + b for a, b in zip(total, ev_flex_wh(direction, ev, slots, slot_s))]
    return tuple(total) if any(total) else None
