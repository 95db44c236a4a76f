"""The liveness invariant of the ledger (FastPay's): an entry's validity is a deterministic,
monotone function of the entry and its certified causal past.

* The verdict of ``decide_vote`` does not depend on the validator's clock (beyond "dated too far
  ahead: wait") nor on which *other* certified entries it holds beyond the entry's dependencies:
  a validator that holds more never refuses what one holding less voted for.
* Hence honest validators never split on one entry (some voting, some refusing it for good), a
  certificate and a quorum of refusals never exist for one entry, and two locks racing for one
  take id never both certify nor split the derived state.
"""

import itertools
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, LockStatus, derive_state, process_entry, state_root,
)
from p2pgrid.ledger.committee import assemble_certificate, decide_vote, make_vote
from p2pgrid.ledger.messages import Burn, Decline, Fill, Lock, Mint, Release, Transfer, entry_hash
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.units import trade_value

FX = LedgerFixture(credit_limit_uc=500)
ACCOUNTS = [seeded_key(name) for name in ("alice", "bob", "carol", "dave")]
NOW = 1_000_000
DEADLINE = NOW + 60_000
ORDER = b"o" * 16

operation = st.one_of(
    st.tuples(st.just("mint"), st.integers(0, 3), st.integers(1, 10**6)),
    st.tuples(st.just("transfer"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 10**5)),
    st.tuples(st.just("lock"), st.integers(0, 3), st.integers(0, 3), st.integers(1, 500), st.integers(0, 10**5)),
    st.tuples(st.just("fill"), st.integers(0, 30), st.integers(1, 500)),
    st.tuples(st.just("decline"), st.integers(0, 30)),
    st.tuples(st.just("release"), st.integers(0, 30)),
    st.tuples(st.just("pass"), st.integers(0, 3)),
)


def entry_for(state, op, takes, time_ms):
    """The signed entry ``op`` describes on ``state`` (None if it names nothing yet)."""
    kind = op[0]
    if kind == "mint":
        return FX.entry_on(state, FX.gateway, "mint", Mint(ACCOUNTS[op[1]].public_key, op[2]), time_ms)
    if kind == "transfer":
        if op[1] == op[2]:
            return None
        return FX.entry_on(state, ACCOUNTS[op[1]], "transfer", Transfer(ACCOUNTS[op[2]].public_key, op[3]), time_ms)
    if kind == "lock":
        if op[1] == op[2]:
            return None
        buyer, seller = ACCOUNTS[op[1]], ACCOUNTS[op[2]]
        take = len(takes).to_bytes(16, "big")
        takes.append((take, buyer, seller, op[4]))
        return FX.entry_on(state, buyer, "lock", Lock(take, seller.public_key, ORDER, seller.public_key, 10_000,
                                                      op[3], op[4], trade_value(op[3], op[4]), DEADLINE), time_ms)
    if kind == "pass":
        return FX.entry_on(state, ACCOUNTS[op[1]], "burn", Burn(1), DEADLINE)
    if not takes:
        return None
    take, buyer, seller, price = takes[op[1] % len(takes)]
    if kind == "fill":
        return FX.entry_on(state, seller, "fill", Fill(take, buyer.public_key, ORDER, op[2], price), time_ms)
    if kind == "decline":
        return FX.entry_on(state, seller, "decline", Decline(take), time_ms)
    return FX.entry_on(state, buyer, "release", Release(take), time_ms)


def certified_history(ops, rng):
    """Apply ``ops`` as certified entries (those valid when made); returns the log and the takes."""
    state, log, takes = LedgerState(), [], []
    opening = [("mint", i, 200_000 * (i + 1)) for i in range(len(ACCOUNTS))]   # funds, so most operations apply
    for op in opening + list(ops):
        entry = entry_for(state, op, takes, NOW + rng.randrange(0, 120_000))
        if entry is None:
            continue
        try:
            process_entry(state, entry, FX.rules)
        except EntryRejected:
            continue
        log.append(entry)
    return state, log, takes


def partial_view(log, candidate_account, rng):
    """What a validator that missed some gossip holds: every chain cut at a random point, except
    the candidate's own chain (a validator judges an entry only on top of its certified head)."""
    lengths: dict = {}
    for entry in log:
        lengths[entry.body.account] = entry.body.seq + 1
    cuts = {account: rng.randrange(0, n + 1) for account, n in sorted(lengths.items()) if account != candidate_account}
    kept = [e for e in log if e.body.account == candidate_account or e.body.seq < cuts[e.body.account]]
    state, pending = derive_state(kept, FX.rules)
    return state if not any(a == candidate_account for a, _ in pending) else None


def verdict(decision):
    if decision.accepted:
        return "vote"
    rejection = decision.rejections[0]
    return f"refuse:{rejection.reason}" if rejection.final else "wait"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=4, max_size=30), operation, st.integers(0, 2**32))
def test_no_vote_time_rule_can_flip_a_verdict(ops, candidate_op, seed):
    rng = random.Random(seed)
    full, log, takes = certified_history(ops, rng)
    candidate = entry_for(full, candidate_op, list(takes), NOW + rng.randrange(0, 120_000))
    if candidate is None:
        return
    at_full = [verdict(decide_vote(full, {}, [candidate.encoded], FX.rules, clock))
               for clock in (candidate.body.time_ms, candidate.body.time_ms + 10**9)]
    assert at_full[0] == at_full[1], "a later clock changed the verdict"
    for _ in range(4):
        view = partial_view(log, candidate.body.account, rng)
        if view is None:
            continue
        at_view = verdict(decide_vote(view, {}, [candidate.encoded], FX.rules, candidate.body.time_ms))
        if at_view == "vote":
            assert at_full[0] == "vote", f"voted with less certified history, {at_full[0]} with more"
        if at_view.startswith("refuse"):   # (the reason may differ: more history, more to object to)
            assert at_full[0].startswith("refuse"), f"refused for good with less history, {at_full[0]} with more"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=25), operation, st.integers(0, 2**32))
def test_a_certificate_and_a_quorum_of_refusals_never_coexist_for_one_entry(ops, candidate_op, seed):
    rng = random.Random(seed)
    full, log, takes = certified_history(ops, rng)
    candidate = entry_for(full, candidate_op, list(takes), NOW + rng.randrange(0, 120_000))
    if candidate is None:
        return
    views = [full] + [partial_view(log, candidate.body.account, rng) for _ in range(2)]
    verdicts = [verdict(decide_vote(v, {}, [candidate.encoded], FX.rules, candidate.body.time_ms + 10**6))
                for v in views if v is not None]
    honest_votes = verdicts.count("vote")
    honest_refusals = sum(v.startswith("refuse") for v in verdicts)
    assert not (honest_votes and honest_refusals), f"honest validators split: {verdicts}"
    # the byzantine fourth validator both votes and refuses: neither side may reach a quorum twice
    assert not (honest_votes + 1 >= FX.committee.quorum and honest_refusals + 1 >= FX.committee.quorum)


def test_two_locks_racing_for_one_take_id_never_both_certify_nor_split_the_state():
    base = LedgerState()
    mints = []
    for key in ACCOUNTS[:2]:
        mint = FX.entry_on(base, FX.gateway, "mint", Mint(key.public_key, 10**6), NOW)
        process_entry(base, mint, FX.rules)
        mints.append(mint)
    seller = ACCOUNTS[2]
    take = b"t" * 16
    locks = [FX.entry_on(base, buyer, "lock", Lock(take, seller.public_key, ORDER, seller.public_key, 100, 100, 1000,
                                                    trade_value(100, 1000), DEADLINE), NOW)
             for buyer in ACCOUNTS[:2]]
    byzantine = FX.validators[3]
    for order in itertools.permutations([(v, p) for v in range(3) for p in range(2)]):
        voted = [dict() for _ in range(3)]
        votes = {p: [make_vote(FX.committee, byzantine, [entry_hash(locks[p])])] for p in range(2)}
        for validator, proposal in order:
            decision = decide_vote(base, voted[validator], [locks[proposal].encoded], FX.rules, NOW)
            if decision.accepted:
                voted[validator].update(decision.new_records)
                votes[proposal].append(make_vote(FX.committee, FX.validators[validator], decision.entry_hashes))
        certified = [p for p in range(2) if assemble_certificate(FX.committee, votes[p]) is not None]
        assert len(certified) <= 1
        roots = {state_root(derive_state(random.Random(i).sample(mints + [locks[p] for p in certified],
                                                                 len(mints) + len(certified)), FX.rules)[0])
                 for i in range(3)}
        assert len(roots) == 1


def test_a_lock_filled_before_the_deadline_is_filled_at_every_validator_and_never_released():
    state = LedgerState()
    alice, bob = ACCOUNTS[:2]
    for entry in (FX.entry_on(state, FX.gateway, "mint", Mint(alice.public_key, 10**6), NOW),):
        process_entry(state, entry, FX.rules)
    lock = FX.entry_on(state, alice, "lock", Lock(b"t" * 16, bob.public_key, ORDER, bob.public_key, 100, 100, 1000,
                                                   trade_value(100, 1000), DEADLINE), NOW)
    process_entry(state, lock, FX.rules)
    fill = FX.entry_on(state, bob, "fill", Fill(b"t" * 16, alice.public_key, ORDER, 100, 1000), DEADLINE - 1)
    # validators judging the fill long after the deadline still vote: it is dated before it
    assert all(decide_vote(state, {}, [fill.encoded], FX.rules, t).accepted for t in (DEADLINE - 1, DEADLINE + 10**8))
    process_entry(state, fill, FX.rules)
    assert state.locks[b"t" * 16].status is LockStatus.FILLED
    release = FX.entry_on(state, alice, "release", Release(b"t" * 16), DEADLINE + 10**8)
    decision = decide_vote(state, {}, [release.encoded], FX.rules, DEADLINE + 10**8)
    assert not decision.accepted and decision.rejections[0].final
