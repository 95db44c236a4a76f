"""The ledger store: batched durable writes, heads, sync queries, own votes, verify."""

import sqlite3

import pytest

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import ChainHead, LedgerState, process_entry
from p2pgrid.ledger.messages import Mint, Transfer, entry_hash
from p2pgrid.ledger.store import StoreCorrupt, open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.wire import decode_signed

FX = LedgerFixture()
ALICE = seeded_key("alice")


def gateway_chain(count, start=ChainHead()):
    entries, head = [], start
    for i in range(count):
        signed = FX.entry(FX.gateway, head, "mint", Mint(ALICE.public_key, 1 + i))
        head = ChainHead(head.next_seq + 1, entry_hash(signed))
        entries.append(signed)
    return entries


def as_batch(entries):
    certified = FX.certify(entries)
    return certified.certificate, [entry_hash(e) for e in entries], entries


async def test_certified_entries_survive_reopening_with_heads_and_state(tmp_path):
    entries = gateway_chain(10)
    async with open_store(tmp_path / "l.db") as store:
        assert await store.add_certified([as_batch(entries[:4]), as_batch(entries[4:])]) == 10
        assert await store.add_certified([as_batch(entries[:4])]) == 0, "idempotent"
    async with open_store(tmp_path / "l.db") as store:
        heads = await store.heads()
        assert heads[FX.gateway.public_key] == ChainHead(10, entry_hash(entries[-1]))
        state, pending = await store.load_state(FX.rules)
        assert state.balance(ALICE.public_key) == sum(range(1, 11)) and not pending
        assert [e.body.seq for e in await store.account_entries(FX.gateway.public_key, 3, 2)] == [3, 4]
        assert (await store.get_entry(FX.gateway.public_key, 7)).encoded == entries[7].encoded


async def test_the_store_runs_in_wal_mode_with_full_sync(tmp_path):
    async with open_store(tmp_path / "l.db"):
        pass
    conn = sqlite3.connect(tmp_path / "l.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_heads_stop_at_a_gap_and_move_when_it_is_filled(tmp_path):
    entries = gateway_chain(6)
    async with open_store(tmp_path / "l.db") as store:
        await store.add_certified([as_batch(entries[:2]), as_batch(entries[4:])])
        assert (await store.heads())[FX.gateway.public_key].next_seq == 2
        await store.add_certified([as_batch(entries[2:4])])
        assert (await store.heads())[FX.gateway.public_key].next_seq == 6


async def test_missing_for_returns_what_a_peer_lacks_grouped_by_certificate_up_to_a_limit(tmp_path):
    entries = gateway_chain(10)
    async with open_store(tmp_path / "l.db") as store:
        await store.add_certified([as_batch(entries[:5]), as_batch(entries[5:])])
        batches, more = await store.missing_for({FX.gateway.public_key: 3}, limit=4)
        assert more
        assert [len(b.entries) for b in batches] == [2, 2]
        assert all(len(b.leaves) == 5 for b in batches)
        batches, more = await store.missing_for({FX.gateway.public_key: 3}, limit=100)
        assert not more and sum(len(b.entries) for b in batches) == 7
        assert await store.missing_for({FX.gateway.public_key: 10}, limit=100) == ([], False)


async def test_a_second_vote_at_one_conflict_key_is_refused_and_not_recorded(tmp_path):
    entry = gateway_chain(1)[0]
    h = entry_hash(entry)
    async with open_store(tmp_path / "l.db") as store:
        await store.record_votes([(b"seq/a", h)], {h: entry})
        await store.record_votes([(b"seq/a", h)], {h: entry})          # the same vote again is fine
        with pytest.raises(LedgerError):
            await store.record_votes([(b"seq/b", b"h2"), (b"seq/a", b"h3")])
        assert await store.votes() == {b"seq/a": (h, FX.gateway.public_key, 0)}, \
            "the refused transaction left nothing behind"
        assert await store.voted_entry(b"seq/a") == entry.encoded


async def test_votes_are_pruned_once_their_seq_is_certified_and_proposals_with_them(tmp_path):
    entries = gateway_chain(3)
    async with open_store(tmp_path / "l.db") as store:
        await store.save_proposals(entries)
        await store.record_votes([(b"seq/" + bytes([i]), entry_hash(e)) for i, e in enumerate(entries)],
                                 {entry_hash(e): e for e in entries})
        with pytest.raises(LedgerError):   # never a second entry at a seq kept as a proposal
            await store.save_proposals([FX.entry(FX.gateway, ChainHead(), "mint", Mint(ALICE.public_key, 7))])
        await store.add_certified([as_batch(entries[:2])])
        assert await store.proposals(FX.gateway.public_key) == [entries[2]]
        assert await store.prune_votes() == 2
        assert list((await store.votes()).values()) == [(entry_hash(entries[2]), FX.gateway.public_key, 2)]


async def test_verify_accepts_a_good_store_and_names_a_tampered_entry(tmp_path):
    entries = gateway_chain(3)
    path = tmp_path / "l.db"
    async with open_store(path) as store:
        await store.add_certified([as_batch(entries)])
        report = await store.verify(FX.rules, FX.committee)
        assert (report.entries, report.certificates, report.pending) == (3, 1, 0)
    other = FX.entry(FX.gateway, ChainHead(1, entry_hash(entries[0])), "mint", Mint(ALICE.public_key, 999))
    conn = sqlite3.connect(path)
    conn.execute("UPDATE entries SET data = ?, hash = ? WHERE seq = 1", (other.encoded, entry_hash(other)))
    conn.commit()
    conn.close()
    async with open_store(path) as store:
        with pytest.raises(StoreCorrupt, match="not in its certificate"):
            await store.verify(FX.rules, FX.committee)


async def test_zone_parameters_round_trip(tmp_path):
    async with open_store(tmp_path / "l.db") as store:
        assert await store.load_zone() is None
        await store.save_zone(FX.rules, FX.committee)
        assert await store.load_zone() == (FX.rules, FX.committee)


async def test_the_store_serves_tasks_started_outside_the_context_that_opened_it(tmp_path):
    # libp2p runs stream handlers in its own tasks, spawned before the store was opened: they do
    # not see trio-asyncio's current loop, and the store must work for them all the same.
    import trio

    entries = gateway_chain(2)
    async with trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel(1)
        seen = []

        async def foreign_task():
            store = await receive.receive()
            seen.append(await store.add_certified([as_batch(entries)]))

        nursery.start_soon(foreign_task)
        async with open_store(tmp_path / "l.db") as store:
            await send.send(store)
            with trio.fail_after(10):
                while not seen:
                    await trio.sleep(0.01)
    assert seen == [2]


async def test_heads_are_right_whatever_order_and_concurrency_batches_arrive_in(tmp_path):
    import trio

    import random

    entries = gateway_chain(40)
    batches = [as_batch(entries[i:i + 1]) for i in range(40)]
    order = batches + batches
    random.Random(7).shuffle(order)
    async with open_store(tmp_path / "l.db") as store:
        async with trio.open_nursery() as nursery:
            for batch in order:      # every batch twice, out of order, from racing tasks
                nursery.start_soon(store.add_certified, [batch])
        assert (await store.heads())[FX.gateway.public_key] == ChainHead(40, entry_hash(entries[-1]))
        report = await store.verify(FX.rules, FX.committee)
        assert report.entries == 40 and report.pending == 0
