"""``settle_ppa``: the settlement of a slot with PPA positions in it (pure).

Importing this module registers the kind and its planner with ``settlement.entries``. A slot in
the term of an accepted agreement is settled by a ``settle_ppa`` entry instead of a ``settle``:
the same rules (``settlement.entries``: gateway's chain only, dated after the slot's metering
deadline, exactly the result over the inputs it names, a reconciliation naming the union and
posting only the difference), with the agreements' positions (``ppa.execution``) settled together
with the slot's trades and swaps against the same meter entries — the PPA positions first, when
their terms give them priority over spot.

Body ``PpaSettleBody(settle, ppas, ends)``: ``settle`` a ``SettleBody``; ``ppas`` the agreement
ids whose positions it settles; ``ends`` the terminations it applies, each ``ppa_id ‖ party``
(64 bytes) — both sorted, no repeats. Rules, on top of ``settle``'s:

* ``ppas`` is not empty (a slot without agreements is settled by ``settle``), every ``ends`` item
  terminates one of the ``ppas`` (``bad_body``);
* every named agreement and termination is certified here, else ``missing_dependency`` (waiting);
  a named agreement whose term does not include the slot is ``bad_body``;
* an agreement's positions end at the earliest ``end_slot`` of its named terminations (certified
  terminations a body does not name are irrelevant to its validity, as for every input);
* an indexed price uses the latest reference value the gateway's own chain published at or before
  the slot (all of them precede any settlement of the slot: ``ppa_index`` is published in
  advance); none is ``bad_body``.

The agreements and terminations named are **contracts** of the slot (``SlotInputs.contracts``),
stored under ``settle_contracts/<slot>``: a later settlement of the slot must name them again, so
a plain ``settle`` can never undo a slot's PPA positions. The gateway's planner names every
certified agreement whose term includes the slot and every certified termination of those; an
agreement or termination certified after its slot was settled is not reconciled automatically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from p2pgrid.ledger.chain import EntryRejected, KindRules, LedgerRules, LedgerState, RejectReason, register_kind
from p2pgrid.ledger.messages import Entry
from p2pgrid.ppa.entries import TerminationRecord, agreement_of, agreements, index_value_at, terminations_of
from p2pgrid.ppa.execution import ActiveAgreement, positions_for_slot
from p2pgrid.settlement.entries import (
    SETTLE_KINDS, SETTLE_PLANNERS, PositionsOf, SettleBody, SlotInputs, apply_settle, compute_settlement,
    contracts_key, judge_settle, settle_inputs_ready,
)
from p2pgrid.settlement.rules import MeterEntry, TradeRecord
from p2pgrid.wire import struct

__all__ = ["SETTLE_PPA_KIND", "PpaSettleBody", "plan_ppa_settlement"]

SETTLE_PPA_KIND = "settle_ppa"
MAX_SETTLE_PPAS = 64
PPA_ID_SIZE = 32
END_REF_SIZE = 64


@struct
@dataclass(frozen=True)
class PpaSettleBody:
    settle: SettleBody
    ppas: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_PPAS})
    ends: tuple[bytes, ...] = field(metadata={"max_len": MAX_SETTLE_PPAS})

    @property
    def settle_body(self) -> SettleBody:
        return self.settle

    @property
    def contract_names(self) -> frozenset[bytes]:
        return frozenset(self.ppas) | frozenset(self.ends)


def _bad(detail: str) -> EntryRejected:
    return EntryRejected(RejectReason.BAD_BODY, detail)


def _check_lists(body: PpaSettleBody) -> None:
    if not body.ppas:
        raise _bad("a settle_ppa names at least one agreement (a slot without any is settled by settle)")
    for name, items, size in (("ppas", body.ppas, PPA_ID_SIZE), ("ends", body.ends, END_REF_SIZE)):
        if any(len(item) != size for item in items) or any(a >= b for a, b in zip(items, items[1:])):
            raise _bad(f"{name} are {size}-byte items, sorted without repeats")
    if any(ref[:PPA_ID_SIZE] not in body.ppas for ref in body.ends):
        raise _bad("a named termination ends an agreement the body does not name")


def named_agreements(state: LedgerState, slot: int, ppas: tuple[bytes, ...],
                     ends: tuple[bytes, ...]) -> list[ActiveAgreement]:
    """The named agreements with the ends their named terminations give them (rules above)."""
    missing: list[str] = []
    found = []
    for ppa_id in ppas:
        agreement = agreement_of(state, ppa_id)
        if agreement is None:
            missing.append(f"agreement {ppa_id.hex()[:12]}…")
        elif not agreement.terms.covers(slot):
            raise _bad(f"agreement {ppa_id.hex()[:12]}… does not cover slot {slot}")
        else:
            found.append(agreement)
    ends_of: dict[bytes, int] = {}
    for ref in ends:
        ppa_id, party = ref[:PPA_ID_SIZE], ref[PPA_ID_SIZE:]
        termination = next((t for t in terminations_of(state, ppa_id) if t.party == party), None)
        if not isinstance(termination, TerminationRecord):
            missing.append(f"termination of {ppa_id.hex()[:12]}… by {party.hex()[:12]}…")
            continue
        ends_of[ppa_id] = min(ends_of.get(ppa_id, termination.end_slot), termination.end_slot)
    if missing:
        raise EntryRejected(RejectReason.MISSING_DEPENDENCY,
                            f"{len(missing)} named contract(s) not certified here (yet): {', '.join(missing[:3])}")
    return [ActiveAgreement(a.terms, a.ppa_id, min(a.terms.end_slot, ends_of.get(a.ppa_id, a.terms.end_slot)))
            for a in found]


def positions_of(state: LedgerState, slot: int, ppas: tuple[bytes, ...], ends: tuple[bytes, ...]) -> PositionsOf:
    """The positions of the named agreements in ``slot``, given the slot's named meter entries
    (resolved when called: after the settle's own checks, so nothing final hides behind a wait)."""
    def positions(meters: list[MeterEntry]) -> list[TradeRecord]:
        active = named_agreements(state, slot, ppas, ends)
        index_values = {}
        for agreement in active:
            name = agreement.terms.index_name
            value = index_value_at(state, name, slot) if name else None
            if value is not None:
                index_values[name] = value
        return positions_for_slot(active, slot, meters, index_values)
    return positions


def validate_settle_ppa(state: LedgerState, entry: Entry, body: PpaSettleBody, rules: LedgerRules) -> None:
    _check_lists(body)
    judge_settle(state, entry, body, rules, positions_of(state, body.settle.slot, body.ppas, body.ends))


def process_settle_ppa(state: LedgerState, entry: Entry, body: PpaSettleBody, rules: LedgerRules) -> None:
    apply_settle(state, entry, body, rules, positions_of(state, body.settle.slot, body.ppas, body.ends))


def _ready(state: LedgerState, entry: Entry, body: PpaSettleBody) -> bool:
    if not settle_inputs_ready(state, body.settle):
        return False
    try:
        named_agreements(state, body.settle.slot, body.ppas, body.ends)
    except EntryRejected as exc:
        return exc.reason is not RejectReason.MISSING_DEPENDENCY
    return True


def plan_ppa_settlement(state: LedgerState, rules: LedgerRules, slot: int,
                        inputs: SlotInputs) -> tuple[str, Any] | None:
    """The gateway's ``settle_ppa`` for ``slot`` (the planner above), or None without agreements."""
    stored = state.extra.get(contracts_key(slot), frozenset())
    ppas = {a.ppa_id for a in agreements(state) if a.terms.covers(slot)}
    ppas |= {name for name in stored if len(name) == PPA_ID_SIZE}
    if not ppas:
        return None
    ends = {name for name in stored if len(name) == END_REF_SIZE}
    ends |= {t.ppa_id + t.party for ppa_id in ppas for t in terminations_of(state, ppa_id)}
    ppa_list, end_list = tuple(sorted(ppas)), tuple(sorted(ends))
    contracts = SlotInputs(contracts=frozenset(ppas) | frozenset(ends))
    settle, _ = compute_settlement(state, rules, slot, inputs | contracts, positions_of(state, slot, ppa_list, end_list))
    return SETTLE_PPA_KIND, PpaSettleBody(settle, ppa_list, end_list)


register_kind(KindRules(SETTLE_PPA_KIND, PpaSettleBody, validate_settle_ppa, process_settle_ppa, is_ready=_ready))
SETTLE_KINDS.add(SETTLE_PPA_KIND)
SETTLE_PLANNERS.append(plan_ppa_settlement)
