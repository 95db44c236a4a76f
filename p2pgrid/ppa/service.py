"""A node's power purchase agreements: offer, accept, terminate, keep the texts (trio shell).

``PpaService`` (name ``ppa``, on every node with a ledger) is the shell around ``ppa.entries``:

* ``offer(terms)`` signs a ``ppa_offer`` of the terms' hash (open until the term starts unless
  told otherwise), ``accept(ppa_id)`` the counterparty's ``ppa_accept`` of the offer it finds in
  the certified ledger, ``terminate(ppa_id, end_slot)`` a ``ppa_terminate`` (by default at the
  earliest slot the notice allows), ``expire(ppa_id)`` a ``ppa_expire``. Each is judged first on
  this node's certified state with the ledger's own rule, so a refusal (``terms_mismatch``,
  ``share_overlap``, ``no_notice`` …) is raised before anything is signed.
* **The text is stored by both parties**: every agreement or offer this node's account is a party
  to gets its canonical text written to ``<data_dir>/ppa/<id>.md`` — at offer and acceptance, and
  by a poll (every ``POLL_S`` real seconds) for offers and agreements the other party made — and
  served by ``text(ppa_id)`` (the RPC's ``ppa_show``), which verifies it against the id.

* **Agreements close by themselves**: once an agreement this account is a party to has ended —
  at the terms' end, or at the earliest end a certified termination of either party named — the
  same poll signs this party's ``ppa_expire`` (``due_expiries``), which releases the seller's share
  claim of its generator for new agreements.

The positions themselves are settled by the zone gateway (``ppa.settle``): nothing here runs per slot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import EntryRejected, build_entry, kind_rules
from p2pgrid.ledger.extra import prefixed_items
from p2pgrid.ppa.entries import (
    PPA_ACCEPT_KIND, PPA_EXPIRE_KIND, PPA_OFFER_KIND, PPA_TERMINATE_KIND, AgreementRecord, OfferRecord, PpaAccept,
    PpaExpire, PpaOffer, PpaTerminate, TerminationRecord, agreement_of, expired_key, offers_of, termination_key,
)
from p2pgrid.ppa.terms import PpaTerms, render_terms, terms_hash
from p2pgrid.service import WithLedger

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig
    from p2pgrid.ledger.service import LedgerService

__all__ = ["PpaService", "UnknownAgreement", "earliest_end_slot", "ppa_services"]

log = logging.getLogger(__name__)
POLL_S = 2.0
MS_PER_S = 1000


class UnknownAgreement(LedgerError):
    """No certified offer or agreement with that id in this node's ledger."""


def earliest_end_slot(terms: PpaTerms, now_ms: int) -> int:
    """The first slot a termination dated ``now_ms`` may end the agreement at (its notice)."""
    earliest_s = -(-(now_ms + terms.notice_s * MS_PER_S) // MS_PER_S)
    return max(terms.start_slot, -(-earliest_s // terms.slot_length_s) * terms.slot_length_s)


class PpaService:
    name = "ppa"

    def __init__(self, ledger: LedgerService | None = None, data_dir: Path | None = None, *,
                 poll_s: float = POLL_S) -> None:
        self.ledger = ledger
        self.data_dir = data_dir
        self.poll_s = poll_s
        self._stored: set[bytes] = set()

    # --- reading ------------------------------------------------------------------------------

    def _ledger(self) -> LedgerService:
        if self.ledger is None:
            raise LedgerError("the PPA service has not started")
        return self.ledger

    def terms_of(self, ppa_id: bytes) -> tuple[PpaTerms, AgreementRecord | None, list[OfferRecord]]:
        state = self._ledger().state
        agreement = agreement_of(state, ppa_id)
        offers = offers_of(state, ppa_id)
        if agreement is None and not offers:
            raise UnknownAgreement(f"no certified offer or agreement {ppa_id.hex()} here")
        return (agreement.terms if agreement else offers[0].terms), agreement, offers

    def text_path(self, ppa_id: bytes) -> Path | None:
        return self.data_dir / "ppa" / f"{ppa_id.hex()}.md" if self.data_dir is not None else None

    def text(self, ppa_id: bytes) -> str:
        """The agreement's text as this node stores it (else rendered from the certified terms);
        raises ``UnknownAgreement`` if the ledger holds no offer of that id."""
        terms, _, _ = self.terms_of(ppa_id)
        path = self.text_path(ppa_id)
        if path is not None and path.exists():
            return path.read_text(encoding="ascii")
        return render_terms(terms)

    def store_text(self, terms: PpaTerms) -> Path | None:
        ppa_id = terms_hash(terms)
        path = self.text_path(ppa_id)
        if path is not None and ppa_id not in self._stored:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(render_terms(terms).encode("ascii"))
            tmp.replace(path)
            self._stored.add(ppa_id)
        return path

    # --- writing ------------------------------------------------------------------------------

    async def _submit(self, kind: str, body: Any) -> Any:
        ledger = self._ledger()
        # Judged on this node's certified state first: a refusal is raised before anything is signed.
        probe = build_entry(ledger.rules, ledger.me, ledger.head(), kind, body, ledger.clock())
        kind_rules(kind).validate(ledger.state, probe, body, ledger.rules)
        entry = ledger.next_entry(kind, body)
        await ledger.submit(entry)
        return entry

    async def offer(self, terms: PpaTerms, accept_by_ms: int | None = None) -> bytes:
        ppa_id = terms_hash(terms)
        body = PpaOffer(terms, ppa_id, accept_by_ms if accept_by_ms is not None else terms.start_slot * MS_PER_S)
        self.store_text(terms)
        await self._submit(PPA_OFFER_KIND, body)
        return ppa_id

    async def accept(self, ppa_id: bytes) -> AgreementRecord:
        ledger = self._ledger()
        _, agreement, offers = self.terms_of(ppa_id)
        theirs = [o for o in offers if o.offerer != ledger.me]
        if agreement is not None:
            return agreement
        if not theirs:
            raise UnknownAgreement(f"no offer of {ppa_id.hex()} by another account here")
        offer = theirs[0]
        self.store_text(offer.terms)
        await self._submit(PPA_ACCEPT_KIND, PpaAccept(ppa_id, offer.offerer, offer.offer_seq))
        accepted = agreement_of(ledger.state, ppa_id)
        if accepted is None:
            raise LedgerError(f"acceptance of {ppa_id.hex()} certified but not applied here")
        return accepted

    async def terminate(self, ppa_id: bytes, end_slot: int | None = None) -> int:
        terms, agreement, _ = self.terms_of(ppa_id)
        if agreement is None:
            raise UnknownAgreement(f"{ppa_id.hex()} is offered, not agreed: withdraw it with ppa_expire")
        end = end_slot if end_slot is not None else earliest_end_slot(terms, self._ledger().clock())
        await self._submit(PPA_TERMINATE_KIND, PpaTerminate(ppa_id, end))
        return end

    async def expire(self, ppa_id: bytes, termination_by: bytes = b"") -> None:
        self.terms_of(ppa_id)
        await self._submit(PPA_EXPIRE_KIND, PpaExpire(ppa_id, termination_by))

    # --- running ------------------------------------------------------------------------------

    def store_own_texts(self) -> int:
        """Write the text of every offer and agreement this account is a party to (not yet stored)."""
        ledger = self._ledger()
        stored = 0
        state = ledger.state
        for _, record in [*prefixed_items(state.extra, "ppa/"), *prefixed_items(state.extra, "ppa_offer/")]:
            if not isinstance(record, (OfferRecord, AgreementRecord)):
                continue
            if ledger.me in (record.terms.seller, record.terms.buyer) and record.ppa_id not in self._stored:
                self.store_text(record.terms)
                stored += 1
        return stored

    def due_expiries(self, now_ms: int) -> list[PpaExpire]:
        """The ``ppa_expire`` this account owes: agreements it is a party to that have ended by
        ``now_ms`` (market time) and that it has not closed yet."""
        ledger = self._ledger()
        state, me = ledger.state, ledger.me
        due = []
        for _, record in prefixed_items(state.extra, "ppa/"):
            if not isinstance(record, AgreementRecord) or me not in (record.terms.seller, record.terms.buyer):
                continue
            if expired_key(record.ppa_id, me) in state.extra:
                continue
            ends = [(record.terms.end_slot, b"")]
            for party in (record.terms.seller, record.terms.buyer):
                termination = state.extra.get(termination_key(record.ppa_id, party))
                if isinstance(termination, TerminationRecord):
                    ends.append((termination.end_slot, party))
            end_slot, by = min(ends)
            if now_ms >= end_slot * MS_PER_S:
                due.append(PpaExpire(record.ppa_id, by))
        return due

    async def close_ended(self) -> int:
        """Sign the ``ppa_expire`` of every agreement of this account that has ended."""
        closed = 0
        for expire in self.due_expiries(self._ledger().clock()):
            try:
                await self._submit(PPA_EXPIRE_KIND, expire)
                closed += 1
            except LedgerError as exc:
                log.info("PPA %s not closed yet (%s); trying again", expire.ppa_id.hex()[:8], exc)
        return closed

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.ledger = node.ledger
        self.data_dir = node.config.node.data_dir
        task_status.started()
        while True:
            try:
                self.store_own_texts()
            except (OSError, EntryRejected) as exc:
                log.warning("could not store PPA texts: %s", exc)
            await self.close_ended()
            await trio.sleep(self.poll_s)


def ppa_services(config: NodeConfig) -> list[Any]:
    """Every node with a ledger keeps the texts of its agreements and can offer and accept."""
    return [PpaService()]
