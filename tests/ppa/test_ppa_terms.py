"""A PPA's canonical text and its hash: stable bytes on any machine, one-to-one with the terms."""

import hashlib
from dataclasses import replace

import pytest

from p2pgrid.ppa.terms import (
    TEMPLATE_TOML, InvalidTerms, PpaTerms, Shape, Shortfall, parse_terms_toml, render_terms, terms_hash,
    terms_text_bytes,
)
from p2pgrid.ppa.testing import make_terms
from p2pgrid.wire import decode, encode

SELLER = bytes.fromhex("11" * 32)
BUYER = bytes.fromhex("22" * 32)

# The golden vector: if this changes, every PPA signed so far no longer matches its text.
GOLDEN_HASH = "521868b988f95cf3caab465100df68a68329611f1720f5dd65df8c15254d6bdd"


def filled_template(**replacements: str) -> str:
    text = (TEMPLATE_TOML.replace("<seller account, 64 hex digits>", SELLER.hex())
            .replace("<buyer account, 64 hex digits>", BUYER.hex())
            .replace("<seller account>", SELLER.hex()).replace("<zone>", "z1"))
    for old, new in replacements.items():
        text = text.replace(old, new)
    return text


def test_the_filled_template_hashes_to_the_golden_vector():
    terms = parse_terms_toml(filled_template())
    assert terms_hash(terms).hex() == GOLDEN_HASH
    # The hash is sha256 of the text as people see it: `sha256sum` of the printed text agrees.
    assert hashlib.sha256(render_terms(terms).encode()).hexdigest() == GOLDEN_HASH


def test_the_text_is_ascii_with_unix_line_ends_and_names_every_parameter():
    terms = parse_terms_toml(filled_template())
    data = terms_text_bytes(terms)
    assert data.isascii() and b"\r" not in data and data.endswith(b"\n")
    text = data.decode()
    for needle in (SELLER.hex(), BUYER.hex(), "`z1`", "2027-01-01 00:00 UTC", "2037-01-01 00:00 UTC",
                   "25.0000 %", "0.120000 credits per kWh", "90 days", "500.000000 credits", "exclusive"):
        assert needle in text


def test_the_terms_survive_the_wire_and_render_the_same_after():
    for shape in Shape:
        terms = make_terms(SELLER, BUYER, shape=shape)
        again = decode(PpaTerms, encode(terms))
        assert again == terms and terms_text_bytes(again) == terms_text_bytes(terms)


@pytest.mark.parametrize("old,new", [
    ('share_percent = "25"', 'share_percent = "25.0001"'),
    ('name = "Station output to the community, 10 years"', 'name = "Station output to the community, 11 years"'),
    ('credits_per_kwh = "0.12"', 'credits_per_kwh = "0.120001"'),
    ("notice_days = 90", "notice_days = 91"),
    ("green = true", "green = false"),
    ("exclusive = true", "exclusive = false"),
    ("priority_over_spot = true", "priority_over_spot = false"),
])
def test_a_changed_word_changes_the_hash(old, new):
    assert old in TEMPLATE_TOML
    assert terms_hash(parse_terms_toml(filled_template(**{old: new}))).hex() != GOLDEN_HASH


def test_every_field_is_in_the_text():
    base = make_terms(SELLER, BUYER, shape=Shape.PROFILE, index_name="cpi", index_base=1000,
                      shortfall=Shortfall.PENALTY, penalty_uc_per_kwh=50_000)
    variants = [replace(base, profile_wh=(1,) + base.profile_wh[1:]), replace(base, index_base=1001),
                replace(base, index_name="cpj"), replace(base, penalty_uc_per_kwh=50_001),
                replace(base, termination_penalty_uc=base.termination_penalty_uc + 1),
                replace(base, end_slot=base.end_slot + 900), replace(base, zone="z2")]
    texts = {render_terms(t) for t in [base, *variants]}
    assert len(texts) == len(variants) + 1


@pytest.mark.parametrize("changes,reason", [
    ({"buyer": SELLER}, "two different accounts"),
    ({"end_slot": 1_798_761_600}, "ends after it starts"),
    ({"start_slot": 1_798_761_601}, "slot starts"),
    ({"baseload_wh": 0}, "positive Wh"),
    ({"name": "two\nlines"}, "printable ASCII"),
    ({"index_name": "cpi"}, "base value"),
    ({"penalty_uc_per_kwh": 5}, "penalty"),
    ({"share_ppm": 10}, "other shapes"),
])
def test_inconsistent_terms_are_refused_with_a_reason(changes, reason):
    buyer = changes.pop("buyer", BUYER)
    with pytest.raises(InvalidTerms, match=reason):
        make_terms(SELLER, buyer, **changes)


def test_a_pay_as_produced_share_is_of_the_sellers_own_generator():
    with pytest.raises(InvalidTerms, match="seller's own metered generator"):
        make_terms(SELLER, BUYER, shape=Shape.PAY_AS_PRODUCED, generator=BUYER)


@pytest.mark.parametrize("old,new,reason", [
    ('kind = "pay_as_produced"', 'kind = "solar"', "is not a valid Shape"),
    ('start = "2027-01-01T00:00:00Z"', 'start = "2027-01-01"', "UTC time"),
    ('share_percent = "25"', 'share_percent = "25.00001"', "at most 4 decimals"),
    ('credits_per_kwh = "0.12"', "credits_per_kwh = 0.12", "must be a str"),
    ("[ppa.price]", "[ppa.prices]", "missing table"),
])
def test_a_badly_filled_template_is_refused_with_a_reason(old, new, reason):
    with pytest.raises(InvalidTerms, match=reason):
        parse_terms_toml(filled_template(**{old: new}))
