"""``MeterService`` and ``SettlementService`` against a ledger that validates like the committee
(no network): readings chain their counters, late slots are skipped, due slots settle once."""

import os
import stat

from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.messages import Mint
from p2pgrid.metering import MeterRegistration
from p2pgrid.settlement_entries import METER_REGISTRATION_KIND, meter_entries_for_slot, settlement_of
from p2pgrid.settlement_service import MeterService, SettlementService, load_or_create_meter_key
from p2pgrid.wire import Source

from test_settle_entries_ledger import BUYER, FIX, GATEWAY, METERS, SLOT, SLOTS, TRADE_MS


class ValidatingLedger:
    """One node's view of a ledger whose every submitted entry is judged and applied at once."""

    def __init__(self, key, state, clock):
        self.key, self.me, self.state, self.clock = key, key.public_key, state, clock
        self.rules = FIX.rules

    def next_entry(self, kind, body):
        return FIX.entry_on(self.state, self.key, kind, body)

    async def submit(self, entry):
        process_entry(self.state, entry, self.rules, self.clock())


class Clock:
    def __init__(self, now_ms):
        self.now_ms = now_ms

    def __call__(self):
        return self.now_ms


def registered_state():
    state = LedgerState()
    process_entry(state, FIX.entry_on(state, GATEWAY, "mint", Mint(BUYER.public_key, 1_000)), FIX.rules, TRADE_MS)
    registration = MeterRegistration(GATEWAY.public_key, BUYER.public_key, METERS[BUYER.public_key].public_key,
                                     FIX.zone, 0)
    process_entry(state, FIX.entry_on(state, GATEWAY, METER_REGISTRATION_KIND, registration), FIX.rules, TRADE_MS)
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


async def test_meter_service_skips_a_slot_whose_deadline_passed():
    clock = Clock(SLOT * 1000 + 1)
    ledger = ValidatingLedger(BUYER, registered_state(), clock)
    service = MeterService(ledger, METERS[BUYER.public_key], SLOTS, lambda slot: (300, 0, 0, Source.NONE), clock)
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    assert await service.meter_due() == []
    assert service.skipped_late == [SLOT] and meter_entries_for_slot(ledger.state, SLOT) == []


async def test_settlement_service_settles_a_due_slot_once():
    clock = Clock(SLOTS.slot_end_ms(SLOT) + 5_000)
    state = registered_state()
    meter = MeterService(ValidatingLedger(BUYER, state, clock), METERS[BUYER.public_key], SLOTS,
                         lambda slot: (300, 0, 0, Source.NONE), clock)
    meter.next_slot = SLOT
    await meter.meter_due()
    settler = SettlementService(ValidatingLedger(GATEWAY, state, clock), clock)
    assert await settler.settle_due() == []                    # not due yet
    clock.now_ms = SLOTS.metering_due_ms(SLOT)
    assert await settler.settle_due() == [SLOT]
    assert await settler.settle_due() == []
    assert settlement_of(state, SLOT).net(BUYER.public_key) == -90_000   # 300 Wh at 0.30 credits/kWh
    assert state.money_total() == 0


def test_meter_key_is_created_private_once_and_reloaded(tmp_path):
    key = load_or_create_meter_key(tmp_path)
    assert stat.S_IMODE(os.stat(tmp_path / "meter.key").st_mode) == 0o600
    assert load_or_create_meter_key(tmp_path).public_key == key.public_key
    assert key.public_key != BUYER.public_key
