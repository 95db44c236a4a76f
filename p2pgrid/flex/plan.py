"""What a node writes next in the flexibility market, given the certified state and the time (pure).

``flex_actions`` is the whole decision of ``flex.service`` each round:

* as a **provider** (any account that is neither the gateway nor the request's requester): an
  offer for every certified request still open for offers (``now < offer_deadline_ms``) it has
  not offered for, sized by ``OfferPolicy.limits`` — what its own devices can give without
  breaking their limits (``flex.agent``) — and capped by the request, its baseline and its
  connection (``entries.plan_offer``); none if it can offer nothing;
* as a **requester** (the account that posted a request): the award, once the offer deadline has
  passed and before the first slot starts (merit order over every offer certified here); then the
  settlement, once the last slot's metering deadline plus ``settle_delay_ms`` (W, as for zone
  settlement) has passed, and a reconciliation whenever a reading of an awarded node is certified
  after it. A request whose first slot started before it was awarded is left unawarded.

Nothing here reads a clock: ``now_ms`` is an argument. Validity never depends on when the entries
reach the committee (every rule is judged on the entries' own times), so a slow node only writes
later; the one real race — an offer signed just before the deadline — is decided by its signed
time, not by when it is certified.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from p2pgrid.flex.entries import (
    FLEX_AWARD_KIND, FLEX_OFFER_KIND, FLEX_SETTLE_KIND, FlexRequestRecord, award_of, compute_award,
    compute_flex_settle, offer_of, plan_offer, requests, slot_rules_of,
)
from p2pgrid.ledger.chain import LedgerRules, LedgerState

__all__ = ["DEFAULT_SETTLE_DELAY_MS", "FlexAction", "OfferPolicy", "flex_actions"]

DEFAULT_SETTLE_DELAY_MS = 30_000     # W: the same certification bound as zone settlement's


@dataclass(frozen=True)
class FlexAction:
    kind: str
    body: object


@dataclass(frozen=True)
class OfferPolicy:
    """How a provider offers: its ask (µc/kWh; capped by each request's price) and, per request,
    the Wh per slot its devices can move (``limits``; None: it offers nothing)."""

    meter_key: bytes
    price_uc_per_kwh: int
    limits: Callable[[FlexRequestRecord], tuple[int, ...] | None]


def flex_actions(state: LedgerState, rules: LedgerRules, me: bytes, now_ms: int, policy: OfferPolicy | None = None,
                 settle_delay_ms: int = DEFAULT_SETTLE_DELAY_MS) -> list[FlexAction]:
    """The entries ``me`` should write now (module docstring), in the order to write them."""
    actions: list[FlexAction] = []
    for request in requests(state):
        terms = request.terms
        if request.requester == me:
            actions += _requester_actions(state, rules, request, now_ms, settle_delay_ms)
        elif (policy is not None and me != rules.gateway and now_ms < terms.offer_deadline_ms
              and offer_of(state, terms.request_id, me) is None):
            limits = policy.limits(request)
            if limits is None:
                continue
            body = plan_offer(state, rules, me, policy.meter_key, terms.request_id, policy.price_uc_per_kwh, limits)
            if body is not None:
                actions.append(FlexAction(FLEX_OFFER_KIND, body))
    return actions


def _requester_actions(state: LedgerState, rules: LedgerRules, request: FlexRequestRecord, now_ms: int,
                       settle_delay_ms: int) -> list[FlexAction]:
    terms = request.terms
    if award_of(state, terms.request_id) is None:
        if terms.offer_deadline_ms <= now_ms < terms.first_slot * 1000:
            award = compute_award(state, terms.request_id)
            if award is not None:
                return [FlexAction(FLEX_AWARD_KIND, award)]
        return []
    if now_ms < slot_rules_of(rules).metering_due_ms(request.slots[-1]) + settle_delay_ms:
        return []
    settle = compute_flex_settle(state, rules, terms.request_id)
    return [FlexAction(FLEX_SETTLE_KIND, settle)] if settle is not None else []
