"""The RPC's charging methods over a running node (``LiveNodeApi`` delegates them here).

A driver who is a person (or a bot), not a simulation file, buys public EV charging with these;
the entry kinds and their rules are in ``p2pgrid.charging.rules``, the station's side runs by itself in
``p2pgrid.charging.service``.

* ``tariffs`` lists the tariffs of the zone open now (``charging.open_tariffs``), of one station
  if asked, with their running totals.
* ``start`` is the driver plugging in now: it escrows the price of at most ``max_wh`` under the
  tariff (``plan_charge_start``; plugged in = market time now, deadline ``hours`` ahead), checks
  the ``charge_start`` against this node's certified state with the ledger's own rule
  (``validate_charge_start``: a refusal is the ``EntryRejected`` the committee would give, with
  its detail — ``too_much``, ``tariff_closed``, ``overdraft`` …), certifies it, then waits up to
  ``wait_s`` real seconds for a bill. The station bills a session it has no car of this driver
  for at zero once its ``[charging] no_car_grace_s`` has passed (the whole escrow comes back); a
  session still ``charging`` after the wait is billed when the car leaves.
  The session id's nonce is 8 random bytes, as ``shares_buy`` does: unique for this account
  without any state kept here, so concurrent starts (and starts by the node's own
  ``ChargingService``, which uses the planned start as nonce) never collide.
* ``sessions`` lists this node's sessions as driver or as station, in plug-in order.
* ``release`` takes back the escrow of this node's unbilled session once its deadline has passed
  and the station's certified chain is dated at or past it (the chain's ``release``: until then the
  station may still bill). Before that, or once billed or released (a station usually declines an
  unbilled session at its deadline, which returns the escrow by itself), it refuses with an
  ``EntryRejected`` saying so (``deadline_not_reached``, ``lock_closed``) before signing anything.

A session's ``status``: ``billed`` (``charge_bill`` certified), ``released`` (the driver took the
escrow back, or the station declined the session), ``expired`` (unbilled and past its deadline: releasable) or ``charging``.

Errors::

    TradingError └── UnknownTariff          no certified tariff with that id
                 └── UnknownChargeSession   no certified session of this node's account with that id
    LedgerError  └── EntryRejected          a ledger rule refuses the entry (reason in the message)
    NotAvailable                            the node runs no ledger
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from p2pgrid.charging.rules import (
    CHARGE_START_KIND, MS_PER_HOUR, SessionRecord, TariffRecord, open_tariffs, plan_charge_start, session_of,
    sessions, tariff_of, validate_charge_start,
)
from p2pgrid.errors import TradingError
from p2pgrid.ledger.chain import EntryRejected, LedgerState, LockStatus, RejectReason, build_entry, validate_release
from p2pgrid.ledger.messages import Release
from p2pgrid.rpc.api import ChargeRole, ChargeSessionStatus, ChargeSessionView, ChargeTariffView
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.service import WithLedger

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService

__all__ = ["ChargingApi", "UnknownChargeSession", "UnknownTariff", "session_status", "session_view",
           "tariff_view"]

POLL_S = 0.05


class UnknownTariff(TradingError):
    """No certified charging tariff with that id in this node's ledger."""


class UnknownChargeSession(TradingError):
    """No certified charging session of this node's account with that id."""


def tariff_view(tariff: TariffRecord) -> ChargeTariffView:
    terms = tariff.terms
    return ChargeTariffView(tariff.tariff_id, tariff.station, terms.zone, terms.price_uc_per_kwh,
                            len(terms.charger_keys), terms.max_power_w, terms.max_session_wh, terms.until_ms,
                            tariff.sessions_billed, tariff.sold_wh, tariff.revenue_uc)


def session_status(state: LedgerState, session: SessionRecord, now_ms: int) -> ChargeSessionStatus:
    if session.billed:
        return ChargeSessionStatus.BILLED
    lock = state.locks.get(session.session_id)
    if lock is not None and lock.status is LockStatus.RELEASED:
        return ChargeSessionStatus.RELEASED
    return ChargeSessionStatus.EXPIRED if now_ms >= session.deadline_ms else ChargeSessionStatus.CHARGING


def session_view(state: LedgerState, session: SessionRecord, now_ms: int) -> ChargeSessionView:
    return ChargeSessionView(
        session.session_id, session.tariff_id, session.station, session.driver, session.max_wh, session.escrow_uc,
        session.plugged_in_ms, session.deadline_ms, session.billed, session.delivered_wh, session.amount_uc,
        session.ended_ms, session_status(state, session, now_ms))


class ChargingApi:
    """The charging methods of ``LiveNodeApi`` (see the module docstring)."""

    def __init__(self, node: WithLedger) -> None:
        self.node = node

    def _ledger(self) -> LedgerService:
        if self.node.ledger is None:
            raise NotAvailable("charging needs the ledger, which this node does not run (no validators or gateway)")
        return self.node.ledger

    def _own_session(self, ledger: LedgerService, session_id: bytes) -> SessionRecord:
        session = session_of(ledger.state, session_id)
        if session is None or session.driver != ledger.me:
            raise UnknownChargeSession(f"no certified charging session {session_id.hex()} of this node")
        return session

    def _view(self, ledger: LedgerService, session_id: bytes) -> ChargeSessionView:
        return session_view(ledger.state, self._own_session(ledger, session_id), self.node.clock.now_ms())

    async def tariffs(self, station: bytes | None) -> list[ChargeTariffView]:
        ledger = self._ledger()
        return [tariff_view(t) for t in open_tariffs(ledger.state, self.node.clock.now_ms(), station)]

    async def start(self, tariff_id: bytes, max_wh: int, wait_s: int, hours: int) -> ChargeSessionView:
        ledger = self._ledger()
        tariff = tariff_of(ledger.state, tariff_id)
        if tariff is None:
            raise UnknownTariff(f"no certified charging tariff {tariff_id.hex()}")
        now = self.node.clock.now_ms()
        nonce = int.from_bytes(os.urandom(8), "big")     # any number not used before by this account
        body = plan_charge_start(tariff, ledger.me, max_wh, nonce, now, now + hours * MS_PER_HOUR)
        # The committee's own rule, on our certified state: a clear refusal before anything is signed.
        validate_charge_start(ledger.state, build_entry(ledger.rules, ledger.me, ledger.head(), CHARGE_START_KIND,
                                                        body, now), body, ledger.rules)
        await ledger.submit(ledger.next_entry(CHARGE_START_KIND, body))
        with trio.move_on_after(wait_s):
            while self._view(ledger, body.session_id).status is ChargeSessionStatus.CHARGING:
                await trio.sleep(POLL_S)
        return self._view(ledger, body.session_id)

    async def sessions(self, role: ChargeRole) -> list[ChargeSessionView]:
        ledger = self._ledger()
        now = self.node.clock.now_ms()
        mine = (sessions(ledger.state, driver=ledger.me) if role is ChargeRole.DRIVER
                else sessions(ledger.state, station=ledger.me))
        return [session_view(ledger.state, s, now) for s in mine]

    async def release(self, session_id: bytes) -> ChargeSessionView:
        ledger = self._ledger()
        view = self._view(ledger, session_id)
        if view.status is ChargeSessionStatus.BILLED:
            raise EntryRejected(RejectReason.LOCK_CLOSED, f"session {session_id.hex()} was billed "
                                f"({view.delivered_wh} Wh, {view.amount_uc} µc): the rest of its escrow came back")
        if view.status is ChargeSessionStatus.RELEASED:
            raise EntryRejected(RejectReason.LOCK_CLOSED, f"session {session_id.hex()} was released already")
        now = self.node.clock.now_ms()
        if view.status is ChargeSessionStatus.CHARGING:
            raise EntryRejected(RejectReason.DEADLINE_NOT_REACHED,
                                f"the station may bill session {session_id.hex()} until {view.deadline_ms} "
                                f"(in {(view.deadline_ms - now + 999) // 1000} s); release it from then on")
        body = Release(take_id=session_id)
        # Refused (``deadline_not_reached``) until the station's certified chain is dated at or past
        # the deadline: until then the station may still bill the session.
        validate_release(ledger.state, build_entry(ledger.rules, ledger.me, ledger.head(), "release", body, now),
                         body, ledger.rules)
        await ledger.submit(ledger.next_entry("release", body))
        return self._view(ledger, session_id)
