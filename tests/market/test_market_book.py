"""Order book: worked examples, and random op sequences checked against a naive reference book."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.market.book import OrderAdded, OrderBook, OrderCancelled, OrderExpired
from p2pgrid.market.errors import AlreadyExpired, DuplicateOrder, InvalidOrder, Overfill, UnknownOrder
from p2pgrid.market.orders import BookOrder, Fill, Side

ALICE, BOB, CAROL = b"A" * 32, b"B" * 32, b"C" * 32
FAR = 10**12


def order(n: int, side: Side, qty: int, price: int, *, owner: bytes = ALICE, created: int = 0,
          expiry: int = FAR) -> BookOrder:
    return BookOrder(order_id=n.to_bytes(16, "big"), owner=owner, side=side, qty_wh=qty, price=price,
                     created_ms=created, expiry_ms=expiry)


def oid(n: int) -> bytes:
    return n.to_bytes(16, "big")


# --- worked examples ----------------------------------------------------------------------------

def test_better_price_fills_first_then_earlier_order_at_same_price():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 100, 300, created=5), 0)
    book.add(order(2, Side.SELL, 100, 290, created=9), 0)
    book.add(order(3, Side.SELL, 100, 300, created=1), 0)
    fills = book.take(Side.BUY, 250, BOB, 10)
    assert [(f.maker_order_id, f.qty_wh, f.price) for f in fills] == [(oid(2), 100, 290), (oid(3), 100, 300),
                                                                     (oid(1), 50, 300)]
    assert book.remaining(oid(1)) == 50 and oid(2) not in book and oid(3) not in book


def test_time_priority_comes_from_created_ms_not_arrival_order():
    early, late = order(1, Side.BUY, 10, 500, created=100), order(2, Side.BUY, 10, 500, created=50)
    book = OrderBook("z", 0)
    book.add(early, 0)
    book.add(late, 0)   # arrives second, was created first
    assert [f.maker_order_id for f in book.match(Side.SELL, 20, BOB, 0)] == [oid(2), oid(1)]


def test_equal_created_ms_ranks_by_order_id():
    book = OrderBook("z", 0)
    book.add(order(7, Side.SELL, 1, 100, created=3), 0)
    book.add(order(4, Side.SELL, 1, 100, created=3), 0)
    assert [f.maker_order_id for f in book.match(Side.BUY, 2, BOB, 0)] == [oid(4), oid(7)]


def test_partial_fill_keeps_the_rest_and_depth_adds_up():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 100, 300), 0)
    book.add(order(2, Side.SELL, 40, 300, created=1), 0)
    book.add(order(3, Side.BUY, 70, 200), 0)
    book.take(Side.BUY, 30, BOB, 0)
    depth = book.depth()
    assert [(lv.price, lv.qty_wh, lv.orders) for lv in depth.asks] == [(300, 110, 2)]
    assert [(lv.price, lv.qty_wh, lv.orders) for lv in depth.bids] == [(200, 70, 1)]
    assert book.best_ask() == 300 and book.best_bid() == 200


def test_self_trade_prevention_skips_the_takers_own_orders():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100, owner=BOB), 0)
    book.add(order(2, Side.SELL, 10, 120, owner=ALICE), 0)
    fills = book.take(Side.BUY, 15, BOB, 0)
    assert [(f.maker_order_id, f.qty_wh) for f in fills] == [(oid(2), 10)]
    assert book.remaining(oid(1)) == 10


def test_limit_price_stops_the_walk():
    book = OrderBook("z", 0)
    book.add(order(1, Side.BUY, 10, 500), 0)
    book.add(order(2, Side.BUY, 10, 400), 0)
    fills = book.take(Side.SELL, 30, BOB, 0, limit_price=450)
    assert [(f.maker_order_id, f.qty_wh, f.price) for f in fills] == [(oid(1), 10, 500)]


def test_match_changes_nothing():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100), 0)
    before = book.state()
    assert book.match(Side.BUY, 5, BOB, 0)
    assert book.state() == before


def test_cancel_removes_exactly_that_order():
    book = OrderBook("z", 0)
    for n in range(3):
        book.add(order(n, Side.SELL, 10, 100, created=n), 0)
    assert book.cancel(oid(1)) == OrderCancelled(oid(1))
    assert [o.order_id for o, _ in book.orders(Side.SELL)] == [oid(0), oid(2)]
    with pytest.raises(UnknownOrder):
        book.cancel(oid(1))


def test_expiry_removes_exactly_the_expired_and_match_ignores_them_before_the_sweep():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100, expiry=50), 0)
    book.add(order(2, Side.SELL, 10, 110, expiry=60), 0)
    book.add(order(3, Side.SELL, 10, 120, expiry=FAR), 0)
    assert [f.maker_order_id for f in book.match(Side.BUY, 30, BOB, 50)] == [oid(2), oid(3)]
    assert book.next_expiry_ms() == 50
    assert book.expire(59) == [OrderExpired(oid(1))]
    assert book.expire(59) == []
    assert book.next_expiry_ms() == 60
    assert book.expire(10**13) == [OrderExpired(oid(2)), OrderExpired(oid(3))]
    assert len(book) == 0 and book.best_ask() is None and book.next_expiry_ms() is None


def test_an_expired_order_not_yet_swept_is_never_the_best_price_or_in_the_depth():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100, expiry=50), 0)
    book.add(order(2, Side.SELL, 5, 110, expiry=FAR), 0)
    book.add(order(3, Side.SELL, 7, 110, expiry=FAR), 0)
    book.add(order(4, Side.BUY, 10, 90, expiry=50), 0)
    book.add(order(5, Side.BUY, 10, 80, expiry=FAR), 0)
    assert (book.best_ask(49), book.best_bid(49)) == (100, 90)
    assert (book.best_ask(50), book.best_bid(50)) == (110, 80)          # expired at 50, not swept
    depth = book.depth(now_ms=50)
    assert [(lv.price, lv.qty_wh, lv.orders) for lv in depth.asks] == [(110, 12, 2)]
    assert [(lv.price, lv.qty_wh, lv.orders) for lv in depth.bids] == [(80, 10, 1)]
    assert book.depth(max_levels=1, now_ms=49).asks[0].price == 100
    book.expire(50)
    assert book.depth() == depth                                           # the sweep agrees


def test_cancelled_order_does_not_expire_later():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100, expiry=50), 0)
    book.cancel(oid(1))
    assert book.expire(100) == []


def test_invalid_orders_are_refused():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100), 0)
    with pytest.raises(DuplicateOrder):
        book.add(order(1, Side.SELL, 10, 100), 0)
    with pytest.raises(AlreadyExpired):
        book.add(order(2, Side.SELL, 10, 100, expiry=5), 5)
    with pytest.raises(InvalidOrder):
        order(3, Side.SELL, 0, 100)
    with pytest.raises(InvalidOrder):
        order(3, Side.SELL, 10, -1)
    with pytest.raises(InvalidOrder):
        book.match(Side.BUY, 0, BOB, 0)


def test_a_fill_beyond_what_remains_is_refused():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100), 0)
    with pytest.raises(Overfill):
        book.apply(Fill(oid(1), ALICE, BOB, Side.BUY, 11, 100))
    book.apply(Fill(oid(1), ALICE, BOB, Side.BUY, 10, 100))
    with pytest.raises(UnknownOrder):
        book.apply(Fill(oid(1), ALICE, BOB, Side.BUY, 1, 100))


def test_gossip_book_may_be_crossed_submit_matches():
    book = OrderBook("z", 0)
    book.add(order(1, Side.SELL, 10, 100), 0)
    book.add(order(2, Side.BUY, 10, 150, owner=BOB), 0)      # crossed: resolved by takes, not the book
    assert book.best_bid() == 150 and book.best_ask() == 100
    result = book.submit(order(3, Side.BUY, 25, 120, owner=CAROL), 0)
    assert [(f.maker_order_id, f.qty_wh, f.price) for f in result.fills] == [(oid(1), 10, 100)]
    assert result.rested is not None and result.rested.order.qty_wh == 15
    assert book.remaining(oid(3)) == 15


def test_replay_of_a_worked_history_rebuilds_the_book():
    book = OrderBook("z", 7)
    events = [book.add(order(1, Side.SELL, 10, 100, expiry=20), 0), book.add(order(2, Side.SELL, 10, 90), 0),
              book.add(order(3, Side.BUY, 5, 80), 0)]
    events += book.take(Side.BUY, 12, BOB, 1)
    events.append(book.cancel(oid(3)))
    events += book.expire(30)
    assert OrderBook.replay("z", 7, events).state() == book.state()


# --- random op sequences against a naive reference ---------------------------------------------

@dataclass
class NaiveBook:
    """The rules of the book written as plainly as possible: a dict and a sort."""

    orders: dict[bytes, list] = field(default_factory=dict)   # id -> [order, remaining]

    def ranked(self, side: Side) -> list[list]:
        sign = -1 if side is Side.BUY else 1
        return sorted((e for e in self.orders.values() if e[0].side is side),
                      key=lambda e: (sign * e[0].price, e[0].created_ms, e[0].order_id))

    def match(self, side: Side, qty: int, taker: bytes, now: int, limit: int | None) -> list[Fill]:
        fills = []
        for o, left in self.ranked(side.opposite):
            if qty == 0:
                break
            if limit is not None and (o.price > limit if side is Side.BUY else o.price < limit):
                break
            if o.owner == taker or o.expiry_ms <= now:
                continue
            q = min(left, qty)
            fills.append(Fill(o.order_id, o.owner, taker, side, q, o.price))
            qty -= q
        return fills

    def apply_fills(self, fills: list[Fill]) -> None:
        for f in fills:
            entry = self.orders[f.maker_order_id]
            entry[1] -= f.qty_wh
            if entry[1] == 0:
                del self.orders[f.maker_order_id]

    def state(self) -> tuple:
        return (tuple((o, r) for o, r in self.ranked(Side.BUY)), tuple((o, r) for o, r in self.ranked(Side.SELL)))


sides = st.sampled_from([Side.BUY, Side.SELL])
owners = st.sampled_from([ALICE, BOB, CAROL])
operation = st.one_of(
    st.tuples(st.just("add"), sides, st.integers(1, 20), st.integers(1, 6), owners, st.integers(0, 5),
              st.integers(1, 40)),
    st.tuples(st.just("cancel"), st.integers(0, 40)),
    st.tuples(st.just("tick"), st.integers(1, 15)),
    st.tuples(st.just("expire")),
    st.tuples(st.just("take"), sides, st.integers(1, 40), owners, st.none() | st.integers(1, 6)),
    st.tuples(st.just("submit"), sides, st.integers(1, 30), st.integers(1, 6), owners, st.integers(1, 40)),
)


def run_sequence(ops: list[tuple]) -> tuple[OrderBook, NaiveBook, list]:
    book, naive = OrderBook("z", 0), NaiveBook()
    events: list = []
    added: list[bytes] = []
    now = 0
    serial = 0
    for op in ops:
        kind = op[0]
        if kind == "add":
            _, side, qty, price, owner, age, life = op    # created `age` ms ago (gossip may be late)
            o = order(serial, side, qty, price, owner=owner, created=max(0, now - age), expiry=now + life)
            serial += 1
            events.append(book.add(o, now))
            naive.orders[o.order_id] = [o, qty]
            added.append(o.order_id)
        elif kind == "cancel" and added:
            target = added[op[1] % len(added)]
            if target in naive.orders:
                events.append(book.cancel(target))
                del naive.orders[target]
            else:
                with pytest.raises(UnknownOrder):
                    book.cancel(target)
        elif kind == "tick":
            now += op[1]
        elif kind == "expire":
            expired = book.expire(now)
            gone = sorted((e[0].expiry_ms, e[0].order_id) for e in naive.orders.values() if e[0].expiry_ms <= now)
            assert [e.order_id for e in expired] == [i for _, i in gone]
            for _, i in gone:
                del naive.orders[i]
            events += expired
        elif kind == "take":
            _, side, qty, taker, limit = op
            expected = naive.match(side, qty, taker, now, limit)
            fills = book.take(side, qty, taker, now, limit)
            assert fills == expected
            naive.apply_fills(expected)
            events += fills
        elif kind == "submit":
            _, side, qty, price, owner, life = op
            o = order(serial, side, qty, price, owner=owner, created=now, expiry=now + life)
            serial += 1
            expected = naive.match(side, qty, owner, now, price)
            result = book.submit(o, now)
            assert list(result.fills) == expected
            naive.apply_fills(expected)
            events += result.fills
            left = qty - sum(f.qty_wh for f in expected)
            if left:
                assert result.rested is not None and result.rested.order.qty_wh == left
                naive.orders[o.order_id] = [result.rested.order, left]
                events.append(result.rested)
                added.append(o.order_id)
            else:
                assert result.rested is None
        state = book.state()
        assert (state.bids, state.asks) == naive.state()
        for o, left in state.bids + state.asks:
            assert 0 < left <= o.qty_wh
    return book, naive, events


@settings(max_examples=200, deadline=None)
@given(st.lists(operation, max_size=60))
def test_random_sequences_match_the_naive_book(ops):
    run_sequence(ops)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60))
def test_no_order_is_filled_beyond_its_size_and_nothing_goes_negative(ops):
    book, _, events = run_sequence(ops)
    sizes = {e.order.order_id: e.order.qty_wh for e in events if isinstance(e, OrderAdded)}
    filled: dict[bytes, int] = {}
    for e in events:
        if isinstance(e, Fill):
            assert e.qty_wh > 0
            filled[e.maker_order_id] = filled.get(e.maker_order_id, 0) + e.qty_wh
    for order_id, qty in filled.items():
        assert qty <= sizes[order_id]
    for level in book.depth().bids + book.depth().asks:
        assert level.qty_wh > 0 and level.orders > 0


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60))
def test_replaying_the_events_rebuilds_an_identical_book(ops):
    book, _, events = run_sequence(ops)
    rebuilt = OrderBook.replay("z", 0, events)
    assert rebuilt.state() == book.state()
    assert rebuilt.depth() == book.depth()
    assert rebuilt.next_expiry_ms() == book.next_expiry_ms()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(sides, st.integers(1, 9), st.integers(0, 9)), min_size=1, max_size=40), st.data())
def test_cancel_removes_exactly_one_order_from_a_busy_level(specs, data):
    book = OrderBook("z", 0)
    for n, (side, qty, created) in enumerate(specs):
        book.add(order(n, side, qty, 100 if side is Side.SELL else 50, created=created), 0)
    before = {o.order_id for o, _ in book.orders(Side.BUY)} | {o.order_id for o, _ in book.orders(Side.SELL)}
    victims = data.draw(st.lists(st.sampled_from(sorted(before)), unique=True))
    for victim in victims:
        book.cancel(victim)
    after = {o.order_id for o, _ in book.orders(Side.BUY)} | {o.order_id for o, _ in book.orders(Side.SELL)}
    assert after == before - set(victims)
    assert sum(lv.qty_wh for lv in book.depth().asks + book.depth().bids) == \
        sum(q for n, (_, q, _) in enumerate(specs) if oid(n) in after)


def test_many_cancels_at_one_level_compact_and_keep_priority():
    book = OrderBook("z", 0)
    for n in range(200):
        book.add(order(n, Side.SELL, 1, 100, created=n), 0)
    for n in range(1, 199):
        book.cancel(oid(n))
    assert [o.order_id for o, _ in book.orders(Side.SELL)] == [oid(0), oid(199)]
    assert len(book._asks[100].queue) <= 2 * 2 + 8     # lazily deleted entries were compacted


def test_book_order_from_a_wire_order():
    from p2pgrid import wire
    signed_order = wire.Order(order_id=b"1" * 16, owner=b"2" * 32, side=wire.Side.SELL, zone="z1", slot=900,
                              qty_wh=5, limit_price=7, green=True, source=wire.Source.PV, created_ms=1,
                              expiry_ms=9, nonce=0)
    assert BookOrder.from_wire(signed_order) == BookOrder(b"1" * 16, b"2" * 32, Side.SELL, 5, 7, 1, 9, True)
