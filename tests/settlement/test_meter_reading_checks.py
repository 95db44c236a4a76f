"""Signed meter readings: what is accepted, and every Byzantine reading rejected with its reason."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.errors import DecodeError, SignatureError
from p2pgrid.identity import NodeKey
from p2pgrid.settlement.metering import (
    MeterReading, MeterReadingRejected, MeterRegistration, MeterRegistry, RejectReason, decode_meter_reading,
    to_meter_entry, validate_meter_reading,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, pack, sign, signing_bytes, spec_of, to_plain

RULES = SlotRules()                       # 900 s slots, 300 s grace
SLOT = 1_800_000_000 - 1_800_000_000 % 900
SLOT_END_MS = (SLOT + 900) * 1000
DUE_MS = (SLOT + 900 + 300) * 1000        # metering due: slot end + grace
ENTRY_MS = SLOT_END_MS + 60_000           # the entry carrying the reading: a minute after the slot ended

OPERATOR = NodeKey(b"\x10" * 32)
NODE = NodeKey(b"\x11" * 32)              # the node's trading key = its account
METER = NodeKey(b"\x12" * 32)             # the meter key registered for NODE
OTHER_METER = NodeKey(b"\x13" * 32)       # a meter registered for someone else
OTHER = NodeKey(b"\x14" * 32)

REGISTRY = MeterRegistry.of([
    MeterRegistration(OPERATOR.public_key, NODE.public_key, METER.public_key, "north", 0),
    MeterRegistration(OPERATOR.public_key, OTHER.public_key, OTHER_METER.public_key, "north", 0),
])


def reading(**changes) -> MeterReading:
    base = MeterReading(account=NODE.public_key, meter_key=METER.public_key, zone="north", slot=SLOT,
                        import_wh=400, export_wh=1_000, green_wh=1_200, green_source=Source.PV,
                        import_total_wh=10_400, export_total_wh=51_000, created_ms=SLOT_END_MS + 1_000)
    return replace(base, **changes)


def rejected(signed, previous=None, entry_time_ms=ENTRY_MS) -> RejectReason:
    with pytest.raises(MeterReadingRejected) as caught:
        validate_meter_reading(signed, REGISTRY, RULES, previous, entry_time_ms=entry_time_ms)
    return caught.value.reason


def test_a_reading_signed_by_the_registered_meter_key_is_accepted_and_round_trips_the_wire():
    signed = sign(reading(), METER)
    decoded = decode_meter_reading(signed.encoded)
    assert validate_meter_reading(decoded, REGISTRY, RULES) == reading()
    entry = to_meter_entry(decoded)
    assert (entry.account, entry.import_wh, entry.export_wh, entry.green_wh) == (NODE.public_key, 400, 1_000, 1_200)
    assert entry.entry_hash == signed.message_id and spec_of(MeterReading).domain == "p2pgrid/meter/v1"


def test_invalid_reading_signed_by_someone_other_than_its_meter_key_fails_the_signature_check():
    body = reading()
    with pytest.raises(SignatureError):
        sign(body, OTHER)                                  # we refuse to build it ...
    spec = spec_of(MeterReading)                           # ... and a forged one fails decoding
    plain = to_plain(body)
    forged_sig = OTHER.sign(signing_bytes(spec.domain, OTHER.public_key, plain))
    forged = pack([spec.kind, spec.version, OTHER.public_key, plain, forged_sig])
    with pytest.raises(SignatureError):
        decode_meter_reading(forged)
    stolen_signer = pack([spec.kind, spec.version, METER.public_key, plain, forged_sig])
    with pytest.raises(SignatureError):
        decode_meter_reading(stolen_signer)


def test_invalid_reading_by_a_meter_key_not_registered_for_the_account():
    # OTHER_METER is a real meter, but of another account: it cannot attest NODE's delivery.
    assert rejected(sign(reading(meter_key=OTHER_METER.public_key), OTHER_METER)) == \
        RejectReason.UNREGISTERED_METER_KEY
    # A self-made key the node controls is not registered either.
    assert rejected(sign(reading(meter_key=OTHER.public_key), OTHER)) == RejectReason.UNREGISTERED_METER_KEY


def test_invalid_reading_signed_with_the_nodes_own_trading_key_cannot_even_be_built():
    with pytest.raises(DecodeError, match="own key"):
        reading(meter_key=NODE.public_key)
    with pytest.raises(DecodeError, match="own key"):
        MeterRegistration(OPERATOR.public_key, NODE.public_key, NODE.public_key, "north", 0)


def test_invalid_reading_claiming_another_zone_than_its_registration():
    assert rejected(sign(reading(zone="south"), METER)) == RejectReason.WRONG_ZONE


def test_invalid_reading_for_a_slot_not_ended_when_the_meter_read_it():
    # The current slot, still running, cannot have been metered whole: judged on the meter's own
    # signed time, not on anyone's clock.
    assert rejected(sign(reading(created_ms=SLOT_END_MS - 1), METER)) == RejectReason.PREMATURE
    future = SLOT + 900
    assert rejected(sign(reading(slot=future, created_ms=ENTRY_MS), METER)) == RejectReason.PREMATURE
    assert rejected(sign(reading(slot=SLOT + 1), METER)) == RejectReason.UNALIGNED_SLOT


def test_invalid_reading_created_after_the_entry_that_carries_it():
    assert rejected(sign(reading(created_ms=ENTRY_MS + 1), METER)) == RejectReason.CREATED_IN_FUTURE
    assert validate_meter_reading(sign(reading(created_ms=ENTRY_MS), METER), REGISTRY, RULES,
                                  entry_time_ms=ENTRY_MS)


def test_a_reading_created_before_the_due_is_valid_however_late_it_is_carried():
    signed = sign(reading(created_ms=DUE_MS - 1), METER)          # one ms before: in time
    assert validate_meter_reading(signed, REGISTRY, RULES, entry_time_ms=DUE_MS + 86_400_000)


def test_invalid_reading_created_at_or_after_the_metering_deadline_is_late():
    assert rejected(sign(reading(created_ms=DUE_MS), METER), entry_time_ms=DUE_MS) == RejectReason.LATE
    with pytest.raises(MeterReadingRejected, match="late.*due by"):
        validate_meter_reading(sign(reading(created_ms=DUE_MS + 3_600_000), METER), REGISTRY, RULES)


def test_next_slot_counter_must_continue_where_the_previous_reading_ended():
    previous = reading(slot=SLOT - 900, import_total_wh=10_000, export_total_wh=50_000,
                       created_ms=SLOT_END_MS - 900_000)
    # This slot starts at 10_400 − 400 = 10_000 and 51_000 − 1_000 = 50_000: continuous, accepted.
    assert validate_meter_reading(sign(reading(), METER), REGISTRY, RULES, previous)


def test_invalid_reading_contradicting_the_accounts_earlier_counter():
    previous = reading(slot=SLOT - 900, import_total_wh=10_000, export_total_wh=50_000,
                       created_ms=SLOT_END_MS - 900_000)
    # Counter runs backwards: this slot would start at 9_999 < 10_000.
    backwards = sign(reading(import_total_wh=10_399), METER)
    assert rejected(backwards, previous=previous) == RejectReason.COUNTER_CONTRADICTION
    # Adjacent slot, export counter jumps by 5 Wh that no slot accounts for.
    jump = sign(reading(export_total_wh=51_005), METER)
    with pytest.raises(MeterReadingRejected, match="export counter"):
        validate_meter_reading(jump, REGISTRY, RULES, previous)


def test_a_gap_of_missing_slots_may_advance_the_counter_but_never_rewind_it():
    long_ago = reading(slot=SLOT - 4 * 900, import_total_wh=9_000, export_total_wh=40_000,
                       created_ms=SLOT_END_MS - 3_600_000)
    assert validate_meter_reading(sign(reading(), METER), REGISTRY, RULES, long_ago)
    ahead = replace(long_ago, import_total_wh=20_000)
    assert rejected(sign(reading(), METER), previous=ahead) == RejectReason.COUNTER_CONTRADICTION


def test_invalid_reading_for_a_slot_not_after_the_previous_one():
    same_slot = reading(import_wh=1, import_total_wh=10_001)
    assert rejected(sign(reading(), METER), previous=same_slot) == RejectReason.NOT_AFTER_PREVIOUS


def test_a_replaced_meter_starts_its_own_counters():
    REPLACED = NodeKey(b"\x15" * 32)
    registry = MeterRegistry.of(REGISTRY.registrations + (
        MeterRegistration(OPERATOR.public_key, NODE.public_key, REPLACED.public_key, "north", 1),))
    previous = reading(slot=SLOT - 900, import_total_wh=99_000, export_total_wh=99_000,
                       created_ms=SLOT_END_MS - 900_000)
    fresh = sign(reading(meter_key=REPLACED.public_key, import_total_wh=400, export_total_wh=1_000), REPLACED)
    assert validate_meter_reading(fresh, registry, RULES, previous)


def test_malformed_readings_cannot_be_built():
    with pytest.raises(DecodeError):
        reading(import_total_wh=399)                       # counter below the slot's own import
    with pytest.raises(DecodeError):
        reading(green_source=Source.GRID)                  # green Wh from a non-green source


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)), min_size=2, max_size=6),
       st.integers(1, 10**6), st.data())
def test_consecutive_readings_chain_and_any_counter_shift_is_a_contradiction(deltas, start, data):
    previous = None
    import_total, export_total = start, start
    slots = [SLOT - 900 * (len(deltas) - 1 - i) for i in range(len(deltas))]
    for slot, (imp, exp) in zip(slots, deltas):
        import_total, export_total = import_total + imp, export_total + exp
        body = reading(slot=slot, import_wh=imp, export_wh=exp, import_total_wh=import_total,
                       export_total_wh=export_total, created_ms=(slot + 900) * 1000)
        now = (slot + 900) * 1000 + 1
        assert validate_meter_reading(sign(body, METER), REGISTRY, RULES, previous, entry_time_ms=now) == body
        if previous is not None:
            shift = data.draw(st.integers(imp - import_total, 1_000).filter(lambda s: s != 0))
            shifted = replace(body, import_total_wh=import_total + shift)
            assert rejected(sign(shifted, METER), previous=previous, entry_time_ms=now) == \
                RejectReason.COUNTER_CONTRADICTION
        previous = body
