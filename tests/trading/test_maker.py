import dataclasses
import os

from hypothesis import given, settings, strategies as st

from p2pgrid.identity import NodeKey
from p2pgrid.trading.maker import Accept, MakerDesk, Refuse, decide_take
from p2pgrid.trading.messages import RefuseReason, Take
from p2pgrid.units import SlotRules
from p2pgrid.wire import Order, Side, Source

RULES = SlotRules(length_s=900, horizon_s=3600, gate_s=300)
SLOT = 900 * 1001
NOW = (SLOT - 1800) * 1000
MAKER, TAKER = NodeKey(b"m" * 32), NodeKey(b"t" * 32)
ORDER = Order(order_id=b"o" * 16, owner=MAKER.public_key, side=Side.SELL, zone="z1", slot=SLOT, qty_wh=1000,
              limit_price=200_000, green=True, source=Source.PV, created_ms=NOW - 1, expiry_ms=(SLOT - 300) * 1000,
              nonce=1)


def take(**changes) -> Take:
    base = Take(take_id=os.urandom(16), taker=TAKER.public_key, maker=MAKER.public_key, order_id=ORDER.order_id,
                side=Side.BUY, zone="z1", slot=SLOT, qty_wh=400, price=200_000, sent_ms=NOW)
    return dataclasses.replace(base, **changes)


def test_a_valid_take_is_accepted_in_full():
    assert decide_take(take(), ORDER, 0, 0, RULES, NOW) == Accept(400)


def test_each_bad_take_is_refused_with_its_reason():
    cases = [
        (take(), None, RefuseReason.UNKNOWN_ORDER, NOW),
        (take(maker=TAKER.public_key), ORDER, RefuseReason.NOT_OWNER, NOW),
        (take(zone="z2"), ORDER, RefuseReason.WRONG_ZONE, NOW),
        (take(slot=SLOT + 900), ORDER, RefuseReason.WRONG_SLOT, NOW),
        (take(), ORDER, RefuseReason.GATE_CLOSED, RULES.gate_closure_ms(SLOT)),
        (take(side=Side.SELL), ORDER, RefuseReason.WRONG_SIDE, NOW),
        (take(price=190_000), ORDER, RefuseReason.PRICE_MISMATCH, NOW),
        (take(qty_wh=1001), ORDER, RefuseReason.INSUFFICIENT_REMAINING, NOW),
    ]
    for t, order, reason, now in cases:
        verdict = decide_take(t, order, 0, 0, RULES, now)
        assert isinstance(verdict, Refuse) and verdict.reason is reason, (reason, verdict)


def test_race_of_five_takers_never_commits_more_than_the_order():
    desk = MakerDesk()
    accepted = 0
    refusals = []
    for _ in range(5):
        t = take(qty_wh=300)
        verdict = decide_take(t, ORDER, 0, desk.reserved(ORDER.order_id), RULES, NOW)
        if isinstance(verdict, Accept):
            desk.reserve(t.take_id, ORDER.order_id, verdict.qty_wh)
            accepted += verdict.qty_wh
        else:
            refusals.append(verdict)
    assert accepted == 900
    assert [r.reason for r in refusals] == [RefuseReason.INSUFFICIENT_REMAINING] * 2
    assert all(r.available_wh == 100 for r in refusals)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(1, 600), st.booleans()), max_size=25))
def test_certified_plus_reserved_never_exceeds_size(script):
    desk, certified, live = MakerDesk(), 0, []
    for qty, succeed in script:
        t = take(qty_wh=qty)
        if isinstance(decide_take(t, ORDER, certified, desk.reserved(ORDER.order_id), RULES, NOW), Accept):
            desk.reserve(t.take_id, ORDER.order_id, qty)
            live.append((t.take_id, qty, succeed))
        if len(live) > 2:
            take_id, q, ok = live.pop(0)
            certified += q if ok else 0
            desk.finish(take_id)
        assert certified + desk.reserved(ORDER.order_id) <= ORDER.qty_wh
