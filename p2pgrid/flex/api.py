"""The RPC's flexibility methods over a running node (``LiveNodeApi`` delegates them here).

Reads are views of the node's certified ledger state (``flex.entries``): requests with their
status at the node's market time, offers, awards and settlement lines — of one request, or this
node's own when no request is named. ``request`` posts a request from this node's chain: it
checks it first with the ledger's own rule (``validate_flex_request``: a refusal is the
``EntryRejected`` the committee would give, with its reason — ``not_operator``, ``bad_terms`` …)
and then certifies it. The request id is derived from this account and 8 random bytes, unique
without any state kept here.

Errors::

    LedgerError  └── EntryRejected   a ledger rule refuses the request (reason in the message)
    NotAvailable                     the node runs no ledger
"""

from __future__ import annotations

import os
from typing import Any

from p2pgrid.flex.entries import (
    FLEX_REQUEST_KIND, FlexAwardRecord, FlexOfferRecord, FlexRequest, FlexRequestRecord, award_of, compute_request_id,
    offer_of, offers_of, request_of, requests, settlement_of_request, validate_flex_request,
)
from p2pgrid.flex.rules import Direction
from p2pgrid.ledger.chain import LedgerState, build_entry
from p2pgrid.rpc.api import (
    FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestStatus, FlexRequestView, FlexSettlementView,
)
from p2pgrid.rpc.errors import NotAvailable

__all__ = ["FlexApi", "request_status", "request_view"]


def request_status(state: LedgerState, record: FlexRequestRecord, now_ms: int) -> FlexRequestStatus:
    terms = record.terms
    if settlement_of_request(state, terms.request_id) is not None:
        return FlexRequestStatus.SETTLED
    if award_of(state, terms.request_id) is not None:
        return FlexRequestStatus.AWARDED
    if now_ms < terms.offer_deadline_ms:
        return FlexRequestStatus.OPEN
    return FlexRequestStatus.CLOSED if now_ms < terms.first_slot * 1000 else FlexRequestStatus.LAPSED


def request_view(state: LedgerState, record: FlexRequestRecord, now_ms: int) -> FlexRequestView:
    terms = record.terms
    award = award_of(state, terms.request_id)
    awarded = sum(sum(line.awarded_wh) for line in award.award.lines) if award else 0
    return FlexRequestView(terms.request_id, record.requester, terms.zone, terms.feeder, terms.direction.value,
                           terms.first_slot, terms.n_slots, terms.qty_wh, terms.price_uc_per_kwh,
                           terms.penalty_uc_per_kwh, terms.offer_deadline_ms,
                           len(offers_of(state, terms.request_id)), awarded, request_status(state, record, now_ms))


def _awarded(award: FlexAwardRecord | None, account: bytes, n_slots: int) -> tuple[int, ...]:
    line = next((line for line in award.award.lines if line.account == account), None) if award else None
    return line.awarded_wh if line is not None else (0,) * n_slots


def offer_view(state: LedgerState, record: FlexOfferRecord) -> FlexOfferView:
    offer = record.offer
    return FlexOfferView(offer.request_id, record.account, offer.price_uc_per_kwh, offer.qty_wh, offer.baseline_wh,
                         record.time_ms, _awarded(award_of(state, offer.request_id), record.account, len(offer.qty_wh)))


class FlexApi:
    """See the module docstring. ``node`` has ``ledger`` (a ``LedgerService``, or None) and ``clock``."""

    def __init__(self, node: Any) -> None:
        self.node = node

    @property
    def _ledger(self) -> Any:
        if self.node.ledger is None:
            raise NotAvailable("this node runs no ledger")
        return self.node.ledger

    def _request_ids(self, request_id: bytes | None) -> list[bytes]:
        state = self._ledger.state
        if request_id is not None:
            return [request_id] if request_of(state, request_id) is not None else []
        return [r.terms.request_id for r in requests(state)]

    async def requests(self) -> list[FlexRequestView]:
        state, now = self._ledger.state, self.node.clock.now_ms()
        return [request_view(state, record, now) for record in requests(state)]

    async def offers(self, request_id: bytes | None) -> list[FlexOfferView]:
        ledger = self._ledger
        state = ledger.state
        if request_id is not None:
            return [offer_view(state, r) for r in offers_of(state, request_id)]
        mine = (offer_of(state, rid, ledger.me) for rid in self._request_ids(None))
        return [offer_view(state, r) for r in mine if r is not None]

    async def awards(self, request_id: bytes | None) -> list[FlexAwardView]:
        ledger = self._ledger
        state, out = ledger.state, []
        for rid in self._request_ids(request_id):
            award = award_of(state, rid)
            if award is None:
                continue
            for line in award.award.lines:
                if request_id is None and line.account != ledger.me:
                    continue
                offer = offer_of(state, rid, line.account)
                price = offer.offer.price_uc_per_kwh if offer else 0
                out.append(FlexAwardView(rid, line.account, price, line.awarded_wh, award.time_ms))
        return out

    async def settlements(self, request_id: bytes | None) -> list[FlexSettlementView]:
        ledger = self._ledger
        state, out = ledger.state, []
        for rid in self._request_ids(request_id):
            record = settlement_of_request(state, rid)
            if record is None:
                continue
            for line in record.lines:
                if request_id is None and line.account != ledger.me:
                    continue
                r = line.result
                out.append(FlexSettlementView(rid, line.account, line.metered_slots, r.awarded_wh, r.delivered_wh,
                                              r.paid_wh, r.short_wh, r.payment_uc, r.penalty_uc, r.net_uc))
        return out

    async def request(self, order: FlexRequestOrder) -> FlexRequestView:
        ledger = self._ledger
        rules = ledger.rules
        nonce = int.from_bytes(os.urandom(8), "big")
        terms = FlexRequest(request_id=compute_request_id(ledger.me, rules.zone, nonce), zone=rules.zone,
                            feeder=order.feeder, direction=Direction(order.direction), first_slot=order.first_slot,
                            n_slots=order.n_slots, qty_wh=order.qty_wh, price_uc_per_kwh=order.price_uc_per_kwh,
                            penalty_uc_per_kwh=order.penalty_uc_per_kwh, offer_deadline_ms=order.offer_deadline_ms,
                            excluded_days=tuple(sorted(order.excluded_days)), grant_seq=order.grant_seq)
        state = ledger.state
        now = self.node.clock.now_ms()
        head = state.head(ledger.me)
        # The committee's own rule first, on this node's certified state: a refusal names its reason
        # before anything is signed.
        validate_flex_request(state, build_entry(rules, ledger.me, head, FLEX_REQUEST_KIND, terms, now), terms, rules)
        await ledger.submit(ledger.next_entry(FLEX_REQUEST_KIND, terms))
        record = request_of(ledger.state, terms.request_id)
        if record is None:      # certified, and applied by the time submit returns
            raise NotAvailable("the request was certified but is not in this node's state yet")
        return request_view(ledger.state, record, self.node.clock.now_ms())
