"""The flexibility kinds on a ledger state: a request offered, awarded, metered and settled (with a
late reading reconciled), bad inputs refused with reasons, waits instead of refusals for what is
not certified yet, and the derived state independent of the order entries are applied in."""

import copy
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from p2pgrid.flex.entries import (
    FLEX_AWARD_KIND, FLEX_GRANT_KIND, FLEX_OFFER_KIND, FLEX_REQUEST_KIND, FLEX_SETTLE_KIND, FlexAward, FlexAwardLine,
    FlexGrant, FlexOffer, FlexSettle, SettlePosting, award_of, compute_award, compute_flex_settle, offers_of,
    plan_offer, request_of, settlement_of_request,
)
from p2pgrid.ledger.chain import EntryRejected, LedgerState, RejectReason, derive_state, process_entry, state_root

from flex_world import (
    CAL, FIX, GATEWAY, HOMES, KEYS, LIMITS, PENALTY, PRICES, World, awarded_world, limited_award_world, metered_world,
    offer, request_terms, requested_world, settle,
)

def refused(world, key, kind, body, time_ms):
    """The rejection of an entry (it must be refused); the state is left unchanged."""
    entry = world.entry(key, kind, body, time_ms)
    with pytest.raises(EntryRejected) as caught:
        process_entry(world.state.overlay(), entry, FIX.rules)
    return caught.value


def test_a_request_is_offered_awarded_in_merit_order_delivered_and_settled():
    world, terms = limited_award_world()
    accounts = world.account
    # Baselines (high 5 of 10 of identical evenings) are each home's evening import.
    offers = {r.account: r.offer for r in offers_of(world.state, terms.request_id)}
    assert [offers[accounts[n]].baseline_wh for n in HOMES] == [(1000, 1000), (800, 800), (600, 600)]
    assert [offers[accounts[n]].qty_wh for n in HOMES] == [(900, 900), (700, 500), (600, 600)]
    # Merit order: ben (150 000) fills first, ana (200 000) next, cai (250 000) takes the rest.
    lines = {line.account: line.awarded_wh for line in award_of(world.state, terms.request_id).award.lines}
    assert lines == {accounts["ben"]: (700, 500), accounts["ana"]: (800, 900), accounts["cai"]: (0, 100)}

    # The evening: ben and ana cut their import; cai's second reading is not certified in time.
    for name, (first, second) in {"ana": (200, 100), "ben": (100, 300)}.items():
        world.meter(name, CAL.slots[0], first)
        world.meter(name, CAL.slots[1], second)
    world.meter("cai", CAL.slots[0], 600)
    before = dict(world.state.balances)
    settle(world, terms)
    record = settlement_of_request(world.state, terms.request_id)
    ana, ben, cai = (record.line(accounts[n]) for n in HOMES)
    assert (ben.result.paid_wh, ben.result.payment_uc, ben.result.penalty_uc) == (1200, 1200 * PRICES["ben"] // 1000, 0)
    assert (ana.result.paid_wh, ana.result.payment_uc) == (1700, 1700 * PRICES["ana"] // 1000)
    assert (cai.metered_slots, cai.result.paid_wh, cai.result.short_wh, cai.result.penalty_uc) == ((0,), 0, 100, 100 * PENALTY // 1000)
    paid = {n: world.state.balance(accounts[n]) - before.get(accounts[n], 0) for n in HOMES}
    assert paid == {"ana": 340_000, "ben": 180_000, "cai": -10_000}
    assert world.state.balance(GATEWAY.public_key) - before.get(GATEWAY.public_key, 0) == -510_000
    assert world.state.obligations(accounts["cai"]) == 10_000    # a penalty is an obligation
    assert world.state.money_total() == 0

    # cai's reading, taken in time, is certified after the settle: a reconciliation pays it.
    assert compute_flex_settle(world.state, FIX.rules, terms.request_id) is None     # nothing new
    world.meter("cai", CAL.slots[1], 450)
    reconcile = compute_flex_settle(world.state, FIX.rules, terms.request_id)
    assert reconcile.postings == (SettlePosting(accounts["cai"], 25_000 + 10_000),)
    settle(world, terms)
    cai = settlement_of_request(world.state, terms.request_id).line(accounts["cai"])
    assert (cai.metered_slots, cai.result.delivered_wh, cai.result.paid_wh, cai.net_uc) == ((0, 1), 150, 100, 25_000)
    assert world.state.balance(accounts["cai"]) - before.get(accounts["cai"], 0) == 25_000
    assert world.state.obligations(accounts["cai"]) == 0 and world.state.money_total() == 0

    # Any order of applying the certified entries (each chain in its own order) derives the same state.
    for seed in range(3):
        shuffled = list(world.log)
        random.Random(seed).shuffle(shuffled)
        derived, pending = derive_state(shuffled, FIX.rules)
        assert pending == {} and state_root(derived) == state_root(world.state)


def test_invalid_request_from_a_non_operator_is_refused_and_a_granted_dso_may_request():
    world = metered_world(days=5)
    dso = KEYS["ana"]
    terms = request_terms(nonce=7)
    caught = refused(world, dso, FLEX_REQUEST_KIND, terms, CAL.request_ms)
    assert caught.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT and "not_operator" in caught.detail and caught.is_final
    # Naming a grant the operator has not made (its chain is not that far): wait, not refuse.
    named = request_terms(nonce=7, grant_seq=world.state.head(GATEWAY.public_key).next_seq)
    caught = refused(world, dso, FLEX_REQUEST_KIND, named, CAL.request_ms)
    assert caught.reason is RejectReason.MISSING_DEPENDENCY and not caught.is_final
    # A gateway entry that is no grant of this account: final.
    wrong = request_terms(nonce=7, grant_seq=0)
    caught = refused(world, dso, FLEX_REQUEST_KIND, wrong, CAL.request_ms)
    assert caught.detail.startswith("not_operator") and caught.is_final
    # The operator grants ana until 13:00: a request at noon is valid, one at 13:00 is not.
    world.write(GATEWAY, FLEX_GRANT_KIND, FlexGrant(dso.public_key, CAL.at(13)), 0)
    world.write(dso, FLEX_REQUEST_KIND, named, CAL.request_ms)
    assert request_of(world.state, named.request_id).requester == dso.public_key
    late = request_terms(nonce=8, grant_seq=named.grant_seq)
    caught = refused(world, dso, FLEX_REQUEST_KIND, late, CAL.at(13))
    assert "grant ended" in caught.detail and caught.is_final
    # Only the operator grants.
    caught = refused(world, KEYS["ben"], FLEX_GRANT_KIND, FlexGrant(KEYS["ben"].public_key, CAL.at(13)), 0)
    assert caught.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT


def test_invalid_requests_with_bad_terms_are_refused_for_good():
    world = metered_world(days=5)
    for changes, words in (({"offer_deadline_ms": CAL.first_slot * 1000}, "offer deadline"),
                           ({"first_slot": CAL.first_slot + 60}, "slot start"),
                           ({"excluded_days": (CAL.day,)}, "excluded days")):
        caught = refused(world, GATEWAY, FLEX_REQUEST_KIND, request_terms(**changes), CAL.request_ms)
        assert words in caught.detail and caught.is_final
    world.write(GATEWAY, FLEX_REQUEST_KIND, request_terms(), CAL.request_ms)
    caught = refused(world, GATEWAY, FLEX_REQUEST_KIND, request_terms(), CAL.request_ms)
    assert caught.detail.startswith("duplicate_request")


def test_invalid_offer_after_the_deadline_is_refused_for_good():
    world, terms = requested_world()
    body = plan_offer(world.state, FIX.rules, KEYS["ana"].public_key, world.meters["ana"].key.public_key,
                      terms.request_id, PRICES["ana"], (500, 500))
    caught = refused(world, KEYS["ana"], FLEX_OFFER_KIND, body, CAL.offer_deadline_ms)
    assert caught.reason is RejectReason.DEADLINE_PASSED and caught.is_final
    world.write(KEYS["ana"], FLEX_OFFER_KIND, body, CAL.offer_deadline_ms - 1)    # a ms earlier: valid


def test_an_offer_for_a_request_not_certified_here_waits():
    world, terms = requested_world()
    body = plan_offer(world.state, FIX.rules, KEYS["ana"].public_key, world.meters["ana"].key.public_key,
                      terms.request_id, PRICES["ana"], (500, 500))
    without_request = World(state=derive_state([e for e in world.log if e.body.kind != FLEX_REQUEST_KIND],
                                               FIX.rules)[0])
    caught = refused(without_request, KEYS["ana"], FLEX_OFFER_KIND, body, CAL.at(14))
    assert caught.reason is RejectReason.MISSING_DEPENDENCY and not caught.is_final


def test_invalid_offer_beyond_the_nodes_capability_is_refused_with_the_reason():
    world, terms = requested_world()
    meter_key = world.meters["cai"].key.public_key
    # cai: baseline 600 Wh, connection 3000 W = 750 Wh a slot: it can move at most 1350 Wh.
    caught = refused(world, KEYS["cai"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 100_000, (1351, 0), (600, 600), meter_key), CAL.at(14))
    assert caught.detail.startswith("beyond_capability") and "1350" in caught.detail and caught.is_final
    # Another home's meter key is not its connection.
    caught = refused(world, KEYS["cai"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 100_000, (100, 0), (600, 600), world.meters["ana"].key.public_key),
                     CAL.at(14))
    assert caught.detail.startswith("beyond_capability") and "another account" in caught.detail
    # A baseline it did not earn, and a price above the cap.
    caught = refused(world, KEYS["cai"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 100_000, (100, 0), (900, 600), meter_key), CAL.at(14))
    assert caught.detail.startswith("wrong_baseline") and "600 Wh computed" in caught.detail
    caught = refused(world, KEYS["cai"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 300_001, (100, 0), (600, 600), meter_key), CAL.at(14))
    assert caught.detail.startswith("above_price_cap")
    world.write(KEYS["cai"], FLEX_OFFER_KIND, FlexOffer(terms.request_id, 100_000, (1350, 0), (600, 600), meter_key),
                CAL.at(14))
    caught = refused(world, KEYS["cai"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 100_000, (1, 0), (600, 600), meter_key), CAL.at(14))
    assert caught.detail.startswith("duplicate_offer")


def test_a_node_with_too_little_metered_history_cannot_offer():
    world = metered_world(days=4)
    world.write(GATEWAY, FLEX_REQUEST_KIND, request_terms(), CAL.request_ms)
    terms = request_terms()
    assert plan_offer(world.state, FIX.rules, KEYS["ana"].public_key, world.meters["ana"].key.public_key,
                      terms.request_id, PRICES["ana"], (500, 500)) is None
    caught = refused(world, KEYS["ana"], FLEX_OFFER_KIND,
                     FlexOffer(terms.request_id, 100_000, (100, 0), (0, 0), world.meters["ana"].key.public_key),
                     CAL.at(14))
    assert caught.detail.startswith("no_baseline") and caught.is_final


def test_invalid_award_beyond_the_request_or_out_of_merit_order_is_refused():
    world, terms = requested_world()
    for name in HOMES:
        offer(world, name, terms, LIMITS[name])
    a = world.account
    offers = tuple(sorted(a.values()))
    beyond = FlexAward(terms.request_id, offers, tuple(sorted((FlexAwardLine(a["ana"], (900, 900)),
                                                               FlexAwardLine(a["ben"], (700, 500)),
                                                               FlexAwardLine(a["cai"], (0, 600))), key=lambda l: l.account)))
    caught = refused(world, GATEWAY, FLEX_AWARD_KIND, beyond, CAL.award_ms)
    assert caught.detail.startswith("award_beyond_request") and "1600 Wh awarded of 1500" in caught.detail
    skewed = FlexAward(terms.request_id, offers, tuple(sorted((FlexAwardLine(a["ana"], (900, 900)),
                                                               FlexAwardLine(a["ben"], (600, 500)),
                                                               FlexAwardLine(a["cai"], (0, 100))), key=lambda l: l.account)))
    assert refused(world, GATEWAY, FLEX_AWARD_KIND, skewed, CAL.award_ms).detail.startswith("not_merit_order")
    more = FlexAward(terms.request_id, offers, tuple(sorted((FlexAwardLine(a["ana"], (800, 950)),
                                                             FlexAwardLine(a["ben"], (700, 500))), key=lambda l: l.account)))
    assert refused(world, GATEWAY, FLEX_AWARD_KIND, more, CAL.award_ms).detail.startswith("award_beyond_offer")
    good = compute_award(world.state, terms.request_id)
    assert refused(world, GATEWAY, FLEX_AWARD_KIND, good, CAL.offer_deadline_ms - 1).detail.startswith("too_early")
    caught = refused(world, GATEWAY, FLEX_AWARD_KIND, good, CAL.first_slot * 1000)
    assert caught.reason is RejectReason.DEADLINE_PASSED
    assert refused(world, KEYS["ana"], FLEX_AWARD_KIND, good, CAL.award_ms).detail.startswith("not_requester")
    world.write(GATEWAY, FLEX_AWARD_KIND, good, CAL.award_ms)
    assert refused(world, GATEWAY, FLEX_AWARD_KIND, good, CAL.award_ms).detail.startswith("already_awarded")


def test_an_award_naming_an_offer_not_certified_here_waits():
    world, terms = requested_world()
    offer(world, "ana", terms)
    state_without_ben = world.state.copy()
    offer(world, "ben", terms)
    award = compute_award(world.state, terms.request_id)
    entry = World(state=state_without_ben).entry(GATEWAY, FLEX_AWARD_KIND, award, CAL.award_ms)
    with pytest.raises(EntryRejected) as caught:
        process_entry(state_without_ben, entry, FIX.rules)
    assert caught.value.reason is RejectReason.MISSING_DEPENDENCY


def test_invalid_settles_are_refused_and_a_named_reading_not_here_waits():
    world, terms = awarded_world()
    a = world.account
    for name in HOMES:
        for slot in CAL.slots:
            world.meter(name, slot, 0)
    body = compute_flex_settle(world.state, FIX.rules, terms.request_id)
    assert refused(world, GATEWAY, FLEX_SETTLE_KIND, body, CAL.settle_ms - 1).detail.startswith("too_early")
    wrong = FlexSettle(body.request_id, body.metered, tuple(SettlePosting(p.account, p.amount_uc + 1) for p in body.postings))
    assert refused(world, GATEWAY, FLEX_SETTLE_KIND, wrong, CAL.settle_ms).detail.startswith("wrong_postings")
    # A settle naming a reading this validator does not hold waits for it.
    without = World(state=derive_state([e for e in world.log if not (
        e.body.account == a["ben"] and e.body.kind == "meter" and e.body.time_ms > CAL.at(18))], FIX.rules)[0])
    caught = refused(without, GATEWAY, FLEX_SETTLE_KIND, body, CAL.settle_ms)
    assert caught.reason is RejectReason.MISSING_DEPENDENCY
    settle(world, terms)
    caught = refused(world, GATEWAY, FLEX_SETTLE_KIND, body, CAL.settle_ms)
    assert caught.detail.startswith("not_reconciling")
    assert world.state.money_total() == 0


def test_the_state_root_covers_the_flex_records():
    world, terms = awarded_world()
    other = World(state=derive_state(world.log[:-1], FIX.rules)[0])
    assert award_of(other.state, terms.request_id) is None
    assert state_root(other.state) != state_root(world.state)
    assert isinstance(world.state, LedgerState)


_BASE = None


def base_world():
    """The requested world, built once; each example works on a copy."""
    global _BASE
    if _BASE is None:
        _BASE = requested_world()
    world, terms = _BASE
    return World(state=world.state.copy(), meters={n: copy.copy(m) for n, m in world.meters.items()},
                 log=list(world.log)), terms


reading = st.one_of(st.none(), st.integers(-1_000, 2_000))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({n: st.tuples(st.integers(0, 1_200), st.integers(0, 1_200)) for n in HOMES}),
       st.fixed_dictionaries({n: st.integers(1, 300_000) for n in HOMES}),
       st.fixed_dictionaries({n: st.tuples(reading, reading) for n in HOMES}), st.integers(0, 2**32))
def test_settlement_conserves_money_pays_at_most_awarded_and_delivered_and_is_order_independent(
        limits, prices, readings, seed):
    world, terms = base_world()
    a = world.account
    offered = []
    for name in HOMES:
        body = plan_offer(world.state, FIX.rules, a[name], world.meters[name].key.public_key, terms.request_id,
                          prices[name], limits[name])
        if body is not None:
            world.write(KEYS[name], FLEX_OFFER_KIND, body, CAL.at(14))
            offered.append(name)
    world.write(GATEWAY, FLEX_AWARD_KIND, compute_award(world.state, terms.request_id), CAL.award_ms)
    for name in HOMES:
        for slot, value in zip(CAL.slots, readings[name]):
            if value is not None:
                world.meter(name, slot, max(value, 0), max(-value, 0))
    start = {account: world.state.balance(account) for account in (*a.values(), GATEWAY.public_key)}
    settle(world, terms)
    record = settlement_of_request(world.state, terms.request_id)
    award = {line.account: line.awarded_wh for line in award_of(world.state, terms.request_id).award.lines}
    moved = {account: world.state.balance(account) - before for account, before in start.items()}
    assert sum(moved.values()) == 0 and world.state.money_total() == 0
    for line in record.lines:
        assert line.result.paid_wh <= min(sum(award[line.account]), line.result.delivered_wh)
        assert line.result.payment_uc <= line.result.paid_wh * 300_000 // 1000
        assert moved[line.account] == line.net_uc
    assert -moved[GATEWAY.public_key] == sum(line.net_uc for line in record.lines)
    shuffled = list(world.log)
    random.Random(seed).shuffle(shuffled)
    derived, pending = derive_state(shuffled, FIX.rules)
    assert pending == {} and state_root(derived) == state_root(world.state)
