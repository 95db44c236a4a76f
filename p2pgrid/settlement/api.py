"""The RPC's settlement and certificate reads over a node's certified ledger (``LiveNodeApi``,
``p2pgrid.node.api``, delegates them here), and the views they return.

* **Settlement** — ``settlement(slot)`` is this node's line of the slot's certified ``settle``
  entry (``settlement.entries.settlement_of``), with ``settled: true``. Before that it is
  **provisional**: ``compute_settlement`` over the certified trades and meter entries known now
  (what the slot would settle as if nothing more arrived; a meter entry not in yet counts as zero
  delivery), with ``settled: false``. Signs (+ bought / imported / paid, − sold / exported /
  received): ``contracted_wh`` = bought − sold, ``metered_wh`` = import − export,
  ``imbalance_wh`` = metered − contracted, ``trade_value_uc`` = −(the line's ``trade``
  payments), ``imbalance_value_uc`` = −(every other payment of the line: shortfall, surplus
  export, extra import, unused purchase, grid fee). An account not in the slot gets zeros.
* **Certificates** — ``certificates(account)`` lists, slot by slot (oldest first), the unit ranges
  the account holds (``active``) and those it retired (``retired``) in the certified settlements
  (``settlement.entries.certificate_registry``). One ``Certificate`` per range; ``cert_id`` =
  the first 16 bytes of ``sha256(b"p2pgrid/cert/v1" ‖ meter_entry ‖ start ‖ end)`` (start, end:
  the range's units as 8-byte big-endian), ``meter_entry`` the message id of the signed meter
  reading that issued the batch.

Errors::

    SettlementError └── NotASlot     settlement of an instant that starts no slot
    NotAvailable                     the node runs no ledger, or its zone's rules carry no imbalance prices
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from p2pgrid.errors import SettlementError
from p2pgrid.ledger.chain import LedgerState
from p2pgrid.rpc.api import Certificate, CertificateStatus, SlotSettlement
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.service import WithLedger
from p2pgrid.settlement import rules as settling
from p2pgrid.settlement.certificates import UnitRange
from p2pgrid.settlement.entries import (
    SettlementLedgerRules, certificate_registry, compute_settlement, settled_slots, settlement_of,
)

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService

__all__ = ["NotASlot", "SettlementApi", "certificate_id", "certificate_views", "last_settlement_view",
           "settlement_view"]


class NotASlot(SettlementError):
    """A settlement asked for an instant that is not the start of one of the zone's slots."""


def settlement_view(settled: settling.SlotSettlement, account: bytes, *, final: bool) -> SlotSettlement:
    """``account``'s line of a (certified, or provisional when not ``final``) slot settlement, in
    the API's signs (see the module docstring); zeros for an account not in the slot."""
    try:
        line = settled.line(account)
    except KeyError:
        return SlotSettlement(settled.slot, account, 0, 0, 0, 0, 0, final)
    contracted = line.bought_wh - line.sold_wh
    metered = line.import_wh - line.export_wh
    received_for_trades = line.paid_for(settling.Reason.TRADE)
    return SlotSettlement(settled.slot, account, contracted, metered, metered - contracted, -received_for_trades,
                          -(line.net_uc - received_for_trades), final)


def certificate_id(units: UnitRange) -> bytes:
    """A stable 16-byte name for a range of certificate units (see the module docstring)."""
    digest = hashlib.sha256(b"p2pgrid/cert/v1" + units.batch.meter_entry_hash
                            + units.start.to_bytes(8, "big") + units.end.to_bytes(8, "big")).digest()
    return digest[:16]


def _certificate(units: UnitRange, owner: bytes, status: CertificateStatus) -> Certificate:
    batch = units.batch
    return Certificate(certificate_id(units), owner, batch.slot, units.wh, batch.source, status,
                       batch.meter_entry_hash)


def certificate_views(state: LedgerState, account: bytes) -> list[Certificate]:
    """The certificate units ``account`` holds or retired, slot by slot (oldest first)."""
    views = []
    for slot in certificate_registry(state).slots:
        views += [_certificate(r, account, CertificateStatus.ACTIVE) for r in slot.holdings_of(account)]
        views += [_certificate(r, account, CertificateStatus.RETIRED) for r in slot.retired_by(account)]
    return views


def last_settlement_view(state: LedgerState, account: bytes) -> SlotSettlement | None:
    """``account``'s line of the last settled slot it is in (None before any). Scans the settled
    slots: for a dashboard refresh, not for a hot loop."""
    for slot in reversed(settled_slots(state)):
        settled = settlement_of(state, slot)
        if settled is not None and any(line.account == account for line in settled.lines):
            return settlement_view(settled, account, final=True)
    return None


class SettlementApi:
    """The settlement methods of ``LiveNodeApi`` (see the module docstring)."""

    def __init__(self, node: WithLedger) -> None:
        self.node = node

    def _ledger(self) -> LedgerService:
        if self.node.ledger is None:
            raise NotAvailable("the ledger is not available on this node (the zone config has no "
                               "validators or gateway)")
        return self.node.ledger

    def _settlement_rules(self) -> SettlementLedgerRules:
        rules = self._ledger().rules
        if not isinstance(rules, SettlementLedgerRules) or rules.prices is None:
            raise NotAvailable("settlement is not available in this zone: its ledger rules carry no "
                               "imbalance prices")
        return rules

    async def settlement(self, slot: int) -> SlotSettlement:
        ledger = self._ledger()
        rules = self._settlement_rules()
        if slot < 0 or not rules.slots.is_aligned(slot):
            raise NotASlot(f"{slot} is not the start of a slot (slots are {rules.slots.length_s} s long)")
        me = self.node.key.public_key
        settled = settlement_of(ledger.state, slot)
        if settled is not None:
            return settlement_view(settled, me, final=True)
        _, provisional = compute_settlement(ledger.state, rules, slot)
        return settlement_view(provisional, me, final=False)

    async def certificates(self, account: bytes) -> list[Certificate]:
        return certificate_views(self._ledger().state, account)
