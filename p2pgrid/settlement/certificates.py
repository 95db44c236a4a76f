"""Granular green certificates, EnergyTag-style: issued per metered green Wh, moved with the trades
that delivered them, retired against metered consumption in the same slot (pure).

Units and their names
---------------------
Each Wh of green generation in a meter entry is one certificate **unit**. The units of one meter
entry form a **batch**, named by ``(slot, zone, producer, meter_entry_hash)`` (and carrying its
``source``); unit ``i`` of a batch is its ``i``-th Wh, ``0 <= i < green_wh``. Units are held and
moved as half-open ranges ``UnitRange(batch, start, end)`` — never one object per Wh — so a whole
slot of a large PV station is a single range.

The life of a unit (``certify_slot``, from a ``SlotSettlement``)
----------------------------------------------------------------
1. **Issue.** Every meter entry with ``green_wh > 0`` issues its batch, units ``[0, green_wh)``, to
   the producer. Units issued = green generation metered, exactly.
2. **Move.** A *green* trade moves as many units from its seller to its buyer as the trade
   *delivered* (settlement's pro-rata rule), capped by the units the seller still has of its own
   generation: only delivered Wh move, and a seller cannot pass on green it did not generate in
   that slot (a reseller's received units stay with it). A seller's green trades draw on its units
   in the order the settlement lists them — ascending trade id, after the PPA positions with
   priority over spot (the order its export covers them in) —, each taking the lowest unit numbers left, so the result is a
   function of the sets of trades and meter entries. Pool swaps settle as green trades (see
   ``settlement.entries``): pool energy carries the host's units only as far as the host's own
   metered green generation of the slot covers it, by this same cap.
3. **Retire.** Each account retires the units it *received* in the slot against its metered
   ``import_wh`` of the same slot, lowest first: ``retired <= min(received, import_wh)``. Hourly
   matching: a unit can only be retired in the slot it was generated in. A producer's own units are
   not retired against its grid import (its self-consumption is behind the meter, not in the
   import); units nobody consumed stay held, unretired.

So a Wh is issued once (one batch per meter entry; ``CertificateRegistry.add`` rejects a batch it
already holds), is in exactly one place at any time (held by one account, or retired by one
account), and is retired at most once, by an account whose meter shows it consumed at least that
much in that slot.

``CertificateRegistry`` collects the slots and answers ``holdings(account)``,
``retirement_statement(account)`` and ``trace(batch, unit)`` (the whole life of one green Wh).

Errors::

    LedgerError                 (p2pgrid.errors)
    └── CertificateError
        └── DoubleIssue         a batch issued again (the same meter entry certified twice)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from p2pgrid.errors import LedgerError
from p2pgrid.settlement.rules import SlotSettlement
from p2pgrid.wire import Source

__all__ = [
    "CertificateBatch", "CertificateError", "CertificateRegistry", "CertificateTransfer", "DoubleIssue",
    "Retirement", "RetirementStatement", "SlotCertificates", "StatementLine", "UnitHistory", "UnitRange",
    "certify_slot", "normalize", "total_wh",
]


class CertificateError(LedgerError):
    pass


class DoubleIssue(CertificateError):
    pass


@dataclass(frozen=True, order=True, slots=True)
class CertificateBatch:
    """The green generation of one meter entry: one unit per Wh."""

    slot: int
    zone: str
    producer: bytes
    meter_entry_hash: bytes
    source: Source


@dataclass(frozen=True, order=True, slots=True)
class UnitRange:
    """Units ``[start, end)`` of ``batch``."""

    batch: CertificateBatch
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a unit range needs 0 <= start < end, got [{self.start}, {self.end})")

    @property
    def wh(self) -> int:
        return self.end - self.start

    def __contains__(self, unit: object) -> bool:
        return isinstance(unit, int) and self.start <= unit < self.end


@dataclass(frozen=True, slots=True)
class CertificateTransfer:
    """Units that moved from ``seller`` to ``buyer`` with trade ``trade_id``."""

    units: UnitRange
    seller: bytes
    buyer: bytes
    trade_id: bytes


@dataclass(frozen=True, slots=True)
class Retirement:
    """Units retired by ``account`` against its metered consumption."""

    units: UnitRange
    account: bytes


@dataclass(frozen=True)
class SlotCertificates:
    """Everything that happened to certificates in one settled slot of one area."""

    slot: int
    issued: tuple[UnitRange, ...]
    transfers: tuple[CertificateTransfer, ...]
    retirements: tuple[Retirement, ...]
    holdings: tuple[tuple[bytes, tuple[UnitRange, ...]], ...]   # unretired units per account
    consumption: tuple[tuple[bytes, int], ...]                  # metered import_wh per account

    def holdings_of(self, account: bytes) -> tuple[UnitRange, ...]:
        return dict(self.holdings).get(account, ())

    def retired_by(self, account: bytes) -> tuple[UnitRange, ...]:
        return tuple(r.units for r in self.retirements if r.account == account)

    def consumed_by(self, account: bytes) -> int:
        return dict(self.consumption).get(account, 0)


def total_wh(ranges: Iterable[UnitRange]) -> int:
    return sum(r.wh for r in ranges)


def normalize(ranges: Iterable[UnitRange]) -> list[UnitRange]:
    """Sorted, with touching ranges of one batch merged. Overlap is a bug here: raises ValueError."""
    merged: list[UnitRange] = []
    for r in sorted(ranges):
        if merged and merged[-1].batch == r.batch and r.start < merged[-1].end:
            raise ValueError(f"unit ranges overlap: {merged[-1]} and {r}")
        if merged and merged[-1].batch == r.batch and merged[-1].end == r.start:
            merged[-1] = UnitRange(r.batch, merged[-1].start, r.end)
        else:
            merged.append(r)
    return merged


def _take(ranges: list[UnitRange], wh: int) -> tuple[list[UnitRange], list[UnitRange]]:
    """Split sorted ``ranges`` into the first ``wh`` units (or all, if fewer) and the rest."""
    taken: list[UnitRange] = []
    rest: list[UnitRange] = []
    for r in ranges:
        if wh <= 0:
            rest.append(r)
        elif r.wh <= wh:
            taken.append(r)
            wh -= r.wh
        else:
            taken.append(UnitRange(r.batch, r.start, r.start + wh))
            rest.append(UnitRange(r.batch, r.start + wh, r.end))
            wh = 0
    return taken, rest


def certify_slot(settlement: SlotSettlement) -> SlotCertificates:
    """Issue, move and retire the certificates of a settled slot (rules in the module docstring)."""
    own: dict[bytes, list[UnitRange]] = {}          # producer -> its own units not yet moved
    received: dict[bytes, list[UnitRange]] = defaultdict(list)
    issued: list[UnitRange] = []
    for entry in settlement.meter_entries:
        if entry.green_wh > 0:
            batch = CertificateBatch(entry.slot, entry.zone, entry.account, entry.entry_hash, entry.green_source)
            issued.append(UnitRange(batch, 0, entry.green_wh))
            own[entry.account] = [issued[-1]]

    transfers: list[CertificateTransfer] = []
    for delivery in settlement.deliveries:      # settle_slot's order: priority, then trade id
        if not delivery.green or delivery.delivered_wh == 0 or not own.get(delivery.seller):
            continue
        moved, own[delivery.seller] = _take(own[delivery.seller], delivery.delivered_wh)
        transfers += [CertificateTransfer(r, delivery.seller, delivery.buyer, delivery.trade_id) for r in moved]
        received[delivery.buyer].extend(moved)

    imports = {entry.account: entry.import_wh for entry in settlement.meter_entries}
    retirements: list[Retirement] = []
    for account in sorted(received):
        retired, received[account] = _take(normalize(received[account]), imports.get(account, 0))
        retirements += [Retirement(r, account) for r in retired]

    holders = sorted(set(own) | set(received))
    holdings = tuple((a, tuple(normalize(own.get(a, []) + received.get(a, [])))) for a in holders)
    return SlotCertificates(
        slot=settlement.slot, issued=tuple(issued), transfers=tuple(transfers), retirements=tuple(retirements),
        holdings=tuple((a, units) for a, units in holdings if units),
        consumption=tuple(sorted(imports.items())))


# --- across slots -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StatementLine:
    """One slot of an account's retirement statement."""

    slot: int
    consumed_wh: int
    retired_wh: int
    retired: tuple[UnitRange, ...]


@dataclass(frozen=True, slots=True)
class RetirementStatement:
    """What an account consumed and how much of it is matched by retired green units, per slot."""

    account: bytes
    lines: tuple[StatementLine, ...]

    @property
    def consumed_wh(self) -> int:
        return sum(line.consumed_wh for line in self.lines)

    @property
    def retired_wh(self) -> int:
        return sum(line.retired_wh for line in self.lines)

    def retired_by_source(self) -> dict[Source, int]:
        by_source: dict[Source, int] = defaultdict(int)
        for line in self.lines:
            for r in line.retired:
                by_source[r.batch.source] += r.wh
        return dict(by_source)


@dataclass(frozen=True, slots=True)
class UnitHistory:
    """The life of one green Wh: issued to its producer, moved by trades, then held or retired."""

    batch: CertificateBatch
    unit: int
    transfers: tuple[CertificateTransfer, ...]
    holder: bytes | None
    retired_by: bytes | None


@dataclass(frozen=True)
class CertificateRegistry:
    """The certificates of many settled slots, with the never-issued-twice rule. Immutable."""

    slots: tuple[SlotCertificates, ...] = ()

    def add(self, certificates: SlotCertificates) -> CertificateRegistry:
        """A registry that also holds ``certificates``. Adding the identical slot again is a no-op."""
        if certificates in self.slots:
            return self
        known = {r.batch for s in self.slots for r in s.issued}
        for r in certificates.issued:
            if r.batch in known:
                raise DoubleIssue(f"batch of {r.batch.producer.hex()[:16]}… for slot {r.batch.slot} "
                                  "is already issued")
        return CertificateRegistry(self.slots + (certificates,))

    @property
    def issued_wh(self) -> int:
        return sum(total_wh(s.issued) for s in self.slots)

    @property
    def retired_wh(self) -> int:
        return sum(r.units.wh for s in self.slots for r in s.retirements)

    def holdings(self, account: bytes) -> tuple[UnitRange, ...]:
        """Units ``account`` holds, unretired, over every slot."""
        return tuple(normalize(r for s in self.slots for r in s.holdings_of(account)))

    def retirement_statement(self, account: bytes) -> RetirementStatement:
        lines = []
        for s in sorted(self.slots, key=lambda s: s.slot):
            retired = s.retired_by(account)
            consumed = s.consumed_by(account)
            if retired or consumed:
                lines.append(StatementLine(s.slot, consumed, total_wh(retired), retired))
        return RetirementStatement(account, tuple(lines))

    def trace(self, batch: CertificateBatch, unit: int) -> UnitHistory:
        """Where unit ``unit`` of ``batch`` went. Raises KeyError if it was never issued."""
        for s in self.slots:
            if any(r.batch == batch and unit in r for r in s.issued):
                moves = tuple(t for t in s.transfers if t.units.batch == batch and unit in t.units)
                retired = [r.account for r in s.retirements if r.units.batch == batch and unit in r.units]
                holders = [a for a, units in s.holdings if any(r.batch == batch and unit in r for r in units)]
                return UnitHistory(batch, unit, moves, holders[0] if holders else None,
                                   retired[0] if retired else None)
        raise KeyError(f"unit {unit} of that batch was never issued")
