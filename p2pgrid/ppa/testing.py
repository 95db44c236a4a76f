"""Terms for tests and simulations: a filled template with sensible defaults (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from p2pgrid.ledger.chain import process_entry
from p2pgrid.ppa.terms import TEMPLATE_ID, PpaTerms, Shape, Shortfall

__all__ = ["InstantLedger", "make_terms"]

DAY_S = 86400


def make_terms(seller: bytes, buyer: bytes, *, zone: str = "z1", start_slot: int = 1_798_761_600,
               days: int = 1, shape: Shape = Shape.BASELOAD, **changes: Any) -> PpaTerms:
    """Terms of ``shape`` between ``seller`` and ``buyer`` for ``days`` days from ``start_slot`` at
    0.12 credits/kWh; pay-as-produced takes 25 % of the seller's export, baseload 500 Wh a slot,
    a profile 500 Wh in the slots from 08:00 to 18:00 UTC. ``changes`` replace any field."""
    shaped: dict[str, Any] = {"generator": b"", "share_ppm": 0, "exclusive": False, "baseload_wh": 0,
                              "profile_wh": ()}
    if shape is Shape.PAY_AS_PRODUCED:
        shaped.update(generator=seller, share_ppm=250_000, exclusive=True)
    elif shape is Shape.BASELOAD:
        shaped.update(baseload_wh=500)
    else:
        shaped.update(profile_wh=tuple(500 if 32 <= i < 72 else 0 for i in range(96)))
    terms = PpaTerms(
        template=TEMPLATE_ID, name="Test agreement", seller=seller, buyer=buyer, zone=zone, slot_length_s=900,
        start_slot=start_slot, end_slot=start_slot + days * DAY_S, shape=shape, **shaped, price_uc_per_kwh=120_000,
        index_name="", index_base=0, green=True, priority_over_spot=True, shortfall=Shortfall.IMBALANCE,
        penalty_uc_per_kwh=0, notice_s=DAY_S, termination_penalty_uc=5_000_000)
    return replace(terms, **changes) if changes else terms


class InstantLedger:
    """A node's ledger for tests of the PPA shells: ``submit`` judges an entry with the ledger's
    rules and applies it at once (no committee, no network); the zone's gateway mints by
    ``fund``. It offers what ``PpaService`` reads: ``state``, ``rules``, ``me``, ``head()``,
    ``clock()``, ``next_entry`` and ``submit``."""

    def __init__(self, fixture: Any, key: Any, state: Any, clock: Any) -> None:
        self.fixture, self.key, self.state, self._clock = fixture, key, state, clock
        self.me = key.public_key
        self.rules = fixture.rules

    def clock(self) -> int:
        return int(self._clock())

    def head(self, account: bytes | None = None) -> Any:
        return self.state.head(account or self.me)

    def next_entry(self, kind: str, body: Any) -> Any:
        return self.fixture.entry_on(self.state, self.key, kind, body, self.clock())

    async def submit(self, entry: Any) -> None:
        process_entry(self.state, entry, self.rules)
