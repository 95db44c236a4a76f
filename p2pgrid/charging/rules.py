"""Public EV charging sold by a station, as ledger objects (pure).

Importing this module registers three entry kinds with ``p2pgrid.ledger.chain.register_kind``. A
**station** sells charging at its connectors under a **tariff**; a **driver** (any account of the
zone) escrows the price of the most energy it wants before it charges; after the session the
station bills the energy the connector's metering module measured and signed, and the escrow pays
the station and hands the rest back. Charging happens behind the station's grid meter: the energy
is part of the station's own metered import/export, so a sale moves credits only (settlement of
the slot is untouched). Everything lives in ``LedgerState.extra``, so the state root covers it:

* ``extra["charge_tariff/<tariff id hex>"] = TariffRecord`` (terms and running totals);
* ``extra["charge_session/<session id hex>"] = SessionRecord`` (one per ``charge_start``);
* ``extra["charger_last/<station hex>/<charger key hex>"] = int`` (the connector's energy counter at
  its last session the station billed: kept per station, so no other station's chain can move it).

Time. No rule reads a validator's clock: every limit is judged on the entry's own signed
``entry.time_ms`` (never decreasing along a chain), and no rule of one chain's entry reads what
another chain can still change (``chain``: validity is monotone in the certified causal past). A
tariff not certified at a validator yet makes a driver's start *wait* (``missing_dependency``), as
a session's escrow not certified yet makes a bill wait (``no_lock``).

The kinds
---------
``charge_tariff`` (station's chain; time base ``entry.time_ms``)
    Opens tariff ``tariff_id == next_tariff_id(state, station, zone)`` (numbered by the station's
    earlier tariffs, so ids never repeat): ``zone`` (the ledger's), ``price_uc_per_kwh``,
    ``charger_keys`` (the public keys of the connectors' metering modules: every session's meter
    values must be signed by one of them), ``max_power_w`` (a connector's power: bounds the energy
    a session can have taken in its time), ``max_session_wh`` and ``until_ms`` (after the tariff's
    own ``time_ms``; no session dated from then on). A new price is a new tariff; sessions keep
    the tariff they started under.
``charge_start`` (driver's chain — the driver debits only itself; time base ``entry.time_ms``)
    Escrows ``amount_uc == trade_value(max_wh, price)`` for session ``session_id`` (the price of
    the most energy the driver accepts, ``max_wh ≤ max_session_wh``), with ``plugged_in_ms`` and a
    deadline ``time_ms < deadline_ms ≤ time_ms + MAX_SESSION_MS``. Valid if dated while the
    tariff is open (``time_ms < until_ms``: the terms are fixed, so the answer is too), for its
    zone and station, never by the station itself, within the driver's credit limit. The escrow is
    an ordinary chain lock record (``state.locks[session_id]``, seller = station, a nominal 1 Wh at
    price 0, like the pool shares' escrows), so ``money_total()`` counts it; ``charge_start``
    declares ``chain.take_key(session_id)``, the key of every kind that creates a lock record.
``charge_bill`` (station's chain; time base ``entry.time_ms``)
    Consumes the escrow through ``chain.consumable_lock``: named station, open, and the bill
    **dated before the escrow's deadline**. No conflict key on the lock: its fate is decided by
    the station's chain alone, and the driver's ``release`` is valid only once the station's chain
    is dated at or past the deadline, so a bill and a release can never both be certified. It
    carries the connector's signed ``ChargeReading`` (``p2pgrid/charge-reading/v1``: session,
    counters at start and stop, start and end times), and validators check:

    * the reading is signed by one of the tariff's ``charger_keys`` and names this session;
    * ``delivered_wh = meter_stop_wh − meter_start_wh ≤ max_wh`` of the session;
    * the counter does not run backwards across the station's sessions of one connector
      (``meter_start_wh ≥ charger_last``, the station's own record): no Wh is sold twice;
    * the session started no earlier than the driver plugged in, and the connector could have
      delivered that much (``delivered_wh · 3.6e6 ≤ max_power_w · (ended_ms − started_ms)``);
    * ``amount_uc == trade_value(delivered_wh, price)`` (µc/kWh, floored like every trade).

    Applying it pays the station ``amount_uc`` and the driver the rest of the escrow. A session the
    station cannot serve is billed with a zero-energy reading (the whole escrow goes back at once)
    or handed back with the chain's ``decline`` (valid at any time, also after the deadline: the
    station does that for every session it left unbilled, so the driver's credits come back
    without waiting for the station's chain to pass the deadline).

Trust. A driver accepts the tariff's connector keys by starting under it, as with a calibrated
charger whose public key is printed on it: the station cannot bill more than the connector signed,
nor more than the driver escrowed, nor faster than the connector's power. The zone operator does
not certify connector keys (unlike grid meter keys); a dishonest metering module is out of reach
of any ledger rule, as it is for grid meters.

Rejections are ``EntryRejected``: ``BAD_BODY`` with a detail starting with a
``ChargeRefuseReason`` value, ``WRONG_KIND_FOR_ACCOUNT`` for an entry by the wrong account, the
lock reasons of ``chain.py`` for escrows, ``OVERDRAFT`` when the driver cannot pay.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from p2pgrid.errors import WireError
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, LockRecord, LockStatus, RejectReason,
    consumable_lock, lock_fate_key, register_kind, take_key, validate_debit,
)
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ledger.messages import ID_SIZE, MAX_AMOUNT, Entry, Lock
from p2pgrid.units import trade_value
from p2pgrid.wire import MAX_PRICE, MAX_QTY_WH, PUBLIC_KEY_SIZE, ZONE_PATTERN, Signed, decode_signed, message, struct

__all__ = [
    "CHARGE_BILL_KIND", "CHARGE_START_KIND", "CHARGE_TARIFF_KIND", "ChargeBill", "ChargeReading", "ChargeRefuseReason",
    "ChargeStart", "ChargeTariff", "MAX_CHARGERS", "MAX_SESSION_MS", "SessionRecord", "TariffRecord", "charger_counter",
    "charger_counters", "compute_session_id", "compute_tariff_id", "decode_charge_reading", "next_tariff_id", "open_tariffs",
    "plan_charge_bill", "plan_charge_start", "session_of", "sessions", "tariff_of", "tariffs",
]

CHARGE_TARIFF_KIND = "charge_tariff"
CHARGE_START_KIND = "charge_start"
CHARGE_BILL_KIND = "charge_bill"
MAX_CHARGERS = 16                       # connectors per tariff
MAX_SESSION_MS = 48 * 3600 * 1000       # an escrow's deadline is at most this far ahead
MAX_READING_BYTES = 512
MS_PER_HOUR = 3_600_000


class ChargeRefuseReason(str, enum.Enum):
    UNKNOWN_TARIFF = "unknown_tariff"
    BAD_TARIFF_ID = "bad_tariff_id"
    BAD_TERMS = "bad_terms"
    WRONG_ZONE = "wrong_zone"
    WRONG_STATION = "wrong_station"
    TARIFF_CLOSED = "tariff_closed"
    TOO_MUCH = "too_much"
    BAD_AMOUNT = "bad_amount"
    UNKNOWN_SESSION = "unknown_session"
    BAD_READING = "bad_reading"
    UNKNOWN_CHARGER = "unknown_charger"
    COUNTER_BACKWARDS = "counter_backwards"
    TOO_FAST = "too_fast"


def _bad(reason: ChargeRefuseReason, detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.BAD_BODY, f"{reason.value}: {detail}")


def _id() -> Any:
    return field(metadata={"size": ID_SIZE})


def _key() -> Any:
    return field(metadata={"size": PUBLIC_KEY_SIZE})


def _wh(minimum: int = 0) -> Any:
    return field(metadata={"min": minimum, "max": MAX_QTY_WH})


# --- the connector's signed meter values ---------------------------------------------------------

@message("p2pgrid/charge-reading", 1, max_bytes=MAX_READING_BYTES, signer_field="charger_key")
@dataclass(frozen=True)
class ChargeReading:
    """A connector's meter values for one session, signed by its metering module."""

    charger_key: bytes = _key()
    station: bytes = _key()
    session_id: bytes = _id()
    meter_start_wh: int = field(metadata={"min": 0, "max": 2**62})
    meter_stop_wh: int = field(metadata={"min": 0, "max": 2**62})
    started_ms: int = field(metadata={"min": 0})
    ended_ms: int = field(metadata={"min": 0})

    @property
    def delivered_wh(self) -> int:
        return self.meter_stop_wh - self.meter_start_wh


def decode_charge_reading(data: bytes) -> Signed[ChargeReading]:
    return decode_signed(data, ChargeReading)


# --- bodies ------------------------------------------------------------------------------------

@struct
@dataclass(frozen=True)
class ChargeTariff:
    tariff_id: bytes = _id()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    price_uc_per_kwh: int = field(metadata={"min": 1, "max": MAX_PRICE})
    charger_keys: tuple[bytes, ...] = field(metadata={"max_len": MAX_CHARGERS})
    max_power_w: int = field(metadata={"min": 1, "max": 10_000_000})
    max_session_wh: int = _wh(1)
    until_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class ChargeStart:
    session_id: bytes = _id()
    tariff_id: bytes = _id()
    station: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    max_wh: int = _wh(1)
    amount_uc: int = field(metadata={"min": 0, "max": MAX_AMOUNT})
    plugged_in_ms: int = field(metadata={"min": 0})
    deadline_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class ChargeBill:
    session_id: bytes = _id()
    delivered_wh: int = _wh()
    amount_uc: int = field(metadata={"min": 0, "max": MAX_AMOUNT})
    reading: bytes = field(metadata={"max_len": MAX_READING_BYTES})


# --- derived state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TariffRecord:
    """A certified tariff with its totals: sessions billed, Wh sold, µc earned."""

    tariff_id: bytes
    station: bytes
    terms: ChargeTariff
    sessions_billed: int = 0
    sold_wh: int = 0
    revenue_uc: int = 0

    def is_open(self, now_ms: int) -> bool:
        return now_ms < self.terms.until_ms


@dataclass(frozen=True)
class SessionRecord:
    """One session: what the driver escrowed and, once billed, what it took and paid."""

    session_id: bytes
    tariff_id: bytes
    station: bytes
    driver: bytes
    max_wh: int
    escrow_uc: int
    plugged_in_ms: int
    deadline_ms: int
    billed: bool = False
    delivered_wh: int = 0
    amount_uc: int = 0
    charger_key: bytes = b""
    ended_ms: int = 0


def compute_tariff_id(station: bytes, zone: str, number: int) -> bytes:
    """The id of the station's tariff ``number`` in ``zone`` (0 for its first, 1 for the next, …)."""
    seed = b"p2pgrid/charge-tariff/v1" + station + zone.encode() + number.to_bytes(8, "big")
    return hashlib.sha256(seed).digest()[:ID_SIZE]


def compute_session_id(driver: bytes, tariff_id: bytes, nonce: int) -> bytes:
    """A session id for ``driver`` (e.g. its entry's seq as ``nonce``): distinct from every take id."""
    seed = b"p2pgrid/charge-session/v1" + driver + tariff_id + nonce.to_bytes(8, "big")
    return hashlib.sha256(seed).digest()[:ID_SIZE]


def _tariff_key(tariff_id: bytes) -> str:
    return "charge_tariff/" + tariff_id.hex()


def _session_key(session_id: bytes) -> str:
    return "charge_session/" + session_id.hex()


def _charger_key(station: bytes, charger: bytes) -> str:
    return f"charger_last/{station.hex()}/{charger.hex()}"


def tariff_of(state: LedgerState, tariff_id: bytes) -> TariffRecord | None:
    record = state.extra.get(_tariff_key(tariff_id))
    return record if isinstance(record, TariffRecord) else None


def tariffs(state: LedgerState, station: bytes | None = None) -> list[TariffRecord]:
    """Every certified tariff (of ``station``, if given), ordered by id."""
    found = [v for _, v in prefixed_items(state.extra, "charge_tariff/") if isinstance(v, TariffRecord)]
    return sorted((t for t in found if station is None or t.station == station), key=lambda t: t.tariff_id)


def open_tariffs(state: LedgerState, now_ms: int, station: bytes | None = None) -> list[TariffRecord]:
    """The tariffs a driver may start a session under now, newest (highest number) last."""
    return [t for t in tariffs(state, station) if t.is_open(now_ms)]


def next_tariff_id(state: LedgerState, station: bytes, zone: str) -> bytes:
    return compute_tariff_id(station, zone, sum(1 for t in tariffs(state, station) if t.terms.zone == zone))


def session_of(state: LedgerState, session_id: bytes) -> SessionRecord | None:
    record = state.extra.get(_session_key(session_id))
    return record if isinstance(record, SessionRecord) else None


def sessions(state: LedgerState, *, station: bytes | None = None, driver: bytes | None = None) -> list[SessionRecord]:
    """Certified sessions (of ``station`` / ``driver``, if given), ordered by plug-in time then id."""
    found = [v for _, v in prefixed_items(state.extra, "charge_session/") if isinstance(v, SessionRecord)]
    chosen = [s for s in found if (station is None or s.station == station) and (driver is None or s.driver == driver)]
    return sorted(chosen, key=lambda s: (s.plugged_in_ms, s.session_id))


def charger_counter(state: LedgerState, charger_key: bytes, station: bytes | None = None) -> int:
    """The connector's counter at the end of the last session ``station`` billed with it (0 before
    any). Without ``station``: the highest over every station that billed with it (reports)."""
    if station is not None:
        value = state.extra.get(_charger_key(station, charger_key), 0)
        return value if isinstance(value, int) else 0
    return max(charger_counters(state, charger_key).values(), default=0)


def charger_counters(state: LedgerState, charger_key: bytes) -> dict[bytes, int]:
    """Station → the connector's counter at its last session billed by that station."""
    suffix = "/" + charger_key.hex()
    return {bytes.fromhex(k.split("/")[1]): v for k, v in prefixed_items(state.extra, "charger_last/")
            if k.endswith(suffix) and isinstance(v, int)}


# --- building bodies ---------------------------------------------------------------------------

def plan_charge_start(tariff: TariffRecord, driver: bytes, max_wh: int, nonce: int, plugged_in_ms: int,
                      deadline_ms: int) -> ChargeStart:
    """The ``charge_start`` body for a session of at most ``max_wh`` under ``tariff``."""
    return ChargeStart(session_id=compute_session_id(driver, tariff.tariff_id, nonce), tariff_id=tariff.tariff_id,
                       station=tariff.station, zone=tariff.terms.zone, max_wh=max_wh,
                       amount_uc=trade_value(max_wh, tariff.terms.price_uc_per_kwh),
                       plugged_in_ms=plugged_in_ms, deadline_ms=deadline_ms)


def plan_charge_bill(state: LedgerState, reading: Signed[ChargeReading]) -> ChargeBill:
    """The ``charge_bill`` body for a certified session and its connector's signed reading."""
    session = session_of(state, reading.body.session_id)
    tariff = tariff_of(state, session.tariff_id) if session is not None else None
    if session is None or tariff is None:
        raise ValueError(f"no certified session {reading.body.session_id.hex()}")
    delivered = reading.body.delivered_wh
    return ChargeBill(session_id=session.session_id, delivered_wh=delivered,
                      amount_uc=trade_value(delivered, tariff.terms.price_uc_per_kwh), reading=reading.encoded)


# --- charge_tariff -----------------------------------------------------------------------------

def validate_charge_tariff(state: LedgerState, entry: Entry, body: ChargeTariff, rules: LedgerRules) -> None:
    if body.tariff_id != next_tariff_id(state, entry.account, entry.zone):
        raise _bad(ChargeRefuseReason.BAD_TARIFF_ID, "a tariff's id is next_tariff_id(state, station, zone)")
    if body.zone != entry.zone:
        raise _bad(ChargeRefuseReason.WRONG_ZONE, f"a tariff of {entry.zone} cannot sell in {body.zone}")
    if entry.account == rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "the zone gateway sells no charging")
    keys = body.charger_keys
    if not keys or len(set(keys)) != len(keys) or any(len(k) != PUBLIC_KEY_SIZE for k in keys):
        raise _bad(ChargeRefuseReason.BAD_TERMS, "a tariff names 1 to 16 distinct 32-byte connector keys")
    if entry.account in keys:
        raise _bad(ChargeRefuseReason.BAD_TERMS, "a connector's key is not the station's own key")
    if body.until_ms <= entry.time_ms:
        raise _bad(ChargeRefuseReason.BAD_TERMS, "the tariff would close before its own time")


def process_charge_tariff(state: LedgerState, entry: Entry, body: ChargeTariff, rules: LedgerRules) -> None:
    if tariff_of(state, body.tariff_id) is not None:
        raise ChainInconsistent(f"tariff {body.tariff_id.hex()} opened twice")
    state.extra[_tariff_key(body.tariff_id)] = TariffRecord(body.tariff_id, entry.account, body)


# --- charge_start ------------------------------------------------------------------------------

def escrow_lock(body: ChargeStart) -> Lock:
    """The chain lock record that holds a session's escrow (see the module docstring)."""
    return Lock(take_id=body.session_id, seller=body.station, order_id=body.tariff_id, order_owner=body.station,
                order_size_wh=1, qty_wh=1, price=0, amount=body.amount_uc, deadline_ms=body.deadline_ms)


def validate_charge_start(state: LedgerState, entry: Entry, body: ChargeStart, rules: LedgerRules) -> None:
    # Reads the tariff's terms (fixed once certified) and the driver's own chain only.
    tariff = tariff_of(state, body.tariff_id)
    if tariff is None:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, f"no certified tariff {body.tariff_id.hex()} (yet)")
    terms = tariff.terms
    if body.zone != terms.zone or body.zone != entry.zone:
        raise _bad(ChargeRefuseReason.WRONG_ZONE, f"the tariff sells in {terms.zone}, not {body.zone}")
    if body.station != tariff.station:
        raise _bad(ChargeRefuseReason.WRONG_STATION, "the tariff is another station's")
    if entry.account == tariff.station:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "a station does not charge from itself")
    if not tariff.is_open(entry.time_ms):
        raise _bad(ChargeRefuseReason.TARIFF_CLOSED, f"the start is dated at or after the tariff's close {terms.until_ms}")
    if body.max_wh > terms.max_session_wh:
        raise _bad(ChargeRefuseReason.TOO_MUCH, f"a session takes at most {terms.max_session_wh} Wh")
    if body.amount_uc != trade_value(body.max_wh, terms.price_uc_per_kwh):
        raise _bad(ChargeRefuseReason.BAD_AMOUNT,
                   f"{body.max_wh} Wh cost {trade_value(body.max_wh, terms.price_uc_per_kwh)} µc")
    if not entry.time_ms < body.deadline_ms <= entry.time_ms + MAX_SESSION_MS:
        raise EntryRejected(RejectReason.DEADLINE_PASSED, "the deadline must be after the start's own time and within 48 h")
    if body.session_id in state.locks or session_of(state, body.session_id) is not None:
        raise EntryRejected(RejectReason.DUPLICATE_TAKE, f"id {body.session_id.hex()} is taken already")
    validate_debit(state, rules, entry.account, body.amount_uc)


def process_charge_start(state: LedgerState, entry: Entry, body: ChargeStart, rules: LedgerRules) -> None:
    if body.session_id in state.locks:
        raise ChainInconsistent(f"session {body.session_id.hex()} escrowed twice")
    driver = entry.account
    state.balances[driver] = state.balance(driver) - body.amount_uc
    state.locks[body.session_id] = LockRecord(driver, escrow_lock(body))
    state.extra[_session_key(body.session_id)] = SessionRecord(
        body.session_id, body.tariff_id, body.station, driver, body.max_wh, body.amount_uc, body.plugged_in_ms,
        body.deadline_ms)


def _start_keys(entry: Entry, body: ChargeStart) -> tuple[bytes, ...]:
    # The key of every kind that creates a lock record: a session id and a take id can never both
    # be certified, whichever chains race for it.
    return (take_key(body.session_id),)


# --- charge_bill -------------------------------------------------------------------------------

def _decode(body: ChargeBill) -> Signed[ChargeReading]:
    try:
        return decode_charge_reading(body.reading)
    except WireError as exc:
        raise _bad(ChargeRefuseReason.BAD_READING, f"meter values: {exc}") from None


def validate_charge_bill(state: LedgerState, entry: Entry, body: ChargeBill, rules: LedgerRules) -> None:
    # The escrow first: named station, open, and the bill dated before its deadline; a session
    # whose escrow is not certified here yet waits (``no_lock``), like a fill.
    consumable_lock(state, entry, body.session_id)
    session = session_of(state, body.session_id)
    if session is None:      # the lock was created by another kind (take_key): never a session
        raise _bad(ChargeRefuseReason.UNKNOWN_SESSION, f"lock {body.session_id.hex()} is not a charging session")
    if session.station != entry.account:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the session's station bills it")
    tariff = tariff_of(state, session.tariff_id)
    if tariff is None:       # the station's own tariff: in its chain before any session under it
        raise _bad(ChargeRefuseReason.UNKNOWN_TARIFF, f"session under unknown tariff {session.tariff_id.hex()}")
    reading = _decode(body).body
    if reading.charger_key not in tariff.terms.charger_keys:
        raise _bad(ChargeRefuseReason.UNKNOWN_CHARGER, "the meter values are not signed by a connector of the tariff")
    if (reading.station, reading.session_id) != (entry.account, body.session_id):
        raise _bad(ChargeRefuseReason.BAD_READING, "the meter values are of another station or session")
    if reading.meter_stop_wh < reading.meter_start_wh or reading.ended_ms < reading.started_ms:
        raise _bad(ChargeRefuseReason.BAD_READING, "counters and times must not run backwards within a session")
    if reading.started_ms < session.plugged_in_ms:
        raise _bad(ChargeRefuseReason.BAD_READING, "the session started before the driver plugged in")
    last = charger_counter(state, reading.charger_key, entry.account)
    if reading.meter_start_wh < last:
        raise _bad(ChargeRefuseReason.COUNTER_BACKWARDS,
                   f"the connector's counter stood at {last} Wh after its last billed session")
    delivered = reading.delivered_wh
    if delivered > session.max_wh:
        raise _bad(ChargeRefuseReason.TOO_MUCH, f"the driver escrowed for {session.max_wh} Wh, not {delivered}")
    if delivered * MS_PER_HOUR > tariff.terms.max_power_w * (reading.ended_ms - reading.started_ms):
        raise _bad(ChargeRefuseReason.TOO_FAST,
                   f"{delivered} Wh in {reading.ended_ms - reading.started_ms} ms exceeds {tariff.terms.max_power_w} W")
    amount = trade_value(delivered, tariff.terms.price_uc_per_kwh)
    if (body.delivered_wh, body.amount_uc) != (delivered, amount):
        raise _bad(ChargeRefuseReason.BAD_AMOUNT, f"{delivered} Wh cost {amount} µc")


def process_charge_bill(state: LedgerState, entry: Entry, body: ChargeBill, rules: LedgerRules) -> None:
    session = session_of(state, body.session_id)
    tariff = tariff_of(state, session.tariff_id) if session is not None else None
    record = state.locks.get(body.session_id)
    if session is None or tariff is None or record is None or record.status is not LockStatus.OPEN:
        raise ChainInconsistent(f"certified bill of session {body.session_id.hex()} which is not open")
    try:
        reading = decode_charge_reading(body.reading).body
    except WireError as exc:
        raise ChainInconsistent(f"certified bill has bad meter values: {exc}") from None
    if body.amount_uc > record.lock.amount:
        raise ChainInconsistent(f"certified bill of {body.session_id.hex()} exceeds its escrow")
    station = entry.account
    state.balances[station] = state.balance(station) + body.amount_uc
    state.balances[session.driver] = state.balance(session.driver) + record.lock.amount - body.amount_uc
    state.locks[body.session_id] = LockRecord(record.buyer, record.lock, LockStatus.FILLED)
    state.extra[_charger_key(station, reading.charger_key)] = reading.meter_stop_wh
    state.extra[_session_key(body.session_id)] = replace(
        session, billed=True, delivered_wh=body.delivered_wh, amount_uc=body.amount_uc,
        charger_key=reading.charger_key, ended_ms=reading.ended_ms)
    state.extra[_tariff_key(tariff.tariff_id)] = replace(
        tariff, sessions_billed=tariff.sessions_billed + 1, sold_wh=tariff.sold_wh + body.delivered_wh,
        revenue_uc=tariff.revenue_uc + body.amount_uc)


def _bill_keys(entry: Entry, body: ChargeBill) -> tuple[bytes, ...]:
    return (lock_fate_key(body.session_id),)     # it consumes the escrow (chain.lock_fate_key)


def _bill_ready(state: LedgerState, entry: Entry, body: ChargeBill) -> bool:
    return session_of(state, body.session_id) is not None and body.session_id in state.locks


register_kind(KindRules(CHARGE_TARIFF_KIND, ChargeTariff, validate_charge_tariff, process_charge_tariff))
register_kind(KindRules(CHARGE_START_KIND, ChargeStart, validate_charge_start, process_charge_start, _start_keys))
register_kind(KindRules(CHARGE_BILL_KIND, ChargeBill, validate_charge_bill, process_charge_bill,
                        _bill_keys, is_ready=_bill_ready))
