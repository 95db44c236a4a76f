"""``MeterService`` and ``SettlementService`` against a ledger that validates like the committee
(no network): readings chain their counters, slots not read before their due are skipped, a
reading signed in time is submitted however late, due slots settle once at due + W and are
reconciled when inputs arrive later."""

import os
import stat

import pytest
import trio

from p2pgrid.ledger.chain import ChainHead, LedgerState, process_entry
from p2pgrid.ledger.messages import Mint, entry_hash
from p2pgrid.ledger.service import EntryInDoubt
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.metering import MeterRegistration
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, compute_settlement, meter_entries_for_slot, settlement_of,
)
from p2pgrid.settlement.service import MeterService, SettlementService, load_or_create_meter_key
from p2pgrid.wire import Source

from test_settle_entries_ledger import BUYER, FIX, GATEWAY, METERS, SELLER, SLOT, SLOTS, TRADE_MS


class ValidatingLedger:
    """One node's view of a ledger whose every submitted entry is judged and applied at once."""

    def __init__(self, key, state, clock):
        self.key, self.me, self.state, self.clock = key, key.public_key, state, clock
        self.rules = FIX.rules

    def is_in_doubt(self, entry):
        return False

    def in_doubt_entries(self):
        return []

    def next_entry(self, kind, body):
        return FIX.entry_on(self.state, self.key, kind, body, self.clock())

    async def submit(self, entry):
        process_entry(self.state, entry, self.rules)


class Clock:
    def __init__(self, now_ms):
        self.now_ms = now_ms

    def __call__(self):
        return self.now_ms


def registered_state():
    state = LedgerState()
    process_entry(state, FIX.entry_on(state, GATEWAY, "mint", Mint(BUYER.public_key, 1_000), TRADE_MS), FIX.rules)
    for account in (BUYER.public_key, SELLER.public_key):
        registration = MeterRegistration(GATEWAY.public_key, account, METERS[account].public_key, FIX.zone, 0)
        process_entry(state, FIX.entry_on(state, GATEWAY, METER_REGISTRATION_KIND, registration, TRADE_MS),
                      FIX.rules)
    return state


async def test_meter_service_sends_each_ended_slot_once_with_continuing_counters():
    clock = Clock(SLOT * 1000 + 1)
    ledger = ValidatingLedger(BUYER, registered_state(), clock)
    service = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (300, 0, 0, Source.NONE), clock)
    assert await service.meter_due() == []
    clock.now_ms = SLOTS.slot_end_ms(SLOT) + 5_000
    assert await service.meter_due() == [SLOT]
    assert await service.meter_due() == []
    clock.now_ms = SLOTS.slot_end_ms(SLOT + 900) + 5_000
    assert await service.meter_due() == [SLOT + 900]
    last = ledger.state.extra[f"meter_last/{BUYER.public_key.hex()}"]
    assert (last.import_wh, last.import_total_wh) == (300, 600)
    assert [m.import_wh for m in meter_entries_for_slot(ledger.state, SLOT + 900)] == [300]


async def test_meter_service_skips_a_slot_it_could_not_read_before_its_due():
    clock = Clock(SLOT * 1000 + 1)
    ledger = ValidatingLedger(BUYER, registered_state(), clock)
    service = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (300, 0, 0, Source.NONE), clock)
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    assert await service.meter_due() == []
    assert service.skipped_late == [SLOT] and meter_entries_for_slot(ledger.state, SLOT) == []


class HoldingOne(ValidatingLedger):
    """A restarted node's ledger holding one entry in doubt: it certifies it before the next one."""

    def __init__(self, *args):
        super().__init__(*args)
        self.held = []

    def in_doubt_entries(self):
        return list(self.held)

    def next_entry(self, kind, body):       # the tip is the entry in doubt, as in LedgerService
        if not self.held:
            return super().next_entry(kind, body)
        last = self.held[-1].body
        return FIX.entry(self.key, ChainHead(last.seq + 1, entry_hash(self.held[-1]), last.time_ms), kind, body,
                         self.clock())

    async def submit(self, entry):
        while self.held:
            await super().submit(self.held.pop(0))
        await super().submit(entry)


async def test_after_a_restart_counters_continue_from_a_reading_the_ledger_holds_in_doubt():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    before = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                          lambda slot: (300, 0, 0, Source.NONE), clock)
    ledger = HoldingOne(BUYER, state, clock)
    ledger.held.append(ledger.next_entry(METER_KIND, before.reading_for(SLOT, clock())))   # then the node died
    clock.now_ms = SLOTS.slot_end_ms(SLOT + 900) + 5_000
    after = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (200, 0, 0, Source.NONE), clock)
    after.next_slot = SLOT + 900
    assert await after.meter_due() == [SLOT + 900]             # no counter contradiction
    assert [m.import_wh for m in meter_entries_for_slot(state, SLOT)] == [300]
    last = state.extra[f"meter_last/{BUYER.public_key.hex()}"]
    assert (last.slot, last.import_start_wh, last.import_total_wh) == (SLOT + 900, 300, 500)


class InDoubtOnce(ValidatingLedger):
    """The first submission of each entry is not decided (validators waiting); then it certifies."""

    def __init__(self, *args):
        super().__init__(*args)
        self.offered = []

    async def submit(self, entry):
        self.offered.append(entry)
        if self.offered.count(entry) == 1:
            raise EntryInDoubt("no quorum of votes yet")
        await super().submit(entry)


async def test_a_reading_signed_in_time_is_submitted_however_late_the_same_entry():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    ledger = InDoubtOnce(BUYER, registered_state(), clock)
    service = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (300, 0, 0, Source.NONE), clock)
    service.next_slot = SLOT
    assert await service.meter_due() == []                 # signed at slot end + 5 s, in doubt
    clock.now_ms = SLOTS.metering_due_ms(SLOT) + 600_000    # the node comes back long after the due
    assert await service.meter_due() == [SLOT]
    assert ledger.offered[0] is ledger.offered[1]           # offered again unchanged, never re-signed
    [metered] = meter_entries_for_slot(ledger.state, SLOT)
    assert metered.import_wh == 300 and service.skipped_late == []


async def buyer_metered_and_a_gateway(settle_delay_ms: int) -> tuple[Clock, LedgerState, SettlementService]:
    """The buyer's reading of SLOT is certified just after the slot's end; the gateway settles."""
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    meter = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    meter.next_slot = SLOT
    await meter.meter_due()
    return clock, state, SettlementService(ValidatingLedger(GATEWAY, state, clock), clock,
                                           settle_delay_ms=settle_delay_ms)


async def test_settlement_service_settles_a_due_slot_once_after_w():
    clock, state, settler = await buyer_metered_and_a_gateway(settle_delay_ms=30_000)
    assert await settler.settle_due() == []                    # not due yet
    clock.now_ms = SLOTS.metering_due_ms(SLOT) + 29_999
    assert await settler.settle_due() == []                    # due, but W has not passed
    clock.now_ms = SLOTS.metering_due_ms(SLOT) + 30_000
    assert await settler.settle_due() == [SLOT]
    assert await settler.settle_due() == []
    assert settlement_of(state, SLOT).net(BUYER.public_key) == -90_000   # 300 Wh at 0.30 credits/kWh
    assert state.money_total() == 0 and settler.settled == [SLOT] and settler.reconciled == []


async def test_the_gateway_counts_the_slots_it_is_behind_with():
    clock, state, settler = await buyer_metered_and_a_gateway(settle_delay_ms=30_000)
    assert await settler.settle_due() == []                    # not due yet: its inputs are indexed
    due_and_w = SLOTS.metering_due_ms(SLOT) + 30_000
    assert settler.slots_behind(due_and_w - 1) == 0
    assert settler.slots_behind(due_and_w) == 1                # due, not settled: one slot behind
    clock.now_ms = due_and_w
    assert await settler.settle_due() == [SLOT]
    assert settler.slots_behind(due_and_w) == 0


async def test_settlement_service_reconciles_a_reading_certified_after_the_slot_settled():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    buyer = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    buyer.next_slot = SLOT
    await buyer.meter_due()
    seller_ledger = InDoubtOnce(SELLER, state, clock)
    seller = MeterService(seller_ledger, METERS[SELLER.public_key], SLOTS, lambda slot: (0, 500, 500, Source.PV),
                          clock)
    seller.next_slot = SLOT
    await seller.meter_due()                                   # signed in time, not certified yet
    settler = SettlementService(ValidatingLedger(GATEWAY, state, clock), clock, settle_delay_ms=0)
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    assert await settler.settle_due() == [SLOT]                # settled without the seller's reading
    assert SELLER.public_key not in {m.account for m in settlement_of(state, SLOT).meter_entries}
    assert await seller.meter_due() == [SLOT]                  # certified after the settlement
    assert await settler.settle_due() == [SLOT]                # the reconciliation
    settled = settlement_of(state, SLOT)
    assert settled.line(SELLER.public_key).net_uc == 40_000    # 500 Wh fed in at 0.08 credits/kWh
    assert state.balance(SELLER.public_key) == 40_000 and state.money_total() == 0
    assert settler.settled == [SLOT] and settler.reconciled == [SLOT]
    assert await settler.settle_due() == []


class CertifiedInTheBackground(ValidatingLedger):
    """The first round on an entry is undecided, but the ledger certifies it later by itself."""

    def __init__(self, *args):
        super().__init__(*args)
        self.offered = []

    async def submit(self, entry):
        self.offered.append(entry)
        await super().submit(entry)
        if len(self.offered) == 1:
            raise EntryInDoubt("no quorum of votes yet")


@pytest.mark.parametrize("ledger_kind", [InDoubtOnce, CertifiedInTheBackground])
async def test_a_settle_in_doubt_is_offered_again_unchanged_or_recognised_once_certified(ledger_kind):
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    buyer = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    buyer.next_slot = SLOT
    await buyer.meter_due()
    gateway = ledger_kind(GATEWAY, state, clock)
    settler = SettlementService(gateway, clock, settle_delay_ms=0)
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    if ledger_kind is InDoubtOnce:
        assert await settler.settle_due() == []                # undecided this round
    assert await settler.settle_due() == [SLOT]               # (the background case: seen as certified)
    assert await settler.settle_due() == []
    assert len({id(e) for e in gateway.offered}) == 1          # one signed settle, never a second one
    assert settler.settled == [SLOT] and settlement_of(state, SLOT).line(BUYER.public_key).metered


async def test_after_a_restart_the_settle_the_ledger_holds_in_doubt_is_adopted_not_signed_again():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    buyer = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    buyer.next_slot = SLOT
    await buyer.meter_due()
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    gateway = CertifiedInTheBackground(GATEWAY, state, clock)
    held = gateway.next_entry(SETTLE_KIND, compute_settlement(state, FIX.rules, SLOT)[0])   # before the restart
    gateway.in_doubt_entries = lambda: [held]
    clock.now_ms += 1_000                 # a settle signed now would be another entry (dated later)
    settler = SettlementService(gateway, clock, settle_delay_ms=0)
    assert await settler.settle_due() == [SLOT]
    assert [e.body.time_ms for e in gateway.offered] == [held.body.time_ms] and settler.settled == [SLOT]


class StoredLedger(ValidatingLedger):
    """A ledger that also keeps every certified entry in a store, read by chain and seq."""

    def __init__(self, key, state, clock, store):
        super().__init__(key, state, clock)
        self.store = store

    async def submit(self, entry):
        await super().submit(entry)
        self.store.entries.append(entry)


class Store:
    def __init__(self):
        self.entries, self.reads = [], []

    async def account_entries(self, account, from_seq=0, limit=1000):
        self.reads.append((account, from_seq, limit))
        return [e for e in self.entries if e.body.account == account and e.body.seq >= from_seq][:limit]


async def test_the_settlement_index_reads_only_the_entries_certified_since_the_last_poll():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state, store = registered_state(), Store()
    settler = SettlementService(StoredLedger(GATEWAY, state, clock, store), clock, settle_delay_ms=0)
    assert await settler.settle_due() == [] and settler.pending_slots() == [] and store.reads == []
    buyer = MeterService(StoredLedger(BUYER, state, clock, store), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    buyer.next_slot = SLOT
    assert await buyer.meter_due() == [SLOT]
    assert await settler.settle_due() == [] and settler.pending_slots() == [SLOT]
    assert store.reads == [(BUYER.public_key, 0, 1)]          # the one new entry of the one chain that grew
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    assert await settler.settle_due() == [SLOT] and settler.pending_slots() == []
    assert settlement_of(state, SLOT).line(BUYER.public_key).metered


def test_meter_key_is_created_private_once_and_reloaded(tmp_path):
    key = load_or_create_meter_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "meter.key").st_mode) == 0o600
    assert load_or_create_meter_key(tmp_path).public_key == key.public_key
    assert key.public_key != BUYER.public_key


class HeldLedger(ValidatingLedger):
    """A ledger whose certification is held up (votes slow): submissions wait for ``gate``."""

    def __init__(self, *args):
        super().__init__(*args)
        self.gate, self.held = trio.Event(), []

    async def submit(self, entry):
        self.held.append(entry)
        await self.gate.wait()
        process_entry(self.state, entry, self.rules)


async def test_readings_are_signed_on_time_while_the_ledger_holds_an_earlier_one():
    # A reading is judged on its signed created_ms, so it can be certified late — but only if it
    # was taken before its due. A slow ledger must not make the meter miss the next slots.
    clock = Clock(SLOT * 1000 + 1)
    ledger = HeldLedger(BUYER, registered_state(), clock)
    service = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (300, 0, 0, Source.NONE), clock,
                           poll_s=0.01)
    clock.now_ms = SLOTS.slot_end_ms(SLOT) + 5_000
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        with trio.fail_after(10):
            await wait_until(lambda: len(ledger.held) == 1)          # slot SLOT's entry is held
            clock.now_ms = SLOTS.slot_end_ms(SLOT + 900) + 5_000
            await wait_until(lambda: len(service._queue) == 2)      # the next slot's reading is signed
        clock.now_ms = SLOTS.metering_due_ms(SLOT + 900) + 1         # its due passes, still held
        ledger.gate.set()
        with trio.fail_after(10):
            await wait_until(lambda: meter_entries_for_slot(ledger.state, SLOT + 900) != [])
        nursery.cancel_scope.cancel()
    assert [m.import_wh for m in meter_entries_for_slot(ledger.state, SLOT)] == [300]
    assert [m.import_wh for m in meter_entries_for_slot(ledger.state, SLOT + 900)] == [300]
    assert service.skipped_late == []
