"""What a node earns, from its certified ledger entries; and what that makes of an investment (pure).

Cash flows
----------
``account_flows(entries, rules, account)`` applies the certified entries exactly as
``ledger.chain.derive_state`` does (``is_ready`` / ``apply_entry``, accounts in sorted order), and
measures the account's balance before and after each one. That **measured change** is the truth;
the classification below only splits it into streams. Whatever a rule does not explain (an entry
kind this module does not know, or a kind whose rules changed) goes to the ``other`` stream, so
``sum(flows) == balance`` holds for every ledger, always, to the µc.

Streams of one account ``A`` (amounts are signed: + into A's balance, − out of it):

==========================  ===========================================================================
energy_sold_book            ``fill`` by A (A the seller) to an ordinary buyer: trade value
feed_in                     ``fill`` by A whose buyer is the zone gateway (the grid), and settlement
                            ``surplus_export`` postings (export beyond sales, at the feed-in price)
energy_sold_pool            ``swap`` BUY in A's pool (A the host): credits paid, less the pool fee;
                            ``swap`` SELL where A is the trader: credits received
pool_fees                   the fee part of BUY swaps in A's pools (``amm`` recomputed from the
                            certified pool, as validators do)
imbalance_credit            settlement ``unused_purchase`` postings (bought but not imported)
charging_sales              ``charge_bill`` by A (A the station): the metered session's price
flexibility                 ``flex_settle`` payments to A for delivered flexibility (VPP; a
                            reconciliation posts the difference)
ppa_sales                   settlement ``ppa`` postings to A, a PPA's seller (its positions' value),
                            less the ``ppa_penalty`` it pays its buyers for undelivered Wh
ppa_termination             PPA termination penalties received (+) or paid (−) (``ppa_terminate``)
energy_bought_book          A the buyer of a ``fill`` by an ordinary seller: −trade value
energy_bought_grid          A the buyer of a ``fill`` whose seller is the gateway
energy_bought_pool          A the trader of a BUY ``swap``: −credits; A the host of a SELL swap: −credits
charging_bought             A the driver of a billed ``charge_start``: −the session's price
flexibility_penalties       ``flex_settle`` penalties of A (awarded flexibility not delivered)
flexibility_bought          A the requester of a ``flex_settle`` (operator or DSO): −the net it paid
ppa_purchases               settlement ``ppa`` postings of A, a PPA's buyer (−its positions' value),
                            plus the ``ppa_penalty`` it receives
shortfall_charges           settlement ``shortfall`` postings (sold but not delivered)
extra_import                settlement ``extra_import`` postings (imported beyond purchases)
grid_fees                   settlement ``grid_fee`` postings (cross-zone trades)
share_income                A the LP of a ``share_payout``: its payment (pool fee income per share)
share_payouts               A the host of a ``share_payout``: −amount paid to its LPs (the LP part of
                            the pool fees it booked as ``pool_fees``)
deposits / withdrawals      ``mint`` to A and ``transfer`` to A / ``burn`` and ``transfer`` by A, and
                            for the gateway its own ``mint`` (credits it issues leave its balance)
                            and the ``burn``s it receives
share_capital               pool share principal, a capital movement, not revenue: A the LP of a
                            ``share_issue`` −amount (its escrow goes to the host) and of a
                            ``share_redeem`` +amount (par back); A the host: the opposite signs
escrow                      credits A moved into its own open locks (``lock`` and ``share_buy``
                            −amount, and ``charge_start``; the matching ``fill``/``swap``/
                            ``share_issue``/``charge_bill`` gives the amount back, then books the
                            trade, the share capital or the charging; the buyer's ``release`` or
                            ``refund`` and the seller's ``decline`` / ``swap_decline`` give it
                            back — the first of them certified, the others are no-ops)
other                       the rest of the measured change (0 for every kind above)
==========================  ===========================================================================

Operating net = revenue + costs; the balance change = operating net + financing (deposits,
withdrawals, share capital) + escrow + other.

Time. Entries carry no clock. An entry's *market time* (Unix s) is the delivery slot it concerns:
``lock.slot`` (fills, releases and declines: their lock's slot), ``settle.slot``, the pool's slot for
``pool_open`` / ``pool_update`` / ``swap``, the plug-in time of a ``charge_start`` and the end of
the metered session of a ``charge_bill``. Entries without one (``transfer``, ``mint``, ``burn``,
``meter``, the ``share_*`` kinds, unknown kinds) take the market time of the last timed entry
applied before them (0 before any). A period ``[start_s, end_s)`` holds the entries whose market
time is in it; ``opening`` is the sum of the account's changes before ``start_s`` and ``closing``
the sum before ``end_s``, so ``closing − opening == net of the period`` exactly, and the closing
balance of an unbounded period is the balance ``derive_state`` gives.

Finance
-------
Project cash flows are yearly, year 0 the capital expense. ``npv``, ``irr`` (bisection on a
bracketing sign change; ``None`` when NPV never changes sign), ``payback_years`` (linear within the
year the cumulative position turns non-negative; ``None`` when it never does), ``lcos`` (levelised
cost per kWh delivered, on the energy the ledger shows sold) and ``sensitivity`` (±20 % on price
level, PV yield and battery degradation). These are floats: they are estimates, never settled.

Annualisation: ``annualise`` scales per-season totals by the days each season stands for
(``SEASON_DAYS``) over the days the season's run covered; one run alone stands for the whole year.

Pool shares
-----------
LPs' shares in a station's pools are ledger objects (``p2pgrid.shares.rules``: programmes,
purchases, payouts of the LP part of the pool fees, redemptions at par). Their money is in the
streams above; ``share_statement`` adds what an account holds: per programme its shares (earning
or not yet), lock-up, principal in and back, fee income received and the income one share
earned, and for a host the programmes it runs. It is read from the state the certified entries
derive, and its income equals the account's ``share_income`` stream to the µc.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pgrid.charging.rules import CHARGE_BILL_KIND, CHARGE_START_KIND, decode_charge_reading
from p2pgrid.errors import P2PGridError
from p2pgrid.flex.entries import FLEX_SETTLE_KIND, posted_flex, request_of, settlement_of_request
from p2pgrid.ledger.chain import LedgerRules, LedgerState, LockStatus, apply_entry, decode_body, derive_state, is_ready
from p2pgrid.ledger.messages import Entry
from p2pgrid.shares.rules import (
    SHARE_BUY_KIND, SHARE_ISSUE_KIND, SHARE_PAYOUT_KIND, SHARE_REDEEM_KIND, ProgrammeRecord, SharePosition,
    lp_positions, programmes,
)
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Signed

# --- streams ---------------------------------------------------------------------------------

REVENUE = "revenue"
COST = "cost"
FINANCING = "financing"
ESCROW = "escrow"
OTHER = "other"


@dataclass(frozen=True)
class Stream:
    key: str
    label: str
    group: str


STREAMS: tuple[Stream, ...] = (
    Stream("energy_sold_book", "Energy sold via order book", REVENUE),
    Stream("energy_sold_pool", "Energy sold via pool", REVENUE),
    Stream("pool_fees", "Pool fees earned (host)", REVENUE),
    Stream("share_income", "Pool fee income from shares (LP)", REVENUE),
    Stream("charging_sales", "EV charging sales", REVENUE),
    Stream("flexibility", "Flexibility delivered (VPP)", REVENUE),
    Stream("ppa_sales", "Energy sold via PPA", REVENUE),
    Stream("ppa_termination", "PPA termination penalties (received +, paid −)", REVENUE),
    Stream("feed_in", "Feed-in to the grid", REVENUE),
    Stream("imbalance_credit", "Imbalance credits (unused purchases)", REVENUE),
    Stream("energy_bought_book", "Energy bought via order book", COST),
    Stream("energy_bought_pool", "Energy bought via pool", COST),
    Stream("charging_bought", "EV charging bought", COST),
    Stream("flexibility_penalties", "Flexibility penalties (not delivered)", COST),
    Stream("flexibility_bought", "Flexibility bought (requester)", COST),
    Stream("ppa_purchases", "Energy bought via PPA", COST),
    Stream("energy_bought_grid", "Energy bought from the grid", COST),
    Stream("shortfall_charges", "Shortfall charges", COST),
    Stream("extra_import", "Imbalance import charges", COST),
    Stream("grid_fees", "Grid fees", COST),
    Stream("share_payouts", "Pool fee shares paid to LPs (host)", COST),
    Stream("deposits", "Deposits (mint, transfers in)", FINANCING),
    Stream("withdrawals", "Withdrawals (burn, transfers out)", FINANCING),
    Stream("share_capital", "Pool share capital (bought −, redeemed +)", FINANCING),
    Stream("escrow", "Net credits held in own open locks", ESCROW),
    Stream("other", "Other (unclassified kinds)", OTHER),
)
STREAM_KEYS = tuple(s.key for s in STREAMS)
OPERATING_KEYS = tuple(s.key for s in STREAMS if s.group in (REVENUE, COST))
STREAM_NOTES: dict[str, str] = {}
_SETTLEMENT_STREAMS = {"shortfall": "shortfall_charges", "surplus_export": "feed_in",
                       "extra_import": "extra_import", "unused_purchase": "imbalance_credit",
                       "grid_fee": "grid_fees"}


class InvestError(P2PGridError):
    """An investment figure cannot be computed from what was given."""


@dataclass(frozen=True)
class Flow:
    """One signed movement of the account's balance, attributed to a stream."""

    time_s: int
    stream: str
    amount_uc: int
    kind: str
    seq: int
    author: bytes
    energy_wh: int = 0          # energy the trade moved (sales and purchases), else 0


@dataclass(frozen=True)
class AccountFlows:
    account: bytes
    flows: tuple[Flow, ...]
    balance_uc: int              # the account's balance in the derived state
    kinds: Mapping[str, int]     # entries touching the account, per kind
    waiting: int                 # certified entries that could not be applied (a gap in the copy)


# --- classification ----------------------------------------------------------------------------

_Split = list[tuple[str, int, int]]   # (stream, µc, Wh)


def _time_of(entry: Entry, body: Any, state: LedgerState) -> int | None:
    kind = entry.kind
    if kind == "lock":
        return int(body.slot)
    if kind in ("fill", "release", "refund", "decline"):
        record = state.locks.get(body.take_id)
        return int(record.lock.slot) if record is not None else None
    if kind in _SETTLE_KINDS:
        return int(body.settle_body.slot)
    if kind == CHARGE_START_KIND:
        return int(body.plugged_in_ms) // 1000
    if kind == CHARGE_BILL_KIND:
        try:
            return int(decode_charge_reading(body.reading).body.ended_ms) // 1000
        except P2PGridError:
            return None
    if kind == FLEX_SETTLE_KIND:
        request = request_of(state, body.request_id)
        return int(request.terms.first_slot) if request is not None else None
    if kind == "pool_open":
        return int(body.slot)
    if kind in ("pool_update", "swap"):
        record = state.pools.get(body.pool_id)
        pool = getattr(record, "pool", None)
        return int(pool.slot) if pool is not None else None
    return None


def _split_trade_sale(counterparty: bytes, value: int, qty: int, rules: LedgerRules) -> _Split:
    stream = "feed_in" if counterparty == rules.gateway else "energy_sold_book"
    return [(stream, value, qty)]


def _classify(entry: Entry, body: Any, before: LedgerState, account: bytes, rules: LedgerRules) -> _Split:
    """The streams of ``account`` an entry moves (before it is applied to ``before``). What it
    misses is caught by the measured change (``other``)."""
    kind, author = entry.kind, entry.account
    if kind == "transfer":
        if author == account:
            return [("withdrawals", -body.amount, 0)]
        return [("deposits", body.amount, 0)] if body.to == account else []
    if kind == "mint":
        if author == account:      # the gateway issues credits: money leaving its balance
            return [("withdrawals", -body.amount, 0)]
        return [("deposits", body.amount, 0)] if body.to == account else []
    if kind == "burn":
        if author == account:
            return [("withdrawals", -body.amount, 0)]
        return [("deposits", body.amount, 0)] if account == rules.gateway else []
    if kind == "lock":
        return [("escrow", -body.amount, 0)] if author == account else []
    if kind in ("release", "refund", "decline", "swap_decline"):
        # The buyer's release or refund and the seller's decline may all be certified; only the
        # first returns the lock (the others are no-ops), so only an open lock counts.
        record = before.locks.get(body.swap_id if kind == "swap_decline" else body.take_id)
        returned = record is not None and record.buyer == account and record.status is LockStatus.OPEN
        return [("escrow", record.lock.amount, 0)] if returned else []
    if kind == "fill":
        record = before.locks.get(body.take_id)
        if record is None:
            return []
        value = trade_value(body.qty_wh, body.price)
        split: _Split = []
        if author == account:
            split += _split_trade_sale(record.buyer, value, body.qty_wh, rules)
        if record.buyer == account:
            bought = "energy_bought_grid" if author == rules.gateway else "energy_bought_book"
            split += [("escrow", record.lock.amount, 0), (bought, -value, body.qty_wh)]
        return split
    if kind == "swap":
        return _classify_swap(entry, body, before, account)
    if kind in _SHARE_KINDS:
        return _classify_share(entry, body, before, account)
    if kind in (CHARGE_START_KIND, CHARGE_BILL_KIND):
        return _classify_charging(entry, body, before, account)
    if kind == "ppa_terminate":
        return _classify_ppa_termination(entry, body, before, account)
    return []


_SETTLE_KINDS = ("settle", "settle_ppa")


def _settlement_stream(reason: str, amount: int) -> str:
    """A settlement posting's stream; a PPA's by its side: the seller's (+ value, − penalty) are
    its sales, the buyer's (− value, + penalty) its purchases."""
    if reason == "ppa":
        return "ppa_sales" if amount > 0 else "ppa_purchases"
    if reason == "ppa_penalty":
        return "ppa_sales" if amount < 0 else "ppa_purchases"
    return _SETTLEMENT_STREAMS.get(reason, "other")


def _classify_ppa_termination(entry: Entry, body: Any, before: LedgerState, account: bytes) -> _Split:
    try:
        from p2pgrid.ppa.entries import agreement_of
    except ImportError:
        return []
    agreement = agreement_of(before, body.ppa_id)
    if agreement is None:
        return []
    penalty = agreement.terms.termination_penalty_uc
    if entry.account == account:
        return [("ppa_termination", -penalty, 0)]
    return [("ppa_termination", penalty, 0)] if account in (agreement.terms.seller, agreement.terms.buyer) else []


_SHARE_KINDS = (SHARE_BUY_KIND, SHARE_ISSUE_KIND, SHARE_PAYOUT_KIND, SHARE_REDEEM_KIND)


def _classify_share(entry: Entry, body: Any, before: LedgerState, account: bytes) -> _Split:
    """Pool share entries: capital in and out, the LP part of the fees, the LP's escrow."""
    kind, host = entry.kind, entry.account
    if kind == SHARE_BUY_KIND:
        return [("escrow", -body.amount_uc, 0)] if host == account else []
    split: _Split = []
    if kind == SHARE_ISSUE_KIND:
        record = before.locks.get(body.buy_id)
        amount = record.lock.amount if record is not None else 0
        if host == account:
            split.append(("share_capital", amount, 0))
        if body.lp == account:
            split += [("escrow", amount, 0), ("share_capital", -amount, 0)]
    elif kind == SHARE_PAYOUT_KIND:
        if host == account:
            split.append(("share_payouts", -body.amount_uc, 0))
        split += [("share_income", p.amount_uc, 0) for p in body.payments if p.lp == account]
    elif kind == SHARE_REDEEM_KIND:
        if host == account:
            split.append(("share_capital", -body.amount_uc, 0))
        if body.lp == account:
            split.append(("share_capital", body.amount_uc, 0))
    return split


def _classify_charging(entry: Entry, body: Any, before: LedgerState, account: bytes) -> _Split:
    """Charging: the driver's escrow, and at the bill the station's sale and the driver's cost."""
    if entry.kind == CHARGE_START_KIND:
        return [("escrow", -body.amount_uc, 0)] if entry.account == account else []
    split: _Split = []
    if entry.account == account:
        split.append(("charging_sales", body.amount_uc, body.delivered_wh))
    record = before.locks.get(body.session_id)
    if record is not None and record.buyer == account:
        split += [("escrow", record.lock.amount, 0), ("charging_bought", -body.amount_uc, body.delivered_wh)]
    return split


def _classify_swap(entry: Entry, body: Any, before: LedgerState, account: bytes) -> _Split:
    buy = body.side is Side.BUY
    host = entry.account
    split: _Split = []
    if host == account:
        if buy:
            fee = _swap_fee_uc(before, body)
            split += [("energy_sold_pool", body.credits_uc - fee, body.energy_wh), ("pool_fees", fee, 0)]
        else:
            split += [("energy_bought_pool", -body.credits_uc, body.energy_wh)]
    if body.trader == account:
        if buy:
            record = before.locks.get(body.swap_id)
            if record is not None:
                split += [("escrow", record.lock.amount, 0)]
            split += [("energy_bought_pool", -body.credits_uc, body.energy_wh)]
        else:
            split += [("energy_sold_pool", body.credits_uc, body.energy_wh)]
    return split


def _swap_fee_uc(before: LedgerState, body: Any) -> int:
    """The fee in a BUY swap's credits (its input), recomputed from the certified pool as the
    validators do; 0 if the pool module is absent or the pool is not in the state."""
    try:
        from p2pgrid.pools.entries import compute_swap
    except ImportError:
        return 0
    record = before.pools.get(body.pool_id)
    if record is None:
        return 0
    try:
        _pool, quote = compute_swap(record.pool, body.side, body.energy_wh, body.at_ms)
    except P2PGridError:
        return 0
    return max(0, min(int(quote.fee), body.credits_uc))


def _settlement_before(state: LedgerState, slot: int) -> Any:
    from p2pgrid.settlement.entries import settlement_of
    return settlement_of(state, slot)


def _classify_settle(body: Any, previous: Any, after: LedgerState, account: bytes) -> _Split:
    """A ``settle`` entry's postings for ``account``, split by reason: what the ``SlotSettlement``
    that applying it stored charges, less what the slot's earlier settlement (``previous``) did —
    a reconciliation posts only the difference (so this runs after the entry is applied)."""
    try:
        from p2pgrid.settlement.entries import posted_by_reason, settlement_of
    except ImportError:
        return []
    body = body.settle_body
    settlement = settlement_of(after, body.slot)
    if settlement is None:
        return []
    if account == settlement.gateway:
        # The gateway is the other side of every posting: its split is the sum of the others'.
        split: _Split = []
        for line in settlement.lines:
            if line.account != account:
                for reason, amount in posted_by_reason(previous, settlement, line.account).items():
                    if reason.value not in ("ppa", "ppa_penalty"):    # between two parties, not the grid's
                        split.append((_settlement_stream(reason.value, -amount), -amount, 0))
        return split
    if not any(p.account == account for p in body.postings):
        return []
    return [(_settlement_stream(reason.value, amount), amount, 0)
            for reason, amount in posted_by_reason(previous, settlement, account).items()]


def _classify_flex_settle(entry: Entry, body: Any, previous: Any, after: LedgerState, account: bytes) -> _Split:
    """A ``flex_settle``: the requester pays the net of its postings; a node's posting splits into
    the payment and the penalty of its line (differences, for a reconciliation)."""
    if entry.account == account:
        return [("flexibility_bought", -sum(p.amount_uc for p in body.postings), 0)]
    current = settlement_of_request(after, body.request_id)
    if current is None or not any(p.account == account for p in body.postings):
        return []
    payment, penalty, paid_wh = posted_flex(previous, current, account)
    return [("flexibility", payment, paid_wh), ("flexibility_penalties", -penalty, 0)]


# --- flows from entries ------------------------------------------------------------------------

def account_flows(entries: Iterable[Signed[Entry]], rules: LedgerRules, account: bytes) -> AccountFlows:
    """Every balance movement of ``account`` in the certified ``entries``, by stream (see module)."""
    pending = {(s.body.account, s.body.seq): s for s in entries}
    state = LedgerState()
    flows: list[Flow] = []
    kinds: dict[str, int] = {}
    clock = 0
    progress = True
    while progress and pending:
        progress = False
        for author in sorted({a for a, _ in pending}):
            while True:
                signed = pending.get((author, state.head(author).next_seq))
                if signed is None or not is_ready(state, signed):
                    break
                clock = _apply_one(state, signed, rules, account, clock, flows, kinds)
                del pending[(author, signed.body.seq)]
                progress = True
    return AccountFlows(account, tuple(flows), state.balance(account), dict(kinds), len(pending))


def _apply_one(state: LedgerState, signed: Signed[Entry], rules: LedgerRules, account: bytes, clock: int,
               flows: list[Flow], kinds: dict[str, int]) -> int:
    entry = signed.body
    body = decode_body(entry)
    timed = _time_of(entry, body, state)
    clock = timed if timed is not None else clock
    before_balance = state.balance(account)
    split = _classify(entry, body, state, account, rules)
    settles = entry.kind in _SETTLE_KINDS
    previous = _settlement_before(state, body.settle_body.slot) if settles else None
    if entry.kind == FLEX_SETTLE_KIND:
        previous = settlement_of_request(state, body.request_id)
    apply_entry(state, signed, rules, body)
    if settles:
        split = _classify_settle(body, previous, state, account)
    elif entry.kind == FLEX_SETTLE_KIND:
        split = _classify_flex_settle(entry, body, previous, state, account)
    change = state.balance(account) - before_balance
    if not split and not change and entry.account != account:
        return clock
    kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    for stream, amount, wh in split:
        if amount or wh:
            flows.append(Flow(clock, stream, amount, entry.kind, entry.seq, entry.account, wh))
    unexplained = change - sum(amount for _, amount, _ in split)
    if unexplained:
        flows.append(Flow(clock, "other", unexplained, entry.kind, entry.seq, entry.account))
    return clock


# --- statements ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Statement:
    """The account's cash flow in ``[start_s, end_s)`` (None: unbounded), by stream, in µc."""

    account: bytes
    start_s: int | None
    end_s: int | None
    streams: Mapping[str, int]
    energy_wh: Mapping[str, int]
    opening_uc: int
    closing_uc: int
    entries: int
    notes: Mapping[str, str] = field(default_factory=dict)

    @property
    def revenue_uc(self) -> int:
        return sum(self.streams[s.key] for s in STREAMS if s.group == REVENUE)

    @property
    def costs_uc(self) -> int:
        return sum(self.streams[s.key] for s in STREAMS if s.group == COST)

    @property
    def operating_net_uc(self) -> int:
        return self.revenue_uc + self.costs_uc

    @property
    def net_uc(self) -> int:
        return sum(self.streams.values())

    @property
    def reconciled(self) -> bool:
        return self.closing_uc - self.opening_uc == self.net_uc


def _in_period(time_s: int, start_s: int | None, end_s: int | None) -> bool:
    return (start_s is None or time_s >= start_s) and (end_s is None or time_s < end_s)


def statement(flows: AccountFlows, start_s: int | None = None, end_s: int | None = None) -> Statement:
    """Totals per stream of the flows in the period, with opening and closing balances."""
    streams = dict.fromkeys(STREAM_KEYS, 0)
    energy = dict.fromkeys(STREAM_KEYS, 0)
    opening = closing = 0
    entries = set()
    for f in flows.flows:
        if start_s is not None and f.time_s < start_s:
            opening += f.amount_uc
        if end_s is None or f.time_s < end_s:
            closing += f.amount_uc
        if _in_period(f.time_s, start_s, end_s):
            streams[f.stream] += f.amount_uc
            energy[f.stream] += f.energy_wh
            entries.add((f.author, f.seq))
    notes = {key: STREAM_NOTES.get(key, "no certified entries in this period")
             for key in STREAM_KEYS if streams[key] == 0 and energy[key] == 0}
    return Statement(flows.account, start_s, end_s, streams, energy, opening, closing, len(entries), notes)


def statement_for(entries: Iterable[Signed[Entry]], rules: LedgerRules, account: bytes,
                  start_s: int | None = None, end_s: int | None = None) -> Statement:
    return statement(account_flows(entries, rules, account), start_s, end_s)


def monthly(flows: AccountFlows, month_of: Callable[[int], str]) -> dict[str, dict[str, int]]:
    """Totals per (month label → stream); ``month_of`` maps a market time (s) to a label."""
    out: dict[str, dict[str, int]] = {}
    for f in flows.flows:
        row = out.setdefault(month_of(f.time_s), dict.fromkeys(STREAM_KEYS, 0))
        row[f.stream] += f.amount_uc
    return dict(sorted(out.items()))


# --- annualisation ---------------------------------------------------------------------------

SEASON_DAYS: Mapping[str, float] = {"winter": 90.0, "spring": 92.0, "summer": 92.0, "autumn": 91.0}
DAYS_PER_YEAR = 365.0


@dataclass(frozen=True)
class SeasonSample:
    """One run standing for a season: its per-stream totals (µc) and the days it covered."""

    season: str
    streams: Mapping[str, int]
    covered_days: float
    energy_wh: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Annualised:
    streams: Mapping[str, float]
    energy_wh: Mapping[str, float]
    weights: Mapping[str, float]     # season → factor its totals were multiplied by
    method: str

    @property
    def operating_net_uc(self) -> float:
        return sum(self.streams[k] for k in OPERATING_KEYS)

    @property
    def revenue_uc(self) -> float:
        return sum(self.streams[s.key] for s in STREAMS if s.group == REVENUE)

    @property
    def costs_uc(self) -> float:
        return sum(self.streams[s.key] for s in STREAMS if s.group == COST)


def annualise(samples: Sequence[SeasonSample], season_days: Mapping[str, float] = SEASON_DAYS) -> Annualised:
    """Scale season runs to a year: each season's totals × (days it stands for / days covered).

    The seasons given share the year: a season's days are ``season_days[season]`` scaled so the
    given seasons together make 365 days (one run alone stands for the whole year; two seasons
    each stand for their share of the pair's days, etc.). Two runs of one season are pooled."""
    if not samples:
        raise InvestError("annualise needs at least one season run")
    covered: dict[str, float] = {}
    for s in samples:
        if s.covered_days <= 0:
            raise InvestError(f"season run {s.season!r} covers no time")
        if s.season not in season_days:
            raise InvestError(f"unknown season {s.season!r} (one of {', '.join(season_days)})")
        covered[s.season] = covered.get(s.season, 0.0) + s.covered_days
    given_days = sum(season_days[name] for name in covered)
    weights = {name: season_days[name] * DAYS_PER_YEAR / given_days / covered[name] for name in covered}
    streams = dict.fromkeys(STREAM_KEYS, 0.0)
    energy = dict.fromkeys(STREAM_KEYS, 0.0)
    for s in samples:
        for key, value in s.streams.items():
            streams[key] = streams.get(key, 0.0) + value * weights[s.season]
        for key, value in s.energy_wh.items():
            energy[key] = energy.get(key, 0.0) + value * weights[s.season]
    parts = ", ".join(f"{name}: {covered[name]:.3g} d × {weights[name]:.4g}" for name in sorted(covered))
    method = (f"per-season scaling: each season's ledger totals × (days the season stands for / days its run "
              f"covered); seasons given share 365 d in proportion to {dict(season_days)}; {parts}")
    return Annualised(streams, energy, weights, method)


# --- finance ---------------------------------------------------------------------------------

def npv(rate: float, cashflows: Sequence[float]) -> float:
    """Net present value; ``cashflows[t]`` happens at the end of year t (t = 0 is now)."""
    if rate <= -1.0:
        raise InvestError(f"discount rate {rate} must be above -100 %")
    return sum(cf / (1.0 + rate) ** t for t, cf in enumerate(cashflows))


IRR_LOW, IRR_HIGH = -0.99, 1e6
IRR_GRID_POINTS = 2000


def irr(cashflows: Sequence[float], *, tolerance: float = 1e-10, max_iterations: int = 300) -> float | None:
    """The rate in [−99 %, 10⁶] at which NPV is 0, by bisection on the first bracketing sign
    change of a grid scan (dense near 0: cubic spacing); ``None`` when NPV has no sign change
    there (all flows one sign, or all zero)."""
    if not any(cashflows):
        return None
    grid = [IRR_LOW + (IRR_HIGH - IRR_LOW) * (i / IRR_GRID_POINTS) ** 3 for i in range(IRR_GRID_POINTS + 1)]
    values = [npv(r, cashflows) for r in grid]
    for (lo, v_lo), (hi, v_hi) in zip(zip(grid, values), zip(grid[1:], values[1:])):
        if v_lo == 0.0:
            return lo
        if math.copysign(1.0, v_lo) != math.copysign(1.0, v_hi):
            for _ in range(max_iterations):
                mid = (lo + hi) / 2
                v_mid = npv(mid, cashflows)
                if v_mid == 0.0 or hi - lo < tolerance:
                    return mid
                if math.copysign(1.0, v_mid) == math.copysign(1.0, v_lo):
                    lo, v_lo = mid, v_mid
                else:
                    hi = mid
            return (lo + hi) / 2
    return grid[-1] if values[-1] == 0.0 else None


def payback_years(cashflows: Sequence[float]) -> float | None:
    """Years until the cumulative position is first ≥ 0 (linear within that year); 0 if it never
    starts negative; ``None`` if it never gets there within the flows given."""
    position = 0.0
    for year, cf in enumerate(cashflows):
        previous = position
        position += cf
        if position >= 0.0:
            return 0.0 if year == 0 else year - 1 + (-previous / cf)
    return None


@dataclass(frozen=True)
class InvestTerms:
    """The investment parameters (from ``[invest]`` in the node config)."""

    capex_uc: int
    opex_uc_per_year: int
    lifetime_years: int
    degradation_per_year: float
    discount_rate: float


def project_cashflows(terms: InvestTerms, annual_operating_uc: float, *, price_factor: float = 1.0,
                      yield_factor: float = 1.0, degradation_factor: float = 1.0,
                      annual_revenue_uc: float | None = None) -> list[float]:
    """Year 0: −capex. Year t ≥ 1: operating net × (1 − degradation)^(t−1) − opex.

    ``price_factor`` scales the whole operating net (prices move sales and purchases alike);
    ``yield_factor`` scales the revenue part only (more PV energy to sell); ``degradation_factor``
    scales the yearly degradation rate."""
    revenue = annual_operating_uc if annual_revenue_uc is None else annual_revenue_uc
    costs = annual_operating_uc - revenue
    base = (revenue * yield_factor + costs) * price_factor
    decay = 1.0 - terms.degradation_per_year * degradation_factor
    flows = [-float(terms.capex_uc)]
    for year in range(1, terms.lifetime_years + 1):
        flows.append(base * decay ** (year - 1) - terms.opex_uc_per_year)
    return flows


def lcos_uc_per_kwh(terms: InvestTerms, annual_delivered_wh: float) -> float | None:
    """Levelised cost per kWh delivered: (capex + PV of opex) / PV of the energy delivered, which
    degrades yearly. ``None`` without delivered energy."""
    if annual_delivered_wh <= 0:
        return None
    r = terms.discount_rate
    years = range(1, terms.lifetime_years + 1)
    cost = terms.capex_uc + sum(terms.opex_uc_per_year / (1 + r) ** t for t in years)
    kwh = sum(annual_delivered_wh / 1000 * (1 - terms.degradation_per_year) ** (t - 1) / (1 + r) ** t for t in years)
    return cost / kwh


@dataclass(frozen=True)
class Figures:
    npv_uc: float
    irr: float | None
    payback_years: float | None
    cashflows: tuple[float, ...]


def figures(terms: InvestTerms, cashflows: Sequence[float]) -> Figures:
    return Figures(npv(terms.discount_rate, cashflows), irr(cashflows), payback_years(cashflows), tuple(cashflows))


SENSITIVITY_STEP = 0.2
SENSITIVITY_PARAMETERS = (("price level", "price_factor"), ("PV yield", "yield_factor"),
                          ("battery degradation", "degradation_factor"))


@dataclass(frozen=True)
class SensitivityRow:
    parameter: str
    change: float            # −0.2 or +0.2
    figures: Figures


def sensitivity(terms: InvestTerms, annual_operating_uc: float, annual_revenue_uc: float,
                step: float = SENSITIVITY_STEP) -> list[SensitivityRow]:
    """NPV / IRR / payback with each parameter moved by ±``step`` alone."""
    rows = []
    for label, keyword in SENSITIVITY_PARAMETERS:
        for change in (-step, step):
            flows = project_cashflows(terms, annual_operating_uc, annual_revenue_uc=annual_revenue_uc,
                                      **{keyword: 1.0 + change})
            rows.append(SensitivityRow(label, change, figures(terms, flows)))
    return rows


# --- pool shares (ledger objects: p2pgrid.shares.rules) -----------------------------------

@dataclass(frozen=True)
class HostedProgramme:
    """A programme the account hosts: its terms in brief and what it paid its LPs."""

    programme_id: bytes
    price_uc: int
    fee_share_bps: int
    lockup_until_slot: int
    cap_shares: int
    outstanding_shares: int
    holders: int
    fees_counted_uc: int      # pool fees its payouts counted
    paid_uc: int              # the LP part of them, paid
    payouts: int


@dataclass(frozen=True)
class ShareStatement:
    """An account's pool shares: as LP (``positions``) and as host (``hosted``), with the money
    the ledger moved for them (µc, from the account's flows)."""

    account: bytes
    positions: tuple[SharePosition, ...]
    hosted: tuple[HostedProgramme, ...]
    income_uc: int            # ``share_income`` stream: fee income received as LP
    payouts_uc: int           # ``share_payouts`` stream: paid to LPs as host (≤ 0)
    capital_uc: int           # ``share_capital`` stream: principal in (+) and out (−)

    @property
    def principal_uc(self) -> int:
        """Principal the account has in programmes, at par."""
        return sum(p.principal_uc for p in self.positions)

    @property
    def reconciled(self) -> bool:
        """Positions and flows agree: income received, principal paid in and back."""
        as_lp = sum(p.redeemed_uc - p.invested_uc for p in self.positions)
        as_host = sum(h.outstanding_shares * h.price_uc for h in self.hosted)
        return (self.income_uc == sum(p.income_uc for p in self.positions)
                and self.payouts_uc == -sum(h.paid_uc for h in self.hosted)
                and self.capital_uc == as_lp + as_host)


def _hosted(programme: ProgrammeRecord) -> HostedProgramme:
    terms = programme.terms
    return HostedProgramme(programme.programme_id, terms.price_uc, terms.fee_share_bps, terms.lockup_until_slot,
                           terms.cap_shares, programme.outstanding, programme.holders, programme.fees_counted_uc,
                           programme.paid_uc, programme.payouts)


def share_statement(entries: Iterable[Signed[Entry]], rules: LedgerRules, account: bytes) -> ShareStatement:
    """The account's pool shares and their money, from the certified ``entries`` (see module)."""
    entries = list(entries)
    state, _waiting = derive_state(entries, rules)
    streams = statement(account_flows(entries, rules, account)).streams
    return ShareStatement(account, tuple(lp_positions(state, account)),
                          tuple(_hosted(p) for p in programmes(state, account)),
                          streams["share_income"], streams["share_payouts"], streams["share_capital"])
