import os

from hypothesis import given, settings, strategies as st

from p2pgrid.identity import NodeKey
from p2pgrid.trading.local_books import LocalBooks
from p2pgrid.units import SlotRules
from p2pgrid.wire import Cancel, Order, Side, Source, sign

RULES = SlotRules(length_s=900, horizon_s=3600, gate_s=300)
NOW = 1_000 * 900 * 1000          # start of slot 900_000
SLOT = 900_000 + 900              # next slot: gate closes at 900_600 s
ALICE, BOB = NodeKey(b"a" * 32), NodeKey(b"b" * 32)


def offer(key=ALICE, qty=1000, price=200_000, slot=SLOT, side=Side.SELL, order_id=None, zone="z1", expiry=None):
    return sign(Order(order_id=order_id or os.urandom(16), owner=key.public_key, side=side, zone=zone, slot=slot,
                      qty_wh=qty, limit_price=price, green=False, source=Source.BATTERY if side is Side.SELL else Source.NONE,
                      created_ms=NOW, expiry_ms=expiry or (slot - 300) * 1000, nonce=0), key)


def cancel_of(signed, key=ALICE):
    o = signed.body
    return sign(Cancel(order_id=o.order_id, owner=key.public_key, zone=o.zone, slot=o.slot, created_ms=NOW), key)


def test_order_rests_in_its_slot_and_is_takeable():
    books = LocalBooks("z1", RULES)
    signed = offer()
    assert books.on_order(signed, NOW).change == "added"
    assert books.remaining(signed.body.order_id) == 1000
    resting = books.resting(SLOT, Side.BUY, BOB.public_key, NOW)
    assert [(r.order_id, r.qty_wh) for r in resting] == [(signed.body.order_id, 1000)]
    assert books.signed_order(signed.body.order_id) == signed


def test_wrong_zone_closed_slot_and_duplicates_are_ignored():
    books = LocalBooks("z1", RULES)
    assert books.on_order(offer(zone="z2"), NOW).detail == "other zone"
    assert books.on_order(offer(slot=900_000, expiry=NOW + 1), NOW).detail == "slot not open"
    signed = offer()
    books.on_order(signed, NOW)
    assert books.on_order(signed, NOW).detail == "duplicate"
    shadow = offer(key=BOB, order_id=signed.body.order_id)
    assert books.on_order(shadow, NOW).detail == "order id already used"
    assert books.remaining(signed.body.order_id) == 1000 and len(books) == 1


def test_cancel_by_owner_only_and_cancel_before_order():
    books = LocalBooks("z1", RULES)
    signed = offer()
    books.on_order(signed, NOW)
    forged = sign(Cancel(order_id=signed.body.order_id, owner=BOB.public_key, zone="z1", slot=SLOT, created_ms=NOW), BOB)
    assert books.on_cancel(forged).detail == "not the owner"
    assert books.on_cancel(cancel_of(signed)).change == "cancelled"
    assert books.remaining(signed.body.order_id) == 0
    late = offer()
    books.on_cancel(cancel_of(late))
    assert books.on_order(late, NOW).detail == "cancelled before it arrived"


def test_a_cancel_by_someone_else_arriving_first_does_not_hide_the_order():
    books = LocalBooks("z1", RULES)
    signed = offer()
    forged = sign(Cancel(order_id=signed.body.order_id, owner=BOB.public_key, zone="z1", slot=SLOT, created_ms=NOW), BOB)
    books.on_cancel(forged)
    assert books.on_order(signed, NOW).change == "added"
    assert books.remaining(signed.body.order_id) == 1000


def test_consumption_reduces_idempotently_and_never_grows_back():
    books = LocalBooks("z1", RULES)
    signed = offer(qty=1000)
    oid = signed.body.order_id
    books.on_order(signed, NOW)
    books.on_consumed(oid, 300)
    books.on_consumed(oid, 300)   # the same certified fill learned twice
    assert books.remaining(oid) == 700
    books.on_consumed(oid, 100)   # an older, smaller total arriving late
    assert books.remaining(oid) == 700
    books.on_consumed(oid, 1000)
    assert books.remaining(oid) == 0 and books.signed_order(oid) is None


def test_gate_closure_closes_the_slot_and_expiry_removes_orders():
    books = LocalBooks("z1", RULES)
    short = offer(expiry=NOW + 10_000)
    books.on_order(short, NOW)
    books.on_order(offer(), NOW)
    assert books.tick(NOW + 10_000) == []
    assert books.remaining(short.body.order_id) == 0 and len(books) == 1
    assert books.tick(RULES.gate_closure_ms(SLOT)) == [SLOT]
    assert len(books) == 0 and books.slots() == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["order", "cancel", "consumed"]), st.integers(0, 5), st.integers(0, 1500)),
                max_size=40))
def test_remaining_never_negative_nor_above_size(script):
    books = LocalBooks("z1", RULES)
    signed = [offer(qty=1000, order_id=bytes([i]) * 16) for i in range(6)]
    for action, i, qty in script:
        if action == "order":
            books.on_order(signed[i], NOW)
        elif action == "cancel":
            books.on_cancel(cancel_of(signed[i]))
        else:
            books.on_consumed(signed[i].body.order_id, qty)
        for s in signed:
            assert 0 <= books.remaining(s.body.order_id) <= s.body.qty_wh
