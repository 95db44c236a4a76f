"""Chain rules and state derivation: worked examples, invalid entries with their reasons, and
hypothesis properties (money conserved, derivation independent of order)."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import (
    ChainHead, EntryRejected, LedgerState, LockStatus, RejectReason, apply_entry, derive_state, process_entry,
    state_root, validate_signed_entry,
)
from p2pgrid.ledger.messages import GENESIS_HASH, Burn, Decline, Fill, Lock, Mint, Release, Transfer, entry_hash
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.units import trade_value

FX = LedgerFixture(credit_limit_uc=1_000)
GATEWAY = FX.gateway
ALICE, BOB, CAROL = seeded_key("alice"), seeded_key("bob"), seeded_key("carol")
NOW = 1_000_000
DEADLINE = NOW + 60_000
ORDER = b"o" * 16


LOG: list = []   # every entry ``run`` accepted in the current test, for derivation checks


@pytest.fixture(autouse=True)
def _fresh_log():
    LOG.clear()


def run(state, key, kind, body, now=NOW):
    """Validate and apply ``key``'s next entry dated ``now``, as a validator would; log it if accepted."""
    signed = FX.entry_on(state, key, kind, body, time_ms=now)
    process_entry(state, signed, FX.rules)
    LOG.append(signed)
    return signed


def pass_deadline(state, key, now=DEADLINE):
    """``key`` certifies an entry dated ``now`` (its chain has passed that time)."""
    run(state, GATEWAY, "mint", Mint(key.public_key, 1))
    run(state, key, "burn", Burn(1), now=now)


def funded(*pairs):
    state = LedgerState()
    for key, amount in pairs:
        run(state, GATEWAY, "mint", Mint(key.public_key, amount))
    return state


def lock_body(take=b"t" * 16, qty=1000, price=200_000, amount=None, order_size=1500, owner=None, deadline=DEADLINE):
    return Lock(take, BOB.public_key, ORDER, (owner or BOB).public_key, order_size, qty, price,
                trade_value(qty, price) if amount is None else amount, deadline)


def rejected(state, key, kind, body, reason, now=NOW):
    before = state_root(state)
    with pytest.raises(EntryRejected) as info:
        run(state, key, kind, body, now)
    assert info.value.reason is reason
    assert state_root(state) == before, "a rejected entry must leave the state untouched"
    return info.value


# --- worked examples -------------------------------------------------------------------------

def test_mint_moves_credits_from_the_gateway_and_conserves_money():
    state = funded((ALICE, 5_000))
    assert state.balance(ALICE.public_key) == 5_000
    assert state.balance(GATEWAY.public_key) == -5_000
    assert state.money_total() == 0


def test_transfer_then_burn_returns_credits_to_the_gateway():
    state = funded((ALICE, 5_000))
    run(state, ALICE, "transfer", Transfer(BOB.public_key, 2_000))
    run(state, BOB, "burn", Burn(500))
    assert (state.balance(ALICE.public_key), state.balance(BOB.public_key)) == (3_000, 1_500)
    assert state.balance(GATEWAY.public_key) == -4_500
    assert state.money_total() == 0


def test_transfer_may_use_the_credit_limit_exactly():
    state = funded((ALICE, 100))
    run(state, ALICE, "transfer", Transfer(BOB.public_key, 1_100))
    assert state.balance(ALICE.public_key) == -1_000


def test_lock_then_fill_pays_the_seller_and_refunds_the_rest_of_the_lock():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body(qty=1000, price=200_000, amount=250_000))
    assert state.balance(ALICE.public_key) == 750_000
    assert state.locked_total() == 250_000
    run(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 600, 200_000))
    assert state.balance(BOB.public_key) == 120_000                  # 600 Wh × 0.2 credit/kWh
    assert state.balance(ALICE.public_key) == 1_000_000 - 120_000
    assert state.locks[b"t" * 16].status is LockStatus.FILLED
    assert state.orders[(BOB.public_key, ORDER)].filled_wh == 600
    assert state.money_total() == 0


def test_release_once_the_sellers_chain_passed_the_deadline_returns_the_whole_lock():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    pass_deadline(state, BOB)
    run(state, ALICE, "release", Release(b"t" * 16))
    assert state.balance(ALICE.public_key) == 1_000_000
    assert state.locks[b"t" * 16].status is LockStatus.RELEASED
    assert state.money_total() == 0


def test_bid_order_locks_are_bounded_by_the_order_size():
    state = funded((ALICE, 10_000_000))
    body = Lock(b"1" * 16, BOB.public_key, ORDER, ALICE.public_key, 1500, 1000, 100_000, 100_000, DEADLINE)
    run(state, ALICE, "lock", body)
    over = Lock(b"2" * 16, CAROL.public_key, ORDER, ALICE.public_key, 1500, 600, 100_000, 60_000, DEADLINE)
    rejected(state, ALICE, "lock", over, RejectReason.ORDER_OVERFILLED)


def test_state_root_is_the_same_whatever_order_certified_entries_arrive_in():
    state = funded((ALICE, 1_000_000), (CAROL, 50_000))
    for key, kind, body in [(ALICE, "lock", lock_body()), (CAROL, "transfer", Transfer(ALICE.public_key, 7)),
                            (BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 1000, 200_000)),
                            (ALICE, "transfer", Transfer(CAROL.public_key, 9))]:
        run(state, key, kind, body)
    for seed in range(5):
        shuffled = LOG[:]
        random.Random(seed).shuffle(shuffled)
        derived, pending = derive_state(shuffled, FX.rules)
        assert not pending
        assert state_root(derived) == state_root(state)


def test_a_fill_waits_for_its_lock_when_derived_from_an_incomplete_set():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    fill = run(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000))
    derived, pending = derive_state([LOG[0], fill], FX.rules)
    assert list(pending) == [(BOB.public_key, 0)]


# --- invalid entries, each with its reason ---------------------------------------------------

def test_invalid_bad_signature():
    state = funded((ALICE, 100))
    signed = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 10))
    forged = bytearray(signed.encoded)
    forged[-1] ^= 1
    with pytest.raises(EntryRejected) as info:
        validate_signed_entry(bytes(forged))
    assert info.value.reason is RejectReason.BAD_SIGNATURE


def test_invalid_wrong_prev_hash():
    state = funded((ALICE, 100))
    run(state, ALICE, "transfer", Transfer(BOB.public_key, 10))
    bad = FX.entry(ALICE, ChainHead(1, GENESIS_HASH), "transfer", Transfer(BOB.public_key, 10))
    with pytest.raises(EntryRejected) as info:
        process_entry(state, bad, FX.rules)
    assert info.value.reason is RejectReason.WRONG_PREV_HASH


def test_invalid_seq_gap():
    state = funded((ALICE, 100))
    bad = FX.entry(ALICE, ChainHead(2, GENESIS_HASH), "transfer", Transfer(BOB.public_key, 10))
    with pytest.raises(EntryRejected) as info:
        process_entry(state, bad, FX.rules)
    assert info.value.reason is RejectReason.SEQ_GAP


def test_invalid_seq_reused():
    state = funded((ALICE, 100))
    run(state, ALICE, "transfer", Transfer(BOB.public_key, 10))
    again = FX.entry(ALICE, ChainHead(0, GENESIS_HASH), "transfer", Transfer(CAROL.public_key, 10))
    with pytest.raises(EntryRejected) as info:
        process_entry(state, again, FX.rules)
    assert info.value.reason is RejectReason.SEQ_REUSED


def test_invalid_overdraft_beyond_the_credit_limit():
    state = funded((ALICE, 100))
    rejected(state, ALICE, "transfer", Transfer(BOB.public_key, 1_101), RejectReason.OVERDRAFT)


def test_invalid_lock_beyond_the_credit_limit():
    state = funded((ALICE, 100))
    rejected(state, ALICE, "lock", lock_body(qty=1000, price=200_000), RejectReason.OVERDRAFT)


def test_invalid_mint_by_an_ordinary_account():
    rejected(funded((ALICE, 100)), ALICE, "mint", Mint(BOB.public_key, 5), RejectReason.WRONG_KIND_FOR_ACCOUNT)


def test_invalid_burn_by_the_gateway():
    rejected(LedgerState(), GATEWAY, "burn", Burn(5), RejectReason.WRONG_KIND_FOR_ACCOUNT)


def test_invalid_wrong_zone():
    other = LedgerFixture(zone="otherzone")
    signed = other.entry(ALICE, ChainHead(), "transfer", Transfer(BOB.public_key, 1))
    with pytest.raises(EntryRejected) as info:
        process_entry(funded((ALICE, 10)), signed, FX.rules)
    assert info.value.reason is RejectReason.WRONG_ZONE


def test_invalid_unknown_kind():
    from p2pgrid.ledger.messages import Entry
    from p2pgrid.wire import sign
    signed = sign(Entry(FX.zone, ALICE.public_key, 0, GENESIS_HASH, 0, "teleport", b""), ALICE)
    with pytest.raises(EntryRejected) as info:
        process_entry(LedgerState(), signed, FX.rules)
    assert info.value.reason is RejectReason.UNKNOWN_KIND


def test_invalid_fill_without_lock():
    state = funded((ALICE, 1_000_000))
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000), RejectReason.NO_LOCK)


def test_invalid_fill_beyond_order_size():
    state = funded((ALICE, 1_000_000), (CAROL, 1_000_000))
    run(state, ALICE, "lock", lock_body(take=b"a" * 16, qty=1000, order_size=1500))
    run(state, CAROL, "lock", Lock(b"c" * 16, BOB.public_key, ORDER, BOB.public_key, 1500, 1000, 200_000,
                                   200_000, DEADLINE))
    run(state, BOB, "fill", Fill(b"a" * 16, ALICE.public_key, ORDER, 1000, 200_000))
    rejected(state, BOB, "fill", Fill(b"c" * 16, CAROL.public_key, ORDER, 501, 200_000), RejectReason.ORDER_OVERFILLED)
    run(state, BOB, "fill", Fill(b"c" * 16, CAROL.public_key, ORDER, 500, 200_000))
    assert state.orders[(BOB.public_key, ORDER)].filled_wh == 1500


def test_invalid_fill_beyond_its_lock():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body(qty=100))
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 101, 200_000), RejectReason.FILL_EXCEEDS_LOCK)


def test_invalid_fill_of_a_consumed_lock():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    run(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000))
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000), RejectReason.LOCK_CLOSED)


def test_invalid_fill_by_someone_the_lock_does_not_name():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    rejected(state, CAROL, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000), RejectReason.LOCK_MISMATCH)


def test_invalid_fill_at_another_price():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 100_000), RejectReason.LOCK_MISMATCH)


def test_invalid_fill_after_the_deadline():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000), RejectReason.DEADLINE_PASSED,
             now=DEADLINE)


def test_a_release_waits_while_the_sellers_chain_has_not_passed_the_deadline():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    exc = rejected(state, ALICE, "release", Release(b"t" * 16), RejectReason.DEADLINE_NOT_REACHED, now=DEADLINE + 1)
    assert not exc.is_final, "the buyer's own clock proves nothing: it waits for the seller's chain"


def test_a_release_of_a_filled_lock_is_refused_for_good():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    run(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000))
    pass_deadline(state, BOB)
    assert rejected(state, ALICE, "release", Release(b"t" * 16), RejectReason.LOCK_CLOSED).is_final


def test_once_the_sellers_chain_passed_the_deadline_it_cannot_fill():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    pass_deadline(state, BOB)
    # the seller's next entry is dated at least as late as its last: past the deadline
    rejected(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000), RejectReason.DEADLINE_PASSED)


def test_a_decline_returns_the_lock_at_once_and_a_later_release_is_a_no_op():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    run(state, BOB, "decline", Decline(b"t" * 16))
    assert state.balance(ALICE.public_key) == 1_000_000
    pass_deadline(state, BOB)
    run(state, ALICE, "release", Release(b"t" * 16))
    assert state.balance(ALICE.public_key) == 1_000_000 and state.money_total() == 0
    for seed in range(4):    # decline and release in either order derive one state
        shuffled = LOG[:]
        random.Random(seed).shuffle(shuffled)
        assert state_root(derive_state(shuffled, FX.rules)[0]) == state_root(state)


def test_only_the_seller_declines_and_not_a_filled_lock():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    rejected(state, CAROL, "decline", Decline(b"t" * 16), RejectReason.LOCK_MISMATCH)
    run(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, ORDER, 10, 200_000))
    rejected(state, BOB, "decline", Decline(b"t" * 16), RejectReason.LOCK_CLOSED)


def test_an_entry_dated_before_its_predecessor_is_refused():
    state = funded((ALICE, 1_000))
    run(state, ALICE, "transfer", Transfer(BOB.public_key, 1), now=NOW)
    from p2pgrid.ledger.chain import body_of_kind
    from p2pgrid.ledger.messages import Entry
    from p2pgrid.wire import sign
    head = state.head(ALICE.public_key)
    backdated = sign(Entry(FX.zone, ALICE.public_key, head.next_seq, head.last_hash, NOW - 1, "burn",   # a faulty owner
                           body_of_kind("burn", Burn(1))), ALICE)
    with pytest.raises(EntryRejected) as info:
        process_entry(state, backdated, FX.rules)
    assert info.value.reason is RejectReason.TIME_BACKWARDS and info.value.is_final


def test_settlement_obligations_never_turn_an_accounts_own_debit_invalid():
    from p2pgrid.ledger.chain import add_obligation, validate_entry
    state = funded((ALICE, 500))
    spend = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 1_500))
    validate_entry(state, spend, FX.rules)          # 500 - 1500 = -1000: exactly the credit limit
    state.balances[ALICE.public_key] -= 400          # a settlement charged Alice 400 µc meanwhile
    state.balances[GATEWAY.public_key] += 400
    add_obligation(state, ALICE.public_key, 400)
    validate_entry(state, spend, FX.rules)          # still valid: obligations are not spending


def test_invalid_lock_smaller_than_the_trade_value():
    state = funded((ALICE, 1_000_000))
    rejected(state, ALICE, "lock", lock_body(amount=1), RejectReason.LOCK_TOO_SMALL)


def test_invalid_take_locked_twice():
    state = funded((ALICE, 1_000_000))
    run(state, ALICE, "lock", lock_body())
    rejected(state, ALICE, "lock", lock_body(), RejectReason.DUPLICATE_TAKE)


def test_invalid_transfer_to_oneself():
    rejected(funded((ALICE, 100)), ALICE, "transfer", Transfer(ALICE.public_key, 1), RejectReason.BAD_BODY)


def test_apply_entry_rejects_a_certified_entry_that_does_not_extend_the_head():
    from p2pgrid.ledger.chain import ChainInconsistent
    state = funded((ALICE, 100))
    bad = FX.entry(ALICE, ChainHead(3, GENESIS_HASH), "transfer", Transfer(BOB.public_key, 1))
    with pytest.raises(ChainInconsistent):
        apply_entry(state, bad, FX.rules)


# --- properties ------------------------------------------------------------------------------

ACCOUNTS = [ALICE, BOB, CAROL, seeded_key("dave")]

operation = st.one_of(
    st.tuples(st.just("mint"), st.integers(0, 3), st.integers(1, 10**9)),
    st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 10**6)),
    st.tuples(st.just("burn"), st.integers(0, 3), st.integers(1, 10**6)),
    st.tuples(st.just("lock"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 5000), st.integers(0, 10**6)),
    st.tuples(st.just("fill"), st.integers(0, 40), st.integers(1, 5000)),
    st.tuples(st.just("release"), st.integers(0, 40)),
    st.tuples(st.just("decline"), st.integers(0, 40)),
    st.tuples(st.just("pass"), st.integers(0, 3)),
)


def _attempt(state, op, takes):
    kind = op[0]
    try:
        if kind == "mint":
            run(state, GATEWAY, "mint", Mint(ACCOUNTS[op[1]].public_key, op[2]))
        elif kind == "transfer":
            run(state, ACCOUNTS[op[1]], "transfer", Transfer(ACCOUNTS[op[2]].public_key, op[3]))
        elif kind == "burn":
            run(state, ACCOUNTS[op[1]], "burn", Burn(op[2]))
        elif kind == "lock":
            buyer, seller = ACCOUNTS[op[1]], ACCOUNTS[op[2]]
            take = len(takes).to_bytes(16, "big")
            run(state, buyer, "lock", Lock(take, seller.public_key, ORDER, seller.public_key, 10_000, op[3], op[4],
                                           trade_value(op[3], op[4]) + 7, DEADLINE))
            takes.append((take, buyer, seller, op[4]))
        elif kind == "fill" and takes:
            take, buyer, seller, price = takes[op[1] % len(takes)]
            run(state, seller, "fill", Fill(take, buyer.public_key, ORDER, op[2], price))
        elif kind == "release" and takes:
            take, buyer, _, _ = takes[op[1] % len(takes)]
            run(state, buyer, "release", Release(take), now=DEADLINE)
        elif kind == "decline" and takes:
            take, _, seller, _ = takes[op[1] % len(takes)]
            run(state, seller, "decline", Decline(take))
        elif kind == "pass":
            run(state, ACCOUNTS[op[1]], "transfer", Transfer(ACCOUNTS[(op[1] + 1) % 4].public_key, 1), now=DEADLINE)
    except EntryRejected:
        pass   # invalid operations are part of the input: they must simply change nothing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_money_is_conserved_exactly_under_any_sequence_of_operations(ops):
    LOG.clear()
    state = LedgerState()
    takes: list = []
    for op in ops:
        _attempt(state, op, takes)
        assert state.money_total() == 0
        for key in ACCOUNTS:
            assert state.balance(key.public_key) >= -FX.rules.credit_limit_uc
    for record in state.locks.values():     # a lock is filled or handed back, never both
        assert record.status in (LockStatus.OPEN, LockStatus.FILLED, LockStatus.RELEASED)
    for (owner, _), progress in state.orders.items():
        assert progress.filled_wh <= progress.size_wh
    derived, pending = derive_state(reversed(LOG), FX.rules)
    assert not pending and state_root(derived) == state_root(state)


def test_entry_hash_covers_the_signature():
    state = funded((ALICE, 100))
    signed = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 1))
    assert len(entry_hash(signed)) == 32 and entry_hash(signed) != entry_hash(FX.entry_on(state, ALICE, "burn", Burn(1)))


def test_a_refund_pays_obligations_back_on_a_scratch_overlay_as_on_the_state():
    from p2pgrid.ledger.chain import add_obligation, settle_obligation
    state = funded((ALICE, 100))
    add_obligation(state, ALICE.public_key, 300)
    scratch = state.overlay()            # what a validator judges a batch on
    settle_obligation(scratch, ALICE.public_key, 500)
    settle_obligation(state, ALICE.public_key, 500)
    assert scratch.obligations(ALICE.public_key) == state.obligations(ALICE.public_key) == 0
