"""Test tools for the virtual power plant, kept in the package so tests and simnet share them:
signed meter readings with consistent counters, and the calendar of one flexibility event."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pgrid.flex.baseline import DAY_S
from p2pgrid.identity import NodeKey
from p2pgrid.settlement.entries import MeterEntryBody
from p2pgrid.settlement.metering import MeterReading, MeterRegistrationV2
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, sign

__all__ = ["EventCalendar", "MeterBook", "registration_v2"]


def registration_v2(operator: bytes, account: bytes, meter_key: bytes, zone: str, export_w: int,
                    created_ms: int = 0) -> MeterRegistrationV2:
    return MeterRegistrationV2(operator, account, meter_key, zone, created_ms, export_w)


@dataclass
class MeterBook:
    """One account's meter: signs readings of consecutive or gapped slots with running counters."""

    account: bytes
    key: NodeKey
    zone: str
    slot_rules: SlotRules = field(default_factory=SlotRules)
    import_total_wh: int = 0
    export_total_wh: int = 0

    def reading_created_ms(self, slot: int) -> int:
        """When the meter signs a slot's reading: 10 s after the slot ended (well before the due)."""
        return self.slot_rules.slot_end_ms(slot) + 10_000

    def body(self, slot: int, import_wh: int, export_wh: int = 0) -> MeterEntryBody:
        """The ``meter`` entry body of ``slot``; readings must be made in slot order."""
        self.import_total_wh += import_wh
        self.export_total_wh += export_wh
        reading = MeterReading(account=self.account, meter_key=self.key.public_key, zone=self.zone, slot=slot,
                               import_wh=import_wh, export_wh=export_wh, green_wh=0, green_source=Source.NONE,
                               import_total_wh=self.import_total_wh, export_total_wh=self.export_total_wh,
                               created_ms=self.reading_created_ms(slot))
        return MeterEntryBody(sign(reading, self.key).encoded)


@dataclass(frozen=True)
class EventCalendar:
    """One winter-evening event: ``n_slots`` slots from ``hour`` on day ``day``, the request made
    at noon, offers due at ``hour − 1``, the award half an hour later."""

    day: int = 20_500
    hour: int = 18
    n_slots: int = 2
    slot_rules: SlotRules = field(default_factory=SlotRules)

    @property
    def first_slot(self) -> int:
        return self.day * DAY_S + self.hour * 3600

    @property
    def slots(self) -> list[int]:
        return [self.first_slot + i * self.slot_rules.length_s for i in range(self.n_slots)]

    def history_slots(self, days: int, skip: frozenset[int] = frozenset()) -> list[tuple[int, int]]:
        """``(day offset back, slot)`` of the event's times of day on the ``days`` days before it, oldest first."""
        out = []
        for back in range(days, 0, -1):
            if back in skip:
                continue
            for slot in self.slots:
                out.append((back, slot - back * DAY_S))
        return out

    def at(self, hour: float) -> int:
        """Unix ms at ``hour`` of the event day."""
        return (self.day * DAY_S + int(hour * 3600)) * 1000

    @property
    def request_ms(self) -> int:
        return self.at(12)

    @property
    def offer_deadline_ms(self) -> int:
        return self.at(self.hour - 1)

    @property
    def award_ms(self) -> int:
        return self.at(self.hour - 0.5)

    @property
    def settle_ms(self) -> int:
        return self.slot_rules.metering_due_ms(self.slots[-1])
