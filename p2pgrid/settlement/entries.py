"""Ledger entry kinds for metering, and how settlement results map onto the ledger (pure).

Importing this module registers three kinds with ``p2pgrid.ledger.chain.register_kind``:
``meter_registration``, ``meter`` and ``settle`` (below). Like every kind (see the chain module),
their validity is a deterministic, monotone function of the entry and its certified causal past:
no rule reads a validator's clock, and what an entry names but a validator does not hold yet makes
the validator *wait* (``missing_dependency``), never refuse. So a validator that holds more
certified entries of other chains never refuses what one holding fewer voted for.

``meter_registration`` — in the zone **gateway**'s chain (the zone operator). Body: a
  ``metering.MeterRegistration`` whose ``operator`` is the gateway and whose zone is the ledger's
  zone. A meter key measures one account, ever: the conflict key ``meter_key/<key>`` lets at most
  one certified registration claim it. State: ``extra["meter_key/<key hex>"] = registration``, and
  ``extra["meter_account/<account hex>"]`` = the account's registration applied last (the gateway's
  one chain orders them: a replaced meter's new registration supersedes the old one there, so the
  account's registered export is the latest one). No time rule.

``meter_registration_v2`` — the same, with a ``metering.MeterRegistrationV2`` body: the registration
  also records the connection's export capacity ``export_w`` (what order admission bounds an
  account's offers by, ``p2pgrid.trading.admission``). Same rules and conflict key as v1.

``meter`` — in the metered **account**'s own chain. Body: ``MeterEntryBody(reading)``, the signed
  ``p2pgrid/meter/v1`` reading bytes, signed by the meter key. Rules (``validate_meter``):

  - the reading is of the entry's own account and the ledger's zone (``bad_body`` /
    ``wrong_zone``, final);
  - **time, on the meter-signed ``created_ms``** (``metering.check_reading_time``, with the
    zone's ``SlotRules`` — ``LedgerRules.slots`` when the ledger has them, else the defaults):
    ``slot_end <= created_ms < metering_due_ms(slot)`` and ``created_ms <= entry.time_ms``;
    checked first, as it needs nothing certified;
  - the registration of its meter key is certified here, else ``missing_dependency`` (waiting:
    the gateway's registration may simply not have reached this validator); registered for
    another account: ``bad_body`` (final: a key is registered once, ever);
  - the rest of ``metering.validate_meter_reading``: counters against the account's own last
    certified reading (its own chain, so fixed by the entry's seq).

  A rejection of the reading is ``EntryRejected(BAD_BODY, "meter reading rejected (<reason>):
  …")``, final.

  The account's chain orders its readings, so a slot is metered at most once per account. A
  reading taken in time is valid whenever it reaches the committee: a reading certified after its
  slot was settled is picked up by a reconciliation ``settle`` (below), never lost. State:
  ``extra["meter/<account hex>/<slot>"] = MeterRecord`` and ``extra["meter_last/<account hex>"]``.
  A certified meter entry is applied (``is_ready``) once the registration of its key is in.

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

``settle`` — the settlement of one slot, in the zone **gateway**'s chain only (a single writer:
  the gateway's chain sequences every settlement of every slot, so no conflict key is needed and
  no two proposers can split the committee). Body: ``SettleBody(slot, shortfall_price,
  feed_in_price, trades, meters, postings, grid_fees, swaps)``: the prices and fee matrix used,
  the **inputs it names** — take ids of book trades, swap ids of pool swaps, accounts whose meter
  entry of the slot it settles (each list sorted, no repeats) — and its postings (sorted by
  account). Rules (``validate_settle``), all judged on the entry and what it names:

  - ``wrong_kind_for_account`` unless the entry is in the gateway's chain;
  - ``bad_body`` if the zone's ledger rules lack settlement terms (``SettlementLedgerRules``: slot
    calendar and imbalance prices), the slot is not a slot start, the entry is dated before the
    slot's metering deadline (``entry.time_ms < metering_due_ms(slot)``: the gateway's own signed
    time; readings may still be taken until then), a list is unsorted or repeats an item, or the
    prices or fee matrix differ from the zone's;
  - every named input must be certified here, else ``missing_dependency`` (waiting): a trade is
    a lock filled by a certified ``fill`` (an open lock waits for its fill), a swap a certified
    swap record, a meter account a certified ``meter`` entry of the slot. A named input that is
    certified but can never be one — another slot, the gateway's own (it is the grid and is not
    settled against itself), a lock returned to its buyer or consumed by a swap, share or bill
    (``filled_wh == 0``) — is ``bad_body`` (final);
  - **reconciliation**: if the slot is settled already (by an earlier ``settle`` of the
    gateway's chain), the named sets must include everything settled before and name at least
    one new input (``bad_body`` otherwise);
  - ``bad_body`` unless the body equals, exactly, the result over exactly the named inputs:
    ``settle_slot`` of the named trades, swaps and meter entries at the zone's prices (any
    account with a trade but no named meter entry settles as zero delivery), with postings =
    ``imbalance_postings`` of that result **minus what the slot's earlier settlements already
    posted** per account (nothing, for the first). Certified inputs the body does *not* name are
    irrelevant to its validity — never "equal to my current recomputation of everything I hold",
    which would make validity depend on how far a validator has synced.

  Applying it (``process_settle``) recomputes the same result from the named inputs at the prices
  the body states (``is_ready`` waits until every named input is in the state, so the derived
  state does not depend on the order entries are applied in, and applying needs no zone
  configuration: offline tools derive the same state), moves every posting between the account
  and the gateway, and stores the ``SlotSettlement`` in ``extra[settle_key(slot)]`` and the
  ``SlotCertificates`` in ``certificates[certificates_key(slot)]`` — a reconciliation *replaces*
  both with the union's, so every green Wh of the slot is certified once, by the latest result.
  A posting that pays the gateway (< 0) is an **obligation** (``chain.add_obligation``): it lowers
  the balance but not what the account may spend, so a settlement certified between two
  validators' votes on one of that account's own debits cannot flip their verdicts (chain rule 3);
  a posting the gateway pays (> 0) first pays back such obligations (``chain.settle_obligation``),
  so what the account may spend grows only by the rest (never decreases). Money stays conserved exactly: each posting
  moves µc between an account and the gateway, and over a slot's settlements the postings sum to
  those of the one-shot settlement of the union.

  When the gateway settles is its own decision (``settlement.service``: at ``metering_due_ms +
  W``, W a certification bound, over what is certified then), not a validity rule; whatever it
  could not include then is reconciled by a later ``settle`` of the same slot.

  Size: the entry body is at most ``ledger.messages.MAX_BODY_BYTES`` (7680) bytes — about 80
  bytes per metered account, 18 per trade or swap id — and each list at most
  ``MAX_SETTLE_ITEMS`` items. A reconciliation names the union, so it is as large as the slot's
  whole settlement; a slot beyond the limits needs splitting into chunks (not done yet: the
  gateway then leaves it unsettled, or unreconciled, and logs it).

Settle kinds with contracts of their own. A kind module may settle slots whose contracts are not
trades nor swaps (``p2pgrid.ppa.settle``: ``settle_ppa``, a PPA's positions): its body wraps a
``SettleBody`` (``settle_body``) and names its contracts (``contract_names``); it validates and
applies with ``judge_settle`` / ``apply_settle`` given the positions of its contracts
(``PositionsOf``), which ``settle_slot`` settles with the slot's trades. The contracts named are
stored under ``settle_contracts/<slot>`` and are part of ``settled_inputs``: every later settle of
the slot must name them again, so a plain ``settle`` of such a slot is refused (``bad_body``) and
can never undo its positions. Positions' trade ids are neither take ids (16 bytes) nor swap trade
ids, so ``SettleBody.trades`` never lists them. The gateway picks the kind with ``plan_settlement``
(``SETTLE_PLANNERS``); ``SETTLE_KINDS`` names every settle kind.

Zones. A trade's seller and buyer zones are the lock's ``seller_zone`` / ``buyer_zone`` (empty:
the ledger's zone). A cross-zone trade pays the grid fee of the ledger rules' fee matrix
(``SettlementLedgerRules.grid_fees``, built with ``market.locality.settlement_grid_fees``) on its
delivered Wh; the ``settle`` body states the fee matrix it used (``grid_fees``), so applying it
still needs no zone configuration. A cross-zone trade whose pair has no fee cannot be settled
(``bad_body``: ``UnknownGridFee``).

Pool swaps are trades. A certified ``swap`` (``pools.entries``: the host's chain sequences
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
from collections.abc import Callable
from typing import Any

from p2pgrid.errors import ConfigError, SettlementError, WireError
from p2pgrid.settlement.certificates import CertificateRegistry, SlotCertificates, certify_slot
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, LockRecord, LockStatus, RejectReason,
    add_obligation, decode_body, register_kind, settle_obligation,
)
from p2pgrid.ledger.extra import prefixed_items, prefixed_keys
from p2pgrid.ledger.messages import ID_SIZE as LOCK_ID_SIZE, Entry
from p2pgrid.settlement.metering import (
    MeterReading, MeterReadingRejected, MeterRegistration, MeterRegistrationV2, MeterRegistry, check_reading_time,
    decode_meter_reading, validate_meter_reading,
)
from p2pgrid.settlement.rules import (
    GridFee, ImbalancePrices, MeterEntry, Reason, SlotSettlement, TradeRecord, ZoneTariffs, settle_slot,
)
from p2pgrid.pools.entries import SWAP_KIND, SwapRecord, swap_key, swap_record
from p2pgrid.pools.messages import ID_SIZE as SWAP_ID_SIZE
from p2pgrid.units import WH_PER_KWH, SlotRules
from p2pgrid.wire import PUBLIC_KEY_SIZE, Side, Signed, struct

__all__ = [
    "MAX_SETTLE_ITEMS", "METER_KIND", "METER_REGISTRATION_KIND", "METER_REGISTRATION_V2_KIND", "SETTLE_KIND", "SWAP_TRADE_SUFFIX", "MeterEntryBody",
    "MeterRecord", "Posting", "PostingBody", "SettleBody", "SettlementLedgerRules", "SlotInputs",
    "book_trades_for_slot", "certificate_registry", "certificates_of", "certified_inputs", "compute_settlement",
    "imbalance_postings", "input_of_entry", "inputs_by_slot", "meter_entries_for_slot", "meter_record_of",
    "account_registration_of", "meter_registration_of", "posted_by_reason", "reconciliation_postings", "settle_key", "settled_inputs",
    "settled_slots", "settlement_of", "slots_to_reconcile",
    "slots_to_settle", "SETTLE_KINDS", "apply_settle", "contracts_key", "judge_settle", "plan_settlement", "settle_inputs_ready",
    "SETTLE_PLANNERS",
    "swap_trade_id", "swap_trades_for_slot", "tariffs_of", "trade_of_swap", "trades_for_slot",
    "unsettled_slots",
]

METER_KIND = "meter"
METER_REGISTRATION_KIND = "meter_registration"
METER_REGISTRATION_V2_KIND = "meter_registration_v2"
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


def _account_key(account: bytes) -> str:
    return f"meter_account/{account.hex()}"


def _record_key(account: bytes, slot: int) -> str:
    return f"meter/{account.hex()}/{slot:015d}"


def _last_key(account: bytes) -> str:
    return f"meter_last/{account.hex()}"


def _slot_rules(rules: LedgerRules) -> SlotRules:
    slots = getattr(rules, "slots", None)
    return slots if isinstance(slots, SlotRules) else SlotRules()


def meter_record_of(state: LedgerState, account: bytes, slot: int) -> MeterRecord | None:
    """The certified meter entry of ``account`` for ``slot``, or None."""
    record = state.extra.get(_record_key(account, slot))
    return record if isinstance(record, MeterRecord) else None


def meter_registration_of(state: LedgerState, meter_key: bytes) -> MeterRegistration | None:
    registration = state.extra.get(_registration_key(meter_key))
    return registration if isinstance(registration, MeterRegistration) else None


def account_registration_of(state: LedgerState, account: bytes) -> MeterRegistration | None:
    """The certified meter registration of ``account`` applied last (v1 or v2), or None."""
    registration = state.extra.get(_account_key(account))
    return registration if isinstance(registration, MeterRegistration) else None


# --- meter_registration ---------------------------------------------------------------------

def validate_meter_registration(state: LedgerState, entry: Entry, body: MeterRegistration,
                                rules: LedgerRules) -> None:
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
    state.extra[_account_key(body.account)] = body


def _registration_conflict(entry: Entry, body: MeterRegistration) -> tuple[bytes, ...]:
    return (b"meter_key/" + body.meter_key,)


# --- meter ------------------------------------------------------------------------------------

def _decode_reading(body: MeterEntryBody) -> Any:
    try:
        return decode_meter_reading(body.reading)
    except WireError as exc:
        raise EntryRejected(RejectReason.BAD_BODY, f"meter reading: {exc}") from None


def validate_meter(state: LedgerState, entry: Entry, body: MeterEntryBody, rules: LedgerRules) -> None:
    signed = _decode_reading(body)
    reading: MeterReading = signed.body
    if reading.account != entry.account:
        raise EntryRejected(RejectReason.BAD_BODY, "a meter reading goes in its own account's chain")
    if reading.zone != rules.zone:
        raise EntryRejected(RejectReason.WRONG_ZONE, f"meter reading for zone {reading.zone}, not {rules.zone}")
    try:
        # The time rules first: they need nothing certified, so what is final is refused at once
        # instead of waiting for a registration.
        check_reading_time(reading, _slot_rules(rules), entry.time_ms)
        registration = meter_registration_of(state, reading.meter_key)
        if registration is None:
            # Waiting, not final: the gateway's registration may be certified and just not here yet.
            raise EntryRejected(RejectReason.MISSING_DEPENDENCY,
                                f"meter key {reading.meter_key.hex()[:16]}… has no certified registration here (yet)")
        previous = state.extra.get(_last_key(reading.account))
        validate_meter_reading(signed, MeterRegistry.of([registration]), _slot_rules(rules), previous,
                               entry_time_ms=entry.time_ms)
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
register_kind(KindRules(METER_REGISTRATION_V2_KIND, MeterRegistrationV2, validate_meter_registration,
                        process_meter_registration, _registration_conflict))
register_kind(KindRules(METER_KIND, MeterEntryBody, validate_meter, process_meter, is_ready=_meter_ready))


# --- reading results back -------------------------------------------------------------------

def meter_entries_for_slot(state: LedgerState, slot: int) -> list[MeterEntry]:
    """The certified meter entries of ``slot``, as ``settle_slot`` takes them (sorted by account)."""
    suffix = f"/{slot:015d}"
    entries = []
    for key in sorted(k for k in prefixed_keys(state.extra, "meter/") if k.endswith(suffix)):
        entries.append(_meter_entry_of(state.extra[key]))
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
SETTLE_KINDS: set[str] = set()       # every kind that settles a slot (a kind module adds its own)
# A settle kind with contracts of its own gives ``compute_settlement``, ``judge_settle`` and
# ``apply_settle`` the positions of the contracts it names, from the slot's named meter entries;
# it raises ``EntryRejected`` for a named contract not certified here (waiting) or that cannot be
# one (final).
PositionsOf = Callable[[list[MeterEntry]], list[TradeRecord]]
# Per list of a settle body (trades, meters, postings, swaps, fees). A reconciliation names the
# slot's whole union, so this bounds a slot, not one round; the body's byte limit usually binds first.
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
    """A settlement of ``slot``: the imbalance prices and fee matrix it used (so applying it needs
    no zone configuration: offline tools derive the same state), the inputs it names — take ids,
    swap ids, metered accounts, each sorted — and the postings still due over them (sorted by
    account): the imbalance postings of the result over the named inputs, less what the slot's
    earlier settles posted (a reconciliation names the union of their inputs and new ones)."""

    slot: int = field(metadata={"min": 0})
    shortfall_price: int = field(metadata={"min": 0, "max": MAX_POSTING_UC})
    feed_in_price: int = field(metadata={"min": 0, "max": MAX_POSTING_UC})
    trades: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    meters: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    postings: tuple[PostingBody, ...] = field(metadata={"max_len": MAX_SETTLE_ITEMS})
    grid_fees: tuple[GridFeeBody, ...] = field(default=(), metadata={"max_len": MAX_SETTLE_ITEMS})
    swaps: tuple[bytes, ...] = field(default=(), metadata={"max_len": MAX_SETTLE_ITEMS})

    # Every settle kind's body offers these two (``SETTLE_KINDS``): a kind that also settles
    # contracts of its own (PPA positions) wraps a SettleBody and names its contracts.
    @property
    def settle_body(self) -> SettleBody:
        return self

    @property
    def contract_names(self) -> frozenset[bytes]:
        return frozenset()


def settle_key(slot: int) -> str:
    return f"settle/{slot:015d}"


def contracts_key(slot: int) -> str:
    return f"settle_contracts/{slot:015d}"


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
    return sorted(s.slot for _, s in prefixed_items(state.extra, "settle/") if isinstance(s, SlotSettlement))


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


def _is_take_id(trade_id: bytes) -> bool:
    """A book trade's id (a lock's take id); a swap's and a contract position's are longer."""
    return len(trade_id) == LOCK_ID_SIZE


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
    records = [(bytes.fromhex(key[len(_SWAP_KEY_PREFIX):]), record)
               for key, record in prefixed_items(state.extra, _SWAP_KEY_PREFIX) if isinstance(record, SwapRecord)]
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


# --- a slot's inputs -------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotInputs:
    """Inputs of one slot's settlement, by name: take ids of book trades, swap ids, metered accounts."""

    trades: frozenset[bytes] = frozenset()
    swaps: frozenset[bytes] = frozenset()
    meters: frozenset[bytes] = frozenset()
    contracts: frozenset[bytes] = frozenset()      # named by a settle kind of its own (PPAs)

    @classmethod
    def of_body(cls, body: Any) -> SlotInputs:
        """What the body of any settle kind names (``SettleBody.settle_body``, ``contract_names``)."""
        settle = body.settle_body
        return cls(frozenset(settle.trades), frozenset(settle.swaps), frozenset(settle.meters), body.contract_names)

    @classmethod
    def of_settlement(cls, settlement: SlotSettlement | None) -> SlotInputs:
        """What a stored settlement settled (nothing for None)."""
        if settlement is None:
            return cls()
        trades, swaps = set(), set()
        for delivery in settlement.deliveries:
            swap_id = _swap_id_of(delivery.trade_id)
            if swap_id is not None:
                swaps.add(swap_id)
            elif _is_take_id(delivery.trade_id):
                trades.add(delivery.trade_id)   # else a contract's position: its names are stored apart
        return cls(frozenset(trades), frozenset(swaps), frozenset(m.account for m in settlement.meter_entries))

    def __or__(self, other: SlotInputs) -> SlotInputs:
        return SlotInputs(self.trades | other.trades, self.swaps | other.swaps, self.meters | other.meters,
                          self.contracts | other.contracts)

    def __sub__(self, other: SlotInputs) -> SlotInputs:
        return SlotInputs(self.trades - other.trades, self.swaps - other.swaps, self.meters - other.meters,
                          self.contracts - other.contracts)

    def __le__(self, other: SlotInputs) -> bool:
        return (self.trades <= other.trades and self.swaps <= other.swaps and self.meters <= other.meters
                and self.contracts <= other.contracts)

    def __bool__(self) -> bool:
        return bool(self.trades or self.swaps or self.meters or self.contracts)

    def __len__(self) -> int:
        return len(self.trades) + len(self.swaps) + len(self.meters) + len(self.contracts)


def settled_inputs(state: LedgerState, slot: int) -> SlotInputs:
    """The inputs the slot's certified settlements named so far (empty while it is unsettled)."""
    contracts = state.extra.get(contracts_key(slot), frozenset())
    return SlotInputs.of_settlement(settlement_of(state, slot)) | SlotInputs(contracts=frozenset(contracts))


def certified_inputs(state: LedgerState, rules: LedgerRules, slot: int) -> SlotInputs:
    """Every certified input of ``slot`` a settlement may name (a scan of the whole state)."""
    return SlotInputs(frozenset(t.trade_id for t in book_trades_for_slot(state, rules, slot)),
                      frozenset(swap_id for swap_id, record in swap_records(state)
                                if record.slot == slot and rules.gateway not in (record.host, record.trader)),
                      frozenset(m.account for m in meter_entries_for_slot(state, slot) if m.account != rules.gateway))


def inputs_by_slot(state: LedgerState, rules: LedgerRules) -> dict[int, SlotInputs]:
    """Every certified input a settlement may name, by slot: one pass over the whole state."""
    trades: dict[int, set[bytes]] = defaultdict(set)
    swaps: dict[int, set[bytes]] = defaultdict(set)
    meters: dict[int, set[bytes]] = defaultdict(set)
    for take_id, record in state.locks.items():
        if (record.status is LockStatus.FILLED and record.filled_wh > 0
                and rules.gateway not in (record.buyer, record.lock.seller)):
            trades[record.lock.slot].add(take_id)
    for swap_id, swap in swap_records(state):
        if rules.gateway not in (swap.host, swap.trader):
            swaps[swap.slot].add(swap_id)
    for _, record in prefixed_items(state.extra, "meter/"):
        if isinstance(record, MeterRecord) and record.reading.account != rules.gateway:
            meters[record.reading.slot].add(record.reading.account)
    return {slot: SlotInputs(frozenset(trades[slot]), frozenset(swaps[slot]), frozenset(meters[slot]))
            for slot in sorted(set(trades) | set(swaps) | set(meters))}


def input_of_entry(state: LedgerState, rules: LedgerRules, signed: Signed[Entry]) -> tuple[int, SlotInputs] | None:
    """The settlement input an applied certified entry made, with its slot, or None: a ``fill``
    makes a book trade, a ``swap`` a swap, a ``meter`` entry a metered account. Lets a proposer
    keep an index of what changed instead of scanning the whole state (``settlement.service``)."""
    entry = signed.body
    if entry.kind not in ("fill", SWAP_KIND, METER_KIND):
        return None
    try:
        body = decode_body(entry)
        if entry.kind == "fill":
            record = state.locks.get(body.take_id)
            if (record is None or record.status is not LockStatus.FILLED or record.filled_wh <= 0
                    or rules.gateway in (record.buyer, record.lock.seller)):
                return None
            return record.lock.slot, SlotInputs(trades=frozenset({body.take_id}))
        if entry.kind == SWAP_KIND:
            swap = swap_record(state, body.swap_id)
            if swap is None or rules.gateway in (swap.host, swap.trader):
                return None
            return swap.slot, SlotInputs(swaps=frozenset({body.swap_id}))
        reading = decode_meter_reading(body.reading).body
    except (EntryRejected, WireError):
        return None
    if reading.account == rules.gateway or _record_key(reading.account, reading.slot) not in state.extra:
        return None
    return reading.slot, SlotInputs(meters=frozenset({reading.account}))


def _resolve(state: LedgerState, rules: LedgerRules, slot: int,
             inputs: SlotInputs) -> tuple[list[TradeRecord], list[MeterEntry]]:
    """The records of the named ``inputs``, checked as inputs of ``slot``. Raises ``bad_body``
    (final) for an input that is certified but can never be one, then ``missing_dependency``
    (waiting) if some input is not certified here yet."""
    missing: list[str] = []

    def bad(detail: str) -> EntryRejected:
        return EntryRejected(RejectReason.BAD_BODY, detail)

    trades: list[TradeRecord] = []
    for take_id in sorted(inputs.trades):
        record = state.locks.get(take_id)
        if record is None or record.status is LockStatus.OPEN:
            missing.append(f"trade {take_id.hex()[:12]}… (no certified fill here yet)")
            continue
        if record.status is not LockStatus.FILLED:
            raise bad(f"trade {take_id.hex()[:12]}…: its lock was returned to the buyer, it never traded")
        if record.filled_wh <= 0:
            raise bad(f"trade {take_id.hex()[:12]}…: its lock was consumed by a swap, share or bill, not a fill")
        if record.lock.slot != slot:
            raise bad(f"trade {take_id.hex()[:12]}… is of slot {record.lock.slot}, not {slot}")
        if rules.gateway in (record.buyer, record.lock.seller):
            raise bad(f"trade {take_id.hex()[:12]}… is the gateway's own: it is not settled against itself")
        trades.append(_trade_of(take_id, record, rules.zone))
    for swap_id in sorted(inputs.swaps):
        swap = swap_record(state, swap_id)
        if swap is None:
            missing.append(f"swap {swap_id.hex()[:12]}…")
            continue
        if swap.slot != slot:
            raise bad(f"swap {swap_id.hex()[:12]}… is of slot {swap.slot}, not {slot}")
        if rules.gateway in (swap.host, swap.trader):
            raise bad(f"swap {swap_id.hex()[:12]}… is the gateway's own: it is not settled against itself")
        trades.append(trade_of_swap(swap_id, swap, rules.zone))
    meters: list[MeterEntry] = []
    for account in sorted(inputs.meters):
        if account == rules.gateway:
            raise bad("the gateway's own meter is not settled against itself")
        record = state.extra.get(_record_key(account, slot))
        if not isinstance(record, MeterRecord):
            missing.append(f"meter entry of {account.hex()[:12]}… for slot {slot}")
            continue
        meters.append(_meter_entry_of(record))
    if missing:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY,
                            f"{len(missing)} named input(s) not certified here (yet): {', '.join(missing[:3])}")
    return trades, meters


def _meter_entry_of(record: MeterRecord) -> MeterEntry:
    r = record.reading
    return MeterEntry(account=r.account, zone=r.zone, slot=r.slot, import_wh=r.import_wh, export_wh=r.export_wh,
                      green_wh=r.green_wh, green_source=r.green_source, entry_hash=record.reading_hash)


def reconciliation_postings(previous: SlotSettlement | None, union: SlotSettlement) -> tuple[Posting, ...]:
    """What a settle of the union of a slot's inputs still has to post: the union's imbalance
    postings minus what the slot's earlier settlements posted (``previous``: the stored result,
    whose postings are, summed over every earlier settle of the slot, exactly its own), per
    account, sorted, zeros left out. For the first settle of a slot: ``imbalance_postings(union)``."""
    net: dict[bytes, int] = defaultdict(int)
    for p in imbalance_postings(union):
        net[p.account] += p.amount_uc
    for p in imbalance_postings(previous) if previous is not None else ():
        net[p.account] -= p.amount_uc
    return tuple(Posting(account, amount) for account, amount in sorted(net.items()) if amount)


def posted_by_reason(previous: SlotSettlement | None, current: SlotSettlement, account: bytes) -> dict[Reason, int]:
    """The non-trade money a settle posted to ``account`` (+ received, − paid), by reason: the
    current result's payments less the previous one's (for statements: a reconciliation posts
    only the difference)."""
    paid: dict[Reason, int] = defaultdict(int)
    for settlement, sign_ in ((current, 1), (previous, -1)):
        if settlement is None:
            continue
        for line in settlement.lines:
            if line.account == account:
                for reason, amount in line.payments:
                    if reason is not Reason.TRADE:
                        paid[reason] += sign_ * amount
    return {reason: amount for reason, amount in paid.items() if amount}


# --- settle -----------------------------------------------------------------------------------

def compute_settlement(state: LedgerState, rules: LedgerRules, slot: int, inputs: SlotInputs | None = None,
                       positions: PositionsOf | None = None) -> tuple[SettleBody, SlotSettlement]:
    """The ``settle`` entry the gateway proposes for ``slot`` now, and the result it stores: the
    union of what the slot's settlements named so far and ``inputs`` (default: every certified
    input of the slot, a scan of the whole state), postings net of what was posted already.
    Raises ``EntryRejected`` if an input is not certified here or cannot be one, and
    ``SettlementError`` if the inputs cannot be settled (e.g. a cross-zone trade without a fee)."""
    tariffs = tariffs_of(rules)
    previous = settlement_of(state, slot)
    if inputs is None:
        inputs = certified_inputs(state, rules, slot)
    named = settled_inputs(state, slot) | inputs
    if named.contracts and positions is None:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {slot} settles contracts: a settle kind of theirs settles it")
    trades, meters = _resolve(state, rules, slot, named)
    settlement = settle_slot(slot, [*trades, *(positions(meters) if positions else ())], meters, tariffs)
    return _body_of(settlement, tariffs.grid_fees, reconciliation_postings(previous, settlement)), settlement


# A settle kind with contracts of its own plans a slot's settlement first: its planner returns
# ``(kind, body)`` when the slot has contracts of its kind, None otherwise.
SettlePlanner = Callable[[LedgerState, LedgerRules, int, "SlotInputs"], "tuple[str, Any] | None"]
SETTLE_PLANNERS: list[SettlePlanner] = []


def plan_settlement(state: LedgerState, rules: LedgerRules, slot: int, inputs: SlotInputs | None = None) -> tuple[str, Any]:
    """The kind and body of the entry that settles ``slot`` now (``compute_settlement``, or the
    settle kind of the slot's contracts); raises as ``compute_settlement`` does."""
    for planner in SETTLE_PLANNERS:
        planned = planner(state, rules, slot, inputs if inputs is not None else certified_inputs(state, rules, slot))
        if planned is not None:
            return planned
    body, _ = compute_settlement(state, rules, slot, inputs)
    return SETTLE_KIND, body


def _fee_bodies(fees: tuple[GridFee, ...]) -> tuple[GridFeeBody, ...]:
    return tuple(sorted((GridFeeBody(f.from_zone, f.to_zone, f.price) for f in fees),
                        key=lambda f: (f.from_zone, f.to_zone)))


def _body_of(settlement: SlotSettlement, fees: tuple[GridFee, ...], postings: tuple[Posting, ...]) -> SettleBody:
    return SettleBody(slot=settlement.slot, shortfall_price=settlement.prices.shortfall_price,
                      feed_in_price=settlement.prices.feed_in_price,
                      trades=tuple(sorted(d.trade_id for d in settlement.deliveries if _is_take_id(d.trade_id))),
                      meters=tuple(sorted(m.account for m in settlement.meter_entries)),
                      postings=tuple(PostingBody(p.account, p.amount_uc) for p in postings),
                      grid_fees=_fee_bodies(fees),
                      swaps=tuple(sorted(swap_id for d in settlement.deliveries
                                         if (swap_id := _swap_id_of(d.trade_id)) is not None)))


def unsettled_slots(state: LedgerState) -> list[int]:
    """Slots with certified trades, swaps or meter entries and no certified settlement yet (a
    scan of the whole state)."""
    slots = {r.lock.slot for r in state.locks.values() if r.status is LockStatus.FILLED and r.filled_wh > 0}
    slots |= {record.slot for _, record in swap_records(state)}
    slots |= {int(k.rsplit("/", 1)[1]) for k in prefixed_keys(state.extra, "meter/")}
    return sorted(s for s in slots if settle_key(s) not in state.extra)


def slots_to_reconcile(state: LedgerState, rules: LedgerRules) -> list[int]:
    """Settled slots with certified inputs their settlements do not name yet: a reading, fill or
    swap certified after the slot was settled (a scan of the whole state)."""
    return [slot for slot in settled_slots(state)
            if not certified_inputs(state, rules, slot) <= settled_inputs(state, slot)]


def has_meters(state: LedgerState) -> bool:
    """True once the zone operator has registered at least one meter key."""
    return bool(prefixed_keys(state.extra, "meter_key/"))


def slots_to_settle(state: LedgerState, rules: LedgerRules, now_ms: int, delay_ms: int = 0) -> list[int]:
    """Slots to settle or reconcile at ``now_ms``: unsettled slots with inputs, and settled ones
    with inputs certified since, whose ``metering_due_ms + delay_ms`` has passed (none if the
    zone cannot settle). A scan of the whole state: ``settlement.service`` keeps an index instead.

    A zone whose operator registered no meter at all has nothing to settle against: settling it
    would count every trade as undelivered. Its slots wait until meters are registered."""
    if not isinstance(rules, SettlementLedgerRules) or not has_meters(state):
        return []
    slots = set(unsettled_slots(state)) | set(slots_to_reconcile(state, rules))
    return sorted(s for s in slots if rules.slots.metering_due_ms(s) + delay_ms <= now_ms)




def validate_settle(state: LedgerState, entry: Entry, body: SettleBody, rules: LedgerRules) -> None:
    judge_settle(state, entry, body, rules)


def judge_settle(state: LedgerState, entry: Entry, body: Any, rules: LedgerRules,
                 positions: PositionsOf | None = None) -> SlotSettlement:
    """The rules of ``settle`` (module docstring) for the body of any settle kind: its
    ``settle_body`` must be the exact result over the inputs it names, contracts' ``positions``
    included. Returns that result."""
    # Checks on the entry alone first, then on the gateway's own chain (the slot's earlier
    # settlements), then on the named inputs: what is final never hides behind a wait.
    named = SlotInputs.of_body(body)
    body = body.settle_body
    if entry.account != rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the zone gateway settles")
    tariffs = tariffs_of(rules)
    slot_rules = _slot_rules(rules)
    slot = body.slot
    if not slot_rules.is_aligned(slot):
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {slot} is not a slot start")
    due = slot_rules.metering_due_ms(slot)
    if entry.time_ms < due:
        raise EntryRejected(RejectReason.BAD_BODY, f"dated {entry.time_ms} ms, before slot {slot}'s metering "
                            f"deadline {due} ms: readings may still be taken")
    for name in ("trades", "swaps", "meters"):
        items = getattr(body, name)
        if any(a >= b for a, b in zip(items, items[1:])):
            raise EntryRejected(RejectReason.BAD_BODY, f"{name} are not sorted without repeats")
    prices = tariffs.prices_for(slot)
    if (body.shortfall_price, body.feed_in_price) != (prices.shortfall_price, prices.feed_in_price):
        raise EntryRejected(RejectReason.BAD_BODY, f"prices {body.shortfall_price}/{body.feed_in_price} are not the "
                            f"zone's {prices.shortfall_price}/{prices.feed_in_price}")
    if body.grid_fees != _fee_bodies(tariffs.grid_fees):
        raise EntryRejected(RejectReason.BAD_BODY, "the grid fee matrix is not the zone's")
    previous = settlement_of(state, slot)
    settled = settled_inputs(state, slot)
    if not settled <= named:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {slot} is settled already and this settle leaves out "
                            f"{len(settled - named)} of its settled inputs")
    if previous is not None and not named - settled:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {slot} is settled already over exactly these inputs")
    trades, meters = _resolve(state, rules, slot, named)
    try:
        union = settle_slot(slot, [*trades, *(positions(meters) if positions else ())], meters, tariffs)
    except SettlementError as exc:
        raise EntryRejected(RejectReason.BAD_BODY, f"slot {slot} cannot be settled: {exc}") from None
    expected = _body_of(union, tariffs.grid_fees, reconciliation_postings(previous, union))
    if body != expected:
        raise EntryRejected(RejectReason.BAD_BODY, f"settle of slot {slot} differs from the result over its named "
                            f"inputs ({_difference(body, expected)})")
    return union


def _difference(body: SettleBody, expected: SettleBody) -> str:
    for name in ("trades", "swaps", "meters", "postings", "grid_fees"):
        if getattr(body, name) != getattr(expected, name):
            return f"{name}: {len(getattr(body, name))} proposed, {len(getattr(expected, name))} expected"
    return "differs"


def settle_inputs_ready(state: LedgerState, body: SettleBody) -> bool:
    """Whether every trade, swap and meter entry ``body`` names is in the state."""
    return _settle_ready(state, None, body)  # type: ignore[arg-type]


def _settle_ready(state: LedgerState, entry: Entry, body: SettleBody) -> bool:
    # Every named input in the state (the earlier settlements of the slot are in the same chain,
    # so they come first anyway): the result then depends on nothing else.
    trades_in = all(take_id in state.locks and state.locks[take_id].status is LockStatus.FILLED
                    for take_id in body.trades)
    swaps_in = all(swap_record(state, swap_id) is not None for swap_id in body.swaps)
    return trades_in and swaps_in and all(_record_key(account, body.slot) in state.extra for account in body.meters)


def process_settle(state: LedgerState, entry: Entry, body: SettleBody, rules: LedgerRules) -> None:
    apply_settle(state, entry, body, rules)


def apply_settle(state: LedgerState, entry: Entry, body: Any, rules: LedgerRules,
                 positions: PositionsOf | None = None) -> None:
    """Apply a certified settle of any settle kind (``judge_settle``'s counterpart)."""
    named = SlotInputs.of_body(body)
    body = body.settle_body
    slot = body.slot
    previous = settlement_of(state, slot)
    if not settled_inputs(state, slot) <= named:
        raise ChainInconsistent(f"certified settlement of slot {slot} leaves out inputs settled before")
    fees = tuple(GridFee(f.from_zone, f.to_zone, f.price) for f in body.grid_fees)
    try:
        trades, meters = _resolve(state, rules, slot, named)
        union = settle_slot(slot, [*trades, *(positions(meters) if positions else ())], meters,
                            ZoneTariffs(rules.gateway, body.shortfall_price, body.feed_in_price, fees))
    except (EntryRejected, SettlementError, ConfigError) as exc:
        raise ChainInconsistent(f"certified settlement of slot {slot} cannot be recomputed: {exc}") from None
    if _body_of(union, fees, reconciliation_postings(previous, union)) != body:
        raise ChainInconsistent(f"certified settlement of slot {slot} differs from its inputs")
    for posting in body.postings:
        state.balances[posting.account] = state.balance(posting.account) + posting.amount_uc
        state.balances[rules.gateway] = state.balance(rules.gateway) - posting.amount_uc
        if posting.amount_uc < 0:
            # Owed to the gateway: lowers the balance, not what the account may spend (chain rule 3).
            add_obligation(state, posting.account, -posting.amount_uc)
        else:
            settle_obligation(state, posting.account, posting.amount_uc)
    state.extra[settle_key(slot)] = union
    if named.contracts:
        state.extra[contracts_key(slot)] = named.contracts
    state.certificates[certificates_key(slot)] = certify_slot(union)


register_kind(KindRules(SETTLE_KIND, SettleBody, validate_settle, process_settle, is_ready=_settle_ready))
SETTLE_KINDS.add(SETTLE_KIND)
