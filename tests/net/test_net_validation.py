"""The order-batch validator: one case per class of bad input, each rejected with its reason."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.identity import NodeKey
from p2pgrid.net.batching import pack_order_batches
from p2pgrid.net.testing import bad_order_batches, make_order
from p2pgrid.net.transport import ValidationResult
from p2pgrid.net.validation import (
    OrderBatchValidator, OrderRules, Reason, ReplayCache, replay_expiry_ms, validate_order_batch,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import MAX_BATCH_BYTES, Cancel, Order, OrderBatch, encode, message, sign

ACCEPT, IGNORE, REJECT = ValidationResult.ACCEPT, ValidationResult.IGNORE, ValidationResult.REJECT
NOW = 1_700_000_000_000
ALICE = NodeKey(bytes([7]) * 32)
MALLORY = NodeKey(bytes([9]) * 32)
RULES = OrderRules(zone="zone-a")


def order(number: int = 1, **changes) -> Order:
    return make_order(ALICE, RULES, NOW, number, **changes)


def batch(*items: bytes, zone: str = "zone-a") -> bytes:
    return encode(OrderBatch(zone, NOW, tuple(items)))


def signed(body=None) -> bytes:
    return sign(body if body is not None else order(), ALICE).encoded


@message("p2pgrid/test-not-an-order", 1, signer_field="owner")
@dataclasses.dataclass(frozen=True)
class NotAnOrder:
    owner: bytes = dataclasses.field(metadata={"size": 32})


BAD_INPUTS = bad_order_batches(ALICE, MALLORY, RULES, NOW) | {
    "not_an_order_kind": (batch(sign(NotAnOrder(ALICE.public_key), ALICE).encoded), Reason.MALFORMED),
}


ADMISSION_REASONS = {Reason.UNREGISTERED_OWNER, Reason.OVER_CAPACITY, Reason.UNFUNDED_BID}   # IGNORE only


def test_every_reason_but_not_yet_valid_has_a_bad_input():
    # Admission reasons are never REJECT (tests/trading/test_admission.py).
    assert {reason for _, reason in BAD_INPUTS.values()} == set(Reason) - {Reason.NOT_YET_VALID} - ADMISSION_REASONS


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_invalid_batch_is_rejected_with_its_reason(name):
    data, reason = BAD_INPUTS[name]
    validator = OrderBatchValidator(RULES)
    verdict = validator.validate(data, ALICE.public_key, NOW)
    assert verdict.result is REJECT
    assert verdict.reason is reason
    assert verdict.accepted == ()
    assert len(validator.replay) == 0, "a rejected batch must not be remembered"


def test_valid_batch_is_accepted_with_every_item():
    items = [signed(order(i)) for i in range(5)]
    items.append(sign(Cancel(order(0).order_id, ALICE.public_key, "zone-a", order().slot, NOW), ALICE).encoded)
    verdict = OrderBatchValidator(RULES).validate(batch(*items), ALICE.public_key, NOW)
    assert verdict.result is ACCEPT
    assert [s.encoded for s in verdict.accepted] == items


def test_replayed_batch_is_rejected():
    validator = OrderBatchValidator(RULES)
    data = batch(signed(order(1)))
    assert validator.validate(data, ALICE.public_key, NOW).result is ACCEPT
    verdict = validator.validate(data, ALICE.public_key, NOW + 1)
    assert (verdict.result, verdict.reason) == (REJECT, Reason.REPLAYED)


def test_replayed_order_in_a_new_batch_is_rejected():
    validator = OrderBatchValidator(RULES)
    assert validator.validate(batch(signed(order(1))), ALICE.public_key, NOW).result is ACCEPT
    verdict = validator.validate(batch(signed(order(2)), signed(order(1))), ALICE.public_key, NOW + 5)
    assert (verdict.result, verdict.reason) == (REJECT, Reason.REPLAYED)
    assert verdict.items[0].result is ACCEPT and verdict.items[1].reason is Reason.REPLAYED


def test_order_resent_with_new_nonce_but_same_id_is_a_replay():
    validator = OrderBatchValidator(RULES)
    validator.validate(batch(signed(order(1))), ALICE.public_key, NOW)
    verdict = validator.validate(batch(signed(order(1, nonce=99))), ALICE.public_key, NOW)
    assert verdict.reason is Reason.REPLAYED


def test_cancel_and_order_with_the_same_id_are_both_accepted():
    cancel = sign(Cancel(order(1).order_id, ALICE.public_key, "zone-a", order().slot, NOW), ALICE).encoded
    verdict = OrderBatchValidator(RULES).validate(batch(signed(order(1)), cancel), ALICE.public_key, NOW)
    assert verdict.result is ACCEPT and len(verdict.accepted) == 2


def test_order_expired_within_clock_disparity_is_ignored_not_rejected():
    just_expired = signed(order(created_ms=NOW - 60_000, expiry_ms=NOW - 500))
    verdict = OrderBatchValidator(RULES).validate(batch(just_expired), ALICE.public_key, NOW)
    assert (verdict.result, verdict.reason) == (IGNORE, Reason.NOT_YET_VALID)


def test_order_created_in_the_future_is_ignored():
    future = signed(order(created_ms=NOW + 60_000, expiry_ms=NOW + 600_000))
    verdict = OrderBatchValidator(RULES).validate(batch(future), ALICE.public_key, NOW)
    assert (verdict.result, verdict.reason) == (IGNORE, Reason.NOT_YET_VALID)


def test_batch_with_ignored_and_accepted_items_delivers_only_the_accepted():
    future = signed(order(2, created_ms=NOW + 60_000, expiry_ms=NOW + 600_000))
    verdict = OrderBatchValidator(RULES).validate(batch(signed(order(1)), future), ALICE.public_key, NOW)
    assert verdict.result is ACCEPT
    assert [s.body.order_id for s in verdict.accepted] == [order(1).order_id]


def test_foreign_items_are_allowed_when_rules_say_so():
    rules = dataclasses.replace(RULES, require_own_items=False)
    theirs = sign(make_order(MALLORY, rules, NOW, 1), MALLORY).encoded
    assert OrderBatchValidator(rules).validate(batch(theirs), ALICE.public_key, NOW).result is ACCEPT


def test_validation_does_not_change_the_replay_cache():
    cache = ReplayCache()
    validate_order_batch(batch(signed()), ALICE.public_key, RULES, NOW, cache)
    assert len(cache) == 0


def test_replay_cache_forgets_an_order_after_it_expires_and_the_expiry_rule_takes_over():
    validator = OrderBatchValidator(RULES)
    short = order(1, expiry_ms=NOW + 10_000)
    validator.validate(batch(signed(short)), ALICE.public_key, NOW)
    forget_at = replay_expiry_ms(short, RULES)
    validator.replay.forget_expired(forget_at)
    assert len(validator.replay) == 0
    verdict = validator.validate(batch(signed(short)), ALICE.public_key, forget_at)
    assert (verdict.result, verdict.reason) == (REJECT, Reason.EXPIRED)


def test_replay_cache_keeps_entries_until_their_expiry():
    cache = ReplayCache()
    cache.add("a", 100, now_ms=0)
    cache.add("b", 200, now_ms=0)
    cache.forget_expired(150)
    assert "a" not in cache and "b" in cache


def test_replay_cache_is_bounded_and_evicts_the_soonest_to_expire():
    cache = ReplayCache(max_entries=3)
    for key, expiry in [("late", 900), ("soon", 100), ("mid", 500), ("new", 700)]:
        cache.add(key, expiry, now_ms=0)
    assert len(cache) == 3
    assert "soon" not in cache
    assert all(key in cache for key in ("late", "mid", "new"))


def test_replay_cache_extends_an_entry_seen_again():
    cache = ReplayCache()
    cache.add("a", 100, now_ms=0)
    cache.add("a", 300, now_ms=50)
    cache.forget_expired(200)
    assert "a" in cache


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=400, unique=True))
def test_batches_stay_within_limits_and_keep_every_item_in_order(numbers):
    items = [signed(order(n)) for n in numbers]
    batches = pack_order_batches("zone-a", NOW, items)
    assert all(len(b) <= MAX_BATCH_BYTES for b in batches)
    validator = OrderBatchValidator(RULES)
    delivered = []
    for data in batches:
        verdict = validator.validate(data, ALICE.public_key, NOW)
        assert verdict.result is ACCEPT
        delivered += [s.encoded for s in verdict.accepted]
    assert delivered == items


def test_batching_splits_a_burst_into_few_messages():
    items = [signed(order(n)) for n in range(500)]
    batches = pack_order_batches("zone-a", NOW, items)
    assert 2 <= len(batches) <= 10
    assert all(len(b) > MAX_BATCH_BYTES // 2 for b in batches[:-1]), "batches should be filled"


def test_rules_depend_on_the_zone_calendar():
    hourly = OrderRules(zone="zone-a", slot_rules=SlotRules(length_s=3600))
    quarter = RULES.slot_rules.slot_of(NOW) + 2 * 3600 + 900
    verdict = OrderBatchValidator(hourly).validate(batch(signed(order(slot=quarter))), ALICE.public_key, NOW)
    assert verdict.reason is Reason.SLOT_CLOSED
