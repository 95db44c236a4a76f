"""Liquidity providers' shares in a station's pools, as ledger objects (pure).

Importing this module registers six entry kinds with ``p2pgrid.ledger.chain.register_kind``. A
station (the **host**) sells shares in its pools' fee income under a **programme**; a liquidity
provider (**LP**) pays for shares at a fixed price, receives its part of the host's pool fees at
every payout, and gets its principal back at par once the lock-up is over. Everything a programme
is lives in ``LedgerState.extra``, so the state root covers it:

* ``extra["share_programme/<programme id hex>"] = ProgrammeRecord`` (terms, fee counters and the
  holdings, one ``Holding`` per LP, sorted by LP);
* ``extra["share_buy/<buy id hex>"] = BuyRecord`` (one per LP purchase);
* ``extra["share_payout/<programme id hex>/<period>"] = PayoutRecord`` (one per payout);
* ``extra["share_exit/<programme id hex>/<LP hex>"] = ExitRecord`` (an LP's exit requests and
  the redemptions that answered them; kept when answered: the state is written, never pruned).

The kinds
---------
Time. No rule reads a validator's clock: every limit is judged on the entry's own signed
``entry.time_ms`` (never decreasing along a chain), so a validator that votes for an entry and one
that judges it later agree. And no rule of one chain's entry reads what *another* chain can still
change (``chain``: validity is monotone in the certified causal past): an LP's entries read the
programme's terms (fixed by the offer), meter registrations (never changed once certified) and the
LP's own chain; the host's entries read the host's own chain and records fixed at creation. What
another chain has not brought yet *waits* (``missing_dependency``, ``no_lock``), never refuses.

``share_offer`` (host's chain; time base ``entry.time_ms``)
    Opens programme ``programme_id == next_programme_id(state, host, zone)`` (numbered by the
    host's earlier offers, so ids never repeat) with terms: ``zone`` (the ledger's zone: a
    programme of one zone sells only there), ``price_uc`` per share, ``fee_share_bps`` (the part of the host's pool fees
    that goes to LPs), ``lockup_until_slot`` (a slot start, Unix s: no redemption before it),
    ``cap_shares`` (most shares outstanding at once), ``sale_until_ms`` (after the offer's own
    ``time_ms``; no purchase dated from then on) and ``residents_only`` (only accounts with a
    certified meter registration in the zone may buy: local ownership). The fee shares of the
    host's programmes *active* at ``entry.time_ms`` (sale still open, or shares outstanding) add
    up to at most 100 %.
``share_buy`` (LP's chain — the LP debits only itself; time base ``entry.time_ms``)
    Escrows ``amount_uc == shares × price_uc`` for purchase ``buy_id``: valid only if dated while
    the programme sells (``time_ms < sale_until_ms``), with ``time_ms < deadline_ms ≤
    sale_until_ms``, for the programme's zone and host, ``1 ≤ shares ≤ cap_shares`` (the terms'
    cap: the shares left under it are the host's chain's, and the host enforces them at issue),
    never by the host itself, within the LP's credit limit. A programme not certified here yet,
    or (``residents_only``) an LP whose registration is not, waits (``missing_dependency``). The
    escrow is an ordinary chain lock record (``state.locks[buy_id]``, seller = host, order =
    programme, a nominal 1 Wh at price 0), so ``money_total()`` counts it; ``share_buy`` declares
    ``chain.take_key(buy_id)``, the key of every kind that creates a lock record. The host hands
    an escrow it will not issue back at once with ``swap_decline`` (naming the programme as the
    pool) — beyond the cap, beyond ``MAX_HOLDERS``, or expired; otherwise the LP takes it back
    with the chain's ``release`` once the host's chain has passed ``deadline_ms``.
``share_issue`` (host's chain; time base ``entry.time_ms``)
    Consumes that escrow through ``chain.consumable_lock`` (named host, open, the issue dated
    before ``deadline_ms``; no conflict key on the lock: its fate is the host's chain's alone, so
    the LP's release can never meet an issue): the host receives the amount, the LP ``shares`` more
    shares. The host's chain sequences every issue of a programme, so the cap holds **exactly**
    even when many LPs buy at once (two LP chains certified by different quorums cannot oversell
    it, as the buys alone could). A programme has at most ``MAX_HOLDERS`` LPs, so one payout entry
    carries every payment.
``share_payout`` (host's chain; no time limit)
    Pays the LPs their part of the pool fees of one **period**: the host's chain between the
    previous payout (or the offer) and this one. Pool fees are the fee part of the host's BUY
    swaps, ``credits_uc × fee_bps // 10000`` each (``swap_fee_uc``: the fee on the credits paid
    in, exactly ``amm``'s ``Quote.fee`` and the host's ``pool_fees`` stream in ``invest``; SELL
    swaps pay their fee in energy and count 0). Swaps are certified in the host's chain, so the
    fees of a period are exactly the swaps before the payout in that chain: every validator
    recomputes the same figure.

    * ``fees_uc`` = the host's pool fees now − at the start of the period;
    * ``amount_uc`` = ``floor(F'·bps/10⁴) − floor(F·bps/10⁴)`` with ``F`` the fees counted by
      earlier payouts and ``F' = F + fees_uc`` (cumulative flooring: no µc drifts over periods),
      or 0 if no share was earning;
    * ``payments``: ``amount_uc`` pro rata to each LP's **earning** shares, largest remainder (each
      gets ``floor(amount·s/S)``, the µc left over go one each to the largest remainders, ties to
      the lower account), zero payments left out, sorted by LP — money is conserved to the µc.

    Validators vote only for the exact recomputation (``compute_payout``), like ``settle``; the
    host pays from its own balance (its debit, within its credit limit). Shares issued during a
    period start earning at the next payout (the payout turns every held share into an earning
    one), so nobody can buy in just before a payout and take the fees of a period it did not fund.
``share_exit`` (LP's chain — moves no money; no time limit)
    The LP asks the host to redeem ``shares`` of programme ``programme_id`` (hosted by ``host``),
    never by the host itself. It is *not* checked against the LP's holdings: those are written by
    the host's chain (issues add, redemptions take away), so the check could flip either way
    between validators; the host redeems at most what is held (``pending_exit`` caps the pending
    request by the holding). It records the request in
    ``extra["share_exit/<programme id hex>/<LP hex>"] = ExitRecord``: ``requested`` counts every
    share the LP's exits asked for, ``answered`` every share the host's redemptions answered, and
    ``pending_exit`` is ``min(requested − answered, shares held)``. A request may be made during
    the lock-up; it is redeemed from the lock-up's end on.
``share_redeem`` (host's chain; time base ``entry.time_ms``, at or after the lock-up)
    Pays ``amount_uc == shares × price_uc`` (par) back to the LP and cancels those shares (not yet
    earning ones first). The host's chain debits only the host; it redeems on the LP's request
    (``exit_shares`` of the shares answer the LP's pending ``share_exit`` requests: at most
    ``shares``, and — waiting, not refusing, since the LP's requests only grow — at most what is
    pending in the validator's state) or as a buy-back (``exit_shares == 0``), either way only if
    dated from ``lockup_until_slot`` on (``locked_up`` otherwise: final, the date is signed).

    Why two counters and not one "pending" number: the request is in the LP's chain and the answer
    in the host's, and nodes apply the two chains in different orders. ``requested`` is written
    only by the LP's chain and ``answered`` only by the host's, so the record is the same whatever
    the order; a redemption answering requests is applied only once the LP's requests it answers
    are (``is_ready``), so ``answered ≤ requested`` always holds in the derived state.

What the host and an investor write next (the pure planners) is ``p2pgrid.shares.planning``.

Why the host sequences: only an account's own chain debits it (docs/ARCHITECTURE.md §5.5). An LP's ``share_buy``
debits the LP; every credit to an LP (issue of shares, payout, redemption) is the host's debit in
the host's chain. So a programme's state is a pure function of the host's chain plus the escrows
it consumes, and ``derive_state`` gives every node the same state root.

Cost: recomputing a payout sums the fees over every certified swap record of the host
(``host_pool_fees_uc`` scans ``state.extra``): ≈3 ms per 10k swaps in the state here. Payouts are
rare; a running fee total per pool kept by ``pools.entries`` would make it O(pools).

Rejections are ``EntryRejected``: ``BAD_BODY`` with a detail starting with a ``ShareRefuseReason``
value (``sale_closed: …``, ``payout_mismatch: …``, ``not_held: …`` for a redemption beyond the LP's
shares, ``locked_up: …`` for a redemption dated inside the lock-up), ``WRONG_KIND_FOR_ACCOUNT``
for an entry by the wrong account, ``MISSING_DEPENDENCY`` (waiting) for a programme, registration
or exit request not certified here yet, the lock reasons of ``chain.py`` for escrows,
``OVERDRAFT`` (waiting) when the payer cannot pay yet.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, LockRecord, LockStatus, RejectReason,
    consumable_lock, lock_fate_key, register_kind, take_key, validate_debit,
)
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ledger.messages import ID_SIZE, MAX_AMOUNT, Entry, Lock
from p2pgrid.units import MS_PER_S, SlotRules
from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, Side, struct

__all__ = [
    "BPS", "BuyRecord", "ExitRecord", "Holding", "MAX_HOLDERS",
    "Payment", "PayoutRecord", "ProgrammeRecord", "SHARE_BUY_KIND", "SHARE_EXIT_KIND",
    "SHARE_ISSUE_KIND", "SHARE_OFFER_KIND", "SHARE_PAYOUT_KIND", "SHARE_REDEEM_KIND", "ShareBuy",
    "ShareExit", "ShareIssue", "ShareOffer", "SharePayout", "SharePosition", "ShareRedeem", "ShareRefuseReason",
    "buy_of", "compute_buy_id", "compute_payout", "compute_programme_id", "escrow_lock", "exit_of", "exits_of",
    "host_pool_fees_uc", "income_per_share_uc", "is_resident", "lockup_ends_ms", "lp_positions",
    "next_programme_id", "payouts_of", "pending_exit",
    "plan_share_buy", "plan_share_exit", "plan_share_issue",
    "plan_share_redeem", "programme_of", "programmes", "slot_rules_of", "split_pro_rata", "swap_fee_uc",
]

SHARE_OFFER_KIND = "share_offer"
SHARE_BUY_KIND = "share_buy"
SHARE_ISSUE_KIND = "share_issue"
SHARE_PAYOUT_KIND = "share_payout"
SHARE_REDEEM_KIND = "share_redeem"
SHARE_EXIT_KIND = "share_exit"
BPS = 10_000
MAX_HOLDERS = 24        # one payout entry pays every LP, and stays a small entry


class ShareRefuseReason(str, enum.Enum):
    UNKNOWN_PROGRAMME = "unknown_programme"
    BAD_PROGRAMME_ID = "bad_programme_id"
    BAD_TERMS = "bad_terms"
    FEE_SHARE_EXCEEDED = "fee_share_exceeded"   # the host's active programmes would pay out > 100 %
    WRONG_ZONE = "wrong_zone"
    WRONG_HOST = "wrong_host"
    SALE_CLOSED = "sale_closed"
    CAP_EXCEEDED = "cap_exceeded"
    TOO_MANY_HOLDERS = "too_many_holders"
    NOT_RESIDENT = "not_resident"
    BAD_AMOUNT = "bad_amount"
    UNKNOWN_BUY = "unknown_buy"
    NOT_HELD = "not_held"
    PAYOUT_MISMATCH = "payout_mismatch"
    NO_EXIT_PENDING = "no_exit_pending"      # a redemption answers more exit requests than are pending
    LOCKED_UP = "locked_up"                  # a redemption dated inside the lock-up


def _bad(reason: ShareRefuseReason, detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.BAD_BODY, f"{reason.value}: {detail}")


# --- bodies ------------------------------------------------------------------------------------

def _amount(minimum: int = 1) -> Any:
    return field(metadata={"min": minimum, "max": MAX_AMOUNT})


def _id() -> Any:
    return field(metadata={"size": ID_SIZE})


def _key() -> Any:
    return field(metadata={"size": PUBLIC_KEY_SIZE})


@struct
@dataclass(frozen=True)
class ShareOffer:
    programme_id: bytes = _id()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    price_uc: int = _amount()
    fee_share_bps: int = field(metadata={"min": 1, "max": BPS})
    lockup_until_slot: int = field(metadata={"min": 0})
    cap_shares: int = _amount()
    sale_until_ms: int = field(metadata={"min": 0})
    residents_only: bool = False


@struct
@dataclass(frozen=True)
class ShareBuy:
    buy_id: bytes = _id()
    programme_id: bytes = _id()
    host: bytes = _key()
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    shares: int = _amount()
    amount_uc: int = _amount()
    deadline_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class ShareIssue:
    buy_id: bytes = _id()
    programme_id: bytes = _id()
    lp: bytes = _key()
    shares: int = _amount()


@struct
@dataclass(frozen=True)
class Payment:
    lp: bytes = _key()
    amount_uc: int = _amount()


@struct
@dataclass(frozen=True)
class SharePayout:
    programme_id: bytes = _id()
    period: int = field(metadata={"min": 0})
    fees_uc: int = _amount(0)
    amount_uc: int = _amount(0)
    payments: tuple[Payment, ...] = field(metadata={"max_len": MAX_HOLDERS})


@struct
@dataclass(frozen=True)
class ShareRedeem:
    programme_id: bytes = _id()
    lp: bytes = _key()
    shares: int = _amount()
    amount_uc: int = _amount()
    exit_shares: int = field(default=0, metadata={"min": 0, "max": MAX_AMOUNT})   # answers to share_exit


@struct
@dataclass(frozen=True)
class ShareExit:
    programme_id: bytes = _id()
    host: bytes = _key()
    shares: int = _amount()


# --- derived state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Holding:
    """One LP in one programme: ``shares`` outstanding, of which ``earning`` share this period's
    fees; principal paid in and back, and fee income received (µc)."""

    lp: bytes
    shares: int = 0
    earning: int = 0
    invested_uc: int = 0
    redeemed_uc: int = 0
    income_uc: int = 0


@dataclass(frozen=True)
class ProgrammeRecord:
    """A programme in the derived state. ``fees_base_uc``: the host's pool fees (all periods, all
    its pools) when the current period began; ``fees_counted_uc``: pool fees counted by this
    programme's payouts so far; ``paid_uc``: fee income paid to LPs."""

    programme_id: bytes
    host: bytes
    terms: ShareOffer
    fees_base_uc: int
    fees_counted_uc: int = 0
    paid_uc: int = 0
    payouts: int = 0
    sold_shares: int = 0
    holdings: tuple[Holding, ...] = ()

    @property
    def outstanding(self) -> int:
        return sum(h.shares for h in self.holdings)

    @property
    def earning(self) -> int:
        return sum(h.earning for h in self.holdings)

    @property
    def holders(self) -> int:
        """LPs holding shares now (the ones a payout may pay)."""
        return sum(1 for h in self.holdings if h.shares > 0)

    def holding(self, lp: bytes) -> Holding | None:
        return next((h for h in self.holdings if h.lp == lp), None)

    def is_new_holder(self, lp: bytes) -> bool:
        held = self.holding(lp)
        return held is None or held.shares == 0

    def with_holding(self, holding: Holding) -> ProgrammeRecord:
        others = [h for h in self.holdings if h.lp != holding.lp]
        kept = [*others, holding] if holding.shares or holding.income_uc or holding.invested_uc else others
        return replace(self, holdings=tuple(sorted(kept, key=lambda h: h.lp)))

    def is_active(self, now_ms: int) -> bool:
        return now_ms < self.terms.sale_until_ms or self.outstanding > 0

    def sale_closes_within(self, now_ms: int, span_ms: int) -> bool:
        """Is the sale closed at ``now_ms + span_ms`` (closed already when ``span_ms`` is 0)?"""
        return now_ms + span_ms >= self.terms.sale_until_ms


@dataclass(frozen=True)
class BuyRecord:
    programme_id: bytes
    lp: bytes
    shares: int
    amount_uc: int
    issued: bool = False


@dataclass(frozen=True)
class PayoutRecord:
    """One certified payout: the period's pool fees, what LPs got, over how many earning shares."""

    programme_id: bytes
    period: int
    fees_uc: int
    amount_uc: int
    earning_shares: int


@dataclass(frozen=True)
class ExitRecord:
    """An LP's exit requests in one programme: shares asked for (``requested``, written by the
    LP's chain) and shares redeemed in answer (``answered``, written by the host's chain)."""

    programme_id: bytes
    lp: bytes
    requested: int = 0
    answered: int = 0


def compute_programme_id(host: bytes, zone: str, number: int) -> bytes:
    """The id of the host's programme ``number`` (0 for its first offer, 1 for the next, …)."""
    seed = b"p2pgrid/share-programme/v1" + host + zone.encode() + number.to_bytes(8, "big")
    return hashlib.sha256(seed).digest()[:ID_SIZE]


def next_programme_id(state: LedgerState, host: bytes, zone: str) -> bytes:
    """The id the host's next ``share_offer`` must carry."""
    return compute_programme_id(host, zone, len(programmes(state, host)))


def compute_buy_id(lp: bytes, programme_id: bytes, nonce: int) -> bytes:
    """A purchase id for ``lp`` (e.g. its entry's seq as ``nonce``): distinct from every take id."""
    return hashlib.sha256(b"p2pgrid/share-buy/v1" + lp + programme_id + nonce.to_bytes(8, "big")).digest()[:ID_SIZE]


def _programme_key(programme_id: bytes) -> str:
    return "share_programme/" + programme_id.hex()


def _buy_key(buy_id: bytes) -> str:
    return "share_buy/" + buy_id.hex()


def _exit_key(programme_id: bytes, lp: bytes) -> str:
    return f"share_exit/{programme_id.hex()}/{lp.hex()}"


def _payout_key(programme_id: bytes, period: int) -> str:
    return f"share_payout/{programme_id.hex()}/{period:08d}"


def programme_of(state: LedgerState, programme_id: bytes) -> ProgrammeRecord | None:
    record = state.extra.get(_programme_key(programme_id))
    return record if isinstance(record, ProgrammeRecord) else None


def programmes(state: LedgerState, host: bytes | None = None) -> list[ProgrammeRecord]:
    """Every certified programme (of ``host``, if given), ordered by id."""
    found = [v for _, v in prefixed_items(state.extra, "share_programme/") if isinstance(v, ProgrammeRecord)]
    return sorted((p for p in found if host is None or p.host == host), key=lambda p: p.programme_id)


def payouts_of(state: LedgerState, programme_id: bytes) -> list[PayoutRecord]:
    prefix = f"share_payout/{programme_id.hex()}/"
    return sorted((v for _, v in prefixed_items(state.extra, prefix) if isinstance(v, PayoutRecord)),
                  key=lambda p: p.period)


def _buy_of(state: LedgerState, buy_id: bytes) -> BuyRecord | None:
    record = state.extra.get(_buy_key(buy_id))
    return record if isinstance(record, BuyRecord) else None


def buy_of(state: LedgerState, buy_id: bytes) -> BuyRecord | None:
    """The certified purchase ``buy_id`` (None if this state has not got it)."""
    return _buy_of(state, buy_id)


def exit_of(state: LedgerState, programme_id: bytes, lp: bytes) -> ExitRecord | None:
    record = state.extra.get(_exit_key(programme_id, lp))
    return record if isinstance(record, ExitRecord) else None


def exits_of(state: LedgerState, programme_id: bytes) -> list[ExitRecord]:
    """Every LP's exit record in the programme, ordered by LP."""
    prefix = f"share_exit/{programme_id.hex()}/"
    return sorted((v for _, v in prefixed_items(state.extra, prefix) if isinstance(v, ExitRecord)),
                  key=lambda r: r.lp)


def pending_exit(state: LedgerState, programme: ProgrammeRecord, lp: bytes) -> int:
    """Shares ``lp`` asked to redeem and still holds, not yet redeemed in answer."""
    record = exit_of(state, programme.programme_id, lp)
    held = programme.holding(lp)
    if record is None or held is None:
        return 0
    return max(0, min(record.requested - record.answered, held.shares))


def slot_rules_of(rules: LedgerRules) -> SlotRules:
    slots = getattr(rules, "slots", None)
    return slots if isinstance(slots, SlotRules) else SlotRules()


# --- building bodies ---------------------------------------------------------------------------

def plan_share_buy(programme: ProgrammeRecord, lp: bytes, shares: int, nonce: int, deadline_ms: int) -> ShareBuy:
    """The ``share_buy`` body for ``shares`` of ``programme`` (``nonce``: e.g. the LP's next seq)."""
    return ShareBuy(buy_id=compute_buy_id(lp, programme.programme_id, nonce), programme_id=programme.programme_id,
                    host=programme.host, zone=programme.terms.zone, shares=shares,
                    amount_uc=shares * programme.terms.price_uc, deadline_ms=deadline_ms)


def plan_share_issue(state: LedgerState, buy_id: bytes) -> ShareIssue | None:
    """The ``share_issue`` body consuming certified purchase ``buy_id`` (None if not known)."""
    buy = _buy_of(state, buy_id)
    return None if buy is None else ShareIssue(buy_id=buy_id, programme_id=buy.programme_id, lp=buy.lp,
                                               shares=buy.shares)


def plan_share_redeem(programme: ProgrammeRecord, lp: bytes, shares: int, exit_shares: int = 0) -> ShareRedeem:
    """Redeem ``shares`` of ``lp`` at par; ``exit_shares`` of them answer its exit requests."""
    return ShareRedeem(programme_id=programme.programme_id, lp=lp, shares=shares,
                       amount_uc=shares * programme.terms.price_uc, exit_shares=exit_shares)


def plan_share_exit(programme: ProgrammeRecord, shares: int) -> ShareExit:
    """The LP's ``share_exit`` body asking the host to redeem ``shares``."""
    return ShareExit(programme_id=programme.programme_id, host=programme.host, shares=shares)


# --- pool fees ---------------------------------------------------------------------------------

def swap_fee_uc(side: Side, credits_uc: int, fee_bps: int) -> int:
    """The fee in µc of one certified swap: BUY pays ``credits_uc`` in, of which
    ``credits_uc·fee_bps // 10000`` is fee (``amm``'s ``Quote.fee``); SELL pays its fee in energy: 0."""
    return credits_uc * fee_bps // BPS if side is Side.BUY else 0


def host_pool_fees_uc(state: LedgerState, host: bytes) -> int:
    """All pool fees the host's certified swaps earned so far (µc), over all its pools."""
    total = 0
    for _, record in prefixed_items(state.extra, "swap/"):
        if getattr(record, "host", None) != host:
            continue
        pool = getattr(state.pools.get(record.pool_id), "pool", None)
        if pool is not None:
            total += swap_fee_uc(record.side, record.credits_uc, pool.fee_bps)
    return total


def split_pro_rata(amount: int, weights: Sequence[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
    """``amount`` split by positive ``weights`` with the largest-remainder rule: parts add up to
    ``amount`` exactly; ties go to the lower key. Returns (key, part) sorted by key."""
    total = sum(w for _, w in weights)
    if total <= 0:
        return []
    parts = {key: amount * w // total for key, w in weights}
    left = amount - sum(parts.values())
    by_remainder = sorted(weights, key=lambda kw: (-(amount * kw[1] % total), kw[0]))
    for key, _ in by_remainder[:left]:
        parts[key] += 1
    return sorted(parts.items())


def compute_payout(state: LedgerState, programme: ProgrammeRecord) -> SharePayout:
    """The one payout validators accept next for ``programme`` in ``state`` (module docstring)."""
    fees = host_pool_fees_uc(state, programme.host) - programme.fees_base_uc
    bps = programme.terms.fee_share_bps
    counted = programme.fees_counted_uc
    due = (counted + fees) * bps // BPS - counted * bps // BPS
    weights = [(h.lp, h.earning) for h in programme.holdings if h.earning > 0]
    amount = due if weights else 0
    payments = tuple(Payment(lp, part) for lp, part in split_pro_rata(amount, weights) if part > 0)
    return SharePayout(programme.programme_id, programme.payouts, fees, amount, payments)


# --- checks shared by the host's kinds -----------------------------------------------------------

def _host_programme(state: LedgerState, entry: Entry, programme_id: bytes) -> ProgrammeRecord:
    programme = programme_of(state, programme_id)
    if programme is None:
        raise _bad(ShareRefuseReason.UNKNOWN_PROGRAMME, f"no certified programme {programme_id.hex()}")
    if programme.host != entry.account:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only a programme's host writes this entry")
    return programme


def _certified_programme(state: LedgerState, programme_id: bytes) -> ProgrammeRecord:
    programme = programme_of(state, programme_id)
    if programme is None:
        raise ChainInconsistent(f"certified share entry for unknown programme {programme_id.hex()}")
    return programme


def _store(state: LedgerState, programme: ProgrammeRecord) -> None:
    state.extra[_programme_key(programme.programme_id)] = programme


# --- share_offer -------------------------------------------------------------------------------

def validate_share_offer(state: LedgerState, entry: Entry, body: ShareOffer, rules: LedgerRules) -> None:
    if body.programme_id != next_programme_id(state, entry.account, entry.zone):
        raise _bad(ShareRefuseReason.BAD_PROGRAMME_ID, "a programme's id is next_programme_id(state, host, zone)")
    if body.zone != entry.zone:
        raise _bad(ShareRefuseReason.WRONG_ZONE, f"a programme of {entry.zone} cannot sell in {body.zone}")
    if not slot_rules_of(rules).is_aligned(body.lockup_until_slot):
        raise _bad(ShareRefuseReason.BAD_TERMS, f"lock-up {body.lockup_until_slot} is not a slot start")
    if body.sale_until_ms <= entry.time_ms:
        raise _bad(ShareRefuseReason.BAD_TERMS, "the sale would close before the offer's own time")
    if entry.account == rules.gateway:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "the zone gateway hosts no pools")
    # The host's own programmes and their outstanding shares (issued and redeemed in its chain).
    active = sum(p.terms.fee_share_bps for p in programmes(state, entry.account) if p.is_active(entry.time_ms))
    if active + body.fee_share_bps > BPS:
        raise _bad(ShareRefuseReason.FEE_SHARE_EXCEEDED,
                   f"active programmes give LPs {active} bps already; {body.fee_share_bps} more exceeds {BPS}")


def process_share_offer(state: LedgerState, entry: Entry, body: ShareOffer, rules: LedgerRules) -> None:
    if programme_of(state, body.programme_id) is not None:
        raise ChainInconsistent(f"programme {body.programme_id.hex()} offered twice")
    _store(state, ProgrammeRecord(body.programme_id, entry.account, body, host_pool_fees_uc(state, entry.account)))


# --- share_buy ---------------------------------------------------------------------------------

def is_resident(state: LedgerState, account: bytes, zone: str) -> bool:
    """Has ``account`` a certified meter registration in ``zone`` (``settlement.entries``)?"""
    return any(getattr(reg, "account", None) == account and getattr(reg, "zone", None) == zone
               for _, reg in prefixed_items(state.extra, "meter_key/"))


def validate_share_buy(state: LedgerState, entry: Entry, body: ShareBuy, rules: LedgerRules) -> None:
    # Only what cannot change once certified is read here: the programme's terms (fixed by its
    # offer), meter registrations (added, never changed or removed) and the LP's own chain. The
    # shares outstanding and the holders are the host's chain's: a buy judged on them could be
    # voted by a validator that has not seen the host's latest issue and refused by one that has.
    lp = entry.account
    programme = programme_of(state, body.programme_id)
    if programme is None:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, f"no certified programme {body.programme_id.hex()} (yet)")
    terms = programme.terms
    if body.zone != terms.zone:
        raise _bad(ShareRefuseReason.WRONG_ZONE, f"the programme sells in {terms.zone}, not {body.zone}")
    if body.host != programme.host:
        raise _bad(ShareRefuseReason.WRONG_HOST, "the programme has another host")
    if lp == programme.host:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "a host holds no shares of its own programme")
    if entry.time_ms >= terms.sale_until_ms:
        raise _bad(ShareRefuseReason.SALE_CLOSED, f"the buy is dated at or after the sale's close {terms.sale_until_ms}")
    if not entry.time_ms < body.deadline_ms <= terms.sale_until_ms:
        raise EntryRejected(RejectReason.DEADLINE_PASSED,
                            "the deadline must be after the buy's own time and by the sale's close")
    if body.amount_uc != body.shares * terms.price_uc:
        raise _bad(ShareRefuseReason.BAD_AMOUNT, f"{body.shares} shares cost {body.shares * terms.price_uc} µc")
    if body.shares > terms.cap_shares:
        raise _bad(ShareRefuseReason.CAP_EXCEEDED, f"the programme has {terms.cap_shares} shares in all")
    if terms.residents_only and not is_resident(state, lp, terms.zone):
        # Waiting, not final: the LP's meter registration may not have reached this validator.
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, f"only accounts metered in {terms.zone} may buy: "
                                                             f"no certified registration of this LP (yet)")
    if body.buy_id in state.locks or _buy_of(state, body.buy_id) is not None:
        raise EntryRejected(RejectReason.DUPLICATE_TAKE, f"id {body.buy_id.hex()} is taken already")
    validate_debit(state, rules, lp, body.amount_uc)


def escrow_lock(body: ShareBuy) -> Lock:
    """The chain lock record that holds a purchase's credits (see the module docstring)."""
    return Lock(take_id=body.buy_id, seller=body.host, order_id=body.programme_id, order_owner=body.host,
                order_size_wh=1, qty_wh=1, price=0, amount=body.amount_uc, deadline_ms=body.deadline_ms)


def process_share_buy(state: LedgerState, entry: Entry, body: ShareBuy, rules: LedgerRules) -> None:
    if body.buy_id in state.locks:
        raise ChainInconsistent(f"purchase {body.buy_id.hex()} escrowed twice")
    lp = entry.account
    state.balances[lp] = state.balance(lp) - body.amount_uc
    state.locks[body.buy_id] = LockRecord(lp, escrow_lock(body))
    state.extra[_buy_key(body.buy_id)] = BuyRecord(body.programme_id, lp, body.shares, body.amount_uc)


def _buy_keys(entry: Entry, body: ShareBuy) -> tuple[bytes, ...]:
    # The key of every kind that creates a lock record: a buy id and a take id can never both
    # be certified, whichever chains race for it.
    return (take_key(body.buy_id),)


# --- share_issue -------------------------------------------------------------------------------

def validate_share_issue(state: LedgerState, entry: Entry, body: ShareIssue, rules: LedgerRules) -> None:
    programme = _host_programme(state, entry, body.programme_id)
    # The escrow: named host, open, and the issue dated before its deadline (``consumable_lock``),
    # so the LP's release — valid only once the host's chain has passed the deadline — and this
    # issue can never both be certified. An escrow not yet certified here waits (``no_lock``).
    record = consumable_lock(state, entry, body.buy_id)
    buy = _buy_of(state, body.buy_id)
    if buy is None:        # the lock was created by another kind (take_key): it never will be a purchase
        raise _bad(ShareRefuseReason.UNKNOWN_BUY, f"lock {body.buy_id.hex()} is not a purchase")
    if (buy.programme_id, buy.lp, buy.shares) != (body.programme_id, body.lp, body.shares) \
            or record.lock.order_id != body.programme_id:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "the purchase is for another programme, LP or quantity")
    # The cap and the holder limit are exact here: the host's chain sequences every issue.
    if programme.outstanding + body.shares > programme.terms.cap_shares:
        left = programme.terms.cap_shares - programme.outstanding
        raise _bad(ShareRefuseReason.CAP_EXCEEDED, f"{left} shares are left")
    if programme.is_new_holder(body.lp) and programme.holders >= MAX_HOLDERS:
        raise _bad(ShareRefuseReason.TOO_MANY_HOLDERS, f"the programme has {MAX_HOLDERS} LPs already")


def process_share_issue(state: LedgerState, entry: Entry, body: ShareIssue, rules: LedgerRules) -> None:
    programme = _certified_programme(state, body.programme_id)
    buy = _buy_of(state, body.buy_id)
    record = state.locks.get(body.buy_id)
    if buy is None or record is None or record.status is not LockStatus.OPEN:
        raise ChainInconsistent(f"certified issue consumes purchase {body.buy_id.hex()} which is not open")
    host = entry.account
    state.balances[host] = state.balance(host) + record.lock.amount
    state.locks[body.buy_id] = LockRecord(record.buyer, record.lock, LockStatus.FILLED)
    state.extra[_buy_key(body.buy_id)] = replace(buy, issued=True)
    held = programme.holding(body.lp) or Holding(body.lp)
    held = replace(held, shares=held.shares + body.shares, invested_uc=held.invested_uc + record.lock.amount)
    _store(state, replace(programme.with_holding(held), sold_shares=programme.sold_shares + body.shares))


def _issue_keys(entry: Entry, body: ShareIssue) -> tuple[bytes, ...]:
    return (lock_fate_key(body.buy_id),)     # it consumes the escrow (chain.lock_fate_key)


def _issue_ready(state: LedgerState, entry: Entry, body: ShareIssue) -> bool:
    return _buy_of(state, body.buy_id) is not None and body.buy_id in state.locks


# --- share_payout ------------------------------------------------------------------------------

def validate_share_payout(state: LedgerState, entry: Entry, body: SharePayout, rules: LedgerRules) -> None:
    programme = _host_programme(state, entry, body.programme_id)
    expected = compute_payout(state, programme)
    if body != expected:
        raise _bad(ShareRefuseReason.PAYOUT_MISMATCH,
                   f"the certified pool fees give period {expected.period}: fees {expected.fees_uc} µc, "
                   f"LPs {expected.amount_uc} µc in {len(expected.payments)} payments; the entry says "
                   f"period {body.period}: fees {body.fees_uc} µc, LPs {body.amount_uc} µc")
    validate_debit(state, rules, entry.account, body.amount_uc)


def process_share_payout(state: LedgerState, entry: Entry, body: SharePayout, rules: LedgerRules) -> None:
    programme = _certified_programme(state, body.programme_id)
    if sum(p.amount_uc for p in body.payments) != body.amount_uc:
        raise ChainInconsistent(f"certified payout of {body.programme_id.hex()} does not add up")
    paid = {p.lp: p.amount_uc for p in body.payments}
    host = entry.account
    state.balances[host] = state.balance(host) - body.amount_uc
    for lp, amount in paid.items():
        state.balances[lp] = state.balance(lp) + amount
    holdings = tuple(replace(h, earning=h.shares, income_uc=h.income_uc + paid.get(h.lp, 0))
                     for h in programme.holdings)
    state.extra[_payout_key(body.programme_id, body.period)] = PayoutRecord(
        body.programme_id, body.period, body.fees_uc, body.amount_uc, programme.earning)
    _store(state, replace(programme, holdings=holdings, fees_base_uc=programme.fees_base_uc + body.fees_uc,
                          fees_counted_uc=programme.fees_counted_uc + body.fees_uc,
                          paid_uc=programme.paid_uc + body.amount_uc, payouts=programme.payouts + 1))


# --- share_redeem ------------------------------------------------------------------------------

def lockup_ends_ms(terms: ShareOffer) -> int:
    return terms.lockup_until_slot * MS_PER_S


def validate_share_redeem(state: LedgerState, entry: Entry, body: ShareRedeem, rules: LedgerRules) -> None:
    programme = _host_programme(state, entry, body.programme_id)
    held = programme.holding(body.lp)
    if held is None or held.shares < body.shares:
        raise _bad(ShareRefuseReason.NOT_HELD, f"the LP holds {held.shares if held else 0} shares")
    if body.amount_uc != body.shares * programme.terms.price_uc:
        par = body.shares * programme.terms.price_uc
        raise _bad(ShareRefuseReason.BAD_AMOUNT, f"{body.shares} shares redeem at {par} µc")
    if entry.time_ms < lockup_ends_ms(programme.terms):
        # Final: the entry's own time is fixed, so it can never leave the lock-up.
        raise _bad(ShareRefuseReason.LOCKED_UP, f"the redemption is dated inside the lock-up, which ends at slot "
                                                f"{programme.terms.lockup_until_slot}")
    if body.exit_shares:
        if body.exit_shares > body.shares:
            raise _bad(ShareRefuseReason.NO_EXIT_PENDING,
                       f"{body.exit_shares} shares answer exits, but only {body.shares} are redeemed")
        record = exit_of(state, body.programme_id, body.lp)
        asked = record.requested - record.answered if record is not None else 0
        if body.exit_shares > asked:
            # Waiting: the LP's chain may have more exit requests this validator has not seen yet
            # (``requested`` only grows; ``answered`` is this host's own chain).
            raise EntryRejected(RejectReason.MISSING_DEPENDENCY,
                                f"{ShareRefuseReason.NO_EXIT_PENDING.value}: {body.exit_shares} shares answer exits, "
                                f"but {asked} are pending here")
    validate_debit(state, rules, entry.account, body.amount_uc)


def process_share_redeem(state: LedgerState, entry: Entry, body: ShareRedeem, rules: LedgerRules) -> None:
    programme = _certified_programme(state, body.programme_id)
    held = programme.holding(body.lp)
    if held is None or held.shares < body.shares:
        raise ChainInconsistent(f"certified redemption of shares {body.lp.hex()[:8]} does not hold")
    host = entry.account
    state.balances[host] = state.balance(host) - body.amount_uc
    state.balances[body.lp] = state.balance(body.lp) + body.amount_uc
    pending = held.shares - held.earning
    held = replace(held, shares=held.shares - body.shares, earning=held.earning - max(0, body.shares - pending),
                   redeemed_uc=held.redeemed_uc + body.amount_uc)
    _store(state, programme.with_holding(held))
    if body.exit_shares:
        record = exit_of(state, body.programme_id, body.lp)
        if record is None:
            raise ChainInconsistent(f"certified redemption answers exits of {body.lp.hex()[:8]} never asked for")
        state.extra[_exit_key(body.programme_id, body.lp)] = replace(record, answered=record.answered + body.exit_shares)


def _redeem_ready(state: LedgerState, entry: Entry, body: ShareRedeem) -> bool:
    """A redemption answering exits waits for the LP's requests it answers (module docstring)."""
    if not body.exit_shares:
        return True
    record = exit_of(state, body.programme_id, body.lp)
    return record is not None and record.requested >= record.answered + body.exit_shares


# --- share_exit --------------------------------------------------------------------------------

def validate_share_exit(state: LedgerState, entry: Entry, body: ShareExit, rules: LedgerRules) -> None:
    # Not checked against the LP's holdings: they are written by the host's chain (issues add,
    # redemptions take away), so such a check could flip either way between validators. A
    # request moves no money; the host redeems at most what is held (``pending_exit`` caps it).
    programme = programme_of(state, body.programme_id)
    if programme is None:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY, f"no certified programme {body.programme_id.hex()} (yet)")
    if body.host != programme.host:
        raise _bad(ShareRefuseReason.WRONG_HOST, "the programme has another host")
    if entry.account == programme.host:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "a host holds no shares of its own programme")


def process_share_exit(state: LedgerState, entry: Entry, body: ShareExit, rules: LedgerRules) -> None:
    record = exit_of(state, body.programme_id, entry.account) or ExitRecord(body.programme_id, entry.account)
    state.extra[_exit_key(body.programme_id, entry.account)] = replace(record, requested=record.requested + body.shares)


register_kind(KindRules(SHARE_OFFER_KIND, ShareOffer, validate_share_offer, process_share_offer))
register_kind(KindRules(SHARE_BUY_KIND, ShareBuy, validate_share_buy, process_share_buy, _buy_keys))
register_kind(KindRules(SHARE_ISSUE_KIND, ShareIssue, validate_share_issue, process_share_issue,
                        _issue_keys, is_ready=_issue_ready))
register_kind(KindRules(SHARE_PAYOUT_KIND, SharePayout, validate_share_payout, process_share_payout))
register_kind(KindRules(SHARE_REDEEM_KIND, ShareRedeem, validate_share_redeem, process_share_redeem,
                        is_ready=_redeem_ready))
register_kind(KindRules(SHARE_EXIT_KIND, ShareExit, validate_share_exit, process_share_exit))


# --- an LP's positions -------------------------------------------------------------------------

@dataclass(frozen=True)
class SharePosition:
    """What ``lp`` holds in one programme, for its statement. ``income_per_share_uc``: the fee
    income one share earned over every payout it could have earned in (Σ amount / earning shares;
    a float, for people — the µc actually received are ``income_uc``)."""

    programme_id: bytes
    host: bytes
    zone: str
    shares: int
    earning_shares: int
    price_uc: int
    lockup_until_slot: int
    invested_uc: int
    redeemed_uc: int
    income_uc: int
    income_per_share_uc: float
    fee_share_bps: int
    payouts: int

    @property
    def principal_uc(self) -> int:
        """Principal still in the programme (at par)."""
        return self.shares * self.price_uc

    def is_locked(self, now_ms: int) -> bool:
        return now_ms < self.lockup_until_slot * MS_PER_S


def income_per_share_uc(payouts: Iterable[PayoutRecord]) -> float:
    return sum(p.amount_uc / p.earning_shares for p in payouts if p.earning_shares)


def lp_positions(state: LedgerState, lp: bytes) -> list[SharePosition]:
    """Every programme ``lp`` holds or held shares in, ordered by programme id."""
    positions = []
    for programme in programmes(state):
        held = programme.holding(lp)
        if held is None:
            continue
        terms = programme.terms
        positions.append(SharePosition(
            programme.programme_id, programme.host, terms.zone, held.shares, held.earning, terms.price_uc,
            terms.lockup_until_slot, held.invested_uc, held.redeemed_uc, held.income_uc,
            income_per_share_uc(payouts_of(state, programme.programme_id)), terms.fee_share_bps, programme.payouts))
    return positions
