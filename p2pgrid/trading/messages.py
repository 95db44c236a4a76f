"""Messages of the take protocol ``/p2pgrid/take/2`` (one signing path: ``p2pgrid.wire``).

A **take** is a taker's signed request to trade ``qty_wh`` of a maker's resting order at the
order's price. The maker acts first, so a maker that never answers costs the taker nothing:

* a taker that **buys** from an offer sends ``Take``; the maker reserves the quantity for a
  bounded time and answers ``reserved`` (``hold_ms``). Only then does the taker certify the lock
  of its credits, and sends ``TakeConfirm`` on the same stream; the maker fills the lock and
  answers ``filled`` — or refuses and hands the lock back at once (``decline``).
* a taker that **sells** into a bid sends ``Take``; the maker locks its own credits and answers
  ``locked``; the taker then certifies the fill itself.

Each request frame gets the maker's signed ``TakeAnswer``:

=============  ===============================================================================
``reserved``   (to a buy ``Take``) the quantity is held for the taker for ``hold_ms`` of the
               maker's real time; nothing is certified yet.
``filled``     (to a ``TakeConfirm``) the maker certified a fill entry consuming the taker's
               certified lock; ``certificate`` is that entry's certificate.
``locked``     (to a sell ``Take``) the maker (buyer) certified a lock for the taker; the taker
               now certifies the fill itself. ``certificate`` is the lock's certificate.
``refused``    nothing was traded; ``reason`` says why (see ``RefuseReason``), ``available_wh``
               what the maker could still trade, so the taker can re-route at once. A refused
               ``TakeConfirm`` whose lock the maker handed back says so: ``reason`` ends with
               ``LOCK_RELEASED``.
=============  ===============================================================================

``certificate`` may be empty in a ``filled``/``locked`` answer: when an entry that was in doubt got
certified by the ledger on its own (while another entry of the maker's was submitted), the maker
knows it is final but does not hold its certificate; the taker finds it in its ledger replica.

Version 1 (``/p2pgrid/take/1``, ``Take`` v1, ``TakeAnswer`` v1) had the buyer lock before it
asked; it is not served any more (a v1 take is refused by the stream negotiation).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from p2pgrid.wire import PUBLIC_KEY_SIZE, ZONE_PATTERN, Side, message

TAKE_PROTOCOL = "/p2pgrid/take/2"
MAX_TAKE_BYTES = 32 * 1024
LOCK_RELEASED = "; lock released"      # ends the reason of a refusal whose lock the maker declined


class AnswerStatus(str, enum.Enum):
    RESERVED = "reserved"
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
    DUPLICATE = "duplicate"                # this take id is already reserved or being filled
    NOT_RESERVED = "not_reserved"          # a confirm for no live reservation of this taker (never made, or lapsed)
    LAPSED_HOLDS = "lapsed_holds"          # this taker let reservations lapse lately: it is refused for a while


@message("p2pgrid/take", 2, max_bytes=MAX_TAKE_BYTES, signer_field="taker")
@dataclass(frozen=True)
class Take:
    """``taker`` asks ``maker`` to trade ``qty_wh`` of ``order_id`` at ``price`` (the order's).

    ``side`` is the taker's side. For a BUY take nothing is locked yet: the maker reserves and
    answers ``reserved``; the taker then certifies a lock with the same ``take_id`` and sends a
    ``TakeConfirm``. For a SELL take the maker locks and answers ``locked``.

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


@message("p2pgrid/take-confirm", 1, max_bytes=MAX_TAKE_BYTES, signer_field="taker")
@dataclass(frozen=True)
class TakeConfirm:
    """The buyer of a ``reserved`` take says its lock ``take_id`` is certified: fill it."""

    take_id: bytes = field(metadata={"size": 16})
    taker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    maker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    order_id: bytes = field(metadata={"size": 16})
    sent_ms: int = field(metadata={"min": 0})


@message("p2pgrid/take-answer", 2, max_bytes=MAX_TAKE_BYTES, signer_field="maker")
@dataclass(frozen=True)
class TakeAnswer:
    take_id: bytes = field(metadata={"size": 16})
    maker: bytes = field(metadata={"size": PUBLIC_KEY_SIZE})
    status: AnswerStatus
    qty_wh: int = field(metadata={"min": 0})
    available_wh: int = field(metadata={"min": 0})
    reason: str = field(metadata={"max_len": 200})
    certificate: bytes = field(metadata={"max_len": MAX_TAKE_BYTES})
    hold_ms: int = field(default=0, metadata={"min": 0})   # ``reserved``: ms (maker's real time) the hold lasts
