"""Admission on a cluster of real libp2p hosts: unbacked orders reach no book, every validator that
sees them says why, and honest orders still flow and trade."""

from __future__ import annotations

import os

import pytest
import trio

from p2pgrid.net.testing import wait_until
from p2pgrid.trading.admission import OrderNotAdmitted, Refusal
from p2pgrid.trading.testing import fund, open_trading_cluster, register_meters
from p2pgrid.units import trade_value
from p2pgrid.wire import MAX_QTY_WH, Order, Side, Source, sign

CREDITS = 98_000_000                 # 98 credits each
EXPORT_W = 4000                      # 1000 Wh per 15-minute slot
MAX_PRICE = 10**9                    # µc/kWh


def unchecked_order(node, side, qty_wh, price, slot):
    """An order signed by ``node``'s key and published by it without admission (a client that
    does not check, or lies): the other nodes' validators are all that stands in its way."""
    node.gossip.admission = None
    order = Order(order_id=os.urandom(16), owner=node.account, side=side, zone=node.zone, slot=slot, qty_wh=qty_wh,
                  limit_price=price, green=side is Side.SELL, source=Source.PV if side is Side.SELL else Source.NONE,
                  created_ms=node.trading.clock(), expiry_ms=node.trading.config.slot_rules.gate_closure_ms(slot),
                  nonce=1)
    signed = sign(order, node.key)
    node.gossip.submit(signed)
    return signed


def ignored(node, reason):
    return node.gossip.stats.ignored_items[reason.value]


@pytest.mark.slow
async def test_unbacked_orders_are_refused_by_every_validator_and_honest_orders_still_trade(tmp_path):
    async with open_trading_cluster("libp2p", 6, tmp_path, admission=True) as nodes:
        operator, alice, bob, carol, dave, mallory = nodes
        await fund(nodes, CREDITS)
        # dave: a household with no PV and no battery (export 0); mallory: no meter at all.
        await register_meters(nodes, {alice.account: EXPORT_W, bob.account: 0, carol.account: 0, dave.account: 0})
        rules = alice.trading.config.slot_rules
        slot = rules.tradable_slots(alice.trading.clock())[2]

        # Each cheat fails at place time on an honest node ...
        with pytest.raises(OrderNotAdmitted, match="over_capacity"):
            dave.trading.place_order(Side.SELL, MAX_QTY_WH, 200_000, slot)
        with pytest.raises(OrderNotAdmitted, match="unfunded_bid"):
            carol.trading.place_order(Side.BUY, MAX_QTY_WH, MAX_PRICE, slot)
        with pytest.raises(OrderNotAdmitted, match="unregistered_owner"):
            mallory.trading.place_order(Side.SELL, 100, 200_000, slot)
        # ... so publish them the way a client without the rules would.
        cheats = [(dave, unchecked_order(dave, Side.SELL, MAX_QTY_WH, 200_000, slot), Refusal.OVER_CAPACITY),
                  (carol, unchecked_order(carol, Side.BUY, MAX_QTY_WH, MAX_PRICE, slot), Refusal.UNFUNDED_BID),
                  (mallory, unchecked_order(mallory, Side.SELL, 100, 200_000, slot), Refusal.UNREGISTERED_OWNER)]
        honest_offer = alice.trading.place_order(Side.SELL, 1000, 200_000, slot, green=True, source=Source.PV)
        with pytest.raises(OrderNotAdmitted, match="over_capacity"):      # exactly at capacity already
            alice.trading.place_order(Side.SELL, 1, 200_000, slot)
        for publisher, _, _ in cheats:
            await publisher.gossip.flush()

        honest = [operator, alice, bob]      # the cheats' own nodes now run without the rules

        def refused_everywhere() -> bool:
            return all(ignored(node, reason) >= 1 for _, _, reason in cheats for node in honest)

        with trio.fail_after(60):
            await wait_until(refused_everywhere)
            await wait_until(lambda: all(n.trading.books.signed_order(honest_offer.body.order_id) for n in nodes))
        for _, signed, _ in cheats:
            assert all(node.trading.books.signed_order(signed.body.order_id) is None for node in honest)
        # carol's 1 GWh at the maximum price is nobody's best bid.
        assert all(node.trading.books.book(slot).best_bid() is None for node in honest)

        report = await bob.trading.execute(Side.BUY, 1000, slot, limit_price=250_000)
        assert report.filled_wh == 1000 and report.problems == ()
        with trio.fail_after(30):
            await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1)
        assert alice.ledger.state.balance(alice.account) == CREDITS + trade_value(1000, 200_000)
