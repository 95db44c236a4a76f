"""The in-memory network queues each gossip message at most once per node: in a full mesh every
node would otherwise be handed n − 2 relayed copies of each message, only to drop them."""

import trio

from p2pgrid.net.testing import open_cluster, wait_for_mesh

TOPIC = "p2pgrid/v1/test/things"
BOUND_S = 30


async def collect(subscription, count: int, into: list[bytes]) -> None:
    for _ in range(count):
        into.append((await subscription.receive()).data)


class CountingInbox:
    """Stands in for a node's inbox channel and notes every message id queued on it."""

    def __init__(self, channel) -> None:
        self.channel, self.queued = channel, []

    def send_nowait(self, envelope) -> None:
        self.queued.append(envelope.message_id)
        self.channel.send_nowait(envelope)

    def close(self) -> None:
        self.channel.close()


async def test_full_mesh_queues_each_message_once_per_node():
    async with open_cluster("memory", 6, links=[(i, j) for i in range(6) for j in range(i)]) as nodes:
        inboxes = []
        for node in nodes:
            node._inbox_send = CountingInbox(node._inbox_send)
            inboxes.append(node._inbox_send)
        subscriptions = [await n.subscribe(TOPIC) for n in nodes]
        received: list[list[bytes]] = [[] for _ in nodes]
        with trio.fail_after(BOUND_S):
            await wait_for_mesh(nodes, TOPIC)
            async with trio.open_nursery() as nursery:
                for subscription, into in zip(subscriptions, received):
                    nursery.start_soon(collect, subscription, 10, into)
                for i in range(10):
                    await nodes[i % 2].publish(TOPIC, b"message %d" % i)
    assert all(sorted(r) == sorted(b"message %d" % i for i in range(10)) for r in received)
    for inbox in inboxes:
        assert len(inbox.queued) == len(set(inbox.queued)), "a message was queued twice at one node"
    # Nodes 2..5 publish nothing: each queued all ten messages, once.
    assert all(len(inbox.queued) == 10 for inbox in inboxes[2:])


async def test_message_still_floods_along_a_line_of_relays():
    async with open_cluster("memory", 4, links=[(1, 0), (2, 1), (3, 2)]) as nodes:
        subscriptions = [await n.subscribe(TOPIC) for n in nodes]
        with trio.fail_after(BOUND_S):
            await nodes[0].publish(TOPIC, b"end to end")
            message = await subscriptions[3].receive()
    assert (message.sender, message.data) == (nodes[0].local_peer, b"end to end")
