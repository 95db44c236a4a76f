"""Books and gossip validation across zones: a node keeps its neighbours' books beside its own,
and still ignores (books) or rejects (gossip) every other zone."""

import os

from p2pgrid.identity import NodeKey
from p2pgrid.net.transport import ValidationResult
from p2pgrid.net.validation import OrderBatchValidator, OrderRules, Reason
from p2pgrid.trading.local_books import LocalBooks
from p2pgrid.units import SlotRules
from p2pgrid.wire import Cancel, Order, OrderBatch, Side, Source, encode, sign

RULES = SlotRules(length_s=900, horizon_s=3600, gate_s=300)
NOW = 1_000 * 900 * 1000
SLOT = 900_000 + 900
ALICE, BOB = NodeKey(b"a" * 32), NodeKey(b"b" * 32)


def order(zone, price=200_000, side=Side.SELL, key=ALICE):
    return sign(Order(order_id=os.urandom(16), owner=key.public_key, side=side, zone=zone, slot=SLOT, qty_wh=1000,
                      limit_price=price, green=False, source=Source.GRID, created_ms=NOW,
                      expiry_ms=(SLOT - 300) * 1000, nonce=0), key)


def test_neighbour_orders_rest_in_their_own_zone_book_and_others_are_ignored():
    books = LocalBooks("a", RULES, neighbours=["b"])
    home, neighbour, stranger = order("a"), order("b", 150_000), order("c")
    changes = [books.on_order(s, NOW) for s in (home, neighbour, stranger)]
    assert [(c.change, c.zone) for c in changes] == [("added", "a"), ("added", "b"), ("ignored", "")]
    assert books.on_order(stranger, NOW).detail == "other zone"
    assert [r.price for r in books.resting(SLOT, Side.BUY, BOB.public_key, NOW)] == [200_000]
    by_zone = books.resting_by_zone(SLOT, Side.BUY, BOB.public_key, NOW)
    assert {zone: [r.price for r in rs] for zone, rs in by_zone.items()} == {"a": [200_000], "b": [150_000]}
    assert books.remaining(neighbour.body.order_id) == 1000 and books.remaining(stranger.body.order_id) == 0
    assert books.slots("b") == [SLOT] and books.slots("c") == []

    assert books.on_consumed(neighbour.body.order_id, 400).change == "filled"
    assert books.book(SLOT, "b").best_ask() == 150_000 and books.remaining(neighbour.body.order_id) == 600
    cancel = sign(Cancel(neighbour.body.order_id, ALICE.public_key, "b", SLOT, NOW), ALICE)
    assert books.on_cancel(cancel).change == "cancelled" and len(books.book(SLOT, "b")) == 0

    assert books.tick(RULES.gate_closure_ms(SLOT)) == [SLOT]
    assert len(books) == 0 and books.slots("a") == [] and books.slots("b") == []


def test_a_neighbour_topic_accepts_its_zone_and_rejects_any_other():
    validator = OrderBatchValidator(OrderRules("b", RULES))
    good = encode(OrderBatch("b", NOW, (order("b").encoded,)))
    wrong_item = encode(OrderBatch("b", NOW, (order("c").encoded,)))
    wrong_batch = encode(OrderBatch("c", NOW, (order("c").encoded,)))
    assert validator.validate(good, ALICE.public_key, NOW).result is ValidationResult.ACCEPT
    for data in (wrong_item, wrong_batch):
        verdict = validator.validate(data, ALICE.public_key, NOW)
        assert (verdict.result, verdict.reason) == (ValidationResult.REJECT, Reason.WRONG_ZONE)
