"""The vote and sync protocols without any network: frames in, outcomes out."""

import pytest

from p2pgrid.ledger.chain import LedgerState
from p2pgrid.ledger.committee import decide_vote, make_vote
from p2pgrid.ledger.messages import (
    CertifiedEntries, Mint, SyncReply, VoteReply, decode_frame, encode_frame, entry_hash,
)
from p2pgrid.ledger.protocol import Certified, PeerMisbehaved, QuorumImpossible, SyncSession, VoteCollector
from p2pgrid.ledger.testing import LedgerFixture, seeded_key

FX = LedgerFixture()
ALICE = seeded_key("alice")


def mint_batch(n=2):
    state = LedgerState()
    from p2pgrid.ledger.chain import process_entry
    entries = []
    for i in range(n):
        signed = FX.entry_on(state, FX.gateway, "mint", Mint(ALICE.public_key, 1 + i))
        process_entry(state, signed, FX.rules, 0)
        entries.append(signed)
    return entries


def reply_from(validator, collector, entries):
    decision = decide_vote(LedgerState(), {}, [e.encoded for e in entries], FX.rules, 0)
    vote = make_vote(FX.committee, validator, decision.entry_hashes)
    return VoteReply(collector.request.request_id, vote.encoded, ())


def test_collector_certifies_at_quorum_and_the_frames_round_trip():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 7, [e.encoded for e in entries])
    assert decode_frame(encode_frame(collector.request)) == collector.request
    outcome = None
    for validator in FX.validators[:3]:
        reply = decode_frame(encode_frame(reply_from(validator, collector, entries)))
        outcome = collector.receive_reply(validator.public_key, reply)
    assert isinstance(outcome, Certified)
    assert outcome.certificate.batch_root == collector.root
    assert collector.certified_entries().entries == tuple(e.encoded for e in entries)


def test_collector_gives_up_when_too_many_validators_reject():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    assert collector.receive_reply(FX.validators[0].public_key, VoteReply(1, b"", ())) is None
    outcome = collector.receive_reply(FX.validators[1].public_key, VoteReply(1, b"", ()))
    assert isinstance(outcome, QuorumImpossible)


def test_a_vote_for_another_batch_or_from_an_outsider_is_a_protocol_violation():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries[:1]])
    with pytest.raises(PeerMisbehaved):
        collector.receive_reply(FX.validators[0].public_key, reply_from(FX.validators[0], collector, entries))
    with pytest.raises(PeerMisbehaved):
        collector.receive_reply(seeded_key("x").public_key, VoteReply(1, b"", ()))
    with pytest.raises(PeerMisbehaved):   # a vote signed by validator 1 passed off as validator 0's
        collector.receive_reply(FX.validators[0].public_key, reply_from(FX.validators[1], collector, entries[:1]))


def test_sync_session_advances_heads_and_stops_when_nothing_more():
    entries = mint_batch(4)
    batch = FX.certify(entries)
    session = SyncSession(FX.committee, {})
    request = session.next_request()
    assert request.heads == ()
    got = session.receive_reply(SyncReply(request.request_id, (batch,), False))
    assert [s.body.seq for s in got[0].entries] == [0, 1, 2, 3]
    assert session.heads == {FX.gateway.public_key: 4} and session.done


def test_sync_session_rejects_a_forged_batch_and_a_stale_reply():
    entries = mint_batch(1)
    forged = LedgerFixture(validators=[seeded_key(f"o{i}") for i in range(4)]).certify(entries)
    session = SyncSession(FX.committee, {})
    request = session.next_request()
    with pytest.raises(PeerMisbehaved):
        session.receive_reply(SyncReply(request.request_id, (forged,), False))
    with pytest.raises(PeerMisbehaved):
        session.receive_reply(SyncReply(request.request_id + 5, (), False))


def test_a_vote_after_the_batch_failed_still_counts_as_binding():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    collector.receive_reply(FX.validators[0].public_key, VoteReply(1, b"", ()))
    outcome = collector.receive_reply(FX.validators[1].public_key, VoteReply(1, b"", ()))
    assert isinstance(outcome, QuorumImpossible)
    late = collector.receive_reply(FX.validators[2].public_key, reply_from(FX.validators[2], collector, entries))
    assert late is outcome                       # the outcome stays what it was…
    assert collector.votes_received == 1         # …but the late vote binds the validator to the batch


def test_a_validator_sent_the_request_and_never_heard_from_may_be_bound():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    assert not collector.may_have_votes                  # nobody was asked yet
    collector.mark_sent(FX.validators[0].public_key)
    assert collector.may_have_votes                      # asked, silent: its vote may be on the way
    collector.receive_reply(FX.validators[0].public_key, VoteReply(1, b"", ()))
    assert not collector.may_have_votes                  # it answered: a rejection binds nobody


def test_once_the_batch_failed_only_real_votes_bind():
    entries = mint_batch()
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    for validator in FX.validators:
        collector.mark_sent(validator.public_key)
    collector.receive_reply(FX.validators[0].public_key, VoteReply(1, b"", ()))
    collector.receive_reply(FX.validators[1].public_key, VoteReply(1, b"", ()))
    assert isinstance(collector.outcome, QuorumImpossible)
    assert not collector.may_have_votes                  # two refused: no certificate can ever form
