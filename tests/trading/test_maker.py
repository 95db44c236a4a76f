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
        verdict = decide_take(t, ORDER, 0, desk.reserved(ORDER.order_id, 0.0), RULES, NOW)
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
        if isinstance(decide_take(t, ORDER, certified, desk.reserved(ORDER.order_id, 0.0), RULES, NOW), Accept):
            desk.reserve(t.take_id, ORDER.order_id, qty)
            live.append((t.take_id, qty, succeed))
        if len(live) > 2:
            take_id, q, ok = live.pop(0)
            certified += q if ok else 0
            desk.finish(take_id)
        assert certified + desk.reserved(ORDER.order_id, 0.0) <= ORDER.qty_wh


# --- reservations: held for a buyer's lock, then being certified ------------------------------

HOLD_S = 10.0


def test_a_hold_counts_until_it_lapses_and_a_lapsed_hold_cannot_be_claimed():
    desk = MakerDesk()
    t = take(qty_wh=700)
    desk.hold(t, until_s=100.0 + HOLD_S)
    assert desk.reserved(ORDER.order_id, 105.0) == 700
    assert isinstance(decide_take(take(qty_wh=400), ORDER, 0, desk.reserved(ORDER.order_id, 105.0), RULES, NOW),
                      Refuse)
    assert desk.reserved(ORDER.order_id, 110.0) == 0            # lapsed: the buyer never locked
    assert desk.claim(t.take_id, TAKER.public_key, 110.0) is None
    assert desk.lapsed == 1 and desk.drain_lapsed(110.0) == [t] and desk.drain_lapsed(110.0) == []
    assert decide_take(take(qty_wh=1000), ORDER, 0, desk.reserved(ORDER.order_id, 110.0), RULES, NOW) == Accept(1000)


def test_only_the_holder_claims_a_hold_once_and_a_claimed_take_never_lapses():
    desk = MakerDesk()
    t = take(qty_wh=300)
    desk.hold(t, until_s=HOLD_S)
    assert desk.claim(t.take_id, MAKER.public_key, 1.0) is None      # another peer's confirm
    assert desk.claim(t.take_id, TAKER.public_key, 1.0) == t
    assert desk.claim(t.take_id, TAKER.public_key, 2.0) is None      # claimed already
    assert desk.reserved(ORDER.order_id, 1_000.0) == 300             # being certified: no deadline
    assert desk.is_reserved(t.take_id, 1_000.0)
    desk.finish(t.take_id)
    assert desk.reserved(ORDER.order_id, 1_000.0) == 0 and not desk.is_reserved(t.take_id, 1_000.0)


def test_the_same_take_id_cannot_be_reserved_twice():
    desk = MakerDesk()
    t = take()
    desk.hold(t, until_s=HOLD_S)
    try:
        desk.reserve(t.take_id, ORDER.order_id, 1)
    except ValueError:
        return
    raise AssertionError("a second reservation of one take id was accepted")


takers = st.sampled_from([TAKER.public_key, MAKER.public_key])
steps = st.one_of(
    st.tuples(st.just("take"), st.integers(1, 700), takers),
    st.tuples(st.just("confirm"), st.integers(0, 10), takers),
    st.tuples(st.just("settle"), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0.0, 2 * HOLD_S)),
)


@settings(max_examples=300)
@given(st.lists(steps, max_size=40))
def test_certified_plus_held_plus_being_certified_never_exceeds_size_whatever_the_timing(script):
    """Several takers race for one order; each reserves, maybe confirms (before or after its
    hold lapsed, or with another peer's key), and its fill succeeds or fails, in any order."""
    desk, certified, now = MakerDesk(), 0, 0.0
    held: list[Take] = []
    filling: list[Take] = []
    for step in script:
        if step[0] == "take":
            t = take(qty_wh=step[1], taker=step[2])
            if isinstance(decide_take(t, ORDER, certified, desk.reserved(ORDER.order_id, now), RULES, NOW), Accept):
                desk.hold(t, now + HOLD_S)
                held.append(t)
        elif step[0] == "confirm" and held:
            t = held.pop(step[1] % len(held))
            claimed = desk.claim(t.take_id, step[2], now)
            assert claimed is None or (claimed == t and step[2] == t.taker)
            if claimed is not None:
                filling.append(claimed)
        elif step[0] == "settle" and filling:
            t = filling.pop(step[1] % len(filling))
            certified += t.qty_wh if step[2] else 0       # the fill is certified (the ledger counts it) or fails
            desk.finish(t.take_id)
        elif step[0] == "tick":
            now += step[1]
        assert certified + desk.reserved(ORDER.order_id, now) <= ORDER.qty_wh
        assert certified + sum(t.qty_wh for t in filling) <= ORDER.qty_wh
