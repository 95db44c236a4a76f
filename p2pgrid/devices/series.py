"""Evenly spaced time series (pure): the inputs that drive simulated devices.

A ``Series`` holds one value per ``step_ms`` from ``start_ms`` (e.g. household load in W every
15 min, irradiance in W/m² every minute — the profiles module supplies these as arrays). Between
samples the value holds (step-hold: a metered average holds over its interval). Outside the
covered span a ``cyclic`` series repeats (a daily profile), a plain one holds its end values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.errors import ConfigError

#: ``next_change_ms`` of a series that never changes again.
NEVER_MS = 2**62


@dataclass(frozen=True)
class Series:
    start_ms: int
    step_ms: int
    values: tuple[float, ...]
    cyclic: bool = False

    def __post_init__(self) -> None:
        if self.step_ms <= 0:
            raise ConfigError("series step_ms must be > 0")
        if not self.values:
            raise ConfigError("series needs at least one value")

    @classmethod
    def of(cls, start_ms: int, step_ms: int, values: Sequence[float],
           cyclic: bool = False) -> Series:
        return cls(start_ms, step_ms, tuple(float(v) for v in values), cyclic)

    @classmethod
    def constant(cls, value: float) -> Series:
        return cls(0, 1, (float(value),))

    def at(self, t_ms: int) -> float:
        index = (t_ms - self.start_ms) // self.step_ms
        if self.cyclic:
            return self.values[index % len(self.values)]
        return self.values[min(max(index, 0), len(self.values) - 1)]

    def next_change_ms(self, t_ms: int) -> int:
        """The first instant after ``t_ms`` at which the value may change."""
        index = (t_ms - self.start_ms) // self.step_ms
        if len(self.values) == 1 or (not self.cyclic and index >= len(self.values) - 1):
            return NEVER_MS
        if not self.cyclic and index < 0:
            return self.start_ms
        return self.start_ms + (index + 1) * self.step_ms
