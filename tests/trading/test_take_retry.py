"""A maker's fill that missed a quorum because some validators had not seen the taker's lock yet
(``no_lock``) may still have votes: it is *in doubt*, and the ledger will offer that same entry
again. The maker's retry must resubmit it, not build a second fill for the take (which could only
be rejected once the first is certified), so a take that was certified is never answered
``refused``.

Set-up, on the memory transport: the taker's lock is certified by hand and handed to the maker and
to two of the four validators only (the other two cannot sync it while the test withholds it), so
the maker's first fill gets two votes and two ``no_lock`` refusals. Right after that refusal the
lagging validators receive the lock, and the retry can succeed.
"""

from __future__ import annotations

import os

import trio

from p2pgrid.ledger.chain import LockStatus, RejectReason
from p2pgrid.ledger.messages import Lock, Transfer
from p2pgrid.ledger.service import BatchRejected
from p2pgrid.ledger.testing import LedgerFixture
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.messages import MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, Take, TakeAnswer, TakeConfirm
from p2pgrid.trading.testing import ZONE, TradingNode, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, decode_signed, sign

CREDITS = 10_000_000
TAKE_WH = 100


def reasons_of(exc: BatchRejected) -> set[str]:
    return {r.reason for rejections in exc.reasons.values() for r in rejections}


class LaggingValidators:
    """Keeps the taker's certified lock away from some validators (they neither get it nor can
    sync it) until ``catch_up()``."""

    def __init__(self, validators: list[TradingNode], monkeypatch) -> None:
        self.validators = validators
        self.batch = None
        for validator in validators:
            real_sync = validator.ledger.sync_with

            async def sync_unless_lagging(peer: bytes, _real=real_sync) -> int:
                return 0 if self.batch is None else await _real(peer)

            monkeypatch.setattr(validator.ledger, "sync_with", sync_unless_lagging)

    async def catch_up(self, batch) -> None:
        self.batch = batch
        for validator in self.validators:
            await validator.ledger.receive_certified(batch)


async def lock_seen_by_some(nodes: list[TradingNode], taker: TradingNode, maker: TradingNode, offer, take_id: bytes,
                            now_ms: int):
    """Certify the taker's lock for take ``take_id`` on ``offer`` with the committee's keys and give
    it to the taker, the maker and validators 0 and 1 only. Returns the certified batch."""
    lock = Lock(take_id=take_id, seller=maker.account, order_id=offer.order_id, order_owner=maker.account,
                order_size_wh=offer.qty_wh, qty_wh=TAKE_WH, price=offer.limit_price,
                amount=trade_value(TAKE_WH, offer.limit_price), deadline_ms=now_ms + 60_000, slot=offer.slot,
                green=offer.green, seller_zone=offer.zone, buyer_zone=offer.zone)
    entry = taker.ledger.next_entry("lock", lock)
    batch = LedgerFixture(zone=ZONE, validators=[n.key for n in nodes[:4]]).certify([entry])
    for node in (taker, maker, nodes[0], nodes[1]):
        await node.ledger.receive_certified(batch)
    return batch


async def ask_maker(stream, taker: TradingNode, message) -> TakeAnswer:
    await stream.send_frame(sign(message, taker.key).encoded)
    return decode_signed(await stream.receive_frame(), TakeAnswer).body


def take_on(offer, take_id: bytes, taker: TradingNode, now_ms: int) -> Take:
    return Take(take_id=take_id, taker=taker.account, maker=offer.owner, order_id=offer.order_id, side=Side.BUY,
                zone=offer.zone, slot=offer.slot, qty_wh=TAKE_WH, price=offer.limit_price, sent_ms=now_ms,
                taker_zone=ZONE, ledger=ZONE)


async def run_case(tmp_path, monkeypatch, *, certify_before_retry: bool) -> None:
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, CREDITS)
        maker, taker = nodes[5], nodes[4]
        clock = maker.trading.clock
        lagging = LaggingValidators(nodes[2:4], monkeypatch)
        slot = maker.trading.config.slot_rules.tradable_slots(clock())[2]
        offer = maker.trading.place_order(Side.SELL, 1000, 200_000, slot).body
        take = take_on(offer, os.urandom(16), taker, clock())
        stream = await taker.transport.open_stream(maker.account, TAKE_PROTOCOL, max_frame_bytes=MAX_TAKE_BYTES)
        with trio.fail_after(30):
            assert (await ask_maker(stream, taker, take)).status is AnswerStatus.RESERVED
        take_id = take.take_id
        lock_batch = await lock_seen_by_some(nodes, taker, maker, offer, take_id, clock())
        maker_seq = maker.ledger.state.head(maker.account).next_seq

        first_refusals: list[set[str]] = []
        real_submit = maker.ledger.submit

        async def submit_then_catch_up(entry):
            try:
                return await real_submit(entry)
            except BatchRejected as exc:
                if not first_refusals:
                    first_refusals.append(reasons_of(exc))
                    await lagging.catch_up(lock_batch)
                    if certify_before_retry:
                        # Any later entry of the maker's chain makes the ledger offer the fill
                        # in doubt again first: it is certified before the maker retries.
                        await real_submit(maker.ledger.next_entry("transfer", Transfer(to=taker.account, amount=1)))
                raise

        monkeypatch.setattr(maker.ledger, "submit", submit_then_catch_up)
        with trio.fail_after(30):
            answer = await ask_maker(stream, taker, TakeConfirm(take_id=take_id, taker=taker.account,
                                                                maker=maker.account, order_id=offer.order_id,
                                                                sent_ms=clock()))

        assert first_refusals == [{RejectReason.NO_LOCK.value}], "the first fill must miss a quorum on no_lock"
        assert answer.status is AnswerStatus.FILLED, answer.reason
        record = maker.ledger.state.locks[take_id]
        assert (record.status, record.filled_wh) == (LockStatus.FILLED, TAKE_WH)
        extra_entries = 1 if certify_before_retry else 0      # the transfer
        assert maker.ledger.state.head(maker.account).next_seq == maker_seq + 1 + extra_entries
        assert maker.ledger.state.orders[(maker.account, offer.order_id)].filled_wh == TAKE_WH
        with trio.fail_after(30):
            await wait_until(lambda: all(n.ledger.state.locks.get(take_id) == record for n in nodes))


async def test_a_fill_in_doubt_after_no_lock_is_resubmitted_and_the_take_answers_filled(tmp_path, monkeypatch):
    await run_case(tmp_path, monkeypatch, certify_before_retry=False)


async def test_a_fill_certified_by_the_ledger_before_the_retry_still_answers_filled(tmp_path, monkeypatch):
    await run_case(tmp_path, monkeypatch, certify_before_retry=True)
