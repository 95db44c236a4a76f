"""Anti-entropy pulls only from peers that speak ``/p2pgrid/sync/1`` (a JS libp2p peer, or any
node without a ledger, was asked every 10 s and made py-libp2p log an ERROR block each time)."""

from contextlib import AsyncExitStack

import trio

from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import SYNC_PROTOCOL, LedgerConfig
from p2pgrid.ledger.testing import LedgerFixture, open_ledger_node, seeded_key
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.transport import peers_supporting

FX = LedgerFixture()


async def test_anti_entropy_catches_up_from_ledger_peers_and_never_asks_a_peer_without_sync(tmp_path):
    network = MemoryNetwork()
    config = LedgerConfig(FX.rules, FX.committee, sync_interval_s=0.02)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_ledger_node(network, key, tmp_path / f"{i}.db", config))
                 for i, key in enumerate(FX.validators + [FX.gateway])]
        gateway = nodes[-1]
        for i in range(3):
            await gateway.submit(gateway.next_entry("mint", Mint(FX.validators[0].public_key, 1 + i)))
        plain = await stack.enter_async_context(
            network.open_transport(seeded_key("no-ledger"), connect_to=network.addresses))
        late = await stack.enter_async_context(
            open_ledger_node(network, seeded_key("late"), tmp_path / "late.db", config))
        asked: list[bytes] = []
        open_stream = late.transport.open_stream

        async def recording_open_stream(peer, protocol, **kwargs):
            asked.append(peer)
            return await open_stream(peer, protocol, **kwargs)

        late.transport.open_stream = recording_open_stream
        with trio.fail_after(30):
            await late.wait_for_height(3)
            while len(asked) < 3 * len(nodes):          # several turns round every ledger peer
                await trio.sleep(0.02)
        assert late.state_root() == gateway.state_root()
        assert plain.local_peer in late.transport.peers()
        assert plain.local_peer not in peers_supporting(late.transport, SYNC_PROTOCOL)
        assert plain.local_peer not in asked
        assert set(asked) <= {n.key.public_key for n in nodes}
