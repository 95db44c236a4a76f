"""The "high 5 of 10" baseline: worked examples for each case, and the bound on a gamed history."""

from hypothesis import given, settings, strategies as st

from p2pgrid.flex.baseline import DAY_S, HIGH_DAYS, baseline_of, inflation_bound_wh

EVENT_DAY = 20_500
EVENT = EVENT_DAY * DAY_S + 18 * 3600          # 18:00 on the event day


def history(values_by_back: dict[int, int]) -> dict[int, int]:
    """Net import at 18:00 on the day ``back`` days before the event."""
    return {EVENT - back * DAY_S: wh for back, wh in values_by_back.items()}


def test_normal_day_is_the_mean_of_the_five_highest_of_the_last_ten_days():
    # Ten ordinary evenings: 900…1800 Wh. The five highest are 1400…1800, mean 1600.
    values = {back: 800 + 100 * back for back in range(1, 11)}
    baseline = baseline_of(history(values), EVENT)
    assert baseline.wh == (1400 + 1500 + 1600 + 1700 + 1800) // 5 == 1600
    assert baseline.days == tuple(EVENT_DAY - back for back in range(1, 11))
    assert baseline.high_days == tuple(EVENT_DAY - back for back in range(6, 11))
    # Older days do not count once ten eligible days are found.
    values[11] = 99_999
    assert baseline_of(history(values), EVENT).wh == 1600


def test_holiday_is_skipped_and_the_window_reaches_one_day_further_back():
    # Day −3 was a holiday (the house was empty: 100 Wh); it would have been in the window. The
    # request names it: the window becomes days −1, −2, −4 … −11.
    values = {back: 1000 for back in range(1, 12)}
    values[3] = 100
    values[11] = 2000
    plain = baseline_of(history(values), EVENT)
    assert EVENT_DAY - 3 in plain.days and EVENT_DAY - 11 not in plain.days
    holiday = baseline_of(history(values), EVENT, excluded_days={EVENT_DAY - 3})
    assert EVENT_DAY - 3 not in holiday.days and EVENT_DAY - 11 in holiday.days
    assert holiday.wh == (2000 + 4 * 1000) // 5 == 1200
    # A low holiday would not have lowered this baseline (only the top 5 count), but a high one
    # would have raised it: excluding atypical days keeps either out.
    assert plain.wh == 1000


def test_missing_meter_data_days_are_skipped_and_too_few_days_means_no_baseline():
    # Readings missing on days −2 and −5: the window takes the next days back instead.
    values = {back: 500 + back for back in range(1, 13) if back not in (2, 5)}
    baseline = baseline_of(history(values), EVENT)
    assert len(baseline.days) == 10 and EVENT_DAY - 2 not in baseline.days and EVENT_DAY - 12 in baseline.days
    assert baseline.wh == (512 + 511 + 510 + 509 + 508) // 5
    # Only four metered days in the last 30: no baseline, the node cannot offer this slot.
    assert baseline_of(history({1: 900, 7: 900, 20: 900, 30: 900}), EVENT) is None
    # Five is enough (the mean of all five); a reading 31 days back is too old.
    assert baseline_of(history({1: 900, 7: 900, 20: 900, 30: 900, 31: 5000}), EVENT) is None
    assert baseline_of(history({1: 900, 7: 900, 20: 900, 30: 900, 29: 400}), EVENT).wh == 800


def test_gamed_history_raises_the_baseline_by_at_most_a_fifth_of_the_inflation():
    # An honest evening import of 1000 Wh. Before the event the node burns an extra 3000 Wh on
    # each of the three evenings before it (9000 Wh bought at retail).
    honest = {back: 1000 for back in range(1, 11)}
    gamed = dict(honest)
    for back in (1, 2, 3):
        gamed[back] += 3000
    raised = baseline_of(history(gamed), EVENT).wh - baseline_of(history(honest), EVENT).wh
    assert raised == 3 * 3000 // 5 == 1800
    assert raised <= inflation_bound_wh(9000) == 1800
    # Every Wh of inflated baseline cost 5 Wh of real import: at a retail price of 300 000 µc/kWh
    # the gain is worth it only if flexibility pays more than 1 500 000 µc/kWh — and the payment
    # is capped by the award in any case.


values_strategy = st.dictionaries(st.integers(1, 30), st.integers(-5_000, 5_000), min_size=0, max_size=30)


@settings(max_examples=200, deadline=None)
@given(values_strategy, st.dictionaries(st.integers(1, 30), st.integers(0, 10_000), max_size=30),
       st.frozensets(st.integers(1, 30), max_size=5))
def test_inflating_earlier_days_never_raises_the_baseline_beyond_the_bound(values, inflation, excluded_backs):
    inflation = {back: wh for back, wh in inflation.items() if back in values}
    gamed = {back: wh + inflation.get(back, 0) for back, wh in values.items()}
    excluded = {EVENT_DAY - back for back in excluded_backs}
    honest_baseline = baseline_of(history(values), EVENT, excluded)
    gamed_baseline = baseline_of(history(gamed), EVENT, excluded)
    assert (honest_baseline is None) == (gamed_baseline is None)     # inflation adds no day
    if honest_baseline is None:
        return
    spent = sum(wh for back, wh in inflation.items() if EVENT_DAY - back in gamed_baseline.days)
    assert honest_baseline.wh <= gamed_baseline.wh <= honest_baseline.wh + inflation_bound_wh(spent)
    assert len(gamed_baseline.high_days) == HIGH_DAYS
