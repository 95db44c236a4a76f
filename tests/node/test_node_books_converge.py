"""A node that starts after orders were placed (gossipsub drops what nobody heard) still sees
every one of them: book reconciliation runs in every node (in-memory nodes, MockClock)."""

import trio

from p2pgrid.clock import TrioClock
from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.wire import Side, Source

EPOCH_MS = 1_800_000_000_000


async def test_a_node_started_after_the_orders_were_placed_sees_all_of_them(tmp_path, autojump_clock):
    network = MemoryNetwork()
    clock = TrioClock(EPOCH_MS)
    first_key, late_key = NodeKey.generate(), NodeKey.generate()

    def node_for(name, key, transport):  # type: ignore[no-untyped-def]
        from p2pgrid.node.app import Node
        config = build_config({"node": {"data_dir": str(tmp_path / name), "name": name}}, base_dir=tmp_path)
        return Node(config, key, clock, transport)

    async with network.open_transport(first_key) as first_transport, trio.open_nursery() as nursery:
        first = await nursery.start(node_for("first", first_key, first_transport).run)
        slots = first.config.zone.slot_rules.tradable_slots(clock.now_ms())[1:4]
        placed = {first.place_order(Side.SELL, 500 + i, 100_000, slots[i % 3], green=True,
                                    source=Source.PV).body.order_id for i in range(30)}
        with trio.fail_after(60):
            while first.stats.orders_seen < 30:              # its own, published to nobody
                await trio.sleep(0.05)
        async with network.open_transport(late_key, connect_to=first_transport.listen_addrs) as late_transport:
            late = await nursery.start(node_for("late", late_key, late_transport).run)
            with trio.fail_after(60):
                while late.stats.orders_seen < 30:
                    await trio.sleep(0.05)
            seen = {order_id for ids in late.stats.orders_by_slot.values() for order_id in ids}
            assert seen == placed
            assert late.order_gossip.stats.delivered_items == 0 and late.status().items_reconciled == 30
            assert late.book_reconciler is not None and late.book_reconciler.stats.failures == {}
            nursery.cancel_scope.cancel()
