"""The vote and sync protocols without any network: frames in, outcomes out."""

import pytest

from p2pgrid.ledger.chain import LedgerState
from p2pgrid.ledger.committee import decide_vote, make_refusal, make_vote
from p2pgrid.ledger.messages import (
    CertifiedEntries, Mint, Rejection, SyncReply, VoteReply, decode_frame, encode_frame, entry_hash,
)
from p2pgrid.ledger.protocol import Certified, PeerMisbehaved, SyncSession, VoteCollector
from p2pgrid.ledger.testing import LedgerFixture, seeded_key

FX = LedgerFixture()
ALICE = seeded_key("alice")


def mint_batch(n=2):
    state = LedgerState()
    from p2pgrid.ledger.chain import process_entry
    entries = []
    for i in range(n):
        signed = FX.entry_on(state, FX.gateway, "mint", Mint(ALICE.public_key, 1 + i))
        process_entry(state, signed, FX.rules)
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


def prefix_reply(validator, collector, entries, size, rejection=None, refuse=False):
    vote = make_vote(FX.committee, validator, [entry_hash(e) for e in entries[:size]]).encoded if size else b""
    refusal = make_refusal(FX.committee, validator, entry_hash(entries[size]), rejection.reason).encoded if refuse else b""
    return VoteReply(collector.request.request_id, vote, (rejection,) if rejection else (), refusal)


def test_votes_over_different_prefixes_yield_the_longest_common_prefix():
    entries = mint_batch(3)
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    waiting = Rejection(2, "missing_dependency", "", False)
    for validator, size in zip(FX.validators, (3, 2, 2, 1)):
        collector.receive_reply(validator.public_key, prefix_reply(validator, collector, entries, size,
                                                                   None if size == 3 else waiting))
    assert collector.outcome is None and collector.decided()
    assert collector.certifiable_prefix() == 2
    result = collector.result()
    assert (result.certified, result.refused_from) == (0, None), "no certificate yet: ask again for the prefix"


def test_a_quorum_of_signed_refusals_gives_an_entry_up_and_fewer_do_not():
    entries = mint_batch(2)
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    final = Rejection(1, "bad_body", "", True)
    for validator in FX.validators[:2]:
        collector.receive_reply(validator.public_key, prefix_reply(validator, collector, entries, 1, final, True))
    assert collector.result().refused_from is None, "two refusals of four prove nothing"
    collector.receive_reply(FX.validators[2].public_key,
                            prefix_reply(FX.validators[2], collector, entries, 1, final, True))
    assert collector.result().refused_from == 1


def test_a_refusal_signed_by_another_validator_is_a_protocol_violation():
    entries = mint_batch(1)
    collector = VoteCollector(FX.committee, 1, [e.encoded for e in entries])
    forged = make_refusal(FX.committee, FX.validators[1], entry_hash(entries[0]), "bad_body").encoded
    with pytest.raises(PeerMisbehaved):
        collector.receive_reply(FX.validators[0].public_key,
                                VoteReply(1, b"", (Rejection(0, "bad_body", "", True),), forged))


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


