"""LedgerService over the in-memory transport: submit, certify, replicate, reject, sync."""

import pytest
import trio
from contextlib import AsyncExitStack

from p2pgrid.ledger.chain import RejectReason
from p2pgrid.ledger.messages import Mint, Transfer, encode_certified
from p2pgrid.ledger.service import BatchRejected, LedgerConfig, ledger_topic
from p2pgrid.ledger.testing import LedgerFixture, open_ledger_node, seeded_key
from p2pgrid.net.memory import MemoryNetwork

FX = LedgerFixture()
CONFIG = LedgerConfig(FX.rules, FX.committee, vote_timeout_s=5.0, sync_interval_s=0)


async def start(stack, network, keys, tmp_path, names=None):
    return [await stack.enter_async_context(open_ledger_node(network, key, tmp_path / f"{names[i] if names else i}.db", CONFIG))
            for i, key in enumerate(keys)]


async def wait_all(services, height):
    with trio.move_on_after(20):
        for service in services:
            await service.wait_for_height(height)
    assert [s.state.height for s in services] == [height] * len(services), ([s.state.height for s in services], [len(s._waiting) for s in services])


async def test_submitted_entries_are_certified_and_replicated_to_every_node(tmp_path):
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nodes = await start(stack, network, FX.validators + [FX.gateway, seeded_key("alice")], tmp_path)
        gateway, alice = nodes[4], nodes[5]
        async with trio.open_nursery() as nursery:
            for i in range(30):
                nursery.start_soon(gateway.submit, gateway.next_entry("mint", Mint(alice.key.public_key, 100)))
        certificate = await alice.submit(alice.next_entry("transfer", Transfer(FX.gateway.public_key, 1_000)))
        assert len(certificate.signers) >= FX.committee.quorum
        await wait_all(nodes, 31)
        assert {node.state_root() for node in nodes} == {alice.state_root()}
        assert alice.balance() == 2_000
        assert all(node.state.money_total() == 0 for node in nodes)


async def test_an_overdraft_is_refused_with_its_reason_and_the_tip_recovers(tmp_path):
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nodes = await start(stack, network, FX.validators + [seeded_key("alice")], tmp_path)
        alice = nodes[-1]
        with pytest.raises(BatchRejected) as info:
            await alice.submit(alice.next_entry("transfer", Transfer(FX.gateway.public_key, 5)))
        assert any(r.reason == RejectReason.OVERDRAFT.value for rs in info.value.reasons.values() for r in rs)
        # after a refusal the next entry builds on the certified head again
        assert alice.next_entry("transfer", Transfer(FX.gateway.public_key, 1)).body.seq == 0


async def test_three_of_four_validators_are_a_quorum(tmp_path):
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nodes = await start(stack, network, FX.validators[:3] + [FX.gateway], tmp_path)
        await nodes[-1].submit(nodes[-1].next_entry("mint", Mint(FX.validators[0].public_key, 5)))
        await wait_all(nodes, 1)


async def test_two_of_four_validators_cannot_certify(tmp_path):
    network = MemoryNetwork()
    config = LedgerConfig(FX.rules, FX.committee, vote_timeout_s=0.5, sync_interval_s=0)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_ledger_node(network, key, tmp_path / f"{i}.db", config))
                 for i, key in enumerate(FX.validators[:2] + [FX.gateway])]
        with pytest.raises(BatchRejected):
            await nodes[-1].submit(nodes[-1].next_entry("mint", Mint(FX.validators[0].public_key, 5)))
        assert nodes[0].state.height == 0


async def test_a_late_joiner_syncs_to_the_same_state_root(tmp_path):
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nodes = await start(stack, network, FX.validators + [FX.gateway], tmp_path)
        gateway = nodes[-1]
        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(gateway.submit, gateway.next_entry("mint", Mint(FX.validators[i % 4].public_key, 1 + i)))
        late = await stack.enter_async_context(open_ledger_node(network, seeded_key("late"), tmp_path / "late.db", CONFIG))
        assert late.state.height == 0
        added = await late.sync_with(nodes[0].key.public_key)
        assert added == 300
        assert late.state_root() == gateway.state_root()
        report = await late.store.verify(FX.rules, FX.committee)
        assert report.entries == 300 and report.state_root == gateway.state_root()


async def test_a_forged_certificate_on_gossip_is_rejected_and_scores_the_sender_down(tmp_path):
    network = MemoryNetwork()
    async with AsyncExitStack() as stack:
        nodes = await start(stack, network, FX.validators[:1], tmp_path)
        liar_key = seeded_key("liar")
        liar = await stack.enter_async_context(network.open_transport(liar_key, connect_to=network.addresses))
        await liar.subscribe(ledger_topic(FX.zone))
        outsiders = [seeded_key(f"outsider-{i}") for i in range(3)]
        forged = LedgerFixture(validators=outsiders).certify(
            [FX.entry(FX.gateway, nodes[0].head(FX.gateway.public_key), "mint", Mint(liar_key.public_key, 10**9))])
        await liar.publish(ledger_topic(FX.zone), encode_certified(forged))
        with trio.fail_after(5):
            while nodes[0].transport.peer_score(liar_key.public_key, ledger_topic(FX.zone)) >= 0:
                await trio.sleep(0.01)
        assert nodes[0].state.height == 0


async def test_anti_entropy_catches_a_restarted_node_up_without_being_asked(tmp_path):
    network = MemoryNetwork()
    config = LedgerConfig(FX.rules, FX.committee, sync_interval_s=0.05)
    async with AsyncExitStack() as stack:
        nodes = [await stack.enter_async_context(open_ledger_node(network, key, tmp_path / f"{i}.db", config))
                 for i, key in enumerate(FX.validators + [FX.gateway])]
        gateway = nodes[-1]
        for i in range(5):
            await gateway.submit(gateway.next_entry("mint", Mint(FX.validators[0].public_key, 1 + i)))
        async with open_ledger_node(network, seeded_key("late"), tmp_path / "late.db", config) as late:
            await wait_all([late], 5)
            assert late.state_root() == gateway.state_root()


async def test_vote_records_are_group_committed_and_each_reply_waits_for_its_own_commit():
    """Votes decided while a commit runs go to disk together in the next one (a slow disk no longer
    queues every proposer behind every other), and nobody is answered before its records are durable."""
    from p2pgrid.ledger.service import _VoteJournal

    class SlowStore:
        def __init__(self):
            self.commits, self.durable = [], set()

        async def record_votes(self, records, entries):
            await trio.sleep(0.05)                  # an fsync
            self.commits.append(len(records))
            self.durable.update(key for key, _ in records)

    store = SlowStore()
    journal = _VoteJournal(store)

    async def vote(i):
        key = b"seq/" + bytes([i])
        await journal.persist([(key, b"h" * 32)], {})
        assert key in store.durable, "answered before its record was durable"

    async with trio.open_nursery() as writer:
        writer.start_soon(journal.run)
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(vote, i)
        writer.cancel_scope.cancel()
    assert sum(store.commits) == 40 and len(store.commits) <= 3, store.commits
