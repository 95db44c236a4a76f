"""Ledger entry kinds of the virtual power plant (pure).

Importing this module registers five kinds with ``p2pgrid.ledger.chain.register_kind``. Like every
kind, their validity is a deterministic, monotone function of the entry and its certified causal
past: no rule reads a validator's clock (every time limit is judged on the entry's signed
``time_ms``), what an entry names but a validator does not hold yet makes it *wait*
(``missing_dependency``), and a defect is *final*. Refusals of the rules below are
``EntryRejected(BAD_BODY, "<FlexRefuseReason value>: …")`` unless another reason is named.

``flex_grant`` (the zone **gateway**'s chain — the zone operator)
    Names a DSO account that may post requests until ``until_ms`` (judged on the request's own
    time). Stored under ``extra["flex_grant/<gateway seq>"]``: the grant is known by the seq of
    the gateway entry that made it, so a request can name it.
``flex_request`` (the gateway's chain, or a granted account's; time base ``entry.time_ms``)
    ``request_id`` (16 bytes, new: conflict key ``flex_request/<id>``), ``zone`` (the ledger's),
    ``feeder`` (a label), ``direction`` (``down``: less import / more export; ``up``), slots
    ``first_slot`` … ``first_slot + (n_slots−1)·length``, ``qty_wh`` per slot, a price cap
    ``price_uc_per_kwh`` for delivered flexibility, ``penalty_uc_per_kwh`` for awarded Wh not
    delivered, ``offer_deadline_ms`` with ``time_ms < offer_deadline_ms < first slot start``, and
    ``excluded_days`` (holidays the baselines skip, sorted, before the first slot's day).
    ``grant_seq`` is −1 for the gateway; any other account names its grant: a request of a
    non-operator naming no grant is ``wrong_kind_for_account`` (final), one naming a grant not
    certified here yet waits, one naming a gateway entry that is no grant of this account, or a
    grant expired at the request's time, is final (``not_operator``).
``flex_offer`` (the offering node's chain; time base ``entry.time_ms``)
    For one request (waits until it is certified here), dated before its ``offer_deadline_ms``
    (``deadline_passed``, final), by neither the gateway nor the requester, at most one per node
    and request: ``price_uc_per_kwh`` ≤ the request's cap, ``qty_wh`` per slot (≤ the request's),
    the node's committed ``baseline_wh`` per slot and the ``meter_key`` of its connection. Checks:

    * ``baseline_wh`` equals ``flex.baseline.baseline_of`` over the node's own certified meter
      readings (its own chain, so fixed by the offer's seq) with the request's excluded days and
      the days of the node's earlier offers; a slot without a baseline cannot be offered
      (``no_baseline``);
    * **capability**: the meter key's certified registration (waits for it; a key registered once
      ever, so it cannot change) must be of this account and record the connection's
      ``export_w`` (v2); with ``cap = export_w · length_s / 3600`` Wh, an offer of a ``down``
      request may move at most ``baseline + cap`` per slot (from its baseline to full export),
      an ``up`` one at most ``cap − baseline`` (the connection is taken as symmetric; the
      registration records export only) — ``beyond_capability`` otherwise.
``flex_award`` (the requester's chain; time base ``entry.time_ms``)
    Dated at or after the offer deadline and before the first slot starts; at most one per
    request. It names the offers it considered (``offers``, accounts, sorted; each must be
    certified, else it waits) and its ``lines`` (account, Wh per slot) must be exactly
    ``flex.rules.merit_order`` over them: ``award_beyond_request`` if a slot's lines exceed the
    request, ``award_beyond_offer`` if a line exceeds its offer, ``not_merit_order`` otherwise.
    Which certified offers it names is the requester's choice (validators cannot know which
    offers every other validator holds; the statement of who was passed over is on the ledger).
``flex_settle`` (the requester's chain; time base ``entry.time_ms``)
    Dated at or after the last slot's metering deadline (readings may be taken until then). It
    names, per awarded account, the slot indexes it counts as **metered** (each must have a
    certified meter reading of the account, else it waits; slots it does not name delivered
    nothing — naming fewer is never refused, as a validator cannot know what others hold). Its
    ``postings`` must equal the settlement of the named readings (``flex.rules.settle_offer``,
    per account, sorted), less what the request's earlier settles posted: a reading certified
    after the first settle is taken in by a later settle of the same request naming a superset
    (a reconciliation), never lost. A requester other than the gateway pays from its own chain:
    its net payment must be within its credit limit (``overdraft``, waiting).

    Applying it moves each posting between the requester and the node (> 0 pays the node). A
    penalty (< 0) debits a node from another chain, so, as a zone settlement does, it is an
    **obligation** (``chain.add_obligation``): it lowers the node's balance, not what it may spend.

Size. An award and a settle are one entry each (``ledger.messages.MAX_BODY_BYTES``, 7680 bytes):
about 35 bytes per awarded account plus 1–5 per slot number, so a request of 8 slots settles up
to the 64 accounts an award may name, one of 96 slots only about 20. Splitting larger awards
and settlements into several entries is not done: keep a request's slots × awardees small.

State: ``extra["flex_request/<id hex>"]``, ``extra["flex_offer/<id hex>/<account hex>"]``,
``extra["flex_days/<account hex>"]`` (days of the node's offers), ``extra["flex_award/<id hex>"]``,
``extra["flex_settle/<id hex>"]`` — all in the state root.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from p2pgrid.flex.baseline import Baseline, baseline_of, day_of
from p2pgrid.flex.rules import Direction, OfferSettlement, OfferTerms, merit_order, net_import_wh, settle_offer
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, RejectReason, add_obligation,
    register_kind, settle_obligation, validate_debit,
)
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ledger.messages import ID_SIZE, Entry
from p2pgrid.settlement.entries import MeterRecord, meter_record_of, meter_registration_of
from p2pgrid.settlement.metering import MeterRegistrationV2
from p2pgrid.units import SlotRules
from p2pgrid.wire import MAX_PRICE, MAX_QTY_WH, PUBLIC_KEY_SIZE, ZONE_PATTERN, struct

__all__ = [
    "FLEX_AWARD_KIND", "FLEX_GRANT_KIND", "FLEX_OFFER_KIND", "FLEX_REQUEST_KIND", "FLEX_SETTLE_KIND",
    "FlexAward", "FlexAwardLine", "FlexGrant", "FlexMetered", "FlexOffer", "FlexRefuseReason", "FlexRequest",
    "FlexSettle", "FlexSettlementLine", "FlexSettlementRecord", "SettlePosting",
    "award_of", "compute_award", "compute_flex_settle", "compute_request_id", "grant_of", "offer_baselines", "posted_flex",
    "offers_of", "plan_offer", "request_of", "requests", "slot_rules_of", "settlement_of_request",
]

FLEX_GRANT_KIND = "flex_grant"
FLEX_REQUEST_KIND = "flex_request"
FLEX_OFFER_KIND = "flex_offer"
FLEX_AWARD_KIND = "flex_award"
FLEX_SETTLE_KIND = "flex_settle"

MAX_FLEX_SLOTS = 96          # a request covers at most a day of 15-minute slots
MAX_EXCLUDED_DAYS = 31
MAX_FLEX_ACCOUNTS = 64       # offers named by one award or settle
MAX_FLEX_UC = 10**15
MS_PER_S = 1000


class FlexRefuseReason(str, enum.Enum):
    NOT_OPERATOR = "not_operator"
    BAD_TERMS = "bad_terms"
    DUPLICATE_REQUEST = "duplicate_request"
    UNKNOWN_REQUEST = "unknown_request"
    OWN_REQUEST = "own_request"
    DUPLICATE_OFFER = "duplicate_offer"
    ABOVE_PRICE_CAP = "above_price_cap"
    NO_BASELINE = "no_baseline"
    WRONG_BASELINE = "wrong_baseline"
    BEYOND_CAPABILITY = "beyond_capability"
    NOT_REQUESTER = "not_requester"
    TOO_EARLY = "too_early"
    ALREADY_AWARDED = "already_awarded"
    AWARD_BEYOND_REQUEST = "award_beyond_request"
    AWARD_BEYOND_OFFER = "award_beyond_offer"
    NOT_MERIT_ORDER = "not_merit_order"
    NOT_AWARDED = "not_awarded"
    NOT_RECONCILING = "not_reconciling"
    WRONG_POSTINGS = "wrong_postings"


def _bad(reason: FlexRefuseReason, detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.BAD_BODY, f"{reason.value}: {detail}")


def _wait(detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.MISSING_DEPENDENCY, detail)


# --- bodies ---------------------------------------------------------------------------------------

@struct
@dataclass(frozen=True)
class FlexGrant:
    """The zone operator lets ``account`` (a DSO) post flexibility requests until ``until_ms``."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    until_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class FlexRequest:
    """A flexibility request (module docstring)."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    feeder: str = field(metadata={"max_len": 32})
    direction: Direction
    first_slot: int = field(metadata={"min": 0})
    n_slots: int = field(metadata={"min": 1, "max": MAX_FLEX_SLOTS})
    qty_wh: int = field(metadata={"min": 1, "max": MAX_QTY_WH})
    price_uc_per_kwh: int = field(metadata={"min": 1, "max": MAX_PRICE})
    penalty_uc_per_kwh: int = field(metadata={"min": 0, "max": MAX_PRICE})
    offer_deadline_ms: int = field(metadata={"min": 0})
    excluded_days: tuple[int, ...] = field(default=(), metadata={"max_len": MAX_EXCLUDED_DAYS})
    grant_seq: int = field(default=-1, metadata={"min": -1})


@struct
@dataclass(frozen=True)
class FlexOffer:
    """A node's offer: price, Wh per slot, its committed baseline per slot, its connection's meter."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    price_uc_per_kwh: int = field(metadata={"min": 0, "max": MAX_PRICE})
    qty_wh: tuple[int, ...] = field(metadata={"max_len": MAX_FLEX_SLOTS})
    baseline_wh: tuple[int, ...] = field(metadata={"max_len": MAX_FLEX_SLOTS})
    meter_key: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})


@struct
@dataclass(frozen=True)
class FlexAwardLine:
    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    awarded_wh: tuple[int, ...] = field(metadata={"max_len": MAX_FLEX_SLOTS})


@struct
@dataclass(frozen=True)
class FlexAward:
    """The requester's award: the offers it considered and the merit order over them."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    offers: tuple[bytes, ...] = field(metadata={"max_len": MAX_FLEX_ACCOUNTS})
    lines: tuple[FlexAwardLine, ...] = field(metadata={"max_len": MAX_FLEX_ACCOUNTS})


@struct
@dataclass(frozen=True)
class FlexMetered:
    """Slot indexes of ``account``'s award the settle counts as metered (sorted)."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    slots: tuple[int, ...] = field(metadata={"max_len": MAX_FLEX_SLOTS})


@struct
@dataclass(frozen=True)
class SettlePosting:
    """µc the requester pays ``account`` (> 0) or the account pays the requester (< 0)."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    amount_uc: int = field(metadata={"min": -MAX_FLEX_UC, "max": MAX_FLEX_UC})


@struct
@dataclass(frozen=True)
class FlexSettle:
    """A settlement (or reconciliation) of an awarded request."""

    request_id: bytes = field(metadata={"size": ID_SIZE})
    metered: tuple[FlexMetered, ...] = field(metadata={"max_len": MAX_FLEX_ACCOUNTS})
    postings: tuple[SettlePosting, ...] = field(metadata={"max_len": MAX_FLEX_ACCOUNTS})


# --- records --------------------------------------------------------------------------------------

@struct
@dataclass(frozen=True)
class FlexRequestRecord:
    """A certified request, with the zone's slot length when it was certified (so applying the
    later entries of the request needs no zone configuration)."""

    requester: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    time_ms: int = field(metadata={"min": 0})
    slot_length_s: int = field(metadata={"min": 1})
    terms: FlexRequest

    @property
    def slots(self) -> list[int]:
        """The request's slot starts (s)."""
        return [self.terms.first_slot + i * self.slot_length_s for i in range(self.terms.n_slots)]


@struct
@dataclass(frozen=True)
class FlexOfferRecord:
    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    time_ms: int = field(metadata={"min": 0})
    offer: FlexOffer


@struct
@dataclass(frozen=True)
class FlexAwardRecord:
    time_ms: int = field(metadata={"min": 0})
    award: FlexAward


@struct
@dataclass(frozen=True)
class FlexSettlementLine:
    """One awarded node's settlement over the slots it counts as metered."""

    account: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    metered_slots: tuple[int, ...]
    result: OfferSettlement

    @property
    def net_uc(self) -> int:
        return self.result.net_uc


@struct
@dataclass(frozen=True)
class FlexSettlementRecord:
    request_id: bytes = field(metadata={"size": ID_SIZE})
    lines: tuple[FlexSettlementLine, ...]

    def line(self, account: bytes) -> FlexSettlementLine | None:
        return next((line for line in self.lines if line.account == account), None)


# --- keys and lookups -----------------------------------------------------------------------------

def _grant_key(seq: int) -> str:
    return f"flex_grant/{seq:015d}"


def _request_key(request_id: bytes) -> str:
    return f"flex_request/{request_id.hex()}"


def _offer_prefix(request_id: bytes) -> str:
    return f"flex_offer/{request_id.hex()}/"


def _offer_key(request_id: bytes, account: bytes) -> str:
    return f"{_offer_prefix(request_id)}{account.hex()}"


def _days_key(account: bytes) -> str:
    return f"flex_days/{account.hex()}"


def _award_key(request_id: bytes) -> str:
    return f"flex_award/{request_id.hex()}"


def _settle_key(request_id: bytes) -> str:
    return f"flex_settle/{request_id.hex()}"


def compute_request_id(requester: bytes, zone: str, nonce: int) -> bytes:
    """A request id derived from its requester and a nonce the requester never reuses."""
    return hashlib.sha256(b"p2pgrid/flex-request/" + requester + zone.encode() + nonce.to_bytes(8, "big")).digest()[:ID_SIZE]


def grant_of(state: LedgerState, gateway_seq: int) -> FlexGrant | None:
    grant = state.extra.get(_grant_key(gateway_seq))
    return grant if isinstance(grant, FlexGrant) else None


def request_of(state: LedgerState, request_id: bytes) -> FlexRequestRecord | None:
    record = state.extra.get(_request_key(request_id))
    return record if isinstance(record, FlexRequestRecord) else None


def requests(state: LedgerState) -> list[FlexRequestRecord]:
    """Every certified request, by first slot then id."""
    records = [r for _, r in prefixed_items(state.extra, "flex_request/") if isinstance(r, FlexRequestRecord)]
    return sorted(records, key=lambda r: (r.terms.first_slot, r.terms.request_id))


def offer_of(state: LedgerState, request_id: bytes, account: bytes) -> FlexOfferRecord | None:
    record = state.extra.get(_offer_key(request_id, account))
    return record if isinstance(record, FlexOfferRecord) else None


def offers_of(state: LedgerState, request_id: bytes) -> list[FlexOfferRecord]:
    """Every certified offer of a request, by account."""
    records = [r for _, r in prefixed_items(state.extra, _offer_prefix(request_id)) if isinstance(r, FlexOfferRecord)]
    return sorted(records, key=lambda r: r.account)


def award_of(state: LedgerState, request_id: bytes) -> FlexAwardRecord | None:
    record = state.extra.get(_award_key(request_id))
    return record if isinstance(record, FlexAwardRecord) else None


def settlement_of_request(state: LedgerState, request_id: bytes) -> FlexSettlementRecord | None:
    record = state.extra.get(_settle_key(request_id))
    return record if isinstance(record, FlexSettlementRecord) else None


def slot_rules_of(rules: LedgerRules) -> SlotRules:
    """The zone's slot calendar: the ledger rules' (settlement rules carry one), else the default."""
    slots = getattr(rules, "slots", None)
    return slots if isinstance(slots, SlotRules) else SlotRules()


def _known_request(state: LedgerState, request_id: bytes) -> FlexRequestRecord:
    record = request_of(state, request_id)
    if record is None:
        raise _wait(f"request {request_id.hex()} is not certified here (yet)")
    return record


# --- flex_grant -----------------------------------------------------------------------------------

def validate_flex_grant(state: LedgerState, entry: Entry, body: FlexGrant, rules: LedgerRules) -> None:
    if entry.account != rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the zone operator grants flexibility requests")
    if body.account == rules.gateway:
        raise _bad(FlexRefuseReason.BAD_TERMS, "the operator needs no grant")
    if body.until_ms <= entry.time_ms:
        raise _bad(FlexRefuseReason.BAD_TERMS, "the grant ends before it is made")


def process_flex_grant(state: LedgerState, entry: Entry, body: FlexGrant, rules: LedgerRules) -> None:
    state.extra[_grant_key(entry.seq)] = body


# --- flex_request ---------------------------------------------------------------------------------

def _validate_requester(state: LedgerState, entry: Entry, body: FlexRequest, rules: LedgerRules) -> None:
    if entry.account == rules.gateway:
        if body.grant_seq != -1:
            raise _bad(FlexRefuseReason.BAD_TERMS, "the operator names no grant")
        return
    if body.grant_seq == -1:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT,
                            "not_operator: only the zone operator or an account it granted posts flexibility requests")
    if state.head(rules.gateway).next_seq <= body.grant_seq:
        raise _wait(f"the operator's entry #{body.grant_seq} is not certified here (yet)")
    grant = grant_of(state, body.grant_seq)
    if grant is None or grant.account != entry.account:
        raise _bad(FlexRefuseReason.NOT_OPERATOR, f"the operator's entry #{body.grant_seq} grants this account nothing")
    if entry.time_ms >= grant.until_ms:
        raise _bad(FlexRefuseReason.NOT_OPERATOR, f"the grant ended at {grant.until_ms} ms")


def validate_flex_request(state: LedgerState, entry: Entry, body: FlexRequest, rules: LedgerRules) -> None:
    if body.zone != rules.zone:
        raise EntryRejected(RejectReason.WRONG_ZONE, f"request for zone {body.zone}, not {rules.zone}")
    slot_rules = slot_rules_of(rules)
    if not slot_rules.is_aligned(body.first_slot):
        raise _bad(FlexRefuseReason.BAD_TERMS, f"slot {body.first_slot} is not a slot start")
    if not entry.time_ms < body.offer_deadline_ms < body.first_slot * MS_PER_S:
        raise _bad(FlexRefuseReason.BAD_TERMS, "the offer deadline must fall after the request and before its first slot")
    days = body.excluded_days
    if any(a >= b for a, b in zip(days, days[1:])) or any(d >= day_of(body.first_slot) or d < 0 for d in days):
        raise _bad(FlexRefuseReason.BAD_TERMS, "excluded days must be sorted, distinct and before the event")
    _validate_requester(state, entry, body, rules)
    if request_of(state, body.request_id) is not None:
        raise _bad(FlexRefuseReason.DUPLICATE_REQUEST, f"request {body.request_id.hex()} exists already")


def process_flex_request(state: LedgerState, entry: Entry, body: FlexRequest, rules: LedgerRules) -> None:
    if request_of(state, body.request_id) is not None:
        raise ChainInconsistent(f"flex request {body.request_id.hex()} certified twice")
    state.extra[_request_key(body.request_id)] = FlexRequestRecord(entry.account, entry.time_ms,
                                                                   slot_rules_of(rules).length_s, body)


def _request_keys(entry: Entry, body: FlexRequest) -> tuple[bytes, ...]:
    return (b"flex_request/" + body.request_id,)


def _request_ready(state: LedgerState, entry: Entry, body: FlexRequest) -> bool:
    return body.grant_seq < 0 or grant_of(state, body.grant_seq) is not None


# --- the node's baseline ----------------------------------------------------------------------------

def net_import_history(state: LedgerState, account: bytes) -> dict[int, int]:
    """The node's certified net import per slot (slot start s → Wh), from its meter entries."""
    history: dict[int, int] = {}
    for _, record in prefixed_items(state.extra, f"meter/{account.hex()}/"):
        if isinstance(record, MeterRecord):
            history[record.reading.slot] = net_import_wh(record.reading.import_wh, record.reading.export_wh)
    return history


def offer_days(state: LedgerState, account: bytes) -> tuple[int, ...]:
    """The event days of the node's earlier offers (its baselines skip them)."""
    days = state.extra.get(_days_key(account))
    return days if isinstance(days, tuple) else ()


def offer_baselines(state: LedgerState, account: bytes, request: FlexRequestRecord) -> list[Baseline | None]:
    """The node's baseline of each slot of a request, from its certified history (None: no baseline)."""
    history = net_import_history(state, account)
    excluded = set(request.terms.excluded_days) | set(offer_days(state, account))
    return [baseline_of(history, slot, excluded) for slot in request.slots]


def capability_wh(request: FlexRequestRecord, baseline_wh: int, export_w: int) -> int:
    """The most a node can move in one slot (module docstring: ``flex_offer``), ≥ 0."""
    terms = request.terms
    cap = export_w * request.slot_length_s // 3600
    reach = baseline_wh + cap if terms.direction is Direction.DOWN else cap - baseline_wh
    return max(0, reach)


# --- flex_offer -----------------------------------------------------------------------------------

def validate_flex_offer(state: LedgerState, entry: Entry, body: FlexOffer, rules: LedgerRules) -> None:
    request = _known_request(state, body.request_id)
    terms = request.terms
    if entry.time_ms >= terms.offer_deadline_ms:
        raise EntryRejected(RejectReason.DEADLINE_PASSED,
                            f"offer dated {entry.time_ms} ms, at or after the offer deadline {terms.offer_deadline_ms} ms")
    if entry.account in (rules.gateway, request.requester):
        raise _bad(FlexRefuseReason.OWN_REQUEST, "the operator and the requester do not offer")
    if offer_of(state, body.request_id, entry.account) is not None:
        raise _bad(FlexRefuseReason.DUPLICATE_OFFER, "this node offered for this request already")
    if body.price_uc_per_kwh > terms.price_uc_per_kwh:
        raise _bad(FlexRefuseReason.ABOVE_PRICE_CAP, f"{body.price_uc_per_kwh} > cap {terms.price_uc_per_kwh} µc/kWh")
    if len(body.qty_wh) != terms.n_slots or len(body.baseline_wh) != terms.n_slots:
        raise _bad(FlexRefuseReason.BAD_TERMS, f"an offer states {terms.n_slots} quantities and baselines")
    if any(not 0 <= q <= terms.qty_wh for q in body.qty_wh) or not any(body.qty_wh):
        raise _bad(FlexRefuseReason.BAD_TERMS, f"quantities must be 0…{terms.qty_wh} Wh, not all 0")
    # The baseline: the node's own chain fixes its meter history at this seq, so this is final.
    for i, (baseline, stated) in enumerate(zip(offer_baselines(state, entry.account, request),
                                               body.baseline_wh)):
        if baseline is None:
            if body.qty_wh[i]:
                raise _bad(FlexRefuseReason.NO_BASELINE, f"slot {i}: fewer than 5 metered days in the last 30")
            if stated != 0:
                raise _bad(FlexRefuseReason.WRONG_BASELINE, f"slot {i} has no baseline: state 0")
        elif stated != baseline.wh:
            raise _bad(FlexRefuseReason.WRONG_BASELINE, f"slot {i}: baseline {stated} Wh stated, {baseline.wh} Wh computed")
    registration = meter_registration_of(state, body.meter_key)
    if registration is None:
        raise _wait(f"meter key {body.meter_key.hex()[:16]}… has no certified registration here (yet)")
    if registration.account != entry.account:
        raise _bad(FlexRefuseReason.BEYOND_CAPABILITY, "the meter key is registered for another account")
    if not isinstance(registration, MeterRegistrationV2):
        raise _bad(FlexRefuseReason.BEYOND_CAPABILITY, "the meter's registration records no connection capacity")
    for i, (qty, baseline_wh) in enumerate(zip(body.qty_wh, body.baseline_wh)):
        reach = capability_wh(request, baseline_wh, registration.export_w)
        if qty > reach:
            raise _bad(FlexRefuseReason.BEYOND_CAPABILITY,
                       f"slot {i}: {qty} Wh offered, the connection can move {reach} Wh from its baseline")


def process_flex_offer(state: LedgerState, entry: Entry, body: FlexOffer, rules: LedgerRules) -> None:
    request = request_of(state, body.request_id)
    if request is None:
        raise ChainInconsistent(f"certified offer for unknown request {body.request_id.hex()}")
    state.extra[_offer_key(body.request_id, entry.account)] = FlexOfferRecord(entry.account, entry.time_ms, body)
    day = day_of(request.terms.first_slot)
    days = offer_days(state, entry.account)
    if day not in days:
        state.extra[_days_key(entry.account)] = tuple(sorted((*days, day)))


def _offer_ready(state: LedgerState, entry: Entry, body: FlexOffer) -> bool:
    return request_of(state, body.request_id) is not None


def plan_offer(state: LedgerState, rules: LedgerRules, account: bytes, meter_key: bytes, request_id: bytes,
               price: int, limit_wh: Iterable[int]) -> FlexOffer | None:
    """The offer ``account`` can make for a request, moving at most ``limit_wh`` per slot (what its
    own devices allow: see ``flex.agent``), capped by the request, its baseline and its connection;
    None if it can offer nothing."""
    request = request_of(state, request_id)
    registration = meter_registration_of(state, meter_key)
    if request is None or not isinstance(registration, MeterRegistrationV2):
        return None
    terms = request.terms
    baselines = offer_baselines(state, account, request)
    qty, stated = [], []
    for baseline, limit in zip(baselines, limit_wh):
        if baseline is None:
            qty.append(0)
            stated.append(0)
            continue
        reach = capability_wh(request, baseline.wh, registration.export_w)
        qty.append(max(0, min(limit, reach, terms.qty_wh)))
        stated.append(baseline.wh)
    qty += [0] * (terms.n_slots - len(qty))
    stated += [b.wh if b else 0 for b in baselines[len(stated):]]
    if not any(qty):
        return None
    return FlexOffer(request_id, min(price, terms.price_uc_per_kwh), tuple(qty), tuple(stated), meter_key)


# --- flex_award -----------------------------------------------------------------------------------

def _sorted_unique(items: tuple[bytes, ...]) -> bool:
    return all(a < b for a, b in zip(items, items[1:]))


def _terms_of(records: Iterable[FlexOfferRecord]) -> list[OfferTerms]:
    return [OfferTerms(r.account, r.offer.price_uc_per_kwh, r.time_ms, r.offer.qty_wh) for r in records]


def _award_lines(awarded: Mapping[bytes, tuple[int, ...]]) -> tuple[FlexAwardLine, ...]:
    return tuple(FlexAwardLine(account, awarded[account]) for account in sorted(awarded))


def validate_flex_award(state: LedgerState, entry: Entry, body: FlexAward, rules: LedgerRules) -> None:
    request = _known_request(state, body.request_id)
    terms = request.terms
    if entry.account != request.requester:
        raise _bad(FlexRefuseReason.NOT_REQUESTER, "only the requester awards its request")
    if entry.time_ms < terms.offer_deadline_ms:
        raise _bad(FlexRefuseReason.TOO_EARLY, "an award is dated at or after the offer deadline")
    if entry.time_ms >= terms.first_slot * MS_PER_S:
        raise EntryRejected(RejectReason.DEADLINE_PASSED, "an award is dated before the first slot starts")
    if award_of(state, body.request_id) is not None:
        raise _bad(FlexRefuseReason.ALREADY_AWARDED, f"request {body.request_id.hex()} is awarded already")
    if not _sorted_unique(body.offers) or not _sorted_unique(tuple(line.account for line in body.lines)):
        raise _bad(FlexRefuseReason.BAD_TERMS, "offers and lines are sorted by account, without repeats")
    for line in body.lines:
        if len(line.awarded_wh) != terms.n_slots or any(q < 0 for q in line.awarded_wh):
            raise _bad(FlexRefuseReason.BAD_TERMS, f"a line states {terms.n_slots} quantities ≥ 0")
    for i in range(terms.n_slots):
        total = sum(line.awarded_wh[i] for line in body.lines)
        if total > terms.qty_wh:
            raise _bad(FlexRefuseReason.AWARD_BEYOND_REQUEST, f"slot {i}: {total} Wh awarded of {terms.qty_wh} Wh requested")
    named = set(body.offers)
    if any(line.account not in named for line in body.lines):
        raise _bad(FlexRefuseReason.AWARD_BEYOND_OFFER, "a line awards an account whose offer the award does not name")
    records: list[FlexOfferRecord] = []
    missing = []
    for account in body.offers:
        record = offer_of(state, body.request_id, account)
        if record is None:
            missing.append(account.hex()[:12])
        else:
            records.append(record)
    if missing:
        raise _wait(f"{len(missing)} named offer(s) not certified here (yet): {', '.join(missing[:3])}")
    by_account = {r.account: r for r in records}
    for line in body.lines:
        offered = by_account[line.account].offer.qty_wh
        if any(a > q for a, q in zip(line.awarded_wh, offered)):
            raise _bad(FlexRefuseReason.AWARD_BEYOND_OFFER, f"{line.account.hex()[:12]}… is awarded more than it offered")
    expected = _award_lines(merit_order(terms.qty_wh, _terms_of(records)))
    if body.lines != expected:
        raise _bad(FlexRefuseReason.NOT_MERIT_ORDER, "the lines are not the merit order of the named offers")


def process_flex_award(state: LedgerState, entry: Entry, body: FlexAward, rules: LedgerRules) -> None:
    if award_of(state, body.request_id) is not None:
        raise ChainInconsistent(f"flex request {body.request_id.hex()} awarded twice")
    state.extra[_award_key(body.request_id)] = FlexAwardRecord(entry.time_ms, body)


def _award_ready(state: LedgerState, entry: Entry, body: FlexAward) -> bool:
    return (request_of(state, body.request_id) is not None
            and all(offer_of(state, body.request_id, a) is not None for a in body.offers))


def compute_award(state: LedgerState, request_id: bytes) -> FlexAward | None:
    """The award of every offer certified here, in merit order (None for an unknown request)."""
    request = request_of(state, request_id)
    if request is None:
        return None
    records = offers_of(state, request_id)
    awarded = merit_order(request.terms.qty_wh, _terms_of(records))
    return FlexAward(request_id, tuple(r.account for r in records), _award_lines(awarded))


# --- flex_settle ----------------------------------------------------------------------------------

def _settlement_lines(state: LedgerState, request: FlexRequestRecord, award: FlexAward,
                      metered: Mapping[bytes, tuple[int, ...]]) -> tuple[FlexSettlementLine, ...]:
    """Each awarded account's settlement over the named metered slots (every line of the award)."""
    terms = request.terms
    slots = request.slots
    lines = []
    for line in award.lines:
        offer = offer_of(state, terms.request_id, line.account)
        if offer is None:
            raise ChainInconsistent("an awarded offer is not in the state")
        counted = metered.get(line.account, ())
        readings: list[int | None] = []
        for i, slot in enumerate(slots):
            record = meter_record_of(state, line.account, slot) if i in counted else None
            readings.append(None if record is None else
                            net_import_wh(record.reading.import_wh, record.reading.export_wh))
        result = settle_offer(terms.direction, line.awarded_wh, offer.offer.baseline_wh, readings,
                              offer.offer.price_uc_per_kwh, terms.penalty_uc_per_kwh)
        lines.append(FlexSettlementLine(line.account, tuple(counted), result))
    return tuple(lines)


def _postings(lines: tuple[FlexSettlementLine, ...], previous: FlexSettlementRecord | None) -> tuple[SettlePosting, ...]:
    before = {line.account: line.net_uc for line in previous.lines} if previous else {}
    out = []
    for line in lines:
        amount = line.net_uc - before.get(line.account, 0)
        if amount:
            out.append(SettlePosting(line.account, amount))
    return tuple(out)


def _metered_map(body: FlexSettle) -> dict[bytes, tuple[int, ...]]:
    return {m.account: m.slots for m in body.metered}


def validate_flex_settle(state: LedgerState, entry: Entry, body: FlexSettle, rules: LedgerRules) -> None:
    request = _known_request(state, body.request_id)
    terms = request.terms
    if entry.account != request.requester:
        raise _bad(FlexRefuseReason.NOT_REQUESTER, "only the requester settles its request")
    award_record = award_of(state, body.request_id)
    if award_record is None:
        # The award is in this same chain: if it is not before this entry, it never will be.
        raise _bad(FlexRefuseReason.NOT_AWARDED, f"request {body.request_id.hex()} has no award")
    award = award_record.award
    slots = request.slots
    due = slot_rules_of(rules).metering_due_ms(slots[-1])
    if entry.time_ms < due:
        raise _bad(FlexRefuseReason.TOO_EARLY, f"dated {entry.time_ms} ms, before the metering deadline {due} ms")
    awarded = {line.account for line in award.lines}
    accounts = tuple(m.account for m in body.metered)
    if not _sorted_unique(accounts):
        raise _bad(FlexRefuseReason.BAD_TERMS, "metered accounts are sorted, without repeats")
    missing = []
    for m in body.metered:
        if m.account not in awarded:
            raise _bad(FlexRefuseReason.NOT_AWARDED, f"{m.account.hex()[:12]}… has no award in this request")
        if not all(a < b for a, b in zip(m.slots, m.slots[1:])) or any(not 0 <= i < terms.n_slots for i in m.slots):
            raise _bad(FlexRefuseReason.BAD_TERMS, "metered slot indexes are sorted, distinct, within the request")
        missing += [f"{m.account.hex()[:12]}…#{i}" for i in m.slots if meter_record_of(state, m.account, slots[i]) is None]
    previous = settlement_of_request(state, body.request_id)
    named = _metered_map(body)
    if previous is not None:
        before = {line.account: set(line.metered_slots) for line in previous.lines}
        if any(not slots_before <= set(named.get(account, ())) for account, slots_before in before.items()):
            raise _bad(FlexRefuseReason.NOT_RECONCILING, "a reconciliation names every reading settled before")
        if all(set(named.get(account, ())) == slots_before for account, slots_before in before.items()):
            raise _bad(FlexRefuseReason.NOT_RECONCILING, "the request is settled over exactly these readings already")
    if missing:
        raise _wait(f"{len(missing)} named reading(s) not certified here (yet): {', '.join(missing[:3])}")
    lines = _settlement_lines(state, request, award, named)
    expected = _postings(lines, previous)
    if body.postings != expected:
        raise _bad(FlexRefuseReason.WRONG_POSTINGS, "the postings are not the settlement of the named readings")
    outflow = sum(p.amount_uc for p in expected)
    if outflow > 0:
        validate_debit(state, rules, entry.account, outflow)


def process_flex_settle(state: LedgerState, entry: Entry, body: FlexSettle, rules: LedgerRules) -> None:
    request = request_of(state, body.request_id)
    award = award_of(state, body.request_id)
    if request is None or award is None:
        raise ChainInconsistent(f"certified flex settle of an unknown or unawarded request {body.request_id.hex()}")
    previous = settlement_of_request(state, body.request_id)
    lines = _settlement_lines(state, request, award.award, _metered_map(body))
    if _postings(lines, previous) != body.postings:
        raise ChainInconsistent(f"certified flex settle of {body.request_id.hex()} differs from its readings")
    payer = entry.account
    for posting in body.postings:
        state.balances[posting.account] = state.balance(posting.account) + posting.amount_uc
        state.balances[payer] = state.balance(payer) - posting.amount_uc
        if posting.amount_uc < 0:
            add_obligation(state, posting.account, -posting.amount_uc)
        else:
            settle_obligation(state, posting.account, posting.amount_uc)
    state.extra[_settle_key(body.request_id)] = FlexSettlementRecord(body.request_id, lines)


def _settle_ready(state: LedgerState, entry: Entry, body: FlexSettle) -> bool:
    request = request_of(state, body.request_id)
    if request is None or award_of(state, body.request_id) is None:
        return False
    slots = request.slots
    return all(meter_record_of(state, m.account, slots[i]) is not None for m in body.metered for i in m.slots
               if 0 <= i < len(slots))


def posted_flex(previous: FlexSettlementRecord | None, current: FlexSettlementRecord,
                account: bytes) -> tuple[int, int, int]:
    """What the settle that replaced ``previous`` with ``current`` posted to ``account``, split:
    ``(payment µc, penalty µc, paid Wh)`` — differences, as a reconciliation posts only those."""
    now, before = current.line(account), previous.line(account) if previous is not None else None
    if now is None:
        return 0, 0, 0
    old = before.result if before is not None else OfferSettlement(0, 0, 0, 0, 0, 0)
    return (now.result.payment_uc - old.payment_uc, now.result.penalty_uc - old.penalty_uc,
            now.result.paid_wh - old.paid_wh)


def compute_flex_settle(state: LedgerState, rules: LedgerRules, request_id: bytes) -> FlexSettle | None:
    """The settle the requester writes now over every reading certified here: None when there is
    nothing (new) to settle — no award, or no reading beyond what was settled already."""
    request = request_of(state, request_id)
    award = award_of(state, request_id)
    if request is None or award is None:
        return None
    slots = request.slots
    metered = []
    for line in award.award.lines:
        counted = tuple(i for i, slot in enumerate(slots) if meter_record_of(state, line.account, slot) is not None)
        if counted:
            metered.append(FlexMetered(line.account, counted))
    previous = settlement_of_request(state, request_id)
    named = {m.account: m.slots for m in metered}
    if previous is not None and all(named.get(line.account, ()) == line.metered_slots for line in previous.lines):
        return None
    lines = _settlement_lines(state, request, award.award, named)
    return FlexSettle(request_id, tuple(metered), _postings(lines, previous))


register_kind(KindRules(FLEX_GRANT_KIND, FlexGrant, validate_flex_grant, process_flex_grant))
register_kind(KindRules(FLEX_REQUEST_KIND, FlexRequest, validate_flex_request, process_flex_request, _request_keys,
                        is_ready=_request_ready))
register_kind(KindRules(FLEX_OFFER_KIND, FlexOffer, validate_flex_offer, process_flex_offer, is_ready=_offer_ready))
register_kind(KindRules(FLEX_AWARD_KIND, FlexAward, validate_flex_award, process_flex_award, is_ready=_award_ready))
register_kind(KindRules(FLEX_SETTLE_KIND, FlexSettle, validate_flex_settle, process_flex_settle,
                        is_ready=_settle_ready))
