"""Merit order and the settlement of one awarded offer, as integer arithmetic (p2pgrid.flex.rules)."""

from hypothesis import given, settings, strategies as st

from p2pgrid.flex.rules import Direction, OfferTerms, delivered_wh, merit_order, settle_offer
from p2pgrid.units import trade_value

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_merit_order_awards_the_cheapest_first_and_the_marginal_offer_partly():
    offers = [OfferTerms(A, 250_000, 10, (500, 500)), OfferTerms(B, 150_000, 30, (400, 100)),
              OfferTerms(C, 150_000, 20, (300, 600))]
    # C and B bid the same price: C's offer is older. Request 800 Wh per slot.
    assert merit_order(800, offers) == {C: (300, 600), B: (400, 100), A: (100, 100)}
    assert merit_order(200, offers) == {C: (200, 200)}


def test_delivered_flexibility_is_direction_aware_and_never_negative():
    assert delivered_wh(Direction.DOWN, 1000, 300) == 700      # less import
    assert delivered_wh(Direction.DOWN, 1000, -200) == 1200    # exported instead
    assert delivered_wh(Direction.DOWN, 1000, 1200) == 0       # drew more: nothing delivered
    assert delivered_wh(Direction.UP, -800, 0) == 800          # stopped exporting
    assert delivered_wh(Direction.UP, 100, None) == 0          # no reading


def test_a_shortfall_is_charged_the_penalty_and_overdelivery_is_not_paid():
    # Awarded 500 + 500; delivered 700 (paid 500) and 200 (paid 200, 300 short).
    result = settle_offer(Direction.DOWN, (500, 500), (1000, 1000), (300, 800), 200_000, 100_000)
    assert (result.delivered_wh, result.paid_wh, result.short_wh) == (900, 700, 300)
    assert (result.payment_uc, result.penalty_uc, result.net_uc) == (140_000, 30_000, 110_000)


offer_strategy = st.tuples(st.integers(0, 500_000), st.integers(0, 10**6), st.lists(st.integers(0, 2_000), min_size=3,
                                                                                       max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5_000), st.lists(offer_strategy, max_size=8), st.randoms(use_true_random=False))
def test_merit_order_never_awards_beyond_the_request_or_an_offer_and_ignores_offer_order(requested, raw, rnd):
    offers = [OfferTerms(bytes([i]) * 32, price, t, tuple(qty)) for i, (price, t, qty) in enumerate(raw)]
    awarded = merit_order(requested, offers)
    shuffled = list(offers)
    rnd.shuffle(shuffled)
    assert merit_order(requested, shuffled) == awarded
    by_account = {o.account: o for o in offers}
    for i in range(3):
        assert sum(line[i] for line in awarded.values()) == min(requested, sum(o.qty_wh[i] for o in offers))
    for account, line in awarded.items():
        assert all(0 <= a <= q for a, q in zip(line, by_account[account].qty_wh))


slots_strategy = st.lists(st.tuples(st.integers(0, 3_000), st.integers(-3_000, 3_000),
                                    st.one_of(st.none(), st.integers(-5_000, 5_000))), min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(slots_strategy, st.sampled_from(Direction), st.integers(0, 10**6), st.integers(0, 10**6))
def test_never_paid_for_more_than_awarded_or_delivered(slots, direction, price, penalty):
    awarded, baseline, metered = zip(*slots)
    result = settle_offer(direction, awarded, baseline, metered, price, penalty)
    delivered = [delivered_wh(direction, b, m) for b, m in zip(baseline, metered)]
    assert result.paid_wh <= min(sum(awarded), sum(delivered))
    assert result.paid_wh + result.short_wh == sum(awarded)
    assert result.payment_uc <= trade_value(min(sum(awarded), sum(delivered)), price)
    assert result.payment_uc == trade_value(result.paid_wh, price) and result.penalty_uc == trade_value(result.short_wh, penalty)
