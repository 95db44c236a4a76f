"""Signed meter readings and the checks a reading must pass before it is settled (pure).

A node trades with its own key, but it must not be able to attest its own delivery with it. So a
meter reading is signed by a separate **meter key** (the secure element of a smart meter or DePIN
box; simulated meters get their own keys the same way), and the zone operator registers each meter
key for its account at installation, in a certified ledger entry (``MeterRegistration``). The
registry of those registrations is an argument here: this module reads no ledger, clock or disk.

Wire kinds:

* ``p2pgrid/meter`` v1 — ``MeterReading``, signed by its ``meter_key`` (``signer_field``): one
  account's energy for one slot. ``import_wh`` / ``export_wh`` are the slot's energy from / to the
  grid connection; ``import_total_wh`` / ``export_total_wh`` are the meter's cumulative counters at
  the *end* of the slot, so the counter at the start of the slot is ``total − slot``; ``green_wh``
  is the green generation metered behind the connection in the slot, with its ``green_source``.
* ``p2pgrid/meter-registration`` v1 — ``MeterRegistration``, signed by the zone ``operator``: this
  meter key measures this account in this zone. A meter key can never be the account key itself.
* ``p2pgrid/meter-registration`` v2 — ``MeterRegistrationV2``: v1 plus ``export_w``, the most the
  metered connection can feed into the grid (inverter nameplate of PV and battery together, or the
  connection's export limit, whichever is lower), in W. Order admission bounds what an account may
  offer per slot by it (``p2pgrid.trading.admission``); a v1 registration records no export, so its
  account may buy but not sell.

``validate_meter_reading(signed, registry, rules, previous, entry_time_ms=None)`` accepts a reading
or raises ``MeterReadingRejected`` whose ``reason`` says why (consensus-specs style REJECT: the
sender broke a rule). It reads **no clock**: every time rule is judged on the meter-signed
``created_ms`` (the instant the meter took the reading), and the ledger adds the one bound that
ties it to the entry carrying it (``entry_time_ms``). So the verdict is a pure function of the
reading, the registry and the previous reading, and every validator reaches the same one whenever
it looks. Rules, in the order they are checked:

1. ``unregistered_meter_key`` — the signing meter key is not registered for ``account`` (a reading
   signed by the node's own trading key, or by a meter of another account, lands here). The
   signature itself was checked when the message was decoded (``wire.decode_signed``): a reading
   is only ever signed by its own ``meter_key``. (In the ledger, a key whose registration is not
   certified *yet* is a missing dependency that the validator waits for; see
   ``settlement.entries``.)
2. ``wrong_zone`` — the registration places the meter in another zone than the reading claims.
3. ``unaligned_slot`` — ``slot`` is not a slot start of the zone's calendar.
4. Time, on ``created_ms``: ``premature`` — created before the slot ended (nobody can have metered
   all of it yet); ``late`` — created at or after ``rules.metering_due_ms(slot)`` (the slot is
   settled without it: as zero delivery if no reading of the account arrives in time);
   ``created_in_future`` — created after ``entry_time_ms``, the signed time of the ledger entry
   that carries it (a reading cannot be posted before it was taken; validators do not vote for an
   entry dated ahead of their clocks, so this also keeps readings from being dated ahead). A
   reading created in time is valid whenever it arrives: a node that is slow to submit it loses
   nothing (the slot's settlement is reconciled, see ``settlement.entries``).
5. Against ``previous``, the account's last accepted reading: ``not_after_previous`` — a slot at or
   before the previous one (readings of an account are sequenced in slot order);
   ``counter_contradiction`` — with the same meter key, the counter at the start of this slot is
   below the previous reading's end counter (a counter never runs backwards), or, for the very next
   slot, differs from it (no energy appears or vanishes between two adjacent slots). A new meter key
   (a replaced meter) starts its own counters, so only the slot order is checked across keys.

``to_meter_entry(signed)`` turns an accepted reading into the ``settlement.MeterEntry`` that
settlement and certificates take, hashed by the signed message's id.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pgrid.errors import DecodeError, SettlementError
from p2pgrid.settlement.rules import MeterEntry
from p2pgrid.units import SlotRules
from p2pgrid.wire import MAX_QTY_WH, PUBLIC_KEY_SIZE, ZONE_PATTERN, Signed, Source, decode_signed, message

__all__ = [
    "MAX_EXPORT_W", "MeterReading", "MeterReadingRejected", "MeterRegistration", "MeterRegistrationV2",
    "MeterRegistry", "RejectReason", "export_w_of",
    "check_reading_time", "decode_meter_reading", "to_meter_entry", "validate_meter_reading",
]

MAX_COUNTER_WH = 2**62
MAX_EXPORT_W = 10**9        # 1 GW: a bound on the field, not a plausible connection


@message("p2pgrid/meter", 1, max_bytes=512, signer_field="meter_key")
@dataclass(frozen=True)
class MeterReading:
    """One account's metered energy for one slot, signed by the account's registered meter key."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    meter_key: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot: int = field(metadata={"min": 0})
    import_wh: int = field(metadata={"min": 0, "max": MAX_QTY_WH})
    export_wh: int = field(metadata={"min": 0, "max": MAX_QTY_WH})
    green_wh: int = field(metadata={"min": 0, "max": MAX_QTY_WH})
    green_source: Source
    import_total_wh: int = field(metadata={"min": 0, "max": MAX_COUNTER_WH})
    export_total_wh: int = field(metadata={"min": 0, "max": MAX_COUNTER_WH})
    created_ms: int = field(metadata={"min": 0})

    def check(self) -> None:
        if self.meter_key == self.account:
            raise DecodeError("MeterReading.meter_key must not be the account's own key")
        if self.import_total_wh < self.import_wh or self.export_total_wh < self.export_wh:
            raise DecodeError("MeterReading counters must include the slot's own energy")
        if self.green_wh > 0 and not self.green_source.is_green:
            raise DecodeError("MeterReading.green_wh needs a green source")

    @property
    def import_start_wh(self) -> int:
        """The import counter at the start of the slot."""
        return self.import_total_wh - self.import_wh

    @property
    def export_start_wh(self) -> int:
        return self.export_total_wh - self.export_wh


@message("p2pgrid/meter-registration", 1, max_bytes=512, signer_field="operator")
@dataclass(frozen=True)
class MeterRegistration:
    """The zone operator registers ``meter_key`` as the meter of ``account`` in ``zone``."""

    operator: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    meter_key: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    created_ms: int = field(metadata={"min": 0})

    def check(self) -> None:
        if self.meter_key == self.account:
            raise DecodeError("MeterRegistration.meter_key must not be the account's own key")


@message("p2pgrid/meter-registration", 2, max_bytes=512, signer_field="operator")
@dataclass(frozen=True)
class MeterRegistrationV2(MeterRegistration):
    """v1, plus what the metered connection can export: ``export_w`` W (0: it cannot sell)."""

    export_w: int = field(metadata={"min": 0, "max": MAX_EXPORT_W})


def export_w_of(registration: MeterRegistration) -> int:
    """The export a registration records, W: a v1 registration records none (0)."""
    return registration.export_w if isinstance(registration, MeterRegistrationV2) else 0


@dataclass(frozen=True)
class MeterRegistry:
    """Registered meter keys: ``(account, meter_key) -> zone``. Built from certified registrations.

    Checking that each registration was signed by the zone's real operator is the ledger's job (the
    registration is a certified entry); this registry trusts what it is given.
    """

    registrations: tuple[MeterRegistration, ...] = ()
    _zones: dict[tuple[bytes, bytes], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zones", {(r.account, r.meter_key): r.zone for r in self.registrations})

    @classmethod
    def of(cls, registrations: Iterable[MeterRegistration]) -> MeterRegistry:
        return cls(tuple(sorted(set(registrations), key=lambda r: (r.account, r.meter_key, r.created_ms))))

    def zone_of(self, account: bytes, meter_key: bytes) -> str | None:
        """The zone ``meter_key`` is registered in for ``account``, or None if it is not registered."""
        return self._zones.get((account, meter_key))


class RejectReason(str, enum.Enum):
    UNREGISTERED_METER_KEY = "unregistered_meter_key"
    WRONG_ZONE = "wrong_zone"
    UNALIGNED_SLOT = "unaligned_slot"
    CREATED_IN_FUTURE = "created_in_future"
    PREMATURE = "premature"
    LATE = "late"
    NOT_AFTER_PREVIOUS = "not_after_previous"
    COUNTER_CONTRADICTION = "counter_contradiction"


class MeterReadingRejected(SettlementError):
    """A meter reading that breaks a rule; ``reason`` says which (the sender is at fault)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"meter reading rejected ({reason.value}): {detail}")
        self.reason = reason


def decode_meter_reading(data: bytes) -> Signed[MeterReading]:
    """Decode and verify a signed meter reading; raises a ``WireError`` on any defect."""
    return decode_signed(data, MeterReading)


def validate_meter_reading(signed: Signed[MeterReading], registry: MeterRegistry, rules: SlotRules,
                           previous: MeterReading | None = None, *, entry_time_ms: int | None = None) -> MeterReading:
    """Return the reading if it may be settled; else raise ``MeterReadingRejected`` (rules above).

    Pure: no clock. ``entry_time_ms`` is the signed time of the ledger entry carrying the reading
    (None outside the ledger, e.g. a reading checked on its own)."""
    reading = signed.body
    if signed.signer != reading.meter_key:
        raise MeterReadingRejected(RejectReason.UNREGISTERED_METER_KEY,
                                   "signed by a key other than its meter_key")
    zone = registry.zone_of(reading.account, reading.meter_key)
    if zone is None:
        raise MeterReadingRejected(RejectReason.UNREGISTERED_METER_KEY,
                                   f"key {reading.meter_key.hex()[:16]}… is not a registered meter of "
                                   f"account {reading.account.hex()[:16]}…")
    if zone != reading.zone:
        raise MeterReadingRejected(RejectReason.WRONG_ZONE,
                                   f"meter registered in zone {zone!r}, reading claims {reading.zone!r}")
    check_reading_time(reading, rules, entry_time_ms)
    if previous is not None:
        _check_against_previous(reading, previous, rules.length_s)
    return reading


def check_reading_time(reading: MeterReading, rules: SlotRules, entry_time_ms: int | None = None) -> None:
    """Rules 3 and 4: ``slot_end <= created_ms < metering_due``, and ``created_ms <= entry_time_ms``."""
    slot = reading.slot
    if not rules.is_aligned(slot):
        raise MeterReadingRejected(RejectReason.UNALIGNED_SLOT, f"slot {slot} is not a multiple of {rules.length_s} s")
    slot_end = rules.slot_end_ms(slot)
    if reading.created_ms < slot_end:
        raise MeterReadingRejected(RejectReason.PREMATURE,
                                   f"created at {reading.created_ms} ms, before slot {slot} ended at {slot_end} ms")
    due = rules.metering_due_ms(slot)
    if reading.created_ms >= due:
        raise MeterReadingRejected(RejectReason.LATE,
                                   f"created at {reading.created_ms} ms; metering for slot {slot} was due by {due} ms")
    if entry_time_ms is not None and reading.created_ms > entry_time_ms:
        raise MeterReadingRejected(RejectReason.CREATED_IN_FUTURE,
                                   f"created at {reading.created_ms} ms, after the entry carrying it "
                                   f"({entry_time_ms} ms)")


def _check_against_previous(reading: MeterReading, previous: MeterReading, slot_length_s: int) -> None:
    if previous.account != reading.account:
        raise ValueError("previous must be a reading of the same account")   # a caller bug, not a peer's
    if reading.slot <= previous.slot:
        raise MeterReadingRejected(RejectReason.NOT_AFTER_PREVIOUS,
                                   f"slot {reading.slot} is not after the previous reading's slot {previous.slot}")
    if reading.meter_key != previous.meter_key:
        return
    adjacent = reading.slot == previous.slot + slot_length_s
    for name, start, end_before in (("import", reading.import_start_wh, previous.import_total_wh),
                                    ("export", reading.export_start_wh, previous.export_total_wh)):
        if start < end_before or (adjacent and start != end_before):
            raise MeterReadingRejected(
                RejectReason.COUNTER_CONTRADICTION,
                f"{name} counter starts slot {reading.slot} at {start} Wh, but the previous reading "
                f"(slot {previous.slot}) ended at {end_before} Wh")


def to_meter_entry(signed: Signed[MeterReading]) -> MeterEntry:
    """The settlement view of an accepted reading, named by the signed message's id."""
    r = signed.body
    return MeterEntry(account=r.account, zone=r.zone, slot=r.slot, import_wh=r.import_wh, export_wh=r.export_wh,
                      green_wh=r.green_wh, green_source=r.green_source, entry_hash=signed.message_id)
