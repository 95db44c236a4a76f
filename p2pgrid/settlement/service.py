"""Settlement and metering in a running node (trio shell around ``p2pgrid.settlement.entries``).

Three small jobs, each driven by the node's market clock (Unix ms, polled; no trio timers on
market time, so a scaled or stepped clock works the same). None of them has to race a validator's
clock: the ledger judges every time rule on times signed into the entries (see
``settlement.entries``), so a service that is slow only delays its entries, it never makes them
invalid.

* ``MeterService`` — at the end of each slot, asks ``metered(slot)`` for the node's metered energy
  ``(import_wh, export_wh, green_wh, source)`` (or ``None``: nothing to report), signs a
  ``MeterReading`` with the node's **meter key** (a separate Ed25519 key, ``meter.key`` in the
  data dir; never the trading key), dated ``created_ms`` = now, and submits it as a ``meter``
  entry in the node's own chain. Counters continue from the last certified reading of the same
  meter key. With ``is_closed(slot)`` the source says whether a slot's energy is final yet (a
  device service closes a slot only when the first meter sample after its end arrives): a slot
  not closed is asked again at the next poll. With ``delay_ms`` a reading waits that long after
  its slot's end (meters of a zone spread their readings instead of all asking the committee for
  votes at the same instant). Slots whose deadline is after ``until_ms`` (if set) are not metered.

  **Time base.** A reading is valid iff its meter-signed ``created_ms`` is in
  ``[slot_end, metering_due)`` — whenever it reaches the committee. So a reading is signed as
  long as *now* is before the slot's metering due (one signed at or after it would be refused by
  every validator: the slot is skipped, ``skipped_late``, and settles as zero delivery for this
  account unless a reading arrives in time). A signed reading is submitted however late: a node
  that is slow to get it certified still gets it certified, and if its slot was settled in the
  meantime the gateway reconciles the slot. Readings are certified in slot order (the chain
  requires it): a reading whose entry is in doubt is offered again, unchanged, before any later
  one; a reading refused for good is dropped only if the ledger rules say it can never be valid
  (otherwise it is retried in a fresh entry, up to ``MAX_REFUSALS`` times).
* ``SettlementService`` — on the zone gateway's node, the single writer of ``settle`` entries.
  Slot S is settled once the clock passes ``metering_due_ms(S) + settle_delay_ms`` (**W**), over
  the inputs (trades, swaps, meter entries) certified here then; afterwards, whenever new
  certified inputs of a settled slot appear, it submits a **reconciliation** ``settle`` naming the
  union (postings = union result − already posted). Validators check each settle against the
  inputs it names only, so it does not matter what else they hold.

  **W** (``DEFAULT_SETTLE_DELAY_MS`` = 30 s of market time; ``[gateway] settle_delay_ms``) bounds
  how long a reading taken just before the due takes to be certified and reach the gateway: the
  validators may hold an entry dated up to ``LedgerRules.clock_skew_ms`` (5 s) ahead of their
  clocks, and a proposal takes a few vote rounds (batching, retries after a lost reply, a
  validator pulling a missing dependency) of well under a second each on a quiet zone, several
  seconds under load. 30 s covers that with a margin, and it is a tenth of the default grace
  (300 s), so settlement is not noticeably later. W only trades settlement delay against the
  number of reconciliation entries: a reading certified after it is settled by reconciliation,
  never lost, so no value of W is unsafe. (A scaled clock — simnet — should set W in proportion
  to its speed, as it does the grace.)

  **Work per poll** is proportional to what changed: the service keeps an index of certified
  inputs not yet in their slot's settlement, fed by the entries certified since the last poll
  (read from the ledger's store by chain head; one scan of the state at start-up, or on every
  change when the ledger has no store, e.g. in tests), and looks only at slots in that index.
* ``register_meters`` — the gateway certifies ``meter_registration`` entries: this meter key
  measures that account. Keys already registered are skipped (idempotent); if some submissions
  are refused (no quorum yet) the others still go through and the first refusal is raised.

A settle the committee has not decided yet (in doubt: validators waiting for an input they have
not received) is offered again unchanged at the next poll, never replaced by a second settle of
its slot; one refused for good is rebuilt; one the ledger certified in the background is
recognised. After a restart, the settles the ledger still holds in doubt are adopted the same way
(when the ledger offers ``in_doubt_entries()``). A settlement too large for one ledger entry
(``settle`` bodies are limited; chunking is not done yet) is logged once as an error and left
unsettled — the node carries on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio

from p2pgrid.errors import KeystoreError, LedgerError, SettlementError, WireError
from p2pgrid.identity import NodeKey, load_keystore, save_keystore
from p2pgrid.ledger.chain import EntryRejected, LedgerRules, LedgerState, build_entry, decode_body, kind_rules
from p2pgrid.ledger.service import EntryInDoubt
from p2pgrid.settlement.metering import MeterReading, MeterRegistration, MeterRegistrationV2, decode_meter_reading
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, METER_REGISTRATION_V2_KIND, SETTLE_KINDS, MeterEntryBody, SettlementLedgerRules,
    SlotInputs, has_meters, input_of_entry, inputs_by_slot, meter_record_of, meter_registration_of, plan_settlement,
    settled_inputs, settlement_of,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, sign

__all__ = [
    "DEFAULT_SETTLE_DELAY_MS", "MAX_REFUSALS", "METER_KEY_FILE", "Metered", "MeterService", "SettlementService",
    "load_or_create_meter_key", "register_meters",
]

log = logging.getLogger(__name__)

METER_KEY_FILE = "meter.key"
Metered = tuple[int, int, int, Source]   # import_wh, export_wh, green_wh, green source
DEFAULT_SETTLE_DELAY_MS = 30_000         # W: see the module docstring
MAX_REFUSALS = 3                         # a reading refused for good this often is given up


class Ledger(Protocol):
    """What these services use of ``LedgerService`` (``store`` optional)."""

    me: bytes
    state: LedgerState

    @property
    def rules(self) -> LedgerRules: ...

    def next_entry(self, kind: str, body: Any) -> Any: ...

    async def submit(self, entry: Any) -> Any: ...

    def is_in_doubt(self, entry: Any) -> bool: ...

    def in_doubt_entries(self) -> list[Any]: ...


def _in_doubt(ledger: Ledger, entry: Any, exc: BaseException) -> bool:
    """Whether a refused submission may still be certified: the ledger keeps offering it, so the
    same entry must be submitted again (never another one at its seq)."""
    return isinstance(exc, EntryInDoubt) or ledger.is_in_doubt(entry)


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


async def register_meters(ledger: Ledger, meters: Iterable[tuple[bytes, bytes]], now_ms: int,
                          export_w: Mapping[bytes, int] | None = None) -> int:
    """As the gateway: certify a registration for each ``(account, meter_key)`` not registered yet.
    A meter key in ``export_w`` is registered with that export capacity (``meter_registration_v2``),
    one not in it with none (``meter_registration``: its account can buy, not sell). Returns how
    many were submitted."""
    exports = export_w or {}

    def entry_of(account: bytes, meter_key: bytes) -> Any:
        if meter_key in exports:
            return ledger.next_entry(METER_REGISTRATION_V2_KIND, MeterRegistrationV2(
                ledger.me, account, meter_key, ledger.rules.zone, now_ms, exports[meter_key]))
        return ledger.next_entry(METER_REGISTRATION_KIND,
                                 MeterRegistration(ledger.me, account, meter_key, ledger.rules.zone, now_ms))

    entries = [entry_of(account, meter_key)
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


@dataclass
class _Signed:
    """A signed reading waiting for certification, and the entry carrying it (while in doubt)."""

    slot: int
    body: MeterEntryBody
    reading_id: bytes
    entry: Any = None
    refusals: int = 0


class MeterService:
    """Submits this node's signed meter reading for each slot that ends (see module docstring)."""

    def __init__(self, ledger: Ledger, meter_key: NodeKey, slot_rules: SlotRules,
                 metered: Callable[[int], Metered | None], clock: Callable[[], int], *, poll_s: float = 0.5,
                 is_closed: Callable[[int], bool] | None = None, until_ms: int | None = None,
                 delay_ms: int = 0, first_slot: int | None = None) -> None:
        self.ledger = ledger
        self.is_closed = is_closed
        self.delay_ms = delay_ms
        self.until_ms = until_ms
        self.meter_key = meter_key
        self.slot_rules = slot_rules
        self.metered = metered
        self.clock = clock
        self.poll_s = poll_s
        # From the slot in progress, or from ``first_slot`` (the node's start, when it had to wait for
        # its meter's registration): slots that ended meanwhile are still read if not yet due.
        now_slot = slot_rules.slot_of(clock())
        self.next_slot: int = now_slot if first_slot is None else min(first_slot, now_slot)
        self.submitted: list[int] = []       # slots whose reading is certified
        self.skipped_late: list[int] = []    # slots not read before their metering due
        self.dropped: list[int] = []         # signed readings the ledger can never accept
        self._queue: deque[_Signed] = deque()
        self._last: MeterReading | None = None

    def _previous(self) -> MeterReading | None:
        """The reading the next one continues from: the last certified one, the last signed here,
        or one the ledger still holds in doubt from before a restart (it will be certified before
        the next, so the next must continue its counters)."""
        certified = self.ledger.state.extra.get(f"meter_last/{self.ledger.me.hex()}")
        candidates = [certified, self._last, *self._in_doubt_readings()]
        return max((r for r in candidates if isinstance(r, MeterReading) and r.meter_key == self.meter_key.public_key),
                   key=lambda r: r.slot, default=None)

    def _in_doubt_readings(self) -> list[MeterReading]:
        readings = []
        for signed in self.ledger.in_doubt_entries():
            if signed.body.account == self.ledger.me and signed.body.kind == METER_KIND:
                try:
                    readings.append(decode_meter_reading(decode_body(signed.body).reading).body)
                except (EntryRejected, WireError):
                    continue
        return readings

    def reading_for(self, slot: int, now_ms: int) -> MeterEntryBody | None:
        """The signed reading of ``slot``, taken at ``now_ms``, or None when ``metered`` has nothing."""
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

    def _read_ended_slots(self, now: int) -> None:
        """Sign the reading of every slot that ended and is ready, in slot order, into the queue."""
        while self.slot_rules.slot_end_ms(self.next_slot) <= now:
            slot = self.next_slot
            due = self.slot_rules.metering_due_ms(slot)
            if self.until_ms is not None and due > self.until_ms:
                break             # metering has ended
            # A reading taken now is judged on its created_ms = now: at or after the due every
            # validator would refuse it, before the due every validator accepts it, whenever.
            late = now >= due
            if not late and now < self.slot_rules.slot_end_ms(slot) + self.delay_ms:
                break             # its turn in the spread has not come yet
            if not late and self.is_closed is not None and not self.is_closed(slot):
                break             # its energy is not final yet: ask again at the next poll
            self.next_slot = slot + self.slot_rules.length_s
            if late:
                self.skipped_late.append(slot)
                log.info("meter reading of slot %d not taken before its metering due: it settles without it", slot)
                continue
            body = self.reading_for(slot, now)
            if body is not None:
                self._queue.append(_Signed(slot, body, decode_meter_reading(body.reading).message_id))

    def _certified(self, item: _Signed) -> bool:
        """Whether this very reading is certified (e.g. by the ledger re-proposing it in the
        background while it was in doubt)."""
        record = meter_record_of(self.ledger.state, self.ledger.me, item.slot)
        return record is not None and record.reading_hash == item.reading_id

    def _never_valid(self, item: _Signed) -> EntryRejected | None:
        """The final rule a reading breaks against this node's certified state, if any (then no
        entry can ever carry it): judged like a validator would, on an entry dated now."""
        ledger = self.ledger
        try:
            entry = build_entry(ledger.rules, ledger.me, ledger.state.head(ledger.me), METER_KIND, item.body,
                                self.clock())
            kind_rules(METER_KIND).validate(ledger.state, entry, item.body, ledger.rules)
        except EntryRejected as exc:
            return exc if exc.is_final else None
        return None

    async def meter_due(self) -> list[int]:
        """Sign the readings of the slots that ended since the last call and submit every signed
        reading not certified yet, in slot order. Returns the slots certified now."""
        self._read_ended_slots(self.clock())
        done: list[int] = []
        while self._queue:
            item = self._queue[0]
            try:
                if not self._certified(item):
                    if item.entry is None:
                        item.entry = self.ledger.next_entry(METER_KIND, item.body)
                    await self.ledger.submit(item.entry)
            except LedgerError as exc:
                if not self._certified(item):     # else: certified meanwhile ("seq reused" by itself)
                    if _in_doubt(self.ledger, item.entry, exc):
                        log.info("meter reading of slot %d not decided yet (%s): offered again", item.slot, exc)
                        break         # later readings extend it: they wait
                    item.entry, item.refusals = None, item.refusals + 1
                    never = self._never_valid(item)
                    if never is None and item.refusals < MAX_REFUSALS:
                        log.info("meter reading of slot %d refused (%s): retried in a new entry", item.slot, exc)
                        break
                    self._queue.popleft()
                    self.dropped.append(item.slot)
                    log.warning("meter reading of slot %d given up: %s", item.slot, never or exc)
                    continue
            self._queue.popleft()
            self.submitted.append(item.slot)
            done.append(item.slot)
        return done

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._take_readings)
            while True:
                await self.meter_due()
                await trio.sleep(self.poll_s)

    async def _take_readings(self) -> None:
        """Sign each slot's reading on time, whatever the ledger is doing: a reading is judged on
        its signed ``created_ms``, so it may be certified much later, but one taken after the due
        is lost. ``meter_due`` waits for the ledger; readings must not wait for it."""
        while True:
            self._read_ended_slots(self.clock())
            await trio.sleep(self.poll_s)


class SettlementService:
    """Proposes the ``settle`` and reconciliation entries of every due slot (see module docstring)."""

    def __init__(self, ledger: Ledger, clock: Callable[[], int], *, poll_s: float = 0.5,
                 until_ms: int | None = None, settle_delay_ms: int = DEFAULT_SETTLE_DELAY_MS) -> None:
        if settle_delay_ms < 0:
            raise ValueError("settle_delay_ms must be >= 0")
        self.ledger = ledger
        self.clock = clock
        self.poll_s = poll_s
        self.until_ms = until_ms
        self.settle_delay_ms = settle_delay_ms
        self.settled: list[int] = []              # slots whose first settle was certified
        self.reconciled: list[int] = []           # one per certified reconciliation settle
        self.too_large: set[int] = set()          # slots whose settlement does not fit one entry
        self._new: dict[int, SlotInputs] = {}     # certified inputs not (known to be) in their slot's settlement
        self._seen: dict[bytes, int] | None = None   # next seq to index, per chain
        self._indexed_height = -1
        self._has_meters = False
        self._in_doubt: dict[int, tuple[Any, bool]] = {}   # slot -> (settle entry, first settle?)
        self._settled_cache: dict[int, tuple[Any, SlotInputs]] = {}
        self._adopted = False

    # --- the index of unsettled inputs ----------------------------------------------------------

    def _rebuild(self) -> None:
        state, rules = self.ledger.state, self.ledger.rules
        self._new = {}
        for slot, inputs in inputs_by_slot(state, rules).items():
            self._add(slot, inputs)
        self._settled_cache = {slot: c for slot, c in self._settled_cache.items() if slot in self._new}
        self._seen = {account: head.next_seq for account, head in state.heads.items()}
        self._indexed_height = state.height

    def _settled(self, slot: int) -> SlotInputs:
        """``settled_inputs`` of the slot, kept until its stored settlement is replaced (building
        it walks the whole settlement; inputs of one slot arrive many at a time)."""
        stored = settlement_of(self.ledger.state, slot)
        cached = self._settled_cache.get(slot)
        if cached is None or cached[0] is not stored:
            cached = self._settled_cache[slot] = (stored, settled_inputs(self.ledger.state, slot))
        return cached[1]

    def _add(self, slot: int, inputs: SlotInputs) -> None:
        fresh = inputs - self._settled(slot)
        if fresh:
            self._new[slot] = self._new.get(slot, SlotInputs()) | fresh

    async def _refresh(self) -> None:
        """Bring the index up to the certified state: the entries certified since the last call,
        read from the store by chain head (a full scan without a store, or the first time)."""
        state = self.ledger.state
        if state.height == self._indexed_height:
            return
        store = getattr(self.ledger, "store", None)
        if self._seen is None or store is None:
            self._rebuild()
            return
        heads = {account: head.next_seq for account, head in state.heads.items()}
        for account, head in heads.items():
            start = self._seen.get(account, 0)
            while start < head:
                entries = [s for s in await store.account_entries(account, start, head - start)
                           if start <= s.body.seq < head]
                if not entries:
                    break        # stored but not readable yet: next time
                for signed in entries:
                    found = input_of_entry(self.ledger.state, self.ledger.rules, signed)
                    if found is not None:
                        self._add(*found)
                start = entries[-1].body.seq + 1
            self._seen[account] = start
        if all(self._seen.get(a, 0) >= h for a, h in heads.items()):
            self._indexed_height = sum(heads.values())

    def pending_slots(self) -> list[int]:
        """Slots with certified inputs not in their settlement yet (settled or not), ascending."""
        return sorted(self._new)

    def slots_behind(self, now_ms: int) -> int:
        """Slots whose settlement is due (``due + W`` passed) and that still have certified inputs
        to settle: how far this gateway is behind the zone (0 or 1 when it keeps up)."""
        rules = self.ledger.rules
        if not isinstance(rules, SettlementLedgerRules):
            return 0
        return sum(1 for slot in self._new if rules.slots.metering_due_ms(slot) + self.settle_delay_ms <= now_ms
                   and slot not in self.too_large)

    # --- proposing ------------------------------------------------------------------------------

    async def settle_due(self) -> list[int]:
        """Propose the settle (or reconciliation) of every slot whose ``due + W`` has passed and
        that has certified inputs not settled yet. Returns the slots certified now (a slot
        settled and reconciled in one call is listed once per entry)."""
        rules = self.ledger.rules
        if not isinstance(rules, SettlementLedgerRules):
            return []
        if not self._has_meters:
            # No meter registered: settling would count every trade as undelivered (and once
            # one is registered, it stays: this scan stops).
            self._has_meters = has_meters(self.ledger.state)
            if not self._has_meters:
                return []
        await self._refresh()
        if not self._adopted:
            self._adopt_in_doubt()
        now = self.clock()
        done: list[int] = []
        for slot in sorted(self._new):
            due = rules.slots.metering_due_ms(slot)
            if due + self.settle_delay_ms > now:
                break                     # later slots are due later still
            if slot in self.too_large or (self.until_ms is not None and due > self.until_ms):
                continue
            if await self._settle(slot):
                done.append(slot)
        return done

    def _adopt_in_doubt(self) -> None:
        """Once, at start: settle entries of this chain the ledger still holds in doubt (proposed
        before a restart; the ledger offers them again) become this service's own, so it offers
        them again instead of signing a second settle of their slot on top. Needs the ledger's
        ``in_doubt_entries()``."""
        self._adopted = True
        for signed in self.ledger.in_doubt_entries():
            if signed.body.account == self.ledger.me and signed.body.kind in SETTLE_KINDS:
                slot = decode_body(signed.body).settle_body.slot
                # Offered in chain order: an earlier one of the same slot is settled before this.
                self._in_doubt.setdefault(slot, (signed, settlement_of(self.ledger.state, slot) is None))
                self._new.setdefault(slot, SlotInputs())

    def _decided(self, slot: int, entry: Any) -> bool | None:
        """For a settle entry that was in doubt: None while its seq is still open in the gateway's
        chain; else whether it is the entry certified there (the slot's settlement then names
        everything it named — no other entry of this chain settles the slot meanwhile)."""
        body = getattr(entry, "body", None)
        if body is None or self.ledger.state.head(self.ledger.me).next_seq <= body.seq:
            return None
        return SlotInputs.of_body(decode_body(body)) <= self._settled(slot)

    def _done(self, slot: int, first: bool) -> None:
        (self.settled if first else self.reconciled).append(slot)
        remaining = self._new[slot] - self._settled(slot)
        if remaining:
            self._new[slot] = remaining
        else:
            del self._new[slot]
            self._settled_cache.pop(slot, None)

    async def _settle(self, slot: int) -> bool:
        state = self.ledger.state
        held = self._in_doubt.pop(slot, None)
        if held is not None:
            decided = self._decided(slot, held[0])
            if decided is not None:       # the ledger decided it in the background
                if decided:
                    self._done(slot, held[1])
                    return True
                held = None
        new = self._new[slot] - self._settled(slot)
        if not new and held is None:
            del self._new[slot]
            self._settled_cache.pop(slot, None)
            return False
        if held is not None:
            entry, first = held           # undecided: offered again unchanged, never replaced
        else:
            first = settlement_of(state, slot) is None
            try:
                kind, body = plan_settlement(state, self.ledger.rules, slot, new)
                entry = self.ledger.next_entry(kind, body)
            except WireError as exc:
                log.error("settlement of slot %d does not fit one ledger entry, left %s: %s", slot,
                          "unsettled" if first else "unreconciled", exc)
                self.too_large.add(slot)
                return False
            except (SettlementError, EntryRejected) as exc:
                log.warning("settlement of slot %d cannot be computed: %s", slot, exc)
                return False
        try:
            await self.ledger.submit(entry)
        except LedgerError as exc:
            if self._decided(slot, entry):
                self._done(slot, first)   # certified meanwhile ("seq reused" by itself)
                return True
            if _in_doubt(self.ledger, entry, exc):
                self._in_doubt[slot] = (entry, first)
            log.info("settlement of slot %d not certified yet: %s", slot, exc)
            return False
        self._done(slot, first)
        return True

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.settle_due()
            await trio.sleep(self.poll_s)
