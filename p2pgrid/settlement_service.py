"""Settlement and metering in a running node (trio shell around ``p2pgrid.settlement_entries``).

Three small jobs, each driven by the node's market clock (Unix ms, polled; no trio timers on
market time, so a scaled or stepped clock works the same):

* ``MeterService`` — at the end of each slot, asks ``metered(slot)`` for the node's metered energy
  ``(import_wh, export_wh, green_wh, source)`` (or ``None``: nothing to report), signs a
  ``MeterReading`` with the node's **meter key** (a separate Ed25519 key, ``meter.key`` in the
  data dir; never the trading key) and submits it as a ``meter`` entry in the node's own chain.
  Counters continue from the last certified reading of the same meter key. A slot whose metering
  deadline has passed is skipped: the ledger would reject it as ``late``, and the slot settles as
  zero delivery without it. With ``is_closed(slot)`` the source says whether a slot's energy is
  final yet (a device service closes a slot only when the first meter sample after its end
  arrives): a slot not closed is asked again at the next poll, until its deadline. A reading is
  only sent while at least ``submit_lead_ms`` remain before the deadline: validators judge the
  deadline by their own clocks, and an entry some of them voted for before it and the rest refuse
  after it would stay in doubt, holding up the account's chain — a slot too close to its deadline
  is skipped like a late one. Slots whose deadline is after ``until_ms`` (if set) are not metered.
  With ``delay_ms`` a reading waits that long after its slot's end (meters of a zone spread their
  readings instead of all asking the committee for votes at the same instant).
* ``SettlementService`` — once a slot's metering deadline has passed and the slot has certified
  trades or meter entries (and, with ``until_ms``, the deadline is not after it), recomputes its
  settlement from the certified state and submits the ``settle`` entry (validators recompute it
  too and vote only for the identical result). Runs on
  the zone operator (gateway) node; any node may run it, but two proposers of one slot at once can
  split the committee's votes so that neither certifies (then the slot stays unsettled: the
  never-vote-twice rule makes it final) — so run one proposer per zone.
* ``register_meters`` — the gateway certifies ``meter_registration`` entries: this meter key
  measures that account. Keys already registered are skipped (idempotent); if some submissions
  are refused (no quorum yet) the others still go through and the first refusal is raised.

A proposal the committee refuses (e.g. a validator has not applied every meter entry yet) is
retried at the next poll. A settlement too large for one ledger entry (``settle`` bodies are
limited; chunking is not done yet) is logged once as an error and left unsettled — the node
carries on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import trio

from p2pgrid.errors import KeystoreError, LedgerError, SettlementError, WireError
from p2pgrid.identity import NodeKey, load_keystore, save_keystore
from p2pgrid.ledger.chain import LedgerRules, LedgerState
from p2pgrid.metering import MeterReading, MeterRegistration
from p2pgrid.settlement_entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, SettlementLedgerRules, compute_settlement,
    meter_registration_of, slots_to_settle, unsettled_slots,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, sign

__all__ = [
    "METER_KEY_FILE", "Metered", "MeterService", "SettlementService", "load_or_create_meter_key", "register_meters",
]

log = logging.getLogger(__name__)

METER_KEY_FILE = "meter.key"
Metered = tuple[int, int, int, Source]   # import_wh, export_wh, green_wh, green source


class Ledger(Protocol):
    """What these services use of ``LedgerService``."""

    me: bytes
    state: LedgerState

    @property
    def rules(self) -> LedgerRules: ...

    def next_entry(self, kind: str, body: Any) -> Any: ...

    async def submit(self, entry: Any) -> Any: ...


def load_or_create_meter_key(data_dir: Path, key_file: str = METER_KEY_FILE) -> NodeKey:
    """The node's meter key from ``<data_dir>/<key_file>``; a new one is made (0600) if missing."""
    path = Path(data_dir) / key_file
    try:
        return load_keystore(path)
    except KeystoreError:
        if path.exists():
            raise
    key = NodeKey.generate()
    save_keystore(path, key)
    return key


async def register_meters(ledger: Ledger, meters: Iterable[tuple[bytes, bytes]], now_ms: int) -> int:
    """As the gateway: certify a registration for each ``(account, meter_key)`` not registered yet.
    Returns how many were submitted."""
    entries = [ledger.next_entry(METER_REGISTRATION_KIND,
                                 MeterRegistration(ledger.me, account, meter_key, ledger.rules.zone, now_ms))
               for account, meter_key in meters if meter_registration_of(ledger.state, meter_key) is None]
    refused: list[LedgerError] = []

    async def submit(entry: Any) -> None:
        try:
            await ledger.submit(entry)
        except LedgerError as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        for entry in entries:
            nursery.start_soon(submit, entry)
    if refused:
        raise refused[0]
    return len(entries)


class MeterService:
    """Submits this node's signed meter reading for each slot that ends (see module docstring)."""

    def __init__(self, ledger: Ledger, meter_key: NodeKey, slot_rules: SlotRules,
                 metered: Callable[[int], Metered | None], clock: Callable[[], int], *, poll_s: float = 0.5,
                 is_closed: Callable[[int], bool] | None = None, submit_lead_ms: int = 0,
                 until_ms: int | None = None, delay_ms: int = 0) -> None:
        self.ledger = ledger
        self.is_closed = is_closed
        self.delay_ms = delay_ms
        self.submit_lead_ms = submit_lead_ms
        self.until_ms = until_ms
        self.meter_key = meter_key
        self.slot_rules = slot_rules
        self.metered = metered
        self.clock = clock
        self.poll_s = poll_s
        self.next_slot: int = slot_rules.slot_of(clock())
        self.submitted: list[int] = []
        self.skipped_late: list[int] = []
        self._last: MeterReading | None = None

    def _previous(self) -> MeterReading | None:
        certified = self.ledger.state.extra.get(f"meter_last/{self.ledger.me.hex()}")
        candidates = [r for r in (certified, self._last)
                      if isinstance(r, MeterReading) and r.meter_key == self.meter_key.public_key]
        return max(candidates, key=lambda r: r.slot, default=None)

    def reading_for(self, slot: int, now_ms: int) -> MeterEntryBody | None:
        """The signed reading of ``slot``, or None when ``metered`` has nothing for it."""
        energy = self.metered(slot)
        if energy is None:
            return None
        import_wh, export_wh, green_wh, source = energy
        previous = self._previous()
        reading = MeterReading(
            account=self.ledger.me, meter_key=self.meter_key.public_key, zone=self.ledger.rules.zone, slot=slot,
            import_wh=import_wh, export_wh=export_wh, green_wh=green_wh, green_source=source,
            import_total_wh=(previous.import_total_wh if previous else 0) + import_wh,
            export_total_wh=(previous.export_total_wh if previous else 0) + export_wh, created_ms=now_ms)
        self._last = reading
        return MeterEntryBody(sign(reading, self.meter_key).encoded)

    async def meter_due(self) -> list[int]:
        """Submit the readings of every slot that ended since the last call. Returns their slots."""
        done: list[int] = []
        now = self.clock()
        while self.slot_rules.slot_end_ms(self.next_slot) <= now:
            slot = self.next_slot
            due = self.slot_rules.metering_due_ms(slot)
            if self.until_ms is not None and due > self.until_ms:
                break             # metering has ended
            late = now + self.submit_lead_ms >= due
            if not late and now < self.slot_rules.slot_end_ms(slot) + self.delay_ms:
                break             # its turn in the spread has not come yet
            if not late and self.is_closed is not None and not self.is_closed(slot):
                break             # its energy is not final yet: ask again at the next poll
            self.next_slot = slot + self.slot_rules.length_s
            if late:
                self.skipped_late.append(slot)   # the ledger would reject it as late; it settles as zero
                log.info("meter reading of slot %d not sent: too close to (or past) its metering deadline", slot)
                continue
            body = self.reading_for(slot, now)
            if body is None:
                continue
            try:
                await self.ledger.submit(self.ledger.next_entry(METER_KIND, body))
            except LedgerError as exc:
                log.warning("meter reading of slot %d refused: %s", slot, exc)
                continue
            self.submitted.append(slot)
            done.append(slot)
        return done

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.meter_due()
            await trio.sleep(self.poll_s)


class SettlementService:
    """Proposes the ``settle`` entry of every slot that is due (see module docstring)."""

    def __init__(self, ledger: Ledger, clock: Callable[[], int], *, poll_s: float = 0.5,
                 until_ms: int | None = None) -> None:
        self.ledger = ledger
        self.clock = clock
        self.poll_s = poll_s
        self.until_ms = until_ms
        self.settled: list[int] = []
        self.too_large: set[int] = set()          # slots whose settlement does not fit one entry
        self._scanned_height: int | None = None   # state height at the last full scan
        self._next_due_ms: int | None = None      # earliest deadline of a slot still waiting for it

    def _scan_needed(self, now_ms: int) -> bool:
        """Scanning the state costs O(state): only redo it when the state grew or a deadline passed."""
        if self.ledger.state.height != self._scanned_height:
            return True
        return self._next_due_ms is not None and now_ms >= self._next_due_ms

    async def settle_due(self) -> list[int]:
        """Propose every due slot once; returns the slots certified now (refused ones wait)."""
        now = self.clock()
        if not self._scan_needed(now):
            return []
        self._scanned_height = self.ledger.state.height
        rules = self.ledger.rules
        waiting = [rules.slots.metering_due_ms(s) for s in unsettled_slots(self.ledger.state)
                   if isinstance(rules, SettlementLedgerRules) and rules.slots.metering_due_ms(s) > now]
        self._next_due_ms = min(waiting, default=None)
        done: list[int] = []
        for slot in slots_to_settle(self.ledger.state, rules, now):
            if slot in self.too_large or (self.until_ms is not None and isinstance(rules, SettlementLedgerRules)
                                          and rules.slots.metering_due_ms(slot) > self.until_ms):
                continue
            try:
                body, _ = compute_settlement(self.ledger.state, rules, slot)
                entry = self.ledger.next_entry(SETTLE_KIND, body)
            except WireError as exc:
                log.error("settlement of slot %d does not fit one ledger entry, left unsettled: %s", slot, exc)
                self.too_large.add(slot)
                continue
            except SettlementError as exc:
                log.info("settlement of slot %d not computable yet: %s", slot, exc)
                self._scanned_height = None   # retry at the next poll
                continue
            try:
                await self.ledger.submit(entry)
            except (LedgerError, SettlementError) as exc:
                log.info("settlement of slot %d not certified yet: %s", slot, exc)
                self._scanned_height = None   # retry at the next poll
                continue
            self.settled.append(slot)
            done.append(slot)
        return done

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.settle_due()
            await trio.sleep(self.poll_s)
