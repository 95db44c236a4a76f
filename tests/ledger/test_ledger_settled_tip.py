"""After a failed batch the next entry of a chain goes on the certified head *and* on top of the
entries in doubt that continue it: a second entry at the seq of one in doubt would be dead once
the first is certified (``SEQ_REUSED``), or, with validators bound to each, neither could be."""

from p2pgrid.ledger.messages import Transfer, entry_hash
from p2pgrid.ledger.service import LedgerConfig, LedgerService
from p2pgrid.ledger.testing import LedgerFixture, seeded_key

FX = LedgerFixture()
ALICE, BOB = seeded_key("alice"), seeded_key("bob")


def offline_service() -> LedgerService:
    """A service that is never run: only its in-memory chain bookkeeping is used."""
    return LedgerService(ALICE, LedgerConfig(FX.rules, FX.committee), store=None, transport=None,  # type: ignore[arg-type]
                         clock=lambda: 0)


def test_next_entry_after_a_failure_builds_on_the_entry_in_doubt():
    service = offline_service()
    in_doubt = service.next_entry("transfer", Transfer(BOB.public_key, 1))
    service._in_doubt[ALICE.public_key] = {in_doubt.body.seq: in_doubt}
    service._tips[ALICE.public_key] = service._settled_tip(ALICE.public_key)   # a later batch failed
    following = service.next_entry("transfer", Transfer(BOB.public_key, 2))
    assert following.body.seq == in_doubt.body.seq + 1
    assert following.body.prev_hash == entry_hash(in_doubt)


def test_a_chain_of_entries_in_doubt_is_followed_to_its_end():
    service = offline_service()
    first = service.next_entry("transfer", Transfer(BOB.public_key, 1))
    second = service.next_entry("transfer", Transfer(BOB.public_key, 2))
    service._in_doubt[ALICE.public_key] = {first.body.seq: first, second.body.seq: second}
    tip = service._settled_tip(ALICE.public_key)
    assert (tip.next_seq, tip.last_hash) == (second.body.seq + 1, entry_hash(second))


def test_without_entries_in_doubt_the_tip_falls_back_to_the_certified_head():
    service = offline_service()
    service.next_entry("transfer", Transfer(BOB.public_key, 1))
    assert service._settled_tip(ALICE.public_key) == service.state.head(ALICE.public_key)


def test_an_entry_in_doubt_beyond_a_gap_is_not_built_on():
    service = offline_service()
    other = offline_service()                          # the same account, another history
    other.next_entry("transfer", Transfer(BOB.public_key, 5))
    stray = other.next_entry("transfer", Transfer(BOB.public_key, 6))   # seq 1: nothing in doubt at seq 0
    service._in_doubt[ALICE.public_key] = {stray.body.seq: stray}
    assert service._settled_tip(ALICE.public_key) == service.state.head(ALICE.public_key)
