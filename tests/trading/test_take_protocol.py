"""Bad input on ``/p2pgrid/take/2`` gets a clear answer and changes nothing."""

import dataclasses
import os

import pytest
import trio

from p2pgrid.net.transport import NetError
from p2pgrid.trading.messages import MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, RefuseReason, Take, TakeAnswer, TakeConfirm
from p2pgrid.trading.testing import fund, open_trading_cluster
from p2pgrid.net.testing import wait_until
from p2pgrid.wire import Side, decode_signed, encode, sign

CREDITS = 10_000_000


class SteppedClock:
    """Wall clock plus an offset the test can move forward."""

    def __init__(self) -> None:
        import time
        self._time = time
        self.offset_ms = 0

    def __call__(self) -> int:
        return self._time.time_ns() // 1_000_000 + self.offset_ms


async def ask(stream, payload: bytes) -> TakeAnswer:
    await stream.send_frame(payload)
    return decode_signed(await stream.receive_frame(), TakeAnswer).body


async def test_each_bad_take_is_refused_with_its_reason_and_changes_nothing(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 5, tmp_path, clock=clock) as nodes:
        await fund(nodes, CREDITS)
        maker, attacker, other = nodes[4], nodes[3], nodes[2]
        maker.trading.config = dataclasses.replace(maker.trading.config, lock_wait_s=0.5)
        rules = maker.trading.config.slot_rules
        slot = rules.tradable_slots(clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot).body
        height = maker.ledger.state.height
        good = Take(take_id=os.urandom(16), taker=attacker.account, maker=maker.account, order_id=offer.order_id,
                    side=Side.BUY, zone=offer.zone, slot=slot, qty_wh=100, price=offer.limit_price, sent_ms=clock())
        stream = await attacker.transport.open_stream(maker.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES)

        cases = [
            ("unsigned", encode(good), RefuseReason.MALFORMED),
            ("garbage", os.urandom(64), RefuseReason.MALFORMED),
            ("signed by a third party", sign(dataclasses.replace(good, taker=other.account), other.key).encoded,
             RefuseReason.MALFORMED),
            ("wrong slot", sign(dataclasses.replace(good, slot=slot + rules.length_s), attacker.key).encoded,
             RefuseReason.WRONG_SLOT),
            ("below the order's price", sign(dataclasses.replace(good, price=offer.limit_price - 1), attacker.key).encoded,
             RefuseReason.PRICE_MISMATCH),
            ("unknown order", sign(dataclasses.replace(good, order_id=os.urandom(16)), attacker.key).encoded,
             RefuseReason.UNKNOWN_ORDER),
            ("more than the order", sign(dataclasses.replace(good, qty_wh=1001), attacker.key).encoded,
             RefuseReason.INSUFFICIENT_REMAINING),
        ]
        held = sign(good, attacker.key).encoded
        confirm = TakeConfirm(take_id=good.take_id, taker=attacker.account, maker=maker.account,
                              order_id=offer.order_id, sent_ms=clock())
        confirm_cases = [
            ("a second take with the same id", held, RefuseReason.DUPLICATE),
            ("confirm of a take never reserved", sign(dataclasses.replace(confirm, take_id=os.urandom(16)),
                                                      attacker.key).encoded, RefuseReason.NOT_RESERVED),
            ("confirm of another peer's take", sign(dataclasses.replace(confirm, taker=other.account),
                                                    other.key).encoded, RefuseReason.MALFORMED),
            ("confirm without a certified lock", sign(confirm, attacker.key).encoded, RefuseReason.BAD_LOCK),
            ("confirm again", sign(confirm, attacker.key).encoded, RefuseReason.NOT_RESERVED),
        ]
        for case, payload, reason in cases:
            with trio.fail_after(30):
                answer = await ask(stream, payload)
            assert answer.status is AnswerStatus.REFUSED, case
            assert answer.reason.startswith(reason.value), (case, answer.reason)
        with trio.fail_after(30):
            answer = await ask(stream, held)        # a good buy take: held, nothing locked by anyone
        assert (answer.status, answer.qty_wh, answer.hold_ms) == (AnswerStatus.RESERVED, 100, 10_000), answer
        for case, payload, reason in confirm_cases:
            with trio.fail_after(30):
                answer = await ask(stream, payload)
            assert answer.status is AnswerStatus.REFUSED, case
            assert answer.reason.startswith(reason.value), (case, answer.reason)
            assert not answer.reason.endswith("lock released"), case       # there was no lock to hand back

        clock.offset_ms = rules.gate_closure_ms(slot) - clock() + 1
        late = sign(dataclasses.replace(good, take_id=os.urandom(16)), attacker.key).encoded
        assert (await ask(stream, late)).reason.startswith(RefuseReason.GATE_CLOSED.value)

        with pytest.raises(NetError):
            await stream.send_frame(b"\x00" * (MAX_TAKE_BYTES + 1))
        raw = await attacker.transport.open_stream(maker.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES * 4)
        await raw.send_frame(b"\x00" * (MAX_TAKE_BYTES + 1))
        with pytest.raises(NetError), trio.fail_after(10):
            await raw.receive_frame()      # the maker drops a stream that sends an oversize frame

        assert maker.ledger.state.height == height
        assert maker.trading.books.remaining(offer.order_id) in (0, 1000)   # 0 once the gate closed
        assert (maker.account, offer.order_id) not in maker.ledger.state.orders
        fresh = await attacker.transport.open_stream(maker.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES)
        assert (await ask(fresh, late)).status is AnswerStatus.REFUSED   # still serving


async def test_restarted_maker_keeps_its_orders_and_never_overfills(tmp_path):
    from contextlib import AsyncExitStack

    from p2pgrid.ledger.chain import state_root
    from p2pgrid.trading.testing import open_trading_node

    async with open_trading_cluster("memory", 5, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker = nodes[4], nodes[1]
        slot = maker.trading.config.slot_rules.tradable_slots(maker.trading.clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot).body
        with trio.fail_after(30):
            await wait_until(lambda: taker.trading.books.remaining(offer.order_id) == 1000)
        await taker.trading.take(Side.BUY, offer.order_id, 600)

        # Restart the maker's services on the same transport, store and journal.
        ledger_config, trading_config = maker.ledger.config, maker.trading.config
        clock = maker.trading.clock
        await maker.close()
        async with AsyncExitStack() as stack:
            restarted = await stack.enter_async_context(open_trading_node(
                maker.transport, maker.key, tmp_path, ledger_config, trading_config, clock))
            assert offer.order_id in restarted.trading.own_orders
            assert restarted.ledger.state.orders[(maker.account, offer.order_id)].filled_wh == 600
            with pytest.raises(Exception) as refused:
                await taker.trading.take(Side.BUY, offer.order_id, 500)
            assert getattr(refused.value, "available_wh", None) == 400
            await taker.trading.take(Side.BUY, offer.order_id, 400)
            assert restarted.ledger.state.orders[(maker.account, offer.order_id)].filled_wh == 1000
            with trio.fail_after(30):
                await wait_until(lambda: state_root(taker.ledger.state) == state_root(restarted.ledger.state))
