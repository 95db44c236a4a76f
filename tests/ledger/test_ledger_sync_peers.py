"""Anti-entropy pulls only from peers that speak ``/p2pgrid/sync/1`` (a JS libp2p peer, or any
node without a ledger, was asked every 10 s and made py-libp2p log an ERROR block each time)."""

from contextlib import AsyncExitStack

import pytest
import trio
import trio_asyncio

from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import SYNC_PROTOCOL, LedgerConfig, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, open_ledger_node, seeded_key
from p2pgrid.net.libp2p_host import open_libp2p_transport
from p2pgrid.net.testing import LOOPBACK
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
        asked = record_streams(late.transport)
        with trio.fail_after(30):
            await late.wait_for_height(3)
            while len(asked) < 3 * len(nodes):          # several turns round every ledger peer
                await trio.sleep(0.02)
        assert late.state_root() == gateway.state_root()
        assert plain.local_peer in late.transport.peers()
        assert plain.local_peer not in peers_supporting(late.transport, SYNC_PROTOCOL)
        assert {peer for peer, _ in asked} <= {n.key.public_key for n in nodes}


@pytest.mark.slow
async def test_on_libp2p_anti_entropy_never_dials_a_host_that_does_not_speak_sync(tmp_path):
    """A plain libp2p host (as the JS peer that made py-libp2p log an ERROR block every 10 s)."""
    fixture = LedgerFixture(n_validators=1)
    config = LedgerConfig(fixture.rules, fixture.committee, vote_timeout_s=20.0, sync_interval_s=0.1)

    async def ledger_node(stack, index, key, before=()):  # type: ignore[no-untyped-def]
        transport = await stack.enter_async_context(open_libp2p_transport(key, LOOPBACK))
        store = await stack.enter_async_context(open_store(tmp_path / f"{index}.db"))
        for other in before:
            await transport.connect(other.listen_addrs[0])
        return transport, await stack.enter_async_context(open_ledger_service(key, config, store, transport))

    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(trio_asyncio.open_loop())
            validator, _ = await ledger_node(stack, 0, fixture.validators[0])
            gateway_transport, gateway = await ledger_node(stack, 1, fixture.gateway, [validator])
            for amount in (5, 6, 7):
                await gateway.submit(gateway.next_entry("mint", Mint(fixture.validators[0].public_key, amount)))
            plain = await stack.enter_async_context(open_libp2p_transport(seeded_key("plain"), LOOPBACK))
            late_transport = await stack.enter_async_context(open_libp2p_transport(seeded_key("late"), LOOPBACK))
            for other in (plain, validator, gateway_transport):
                await late_transport.connect(other.listen_addrs[0])
            asked = record_streams(late_transport)
            store = await stack.enter_async_context(open_store(tmp_path / "late.db"))
            late = await stack.enter_async_context(
                open_ledger_service(seeded_key("late"), config, store, late_transport))
            await late.wait_for_height(3)
            while len([p for p, protocol in asked if protocol == SYNC_PROTOCOL]) < 10:
                await trio.sleep(0.05)
            assert late.state_root() == gateway.state_root()
            assert plain.local_peer in late_transport.peers()
            assert not late_transport.supports(plain.local_peer, SYNC_PROTOCOL)
            assert late_transport.supports(validator.local_peer, SYNC_PROTOCOL)
            assert plain.local_peer not in {peer for peer, _ in asked}


def record_streams(transport):
    """Every (peer, protocol) ``transport`` opens a stream for, from now on."""
    asked: list[tuple[bytes, str]] = []
    open_stream = transport.open_stream

    async def recording(peer, protocol, **kwargs):
        asked.append((peer, protocol))
        return await open_stream(peer, protocol, **kwargs)

    transport.open_stream = recording
    return asked
