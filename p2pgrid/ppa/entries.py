"""Power purchase agreements on the ledger: offer, acceptance, termination, expiry, index (pure).

Importing this module registers five entry kinds with ``p2pgrid.ledger.chain.register_kind``. An
agreement's id is the SHA-256 of its canonical text (``ppa.terms``): the offer carries the terms
and that hash, validators re-render the terms and refuse the offer unless the hash matches, and
the acceptance names only the hash — so what the other party signs is exactly the text it read.

Every rule follows the ledger's validity rules (``ledger.chain``): no rule reads a validator's
clock (every time limit is judged on the entry's own signed ``time_ms``), what an entry names but
a validator does not hold yet makes it *wait* (``missing_dependency``, ``deadline_not_reached``,
``overdraft``), and every other refusal is final. Each record has one writer — the chain of the
account named in its key — so no rule reads what another chain can still change.

State (``LedgerState.extra``, covered by the state root):

* ``ppa_offer/<id>/<offerer>`` = ``OfferRecord`` and ``ppa_offer_at/<offerer>/<seq>`` = the id
  its entry ``seq`` offered (written by the offerer's chain);
* ``ppa/<id>`` = ``AgreementRecord`` (the acceptor's chain: only the party that did not offer);
* ``ppa_end/<id>/<party>`` = ``TerminationRecord`` (that party's chain);
* ``ppa_expired/<id>/<party>`` = the slot the party closed the agreement at (its own chain);
* ``ppa_claim/<seller>/<id>`` = ``ShareClaim``: an exclusive pay-as-produced share of the seller's
  generator, claimed by the seller's own offer or acceptance, shortened only by the seller's own
  termination or expiry — so the 100 % check reads the seller's chain alone;
* ``ppa_index/<name>/<period>`` = a reference value the zone operator published (gateway's chain).

The kinds
---------
``ppa_offer`` (either party's chain). Body ``PpaOffer(terms, ppa_id, accept_by_ms)``. Refused
(final, ``bad_body`` with a ``PpaRefuseReason``): ``hash_mismatch`` unless ``ppa_id ==
terms_hash(terms)``; ``wrong_zone`` (the terms' zone is not the ledger's); ``not_a_party`` (the
offerer is neither seller nor buyer), ``gateway_party`` (the zone operator is not a party: it is
the counterparty of every imbalance); ``bad_deadline`` unless ``time_ms < accept_by_ms <=
start`` (an agreement is concluded before its first slot, so no slot is settled without it);
``duplicate`` if the offerer offered these terms already; ``share_overlap`` if the seller offers
an exclusive pay-as-produced share that, with its other claims on the generator overlapping in
time, would exceed 100 %.

``ppa_accept`` (the other party's chain). Body ``PpaAccept(ppa_id, offerer, offer_seq)``: it
accepts the offer that entry ``offer_seq`` of the offerer's chain made. Waits
(``missing_dependency``) until the offerer's chain is certified that far here; refused
``terms_mismatch`` if that entry is not an offer of ``ppa_id`` — an acceptance of other terms
(one changed word in the text is another hash) never matches. Refused: ``not_a_party`` (the acceptor is not the offer's counterparty), ``offered_yourself`` (the
acceptor offered the same terms: then neither side can accept and the parties draft again — two
chains never race for one agreement), ``deadline_passed`` (dated at or after ``accept_by_ms``),
``duplicate``, ``share_overlap`` (a seller accepting a buyer's offer claims the share then).

``ppa_terminate`` (either party's chain). Body ``PpaTerminate(ppa_id, end_slot)``: no position
from ``end_slot`` on. Waits until the agreement is certified here; refused ``not_a_party``,
``bad_end`` (not a slot start of the term: ``start <= end_slot < end``), ``no_notice`` (``end_slot
× 1000 < time_ms + notice_s × 1000``: termination without the notice the terms require),
``duplicate`` (this party terminated already). The terminating party pays the other the terms'
``termination_penalty_uc`` (its own debit: ``overdraft`` waits). Both parties may terminate; the
agreement ends at the earliest end a settlement names (``ppa.settle``).

``ppa_expire`` (either party's chain). Body ``PpaExpire(ppa_id, termination_by)``: the party
closes the agreement for itself, releasing the seller's share claim. With an accepted agreement:
valid once the entry is dated at or after its end — ``end_slot`` of the terms, or of the
certified termination of ``termination_by`` (a party; ``b""`` for the terms' end; waiting until
that termination is here). Without one: only the offerer, withdrawing an offer nobody accepted,
once the counterparty's certified chain is dated at or past ``accept_by_ms`` (waiting until
then: an acceptance must be dated before it, so from then on none can follow — the same
one-writer rule as a lock's release). Refused ``duplicate`` if this party closed it already.

``ppa_index`` (the zone gateway's chain). Body ``PpaIndex(name, period_start_s, value)``: the
reference ``name`` is ``value`` from ``period_start_s`` on. Published in advance
(``period_start_s × 1000 >= time_ms``; ``bad_deadline`` otherwise) and once per period
(``duplicate``), so every value a slot's price uses is in the gateway's chain before any
settlement of that slot — settling reads it from the settling entry's own chain.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any

from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, RejectReason, register_kind,
    validate_debit,
)
from p2pgrid.ledger.extra import prefixed_items, prefixed_keys
from p2pgrid.ledger.messages import Entry
from p2pgrid.ppa.terms import INDEX_NAME_PATTERN, PPM, PpaTerms, Shape, terms_hash
from p2pgrid.wire import PUBLIC_KEY_SIZE, struct

__all__ = [
    "PPA_ACCEPT_KIND", "PPA_EXPIRE_KIND", "PPA_INDEX_KIND", "PPA_OFFER_KIND", "PPA_TERMINATE_KIND",
    "AgreementRecord", "OfferRecord", "PpaAccept", "PpaExpire", "PpaIndex", "PpaOffer", "PpaRefuseReason",
    "PpaTerminate", "ShareClaim", "TerminationRecord", "agreement_of", "agreements", "claimed_share_ppm",
    "expired_key", "index_value_at", "offers_of", "termination_key", "terminations_of",
]

PPA_OFFER_KIND = "ppa_offer"
PPA_ACCEPT_KIND = "ppa_accept"
PPA_TERMINATE_KIND = "ppa_terminate"
PPA_EXPIRE_KIND = "ppa_expire"
PPA_INDEX_KIND = "ppa_index"
ID_SIZE = 32
MS_PER_S = 1000


class PpaRefuseReason(str, enum.Enum):
    HASH_MISMATCH = "hash_mismatch"
    WRONG_ZONE = "wrong_zone"
    NOT_A_PARTY = "not_a_party"
    GATEWAY_PARTY = "gateway_party"
    BAD_DEADLINE = "bad_deadline"
    DUPLICATE = "duplicate"
    SHARE_OVERLAP = "share_overlap"
    OFFERED_YOURSELF = "offered_yourself"
    TERMS_MISMATCH = "terms_mismatch"
    BAD_END = "bad_end"
    NO_NOTICE = "no_notice"
    NOT_ENDED = "not_ended"
    BAD_INDEX = "bad_index"


def _bad(reason: PpaRefuseReason, detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.BAD_BODY, f"{reason.value}: {detail}")


def _id() -> Any:
    return field(metadata={"size": ID_SIZE})


# --- bodies ------------------------------------------------------------------------------------

@struct
@dataclass(frozen=True)
class PpaOffer:
    terms: PpaTerms
    ppa_id: bytes = _id()
    accept_by_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class PpaAccept:
    """Accepts the offer at ``offer_seq`` of ``offerer``'s chain, which must be of ``ppa_id``."""

    ppa_id: bytes = _id()
    offerer: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    offer_seq: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class PpaTerminate:
    ppa_id: bytes = _id()
    end_slot: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class PpaExpire:
    ppa_id: bytes = _id()
    termination_by: bytes = field(metadata={"max_len": PUBLIC_KEY_SIZE})   # b"": the terms' own end


@struct
@dataclass(frozen=True)
class PpaIndex:
    name: str = field(metadata={"pattern": INDEX_NAME_PATTERN})
    period_start_s: int = field(metadata={"min": 0})
    value: int = field(metadata={"min": 1, "max": 2**53})


# --- records -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OfferRecord:
    terms: PpaTerms
    ppa_id: bytes
    offerer: bytes
    accept_by_ms: int
    offered_ms: int
    offer_seq: int          # the offer's seq in the offerer's chain (what an acceptance names)


@dataclass(frozen=True)
class AgreementRecord:
    """An accepted agreement: both parties signed ``ppa_id``, the hash of the terms' text."""

    terms: PpaTerms
    ppa_id: bytes
    offerer: bytes
    acceptor: bytes
    accepted_ms: int


@dataclass(frozen=True)
class TerminationRecord:
    ppa_id: bytes
    party: bytes
    end_slot: int
    dated_ms: int
    penalty_uc: int


@dataclass(frozen=True)
class ShareClaim:
    """An exclusive pay-as-produced share ``share_ppm`` of ``generator`` for ``[start_slot, until_slot)``."""

    generator: bytes
    share_ppm: int
    start_slot: int
    until_slot: int


def _offer_key(ppa_id: bytes, offerer: bytes) -> str:
    return f"ppa_offer/{ppa_id.hex()}/{offerer.hex()}"


def _offer_at_key(offerer: bytes, seq: int) -> str:
    return f"ppa_offer_at/{offerer.hex()}/{seq:015d}"


def _agreement_key(ppa_id: bytes) -> str:
    return f"ppa/{ppa_id.hex()}"


def termination_key(ppa_id: bytes, party: bytes) -> str:
    """Where ``party``'s certified termination of the agreement is (a ``TerminationRecord``)."""
    return f"ppa_end/{ppa_id.hex()}/{party.hex()}"


def expired_key(ppa_id: bytes, party: bytes) -> str:
    """Where the slot ``party`` closed the agreement at is, once it did (``ppa_expire``)."""
    return f"ppa_expired/{ppa_id.hex()}/{party.hex()}"




def _claim_key(seller: bytes, ppa_id: bytes) -> str:
    return f"ppa_claim/{seller.hex()}/{ppa_id.hex()}"


def _index_key(name: str, period_start_s: int) -> str:
    return f"ppa_index/{name}/{period_start_s:015d}"


def offers_of(state: LedgerState, ppa_id: bytes) -> list[OfferRecord]:
    """The certified offers of ``ppa_id`` (one per offering party), by offerer."""
    found = [v for _, v in prefixed_items(state.extra, f"ppa_offer/{ppa_id.hex()}/") if isinstance(v, OfferRecord)]
    return sorted(found, key=lambda o: o.offerer)


def agreement_of(state: LedgerState, ppa_id: bytes) -> AgreementRecord | None:
    record = state.extra.get(_agreement_key(ppa_id))
    return record if isinstance(record, AgreementRecord) else None


def agreements(state: LedgerState, account: bytes | None = None) -> list[AgreementRecord]:
    """Every accepted agreement (of ``account``, as either party, if given), by start then id."""
    found = [v for _, v in prefixed_items(state.extra, "ppa/") if isinstance(v, AgreementRecord)]
    chosen = [a for a in found if account is None or account in (a.terms.seller, a.terms.buyer)]
    return sorted(chosen, key=lambda a: (a.terms.start_slot, a.ppa_id))


def terminations_of(state: LedgerState, ppa_id: bytes) -> list[TerminationRecord]:
    found = [v for _, v in prefixed_items(state.extra, f"ppa_end/{ppa_id.hex()}/") if isinstance(v, TerminationRecord)]
    return sorted(found, key=lambda t: t.party)


def index_value_at(state: LedgerState, name: str, slot: int) -> int | None:
    """The latest published value of reference ``name`` whose period starts at or before ``slot``."""
    periods = [(int(key.rsplit("/", 1)[1]), key) for key in prefixed_keys(state.extra, f"ppa_index/{name}/")]
    due = [item for item in periods if item[0] <= slot]
    return state.extra[max(due)[1]] if due else None


def claimed_share_ppm(state: LedgerState, seller: bytes, generator: bytes, start_slot: int, end_slot: int) -> int:
    """The largest total of the seller's exclusive claims on ``generator`` at any slot of
    ``[start_slot, end_slot)``."""
    claims = [v for _, v in prefixed_items(state.extra, f"ppa_claim/{seller.hex()}/")
              if isinstance(v, ShareClaim) and v.generator == generator
              and v.start_slot < end_slot and start_slot < v.until_slot]
    # The total only changes where a claim starts: its maximum is at one of those instants.
    instants = {start_slot} | {c.start_slot for c in claims if c.start_slot > start_slot}
    return max((sum(c.share_ppm for c in claims if c.start_slot <= t < c.until_slot) for t in instants), default=0)


# --- shared checks -----------------------------------------------------------------------------

def _check_party(terms: PpaTerms, account: bytes) -> None:
    if account not in (terms.seller, terms.buyer):
        raise _bad(PpaRefuseReason.NOT_A_PARTY, "the entry's account is neither seller nor buyer of the agreement")


def _check_share(state: LedgerState, terms: PpaTerms, account: bytes) -> None:
    """The seller claiming an exclusive share (by its offer or its acceptance): at most 100 %."""
    if account != terms.seller or terms.shape is not Shape.PAY_AS_PRODUCED or not terms.exclusive:
        return
    taken = claimed_share_ppm(state, terms.seller, terms.generator, terms.start_slot, terms.end_slot)
    if taken + terms.share_ppm > PPM:
        raise _bad(PpaRefuseReason.SHARE_OVERLAP,
                   f"the generator's exclusive shares would reach {(taken + terms.share_ppm) / 10_000:.4f} % "
                   "in the term (at most 100 %)")


def _claim_share(state: LedgerState, terms: PpaTerms, ppa_id: bytes, account: bytes) -> None:
    if account == terms.seller and terms.shape is Shape.PAY_AS_PRODUCED and terms.exclusive:
        state.extra[_claim_key(terms.seller, ppa_id)] = ShareClaim(terms.generator, terms.share_ppm,
                                                                   terms.start_slot, terms.end_slot)


def _shorten_claim(state: LedgerState, seller: bytes, ppa_id: bytes, until_slot: int) -> None:
    key = _claim_key(seller, ppa_id)
    claim = state.extra.get(key)
    if isinstance(claim, ShareClaim) and until_slot < claim.until_slot:
        state.extra[key] = replace(claim, until_slot=max(until_slot, claim.start_slot))


# --- ppa_offer ---------------------------------------------------------------------------------

def validate_offer(state: LedgerState, entry: Entry, body: PpaOffer, rules: LedgerRules) -> None:
    terms = body.terms
    if body.ppa_id != terms_hash(terms):
        raise _bad(PpaRefuseReason.HASH_MISMATCH, "ppa_id is not the SHA-256 of the terms' canonical text")
    if terms.zone != rules.zone:
        raise _bad(PpaRefuseReason.WRONG_ZONE, f"terms of zone {terms.zone}, ledger of {rules.zone}")
    _check_party(terms, entry.account)
    if rules.gateway in (terms.seller, terms.buyer):
        raise _bad(PpaRefuseReason.GATEWAY_PARTY, "the zone operator settles agreements; it is no party to one")
    if not entry.time_ms < body.accept_by_ms <= terms.start_slot * MS_PER_S:
        raise _bad(PpaRefuseReason.BAD_DEADLINE, "an offer is open after its own time and closes by the term's start")
    if _offer_key(body.ppa_id, entry.account) in state.extra:
        raise _bad(PpaRefuseReason.DUPLICATE, "this account offered these terms already")
    _check_share(state, terms, entry.account)


def process_offer(state: LedgerState, entry: Entry, body: PpaOffer, rules: LedgerRules) -> None:
    state.extra[_offer_key(body.ppa_id, entry.account)] = OfferRecord(body.terms, body.ppa_id, entry.account,
                                                                      body.accept_by_ms, entry.time_ms, entry.seq)
    state.extra[_offer_at_key(entry.account, entry.seq)] = body.ppa_id
    _claim_share(state, body.terms, body.ppa_id, entry.account)


# --- ppa_accept --------------------------------------------------------------------------------

def _accepted_offer(state: LedgerState, entry: Entry, body: PpaAccept) -> OfferRecord:
    """The offer the acceptance names, once its chain is certified that far here."""
    if body.offerer == entry.account:
        raise _bad(PpaRefuseReason.OFFERED_YOURSELF, "an acceptance accepts the other party's offer")
    if state.head(body.offerer).next_seq <= body.offer_seq:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY,
                            f"the offerer's chain is not certified up to seq {body.offer_seq} here (yet)")
    offered = state.extra.get(_offer_at_key(body.offerer, body.offer_seq))
    if offered != body.ppa_id:
        found = f"of other terms ({offered.hex()[:16]}…)" if isinstance(offered, bytes) else "not an offer"
        raise _bad(PpaRefuseReason.TERMS_MISMATCH, f"the offerer's entry {body.offer_seq} is {found}: the "
                   f"acceptance signs {body.ppa_id.hex()[:16]}…")
    offer = state.extra.get(_offer_key(body.ppa_id, body.offerer))
    if not isinstance(offer, OfferRecord):
        raise ChainInconsistent(f"offer {body.ppa_id.hex()} indexed by seq but not stored")
    return offer


def validate_accept(state: LedgerState, entry: Entry, body: PpaAccept, rules: LedgerRules) -> None:
    # What is final on the acceptor's own chain first, then the offer (which may still be on its way).
    if _offer_key(body.ppa_id, entry.account) in state.extra:
        raise _bad(PpaRefuseReason.OFFERED_YOURSELF, "you offered these terms yourself: the other party accepts")
    if agreement_of(state, body.ppa_id) is not None:
        raise _bad(PpaRefuseReason.DUPLICATE, "the agreement is accepted already")
    offer = _accepted_offer(state, entry, body)
    terms = offer.terms
    if entry.account != terms.other_party(offer.offerer):
        raise _bad(PpaRefuseReason.NOT_A_PARTY, "only the offer's counterparty accepts it")
    if entry.time_ms >= offer.accept_by_ms:
        raise EntryRejected(RejectReason.DEADLINE_PASSED, f"the offer was open until {offer.accept_by_ms} ms")
    _check_share(state, terms, entry.account)


def process_accept(state: LedgerState, entry: Entry, body: PpaAccept, rules: LedgerRules) -> None:
    offer = state.extra.get(_offer_key(body.ppa_id, body.offerer))
    if not isinstance(offer, OfferRecord) or agreement_of(state, body.ppa_id) is not None:
        raise ChainInconsistent(f"certified acceptance of {body.ppa_id.hex()} without an open offer")
    state.extra[_agreement_key(body.ppa_id)] = AgreementRecord(offer.terms, body.ppa_id, offer.offerer,
                                                               entry.account, entry.time_ms)
    _claim_share(state, offer.terms, body.ppa_id, entry.account)


def _accept_ready(state: LedgerState, entry: Entry, body: PpaAccept) -> bool:
    return _offer_key(body.ppa_id, body.offerer) in state.extra


# --- ppa_terminate -----------------------------------------------------------------------------

def _certified_agreement(state: LedgerState, ppa_id: bytes) -> AgreementRecord:
    agreement = agreement_of(state, ppa_id)
    if agreement is None:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, f"no certified agreement {ppa_id.hex()[:16]}… here (yet)")
    return agreement


def validate_terminate(state: LedgerState, entry: Entry, body: PpaTerminate, rules: LedgerRules) -> None:
    if termination_key(body.ppa_id, entry.account) in state.extra:
        raise _bad(PpaRefuseReason.DUPLICATE, "this party terminated the agreement already")
    terms = _certified_agreement(state, body.ppa_id).terms
    _check_party(terms, entry.account)
    if body.end_slot % terms.slot_length_s or not terms.start_slot <= body.end_slot < terms.end_slot:
        raise _bad(PpaRefuseReason.BAD_END, "a termination ends the agreement at a slot start within its term")
    if body.end_slot * MS_PER_S < entry.time_ms + terms.notice_s * MS_PER_S:
        raise _bad(PpaRefuseReason.NO_NOTICE, f"the terms require {terms.notice_s} s of notice: an entry dated "
                   f"{entry.time_ms} ms ends the agreement no earlier than {entry.time_ms + terms.notice_s * MS_PER_S} ms")
    validate_debit(state, rules, entry.account, terms.termination_penalty_uc)


def process_terminate(state: LedgerState, entry: Entry, body: PpaTerminate, rules: LedgerRules) -> None:
    agreement = agreement_of(state, body.ppa_id)
    if agreement is None:
        raise ChainInconsistent(f"certified termination of {body.ppa_id.hex()} without an agreement")
    terms = agreement.terms
    other = terms.other_party(entry.account)
    penalty = terms.termination_penalty_uc
    state.balances[entry.account] = state.balance(entry.account) - penalty
    state.balances[other] = state.balance(other) + penalty
    state.extra[termination_key(body.ppa_id, entry.account)] = TerminationRecord(body.ppa_id, entry.account, body.end_slot,
                                                                          entry.time_ms, penalty)
    if entry.account == terms.seller:
        _shorten_claim(state, terms.seller, body.ppa_id, body.end_slot)


def _terminate_ready(state: LedgerState, entry: Entry, body: PpaTerminate) -> bool:
    return agreement_of(state, body.ppa_id) is not None


# --- ppa_expire --------------------------------------------------------------------------------

def _expire_end(state: LedgerState, entry: Entry, body: PpaExpire) -> tuple[PpaTerms, int]:
    """The terms and the slot the entry closes the agreement at; raises unless it may."""
    agreement = agreement_of(state, body.ppa_id)
    if agreement is not None:
        terms = agreement.terms
        _check_party(terms, entry.account)
        end_slot = terms.end_slot
        if body.termination_by:
            termination = state.extra.get(termination_key(body.ppa_id, body.termination_by))
            if not isinstance(termination, TerminationRecord):
                raise EntryRejected(RejectReason.MISSING_DEPENDENCY, "no certified termination by that party here (yet)")
            end_slot = termination.end_slot
        if entry.time_ms < end_slot * MS_PER_S:
            raise _bad(PpaRefuseReason.NOT_ENDED, f"the agreement runs until slot {end_slot}")
        return terms, end_slot
    own = state.extra.get(_offer_key(body.ppa_id, entry.account))
    if not isinstance(own, OfferRecord):
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, "no certified agreement here (yet), nor an own offer")
    if body.termination_by:
        raise _bad(PpaRefuseReason.NOT_ENDED, "an offer nobody accepted has no termination")
    counterparty = own.terms.other_party(entry.account)
    if state.head(counterparty).last_time_ms < own.accept_by_ms:
        raise EntryRejected(RejectReason.DEADLINE_NOT_REACHED,
                            "the counterparty's chain has not passed the offer's deadline: it may still accept")
    return own.terms, own.terms.start_slot


def validate_expire(state: LedgerState, entry: Entry, body: PpaExpire, rules: LedgerRules) -> None:
    if expired_key(body.ppa_id, entry.account) in state.extra:
        raise _bad(PpaRefuseReason.DUPLICATE, "this party closed the agreement already")
    _expire_end(state, entry, body)


def process_expire(state: LedgerState, entry: Entry, body: PpaExpire, rules: LedgerRules) -> None:
    try:
        terms, end_slot = _expire_end(state, entry, body)
    except EntryRejected as exc:
        raise ChainInconsistent(f"certified expiry of {body.ppa_id.hex()} that cannot apply: {exc}") from None
    state.extra[expired_key(body.ppa_id, entry.account)] = end_slot
    if entry.account == terms.seller:
        _shorten_claim(state, terms.seller, body.ppa_id, end_slot)


def _expire_ready(state: LedgerState, entry: Entry, body: PpaExpire) -> bool:
    try:
        _expire_end(state, entry, body)
    except EntryRejected as exc:
        return exc.reason not in (RejectReason.MISSING_DEPENDENCY, RejectReason.DEADLINE_NOT_REACHED)
    return True


# --- ppa_index ---------------------------------------------------------------------------------

def validate_index(state: LedgerState, entry: Entry, body: PpaIndex, rules: LedgerRules) -> None:
    if entry.account != rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only the zone operator publishes references")
    if not re.fullmatch(INDEX_NAME_PATTERN, body.name):
        raise _bad(PpaRefuseReason.BAD_INDEX, f"{body.name!r} is not a reference name")
    if body.period_start_s * MS_PER_S < entry.time_ms:
        raise _bad(PpaRefuseReason.BAD_DEADLINE, "a reference value is published before its period starts")
    if _index_key(body.name, body.period_start_s) in state.extra:
        raise _bad(PpaRefuseReason.DUPLICATE, "this period's value is published already")


def process_index(state: LedgerState, entry: Entry, body: PpaIndex, rules: LedgerRules) -> None:
    state.extra[_index_key(body.name, body.period_start_s)] = body.value


register_kind(KindRules(PPA_OFFER_KIND, PpaOffer, validate_offer, process_offer))
register_kind(KindRules(PPA_ACCEPT_KIND, PpaAccept, validate_accept, process_accept, is_ready=_accept_ready))
register_kind(KindRules(PPA_TERMINATE_KIND, PpaTerminate, validate_terminate, process_terminate,
                        is_ready=_terminate_ready))
register_kind(KindRules(PPA_EXPIRE_KIND, PpaExpire, validate_expire, process_expire, is_ready=_expire_ready))
register_kind(KindRules(PPA_INDEX_KIND, PpaIndex, validate_index, process_index))
