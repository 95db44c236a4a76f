"""A failure inside py-libp2p's own tasks is contained: logged once with its cause, and gossip
goes on. A failure of one of its own loops, which cannot be confined to one peer, restarts the
host under the same ``Transport``: logged once with its cause, same key and port, stream
handlers, subscriptions and peers back; a host that keeps failing ends the transport with a
fatal error (real py-libp2p hosts on 127.0.0.1). That a whole node keeps trading after such
failures is in ``tests/rpc_node/test_rpc_node_libp2p.py``."""

from __future__ import annotations

import logging

import pytest
import trio

from p2pgrid.net.libp2p_containment import FAILURES, inject_swarm_failure, inject_task_failures
from p2pgrid.net.libp2p_host import TransportFailed, open_libp2p_transport
from p2pgrid.net.restarts import RestartPolicy
from p2pgrid.net.testing import LOOPBACK, cluster_keys, open_cluster, wait_until
from p2pgrid.net.transport import NetError

BOUND_S = 60
TOPIC = "p2pgrid/test/containment"
ECHO = "/p2pgrid/test-echo/1"


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
                inject_task_failures(victim.pubsub, victim.router)
            with trio.fail_after(BOUND_S):
                while FAILURES.total < before + 6:
                    await trio.sleep(0.01)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2                   # once per service, however often it happens
        assert all("InjectedFailure" in w and "LookupError: peer state gone" in w for w in warnings)
        for sender, receiver in ((0, 1), (1, 2), (2, 0)):
            await exchange(transports, subscriptions, sender, receiver)


async def echo(stream) -> None:
    while True:
        await stream.send_frame(await stream.receive_frame())


async def round_trip(transport, peer: bytes) -> bytes:
    with trio.fail_after(BOUND_S):
        stream = await transport.open_stream(peer, ECHO)
        await stream.send_frame(b"ping")
        return await stream.receive_frame()


@pytest.mark.slow
async def test_a_failed_library_loop_restarts_the_host_with_its_port_handlers_subscriptions_and_peers(caplog):
    async with open_cluster("libp2p", 3, seed=11, links=[(0, 1), (1, 2), (0, 2)]) as transports:
        for transport in transports:
            transport.set_stream_handler(ECHO, echo)
        subscriptions = [await t.subscribe(TOPIC) for t in transports]
        victim = transports[1]
        addrs, others = victim.listen_addrs, frozenset(t.local_peer for t in transports) - {victim.local_peer}
        old_stream = await transports[0].open_stream(victim.local_peer, ECHO)
        with caplog.at_level(logging.INFO, logger="p2pgrid"):
            victim.inject_daemon_failure()
            with trio.fail_after(BOUND_S):
                await wait_until(lambda: victim.restarts == 1 and victim.peers() == others)
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno >= logging.WARNING and r.name.startswith("p2pgrid")]
        assert len(warnings) == 1, warnings
        assert "GossipSub loop heartbeat failed: InjectedFailure" in warnings[0]
        assert "caused by LookupError: mesh state gone" in warnings[0]
        assert victim.listen_addrs == addrs                       # same key, same port
        with pytest.raises(NetError), trio.fail_after(BOUND_S):   # the old host's streams are gone
            await old_stream.send_frame(b"ping")
            await old_stream.receive_frame()
        for sender, receiver in ((0, 1), (1, 0), (1, 2), (2, 1)):
            await exchange(transports, subscriptions, sender, receiver)
        assert await round_trip(transports[0], victim.local_peer) == b"ping"   # its handler again
        assert await round_trip(victim, transports[2].local_peer) == b"ping"


@pytest.mark.slow
async def test_a_host_that_keeps_failing_ends_the_transport_with_a_fatal_error(caplog):
    """Two restarts allowed: a failing gossipsub heartbeat, then an error escaping the swarm, are
    restarted; the third failure within the window is fatal."""
    policy = RestartPolicy(max_restarts=2, window_s=600, first_delay_s=0.05)
    injections = [lambda t: t.inject_daemon_failure(), lambda t: inject_swarm_failure(t.host),
                  lambda t: t.inject_daemon_failure()]
    with pytest.RaisesGroup(pytest.RaisesExc(TransportFailed, match="failed 3 times within 600 s"),
                            flatten_subgroups=True):
        async with open_libp2p_transport(cluster_keys(1, seed=12)[0], LOOPBACK, restart_policy=policy) as transport:
            with trio.fail_after(BOUND_S):
                for count, inject in enumerate(injections):
                    await wait_until(lambda: transport.is_up and transport.restarts == count)
                    inject(transport)
                await trio.sleep_forever()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("p2pgrid")]
    assert [("heartbeat" in w, "host failed" in w) for w in warnings] == [(True, False), (False, True)]
