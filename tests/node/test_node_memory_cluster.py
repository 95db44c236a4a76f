"""Nodes on the in-memory transport with market time driven by trio's MockClock."""

import os
import signal
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from p2pgrid.clock import TrioClock
from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.orders import orders_topic
from p2pgrid.market.errors import InvalidOrder
from p2pgrid.node.api import LiveNodeApi
from p2pgrid.node.app import Node, run_until_signal
from p2pgrid.node.status import read_status
from p2pgrid.rpc.api import OrderRequest, OrderStatus
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.wire import OrderBatch, Side, Source, encode

EPOCH_MS = 1_800_000_000_000   # a fixed market time; slot arithmetic only needs it to be UTC ms


def config_for(tmp_path, name, **overrides):
    raw = {"node": {"data_dir": str(tmp_path / name), "name": name}}
    return build_config(raw, base_dir=tmp_path, overrides=overrides)


async def wait_until(predicate, timeout_s=60):
    with trio.fail_after(timeout_s):
        while not predicate():
            await trio.sleep(0.05)


@asynccontextmanager
async def running_nodes(network, tmp_path, count, clock, **overrides):
    """``count`` nodes, the first one dialled by all others, running until the block ends."""
    async with AsyncExitStack() as stack:
        keys = [NodeKey.generate() for _ in range(count)]
        transports = []
        for key in keys:
            connect_to = (transports[0].listen_addrs[0],) if transports else ()
            transports.append(await stack.enter_async_context(network.open_transport(key, connect_to=connect_to)))
        nursery = await stack.enter_async_context(trio.open_nursery())
        nodes = []
        for i, (key, transport) in enumerate(zip(keys, transports)):
            node = Node(config_for(tmp_path, f"n{i}", **overrides), key, clock, transport)
            await nursery.start(node.run)
            nodes.append(node)
        yield nodes
        nursery.cancel_scope.cancel()


async def test_node_starts_and_stops_cleanly_and_leaves_a_stopped_status(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    key = NodeKey.generate()
    async with network.open_transport(key) as transport:
        node = Node(config_for(tmp_path, "solo"), key, clock, transport)
        async with trio.open_nursery() as nursery:
            started = await nursery.start(node.run)
            assert started is node
            await trio.sleep(1)                              # let the status writer run (mock time)
            status = read_status(tmp_path / "solo")
            assert status is not None and status.state == "running"
            assert status.account == key.account
            nursery.cancel_scope.cancel()
    status = read_status(tmp_path / "solo")
    assert status.state == "stopped"


async def test_an_order_placed_on_one_node_is_seen_by_every_node(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    async with running_nodes(network, tmp_path, 4, clock) as nodes:
        slot = nodes[0].config.zone.slot_rules.tradable_slots(clock.now_ms())[1]
        signed = nodes[1].place_order(Side.SELL, 1500, 200_000, slot, green=True, source=Source.PV)
        await wait_until(lambda: all(n.stats.orders_by_slot.get(slot) == {signed.body.order_id} for n in nodes))
        assert all(n.status().orders_by_slot == {slot: 1} for n in nodes)
        assert all(not n.status().rejects for n in nodes)


async def test_a_burst_of_orders_arrives_whole_in_batches(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    async with running_nodes(network, tmp_path, 3, clock) as nodes:
        slots = nodes[0].config.zone.slot_rules.tradable_slots(clock.now_ms())[1:5]
        for i in range(200):
            nodes[i % 3].place_order(Side.BUY, 100 + i, 150_000, slots[i % len(slots)])
        await wait_until(lambda: all(n.stats.orders_seen == 200 for n in nodes))
        assert nodes[0].order_gossip.stats.published_batches < 200 // 3   # batched, not one per order


async def test_rejected_gossip_is_counted_by_reason(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    async with running_nodes(network, tmp_path, 1, clock) as (node,):
        async with network.open_transport(NodeKey.generate(), connect_to=node.transport.listen_addrs) as attacker:
            wrong_zone = OrderBatch(zone="elsewhere", sent_ms=clock.now_ms(), items=())
            await attacker.publish(orders_topic("local"), encode(wrong_zone))
            await attacker.publish(orders_topic("local"), b"\x93not a batch")
            await wait_until(lambda: sum(node.status().rejects.values()) == 2)
        assert node.status().rejects == {"wrong_zone": 1, "malformed": 1}
        assert node.stats.orders_seen == 0


async def test_random_trader_places_seeded_orders_and_stops_at_max_orders(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    overrides = {"agent.strategy": "random", "agent.max_orders": 5, "agent.tick_ms": 100}
    async with running_nodes(network, tmp_path, 2, clock, **overrides) as nodes:
        await wait_until(lambda: all(n.stats.orders_seen == 10 for n in nodes))
        await trio.sleep(10)                                       # a long (mock) time later: no more
        assert [n.stats.orders_published for n in nodes] == [5, 5]
        assert all(n.stats.orders_seen == 10 for n in nodes)


async def test_a_random_trader_alone_in_its_zone_waits_for_a_peer_before_placing_orders(tmp_path, autojump_clock):
    # Gossip published before anyone joined the topic is dropped and never sent again: a node
    # that starts first used to lose its first orders for good (the launcher test, under load).
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    overrides = {"agent.strategy": "random", "agent.max_orders": 3, "agent.tick_ms": 100}
    async with running_nodes(network, tmp_path, 1, clock, **overrides) as (first,):
        await trio.sleep(10)                                       # long (mock) time alone: nothing placed
        assert first.stats.orders_published == 0
        async with running_nodes(network, tmp_path / "late", 1, clock) as (late,):
            await late.transport.connect(first.transport.listen_addrs[0])
            await wait_until(lambda: late.stats.orders_seen == 3)
        assert first.stats.orders_published == 3


async def test_an_order_placed_through_the_node_api_of_a_node_without_a_ledger_is_signed_and_gossiped(
        tmp_path, autojump_clock):
    """``order_place`` (how ``p2pgrid order place`` reaches a node) works without a ledger too: the
    node signs and gossips the order, as its own strategies' orders; refusals are typed errors."""
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    async with running_nodes(network, tmp_path, 2, clock) as nodes:
        node, other = nodes
        api = LiveNodeApi(node)
        slot = node.config.zone.slot_rules.tradable_slots(clock.now_ms())[2]
        view = await api.place_order(OrderRequest("local", slot, Side.SELL, 700, 90_000, True, Source.PV,
                                                  expiry_ms=clock.now_ms() + 3_600_000))
        assert (view.owner, view.slot, view.qty_wh, view.status) == (node.key.public_key, slot, 700, OrderStatus.OPEN)
        assert view.expiry_ms == clock.now_ms() + 3_600_000
        await wait_until(lambda: other.stats.orders_by_slot.get(slot) == {view.order_id})
        assert node.stats.orders_published == 1
        with pytest.raises(InvalidOrder, match="green source"):
            await api.place_order(OrderRequest("local", slot, Side.SELL, 700, 90_000, True, Source.GRID))
        with pytest.raises(InvalidOrder, match="not open"):
            await api.place_order(OrderRequest("local", slot - 86_400, Side.BUY, 1, 1))
        with pytest.raises(NotAvailable):
            await api.list_orders(open_only=True)
        assert node.stats.orders_published == 1


class RecordingService:
    """A plug-in service: records its start and its stop (by cancellation)."""

    name = "recording"

    def __init__(self):
        self.events = []

    async def run(self, node, *, task_status=trio.TASK_STATUS_IGNORED):
        self.events.append("started")
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self.events.append("stopped")


async def test_extra_services_and_order_listeners_plug_into_the_node(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    key = NodeKey.generate()
    service = RecordingService()
    deliveries = []
    async with network.open_transport(key) as transport:
        node = Node(config_for(tmp_path, "plug"), key, clock, transport, extra_services=[service])
        node.order_listeners.append(deliveries.append)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            assert service.events == ["started"]
            slot = node.config.zone.slot_rules.tradable_slots(clock.now_ms())[1]
            signed = node.place_order(Side.BUY, 250, 120_000, slot)
            await wait_until(lambda: deliveries)
            assert [item.body for item in deliveries[0].items] == [signed.body]
            nursery.cancel_scope.cancel()
    assert service.events == ["started", "stopped"]


async def test_place_order_before_the_node_runs_is_a_bug_not_a_silent_drop(tmp_path):
    network = MemoryNetwork()
    key = NodeKey.generate()
    async with network.open_transport(key) as transport:
        node = Node(config_for(tmp_path, "early"), key, TrioClock(EPOCH_MS), transport)
        with pytest.raises(RuntimeError, match="running node"):
            node.place_order(Side.BUY, 1, 1, 0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_sigint_and_sigterm_stop_the_node_cleanly(tmp_path, signum):
    network = MemoryNetwork()
    key = NodeKey.generate()

    async def send_signal(node):
        os.kill(os.getpid(), signum)

    async with network.open_transport(key) as transport:
        node = Node(config_for(tmp_path, "sig"), key, TrioClock(EPOCH_MS), transport)
        with trio.fail_after(10):
            received = await run_until_signal(node, also=[send_signal])
    assert received == signum
    assert read_status(tmp_path / "sig").state == "stopped"
