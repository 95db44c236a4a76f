"""What an expert may know about a series besides its values (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from p2pgrid.forecast.clearsky import PvSite


@dataclass(frozen=True)
class SeriesContext:
    """What experts may know about a series besides its values."""

    slot_s: int
    first_slot_s: int = 0          # UTC seconds of the start of history[0]
    site: PvSite | None = None     # needed by the clear-sky experts only
    # An exogenous series aligned with the history (the day-ahead price, for the price expert of
    # p2pgrid.forecast.price); only its first ``reference_known`` values exist yet.
    reference: tuple[float, ...] = ()
    reference_known: int = 0

    @property
    def slots_per_day(self) -> int:
        return 86400 // self.slot_s

    def slot_start_s(self, index: int) -> int:
        return self.first_slot_s + index * self.slot_s
