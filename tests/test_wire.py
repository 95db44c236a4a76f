import dataclasses
import os

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.errors import DecodeError, OversizeError, SignatureError, UnknownVersionError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.testing.strategies import cancels, orders
from p2pgrid.wire import (
    Cancel, Order, OrderBatch, Side, Source, decode, decode_signed, encode, pack, sign, signing_bytes,
)

KEY = NodeKey(bytes(range(32)))
OTHER = NodeKey(bytes(range(1, 33)))


def an_order(**changes) -> Order:
    base = Order(order_id=b"\x01" * 16, owner=KEY.public_key, side=Side.SELL, zone="zone-a",
                 slot=900 * 1000, qty_wh=1500, limit_price=250_000, green=True, source=Source.PV,
                 created_ms=1_000, expiry_ms=2_000, nonce=7)
    return dataclasses.replace(base, **changes)


@settings(max_examples=200)
@given(orders(owner=KEY.public_key))
def test_signed_order_round_trips(order):
    signed = sign(order, KEY)
    decoded = decode_signed(signed.encoded, Order)
    assert decoded.body == order
    assert decoded.signer == KEY.public_key
    assert decoded.message_id == signed.message_id


@settings(max_examples=100)
@given(cancels(owner=KEY.public_key))
def test_signed_cancel_round_trips(cancel):
    assert decode_signed(sign(cancel, KEY).encoded, Cancel).body == cancel


@settings(max_examples=50)
@given(st.lists(orders(owner=KEY.public_key), max_size=8), st.integers(0, 2**50))
def test_order_batch_round_trips(batch_orders, sent_ms):
    batch = OrderBatch(zone="zone-a", sent_ms=sent_ms,
                       items=tuple(sign(o, KEY).encoded for o in batch_orders))
    assert decode(OrderBatch, encode(batch)) == batch


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_single_byte_change_fails(data):
    encoded = sign(an_order(), KEY).encoded
    position = data.draw(st.integers(0, len(encoded) - 1))
    delta = data.draw(st.integers(1, 255))
    tampered = bytearray(encoded)
    tampered[position] = (tampered[position] + delta) % 256
    with pytest.raises(WireError):
        decode_signed(bytes(tampered), Order)


def test_every_single_byte_change_fails_exhaustively_for_one_position_value():
    encoded = sign(an_order(), KEY).encoded
    for position in range(len(encoded)):
        tampered = bytearray(encoded)
        tampered[position] ^= 0x01
        with pytest.raises(WireError):
            decode_signed(bytes(tampered), Order)


def test_signature_for_one_domain_never_verifies_as_another():
    order = an_order()
    signed = sign(order, KEY)
    # Re-label the same body and signature as another version and as another kind.
    _, _, signer, body, signature = msgpack.unpackb(signed.encoded)
    with pytest.raises(UnknownVersionError):
        decode_signed(pack(["p2pgrid/order", 2, signer, body, signature]))
    cancel = Cancel(order_id=order.order_id, owner=KEY.public_key, zone="zone-a", slot=order.slot,
                    created_ms=5)
    cancel_signed = sign(cancel, KEY)
    _, _, signer, cancel_body, cancel_signature = msgpack.unpackb(cancel_signed.encoded)
    # A valid cancel signature attached to the same body under the order kind must fail.
    with pytest.raises(WireError):
        decode_signed(pack(["p2pgrid/order", 1, signer, cancel_body, cancel_signature]))
    # And the signed bytes themselves differ by the domain tag.
    assert signing_bytes("p2pgrid/order/v1", signer, body) != signing_bytes("p2pgrid/cancel/v1", signer, body)


def test_order_signed_by_someone_other_than_owner_is_refused():
    with pytest.raises(SignatureError):
        sign(an_order(), OTHER)
    forged_body = msgpack.unpackb(sign(an_order(owner=OTHER.public_key), OTHER).encoded)[3]
    # KEY signs a body whose owner is OTHER: refused on decode.
    signature = KEY.sign(signing_bytes("p2pgrid/order/v1", KEY.public_key, forged_body))
    with pytest.raises(SignatureError):
        decode_signed(pack(["p2pgrid/order", 1, KEY.public_key, forged_body, signature]))


@pytest.mark.parametrize("case, make", [
    ("unknown kind", lambda e: pack(["p2pgrid/nope", 1, *msgpack.unpackb(e)[2:]])),
    ("unknown version", lambda e: pack(["p2pgrid/order", 9, *msgpack.unpackb(e)[2:]])),
    ("trailing bytes", lambda e: e + b"\x00"),
    ("not msgpack", lambda e: b"\xc1" + e),
    ("a map instead of an array", lambda e: msgpack.packb({"kind": "p2pgrid/order"})),
    ("truncated", lambda e: e[:-3]),
    ("oversize", lambda e: e + b"\x00" * 70_000),
    ("missing signature", lambda e: pack(msgpack.unpackb(e)[:4])),
    ("non-minimal int encoding", lambda e: e.replace(b"\x07", b"\xcc\x07", 1)),
])
def test_malformed_signed_messages_are_rejected_with_a_wire_error(case, make):
    with pytest.raises(WireError):
        decode_signed(make(sign(an_order(), KEY).encoded))


def test_oversize_is_its_own_error():
    with pytest.raises(OversizeError):
        decode_signed(sign(an_order(), KEY).encoded + b"\x00" * 70_000)


@pytest.mark.parametrize("changes, field", [
    ({"qty_wh": 0}, "qty_wh"),
    ({"limit_price": -1}, "limit_price"),
    ({"zone": "Zone A"}, "zone"),
    ({"order_id": b"short"}, "order_id"),
    ({"expiry_ms": 1_000}, "expiry_ms"),
    ({"green": True, "source": Source.GRID}, "green"),
    ({"qty_wh": True}, "qty_wh"),
])
def test_invalid_orders_cannot_be_built(changes, field):
    with pytest.raises(DecodeError, match=field):
        an_order(**changes)


def test_wrong_field_type_on_the_wire_is_a_decode_error():
    encoded = sign(an_order(), KEY).encoded
    kind, version, signer, body, signature = msgpack.unpackb(encoded)
    body[5] = "1500"  # qty_wh as a string
    with pytest.raises(DecodeError, match="qty_wh"):
        decode_signed(pack([kind, version, signer, body, signature]))


def test_batch_of_foreign_garbage_items_still_decodes_as_bytes_only():
    batch = OrderBatch(zone="zone-a", sent_ms=1, items=(os.urandom(40),))
    assert decode(OrderBatch, encode(batch)).items == batch.items
