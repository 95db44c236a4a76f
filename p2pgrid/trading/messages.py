"""Messages of the take protocol ``/p2pgrid/take/1`` (one signing path: ``p2pgrid.wire``).

A **take** is a taker's signed request to trade ``qty_wh`` of a maker's resting order at the
order's price. Its answer is the maker's signed ``TakeAnswer``:

=============  ===============================================================================
``filled``     taker bought from an offer: the maker certified a fill entry consuming the
               taker's certified lock; ``certificate`` is that entry's certificate.
``locked``     taker sells to a bid: the maker (buyer) certified a lock for the taker; the taker
               now certifies the fill itself. ``certificate`` is the lock's certificate.
``refused``    nothing happened; ``reason`` says why (see ``RefuseReason``), ``available_wh``
               what the maker could still trade, so the taker can re-route at once.
=============  ===============================================================================

``certificate`` may be empty in a ``filled``/``locked`` answer: when an entry that was in doubt got
certified by the ledger on its own (while another entry of the maker's was submitted), the maker
knows it is final but does not hold its certificate; the taker finds it in its ledger replica.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, Side, message

TAKE_PROTOCOL = "/p2pgrid/take/1"
MAX_TAKE_BYTES = 32 * 1024


class AnswerStatus(str, enum.Enum):
    FILLED = "filled"
    LOCKED = "locked"
    REFUSED = "refused"


class RefuseReason(str, enum.Enum):
    UNKNOWN_ORDER = "unknown_order"
    NOT_OWNER = "not_owner"
    WRONG_ZONE = "wrong_zone"
    WRONG_SLOT = "wrong_slot"
    GATE_CLOSED = "gate_closed"
    PRICE_MISMATCH = "price_mismatch"
    WRONG_SIDE = "wrong_side"
    INSUFFICIENT_REMAINING = "insufficient_remaining"
    BAD_LOCK = "bad_lock"
    NOT_CERTIFIED = "not_certified"
    MALFORMED = "malformed"
    ZONE_NOT_TRADED = "zone_not_traded"    # the maker has no grid fee for the taker's zone
    WRONG_LEDGER = "wrong_ledger"          # taker and maker are certified by different committees


@message("p2pgrid/take", 1, max_bytes=MAX_TAKE_BYTES, signer_field="taker")
@dataclass(frozen=True)
class Take:
    """``taker`` asks ``maker`` to trade ``qty_wh`` of ``order_id`` at ``price`` (the order's).

    ``side`` is the taker's side. Before a BUY take the taker has certified a lock with the same
    ``take_id`` in its own chain (the maker finds it in the replicated ledger, or pulls the
    taker's chain with ``/p2pgrid/sync/1``); for a SELL take the maker locks.

    Across zones (``market.locality``): ``taker_zone`` is the taker's home zone (empty = the
    order's zone) and ``ledger`` the taker's ledger domain (empty = not stated). The maker refuses
    a zone it has no grid fee for (``zone_not_traded``) and another ledger domain
    (``wrong_ledger``). ``price`` is the order's price for a BUY take and ``bid − fee`` for a SELL
    take into a neighbour zone's bid (``locality.taker_price``).
    """

    take_id: bytes = field(metadata={"size": 16})
    taker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    maker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    order_id: bytes = field(metadata={"size": 16})
    side: Side
    zone: str = field(metadata={"pattern": ZONE_PATTERN})
    slot: int = field(metadata={"min": 0})
    qty_wh: int = field(metadata={"min": 1})
    price: int = field(metadata={"min": 0})
    sent_ms: int = field(metadata={"min": 0})
    taker_zone: str = field(default="", metadata={"pattern": f"(|{ZONE_PATTERN})"})
    ledger: str = field(default="", metadata={"pattern": f"(|{ZONE_PATTERN})"})


@message("p2pgrid/take-answer", 1, max_bytes=MAX_TAKE_BYTES, signer_field="maker")
@dataclass(frozen=True)
class TakeAnswer:
    take_id: bytes = field(metadata={"size": 16})
    maker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    status: AnswerStatus
    qty_wh: int = field(metadata={"min": 0})
    available_wh: int = field(metadata={"min": 0})
    reason: str = field(metadata={"max_len": 200})
    certificate: bytes = field(metadata={"max_len": MAX_TAKE_BYTES})
