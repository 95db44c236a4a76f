"""The RPC's share methods over a running node (``LiveNodeApi`` delegates them here).

* ``programmes`` lists every certified programme (``shares.rules.programmes``) with its terms and
  the shares left: ``cap − outstanding`` while the sale is open, 0 after.
* ``buy`` checks the purchase against this node's certified state with the ledger's own rule
  (``validate_share_buy``, on an entry dated now: a refusal is the ``EntryRejected`` the committee
  would give, with its detail) and against the shares left under the cap and the holder limit as
  this node's state shows them (the host enforces those when it issues, so the committee's rule
  does not: a clear refusal here instead of an escrow the host would hand back), certifies a ``share_buy`` from this node's account escrowing ``shares × price`` until
  ``now + BUY_DEADLINE_S`` (market time, or the sale's end if sooner), then waits up to ``wait_s``
  real seconds for the host's answer: ``issued`` (its ``share_issue`` certified), ``returned``
  (declined with ``swap_decline``, or released) or still ``escrowed``. The host's service
  (``p2pgrid.shares.service``) issues on its next round, or declines; an escrow it never answers is
  the buyer's again once the host's chain has passed its deadline (the chain's ``release``).
* ``exit`` certifies a ``share_exit`` (checked first with ``validate_share_exit``, and against the
  shares this node holds and has not asked back yet): the host redeems the shares at par once the
  lock-up is over.
* ``positions`` is ``shares.rules.lp_positions`` of this node's account, with its pending exits.

Errors: ``UnknownProgramme`` (a ``TradingError``) for a programme this node's ledger does not
know; the ledger's ``EntryRejected`` / ``BatchRejected`` (``LedgerError``) for a refused entry;
``NotAvailable`` on a node without a ledger.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from p2pgrid.errors import TradingError
from p2pgrid.ledger.chain import EntryRejected, LockStatus, RejectReason, build_entry
from p2pgrid.rpc.api import ShareBuyStatus, ShareBuyView, ShareExitView, SharePositionView, ShareProgrammeView
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.service import WithLedger
from p2pgrid.shares.rules import (
    MAX_HOLDERS, SHARE_BUY_KIND, SHARE_EXIT_KIND, ProgrammeRecord, ShareBuy, ShareRefuseReason, buy_of, compute_buy_id, exit_of, lockup_ends_ms,
    lp_positions, pending_exit, plan_share_exit, programme_of, programmes, validate_share_buy, validate_share_exit,
)

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService

BUY_DEADLINE_S = 600       # market seconds the host has to issue a purchase
POLL_S = 0.05

__all__ = ["BUY_DEADLINE_S", "ShareApi", "UnknownProgramme", "buy_status", "programme_view"]


class UnknownProgramme(TradingError):
    """No certified share programme with that id in this node's ledger."""


def programme_view(programme: ProgrammeRecord, now_ms: int) -> ShareProgrammeView:
    terms = programme.terms
    sale_open = now_ms < terms.sale_until_ms
    return ShareProgrammeView(
        programme.programme_id, programme.host, terms.zone, terms.price_uc, terms.fee_share_bps, terms.cap_shares,
        programme.outstanding, max(0, terms.cap_shares - programme.outstanding) if sale_open else 0,
        programme.holders, terms.sale_until_ms, sale_open, terms.lockup_until_slot, terms.residents_only,
        programme.payouts, programme.paid_uc)


def buy_status(ledger: LedgerService, body: ShareBuy) -> ShareBuyStatus:
    record = buy_of(ledger.state, body.buy_id)
    lock = ledger.state.locks.get(body.buy_id)
    if record is not None and record.issued:
        return ShareBuyStatus.ISSUED
    if lock is not None and lock.status is not LockStatus.OPEN:
        return ShareBuyStatus.RETURNED
    return ShareBuyStatus.ESCROWED


class ShareApi:
    """The share methods of ``LiveNodeApi`` (see the module docstring)."""

    def __init__(self, node: WithLedger) -> None:
        self.node = node

    def _ledger(self) -> LedgerService:
        if self.node.ledger is None:
            raise NotAvailable("shares need the ledger, which this node does not run (no validators or gateway)")
        return self.node.ledger

    def _programme(self, ledger: LedgerService, programme_id: bytes) -> ProgrammeRecord:
        programme = programme_of(ledger.state, programme_id)
        if programme is None:
            raise UnknownProgramme(f"no certified share programme {programme_id.hex()}")
        return programme

    async def programmes(self) -> list[ShareProgrammeView]:
        ledger = self._ledger()
        now = self.node.clock.now_ms()
        return [programme_view(p, now) for p in programmes(ledger.state)]

    async def buy(self, programme_id: bytes, shares: int, wait_s: int) -> ShareBuyView:
        ledger = self._ledger()
        programme = self._programme(ledger, programme_id)
        now = self.node.clock.now_ms()
        terms = programme.terms
        deadline = min(now + BUY_DEADLINE_S * 1000, terms.sale_until_ms)
        nonce = int.from_bytes(os.urandom(8), "big")     # any number not used before by this account
        body = ShareBuy(buy_id=compute_buy_id(ledger.me, programme_id, nonce), programme_id=programme_id,
                        host=programme.host, zone=terms.zone, shares=shares, amount_uc=shares * terms.price_uc,
                        deadline_ms=deadline)
        # The committee's own rule, on our certified state: a clear refusal before anything is signed.
        validate_share_buy(ledger.state, build_entry(ledger.rules, ledger.me, ledger.head(), SHARE_BUY_KIND, body, now),
                           body, ledger.rules)
        # What only the host checks (at issue): refuse here what it would hand back.
        left = terms.cap_shares - programme.outstanding
        if shares > left:
            raise EntryRejected(RejectReason.BAD_BODY, f"{ShareRefuseReason.CAP_EXCEEDED.value}: {left} shares are left")
        if programme.is_new_holder(ledger.me) and programme.holders >= MAX_HOLDERS:
            raise EntryRejected(RejectReason.BAD_BODY,
                                f"{ShareRefuseReason.TOO_MANY_HOLDERS.value}: the programme has {MAX_HOLDERS} LPs already")
        await ledger.submit(ledger.next_entry(SHARE_BUY_KIND, body))
        with trio.move_on_after(wait_s):
            while buy_status(ledger, body) is ShareBuyStatus.ESCROWED:
                await trio.sleep(POLL_S)
        return ShareBuyView(body.buy_id, programme_id, programme.host, shares, body.amount_uc, deadline,
                            buy_status(ledger, body))

    async def exit(self, programme_id: bytes, shares: int) -> ShareExitView:
        ledger = self._ledger()
        programme = self._programme(ledger, programme_id)
        body = plan_share_exit(programme, shares)
        now = self.node.clock.now_ms()
        validate_share_exit(ledger.state, build_entry(ledger.rules, ledger.me, ledger.head(), SHARE_EXIT_KIND, body, now),
                            body, ledger.rules)
        held = programme.holding(ledger.me)
        owned = held.shares if held is not None else 0
        already = pending_exit(ledger.state, programme, ledger.me)
        if already + shares > owned:     # the rule leaves holdings to the host (they are its chain's)
            raise EntryRejected(RejectReason.BAD_BODY, f"{ShareRefuseReason.NOT_HELD.value}: this node holds {owned} "
                                                       f"shares, {already} of them asked to redeem already")
        await ledger.submit(ledger.next_entry(SHARE_EXIT_KIND, body))
        return self.exit_view(ledger, programme_id)

    def exit_view(self, ledger: LedgerService, programme_id: bytes) -> ShareExitView:
        programme = self._programme(ledger, programme_id)
        record = exit_of(ledger.state, programme_id, ledger.me)
        requested, answered = (record.requested, record.answered) if record is not None else (0, 0)
        return ShareExitView(programme_id, programme.host, requested, answered,
                             pending_exit(ledger.state, programme, ledger.me), lockup_ends_ms(programme.terms))

    async def positions(self) -> list[SharePositionView]:
        ledger = self._ledger()
        now = self.node.clock.now_ms()
        views = []
        for p in lp_positions(ledger.state, ledger.me):
            programme = self._programme(ledger, p.programme_id)
            views.append(SharePositionView(
                p.programme_id, p.host, p.zone, p.shares, p.earning_shares, p.price_uc, p.lockup_until_slot,
                p.is_locked(now), p.invested_uc, p.redeemed_uc, p.income_uc, p.fee_share_bps, p.payouts,
                pending_exit(ledger.state, programme, ledger.me)))
        return views
