"""How much flexibility a home's own devices can give without breaking their limits (pure).

An offer is only worth its penalty if it can be delivered: these functions size it from what the
agent knows of its devices at offer time, never beyond a device's limits.

* **Battery** (``agent.battery.BatteryLimits``): for a ``down`` request it discharges, at most
  ``max_discharge_w`` per slot and in total what lies above its floor (``max(min_soc_wh,
  reserve_wh)``, the household's backup reserve stays untouched) after discharge losses; for an
  ``up`` request it charges, at most ``max_charge_w`` per slot and in total the room below
  ``max_soc_wh`` before charge losses. The energy is spread as evenly over the slots as its
  power allows.
* **EV** (``EvSession``): for a ``down`` request it pauses charging in the event slots, but only if
  what it still needs can be charged between the event's end and its departure at its charging
  power (the driver's departure time is a hard limit); it then offers, per slot, what its charge
  plan would have drawn there (``planned_wh``; without a plan, a plain charger's: full power from
  plug-in until the need is met). A car that would not charge in a slot has nothing to pause
  there. For an ``up`` request it offers nothing (its charging is in its baseline already).

``home_limits`` adds both. A home without either offers nothing.

Against the baseline. Delivery is measured against the committed baseline, not against what the
home would have done that evening: a car whose charge today is unusual (not in the baseline's
days) sheds energy the baseline never counted. ``deliverable_wh`` caps an offer by what the home
expects to deliver against its baseline — baseline − (expected net import − shed) — so an agent
does not sign up for a penalty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.flex.rules import Direction

__all__ = ["EvSession", "battery_flex_wh", "deliverable_wh", "ev_flex_wh", "home_limits"]

MS_PER_H = 3_600_000


def _per_slot_wh(power_w: int, slot_s: int) -> int:
    return power_w * slot_s // 3600


def _spread(total_wh: int, per_slot_wh: int, n_slots: int) -> tuple[int, ...]:
    """``total_wh`` over ``n_slots`` as evenly as the power allows (a request wants every slot
    covered; front-loading would leave its last slots to nobody)."""
    out = []
    for left in range(n_slots, 0, -1):
        take = max(0, min(per_slot_wh, -(-total_wh // left)))
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
    planned_wh: tuple[int, ...] | None = None    # Wh its charge plan draws in each event slot




def ev_flex_wh(direction: Direction, ev: EvSession, slots: Sequence[int], slot_s: int) -> tuple[int, ...]:
    """Wh per slot the EV can shed by pausing its charge (module docstring)."""
    if direction is not Direction.DOWN or not slots:
        return tuple(0 for _ in slots)
    event_end_ms = (slots[-1] + slot_s) * 1000
    after_ms = max(0, ev.departure_ms - event_end_ms)
    if ev.max_charge_w * after_ms // MS_PER_H < ev.need_wh:
        return tuple(0 for _ in slots)     # the car would leave short: the driver's limit wins
    if ev.planned_wh is not None:
        return tuple(min(wh, _per_slot_wh(ev.max_charge_w, slot_s)) for wh in ev.planned_wh)
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


def deliverable_wh(shed_wh: Sequence[int], baseline_wh: Sequence[int], expected_net_wh: Sequence[int]) -> tuple[int, ...]:
    """Per slot, what shedding ``shed_wh`` delivers against the baseline when the home expects to
    import ``expected_net_wh`` without acting: ``max(0, min(shed, baseline − expected + shed))``."""
    return tuple(max(0, min(shed, base - expected + shed))
                 for shed, base, expected in zip(shed_wh, baseline_wh, expected_net_wh))
