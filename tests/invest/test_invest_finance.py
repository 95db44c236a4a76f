"""NPV, IRR, payback, levelised cost, sensitivity and annualisation on hand-computed examples."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.invest.statement import (
    IRR_LOW, InvestError, InvestTerms, SeasonSample, annualise, figures, irr, lcos_uc_per_kwh, npv, payback_years,
    project_cashflows, sensitivity,
)


def test_npv_of_a_one_year_ten_percent_return_at_ten_percent_is_zero():
    assert npv(0.10, [-100, 110]) == pytest.approx(0.0, abs=1e-12)


def test_npv_of_two_years_of_sixty_at_ten_percent():
    # -100 + 60/1.1 + 60/1.21 = -100 + 54.5454… + 49.5867… = 4.1322…
    assert npv(0.10, [-100, 60, 60]) == pytest.approx(4.13223140, rel=1e-8)


def test_npv_at_zero_rate_is_the_plain_sum():
    assert npv(0.0, [-100, 30, 30, 30]) == -10


def test_npv_refuses_a_rate_of_minus_one_hundred_percent():
    with pytest.raises(InvestError):
        npv(-1.0, [-1, 2])


def test_irr_of_a_one_year_ten_percent_return():
    assert irr([-100, 110]) == pytest.approx(0.10, abs=1e-9)


def test_irr_of_two_years_of_sixty():
    # 60x² + 60x − 100 = 0 with x = 1/(1+r): x = (−60 + √27600)/120 = 0.884437…, r = 0.1306624…
    x = (-60 + math.sqrt(27_600)) / 120
    assert irr([-100, 60, 60]) == pytest.approx(1 / x - 1, abs=1e-9)


def test_irr_is_negative_when_the_money_never_comes_back_in_full():
    # 40x² + 50x − 100 = 0: x = (−50 + √18500)/80 = 1.0751…, r = −6.99 %
    x = (-50 + math.sqrt(18_500)) / 80
    rate = irr([-100, 50, 40])
    assert rate == pytest.approx(1 / x - 1, abs=1e-9) and rate < 0


@pytest.mark.parametrize("flows", [[-100, -10, -5], [100, 10], [0, 0, 0], [-100]])
def test_irr_is_none_when_npv_never_changes_sign(flows):
    assert irr(flows) is None


def test_payback_is_interpolated_within_the_year_it_happens():
    # cumulative −100, −70, −40, −10, +20: paid back a third of the way into year 4
    assert payback_years([-100, 30, 30, 30, 30]) == pytest.approx(3 + 10 / 30)


def test_payback_exactly_at_a_year_end():
    assert payback_years([-100, 50, 50, 50]) == pytest.approx(2.0)


def test_no_payback_when_the_cumulative_position_stays_negative():
    assert payback_years([-100, 10, 10, 10]) is None
    assert payback_years([-100, -10, 20]) is None


def test_payback_is_zero_without_an_initial_outlay():
    assert payback_years([0, 10]) == 0.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**6), st.lists(st.integers(0, 10**6), min_size=1, max_size=25))
def test_irr_is_where_npv_is_zero_when_it_exists(outlay, returns):
    flows = [-outlay, *returns]
    rate = irr(flows)
    if sum(returns) == 0 or npv(IRR_LOW, flows) <= 0:
        assert rate is None or rate == pytest.approx(IRR_LOW)    # a loss beyond −99 % a year
        return
    assert rate is not None
    assert abs(npv(rate, flows)) <= 1e-6 * max(outlay, sum(returns))
    assert (rate > 0) == (sum(returns) > outlay) or abs(sum(returns) - outlay) <= 1


def test_project_cashflows_degrade_yearly_and_pay_opex():
    terms = InvestTerms(capex_uc=100, opex_uc_per_year=10, lifetime_years=3, degradation_per_year=0.1,
                        discount_rate=0.0)
    assert project_cashflows(terms, 50.0) == pytest.approx([-100, 40, 35, 30.5])


def test_yield_scales_revenue_only_and_price_scales_the_whole_operating_net():
    terms = InvestTerms(100, 0, 1, 0.0, 0.0)
    # revenue 80, costs −30: operating 50
    assert project_cashflows(terms, 50.0, annual_revenue_uc=80.0, yield_factor=1.2)[1] == pytest.approx(96 - 30)
    assert project_cashflows(terms, 50.0, annual_revenue_uc=80.0, price_factor=0.8)[1] == pytest.approx(40)


def test_lcos_is_discounted_cost_over_discounted_delivered_energy():
    terms = InvestTerms(capex_uc=1_000_000, opex_uc_per_year=100_000, lifetime_years=2, degradation_per_year=0.5,
                        discount_rate=0.0)
    # cost 1.2 M µc; energy 10 kWh + 5 kWh
    assert lcos_uc_per_kwh(terms, 10_000) == pytest.approx(1_200_000 / 15)
    assert lcos_uc_per_kwh(terms, 0) is None


def test_sensitivity_moves_npv_the_expected_way():
    terms = InvestTerms(capex_uc=1_000, opex_uc_per_year=10, lifetime_years=10, degradation_per_year=0.05,
                        discount_rate=0.05)
    base = figures(terms, project_cashflows(terms, 200.0, annual_revenue_uc=300.0)).npv_uc
    rows = {(r.parameter, r.change): r.figures.npv_uc for r in sensitivity(terms, 200.0, 300.0)}
    assert len(rows) == 6
    assert rows[("price level", -0.2)] < base < rows[("price level", 0.2)]
    assert rows[("PV yield", -0.2)] < base < rows[("PV yield", 0.2)]
    assert rows[("battery degradation", 0.2)] < base < rows[("battery degradation", -0.2)]


def test_one_run_stands_for_the_whole_year():
    annual = annualise([SeasonSample("spring", {"feed_in": 10}, covered_days=1.0)])
    assert annual.streams["feed_in"] == pytest.approx(3650)
    assert "per-season" in annual.method


def test_seasons_share_the_year_by_their_days():
    annual = annualise([SeasonSample("summer", {"feed_in": 100}, 1.0), SeasonSample("winter", {"feed_in": 10}, 2.0)])
    # summer stands for 92/182 of 365 d over 1 d; winter for 90/182 of 365 d over 2 d
    assert annual.weights["summer"] == pytest.approx(92 * 365 / 182)
    assert annual.weights["winter"] == pytest.approx(90 * 365 / 182 / 2)
    assert annual.streams["feed_in"] == pytest.approx(100 * 92 * 365 / 182 + 10 * 90 * 365 / 182 / 2)


def test_four_seasons_of_one_day_each_weigh_their_calendar_days():
    samples = [SeasonSample(s, {"feed_in": 1}, 1.0) for s in ("winter", "spring", "summer", "autumn")]
    assert annualise(samples).streams["feed_in"] == pytest.approx(365)


@pytest.mark.parametrize("samples", [[], [SeasonSample("monsoon", {}, 1.0)], [SeasonSample("spring", {}, 0.0)]])
def test_annualise_refuses_what_it_cannot_scale(samples):
    with pytest.raises(InvestError):
        annualise(samples)
