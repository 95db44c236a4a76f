"""Fault tests of the ledger's liveness on real ``LedgerService`` nodes (memory transport, a clock
stepped by hand): validators held across a deadline, replies after the proposer's timeout, the
proposer killed at every await of its certify path and restarted, a partition across a deadline.
Each ends with every honest chain's head advancing, equal state roots and money conserved."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pgrid.ledger.chain import LockStatus
from p2pgrid.ledger.cluster_testing import T0, Cluster, certified, open_fault_cluster, submit, submit_in_doubt
from p2pgrid.ledger.committee import seq_key
from p2pgrid.ledger.messages import Burn, Decline, Fill, Lock, Mint, Release, entry_hash
from p2pgrid.ledger.service import BatchRejected, LedgerConfig, LedgerService
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, SettlementLedgerRules, compute_settlement,
    meter_record_of, meter_registration_of, settlement_of,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Source, sign

FX = LedgerFixture()
CONFIG = LedgerConfig(FX.rules, FX.committee, vote_timeout_s=1.0, sync_interval_s=0.5)
ALICE, BOB = seeded_key("alice"), seeded_key("bob")
DEADLINE = T0 + 60_000
TAKE = b"t" * 16
ORDER = b"o" * 16


async def open_cluster(tmp: Path, nursery: trio.Nursery, config: LedgerConfig = CONFIG) -> Cluster:
    """Four validators, the gateway, alice and bob, with a million µc each."""
    cluster = await open_fault_cluster(tmp, nursery, FX, config, {"alice": ALICE, "bob": BOB})
    gateway = cluster["gateway"]
    for who in (ALICE, BOB):
        await submit(gateway, gateway.next_entry("mint", Mint(who.public_key, 1_000_000)))
    with trio.fail_after(30):
        await wait_until(lambda: cluster["alice"].balance() == 1_000_000 and cluster["bob"].balance() == 1_000_000)
    return cluster


def lock_body(take=TAKE, deadline=DEADLINE) -> Lock:
    return Lock(take, BOB.public_key, ORDER, BOB.public_key, 1000, 1000, 200_000, trade_value(1000, 200_000), deadline)


async def test_a_fill_voted_by_validators_held_across_the_deadline_is_certified(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        alice, bob = cluster["alice"], cluster["bob"]
        await submit(alice, alice.next_entry("lock", lock_body()))
        with trio.fail_after(30):
            await wait_until(lambda: TAKE in bob.state.locks)
        cluster.clock.now = DEADLINE - 1
        cluster.partition("bob", ["v2", "v3"])               # two validators held: no quorum
        fill = bob.next_entry("fill", Fill(TAKE, ALICE.public_key, ORDER, 1000, 200_000))
        await submit_in_doubt(bob, fill)
        cluster.clock.now = DEADLINE + 3_600_000             # an hour after the deadline
        await cluster.heal()
        await certified(bob, BOB.public_key, fill.body.seq)
        assert bob.state.locks[TAKE].status is LockStatus.FILLED
        release = alice.next_entry("release", Release(TAKE))   # the buyer can never take it back now
        with pytest.raises(BatchRejected):
            await alice.submit(release)
        with trio.fail_after(60):
            await wait_until(lambda: not alice.is_in_doubt(release))
        assert alice.state.head(ALICE.public_key).next_seq <= release.body.seq, "refused, not certified"
        await submit(alice, alice.next_entry("burn", Burn(1)))   # and the buyer's chain moves on
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_a_release_needs_the_sellers_chain_past_the_deadline_and_a_decline_returns_the_lock_at_once(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        alice, bob = cluster["alice"], cluster["bob"]
        await submit(alice, alice.next_entry("lock", lock_body()))
        await submit(alice, alice.next_entry("lock", lock_body(take=b"u" * 16)))
        cluster.clock.now = DEADLINE + 1
        early = alice.next_entry("release", Release(TAKE))
        with pytest.raises(BatchRejected, match="deadline_not_reached"):   # bob's chain is not past it:
            await alice.submit(early)                    # given up before any validator is bound to it
        assert not alice.is_in_doubt(early)
        await submit(bob, bob.next_entry("burn", Burn(1)))   # now it is (dated after the deadline)
        with trio.fail_after(30):
            await wait_until(lambda: bob.state.head(BOB.public_key).last_time_ms > DEADLINE
                             and alice.state.head(BOB.public_key).last_time_ms > DEADLINE)
        release = alice.next_entry("release", Release(TAKE))
        assert release.body.seq == early.body.seq, "the refused release left no gap in alice's chain"
        await submit(alice, release)
        with trio.fail_after(30):
            await wait_until(lambda: b"u" * 16 in bob.state.locks)
        await submit(bob, bob.next_entry("decline", Decline(b"u" * 16)))
        await submit(alice, alice.next_entry("release", Release(b"u" * 16)))   # a no-op now, not a refusal
        assert alice.balance() == 1_000_000
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_votes_whose_replies_come_after_the_proposers_timeout_are_not_lost(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        alice = cluster["alice"]
        slow = [cluster[f"v{i}"] for i in (1, 2)]
        originals = {}
        for validator in slow:
            originals[validator] = validator.handle_vote_request

            async def late(request, peer=None, _v=validator):
                reply = await originals[_v](request, peer)     # voted (and recorded) at once…
                await trio.sleep(CONFIG.vote_timeout_s * 2)    # …but the reply arrives too late
                return reply
            validator.handle_vote_request = late
        entry = alice.next_entry("burn", Burn(5))
        await submit_in_doubt(alice, entry)
        for validator in slow:
            validator.handle_vote_request = originals[validator]
        await certified(alice, ALICE.public_key, entry.body.seq)
        # the validators that voted late voted again for the same entry, not for another
        for validator in slow:
            assert validator._voted.get(seq_key(entry.body), entry_hash(entry)) == entry_hash(entry)
        await cluster.converge()
        nursery.cancel_scope.cancel()


CRASH_POINTS = ["save_proposals", "collect", "receive_certified", "spread"]


@pytest.mark.parametrize("crash_after", CRASH_POINTS)
async def test_a_proposer_killed_during_certification_offers_the_same_entry_after_a_restart(tmp_path, crash_after):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        member = cluster.members["alice"]
        alice = member.service
        crashed = trio.Event()

        def crash_after_call(owner, name):
            original = getattr(owner, name)

            async def wrapper(*args, **kwargs):
                result = await original(*args, **kwargs)
                crashed.set()
                await trio.sleep_forever()       # the kill below lands here, right after the step
                return result
            setattr(owner, name, wrapper)

        if crash_after == "save_proposals":
            crash_after_call(alice.store, "save_proposals")
        else:
            crash_after_call(alice, {"collect": "_collect", "receive_certified": "receive_certified",
                                     "spread": "_spread"}[crash_after])
        entry = alice.next_entry("burn", Burn(7))
        nursery.start_soon(_submit_ignoring_the_kill, alice, entry)
        with trio.fail_after(30):
            await crashed.wait()
        await member.kill()
        cluster.clock.now += 1000
        alice = await member.start()                    # same key, same store
        await certified(alice, ALICE.public_key, entry.body.seq)
        certified_entry = await alice.store.get_entry(ALICE.public_key, entry.body.seq)
        assert entry_hash(certified_entry) == entry_hash(entry), "a second entry was signed at the seq"
        after = alice.next_entry("burn", Burn(1))
        assert after.body.seq == entry.body.seq + 1
        # (validators that never heard of the certificate pull it from alice when asked to vote)
        await submit(alice, after)
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def _submit_ignoring_the_kill(service: LedgerService, entry) -> None:
    try:
        await service.submit(entry)
    except BatchRejected:
        pass


async def test_a_partition_across_the_deadline_ends_with_every_chain_moving(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        alice, bob = cluster["alice"], cluster["bob"]
        await submit(alice, alice.next_entry("lock", lock_body()))
        with trio.fail_after(30):
            await wait_until(lambda: TAKE in bob.state.locks)
        cluster.clock.now = DEADLINE - 10
        # bob and one validator on one side; alice, the gateway and three validators on the other
        for name in ("alice", "gateway", "v0", "v1", "v2"):
            cluster.partition("bob", [name])
            cluster.partition("v3", [name])
        fill = bob.next_entry("fill", Fill(TAKE, ALICE.public_key, ORDER, 400, 200_000))
        await submit_in_doubt(bob, fill)
        cluster.clock.now = DEADLINE + 10
        await cluster.heal()
        await certified(bob, BOB.public_key, fill.body.seq)
        with trio.fail_after(60):
            await wait_until(lambda: TAKE in alice.state.locks and alice.state.locks[TAKE].status is LockStatus.FILLED)
        await submit(alice, alice.next_entry("burn", Burn(1)))
        await submit(bob, bob.next_entry("burn", Burn(1)))
        await cluster.converge()
        assert alice.balance() == 1_000_000 - trade_value(400, 200_000) - 1
        nursery.cancel_scope.cancel()


# --- metering and settlement across their limits ----------------------------------------------

SLOTS = SlotRules()
SLOT = (T0 // 1000) - (T0 // 1000) % SLOTS.length_s
DUE = SLOTS.metering_due_ms(SLOT)
SETTLING = LedgerConfig(SettlementLedgerRules(FX.zone, FX.gateway.public_key, 0, slots=SLOTS,
                                              prices=ImbalancePrices(300_000, 80_000)),
                        FX.committee, vote_timeout_s=1.0, sync_interval_s=0.5)
ALICE_METER = seeded_key("alice-meter")


def alice_reading(created_ms: int) -> MeterEntryBody:
    return MeterEntryBody(sign(MeterReading(
        account=ALICE.public_key, meter_key=ALICE_METER.public_key, zone=FX.zone, slot=SLOT, import_wh=500,
        export_wh=0, green_wh=0, green_source=Source.NONE, import_total_wh=500, export_total_wh=0,
        created_ms=created_ms), ALICE_METER).encoded)


async def test_a_reading_taken_before_its_deadline_is_certified_and_settled_whenever_votes_come(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery, SETTLING)
        gateway, alice = cluster["gateway"], cluster["alice"]
        cluster.clock.now = T0
        await submit(gateway, gateway.next_entry(METER_REGISTRATION_KIND, MeterRegistration(
            FX.gateway.public_key, ALICE.public_key, ALICE_METER.public_key, FX.zone, T0)))
        with trio.fail_after(30):
            await wait_until(lambda: meter_registration_of(alice.state, ALICE_METER.public_key) is not None)
        cluster.clock.now = DUE - 1                        # read one ms before the deadline…
        reading = alice.next_entry(METER_KIND, alice_reading(DUE - 1))
        cluster.partition("alice", ["v1", "v2"])
        await submit_in_doubt(alice, reading)
        cluster.clock.now = DUE + 86_400_000               # …and voted on a day later
        await cluster.heal()
        await certified(alice, ALICE.public_key, reading.body.seq)
        # the gateway settles the slot over the reading (a validator still lacking it waits, pulls, votes)
        with trio.fail_after(30):
            await wait_until(lambda: meter_record_of(gateway.state, ALICE.public_key, SLOT) is not None)
        body, _ = compute_settlement(gateway.state, SETTLING.rules, SLOT)
        assert body.meters == (ALICE.public_key,)
        await submit(gateway, gateway.next_entry(SETTLE_KIND, body))
        with trio.fail_after(30):
            await wait_until(lambda: settlement_of(alice.state, SLOT) is not None)
        assert alice.state.obligations(ALICE.public_key) > 0, "the shortfall was charged as an obligation"
        await submit(alice, alice.next_entry("burn", Burn(1)))   # and alice can still spend what she has
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_a_reading_taken_after_its_deadline_is_refused_for_good_and_the_chain_moves_on(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery, SETTLING)
        gateway, alice = cluster["gateway"], cluster["alice"]
        await submit(gateway, gateway.next_entry(METER_REGISTRATION_KIND, MeterRegistration(
            FX.gateway.public_key, ALICE.public_key, ALICE_METER.public_key, FX.zone, T0)))
        with trio.fail_after(30):
            await wait_until(lambda: meter_registration_of(alice.state, ALICE_METER.public_key) is not None)
        cluster.clock.now = DUE
        late = alice.next_entry(METER_KIND, alice_reading(DUE))
        with pytest.raises(BatchRejected) as refused:
            await alice.submit(late)
        assert "late" in str(refused.value)
        after = alice.next_entry("burn", Burn(1))
        assert after.body.seq == late.body.seq
        await submit(alice, after)
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_an_entry_in_doubt_is_offered_again_while_its_owner_keeps_submitting(tmp_path):
    """Entries submitted meanwhile extend the one in doubt and wait for it: a steady stream of them
    must not starve its re-proposal (seen: chains stuck for days in a week-long study)."""
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        alice = cluster["alice"]
        cluster.partition("alice", ["v2", "v3"])
        first = alice.next_entry("burn", Burn(1))
        await submit_in_doubt(alice, first)
        await cluster.heal()
        later = []

        async def keep_submitting() -> None:
            while True:
                entry = alice.next_entry("burn", Burn(1))
                later.append(entry)
                nursery.start_soon(_submit_ignoring_the_kill, alice, entry)
                await trio.sleep(0.02)          # faster than the ledger's first re-proposal pause

        async with trio.open_nursery() as stream:
            stream.start_soon(keep_submitting)
            await certified(alice, ALICE.public_key, first.body.seq)
            stream.cancel_scope.cancel()
        await certified(alice, ALICE.public_key, later[-1].body.seq)
        await cluster.converge()
        nursery.cancel_scope.cancel()
