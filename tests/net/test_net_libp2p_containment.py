"""A failure inside py-libp2p's own tasks is contained: logged once with its cause, and gossip
goes on (real py-libp2p hosts on 127.0.0.1). That a whole node keeps trading after such failures
is in ``tests/rpc_node/test_rpc_node_libp2p.py``."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pgrid.net.libp2p_containment import FAILURES, inject_task_failures
from p2pgrid.net.testing import open_cluster

BOUND_S = 60
TOPIC = "p2pgrid/test/containment"


async def exchange(transports, subscriptions, sender: int, receiver: int) -> None:
    """Publish until ``receiver`` gets it (a mesh may need a heartbeat to form)."""
    data = f"{sender}->{receiver}".encode()
    with trio.fail_after(BOUND_S):
        while True:
            await transports[sender].publish(TOPIC, data)
            with trio.move_on_after(1):
                while (await subscriptions[receiver].receive()).data != data:
                    pass
                return


@pytest.mark.slow
async def test_failing_tasks_inside_pubsub_are_logged_once_with_their_cause_and_gossip_goes_on(caplog):
    before = FAILURES.total
    async with open_cluster("libp2p", 3, seed=5, links=[(0, 1), (1, 2), (0, 2)]) as transports:
        subscriptions = [await t.subscribe(TOPIC) for t in transports]
        victim = transports[1]
        with caplog.at_level(logging.DEBUG, logger="p2pgrid.net.libp2p_containment"):
            for _ in range(3):
                inject_task_failures(victim._pubsub, victim._router)
            with trio.fail_after(BOUND_S):
                while FAILURES.total < before + 6:
                    await trio.sleep(0.01)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2                   # once per service, however often it happens
        assert all("InjectedFailure" in w and "LookupError: peer state gone" in w for w in warnings)
        for sender, receiver in ((0, 1), (1, 2), (2, 0)):
            await exchange(transports, subscriptions, sender, receiver)
