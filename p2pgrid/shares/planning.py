"""What a pool host and a liquidity provider write next about shares, given the certified state (pure).

What a host writes next
-----------------------
``plan_host_actions(state, host, now_ms, rules, policy, last_payout_ms)`` is the host's whole
decision, as data (``p2pgrid.shares.service`` only submits what it returns, one entry at a time,
planning again on the certified state after each): a ``share_offer`` on ``policy``'s terms when
asked to and no programme of the host is active; a ``share_issue`` for every open escrow of its
programmes in buy-id order while the cap and ``MAX_HOLDERS`` allow (counting the issues planned
before it), else a ``swap_decline`` handing the escrow back (reason ``cap_exceeded`` or
``too_many_holders``). The host enforces the cap and the holder limit here, at issue: the LP's
``share_buy`` cannot (what is outstanding is the host's chain's, and validity must not depend on
how much of it a validator has seen). An escrow with less than ``policy.min_time_left_ms`` before
its deadline (an issue must be *dated* before it, and the entry is dated when it is built, a little
after planning) is declined too (reason ``expired``): a decline is valid at any time, so the LP's
credits come back at once instead of waiting for its ``release``. A ``share_payout`` (exactly ``compute_payout``) once
``policy.payout_every_ms`` passed since ``last_payout_ms[programme]`` (at once when the host has
not paid it out yet) and the payout pays something or turns newly issued shares into earning
ones, if the host can pay it. A ``share_redeem`` of every pending exit once the lock-up is over,
if the host can pay it (affordability counts the debits planned before it).

What an investor writes next
----------------------------
``plan_investor_actions(state, lp, now_ms, rules, policy)`` is an LP's standing instruction
(``InvestorPolicy``: hold ``target_shares``; ``[shares] invest_*`` of a node), run by
``p2pgrid.shares.service`` the same way: a ``release`` (the chain's kind) of every escrow of the LP's
purchases still open once the host's certified chain is dated at or past its deadline
(``chain.seller_passed_deadline``: the host can no longer issue it, and only then do validators
accept the release — the host usually declines it first); with
``exit_after_lockup``, a ``share_exit`` of the shares not yet asked back in every programme whose
lock-up is over; and, while none of its purchases is escrowed (never two purchases in flight), one
``share_buy`` of what is missing to the target in the first programme by id that would accept it
as the LP's state shows (sale open long enough for the host to issue, cap, ``MAX_HOLDERS``,
residents, not the LP's own, not one it asked to leave), at most what its balance above
``policy.reserve_uc`` pays for. The shares left under the cap are judged on the LP's state (the
validators check only the terms' cap): a purchase beyond what the host can issue comes back by
``swap_decline`` and the next round buys what is left.

Times: ``now_ms`` is the node's market time; the entries these actions become are dated by the
ledger when built (``LedgerService.next_entry``), and the rules judge them on that date.

The entry kinds and their rules are in ``p2pgrid.shares.rules``; ``p2pgrid.shares.service`` runs
these planners on a node and only submits what they return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from p2pgrid.ledger.chain import LedgerRules, LedgerState, LockRecord, LockStatus, seller_passed_deadline
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ledger.messages import Release
from p2pgrid.pools.entries import SWAP_DECLINE_KIND, SwapDecline
from p2pgrid.pools.messages import SwapRefuseReason
from p2pgrid.shares.rules import (
    BPS, MAX_HOLDERS, SHARE_BUY_KIND, SHARE_EXIT_KIND, SHARE_ISSUE_KIND, SHARE_OFFER_KIND, SHARE_PAYOUT_KIND,
    SHARE_REDEEM_KIND, BuyRecord, ProgrammeRecord, ShareIssue, ShareOffer, ShareRefuseReason, compute_payout, exit_of,
    exits_of, is_resident, lockup_ends_ms, next_programme_id, pending_exit, plan_share_buy, plan_share_exit,
    plan_share_redeem, programmes, slot_rules_of,
)
from p2pgrid.units import MS_PER_S, SlotRules

__all__ = [
    "HostAction", "HostPolicy", "InvestorPolicy", "RELEASE_KIND", "ShareAction", "lp_escrows", "open_escrows", "plan_host_actions", "plan_investor_actions", "plan_share_offer",
]

# --- what the host writes next ------------------------------------------------------------------

@dataclass(frozen=True)
class HostPolicy:
    """A host's programme terms and running rules (``[shares]`` in the node config).
    ``lockup_s``: the lock-up ends at the first slot start at least this long after the offer;
    ``sale_s``: the sale closes this long after the offer."""

    price_uc: int
    fee_share_bps: int
    cap_shares: int
    lockup_s: int
    sale_s: int
    payout_every_ms: int
    residents_only: bool = False
    min_time_left_ms: int = 2_000     # an escrow closer to its deadline is declined, not issued


@dataclass(frozen=True)
class ShareAction:
    """One entry for a host or an investor to write: its kind and body."""

    kind: str
    body: Any


HostAction = ShareAction      # the name the host's planner had first


def plan_share_offer(state: LedgerState, host: bytes, zone: str, now_ms: int, slots: SlotRules,
                     policy: HostPolicy) -> ShareOffer | None:
    """The host's next offer on ``policy``'s terms, or None when its active programmes leave too
    small a part of the fees (``fee_share_exceeded``)."""
    active = sum(p.terms.fee_share_bps for p in programmes(state, host) if p.is_active(now_ms))
    if active + policy.fee_share_bps > BPS:
        return None
    earliest_ms = now_ms + policy.lockup_s * MS_PER_S
    lockup = slots.slot_of(earliest_ms)
    if lockup * MS_PER_S < earliest_ms:
        lockup += slots.length_s
    return ShareOffer(programme_id=next_programme_id(state, host, zone), zone=zone, price_uc=policy.price_uc,
                      fee_share_bps=policy.fee_share_bps, lockup_until_slot=lockup, cap_shares=policy.cap_shares,
                      sale_until_ms=now_ms + policy.sale_s * MS_PER_S, residents_only=policy.residents_only)


def open_escrows(state: LedgerState, host: bytes) -> list[tuple[bytes, BuyRecord, LockRecord]]:
    """(buy id, purchase, escrow) of every certified purchase from ``host`` still escrowed, by id."""
    found = []
    for key, buy in prefixed_items(state.extra, "share_buy/"):
        if not isinstance(buy, BuyRecord) or buy.issued:
            continue
        buy_id = bytes.fromhex(key[len("share_buy/"):])
        record = state.locks.get(buy_id)
        if record is not None and record.status is LockStatus.OPEN and record.lock.seller == host:
            found.append((buy_id, buy, record))
    return sorted(found, key=lambda item: item[0])


def plan_host_actions(state: LedgerState, host: bytes, now_ms: int, rules: LedgerRules, policy: HostPolicy,
                      last_payout_ms: Mapping[bytes, int], *, may_offer: bool = False) -> list[HostAction]:
    """What the host should write next, in order (see "What a host writes next" above). Every
    action is valid at ``now_ms`` against ``state`` with the ones before it applied."""
    actions: list[HostAction] = []
    hosted = programmes(state, host)
    if may_offer and not any(p.is_active(now_ms) for p in hosted):
        offer = plan_share_offer(state, host, rules.zone, now_ms, slot_rules_of(rules), policy)
        if offer is not None:
            actions.append(HostAction(SHARE_OFFER_KIND, offer))
    by_id = {p.programme_id: p for p in hosted}
    outstanding = {p.programme_id: p.outstanding for p in hosted}
    holders = {p.programme_id: {h.lp for h in p.holdings if h.shares > 0} for p in hosted}
    for buy_id, buy, escrow in open_escrows(state, host):
        programme = by_id.get(buy.programme_id)
        if programme is None:
            continue
        pid = programme.programme_id
        refusal: str | None = None
        if now_ms >= escrow.lock.deadline_ms - policy.min_time_left_ms:
            refusal = SwapRefuseReason.EXPIRED.value
        elif outstanding[pid] + buy.shares > programme.terms.cap_shares:
            refusal = ShareRefuseReason.CAP_EXCEEDED.value
        elif buy.lp not in holders[pid] and len(holders[pid]) >= MAX_HOLDERS:
            refusal = ShareRefuseReason.TOO_MANY_HOLDERS.value
        if refusal is not None:
            actions.append(HostAction(SWAP_DECLINE_KIND, SwapDecline(swap_id=buy_id, pool_id=pid, trader=buy.lp,
                                                                     reason=refusal)))
            continue
        actions.append(HostAction(SHARE_ISSUE_KIND, ShareIssue(buy_id=buy_id, programme_id=pid, lp=buy.lp,
                                                               shares=buy.shares)))
        outstanding[pid] += buy.shares
        holders[pid].add(buy.lp)
    spent = 0

    def affordable(amount: int) -> bool:
        return host == rules.gateway or state.balance(host) - spent - amount >= -rules.credit_limit_uc

    for programme in hosted:
        last = last_payout_ms.get(programme.programme_id)
        if last is not None and now_ms - last < policy.payout_every_ms:
            continue
        payout = compute_payout(state, programme)
        if (payout.amount_uc > 0 or programme.outstanding > programme.earning) and affordable(payout.amount_uc):
            actions.append(HostAction(SHARE_PAYOUT_KIND, payout))
            spent += payout.amount_uc
    for programme in hosted:
        if now_ms < lockup_ends_ms(programme.terms):
            continue
        for record in exits_of(state, programme.programme_id):
            shares = pending_exit(state, programme, record.lp)
            if shares and affordable(shares * programme.terms.price_uc):
                actions.append(HostAction(SHARE_REDEEM_KIND, plan_share_redeem(programme, record.lp, shares, shares)))
                spent += shares * programme.terms.price_uc
    return actions


# --- what an investor writes next ----------------------------------------------------------------

RELEASE_KIND = "release"       # the chain's kind: a buyer takes back a lock nobody consumed


@dataclass(frozen=True)
class InvestorPolicy:
    """An LP's standing instruction (``[shares] invest_*`` in the node config): keep
    ``target_shares`` shares bought in programmes of the zone (of ``host`` only, if given), paid
    from the balance above ``reserve_uc``; with ``exit_after_lockup`` ask for every share of a
    programme back once its lock-up is over. ``buy_deadline_ms``: how long the host has to issue a
    purchase; ``min_escrow_ms``: no purchase whose escrow would be shorter (the sale closing), as
    the host leaves an escrow close to its deadline to the LP's ``release``."""

    target_shares: int
    host: bytes | None = None
    reserve_uc: int = 0
    exit_after_lockup: bool = False
    buy_deadline_ms: int = 600_000
    min_escrow_ms: int = 10_000


def lp_escrows(state: LedgerState, lp: bytes) -> list[tuple[bytes, BuyRecord, LockRecord]]:
    """(buy id, purchase, escrow) of every certified purchase by ``lp`` still escrowed, by id."""
    found = []
    for key, buy in prefixed_items(state.extra, "share_buy/"):
        if not isinstance(buy, BuyRecord) or buy.issued or buy.lp != lp:
            continue
        buy_id = bytes.fromhex(key[len("share_buy/"):])
        record = state.locks.get(buy_id)
        if record is not None and record.status is LockStatus.OPEN:
            found.append((buy_id, buy, record))
    return sorted(found, key=lambda item: item[0])


def _may_buy_in(state: LedgerState, programme: ProgrammeRecord, lp: bytes, now_ms: int,
                policy: InvestorPolicy) -> bool:
    """Would ``validate_share_buy`` let ``lp`` buy in ``programme`` now, as far as its state
    shows, and does the instruction want it to (not a programme it asked to leave)?"""
    terms = programme.terms
    if programme.host == lp or programme.sale_closes_within(now_ms, policy.min_escrow_ms):
        return False
    if exit_of(state, programme.programme_id, lp) is not None:
        return False        # the LP asked to leave it (exit_after_lockup, or by hand): no buying back in
    if policy.exit_after_lockup and now_ms >= lockup_ends_ms(terms):
        return False        # it would ask for them back at once
    if programme.is_new_holder(lp) and programme.holders >= MAX_HOLDERS:
        return False
    return not terms.residents_only or is_resident(state, lp, terms.zone)


def plan_investor_actions(state: LedgerState, lp: bytes, now_ms: int, rules: LedgerRules,
                          policy: InvestorPolicy) -> list[ShareAction]:
    """What investor ``lp`` should write next, in order; each valid at ``now_ms`` against
    ``state`` with the ones before it applied:

    1. a ``release`` of every escrow of its purchases the host left unissued, once the host's
       certified chain has passed the deadline (``seller_passed_deadline``);
    2. with ``exit_after_lockup``, a ``share_exit`` of every share it holds and has not asked back
       yet in each programme whose lock-up is over;
    3. while no escrow of its purchases is pending (one purchase at a time: an escrow in flight is
       never bought twice), a ``share_buy`` of ``target − kept`` shares (``kept``: shares held and
       not asked back, in the programmes the instruction covers) in the first programme by id
       that sells to it (``_may_buy_in``), at most the shares left under the cap and what the
       balance above ``reserve_uc`` pays for (counting the escrows released in 1).

    The instruction covers the zone's programmes of ``policy.host`` (any host if None), never the
    LP's own. Shares asked back count as gone, so an LP that left a programme buys into the next
    open one: with ``exit_after_lockup`` the investment rolls over from programme to programme."""
    actions: list[ShareAction] = []
    released_uc = 0
    escrowed_shares = 0
    for buy_id, buy, escrow in lp_escrows(state, lp):
        if seller_passed_deadline(state, escrow):
            actions.append(ShareAction(RELEASE_KIND, Release(take_id=buy_id)))
            released_uc += escrow.lock.amount
        else:
            escrowed_shares += buy.shares
    covered = [p for p in programmes(state, policy.host) if p.terms.zone == rules.zone and p.host != lp]
    kept = 0
    for programme in covered:
        held = programme.holding(lp)
        if held is None or held.shares == 0:
            continue
        staying = held.shares - pending_exit(state, programme, lp)
        if policy.exit_after_lockup and now_ms >= lockup_ends_ms(programme.terms):
            if staying > 0:
                actions.append(ShareAction(SHARE_EXIT_KIND, plan_share_exit(programme, staying)))
            staying = 0
        kept += staying
    wanted = policy.target_shares - kept
    if escrowed_shares or wanted <= 0:
        return actions
    spendable = state.balance(lp) + released_uc - policy.reserve_uc
    for programme in covered:
        if not _may_buy_in(state, programme, lp, now_ms, policy):
            continue
        terms = programme.terms
        shares = min(wanted, terms.cap_shares - programme.outstanding, max(0, spendable) // terms.price_uc)
        if shares > 0:
            deadline = min(now_ms + policy.buy_deadline_ms, terms.sale_until_ms)
            nonce = state.head(lp).next_seq + len(actions)     # the seq it will most likely have
            actions.append(ShareAction(SHARE_BUY_KIND, plan_share_buy(programme, lp, shares, nonce, deadline)))
            break
    return actions
