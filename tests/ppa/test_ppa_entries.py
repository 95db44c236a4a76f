"""PPA ledger kinds: offer, acceptance, termination, expiry, index — validity judged on the entry
and its certified causal past (dated by the test, never by a clock), bad inputs refused with reasons."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pgrid.ledger.chain import EntryRejected, LedgerState, RejectReason, process_entry, validate_entry
from p2pgrid.ledger.messages import Mint, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.ppa.entries import (
    PpaAccept, PpaExpire, PpaIndex, PpaOffer, PpaTerminate, agreement_of, agreements, claimed_share_ppm,
    index_value_at, terminations_of,
)
from p2pgrid.ppa.terms import Shape, terms_hash
from p2pgrid.ppa.testing import make_terms

START = 1_798_761_600                      # the term's first slot (s)
BEFORE = (START - 86400) * 1000            # a day before it (ms): when the parties sign
DAY_MS = 86_400_000
FUNDS = 100_000_000
STATION = seeded_key("ppa-station")
HOUSE = seeded_key("ppa-house")
SHOP = seeded_key("ppa-shop")


class Zone:
    """One zone's ledger on one node: entries validated and applied as a validator does."""

    def __init__(self):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        for key in (STATION, HOUSE, SHOP):
            self.add(self.fx.gateway, "mint", Mint(to=key.public_key, amount=FUNDS), 0)

    def entry(self, key, kind, body, now):
        return self.fx.entry_on(self.state, key, kind, body, now)

    def add(self, key, kind, body, now=BEFORE):
        signed = self.entry(key, kind, body, now)
        process_entry(self.state, signed, self.fx.rules)
        return signed

    def judge(self, key, kind, body, now=BEFORE):
        validate_entry(self.state, self.entry(key, kind, body, now), self.fx.rules)

    def terms(self, seller=STATION, buyer=HOUSE, **changes):
        return make_terms(seller.public_key, buyer.public_key, zone=self.fx.zone, **{"start_slot": START, **changes})

    def offer(self, offerer, terms, accept_by=START * 1000, now=BEFORE):
        signed = self.add(offerer, "ppa_offer", PpaOffer(terms, terms_hash(terms), accept_by), now)
        return signed.body.seq

    def accept(self, acceptor, terms, offerer, seq, now=BEFORE):
        self.add(acceptor, "ppa_accept", PpaAccept(terms_hash(terms), offerer.public_key, seq), now)

    def agree(self, terms, now=BEFORE):
        offerer, acceptor = (STATION, HOUSE) if terms.seller == STATION.public_key else (SHOP, STATION)
        if terms.buyer == SHOP.public_key:
            acceptor = SHOP
        self.accept(acceptor, terms, offerer, self.offer(offerer, terms, now=now), now=now)


def refused(reason: str):
    return pytest.raises(EntryRejected, match=f"^([a-z_]+: )?{reason}")


def waits(excinfo):
    return not excinfo.value.reason.is_final


# --- offer and acceptance ---------------------------------------------------------------------

def test_an_offer_accepted_by_the_other_party_is_an_agreement_of_its_hash():
    zone = Zone()
    terms = zone.terms(shape=Shape.PAY_AS_PRODUCED)
    zone.agree(terms)
    agreement = agreement_of(zone.state, terms_hash(terms))
    assert agreement is not None and agreement.terms == terms
    assert (agreement.offerer, agreement.acceptor) == (STATION.public_key, HOUSE.public_key)
    assert [a.ppa_id for a in agreements(zone.state, HOUSE.public_key)] == [terms_hash(terms)]
    assert claimed_share_ppm(zone.state, STATION.public_key, STATION.public_key, START, START + 900) == 250_000


def test_the_buyer_may_offer_and_the_seller_accept():
    zone = Zone()
    terms = zone.terms()
    seq = zone.offer(HOUSE, terms)
    zone.accept(STATION, terms, HOUSE, seq)
    assert agreement_of(zone.state, terms_hash(terms)).acceptor == STATION.public_key


def test_an_acceptance_of_other_terms_is_refused():
    zone = Zone()
    terms = zone.terms()
    zone.add(STATION, "transfer", Transfer(to=SHOP.public_key, amount=1))     # the station's entry 0
    seq = zone.offer(STATION, terms)
    other = replace(terms, name="Test agreement, amended")       # one changed word: another hash
    with refused("terms_mismatch"):
        zone.judge(HOUSE, "ppa_accept", PpaAccept(terms_hash(other), STATION.public_key, seq))
    with refused("terms_mismatch: the offerer's entry 0 is not an offer"):
        zone.judge(HOUSE, "ppa_accept", PpaAccept(terms_hash(terms), STATION.public_key, 0))


def test_an_acceptance_of_an_offer_not_certified_here_waits():
    zone = Zone()
    terms = zone.terms()
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(HOUSE, "ppa_accept", PpaAccept(terms_hash(terms), STATION.public_key, 5))
    assert excinfo.value.reason is RejectReason.MISSING_DEPENDENCY and waits(excinfo)


def test_an_offer_whose_hash_is_not_its_texts_is_refused():
    zone = Zone()
    terms = zone.terms()
    other = replace(terms, baseload_wh=501)
    with refused("hash_mismatch"):
        zone.judge(STATION, "ppa_offer", PpaOffer(other, terms_hash(terms), START * 1000))


@pytest.mark.parametrize("case,reason", [
    ("outsider", "not_a_party"), ("gateway", "gateway_party"), ("zone", "wrong_zone"),
    ("late_deadline", "bad_deadline"), ("past_deadline", "bad_deadline"),
])
def test_bad_offers_are_refused_with_reasons(case, reason):
    zone = Zone()
    terms, offerer, accept_by = zone.terms(), STATION, START * 1000
    if case == "outsider":
        offerer = SHOP
    elif case == "gateway":
        terms = make_terms(STATION.public_key, zone.fx.gateway.public_key, zone=zone.fx.zone, start_slot=START)
    elif case == "zone":
        terms = replace(terms, zone="elsewhere")
    elif case == "late_deadline":
        accept_by = START * 1000 + 1                              # after the first slot began
    else:
        accept_by = BEFORE                                       # not after the offer's own time
    with refused(reason):
        zone.judge(offerer, "ppa_offer", PpaOffer(terms, terms_hash(terms), accept_by))


def test_acceptance_rules():
    zone = Zone()
    terms = zone.terms()
    seq = zone.offer(STATION, terms, accept_by=BEFORE + 1000)
    body = PpaAccept(terms_hash(terms), STATION.public_key, seq)
    with refused("offered_yourself"):
        zone.judge(STATION, "ppa_accept", body)
    with refused("not_a_party"):
        zone.judge(SHOP, "ppa_accept", body)
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(HOUSE, "ppa_accept", body, now=BEFORE + 1000)   # dated at the offer's deadline
    assert excinfo.value.reason is RejectReason.DEADLINE_PASSED and not waits(excinfo)
    zone.add(HOUSE, "ppa_accept", body, now=BEFORE + 999)
    with refused("duplicate"):
        zone.judge(HOUSE, "ppa_accept", body, now=BEFORE + 999)


def test_overlapping_exclusive_shares_of_one_generator_are_refused():
    zone = Zone()
    first = zone.terms(shape=Shape.PAY_AS_PRODUCED, share_ppm=600_000, days=10)
    zone.agree(first)
    overlapping = zone.terms(buyer=SHOP, shape=Shape.PAY_AS_PRODUCED, share_ppm=500_000, days=2,
                             start_slot=START + 5 * 86400)
    with refused("share_overlap"):
        zone.judge(STATION, "ppa_offer", PpaOffer(overlapping, terms_hash(overlapping), START * 1000))
    # The buyer may offer it, but the seller cannot accept it: its acceptance would claim the share.
    seq = zone.offer(SHOP, overlapping)
    with refused("share_overlap"):
        zone.judge(STATION, "ppa_accept", PpaAccept(terms_hash(overlapping), SHOP.public_key, seq))
    fits = replace(overlapping, share_ppm=400_000)
    zone.offer(STATION, fits)
    later = zone.terms(buyer=SHOP, shape=Shape.PAY_AS_PRODUCED, share_ppm=500_000, start_slot=START + 10 * 86400,
                       days=1, name="after the first")
    zone.offer(STATION, later)                                     # no overlap in time: accepted
    shared = replace(overlapping, share_ppm=500_000, exclusive=False, name="not exclusive")
    zone.offer(STATION, shared)                                    # a non-exclusive share claims nothing


# --- termination and expiry -------------------------------------------------------------------

def test_termination_needs_the_notice_of_the_terms_and_pays_the_penalty():
    zone = Zone()
    terms = zone.terms(days=30)                                    # one day's notice, 5 credits
    zone.agree(terms)
    now = (START + 3 * 86400) * 1000
    too_soon = PpaTerminate(terms_hash(terms), START + 3 * 86400 + 3600)
    with refused("no_notice"):
        zone.judge(HOUSE, "ppa_terminate", too_soon, now=now)
    with refused("bad_end"):
        zone.judge(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 40 * 86400), now=now)
    with refused("not_a_party"):
        zone.judge(SHOP, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 5 * 86400), now=now)
    zone.add(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 4 * 86400), now=now)
    assert zone.state.balance(HOUSE.public_key) == FUNDS - 5_000_000
    assert zone.state.balance(STATION.public_key) == FUNDS + 5_000_000
    assert zone.state.money_total() == 0
    assert [t.end_slot for t in terminations_of(zone.state, terms_hash(terms))] == [START + 4 * 86400]
    with refused("duplicate"):
        zone.judge(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 5 * 86400), now=now)


def test_a_termination_of_an_agreement_not_certified_here_waits():
    zone = Zone()
    terms = zone.terms()
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START))
    assert waits(excinfo)


def test_a_termination_the_party_cannot_pay_waits_for_credits():
    zone = Zone()
    terms = zone.terms(termination_penalty_uc=FUNDS + 1)
    zone.agree(terms)
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 86400 - 900), now=BEFORE)
    assert excinfo.value.reason is RejectReason.OVERDRAFT and waits(excinfo)


def test_expiry_after_the_end_frees_the_share_and_not_before():
    zone = Zone()
    terms = zone.terms(shape=Shape.PAY_AS_PRODUCED, share_ppm=1_000_000, days=30)
    zone.agree(terms)
    ppa_id = terms_hash(terms)
    with refused("not_ended"):
        zone.judge(STATION, "ppa_expire", PpaExpire(ppa_id, b""), now=(START + 29 * 86400) * 1000)
    # The buyer terminates; the seller closes it at the termination's end and may sell that share again.
    zone.add(HOUSE, "ppa_terminate", PpaTerminate(ppa_id, START + 10 * 86400), now=(START + 2 * 86400) * 1000)
    assert claimed_share_ppm(zone.state, STATION.public_key, STATION.public_key, START + 11 * 86400,
                             START + 12 * 86400) == 1_000_000
    zone.add(STATION, "ppa_expire", PpaExpire(ppa_id, HOUSE.public_key), now=(START + 10 * 86400) * 1000)
    assert claimed_share_ppm(zone.state, STATION.public_key, STATION.public_key, START + 10 * 86400,
                             START + 12 * 86400) == 0
    with refused("duplicate"):
        zone.judge(STATION, "ppa_expire", PpaExpire(ppa_id, b""), now=(START + 30 * 86400) * 1000)
    zone.add(HOUSE, "ppa_expire", PpaExpire(ppa_id, b""), now=(START + 30 * 86400) * 1000)


def test_an_unaccepted_offer_is_withdrawn_once_the_counterpartys_chain_passed_its_deadline():
    zone = Zone()
    terms = zone.terms(shape=Shape.PAY_AS_PRODUCED, share_ppm=1_000_000)
    accept_by = BEFORE + 60_000
    zone.offer(STATION, terms, accept_by=accept_by)
    withdraw = PpaExpire(terms_hash(terms), b"")
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(STATION, "ppa_expire", withdraw, now=accept_by + 1)
    assert excinfo.value.reason is RejectReason.DEADLINE_NOT_REACHED and waits(excinfo)
    # The house's chain moves past the deadline without accepting: the offer can never be accepted now.
    zone.add(HOUSE, "transfer", Transfer(to=SHOP.public_key, amount=1), now=accept_by)
    zone.add(STATION, "ppa_expire", withdraw, now=accept_by + 1)
    assert claimed_share_ppm(zone.state, STATION.public_key, STATION.public_key, START, START + 900) == 0


# --- index ------------------------------------------------------------------------------------

def test_reference_values_are_published_by_the_operator_in_advance():
    zone = Zone()
    gateway = zone.fx.gateway
    zone.add(gateway, "ppa_index", PpaIndex("cpi-z1", START, 1000), now=BEFORE)
    zone.add(gateway, "ppa_index", PpaIndex("cpi-z1", START + 30 * 86400, 1020), now=BEFORE)
    assert index_value_at(zone.state, "cpi-z1", START - 900) is None
    assert index_value_at(zone.state, "cpi-z1", START + 29 * 86400) == 1000
    assert index_value_at(zone.state, "cpi-z1", START + 31 * 86400) == 1020
    with refused("duplicate"):
        zone.judge(gateway, "ppa_index", PpaIndex("cpi-z1", START, 999), now=BEFORE)
    with refused("bad_deadline"):
        zone.judge(gateway, "ppa_index", PpaIndex("cpi-z1", START, 999), now=START * 1000 + 1)
    with pytest.raises(EntryRejected) as excinfo:
        zone.judge(HOUSE, "ppa_index", PpaIndex("cpi-z1", START + 60 * 86400, 1))
    assert excinfo.value.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT
