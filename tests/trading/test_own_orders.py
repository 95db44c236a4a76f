import os

from p2pgrid.identity import NodeKey
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.wire import Order, Side, Source, sign

KEY = NodeKey(b"k" * 32)


def an_order(i: int):
    return sign(Order(order_id=bytes([i]) * 16, owner=KEY.public_key, side=Side.SELL, zone="z", slot=900,
                      qty_wh=100 + i, limit_price=1000, green=False, source=Source.BATTERY, created_ms=1,
                      expiry_ms=2, nonce=i), KEY)


def test_orders_survive_reopen_and_cancels_remove_them(tmp_path):
    journal = OwnOrderJournal(tmp_path / "own.journal")
    for i in range(3):
        journal.record_order(an_order(i))
    journal.record_cancel(an_order(1).body.order_id)
    assert sorted(OwnOrderJournal(tmp_path / "own.journal").load()) == [bytes([0]) * 16, bytes([2]) * 16]


def test_a_torn_last_frame_is_dropped_and_cut_off(tmp_path):
    path = tmp_path / "own.journal"
    journal = OwnOrderJournal(path)
    journal.record_order(an_order(0))
    intact = path.stat().st_size
    journal.record_order(an_order(1))
    with open(path, "r+b") as handle:      # a crash in the middle of the second write
        handle.truncate(intact + 7)
    assert list(journal.load()) == [bytes([0]) * 16]
    assert path.stat().st_size == intact
    journal.record_order(an_order(2))
    assert sorted(journal.load()) == [bytes([0]) * 16, bytes([2]) * 16]


def test_garbage_frame_stops_the_replay_without_crashing(tmp_path):
    path = tmp_path / "own.journal"
    OwnOrderJournal(path).record_order(an_order(0))
    with open(path, "ab") as handle:
        handle.write((5).to_bytes(4, "big") + os.urandom(5))
    assert list(OwnOrderJournal(path).load()) == [bytes([0]) * 16]


def test_compact_keeps_only_live_orders(tmp_path):
    journal = OwnOrderJournal(tmp_path / "own.journal")
    orders = {o.body.order_id: o for o in (an_order(i) for i in range(4))}
    for o in orders.values():
        journal.record_order(o)
    live = {k: v for k, v in orders.items() if k[0] % 2 == 0}
    journal.compact(live)
    assert journal.load() == live
