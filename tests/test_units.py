from hypothesis import given, strategies as st
import pytest

from p2pgrid.errors import ConfigError
from p2pgrid.units import SlotRules, credits, format_credits, trade_value


def test_trade_value_floors_fraction_of_microcredit():
    assert trade_value(1500, 300_000) == 450_000
    assert trade_value(1, 999) == 0
    assert trade_value(3, 333) == 0  # 0.999 µc
    assert trade_value(7, 1001) == 7


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(0, 10**9))
def test_trade_value_is_monotone_and_superadditive_within_one_unit(a, b, price):
    whole = trade_value(a + b, price)
    parts = trade_value(a, price) + trade_value(b, price)
    assert parts <= whole <= parts + 1


@given(st.integers(-10**15, 10**15))
def test_credits_round_trip(value):
    assert credits(format_credits(value)) == value


def test_credits_rejects_garbage():
    for bad in ["", "abc", "1.2345678", "1..2", "."]:
        with pytest.raises(ValueError):
            credits(bad)


def test_slot_calendar_worked_example():
    rules = SlotRules(length_s=900, horizon_s=3600, gate_s=300, grace_s=120)
    now_ms = (10 * 900 + 650) * 1000  # 650 s into slot 9000
    assert rules.slot_of(now_ms) == 9000
    slots = rules.tradable_slots(now_ms)
    # 9900 closes at 9600 s, i.e. before now (9650 s); 10800 and later are open up to 9650+3600.
    assert slots == [10800, 11700, 12600]
    assert rules.gate_closure_ms(10800) == 10500 * 1000
    assert rules.metering_due_ms(9000) == (9000 + 900 + 120) * 1000


@given(st.integers(0, 4 * 10**12))
def test_tradable_slots_are_exactly_the_open_ones(now_ms):
    rules = SlotRules(length_s=900, horizon_s=7200, gate_s=300)
    slots = rules.tradable_slots(now_ms)
    assert all(rules.is_tradable(s, now_ms) for s in slots)
    candidates = range(rules.slot_of(now_ms) - 900, rules.slot_of(now_ms) + 7200 + 1800, 900)
    assert sorted(s for s in candidates if rules.is_tradable(s, now_ms)) == slots


def test_bad_slot_rules_name_the_field():
    with pytest.raises(ConfigError, match="length_s"):
        SlotRules(length_s=7)
    with pytest.raises(ConfigError, match="gate_s"):
        SlotRules(gate_s=10**6)
