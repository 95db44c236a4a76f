"""Battery limits as the planner sees them (pure).

Energy flows are measured at two places, and the limits say which:

* **stored** energy is the state of charge (SoC, Wh) inside the battery;
* **bus** energy is what crosses the AC terminals in a slot (Wh, positive = charging). It is what a
  setpoint commands and what the meter sees.

Charging ``d`` Wh into storage takes ``d / charge_efficiency`` Wh from the bus; discharging ``d``
Wh out of storage gives ``d * discharge_efficiency`` Wh to the bus. Power limits apply at the
bus: in a slot of ``slot_s`` seconds the bus may carry at most ``max_charge_w * slot_s / 3600`` Wh
in and ``max_discharge_w * slot_s / 3600`` Wh out.

The usable band is ``[floor_wh, ceiling_wh]`` with ``floor_wh = max(min_soc_wh, reserve_wh)``
(the reserve is energy kept back for backup) and ``ceiling_wh = max_soc_wh`` (default: capacity).
Self-discharge is not modelled: a quarter-hour plan over a day loses well under 0.1 % to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from p2pgrid.errors import ConfigError

SECONDS_PER_HOUR = 3600


class BatteryLimitsError(ConfigError):
    """Battery limits that contradict each other (names the field)."""


@dataclass(frozen=True)
class BatteryLimits:
    """Device limits of one battery. Energies in Wh, powers in W, efficiencies in (0, 1]."""

    capacity_wh: int
    max_charge_w: int
    max_discharge_w: int
    min_soc_wh: int = 0
    max_soc_wh: int | None = None
    reserve_wh: int = 0
    charge_efficiency: float = 0.95
    discharge_efficiency: float = 0.95

    def __post_init__(self) -> None:
        if self.capacity_wh <= 0:
            raise BatteryLimitsError("capacity_wh must be > 0")
        if self.max_charge_w < 0 or self.max_discharge_w < 0:
            raise BatteryLimitsError("max_charge_w and max_discharge_w must be >= 0")
        if not 0 <= self.min_soc_wh <= self.capacity_wh:
            raise BatteryLimitsError("min_soc_wh must be within 0..capacity_wh")
        if self.max_soc_wh is not None and not self.min_soc_wh <= self.max_soc_wh <= self.capacity_wh:
            raise BatteryLimitsError("max_soc_wh must be within min_soc_wh..capacity_wh")
        if not 0 <= self.reserve_wh <= self.ceiling_wh:
            raise BatteryLimitsError("reserve_wh must be within 0..max_soc_wh")
        for name in ("charge_efficiency", "discharge_efficiency"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise BatteryLimitsError(f"{name} must be in (0, 1]")

    @property
    def floor_wh(self) -> int:
        """Lowest SoC the planner may discharge to."""
        return max(self.min_soc_wh, self.reserve_wh)

    @property
    def ceiling_wh(self) -> int:
        """Highest SoC the planner may charge to."""
        return self.capacity_wh if self.max_soc_wh is None else self.max_soc_wh

    def max_charge_bus_wh(self, slot_s: int) -> float:
        return self.max_charge_w * slot_s / SECONDS_PER_HOUR

    def max_discharge_bus_wh(self, slot_s: int) -> float:
        return self.max_discharge_w * slot_s / SECONDS_PER_HOUR

    def max_charge_stored_wh(self, slot_s: int) -> float:
        """Most SoC can rise in one slot."""
        return self.max_charge_bus_wh(slot_s) * self.charge_efficiency

    def max_discharge_stored_wh(self, slot_s: int) -> float:
        """Most SoC can fall in one slot."""
        return self.max_discharge_bus_wh(slot_s) / self.discharge_efficiency

    def bus_wh(self, stored_change_wh: float) -> float:
        """Bus energy (+ charging) that changes the SoC by ``stored_change_wh``."""
        if stored_change_wh >= 0:
            return stored_change_wh / self.charge_efficiency
        return stored_change_wh * self.discharge_efficiency

    def stored_change_wh(self, bus_wh: float) -> float:
        """SoC change caused by ``bus_wh`` at the terminals (inverse of ``bus_wh``)."""
        if bus_wh >= 0:
            return bus_wh * self.charge_efficiency
        return bus_wh / self.discharge_efficiency


def setpoint_w(bus_wh: float, slot_s: int) -> int:
    """Constant power (W, + charging) that moves ``bus_wh`` through the terminals in one slot."""
    return round(bus_wh * SECONDS_PER_HOUR / slot_s)
