"""End to end on 6 nodes: trade, meter (one node's meter entry missing at the settle), settle,
certify, reconcile the reading that arrives late — and every node derives the same state root,
settlement and certificate entries included."""

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.service import BatchRejected
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.entries import METER_KIND, certificates_of, settlement_of
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.settlement.service import DEFAULT_SETTLE_DELAY_MS, MeterService, SettlementService, register_meters
from p2pgrid.trading.testing import fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source

CREDITS = 10_000_000
RETAIL, FEED_IN = 300_000, 80_000


class SteppedClock:
    """Market time that only moves when the test says so (Unix ms)."""

    def __init__(self) -> None:
        import time
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms


async def converge(nodes):
    with trio.fail_after(30):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1)
        await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes}) == 1)
    assert all(n.ledger.state.money_total() == 0 for n in nodes)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", pytest.param("libp2p", marks=pytest.mark.slow)])
async def test_six_nodes_trade_meter_settle_and_agree_on_the_state_root(kind, tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster(kind, 6, tmp_path, clock=clock,
                                    settlement_prices=ImbalancePrices(RETAIL, FEED_IN)) as nodes:
        operator = nodes[0]
        rules = operator.trading.config.slot_rules
        await fund(nodes, CREDITS)
        meter_keys = {n.account: seeded_key(f"meter-{i}") for i, n in enumerate(nodes) if i > 0}
        with trio.fail_after(30):
            await register_meters(operator.ledger, ((a, k.public_key) for a, k in meter_keys.items()), clock())
        await converge(nodes)

        slot = rules.tradable_slots(clock())[2]
        seller_a, seller_b, buyer, unmetered_buyer, idle = nodes[4], nodes[1], nodes[5], nodes[2], nodes[3]
        seller_a.trading.place_order(Side.SELL, 1000, 200_000, slot, green=True, source=Source.PV)
        seller_b.trading.place_order(Side.SELL, 500, 180_000, slot, green=True, source=Source.PV)
        with trio.fail_after(30):
            await wait_until(lambda: len(buyer.trading.books.book(slot)) >= 2
                             and len(unmetered_buyer.trading.books.book(slot)) >= 2)
        report = await buyer.trading.execute(Side.BUY, 1200, slot, limit_price=250_000)
        assert report.problems == () and report.filled_wh == 1200
        with trio.fail_after(30):
            await wait_until(lambda: unmetered_buyer.trading.books.book(slot).best_ask() == 200_000)
        second_report = await unmetered_buyer.trading.execute(Side.BUY, 200, slot, limit_price=250_000)
        assert second_report.problems == () and second_report.filled_wh == 200
        await converge(nodes)

        # What each meter shows for the slot: seller_b delivers 400 of its 500 Wh, seller_a all
        # 900, the buyer imports 1000 of its 1200, the idle node imports 100 it never bought.
        # The unmetered buyer's meter never reports.
        energy = {seller_a.account: (0, 900, 900, Source.PV), seller_b.account: (0, 400, 400, Source.PV),
                  buyer.account: (1000, 0, 0, Source.NONE), idle.account: (100, 0, 0, Source.NONE)}
        meters = [MeterService(n.ledger, meter_keys[n.account], rules,
                               lambda s, a=n.account: energy[a] if s == slot else None, clock, poll_s=0.02)
                  for n in nodes if n.account in energy]
        settler = SettlementService(operator.ledger, clock, poll_s=0.02)
        async with trio.open_nursery() as nursery:
            for service in (*meters, settler):
                await nursery.start(service.run)

            clock.now_ms = rules.slot_end_ms(slot) + 10_000
            with trio.fail_after(30):
                await wait_until(lambda: all(m.submitted == [slot] for m in meters))
            await converge(nodes)

            clock.now_ms = rules.metering_due_ms(slot)
            late_meter = MeterService(unmetered_buyer.ledger, meter_keys[unmetered_buyer.account], rules,
                                      lambda s: (200, 0, 0, Source.NONE), clock)
            with pytest.raises(BatchRejected) as late:
                body = late_meter.reading_for(slot, rules.metering_due_ms(slot))   # read at the due: late
                await unmetered_buyer.ledger.submit(unmetered_buyer.ledger.next_entry(METER_KIND, body))
            assert any("late" in r.detail for rs in late.value.reasons.values() for r in rs)

            clock.now_ms = rules.metering_due_ms(slot) + DEFAULT_SETTLE_DELAY_MS       # due + W
            with trio.fail_after(30):
                await wait_until(lambda: all(settlement_of(n.ledger.state, slot) is not None for n in nodes))
            await converge(nodes)
            first = settlement_of(idle.ledger.state, slot)

            # A reading taken in time (20 s after the slot ended) but certified only now: the
            # gateway reconciles the slot, and every node replaces the slot's result.
            in_time = MeterService(unmetered_buyer.ledger, meter_keys[unmetered_buyer.account], rules,
                                   lambda s: (200, 0, 0, Source.NONE), clock)
            body = in_time.reading_for(slot, rules.slot_end_ms(slot) + 20_000)
            await unmetered_buyer.ledger.submit(unmetered_buyer.ledger.next_entry(METER_KIND, body))
            with trio.fail_after(30):
                await wait_until(lambda: all(settlement_of(n.ledger.state, slot).line(unmetered_buyer.account).metered
                                             for n in nodes))
                # (certified in the background when one round did not decide it: the settler
                # records it at its next poll)
                await wait_until(lambda: settler.reconciled == [slot])
            await converge(nodes)
            nursery.cancel_scope.cancel()

        settled = first
        assert settler.settled == [slot] and settler.reconciled == [slot] and settled.total_uc == 0
        assert not settled.line(unmetered_buyer.account).metered
        assert settled.line(seller_b.account).shortfall_wh == 100
        assert settled.net(idle.account) == -trade_value(100, RETAIL)
        # Zero delivery: the unmetered buyer consumed nothing, so its purchase went back to the grid.
        assert settled.line(unmetered_buyer.account).paid_for(Reason.UNUSED_PURCHASE) == trade_value(200, FEED_IN)
        # Reconciled: it imported its 200 Wh after all; the feed-in it was paid is taken back.
        state = idle.ledger.state
        reconciled = settlement_of(state, slot)
        assert reconciled.line(unmetered_buyer.account).paid_for(Reason.UNUSED_PURCHASE) == 0
        assert state.obligations(unmetered_buyer.account) == trade_value(200, FEED_IN)
        certs = certificates_of(state, slot)
        assert total_wh(certs.issued) == 1300
        assert total_wh(certs.retired_by(buyer.account)) == 1000
        assert all(n.ledger.state.certificates == state.certificates for n in nodes)
        assert len({state_root(n.ledger.state) for n in nodes}) == 1
