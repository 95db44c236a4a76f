"""A zone of 20 real libp2p nodes where each node knows only 2 bootstrap peers (the operator and
one validator): discovery finds the rest, every node keeps at most ``max_connections``
connections, every order reaches every book, and a buyer takes from a maker it was not connected
to (dialled on demand by peer id) — the trade is certified in every node's ledger.

Accounts: the operator (node 0, the gateway) mints credits to every other node with the trading
harness's ``fund``; the first four nodes are the committee, serve rendezvous points and know each
other's addresses (as a committee's members do); every other node knows only nodes 0 and 1.
"""

from __future__ import annotations

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.testing import fund, open_trading_cluster, register_meters
from p2pgrid.units import trade_value
from p2pgrid.wire import Side, Source

NODES = 20
BOOTSTRAP_PEERS = 2
VALIDATORS = 4
CREDITS = 10_000_000
QTY_WH = 100
BOUND_S = 90          # generous: the test must also pass with a busy core beside it
TAKE_TIMEOUT_S = 60   # a take certifies two entries (lock, fill) through dialled validators
EXPORT_W = 10_000      # registered export capacity of every seller: room for its offer


def within_bound(nodes) -> bool:
    return all(len(node.transport.peers()) <= DiscoveryConfig().max_connections for node in nodes)


def connection_counts(nodes) -> list[int]:
    return [len(node.transport.peers()) for node in nodes]


@pytest.mark.slow
async def test_twenty_nodes_each_knowing_two_bootstrap_peers_find_each_other_and_trade(tmp_path):
    async with open_trading_cluster("libp2p", NODES, tmp_path, n_validators=VALIDATORS,
                                    bootstrap_peers=BOOTSTRAP_PEERS, take_timeout_s=TAKE_TIMEOUT_S,
                                    admission=True) as nodes:
        try:
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: within_bound(nodes), poll_s=0.2)
        except trio.TooSlowError:
            raise AssertionError(f"connections per node never all within the bound: {connection_counts(nodes)}") from None
        await fund(nodes, CREDITS)
        # Admission is on: every seller has a meter registered with room for its offer.
        await register_meters(nodes, {n.account: EXPORT_W for n in nodes[1:]})

        # Every node offers QTY_WH; the last node's offer is the cheapest: it is the maker.
        slot = nodes[0].trading.config.slot_rules.tradable_slots(nodes[0].trading.clock())[2]
        for i, node in enumerate(nodes):
            node.trading.place_order(Side.SELL, QTY_WH, 300_000 - 1000 * i, slot, green=True, source=Source.PV)
        maker, price = nodes[-1], 300_000 - 1000 * (NODES - 1)
        try:
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: all(len(n.trading.books.book(slot)) == NODES for n in nodes), poll_s=0.2)
        except trio.TooSlowError:
            seen = [len(n.trading.books.book(slot)) for n in nodes]
            raise AssertionError(f"orders per book after {BOUND_S} s: {seen} of {NODES}") from None

        # A buyer (not a validator, not dialled by anyone by address) that is not connected to the maker.
        candidates = [n for n in nodes[VALIDATORS:-1] if maker.account not in n.transport.peers()]
        assert candidates, f"every node is connected to the maker: {connection_counts(nodes)}"
        buyer = candidates[0]
        assert maker.account not in buyer.transport.peers()
        report = await buyer.trading.execute(Side.BUY, QTY_WH, slot, limit_price=price)

        assert report.problems == ()
        assert [(e.qty_wh, e.price) for e in report.executions] == [(QTY_WH, price)]
        assert maker.account in buyer.transport.peers()            # dialled on demand for the take
        with trio.fail_after(BOUND_S):
            await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                             and nodes[0].ledger.state.balance(maker.account) > CREDITS, poll_s=0.2)
        assert len({state_root(n.ledger.state) for n in nodes}) == 1
        for node in nodes:
            assert node.ledger.state.balance(maker.account) == CREDITS + trade_value(QTY_WH, price)
            assert node.ledger.state.balance(buyer.account) == CREDITS - report.total_uc
        try:
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: within_bound(nodes), poll_s=0.2)
        except trio.TooSlowError:
            raise AssertionError(f"connections per node not within the bound at the end: {connection_counts(nodes)}") from None
