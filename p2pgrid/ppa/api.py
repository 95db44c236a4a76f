"""The RPC's PPA methods over a running node, and their views (shell).

``PpaApi(node)`` reaches the node's ``PpaService`` (``ppa.service``) and its certified ledger:

* ``offer(terms_toml, accept_by_ms)`` fills the agreement from a TOML template
  (``ppa.terms.parse_terms_toml``; a bad template is an ``InvalidTerms`` naming the problem) and
  offers it; ``accept(ppa_id)`` accepts the counterparty's offer; ``terminate(ppa_id, end_slot)``
  terminates (default: the earliest slot the notice allows). A ledger refusal is the
  ``EntryRejected`` the committee would give, raised before anything is signed.
* ``show(ppa_id)`` returns the agreement with its **text** as this node stores it and
  ``text_verified``: whether the SHA-256 of that text is the id the ledger's offer and acceptance
  name (a text edited on disk is shown, and flagged).
* ``list()`` the offers and agreements of this node's account; ``positions(ppa_id)`` each settled
  slot of the agreement: contracted and delivered Wh, what the buyer paid (``ppa``) and any
  shortfall penalty (``ppa_penalty``).

``register_methods(methods)`` adds the methods to the RPC's table (``p2pgrid.rpc.methods``).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from p2pgrid.ledger.chain import LedgerState
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ppa.entries import AgreementRecord, OfferRecord, agreements, terminations_of
from p2pgrid.ppa.execution import ppa_trade_id
from p2pgrid.ppa.service import PpaService
from p2pgrid.ppa.terms import PpaTerms, parse_terms_toml
from p2pgrid.rpc import codec as c
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.rpc.jsonrpc import Method
from p2pgrid.settlement.entries import settlement_of
from p2pgrid.settlement.rules import Reason

__all__ = ["PpaApi", "PpaPositionView", "PpaStatus", "PpaView", "register_methods"]

PPA_ID_SIZE = 32
MAX_TOML_CHARS = 20_000


class PpaStatus(str, enum.Enum):
    OFFERED = "offered"          # offered, not accepted (yet)
    AGREED = "agreed"            # accepted; no termination certified
    TERMINATED = "terminated"    # accepted; a party terminated it (ends_slot)


@dataclass(frozen=True)
class PpaView:
    ppa_id: bytes
    name: str
    seller: bytes
    buyer: bytes
    zone: str
    shape: str
    start_slot: int
    end_slot: int
    ends_slot: int               # end_slot, or the earliest certified termination's
    price_uc_per_kwh: int
    status: PpaStatus
    offerer: bytes
    accept_by_ms: int
    text: str                    # "" in lists
    text_verified: bool          # sha256(text) == ppa_id (False in lists)


@dataclass(frozen=True)
class PpaPositionView:
    slot: int
    contracted_wh: int
    delivered_wh: int
    paid_uc: int                 # buyer → seller (reason ppa)
    penalty_uc: int              # seller → buyer (reason ppa_penalty)


def _view(state: LedgerState, terms: PpaTerms, ppa_id: bytes, agreement: AgreementRecord | None,
          offers: list[OfferRecord], text: str = "") -> PpaView:
    ends = [t.end_slot for t in terminations_of(state, ppa_id)]
    status = (PpaStatus.OFFERED if agreement is None else PpaStatus.TERMINATED if ends else PpaStatus.AGREED)
    offer = next((o for o in offers if agreement is None or o.offerer == agreement.offerer), offers[0] if offers else None)
    return PpaView(ppa_id, terms.name, terms.seller, terms.buyer, terms.zone, terms.shape.value, terms.start_slot,
                   terms.end_slot, min([terms.end_slot, *ends]), terms.price_uc_per_kwh, status,
                   offer.offerer if offer else b"", offer.accept_by_ms if offer else 0, text,
                   bool(text) and hashlib.sha256(text.encode("ascii", "replace")).digest() == ppa_id)


class PpaApi:
    def __init__(self, node: Any) -> None:
        self.node = node

    def _service(self) -> PpaService:
        for service in getattr(self.node, "services", ()):
            if isinstance(service, PpaService) and service.ledger is not None:
                return service
        raise NotAvailable("this node runs no ledger, so no PPA service")

    def _view_of(self, ppa_id: bytes, with_text: bool) -> PpaView:
        service = self._service()
        terms, agreement, offers = service.terms_of(ppa_id)
        return _view(service._ledger().state, terms, ppa_id, agreement, offers,
                     service.text(ppa_id) if with_text else "")

    async def offer(self, terms_toml: str, accept_by_ms: int | None) -> PpaView:
        ppa_id = await self._service().offer(parse_terms_toml(terms_toml), accept_by_ms)
        return self._view_of(ppa_id, True)

    async def accept(self, ppa_id: bytes) -> PpaView:
        await self._service().accept(ppa_id)
        return self._view_of(ppa_id, True)

    async def show(self, ppa_id: bytes) -> PpaView:
        return self._view_of(ppa_id, True)

    async def terminate(self, ppa_id: bytes, end_slot: int | None) -> PpaView:
        await self._service().terminate(ppa_id, end_slot)
        return self._view_of(ppa_id, False)

    async def list(self) -> list[PpaView]:
        service = self._service()
        ledger = service._ledger()
        state, me = ledger.state, ledger.me
        ids = {a.ppa_id for a in agreements(state, me)}
        ids |= {record.ppa_id for record in _own_offers(state, me)}
        views = [self._view_of(ppa_id, False) for ppa_id in ids]
        return sorted(views, key=lambda v: (v.start_slot, v.ppa_id))

    async def positions(self, ppa_id: bytes) -> list[PpaPositionView]:
        service = self._service()
        terms, _, _ = service.terms_of(ppa_id)
        state = service._ledger().state
        trade_id = ppa_trade_id(ppa_id)
        found = []
        now_s = service._ledger().clock() // 1000
        # The slots of the term up to now that are settled (a slot settles after its metering due).
        for slot in range(terms.start_slot, min(terms.end_slot, now_s), terms.slot_length_s):
            settled = settlement_of(state, slot)
            if settled is None:
                continue
            delivery = next((d for d in settled.deliveries if d.trade_id == trade_id), None)
            if delivery is None:
                continue
            paid = sum(t.amount_uc for t in settled.transfers if t.ref == trade_id and t.reason is Reason.PPA)
            penalty = sum(t.amount_uc for t in settled.transfers if t.ref == trade_id and t.reason is Reason.PPA_PENALTY)
            found.append(PpaPositionView(slot, delivery.contracted_wh, delivery.delivered_wh, paid, penalty))
        return found


def _own_offers(state: LedgerState, account: bytes) -> list[OfferRecord]:
    return [v for _, v in prefixed_items(state.extra, "ppa_offer/") if isinstance(v, OfferRecord)
            and account in (v.terms.seller, v.terms.buyer)]


# --- the RPC methods --------------------------------------------------------------------------

P = Mapping[str, Any]
ppa_id_param = c.Param("ppa_id", c.hex_bytes(PPA_ID_SIZE), doc="agreement id (SHA-256 of its text), 64 hex digits")


async def ppa_offer(node: Any, p: P, s: Any) -> PpaView:
    return await PpaApi(getattr(node, "node", node)).offer(p["terms_toml"], p["accept_by_ms"])


async def ppa_accept(node: Any, p: P, s: Any) -> PpaView:
    return await PpaApi(getattr(node, "node", node)).accept(p["ppa_id"])


async def ppa_show(node: Any, p: P, s: Any) -> PpaView:
    return await PpaApi(getattr(node, "node", node)).show(p["ppa_id"])


async def ppa_list(node: Any, p: P, s: Any) -> list[PpaView]:
    return await PpaApi(getattr(node, "node", node)).list()


async def ppa_positions(node: Any, p: P, s: Any) -> list[PpaPositionView]:
    return await PpaApi(getattr(node, "node", node)).positions(p["ppa_id"])


async def ppa_terminate(node: Any, p: P, s: Any) -> PpaView:
    return await PpaApi(getattr(node, "node", node)).terminate(p["ppa_id"], p["end_slot"])


def register_methods(methods: dict[str, Method]) -> None:
    for method in [
        Method("ppa_offer", (c.Param("terms_toml", c.text(r"(?s).{1,%d}" % MAX_TOML_CHARS),
                                     doc="the filled TOML template"),
                             c.Param("accept_by_ms", c.optional(c.integer()), None,
                                     doc="the offer is open until (null: the term's start)")),
               ppa_offer, "offer a power purchase agreement (this node's account is seller or buyer)"),
        Method("ppa_accept", (ppa_id_param,), ppa_accept, "accept the other party's offer of an agreement"),
        Method("ppa_show", (ppa_id_param,), ppa_show, "an agreement with its text, verified against its id"),
        Method("ppa_list", (), ppa_list, "this node's offers and agreements"),
        Method("ppa_positions", (ppa_id_param,), ppa_positions, "an agreement's settled slots"),
        Method("ppa_terminate", (ppa_id_param, c.Param("end_slot", c.optional(c.integer()), None,
                                                      doc="first slot without a position (null: earliest)")),
               ppa_terminate, "terminate an agreement with the notice its terms require"),
    ]:
        methods[method.name] = method
