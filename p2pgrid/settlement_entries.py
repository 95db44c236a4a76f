"""Ledger entry kinds for metering, and how settlement results map onto the ledger (pure).

Importing this module registers two kinds with ``p2pgrid.ledger.chain.register_kind`` (no ledger
file changes):

``meter_registration`` — in the zone **gateway**'s chain (the zone operator). Body: a
  ``metering.MeterRegistration`` whose ``operator`` is the gateway and whose zone is the ledger's
  zone. A meter key measures one account, ever: the conflict key ``meter_key/<key>`` lets at most
  one certified registration claim it. State: ``extra["meter_key/<key hex>"] = registration``.

``meter`` — in the metered **account**'s own chain. Body: ``MeterEntryBody(reading)``, the signed
  ``p2pgrid/meter/v1`` reading bytes, signed by the meter key. The validator runs
  ``metering.validate_meter_reading`` against the certified registrations, the account's last
  certified reading (counters) and its own ``now_ms`` (deadline), with the zone's ``SlotRules``
  (``LedgerRules.slots`` when the ledger has it, else the defaults). A rejection is
  ``EntryRejected(BAD_BODY, "meter reading rejected (<reason>): …")``. The account's chain orders
  its readings, so a slot is metered at most once per account. State:
  ``extra["meter/<account hex>/<slot>"] = MeterRecord`` and ``extra["meter_last/<account hex>"]``.
  A meter entry waits (``is_ready``) until the registration of its key is certified.

``meter_entries_for_slot(state, slot)`` reads the certified meter entries back as the
``settlement.MeterEntry`` list that ``settle_slot`` takes.

Mapping settlement and certificates onto the ledger
---------------------------------------------------
* ``Reason.TRADE`` transfers are already on the ledger: the buyer's ``lock`` and the seller's
  ``fill`` moved the trade value when the trade was certified. They are not posted again.
* Every other transfer is between one account and the gateway. ``imbalance_postings(settlement)``
  nets them per account: the gateway posts them as one ``settle`` entry per (slot, chunk) in its
  chain, with the conflict key ``settle/<slot>`` so a slot settles once; validators recompute
  ``settle_slot`` from certified trades and meter entries and vote only for identical postings.
  That kind needs certified trades to carry slot, both zones and the green flag (the ledger's
  ``Fill`` body does not yet) and a rule on debits a gateway entry may impose on other accounts
  (a posting of a shortfall debits the seller from the gateway's chain); it is NOT registered here.
* Certificates (issue / transfer / retire) are a pure function of a settled slot
  (``certificates.certify_slot``); once ``settle`` is certified, applying it can store the slot's
  ``SlotCertificates`` in ``state.certificates`` so the state root covers them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from p2pgrid.errors import WireError
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, RejectReason, register_kind,
)
from p2pgrid.ledger.messages import Entry
from p2pgrid.metering import (
    MeterReading, MeterReadingRejected, MeterRegistration, MeterRegistry, decode_meter_reading, validate_meter_reading,
)
from p2pgrid.settlement import MeterEntry, Reason, SlotSettlement
from p2pgrid.units import SlotRules
from p2pgrid.wire import struct

__all__ = [
    "METER_KIND", "METER_REGISTRATION_KIND", "MeterEntryBody", "MeterRecord", "Posting", "imbalance_postings",
    "meter_entries_for_slot", "meter_registration_of",
]

METER_KIND = "meter"
METER_REGISTRATION_KIND = "meter_registration"
MAX_READING_BYTES = 512


@struct
@dataclass(frozen=True)
class MeterEntryBody:
    """The body of a ``meter`` entry: one signed ``p2pgrid/meter/v1`` reading, as sent."""

    reading: bytes = field(metadata={"max_len": MAX_READING_BYTES})


@struct
@dataclass(frozen=True)
class MeterRecord:
    """A certified meter reading in the derived state, with the id of its signed message."""

    reading: MeterReading
    reading_hash: bytes = field(metadata={"size": 32})


def _registration_key(meter_key: bytes) -> str:
    return f"meter_key/{meter_key.hex()}"


def _record_key(account: bytes, slot: int) -> str:
    return f"meter/{account.hex()}/{slot:015d}"


def _last_key(account: bytes) -> str:
    return f"meter_last/{account.hex()}"


def _slot_rules(rules: LedgerRules) -> SlotRules:
    slots = getattr(rules, "slots", None)
    return slots if isinstance(slots, SlotRules) else SlotRules()


def meter_registration_of(state: LedgerState, meter_key: bytes) -> MeterRegistration | None:
    registration = state.extra.get(_registration_key(meter_key))
    return registration if isinstance(registration, MeterRegistration) else None


# --- meter_registration ---------------------------------------------------------------------

def validate_meter_registration(state: LedgerState, entry: Entry, body: MeterRegistration, rules: LedgerRules,
                                now_ms: int) -> None:
    if entry.account != rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the zone operator (gateway) registers meters")
    if body.operator != entry.account:
        raise EntryRejected(RejectReason.BAD_BODY, "the registration names another operator")
    if body.zone != rules.zone:
        raise EntryRejected(RejectReason.WRONG_ZONE, f"meter registered for zone {body.zone}, not {rules.zone}")
    if body.account == rules.gateway:
        raise EntryRejected(RejectReason.BAD_BODY, "the gateway is not a metered account")
    if meter_registration_of(state, body.meter_key) is not None:
        raise EntryRejected(RejectReason.BAD_BODY, f"meter key {body.meter_key.hex()[:16]}… is registered already")


def process_meter_registration(state: LedgerState, entry: Entry, body: MeterRegistration, rules: LedgerRules) -> None:
    state.extra[_registration_key(body.meter_key)] = body


def _registration_conflict(entry: Entry, body: MeterRegistration) -> tuple[bytes, ...]:
    return (b"meter_key/" + body.meter_key,)


# --- meter ------------------------------------------------------------------------------------

def _decode_reading(body: MeterEntryBody) -> Any:
    try:
        return decode_meter_reading(body.reading)
    except WireError as exc:
        raise EntryRejected(RejectReason.BAD_BODY, f"meter reading: {exc}") from None


def validate_meter(state: LedgerState, entry: Entry, body: MeterEntryBody, rules: LedgerRules, now_ms: int) -> None:
    signed = _decode_reading(body)
    reading: MeterReading = signed.body
    if reading.account != entry.account:
        raise EntryRejected(RejectReason.BAD_BODY, "a meter reading goes in its own account's chain")
    if reading.zone != rules.zone:
        raise EntryRejected(RejectReason.WRONG_ZONE, f"meter reading for zone {reading.zone}, not {rules.zone}")
    registration = meter_registration_of(state, reading.meter_key)
    registry = MeterRegistry.of([registration] if registration is not None else [])
    previous = state.extra.get(_last_key(reading.account))
    try:
        validate_meter_reading(signed, registry, _slot_rules(rules), now_ms, previous)
    except MeterReadingRejected as exc:
        raise EntryRejected(RejectReason.BAD_BODY, str(exc)) from None


def process_meter(state: LedgerState, entry: Entry, body: MeterEntryBody, rules: LedgerRules) -> None:
    try:
        signed = decode_meter_reading(body.reading)
    except WireError as exc:
        raise ChainInconsistent(f"certified meter entry has a bad reading: {exc}") from None
    reading: MeterReading = signed.body
    state.extra[_record_key(reading.account, reading.slot)] = MeterRecord(reading, signed.message_id)
    state.extra[_last_key(reading.account)] = reading


def _meter_ready(state: LedgerState, entry: Entry, body: MeterEntryBody) -> bool:
    try:
        reading = decode_meter_reading(body.reading).body
    except WireError:
        return True     # apply will report the inconsistency
    return meter_registration_of(state, reading.meter_key) is not None


register_kind(KindRules(METER_REGISTRATION_KIND, MeterRegistration, validate_meter_registration,
                        process_meter_registration, _registration_conflict))
register_kind(KindRules(METER_KIND, MeterEntryBody, validate_meter, process_meter, is_ready=_meter_ready))


# --- reading results back -------------------------------------------------------------------

def meter_entries_for_slot(state: LedgerState, slot: int) -> list[MeterEntry]:
    """The certified meter entries of ``slot``, as ``settle_slot`` takes them (sorted by account)."""
    suffix = f"/{slot:015d}"
    entries = []
    for key in sorted(k for k in state.extra if k.startswith("meter/") and k.endswith(suffix)):
        record: MeterRecord = state.extra[key]
        r = record.reading
        entries.append(MeterEntry(account=r.account, zone=r.zone, slot=r.slot, import_wh=r.import_wh,
                                  export_wh=r.export_wh, green_wh=r.green_wh, green_source=r.green_source,
                                  entry_hash=record.reading_hash))
    return entries


@dataclass(frozen=True, slots=True)
class Posting:
    """What a settled slot moves between ``account`` and the gateway beyond the already-certified
    trades: ``amount_uc`` > 0 means the gateway pays the account, < 0 the account pays."""

    account: bytes
    amount_uc: int


def imbalance_postings(settlement: SlotSettlement) -> tuple[Posting, ...]:
    """The non-trade transfers of ``settlement``, netted per account (gateway excluded, sorted).

    Their sum is minus the gateway's net: money stays conserved when they are posted."""
    net: dict[bytes, int] = defaultdict(int)
    for t in settlement.transfers:
        if t.reason is Reason.TRADE:
            continue
        if t.payer != settlement.gateway:
            net[t.payer] -= t.amount_uc
        if t.payee != settlement.gateway:
            net[t.payee] += t.amount_uc
    return tuple(Posting(account, amount) for account, amount in sorted(net.items()) if amount)
