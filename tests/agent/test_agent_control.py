"""The real-time decision for the current slot."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.control import decide_slot, stored_change_bounds, interpolate_value
from p2pgrid.agent.plan import SlotPrices, plan_battery, transition_cost

SLOT_S = 900
LIMITS = BatteryLimits(capacity_wh=5000, max_charge_w=4000, max_discharge_w=4000, min_soc_wh=500,
                       charge_efficiency=0.95, discharge_efficiency=0.95)
PRICES = SlotPrices(buy=300_000, sell=80_000)


def test_absorbs_an_unforecast_pv_surplus_exactly():
    # Forecast: no PV. Actual: 437 Wh surplus. Storing it beats selling at feed-in because the
    # evening load would otherwise be bought at retail.
    load_fc, pv_fc = [200, 800, 800], [200, 0, 0]
    plan = plan_battery(1000, LIMITS, load_fc, pv_fc, [PRICES] * 3, SLOT_S, soc_step_wh=100)
    change = decide_slot(plan, LIMITS, 1000, load_wh=200, pv_wh=637, prices=PRICES, slot_s=SLOT_S)
    assert LIMITS.bus_wh(change) == 437 or abs(LIMITS.bus_wh(change) - 437) < 1e-6


def test_covers_an_unforecast_load_from_storage():
    plan = plan_battery(3000, LIMITS, [0, 0], [0, 0], [PRICES] * 2, SLOT_S, soc_step_wh=100, terminal_price=250_000)
    change = decide_slot(plan, LIMITS, 3000, load_wh=380, pv_wh=0, prices=PRICES, slot_s=SLOT_S)
    assert abs(LIMITS.bus_wh(change) + 380) < 1e-6   # no import: the battery delivers it all


def test_interpolates_value_between_levels_and_is_flat_outside():
    assert interpolate_value([0, 100], [10.0, 20.0], 25) == 12.5
    assert interpolate_value([0, 100], [10.0, 20.0], -5) == 10.0
    assert interpolate_value([0, 100], [10.0, 20.0], 150) == 20.0


@settings(max_examples=60, deadline=None)
@given(soc=st.integers(500, 5000), load=st.lists(st.floats(0, 2000), min_size=3, max_size=3),
       pv=st.lists(st.floats(0, 3000), min_size=3, max_size=3),
       actual_load=st.floats(0, 2000), actual_pv=st.floats(0, 3000),
       buy=st.integers(0, 500_000), sell=st.integers(0, 200_000))
def test_decision_is_feasible_and_never_worse_than_the_plans_first_step(soc, load, pv, actual_load, actual_pv, buy,
                                                                        sell):
    prices = [SlotPrices(buy, sell)] * 3
    plan = plan_battery(soc, LIMITS, load, pv, prices, SLOT_S, soc_step_wh=100)
    change = decide_slot(plan, LIMITS, soc, actual_load, actual_pv, prices[0], SLOT_S)
    low, high = stored_change_bounds(LIMITS, soc, SLOT_S)
    assert low - 1e-9 <= change <= high + 1e-9
    assert LIMITS.floor_wh - 1e-9 <= soc + change <= LIMITS.ceiling_wh + 1e-9

    def total(c: float) -> float:
        return (transition_cost(LIMITS, c, actual_load - actual_pv, prices[0], 0.0)
                + interpolate_value(plan.soc_levels, plan.value_after_first, soc + c))

    assert total(change) <= total(plan.first.soc_end_wh - soc) + 1e-6
