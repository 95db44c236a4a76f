"""Committee rules under Byzantine behaviour (n = 4, f = 1, quorum = 3).

Honest validators follow ``decide_vote`` with their own never-vote-twice record; the faulty one
signs whatever it is shown. Whatever order the proposals reach the honest validators in, at
most one of two conflicting entries can gather a certificate.
"""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import LedgerState, RejectReason, process_entry
from p2pgrid.ledger.committee import (
    CertificateInvalid, Committee, assemble_certificate, decide_vote, make_vote, verify_certificate,
    verify_certified_entries,
)
from p2pgrid.ledger.messages import Certificate, CertifiedEntries, Fill, Lock, Mint, Release, Transfer, entry_hash
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.units import trade_value

FX = LedgerFixture()
ALICE, BOB, CAROL = seeded_key("alice"), seeded_key("bob"), seeded_key("carol")
NOW = 1_000


def funded_state():
    state = LedgerState()
    process_entry(state, FX.entry_on(state, FX.gateway, "mint", Mint(ALICE.public_key, 10_000)), FX.rules)
    return state


def test_committee_of_four_tolerates_one_fault_with_quorum_three():
    committee = FX.committee
    assert (committee.n, committee.f, committee.quorum) == (4, 1, 3)
    assert Committee("z", 0, tuple(bytes([i]) * 32 for i in range(7))).quorum == 5


class HonestValidator:
    def __init__(self, key, state):
        self.key, self.state, self.voted = key, state, {}

    def vote(self, entries):
        decision = decide_vote(self.state, self.voted, [e.encoded for e in entries], FX.rules, NOW)
        if not decision.accepted:
            return None
        self.voted.update(decision.new_records)   # (the service persists these before replying)
        return make_vote(FX.committee, self.key, decision.entry_hashes)


def certificates_for(proposals, order):
    """Deliver ``proposals`` to the honest validators in ``order``; the byzantine one (index 3)
    votes for all of them. Returns the proposals that gathered a certificate."""
    honest = [HonestValidator(key, funded_state()) for key in FX.validators[:3]]
    byzantine = FX.validators[3]
    votes = {i: [make_vote(FX.committee, byzantine, [entry_hash(e) for e in p])] for i, p in enumerate(proposals)}
    for validator_index, proposal_index in order:
        vote = honest[validator_index].vote(proposals[proposal_index])
        if vote is not None:
            votes[proposal_index].append(vote)
    return [i for i, vs in votes.items() if assemble_certificate(FX.committee, vs) is not None]


def two_entries_at_one_seq():
    state = funded_state()
    one = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 9_000))
    two = FX.entry_on(state, ALICE, "transfer", Transfer(CAROL.public_key, 9_000))
    assert one.body.seq == two.body.seq and entry_hash(one) != entry_hash(two)
    return [[one], [two]]


@settings(max_examples=60, deadline=None)
@given(st.permutations([(v, p) for v in range(3) for p in range(2)]))
def test_a_double_voting_validator_cannot_help_certify_two_entries_at_one_seq(order):
    assert len(certificates_for(two_entries_at_one_seq(), order)) <= 1


def test_an_owner_signing_two_entries_at_one_seq_gets_at_most_one_certified():
    proposals = two_entries_at_one_seq()
    outcomes = {tuple(certificates_for(proposals, order))
                for order in itertools.permutations([(v, p) for v in range(3) for p in range(2)])}
    assert outcomes <= {(0,), (1,), ()}
    assert (0,) in outcomes and (1,) in outcomes   # either may win, depending on who arrives first


def test_a_fill_and_a_release_of_one_lock_are_never_both_valid_whatever_the_validators_clock():
    state = funded_state()
    lock = Lock(b"t" * 16, BOB.public_key, b"o" * 16, BOB.public_key, 100, 100, 10_000,
                trade_value(100, 10_000), NOW + 1)
    process_entry(state, FX.entry_on(state, ALICE, "lock", lock, time_ms=NOW), FX.rules)
    fill = FX.entry_on(state, BOB, "fill", Fill(b"t" * 16, ALICE.public_key, b"o" * 16, 100, 10_000), time_ms=NOW)
    release = FX.entry_on(state, ALICE, "release", Release(b"t" * 16), time_ms=NOW + 1)
    for clock in (NOW, NOW + 1, NOW + 10**9):     # a late validator judges exactly as an early one
        assert decide_vote(state, {}, [fill.encoded], FX.rules, clock).accepted
        waits = decide_vote(state, {}, [release.encoded], FX.rules, clock)
        assert not waits.accepted and waits.rejections[0].reason == RejectReason.DEADLINE_NOT_REACHED.value
        assert not waits.rejections[0].final, "the release waits for the seller's chain, it is not refused"
    after_fill = state.copy()
    process_entry(after_fill, fill, FX.rules)
    refused = decide_vote(after_fill, {}, [release.encoded], FX.rules, NOW + 10**9)
    assert [(r.reason, r.final) for r in refused.rejections] == [(RejectReason.LOCK_CLOSED.value, True)]


def test_a_validator_votes_again_for_the_same_entry():
    state = funded_state()
    entry = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5))
    voted: dict = {}
    first = decide_vote(state, voted, [entry.encoded], FX.rules, NOW)
    voted.update(first.new_records)
    again = decide_vote(state, voted, [entry.encoded], FX.rules, NOW)
    assert again.accepted and again.new_records == ()


def test_a_batch_may_carry_a_chain_segment():
    state = funded_state()
    first = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5))
    second = FX.entry(ALICE, type(state.head(ALICE.public_key))(1, entry_hash(first)), "transfer",
                      Transfer(BOB.public_key, 6))
    decision = decide_vote(state, {}, [first.encoded, second.encoded], FX.rules, NOW)
    assert decision.accepted and len(decision.entry_hashes) == 2
    assert state.head(ALICE.public_key).next_seq == 0, "deciding must not touch the certified state"


def test_an_entry_that_waits_stops_the_vote_after_the_prefix_before_it_and_is_named():
    state = funded_state()
    good = FX.entry_on(state, FX.gateway, "mint", Mint(BOB.public_key, 5))
    short = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 10**9))
    decision = decide_vote(state, {}, [good.encoded, short.encoded], FX.rules, NOW)
    assert decision.entry_hashes == (entry_hash(good),), "the valid prefix is voted for"
    assert [(r.index, r.reason, r.final) for r in decision.rejections] == [(1, RejectReason.OVERDRAFT.value, False)]


def test_an_entry_dated_ahead_of_the_validators_clock_waits():
    state = funded_state()
    ahead = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5), time_ms=NOW + FX.rules.clock_skew_ms + 1)
    early = decide_vote(state, {}, [ahead.encoded], FX.rules, NOW)
    assert [(r.reason, r.final) for r in early.rejections] == [(RejectReason.NOT_YET.value, False)]
    assert decide_vote(state, {}, [ahead.encoded], FX.rules, NOW + 1).accepted


def test_another_entry_at_a_voted_seq_is_refused_for_good():
    state = funded_state()
    one = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5))
    two = FX.entry_on(state, ALICE, "transfer", Transfer(CAROL.public_key, 5))
    first = decide_vote(state, {}, [one.encoded], FX.rules, NOW)
    second = decide_vote(state, dict(first.new_records), [two.encoded], FX.rules, NOW)
    assert [(r.reason, r.final) for r in second.rejections] == [(RejectReason.ALREADY_VOTED.value, True)]
    assert second.already_voted_key == first.new_records[0][0] and second.refused_hash == entry_hash(two)


# --- certificates ----------------------------------------------------------------------------

def certified_batch():
    state = funded_state()
    return FX.certify([FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5))])


def test_a_quorum_certificate_verifies():
    batch = certified_batch()
    verify_certificate(FX.committee, batch.certificate)
    assert len(verify_certified_entries(FX.committee, batch)) == 1


def replaced(cert, **changes):
    fields = dict(zone=cert.zone, epoch=cert.epoch, batch_root=cert.batch_root, batch_size=cert.batch_size,
                  signers=cert.signers, signatures=cert.signatures)
    fields.update(changes)
    return Certificate(**fields)


@pytest.mark.parametrize("case", ["under_quorum", "duplicate_signer", "outsider", "forged_signature",
                                  "other_root", "other_epoch", "other_zone"])
def test_invalid_certificates_are_rejected(case):
    cert = certified_batch().certificate
    outsider = seeded_key("outsider")
    if case == "under_quorum":
        bad = replaced(cert, signers=cert.signers[:2], signatures=cert.signatures[:2])
    elif case == "duplicate_signer":
        bad = replaced(cert, signers=cert.signers[:2] + cert.signers[:1], signatures=cert.signatures[:2] + cert.signatures[:1])
    elif case == "outsider":
        vote = make_vote(FX.committee, outsider, [b"x" * 32])
        bad = replaced(cert, signers=cert.signers[:2] + (outsider.public_key,),
                       signatures=cert.signatures[:2] + (vote.signature,))
    elif case == "forged_signature":
        bad = replaced(cert, signatures=cert.signatures[:2] + (bytes(64),))
    elif case == "other_root":
        bad = replaced(cert, batch_root=b"\x01" * 32)
    elif case == "other_epoch":
        bad = replaced(cert, epoch=1)
    else:
        bad = replaced(cert, zone="elsewhere")
    with pytest.raises(CertificateInvalid):
        verify_certificate(FX.committee, bad)


def test_an_entry_outside_the_certified_batch_is_rejected():
    batch = certified_batch()
    state = funded_state()
    stranger = FX.entry_on(state, ALICE, "transfer", Transfer(CAROL.public_key, 5))
    with pytest.raises(CertificateInvalid):
        verify_certified_entries(FX.committee, CertifiedEntries(batch.certificate, (), (stranger.encoded,)))
    with pytest.raises(CertificateInvalid):
        verify_certified_entries(FX.committee, CertifiedEntries(
            batch.certificate, (entry_hash(stranger),), (stranger.encoded,)))


def test_a_subset_of_a_batch_verifies_against_its_leaves():
    state = funded_state()
    entries = [FX.entry_on(state, FX.gateway, "mint", Mint(k.public_key, 5)) for k in (ALICE, BOB)]
    entries[1] = FX.entry(FX.gateway, type(state.head(b""))(2, entry_hash(entries[0])), "mint", Mint(BOB.public_key, 5))
    batch = FX.certify(entries)
    leaves = tuple(entry_hash(e) for e in entries)
    subset = CertifiedEntries(batch.certificate, leaves, (entries[1].encoded,))
    assert [s.body.seq for s in verify_certified_entries(FX.committee, subset)] == [2]


def test_a_rule_that_breaks_on_an_entry_refuses_it_instead_of_stopping_the_validator(monkeypatch):
    from p2pgrid.ledger import chain
    state = funded_state()
    entry = FX.entry_on(state, ALICE, "transfer", Transfer(BOB.public_key, 5))
    broken = chain.KindRules("transfer", Transfer, lambda *a: {}["boom"], chain.process_transfer)
    monkeypatch.setitem(chain.KINDS, "transfer", broken)
    decision = decide_vote(state, {}, [entry.encoded], FX.rules, NOW)
    assert not decision.accepted
    assert decision.rejections[0].reason == RejectReason.MALFORMED.value and "KeyError" in decision.rejections[0].detail
