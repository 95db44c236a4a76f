"""The RPC of real nodes on real py-libp2p hosts (127.0.0.1): the whole method table over HTTP,
a trade between two nodes included; trading goes on after failures inside py-libp2p's tasks,
and through a restart of the libp2p host after one of its own loops failed."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pgrid.net.libp2p_containment import FAILURES
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc.client import calls
from p2pgrid.wire import Side
from rpc_node_helpers import FUNDS_UC, exercise_every_method, open_slot, poll, rpc_client, wait_until


@pytest.mark.slow
async def test_every_method_over_http_on_libp2p_nodes(tmp_path):
    async with open_node_cluster(tmp_path, 4, kind="libp2p", rpc_nodes=(1, 2), funds_uc=FUNDS_UC) as nodes:
        async with rpc_client(nodes[1]) as maker, rpc_client(nodes[2]) as taker:
            await exercise_every_method(maker.call, taker.call, nodes)


@pytest.mark.slow
async def test_a_node_keeps_trading_after_failures_inside_its_libp2p_tasks(tmp_path):
    """Failures injected where py-libp2p's own tasks failed in a 31-node demo (a pubsub task, a
    gossipsub task, the pubsub stream reader): the node answers and trades, certified."""
    before = FAILURES.total
    async with open_node_cluster(tmp_path, 4, kind="libp2p", rpc_nodes=(1, 2), funds_uc=FUNDS_UC) as nodes:
        maker, taker = nodes[2], nodes[1]
        taker.transport.inject_failures()
        await maker.transport.subscribe("p2pgrid/test/announce")   # its announcement trips the reader
        with trio.fail_after(60):
            while FAILURES.total < before + 3:
                await trio.sleep(0.01)
        slot = open_slot(maker)
        async with rpc_client(maker) as sell, rpc_client(taker) as buy:
            assert (await buy.call(calls.node_info())).account == taker.key.public_key
            await sell.call(calls.order_place(maker.zone, slot, Side.SELL, 700, 200_000))
            await poll(lambda: buy.call(calls.book_get(maker.zone, slot)), lambda b: b.asks, timeout_s=60)
            execution = await buy.call(calls.trade_execute(maker.zone, slot, Side.BUY, 700, 250_000))
        assert execution.filled_wh == 700 and all(t.certified for t in execution.trades)


@pytest.mark.slow
async def test_a_node_restarts_its_libp2p_host_when_a_library_loop_fails_and_keeps_trading(tmp_path, caplog):
    """One of py-libp2p's own loops (the gossipsub heartbeat) fails in a running node: the failure
    is logged once with its cause, the host is restarted under the same services, and the node
    answers, hears gossip again and makes a certified trade."""
    async with open_node_cluster(tmp_path, 4, kind="libp2p", rpc_nodes=(1, 2), funds_uc=FUNDS_UC) as nodes:
        maker, taker = nodes[2], nodes[1]
        transport, ledger = taker.transport, taker.ledger
        with caplog.at_level(logging.INFO, logger="p2pgrid"):
            transport.inject_daemon_failure()
            await wait_until(lambda: transport.restarts == 1 and len(transport.peers()) == 3, timeout_s=60)
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name.startswith("p2pgrid")]
        assert len(warnings) == 1, warnings
        assert "heartbeat" in warnings[0] and "InjectedFailure" in warnings[0]
        assert "LookupError: mesh state gone" in warnings[0]
        assert taker.transport is transport and taker.ledger is ledger     # the services never noticed
        slot = open_slot(maker)
        async with rpc_client(maker) as sell, rpc_client(taker) as buy:
            info = await buy.call(calls.node_info())
            assert (info.account, info.ledger_height) == (taker.key.public_key, ledger.state.height)
            await sell.call(calls.order_place(maker.zone, slot, Side.SELL, 700, 200_000))
            await poll(lambda: buy.call(calls.book_get(maker.zone, slot)), lambda b: b.asks, timeout_s=60)
            execution = await buy.call(calls.trade_execute(maker.zone, slot, Side.BUY, 700, 250_000))
            assert execution.filled_wh == 700 and all(t.certified for t in execution.trades)
            await poll(lambda: sell.call(calls.ledger_balance(taker.key.public_key)),
                       lambda b: b.balance_uc < FUNDS_UC, timeout_s=60)
