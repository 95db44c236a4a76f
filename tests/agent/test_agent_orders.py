"""Order intents from a plan, and limit prices re-priced toward the tariff as the gate nears."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.orders import OrderIntent, orders_for_plan, setpoints_w
from p2pgrid.agent.plan import SlotPrices, plan_battery
from p2pgrid.agent.pricing import RepricingRule, SlotMarket, expected_prices, limit_price
from p2pgrid.errors import ConfigError
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, Source

RULES = SlotRules()                 # 15-min slots, 24 h horizon, 5 min gate
SLOT = 1_800_000_000                # a slot start (aligned to 900 s)
GATE_MS = RULES.gate_closure_ms(SLOT)
MARKET = SlotMarket(slot=SLOT, retail=300_000, feed_in=80_000, expected_p2p=190_000)
RULE = RepricingRule(ramp_s=4 * 3600)


def test_far_from_the_gate_both_sides_quote_the_expected_price():
    now = GATE_MS - 10 * 3600 * 1000
    assert limit_price(Side.SELL, MARKET, now, GATE_MS, RULE) == 190_000
    assert limit_price(Side.BUY, MARKET, now, GATE_MS, RULE) == 190_000


def test_halfway_through_the_ramp_prices_are_halfway_to_the_tariff():
    now = GATE_MS - 2 * 3600 * 1000
    assert limit_price(Side.SELL, MARKET, now, GATE_MS, RULE) == 135_000
    assert limit_price(Side.BUY, MARKET, now, GATE_MS, RULE) == 245_000


def test_at_gate_closure_sellers_quote_feed_in_and_buyers_retail():
    assert limit_price(Side.SELL, MARKET, GATE_MS, GATE_MS, RULE) == 80_000
    assert limit_price(Side.BUY, MARKET, GATE_MS, GATE_MS, RULE) == 300_000


def test_expected_price_outside_the_tariff_band_is_clamped():
    high = SlotMarket(slot=SLOT, retail=300_000, feed_in=80_000, expected_p2p=900_000)
    assert limit_price(Side.SELL, high, 0, GATE_MS, RULE) == 300_000


@settings(max_examples=200, deadline=None)
@given(retail=st.integers(0, 1_000_000), feed_in=st.integers(0, 1_000_000), p2p=st.integers(-100_000, 1_100_000),
       ramp_s=st.integers(1, 48 * 3600), t1=st.integers(-60 * 3600 * 1000, 0), t2=st.integers(-60 * 3600 * 1000, 0))
def test_repricing_is_monotone_toward_the_tariff_as_the_gate_nears(retail, feed_in, p2p, ramp_s, t1, t2):
    market = SlotMarket(slot=SLOT, retail=retail, feed_in=feed_in, expected_p2p=p2p)
    rule = RepricingRule(ramp_s=ramp_s)
    earlier, later = GATE_MS + min(t1, t2), GATE_MS + max(t1, t2)
    sell_early, sell_late = (limit_price(Side.SELL, market, t, GATE_MS, rule) for t in (earlier, later))
    buy_early, buy_late = (limit_price(Side.BUY, market, t, GATE_MS, rule) for t in (earlier, later))
    # Each side moves only toward its fallback tariff, never past it.
    assert abs(sell_late - feed_in) <= abs(sell_early - feed_in)
    assert abs(buy_late - retail) <= abs(buy_early - retail)
    assert min(feed_in, retail) <= sell_late <= max(feed_in, retail)
    assert limit_price(Side.SELL, market, GATE_MS, GATE_MS, rule) == feed_in
    assert limit_price(Side.BUY, market, GATE_MS, GATE_MS, rule) == retail


def test_expected_prices_mix_the_p2p_price_with_the_tariff():
    assert expected_prices(MARKET, 0.0) == SlotPrices(300_000, 80_000)
    assert expected_prices(MARKET, 1.0) == SlotPrices(190_000, 190_000)
    assert expected_prices(MARKET, 0.5) == SlotPrices(245_000, 135_000)
    with pytest.raises(ConfigError):
        expected_prices(MARKET, 1.5)


LIMITS = BatteryLimits(capacity_wh=2000, max_charge_w=2000, max_discharge_w=2000, min_soc_wh=0)


def three_slot_plan():
    # slot 0: surplus beyond what the battery takes -> green sale; slot 1: evening load -> buy.
    markets = [SlotMarket(slot=SLOT + i * 900, retail=300_000, feed_in=80_000, expected_p2p=190_000)
               for i in range(3)]
    prices = [expected_prices(m, 0.0) for m in markets]
    load, pv = [100, 1500, 1500], [2000, 0, 0]
    plan = plan_battery(0, LIMITS, load, pv, prices, 900, soc_step_wh=50)
    return plan, pv, markets


def test_plan_becomes_green_sells_and_plain_buys():
    plan, pv, markets = three_slot_plan()
    now = SLOT * 1000 - 20 * 3600 * 1000
    intents = orders_for_plan(plan, pv, markets, now, RULES, rule=RULE)
    sells = [i for i in intents if i.side is Side.SELL]
    buys = [i for i in intents if i.side is Side.BUY]
    assert sells and all(i.green and i.source is Source.PV and i.slot == SLOT for i in sells)
    assert sum(i.qty_wh for i in sells) == -round(plan.slots[0].grid_wh)
    assert {i.slot for i in buys} == {SLOT + 900, SLOT + 1800}
    assert all(not i.green and i.limit_price == 190_000 for i in buys)
    assert all(isinstance(i.qty_wh, int) and i.qty_wh > 0 for i in intents)


def test_committed_energy_is_netted_and_closed_slots_are_skipped():
    plan, pv, markets = three_slot_plan()
    bought = round(plan.slots[1].grid_wh)
    now = RULES.gate_closure_ms(SLOT)      # slot 0 just closed
    intents = orders_for_plan(plan, pv, markets, now, RULES, committed_wh={SLOT + 900: bought}, rule=RULE)
    assert [i.slot for i in intents] == [SLOT + 1800]


def test_export_beyond_pv_is_offered_as_battery_energy():
    markets = [SlotMarket(slot=SLOT, retail=300_000, feed_in=80_000, expected_p2p=190_000),
               SlotMarket(slot=SLOT + 900, retail=300_000, feed_in=80_000, expected_p2p=190_000)]
    prices = [SlotPrices(300_000, 600_000), SlotPrices(300_000, 80_000)]   # a sell spike in slot 0
    plan = plan_battery(2000, LIMITS, [0, 0], [100, 0], prices, 900, soc_step_wh=50)
    intents = orders_for_plan(plan, [100, 0], markets, SLOT * 1000 - 3600_000, RULES, rule=RULE)
    assert OrderIntent(SLOT, Side.SELL, 100, intents[0].limit_price, True, Source.PV) in intents
    grey = [i for i in intents if not i.green]
    assert grey and grey[0].source is Source.BATTERY
    assert setpoints_w(plan)[0] < 0


def test_one_tick_plans_orders_and_setpoints_together():
    from p2pgrid.agent.tick import AgentSettings, decide

    markets = [SlotMarket(slot=SLOT + i * 900, retail=300_000, feed_in=80_000, expected_p2p=190_000)
               for i in range(4)]
    now = SLOT * 1000 - 3600_000
    decision = decide(0, LIMITS, [100, 100, 1500, 1500], [2500, 2500, 0, 0], markets, now, RULES,
                      settings=AgentSettings(fill_probability=0.0, soc_step_wh=50))
    assert len(decision.setpoints_w) == 4 and decision.setpoints_w[0] > 0 and decision.setpoints_w[2] < 0
    assert {o.side for o in decision.orders} == {Side.SELL, Side.BUY}
    with pytest.raises(ConfigError):
        decide(0, LIMITS, [0, 0], [0, 0], [markets[0], markets[2]], now, RULES)
