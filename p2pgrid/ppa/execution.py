"""A PPA's execution: each slot of its term is a contract position, settled like a trade (pure).

For every slot ``S`` with ``start_slot <= S < ends_slot`` (the term's end, or the first slot a
certified termination ends it at) an accepted agreement has one **position**: a
``settlement.TradeRecord`` from seller to buyer that the zone's ``settle_slot`` settles together
with the slot's spot trades, against the same meter entries:

* **Quantity** (``position_wh``): baseload and profile positions are the contracted Wh of the
  slot. A pay-as-produced position is ``floor(share_ppm × export_wh / 10⁶)`` of the generator's
  (the seller's) metered export in its own certified meter entry of the slot; without that entry
  it is 0 — and a zero position is no position: nothing was produced, nothing is owed. Since the
  shares of a generator's exclusive agreements sum to at most 100 %, a pay-as-produced position
  is always delivered in full.
* **Price** (``slot_price``): the terms' price, or with an index ``floor(price × value /
  index_base)``, ``value`` being the reference's latest value the zone operator published at or
  before the slot (``PpaIndexMissing`` if there is none: the position cannot be priced yet).
* **The trade**: trade id ``ppa_trade_id(ppa_id) = ppa_id + b"/ppa"`` (36 bytes: never a
  lock's take id nor a swap's trade id), both zones the agreement's, ``green`` as in the terms,
  ``prepaid=False`` (settlement moves the value, reason ``ppa``: nothing moved when the contract
  was signed), ``priority`` 0 when the terms give the agreement priority over spot (the seller's
  export covers it before its spot sales; certificates move in that order too) else 1, and
  ``penalty_price`` = the terms' shortfall penalty (0 for ``imbalance``).

Everything else — who delivered what (pro rata within a priority group), shortfall at the zone's
shortfall price, surplus export, extra import and unused purchase, grid fees, green certificates —
is ``settle_slot``'s and ``certify_slot``'s rule, unchanged, so a PPA position and a spot trade of
the same Wh settle alike and money is conserved exactly.

``settle_slot_with_ppas`` is the whole rule for one slot: positions of the given agreements plus
the spot trades, settled together. It is a function of the *sets* of its inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from p2pgrid.errors import SettlementError
from p2pgrid.ppa.terms import PPM, PpaTerms, terms_hash
from p2pgrid.settlement.rules import MeterEntry, SlotSettlement, TradeRecord, ZoneTariffs, settle_slot

__all__ = [
    "PPA_TRADE_SUFFIX", "ActiveAgreement", "PpaIndexMissing", "position_of", "position_wh", "positions_for_slot",
    "ppa_id_of_trade", "ppa_trade_id", "settle_slot_with_ppas", "slot_price",
]

PPA_TRADE_SUFFIX = b"/ppa"
PPA_ID_SIZE = 32


class PpaIndexMissing(SettlementError):
    """An indexed position's reference has no published value at or before its slot."""


def ppa_trade_id(ppa_id: bytes) -> bytes:
    """The settlement trade id of agreement ``ppa_id``'s position (one per slot)."""
    return ppa_id + PPA_TRADE_SUFFIX


def ppa_id_of_trade(trade_id: bytes) -> bytes | None:
    """The agreement id inside a position's trade id; None for any other trade."""
    if len(trade_id) == PPA_ID_SIZE + len(PPA_TRADE_SUFFIX) and trade_id.endswith(PPA_TRADE_SUFFIX):
        return trade_id[:PPA_ID_SIZE]
    return None


@dataclass(frozen=True)
class ActiveAgreement:
    """An accepted agreement as settlement needs it: its terms, its id and the slot it ends at
    (``terms.end_slot``, or earlier by a termination)."""

    terms: PpaTerms
    ppa_id: bytes
    ends_slot: int

    @classmethod
    def of(cls, terms: PpaTerms, ends_slot: int | None = None) -> ActiveAgreement:
        return cls(terms, terms_hash(terms), terms.end_slot if ends_slot is None else min(ends_slot, terms.end_slot))

    def covers(self, slot: int) -> bool:
        return self.terms.start_slot <= slot < self.ends_slot


def slot_price(terms: PpaTerms, index_value: int | None) -> int:
    """µc/kWh of a position (module docstring); ``index_value`` is ignored for a fixed price."""
    if not terms.index_name:
        return terms.price_uc_per_kwh
    if index_value is None:
        raise PpaIndexMissing(f"no published value of index {terms.index_name!r} at or before the slot")
    return terms.price_uc_per_kwh * index_value // terms.index_base


def position_wh(terms: PpaTerms, slot: int, meters: Mapping[bytes, MeterEntry]) -> int:
    """Wh of the position in ``slot`` (module docstring): contracted, or the share of the
    generator's metered export (0 without its meter entry)."""
    contracted = terms.contracted_wh(slot)
    if contracted is not None:
        return contracted
    meter = meters.get(terms.generator)
    return meter.export_wh * terms.share_ppm // PPM if meter is not None else 0


def position_of(agreement: ActiveAgreement, slot: int, meters: Mapping[bytes, MeterEntry],
                index_values: Mapping[str, int]) -> TradeRecord | None:
    """The agreement's position in ``slot`` as a trade, or None (outside the term, or 0 Wh)."""
    terms = agreement.terms
    if not agreement.covers(slot):
        return None
    qty = position_wh(terms, slot, meters)
    if qty <= 0:
        return None
    return TradeRecord(trade_id=ppa_trade_id(agreement.ppa_id), slot=slot, seller=terms.seller, buyer=terms.buyer,
                       seller_zone=terms.zone, buyer_zone=terms.zone, qty_wh=qty,
                       price=slot_price(terms, index_values.get(terms.index_name)), green=terms.green,
                       priority=0 if terms.priority_over_spot else 1, prepaid=False,
                       penalty_price=terms.penalty_uc_per_kwh)


def positions_for_slot(agreements: Iterable[ActiveAgreement], slot: int, meter_entries: Iterable[MeterEntry],
                       index_values: Mapping[str, int]) -> list[TradeRecord]:
    """Every position of ``agreements`` in ``slot``, by trade id."""
    meters = {m.account: m for m in meter_entries if m.slot == slot}
    found = (position_of(a, slot, meters, index_values) for a in agreements)
    return sorted((p for p in found if p is not None), key=lambda p: p.trade_id)


def settle_slot_with_ppas(slot: int, trades: Iterable[TradeRecord], meter_entries: Iterable[MeterEntry],
                          agreements: Iterable[ActiveAgreement], index_values: Mapping[str, int],
                          tariffs: ZoneTariffs) -> SlotSettlement:
    """Settle ``slot``: the agreements' positions and the spot ``trades`` against the meters."""
    meters = list(meter_entries)
    positions = positions_for_slot(agreements, slot, meters, index_values)
    return settle_slot(slot, [*trades, *positions], meters, tariffs)
