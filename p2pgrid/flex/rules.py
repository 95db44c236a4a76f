"""Flexibility markets as arithmetic on integers: merit-order awards, delivered flexibility and
what each node is paid or charged (pure; the ledger kinds in ``flex.entries`` call these).

Directions. A request asks the feeder's net load to move one way:

* ``DOWN`` — *less import / more export*: the node's net import falls below its baseline
  (a winter-evening import limit). Delivered = baseline − metered.
* ``UP`` — *more import / less export*: its net import rises above its baseline (a sunny-noon
  export limit). Delivered = metered − baseline.

Delivered flexibility is never negative (a node that moved the wrong way delivered nothing; the
penalty covers it). A slot without a certified meter reading delivered nothing.

Award. Offers are sorted by ``(price, time_ms, account)`` — cheapest first, then the earlier
offer, then the account bytes, a total order every validator computes alike — and each slot's
requested Wh are handed out down that order, the marginal offer partly (offers are divisible).
Pay as bid: an awarded offer is paid its own price.

Settlement of one awarded offer over its slots: ``paid_wh = Σ min(delivered, awarded)``,
``short_wh = Σ awarded − paid_wh``; ``payment = trade_value(paid_wh, price)``, ``penalty =
trade_value(short_wh, penalty_price)`` (µc/kWh, floored, like every trade), net = payment −
penalty, moved between the requester and the node. A node is never paid for more than it was
awarded nor more than it delivered; each offer settles on its own, so the result does not depend
on the order offers or readings are looked at, and the requester's debit is exactly the sum of
the nodes' credits (money is conserved).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from p2pgrid.units import trade_value
from p2pgrid.wire import struct

__all__ = [
    "Direction", "OfferTerms", "OfferSettlement", "delivered_wh", "merit_order", "net_import_wh", "settle_offer",
]


class Direction(str, enum.Enum):
    DOWN = "down"   # less import / more export
    UP = "up"       # more import / less export


def net_import_wh(import_wh: int, export_wh: int) -> int:
    """What the feeder sees of a node in one slot: import minus export (Wh, may be negative)."""
    return import_wh - export_wh


def delivered_wh(direction: Direction, baseline_wh: int, metered_net_import_wh: int | None) -> int:
    """Flexibility delivered in one slot (≥ 0); 0 without a reading."""
    if metered_net_import_wh is None:
        return 0
    moved = baseline_wh - metered_net_import_wh if direction is Direction.DOWN else metered_net_import_wh - baseline_wh
    return max(0, moved)


@dataclass(frozen=True)
class OfferTerms:
    """What merit order needs of an offer: who, at what price, when, and Wh per slot."""

    account: bytes
    price: int
    time_ms: int
    qty_wh: tuple[int, ...]


def merit_order(requested_wh: int, offers: Iterable[OfferTerms]) -> dict[bytes, tuple[int, ...]]:
    """Wh awarded per slot to each offer with an award (module docstring); ``requested_wh`` per slot."""
    ranked = sorted(offers, key=lambda o: (o.price, o.time_ms, o.account))
    if not ranked:
        return {}
    n_slots = len(ranked[0].qty_wh)
    remaining = [requested_wh] * n_slots
    awarded: dict[bytes, tuple[int, ...]] = {}
    for offer in ranked:
        if len(offer.qty_wh) != n_slots:
            raise ValueError("offers of one request cover the same slots")
        line = []
        for i, qty in enumerate(offer.qty_wh):
            take = min(qty, remaining[i])
            remaining[i] -= take
            line.append(take)
        if any(line):
            awarded[offer.account] = tuple(line)
    return awarded


@struct
@dataclass(frozen=True)
class OfferSettlement:
    """One awarded offer, settled: Wh awarded, delivered (uncapped), paid and short; µc paid and
    charged; net to the node. A wire structure: the ledger keeps it in its settlement records."""

    awarded_wh: int
    delivered_wh: int
    paid_wh: int
    short_wh: int
    payment_uc: int
    penalty_uc: int

    @property
    def net_uc(self) -> int:
        return self.payment_uc - self.penalty_uc


def settle_offer(direction: Direction, awarded_wh: Sequence[int], baseline_wh: Sequence[int],
                 metered_net_import_wh: Sequence[int | None], price: int, penalty_price: int) -> OfferSettlement:
    """Settle one awarded offer slot by slot (module docstring). Sequences are per slot."""
    if not len(awarded_wh) == len(baseline_wh) == len(metered_net_import_wh):
        raise ValueError("awards, baselines and readings cover the same slots")
    delivered = [delivered_wh(direction, b, m) for b, m in zip(baseline_wh, metered_net_import_wh)]
    paid = sum(min(d, a) for d, a in zip(delivered, awarded_wh))
    short = sum(awarded_wh) - paid
    return OfferSettlement(sum(awarded_wh), sum(delivered), paid, short,
                           trade_value(paid, price), trade_value(short, penalty_price))
