"""A buyer whose seller vanished gets its lock back (``refund``) against a quorum of validators'
``LockExpiry`` promises, and a refund and a consumer of the lock can never both be certified.

The promise is where a clock enters — only to decide *when* a validator promises. The refund's
validity reads no clock: it is a function of the entry (the promises) and the certified lock.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import LedgerState, LockStatus, RejectReason, lock_fate_key, process_entry
from p2pgrid.ledger.committee import assemble_certificate, decide_expiry, decide_vote, make_vote
from p2pgrid.ledger.messages import Fill, Lock, LockExpiry, Mint, Refund, entry_hash
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.units import trade_value
from p2pgrid.wire import sign

FX = LedgerFixture()
ALICE, BOB, MALLORY = (seeded_key(n) for n in ("alice", "bob", "mallory"))
NOW = 1_000_000
DEADLINE = NOW + 60_000
GRACE = FX.rules.lock_expiry_grace_ms
TAKE = b"t" * 16
ORDER = b"o" * 16


def locked_state():
    state = LedgerState()
    process_entry(state, FX.entry_on(state, FX.gateway, "mint", Mint(ALICE.public_key, 10**6), NOW), FX.rules)
    lock = Lock(TAKE, BOB.public_key, ORDER, BOB.public_key, 100, 100, 1000, trade_value(100, 1000), DEADLINE)
    process_entry(state, FX.entry_on(state, ALICE, "lock", lock, NOW), FX.rules)
    return state


def promise(validator, take_id=TAKE, zone=FX.zone, epoch=0) -> bytes:
    return sign(LockExpiry(validator.public_key, zone, epoch, take_id), validator).encoded


def refund_verdict(state, expiries, account=ALICE):
    entry = FX.entry_on(state, account, "refund", Refund(TAKE, tuple(expiries)), DEADLINE + GRACE)
    decision = decide_vote(state, {}, [entry.encoded], FX.rules, DEADLINE + GRACE)
    return entry, decision


def test_a_quorum_of_promises_returns_the_lock_to_the_buyer():
    state = locked_state()
    before = state.balance(ALICE.public_key)
    entry, decision = refund_verdict(state, [promise(v) for v in FX.validators[:3]])
    assert decision.accepted
    process_entry(state, entry, FX.rules)
    assert state.locks[TAKE].status is LockStatus.RELEASED
    assert state.balance(ALICE.public_key) == before + trade_value(100, 1000)


def test_too_few_or_foreign_promises_are_refused_for_good():
    state = locked_state()
    cases = {
        "two of four": [promise(v) for v in FX.validators[:2]],
        "one validator three times": [promise(FX.validators[0])] * 3,
        "a non-member": [promise(v) for v in FX.validators[:2]] + [promise(MALLORY)],
        "another lock": [promise(v) for v in FX.validators[:2]] + [promise(FX.validators[2], take_id=b"x" * 16)],
        "another epoch": [promise(v) for v in FX.validators[:2]] + [promise(FX.validators[2], epoch=1)],
        "not a promise": [promise(v) for v in FX.validators[:2]] + [b"\x93garbage"],
    }
    for name, expiries in cases.items():
        _, decision = refund_verdict(state, expiries)
        assert not decision.accepted, name
        assert decision.rejections[0].reason == RejectReason.BAD_BODY.value and decision.rejections[0].final, name


def test_only_the_buyer_refunds_and_never_a_filled_lock():
    state = locked_state()
    promises = [promise(v) for v in FX.validators]
    _, decision = refund_verdict(state, promises, account=BOB)
    assert decision.rejections[0].reason == RejectReason.LOCK_MISMATCH.value
    process_entry(state, FX.entry_on(state, BOB, "fill", Fill(TAKE, ALICE.public_key, ORDER, 100, 1000), NOW + 1),
                  FX.rules)
    _, decision = refund_verdict(state, promises)
    assert decision.rejections[0].reason == RejectReason.LOCK_CLOSED.value and decision.rejections[0].final


def test_a_validator_promises_only_after_the_grace_and_only_if_it_voted_for_no_consumer():
    state = locked_state()
    early = decide_expiry(state, {}, TAKE, FX.rules, DEADLINE + GRACE - 1)
    assert not early.promised and not early.final           # asked again later
    unknown = decide_expiry(LedgerState(), {}, TAKE, FX.rules, DEADLINE + GRACE)
    assert not unknown.promised and not unknown.final        # the lock is not here yet
    fill = FX.entry_on(state, BOB, "fill", Fill(TAKE, ALICE.public_key, ORDER, 100, 1000), DEADLINE - 1)
    voted: dict = {}
    decision = decide_vote(state, voted, [fill.encoded], FX.rules, DEADLINE)
    assert decision.accepted and (lock_fate_key(TAKE), entry_hash(fill)) in decision.new_records
    voted.update(decision.new_records)
    after_fill_vote = decide_expiry(state, voted, TAKE, FX.rules, DEADLINE + GRACE)
    assert not after_fill_vote.promised
    fresh = decide_expiry(state, {}, TAKE, FX.rules, DEADLINE + GRACE)
    assert fresh.promised and fresh.record is not None and fresh.record[0] == lock_fate_key(TAKE)


def test_a_validator_that_promised_refuses_every_consumer_and_promises_again():
    state = locked_state()
    voted: dict = {}
    first = decide_expiry(state, voted, TAKE, FX.rules, DEADLINE + GRACE)
    voted.update([first.record])
    again = decide_expiry(state, voted, TAKE, FX.rules, DEADLINE + GRACE + 1)
    assert again.promised and again.record is None
    fill = FX.entry_on(state, BOB, "fill", Fill(TAKE, ALICE.public_key, ORDER, 100, 1000), DEADLINE - 1)
    decision = decide_vote(state, voted, [fill.encoded], FX.rules, DEADLINE + GRACE + 2)
    assert not decision.accepted
    assert decision.rejections[0].reason == RejectReason.ALREADY_VOTED.value and decision.rejections[0].final


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fill", "expiry"]), st.integers(0, 3),
                          st.integers(DEADLINE - 10_000, DEADLINE + 2 * GRACE)), max_size=24),
       st.integers(0, 3))
def test_a_consumer_and_a_refund_never_both_reach_a_quorum(events, byzantine):
    """Four validators, one of them byzantine (it votes for the fill *and* promises). The honest
    ones get fill vote requests and expiry requests in any order and at any clock."""
    state = locked_state()
    fill = FX.entry_on(state, BOB, "fill", Fill(TAKE, ALICE.public_key, ORDER, 100, 1000), DEADLINE - 1)
    voted = [dict() for _ in FX.validators]
    fill_votes = [make_vote(FX.committee, FX.validators[byzantine], [entry_hash(fill)])]
    promises = [promise(FX.validators[byzantine])]
    for what, v, now in events:
        if v == byzantine:
            continue
        if what == "fill":
            decision = decide_vote(state, voted[v], [fill.encoded], FX.rules, now)
            if decision.accepted:
                voted[v].update(decision.new_records)
                fill_votes.append(make_vote(FX.committee, FX.validators[v], decision.entry_hashes))
        else:
            decision = decide_expiry(state, voted[v], TAKE, FX.rules, now)
            if decision.promised:
                if decision.record is not None:
                    voted[v].update([decision.record])
                promises.append(promise(FX.validators[v]))
    fill_certified = assemble_certificate(FX.committee, fill_votes) is not None
    _, refund = refund_verdict(state, promises)
    assert not (fill_certified and refund.accepted)


async def test_a_validators_promise_survives_its_restart(tmp_path):
    """The promise is durable before it is sent: after a restart the validator still refuses the
    lock's fill and gives the same promise again."""
    from p2pgrid.ledger.messages import ExpiryRequest, VoteRequest
    from p2pgrid.ledger.service import LedgerConfig
    from p2pgrid.ledger.testing import open_ledger_node
    from p2pgrid.net.memory import MemoryNetwork

    config = LedgerConfig(FX.rules, FX.committee, vote_timeout_s=5.0, sync_interval_s=0)
    state = LedgerState()
    mint = FX.entry_on(state, FX.gateway, "mint", Mint(ALICE.public_key, 10**6), NOW)
    process_entry(state, mint, FX.rules)
    lock = FX.entry_on(state, ALICE, "lock", Lock(TAKE, BOB.public_key, ORDER, BOB.public_key, 100, 100, 1000,
                                                   trade_value(100, 1000), DEADLINE), NOW)
    process_entry(state, lock, FX.rules)
    fill = FX.entry_on(state, BOB, "fill", Fill(TAKE, ALICE.public_key, ORDER, 100, 1000), DEADLINE - 1)
    validator, db = FX.validators[0], tmp_path / "validator.db"
    now = [DEADLINE + GRACE]
    async with open_ledger_node(MemoryNetwork(), validator, db, config, clock=lambda: now[0]) as ledger:
        await ledger.receive_certified(FX.certify([mint, lock]))
        reply = await ledger.handle_expiry_request(ExpiryRequest(1, TAKE))
        assert reply.expiry and not reply.reason
    async with open_ledger_node(MemoryNetwork(), validator, db, config, clock=lambda: now[0]) as ledger:
        vote = await ledger.handle_vote_request(VoteRequest(2, (fill.encoded,)))
        assert not vote.vote and vote.rejections[0].reason == RejectReason.ALREADY_VOTED.value
        assert vote.rejections[0].final and vote.refusal
        again = await ledger.handle_expiry_request(ExpiryRequest(3, TAKE))
        assert again.expiry == reply.expiry
