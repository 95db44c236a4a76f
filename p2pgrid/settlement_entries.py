"""Ledger entry kinds for metering, and how settlement results map onto the ledger (pure).

Importing this module registers three kinds with ``p2pgrid.ledger.chain.register_kind``:
``meter_registration``, ``meter`` and ``settle`` (below).

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
* Every other transfer is between one account and the gateway: ``imbalance_postings`` nets them per
  account, and a ``settle`` entry posts them (below).
* Certificates (issue / transfer / retire) are a pure function of a settled slot
  (``certificates.certify_slot``); applying ``settle`` stores the slot's ``SlotCertificates`` in
  ``state.certificates`` so the state root covers them.

``settle`` — the settlement of one slot, in the proposer's chain (normally the gateway's; any
  account may propose, since validators recompute it). Body: ``SettleBody(slot, shortfall_price,
  feed_in_price, trades, meters, postings, grid_fees, swaps)``: the prices used, the take ids of
  the slot's certified book trades, the accounts whose certified meter entries were settled, the
  imbalance postings, the fee matrix, and the swap ids of the slot's certified pool swaps.
  Rules (``validate_settle``):

  - the zone's ledger rules must carry the settlement terms (``SettlementLedgerRules``: slot
    calendar and imbalance prices), else ``bad_body``;
  - ``deadline_not_reached`` until ``metering_due_ms(slot)``: meter entries may still arrive;
  - ``bad_body`` if the slot is settled already (also the conflict key ``settle/<slot>``: a
    validator votes for at most one settlement per slot, so a slot settles once);
  - ``bad_body`` unless the body equals, exactly, what the validator recomputes from its
    certified state: trades = filled locks whose ``lock.slot == slot`` (``filled_wh`` > 0; the
    gateway's own trades are left out, it is the grid), swaps = certified swap records of the
    slot (below; the gateway's left out likewise), meter entries = certified ``meter`` entries of
    the slot, prices = the zone's imbalance prices for the slot. A node whose meter entry is
    missing then is settled as zero delivery.

  Applying it (``process_settle``) recomputes ``settle_slot`` + ``certify_slot`` from exactly the
  trades, swaps and meter entries the body names, at the prices the body states (``is_ready`` waits
  until they are all in the state, so the result does not depend on the order entries are applied
  in, and applying needs no zone configuration: offline tools derive the same state), moves every
  posting between the account and the gateway, and stores the ``SlotSettlement`` in
  ``extra[settle_key(slot)]`` and the ``SlotCertificates`` in ``certificates[certificates_key(slot)]``.
  The proposer's chain thus moves other accounts' money: chain rule 2 (only an account's own
  chain debits it) covers voluntary debits; a settlement is a committee-recomputed obligation.
  Postings, being **obligations**, may take a balance below the credit limit, which binds
  voluntary spending only (transfers, locks, burns). Money stays conserved exactly: each posting
  moves µc between an account and the gateway.

  At the deadline edge a meter entry may be voted just before the deadline and certified after
  some validators already voted for the slot's ``settle``: it is then certified but not settled
  (the ``settle`` body names the readings it settled, so every node still derives the same
  state) — exactly as if it had been late. Proposers should settle a little after the deadline.

  One ``settle`` entry carries a whole slot: the entry body is at most
  ``ledger.messages.MAX_BODY_BYTES`` (7680) bytes, about 80 bytes per metered account, and each
  list at most ``MAX_SETTLE_ITEMS`` items, so a slot of more than about 90 metered accounts or
  256 trades needs splitting into chunks (not done yet: the gateway then leaves it unsettled
  and logs it).

Zones. A trade's seller and buyer zones are the lock's ``seller_zone`` / ``buyer_zone`` (empty:
the ledger's zone). A cross-zone trade pays the grid fee of the ledger rules' fee matrix
(``SettlementLedgerRules.grid_fees``, built with ``market.locality.settlement_grid_fees``) on its
delivered Wh; the ``settle`` body states the fee matrix it used (``grid_fees``), so applying it
still needs no zone configuration. A cross-zone trade whose pair has no fee cannot be settled
(``bad_body``: ``UnknownGridFee``).

Pool swaps are trades. A certified ``swap`` (``trading.pool_entries``: the host's chain sequences
its pool; the record ``extra["swap/<id>"]`` states host, trader, side, slot — the pool's —,
``energy_wh`` and ``credits_uc``) settles exactly like a book trade of its slot between the trader
and the pool's host, who delivers or takes the energy physically (its battery):

* BUY: the host sells ``energy_wh`` to the trader for ``credits_uc``; SELL: the trader sells
  ``energy_wh`` to the host for ``credits_uc``. The host's metered export is thus compared with
  what its pools (and its book orders) sold, each trader's import with what it bought.
* Its ``TradeRecord`` has trade id ``swap_trade_id(swap_id) = swap_id + b"/swap"`` (21 bytes: it
  can never equal a lock's 16-byte take id, however traders choose their ids; shown shortened it
  still starts with the swap id), ``value_uc = credits_uc`` (what the curve charged, already
  moved when the swap was certified; ``price`` is the average, floor) and both zones the
  ledger's zone (a pool trades in its host's zone, and the swap record names no sub-zone: no
  grid fee).
* Each swap id in the body costs about 18 bytes of the body: a slot with many swaps meets the
  entry-size limit sooner (the settlement service then leaves it unsettled and logs it).
* It is **green**: certificates move with its delivered Wh only as far as the seller's own
  metered green generation of the slot covers them (``certificates``' rule for every seller), so
  pool energy is green exactly when the host's generation covers it, and a trader's sale into a
  pool carries the trader's own green Wh.
* The swap's BUY lock (take id = swap id, marked filled with ``filled_wh = 0``) is not a book
  trade, so a swap is never counted twice.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from p2pgrid.certificates import CertificateRegistry, SlotCertificates, certify_slot
from p2pgrid.errors import ConfigError, SettlementError, WireError
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, LockRecord, LockStatus, RejectReason,
    register_kind,
)
from p2pgrid.ledger.messages import Entry
from p2pgrid.metering import (
    MeterReading, MeterReadingRejected, MeterRegistration, MeterRegistry, decode_meter_reading, validate_meter_reading,
)
from p2pgrid.settlement import (
    GridFee, ImbalancePrices, MeterEntry, Reason, SlotSettlement, TradeRecord, ZoneTariffs, settle_slot,
)
from p2pgrid.trading.pool_entries import SwapRecord, swap_key, swap_record
from p2pgrid.trading.pool_messages import ID_SIZE as SWAP_ID_SIZE
from p2pgrid.units import WH_PER_KWH, SlotRules
from p2pgrid.wire import PUBLIC_KEY_SIZE, Side, struct

__all__ = [
    "METER_KIND", "METER_REGISTRATION_KIND", "SETTLE_KIND", "SWAP_TRADE_SUFFIX", "MeterEntryBody", "MeterRecord",
    "Posting", "PostingBody", "SettleBody", "SettlementLedgerRules", "book_trades_for_slot", "certificate_registry",
    "certificates_of", "compute_settlement", "imbalance_postings", "meter_entries_for_slot", "meter_registration_of",
    "settle_key", "settled_slots", "settlement_of", "slots_to_settle", "swap_trade_id", "swap_trades_for_slot",
    "tariffs_of", "trade_of_swap", "trades_for_slot", "unsettled_slots",
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


# --- settle -----------------------------------------------------------------------------------

SETTLE_KIND = "settle"
MAX_SETTLE_ITEMS = 256
MAX_POSTING_UC = 10**15


@dataclass(frozen=True)
class SettlementLedgerRules(LedgerRules):
    """``LedgerRules`` with the zone's settlement terms (equal on every node): its slot calendar and
    its imbalance prices (µc/kWh). A zone whose rules lack them cannot settle."""

    slots: SlotRules = field(default_factory=SlotRules)
    prices: ImbalancePrices | None = None
    grid_fees: tuple[GridFee, ...] = ()

    def tariffs(self) -> ZoneTariffs:
        if self.prices is None:
            raise EntryRejected(RejectReason.BAD_BODY, "this zone has no imbalance prices: it cannot settle")
        return ZoneTariffs(self.gateway, self.prices.shortfall_price, self.prices.feed_in_price, self.grid_fees)


def tariffs_of(rules: LedgerRules) -> ZoneTariffs:
    if not isinstance(rules, SettlementLedgerRules):
        raise EntryRejected(RejectReason.BAD_BODY, "the zone's ledger rules carry no settlement terms")
    return rules.tariffs()


@struct
@dataclass(frozen=True)
class PostingBody:
    """µc the gateway pays ``account`` (> 0) or the account pays the gateway (< 0)."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    amount_uc: int = field(metadata={"min": -MAX_POSTING_UC, "max": MAX_POSTING_UC})


@struct
@dataclass(frozen=True)
class GridFeeBody:
    """µc/kWh for energy delivered from ``from_zone`` to ``to_zone`` (a ``settlement.GridFee``)."""

    from_zone: str = field(metadata={"max_len": 32})
    to_zone: str = field(metadata={"max_len": 32})
    price: int = field(metadata={"min": 0, "max": MAX_POSTING_UC})


@struct
@dataclass(frozen=True)
class SettleBody:
    """The settlement of ``slot``: the imbalance prices it used (so applying it needs no zone
    configuration: offline tools derive the same state), the trades (take ids) and metered
    accounts it settled, sorted, and its imbalance postings (sorted by account)."""

    slot: int = field(metadata={"min": 0})
    shortfall_price: int = field(metadata={"min": 0, "max": MAX_POSTING_UC})
    feed_in_price: int = field(metadata={"min": 0, "max": MAX_POSTING_UC})
    trades: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    meters: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    postings: tuple[PostingBody, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    grid_fees: tuple[GridFeeBody, ...] = field(default=(), metadata={"max_len": MAX_SETTLE_ITEMS})
    swaps: tuple[bytes, ...] = field(default=(), metadata={"max_len": MAX_SETTLE_ITEMS})


def settle_key(slot: int) -> str:
    return f"settle/{slot:015d}"


def certificates_key(slot: int) -> bytes:
    return b"settle/" + slot.to_bytes(8, "big")


def settlement_of(state: LedgerState, slot: int) -> SlotSettlement | None:
    """The certified settlement of ``slot``, or None while it is unsettled."""
    settled = state.extra.get(settle_key(slot))
    return settled if isinstance(settled, SlotSettlement) else None


def certificates_of(state: LedgerState, slot: int) -> SlotCertificates | None:
    certs = state.certificates.get(certificates_key(slot))
    return certs if isinstance(certs, SlotCertificates) else None


def settled_slots(state: LedgerState) -> list[int]:
    return sorted(s.slot for k, s in state.extra.items() if k.startswith("settle/") and isinstance(s, SlotSettlement))


def certificate_registry(state: LedgerState) -> CertificateRegistry:
    """Every certified slot's certificates, as one registry (holdings, statements, traces)."""
    slots = sorted((c for c in state.certificates.values() if isinstance(c, SlotCertificates)), key=lambda c: c.slot)
    return CertificateRegistry(tuple(slots))


def _trade_of(take_id: bytes, record: LockRecord, zone: str) -> TradeRecord:
    lock = record.lock
    return TradeRecord(trade_id=take_id, slot=lock.slot, seller=lock.seller, buyer=record.buyer,
                       seller_zone=lock.seller_zone or zone, buyer_zone=lock.buyer_zone or zone,
                       qty_wh=record.filled_wh, price=lock.price, green=lock.green)


SWAP_TRADE_SUFFIX = b"/swap"
_SWAP_KEY_PREFIX = swap_key(b"")


def swap_trade_id(swap_id: bytes) -> bytes:
    """The settlement trade id of swap ``swap_id`` (never a lock's take id: see the module docstring)."""
    return swap_id + SWAP_TRADE_SUFFIX


def _swap_id_of(trade_id: bytes) -> bytes | None:
    """The swap id inside a swap's trade id; None for a book trade's take id."""
    if len(trade_id) == SWAP_ID_SIZE + len(SWAP_TRADE_SUFFIX) and trade_id.endswith(SWAP_TRADE_SUFFIX):
        return trade_id[:SWAP_ID_SIZE]
    return None


def trade_of_swap(swap_id: bytes, record: SwapRecord, zone: str) -> TradeRecord:
    """Certified swap ``swap_id`` as the trade settlement takes (rules in the module docstring)."""
    seller, buyer = (record.host, record.trader) if record.side is Side.BUY else (record.trader, record.host)
    return TradeRecord(trade_id=swap_trade_id(swap_id), slot=record.slot, seller=seller, buyer=buyer,
                       seller_zone=zone, buyer_zone=zone, qty_wh=record.energy_wh,
                       price=record.credits_uc * WH_PER_KWH // record.energy_wh, green=True,
                       value_uc=record.credits_uc)


def swap_records(state: LedgerState) -> list[tuple[bytes, SwapRecord]]:
    """Every certified swap record with its swap id, by swap id."""
    records = [(bytes.fromhex(key[len(_SWAP_KEY_PREFIX):]), record) for key, record in state.extra.items()
               if key.startswith(_SWAP_KEY_PREFIX) and isinstance(record, SwapRecord)]
    return sorted(records, key=lambda item: item[0])


def swap_trades_for_slot(state: LedgerState, rules: LedgerRules, slot: int) -> list[TradeRecord]:
    """The slot's certified pool swaps as trades (see the module docstring), the gateway's left out."""
    return [trade_of_swap(swap_id, record, rules.zone) for swap_id, record in swap_records(state)
            if record.slot == slot and rules.gateway not in (record.host, record.trader)]


def trades_for_slot(state: LedgerState, rules: LedgerRules, slot: int) -> list[TradeRecord]:
    """The slot's certified trades: book trades, then pool swaps (the gateway's own left out)."""
    return book_trades_for_slot(state, rules, slot) + swap_trades_for_slot(state, rules, slot)


def book_trades_for_slot(state: LedgerState, rules: LedgerRules, slot: int) -> list[TradeRecord]:
    """The slot's certified book trades: filled locks of the slot (the gateway's own left out)."""
    trades = []
    for take_id in sorted(state.locks):
        record = state.locks[take_id]
        if (record.status is LockStatus.FILLED and record.lock.slot == slot and record.filled_wh > 0
                and rules.gateway not in (record.buyer, record.lock.seller)):
            trades.append(_trade_of(take_id, record, rules.zone))
    return trades


def compute_settlement(state: LedgerState, rules: LedgerRules, slot: int) -> tuple[SettleBody, SlotSettlement]:
    """What a validator expects the ``settle`` entry of ``slot`` to be, from its certified state."""
    tariffs = tariffs_of(rules)
    meters = [m for m in meter_entries_for_slot(state, slot) if m.account != rules.gateway]
    settlement = settle_slot(slot, trades_for_slot(state, rules, slot), meters, tariffs)
    return _body_of(settlement, tariffs.grid_fees), settlement


def _body_of(settlement: SlotSettlement, fees: tuple[GridFee, ...] = ()) -> SettleBody:
    return SettleBody(slot=settlement.slot, shortfall_price=settlement.prices.shortfall_price,
                      feed_in_price=settlement.prices.feed_in_price,
                      trades=tuple(sorted(d.trade_id for d in settlement.deliveries
                                          if _swap_id_of(d.trade_id) is None)),
                      meters=tuple(sorted(m.account for m in settlement.meter_entries)),
                      postings=tuple(PostingBody(p.account, p.amount_uc) for p in imbalance_postings(settlement)),
                      grid_fees=tuple(sorted((GridFeeBody(f.from_zone, f.to_zone, f.price) for f in fees),
                                             key=lambda f: (f.from_zone, f.to_zone))),
                      swaps=tuple(sorted(swap_id for d in settlement.deliveries
                                         if (swap_id := _swap_id_of(d.trade_id)) is not None)))


def unsettled_slots(state: LedgerState) -> list[int]:
    """Slots with certified trades, swaps or meter entries and no certified settlement yet."""
    slots = {r.lock.slot for r in state.locks.values() if r.status is LockStatus.FILLED and r.filled_wh > 0}
    slots |= {record.slot for _, record in swap_records(state)}
    slots |= {int(k.rsplit("/", 1)[1]) for k in state.extra if k.startswith("meter/")}
    return sorted(s for s in slots if settle_key(s) not in state.extra)


def has_meters(state: LedgerState) -> bool:
    """True once the zone operator has registered at least one meter key."""
    return any(key.startswith("meter_key/") for key in state.extra)


def slots_to_settle(state: LedgerState, rules: LedgerRules, now_ms: int) -> list[int]:
    """Unsettled slots whose metering deadline has passed (none if the zone cannot settle).

    A zone whose operator registered no meter at all has nothing to settle against: settling it
    would count every trade as undelivered. Its slots wait until meters are registered."""
    if not isinstance(rules, SettlementLedgerRules) or not has_meters(state):
        return []
    return [s for s in unsettled_slots(state) if rules.slots.metering_due_ms(s) <= now_ms]


def validate_settle(state: LedgerState, entry: Entry, body: SettleBody, rules: LedgerRules, now_ms: int) -> None:
    tariffs_of(rules)
    slot_rules = _slot_rules(rules)
    if not slot_rules.is_aligned(body.slot):
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {body.slot} is not a slot start")
    due = slot_rules.metering_due_ms(body.slot)
    if now_ms < due:
        raise EntryRejected(RejectReason.DEADLINE_NOT_REACHED,
                            f"slot {body.slot} settles from {due} ms (metering deadline), now is {now_ms} ms")
    if settle_key(body.slot) in state.extra:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {body.slot} is settled already")
    try:
        expected, _ = compute_settlement(state, rules, body.slot)
    except SettlementError as exc:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {body.slot} cannot be settled: {exc}") from None
    if body != expected:
        raise EntryRejected(RejectReason.BAD_BODY, f"settlement of slot {body.slot} differs from the recomputation "
                            f"({_difference(body, expected)})")


def _difference(body: SettleBody, expected: SettleBody) -> str:
    for name in ("shortfall_price", "feed_in_price"):
        if getattr(body, name) != getattr(expected, name):
            return f"{name}: {getattr(body, name)} proposed, {getattr(expected, name)} expected"
    for name in ("trades", "swaps", "meters", "postings", "grid_fees"):
        if getattr(body, name) != getattr(expected, name):
            return f"{name}: {len(getattr(body, name))} proposed, {len(getattr(expected, name))} expected"
    return "differs"


def _settle_ready(state: LedgerState, entry: Entry, body: SettleBody) -> bool:
    trades_in = all(body_trade in state.locks and state.locks[body_trade].status is LockStatus.FILLED
                    for body_trade in body.trades)
    swaps_in = all(swap_record(state, swap_id) is not None for swap_id in body.swaps)
    return trades_in and swaps_in and all(_record_key(account, body.slot) in state.extra for account in body.meters)


def process_settle(state: LedgerState, entry: Entry, body: SettleBody, rules: LedgerRules) -> None:
    if settle_key(body.slot) in state.extra:
        raise ChainInconsistent(f"slot {body.slot} settled twice")
    trades = [_trade_of(t, state.locks[t], rules.zone) for t in body.trades]
    for swap_id in body.swaps:
        record = swap_record(state, swap_id)
        if record is None:
            raise ChainInconsistent(f"certified settlement of slot {body.slot} names unknown swap {swap_id.hex()}")
        trades.append(trade_of_swap(swap_id, record, rules.zone))
    meters = [m for m in meter_entries_for_slot(state, body.slot) if m.account in set(body.meters)]
    fees = tuple(GridFee(f.from_zone, f.to_zone, f.price) for f in body.grid_fees)
    try:
        settlement = settle_slot(body.slot, trades, meters,
                                 ZoneTariffs(rules.gateway, body.shortfall_price, body.feed_in_price, fees))
    except (SettlementError, ConfigError) as exc:
        raise ChainInconsistent(f"certified settlement of slot {body.slot} cannot be recomputed: {exc}") from None
    if _body_of(settlement, fees) != body:
        raise ChainInconsistent(f"certified settlement of slot {body.slot} differs from its inputs")
    for posting in body.postings:
        state.balances[posting.account] = state.balance(posting.account) + posting.amount_uc
        state.balances[rules.gateway] = state.balance(rules.gateway) - posting.amount_uc
    state.extra[settle_key(body.slot)] = settlement
    state.certificates[certificates_key(body.slot)] = certify_slot(settlement)


def _settle_conflict(entry: Entry, body: SettleBody) -> tuple[bytes, ...]:
    return (b"settle/" + body.slot.to_bytes(8, "big"),)


register_kind(KindRules(SETTLE_KIND, SettleBody, validate_settle, process_settle, _settle_conflict, _settle_ready))
