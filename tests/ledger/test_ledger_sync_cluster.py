"""Six nodes on real libp2p (127.0.0.1): one stops, 1,000 entries are certified without it, it
restarts from its own store and catches up over ``/p2pgrid/sync/1`` to the same state root."""

from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio

from p2pgrid.ledger.messages import Mint, Transfer
from p2pgrid.ledger.service import LedgerConfig, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.net.libp2p_host import open_libp2p_transport

FX = LedgerFixture()
CONFIG = LedgerConfig(FX.rules, FX.committee, vote_timeout_s=20.0, sync_interval_s=0)
LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)
ENTRIES_WHILE_AWAY = 1000


@asynccontextmanager
async def libp2p_node(key, db_path, others):
    async with AsyncExitStack() as stack:
        # transport before store, as in the node: libp2p's handler tasks then never saw the store's
        # trio-asyncio loop in their context, and must work all the same
        transport = await stack.enter_async_context(open_libp2p_transport(key, LOOPBACK))
        store = await stack.enter_async_context(open_store(db_path))
        for other in others:
            await transport.connect(other.transport.listen_addrs[0])
        yield await stack.enter_async_context(open_ledger_service(key, CONFIG, store, transport))


async def certify_many(gateway, receivers, count):
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(gateway.submit, gateway.next_entry("mint", Mint(receivers[i % len(receivers)], 1 + i)))


@pytest.mark.slow
async def test_a_stopped_node_restarts_and_syncs_to_the_same_state_root(tmp_path):
    sleeper_key = seeded_key("sleeper")
    with trio.fail_after(180):
        async with AsyncExitStack() as stack:
            nodes = []
            for i, key in enumerate(FX.validators + [FX.gateway]):
                nodes.append(await stack.enter_async_context(libp2p_node(key, tmp_path / f"{i}.db", nodes)))
            gateway = nodes[-1]
            receivers = [sleeper_key.public_key] + [v.public_key for v in FX.validators]

            async with libp2p_node(sleeper_key, tmp_path / "sleeper.db", nodes) as sleeper:
                await certify_many(gateway, receivers, 10)
                await sleeper.submit(sleeper.next_entry("transfer", Transfer(FX.gateway.public_key, 1)))
                await sleeper.wait_for_height(11)
                before = sleeper.state.height
            assert before == 11

            await certify_many(gateway, receivers, ENTRIES_WHILE_AWAY)
            for node in nodes:
                await node.wait_for_height(11 + ENTRIES_WHILE_AWAY)
            assert len({node.state_root() for node in nodes}) == 1

            async with libp2p_node(sleeper_key, tmp_path / "sleeper.db", nodes) as sleeper:
                assert sleeper.state.height == 11, "restarted from its own store"
                added = await sleeper.sync_with(FX.validators[0].public_key)
                # The node's start-up sync and gossip may already have brought some or all of what
                # it missed; this explicit sync brings whatever is left, never more than that.
                assert 0 <= added <= ENTRIES_WHILE_AWAY
                assert sleeper.state.height == 11 + ENTRIES_WHILE_AWAY
                assert sleeper.state_root() == gateway.state_root()
                report = await sleeper.store.verify(FX.rules, FX.committee)
                assert report.state_root == gateway.state_root() and report.pending == 0
