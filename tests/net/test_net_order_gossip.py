"""Order gossip over the network: bursts arrive whole, bad input reaches no consumer, attackers lose score."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from p2pgrid.net.orders import OrderGossip, open_order_gossip, orders_topic, topic_name, wall_clock_ms
from p2pgrid.net.testing import (
    bad_order_batches, cluster_keys, make_order, open_cluster, wait_for_mesh, wait_until,
)
from p2pgrid.net.transport import PeerUnreachable, accept_all
from p2pgrid.net.validation import OrderRules, Reason
from p2pgrid.wire import Cancel, sign

RULES = OrderRules(zone="zone-a")
TOPIC = orders_topic("zone-a")
BOUND_S = 120  # generous: five hosts in one process on two shared cores

KINDS = [pytest.param("memory", id="memory"),
         pytest.param("libp2p", id="libp2p", marks=pytest.mark.slow)]


def test_topic_names():
    assert topic_name("zone-a", "orders") == "p2pgrid/v1/zone-a/orders"
    assert topic_name("zone-a", "pools") == "p2pgrid/v1/zone-a/pools"
    assert topic_name("zone-a", "ledger") == "p2pgrid/v1/zone-a/ledger"
    with pytest.raises(ValueError):
        topic_name("zone-a", "chat")


async def collect(service: OrderGossip, count: int) -> list:
    items = []
    while len(items) < count:
        delivery = await service.deliveries.receive()
        items += delivery.items
    return items


@pytest.mark.parametrize("kind", KINDS)
async def test_every_node_receives_every_order_of_a_500_order_burst(kind):
    keys = cluster_keys(5)
    async with open_cluster(kind, 5) as nodes, AsyncExitStack() as stack:
        services = [await stack.enter_async_context(open_order_gossip(n, RULES, tick_s=3600)) for n in nodes]
        now = wall_clock_ms()
        burst = [sign(make_order(keys[2], RULES, now, i), keys[2]) for i in range(500)]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            for signed in burst:
                services[2].submit(signed)
            batches = await services[2].flush()
            received = [await collect(s, len(burst)) for s in services]
        assert 2 <= batches <= 10, "a burst travels in a few batches"
        expected = [s.encoded for s in burst]
        for node_items in received:
            assert [s.encoded for s in node_items] == expected
        assert all(s.stats.rejected_total == 0 for s in services)


@pytest.mark.parametrize("kind", KINDS)
async def test_all_nodes_bursting_at_once_lose_nothing(kind):
    keys = cluster_keys(5)
    per_node = 100
    async with open_cluster(kind, 5) as nodes, AsyncExitStack() as stack:
        services = [await stack.enter_async_context(open_order_gossip(n, RULES, tick_s=3600)) for n in nodes]
        now = wall_clock_ms()
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            async with trio.open_nursery() as nursery:
                for i, service in enumerate(services):
                    for n in range(per_node):
                        service.submit(sign(make_order(keys[i], RULES, now, n), keys[i]))
                    nursery.start_soon(service.flush)
            received = [await collect(s, 5 * per_node) for s in services]
        for node_items in received:
            assert len({(s.signer, s.body.order_id) for s in node_items}) == 5 * per_node


@pytest.mark.parametrize("kind", KINDS)
async def test_tampered_order_is_rejected_by_every_node(kind):
    keys = cluster_keys(5)
    everyone = [(i, j) for i in range(5) for j in range(i)]
    async with open_cluster(kind, 5, links=everyone) as nodes, AsyncExitStack() as stack:
        attacker = nodes[4]
        honest = [await stack.enter_async_context(open_order_gossip(n, RULES, tick_s=3600)) for n in nodes[:4]]
        await attacker.subscribe(TOPIC, accept_all)
        now = wall_clock_ms()
        tampered, _ = bad_order_batches(keys[4], keys[0], RULES, now)["tampered_order"]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            await attacker.publish(TOPIC, tampered)
            await wait_until(lambda: all(s.stats.rejected_batches[Reason.BAD_SIGNATURE.value] == 1 for s in honest))
            await wait_until(lambda: all(n.peer_score(attacker.local_peer, TOPIC) < 0 for n in nodes[:4]))
            honest[0].submit(sign(make_order(keys[0], RULES, now, 1), keys[0]))
            await honest[0].flush()
            for service in honest:
                delivery = await service.deliveries.receive()
                assert delivery.sender == keys[0].public_key, "only the honest marker may arrive"
        for service in honest:
            assert service.deliveries.statistics().current_buffer_used == 0
            assert service.stats.delivered_items == 1


BAD_CASES = sorted(bad_order_batches(cluster_keys(1)[0], cluster_keys(1, seed=9)[0], RULES, 1_700_000_000_000))


@pytest.mark.parametrize("case", BAD_CASES)
async def test_bad_input_is_rejected_with_its_reason_and_costs_the_sender_score(case):
    keys = cluster_keys(2)
    async with open_cluster("memory", 2) as (receiver_node, attacker), \
            open_order_gossip(receiver_node, RULES, tick_s=3600) as receiver:
        await attacker.subscribe(TOPIC, accept_all)
        data, reason = bad_order_batches(keys[1], cluster_keys(1, seed=9)[0], RULES, wall_clock_ms())[case]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh([receiver_node, attacker], TOPIC)
            await attacker.publish(TOPIC, data)
            await wait_until(lambda: receiver.stats.rejected_total == 1)
        assert dict(receiver.stats.rejected_batches) == {reason.value: 1}
        assert receiver_node.peer_score(attacker.local_peer, TOPIC) < 0
        assert receiver.stats.delivered_items == 0
        assert receiver.deliveries.statistics().current_buffer_used == 0
        assert len(receiver.validator.replay) == 0, "a rejected batch must leave no trace in the replay cache"


CASES_PER_ATTACKER = 5  # 5 rejects × 10 = the publish threshold (-50); a 7th message is not even validated


@pytest.mark.slow
async def test_every_bad_input_class_costs_a_real_libp2p_sender_score():
    from p2pgrid.net.libp2p_host import open_libp2p_transport

    honest_key = cluster_keys(1, seed=3)[0]
    groups = [BAD_CASES[i:i + CASES_PER_ATTACKER] for i in range(0, len(BAD_CASES), CASES_PER_ATTACKER)]
    attacker_keys = cluster_keys(len(groups), seed=4)
    async with open_libp2p_transport(honest_key) as honest_node, \
            open_order_gossip(honest_node, RULES, tick_s=3600) as receiver:
        for attacker_key, cases in zip(attacker_keys, groups):
            async with open_libp2p_transport(attacker_key) as attacker:
                with trio.fail_after(BOUND_S):
                    await attacker.connect(honest_node.listen_addrs[0])
                    # Subscribing once the honest node's subscription is known grafts it into
                    # the mesh at once, instead of at the next heartbeat.
                    await wait_until(lambda: attacker.topic_peers(TOPIC) == {honest_node.local_peer})
                    await attacker.subscribe(TOPIC, accept_all)
                    await wait_for_mesh([honest_node, attacker], TOPIC)
                for case in cases:
                    data, reason = bad_order_batches(attacker_key, honest_key, RULES, wall_clock_ms())[case]
                    before_count = receiver.stats.rejected_batches[reason.value]
                    before_score = honest_node.peer_score(attacker.local_peer, TOPIC)
                    with trio.fail_after(BOUND_S):
                        await attacker.publish(TOPIC, data)
                        await wait_until(lambda: receiver.stats.rejected_batches[reason.value] == before_count + 1)
                    assert honest_node.peer_score(attacker.local_peer, TOPIC) < before_score, case
        assert receiver.stats.rejected_total == len(BAD_CASES)
        assert receiver.stats.delivered_items == 0
        assert receiver.deliveries.statistics().current_buffer_used == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_cancel_travels_like_an_order(kind):
    keys = cluster_keys(2)
    async with open_cluster(kind, 2) as nodes, AsyncExitStack() as stack:
        services = [await stack.enter_async_context(open_order_gossip(n, RULES, tick_s=0.05)) for n in nodes]
        now = wall_clock_ms()
        order = make_order(keys[0], RULES, now, 7)
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            services[0].submit(sign(order, keys[0]))
            services[0].submit(sign(Cancel(order.order_id, keys[0].public_key, RULES.zone, order.slot, now), keys[0]))
            items = await collect(services[1], 2)  # published by the tick, not by flush()
        assert [type(s.body).__name__ for s in items] == ["Order", "Cancel"]


async def test_submit_refuses_other_zones_and_other_owners():
    keys = cluster_keys(2)
    async with open_cluster("memory", 1) as (node,), open_order_gossip(node, RULES) as service:
        now = wall_clock_ms()
        with pytest.raises(ValueError):
            service.submit(sign(make_order(keys[0], RULES, now, 1, zone="zone-b"), keys[0]))
        with pytest.raises(ValueError):
            service.submit(sign(make_order(keys[1], RULES, now, 1), keys[1]))
        assert service.pending == 0


async def test_own_items_others_would_reject_are_refused_before_publishing():
    keys = cluster_keys(2)
    async with open_cluster("memory", 2) as nodes, AsyncExitStack() as stack:
        sender, receiver = [await stack.enter_async_context(open_order_gossip(n, RULES, tick_s=3600)) for n in nodes]
        now = wall_clock_ms()
        fresh = sign(make_order(keys[0], RULES, now, 1), keys[0])
        expired = sign(make_order(keys[0], RULES, now, 2, created_ms=now - 60_000, expiry_ms=now - 30_000), keys[0])
        sender.submit(fresh)
        sender.submit(expired)
        sender.submit(fresh)  # the same order twice
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            assert await sender.flush() == 1
            delivery = await receiver.deliveries.receive()
        assert [s.encoded for s in delivery.items] == [fresh.encoded]
        assert dict(sender.stats.refused_own_items) == {"expired": 1, "replayed": 1}
        sender.submit(fresh)  # published already: a resend is a replay and stays home
        assert await sender.flush() == 0
        assert sender.stats.refused_own_items["replayed"] == 2
        assert receiver.stats.rejected_total == 0
        assert nodes[1].peer_score(nodes[0].local_peer, TOPIC) == 0


class PublishFailsOnce:
    """A transport whose ``publish`` number ``failing`` raises a ``NetError`` (a host restarting)."""

    def __init__(self, inner, failing: int) -> None:
        self.inner, self.failing, self.publishes = inner, failing, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def publish(self, topic: str, data: bytes) -> None:
        self.publishes += 1
        if self.publishes == self.failing:
            raise PeerUnreachable("the transport is restarting")
        await self.inner.publish(topic, data)


async def test_items_a_down_transport_could_not_publish_wait_for_the_next_tick():
    keys = cluster_keys(2)
    async with open_cluster("memory", 2) as nodes, AsyncExitStack() as stack:
        flaky = PublishFailsOnce(nodes[0], failing=2)
        sender = await stack.enter_async_context(open_order_gossip(flaky, RULES, tick_s=3600))
        receiver = await stack.enter_async_context(open_order_gossip(nodes[1], RULES, tick_s=3600))
        now = wall_clock_ms()
        burst = [sign(make_order(keys[0], RULES, now, i), keys[0]) for i in range(300)]   # several batches
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            for signed in burst:
                sender.submit(signed)
            assert await sender.flush() == 1          # the second batch met the failure
            assert 0 < sender.pending < len(burst)    # the rest waits, in order
            assert await sender.flush() >= 1 and sender.pending == 0
            received = await collect(receiver, len(burst))
        assert [s.encoded for s in received] == [s.encoded for s in burst]
        assert sum(sender.stats.refused_own_items.values()) == 0
