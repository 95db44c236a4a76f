"""The agent's core: it never acts on data from the future, keeps the battery within its limits
while it re-plans incrementally, and the station's arbitrage plan is the brute-force optimum."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.agent.agent_trader import AgentTrader, agent_settings, load_history
from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.core import AgentCore, FutureDataError, ReferencePrices
from p2pgrid.agent.plan import SlotPrices, plan_battery, schedule_cost, soc_levels
from p2pgrid.agent.pricing import SlotMarket, expected_prices
from p2pgrid.agent.tick import AgentSettings
from p2pgrid.config import build_config
from p2pgrid.units import SlotRules

SLOT_S = 3600
DAY = 86400 // SLOT_S
RETAIL, FEED_IN = 300_000, 80_000
START_S = 1_800_000_000 - 1_800_000_000 % 86400          # a UTC midnight
RULES = SlotRules(length_s=SLOT_S, horizon_s=86400, gate_s=300)
BATTERY = BatteryLimits(capacity_wh=10_000, max_charge_w=5_000, max_discharge_w=5_000, min_soc_wh=1_000,
                        max_soc_wh=9_500, charge_efficiency=0.96, discharge_efficiency=0.96)


class ForbiddingClock:
    """Market time that may only move forward; every read of a measured or published value goes
    through it and fails for a slot that has not ended (or been published) by now."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def ended(self, series: list[float], slot: int) -> float:
        if slot + SLOT_S > self.now_ms // 1000:
            raise FutureDataError(f"slot {slot} read before it ended")
        return series[(slot - START_S) // SLOT_S]


def world(seed: int, days: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    n = days * DAY
    hour = [i % DAY for i in range(n)]
    return {"load": [300 + 500 * (17 <= h <= 21) + rng.uniform(0, 200) for h in hour],
            "pv": [max(0.0, 3000 * (1 - abs(h - 12) / 6)) * rng.uniform(0.5, 1.0) for h in hour],
            "price": [150_000 + rng.uniform(-40_000, 40_000) for _ in hour],
            "reference": [40_000 + 30_000 * (17 <= h <= 21) - 20_000 * (10 <= h <= 15) + rng.randrange(-5_000, 5_000)
                          for h in hour]}


def run_agent(data: dict[str, list[float]], until_ms: int, clock: ForbiddingClock,
              settings_: AgentSettings) -> list:
    """Drive a core hour by hour as the node does, reading only through the clock; its decisions."""
    core = AgentCore(RULES, RETAIL, FEED_IN, steps=12,
                     reference=ReferencePrices(START_S, SLOT_S, tuple(int(v) for v in data["reference"])))
    decisions = []
    soc = 5_000
    now = START_S * 1000 + 60_000
    while now <= until_ms:
        clock.now_ms = now
        slot = RULES.slot_of(now)
        if slot > START_S:
            ended = slot - SLOT_S
            core.observe(ended, clock.ended(data["load"], ended), clock.ended(data["pv"], ended),
                         clock.ended(data["price"], ended), now)
        decision = core.decide(now, soc, BATTERY, {}, settings_, 300.0, 0.0)
        decisions.append((decision.setpoints_w, decision.orders, tuple(m.anchor for m in core.plan_markets)))
        soc = decision.plan.slots[0].soc_end_wh
        now += SLOT_S * 1000
    return decisions


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cut_hours=st.integers(1, 2 * DAY - 1), other=st.integers(0, 10_000))
def test_decisions_never_depend_on_data_from_after_now(seed, cut_hours, other):
    """Two worlds equal up to ``now`` and different after it give the same decisions up to ``now``;
    the clock refuses every read beyond it (a read would raise FutureDataError and fail the test)."""
    days = 3
    first, second = world(seed, days), world(other, days)
    cut = cut_hours
    # The second world keeps the first's past up to the cut; its reference prices stay equal as far
    # as they were published at the cut (the day-ahead auction publishes a day ahead).
    now_ms = (START_S + cut * SLOT_S) * 1000 + 60_000
    published = ReferencePrices(START_S, SLOT_S, tuple(int(v) for v in first["reference"])).published(now_ms)
    mixed = {key: first[key][:cut] + second[key][cut:] for key in ("load", "pv", "price")}
    mixed["reference"] = first["reference"][:published] + second["reference"][published:]
    settings_ = AgentSettings(fill_probability=0.5, terminal_price=135_000, soc_step_wh=500)
    a = run_agent(first, now_ms, ForbiddingClock(START_S * 1000), settings_)
    b = run_agent(mixed, now_ms, ForbiddingClock(START_S * 1000), settings_)
    assert a == b


def test_the_core_refuses_a_slot_that_has_not_ended_and_an_unpublished_price():
    core = AgentCore(RULES, RETAIL, FEED_IN, steps=4)
    now = START_S * 1000 + 30 * 60_000
    with pytest.raises(FutureDataError):
        core.observe(START_S, 100.0, 0.0, None, now)           # the slot ends at START_S + 3600
    reference = ReferencePrices(START_S, SLOT_S, tuple(range(3 * DAY)))
    # Before 11:00 UTC only today's prices are out; after it tomorrow's too.
    morning = (START_S + 10 * SLOT_S) * 1000
    assert reference.published(morning) == DAY
    with pytest.raises(FutureDataError):
        reference.known(START_S + DAY * SLOT_S, morning)
    assert reference.published((START_S + 12 * SLOT_S) * 1000) == 2 * DAY


def test_site_history_is_read_only_up_to_now_even_when_the_file_holds_more(tmp_path):
    data = tmp_path / "node"
    data.mkdir()
    (data / "history.json").write_text(json.dumps({"start_s": START_S, "slot_s": SLOT_S,
                                                   "load": [100] * 48, "pv": [0] * 48}))
    config = build_config({"node": {"data_dir": str(data)}, "zone": {"id": "z", "slots": {"length_s": SLOT_S}},
                           "agent": {"strategy": "agent", "history_file": "history.json"}}, base_dir=tmp_path)
    core = AgentCore(config.zone.slot_rules, RETAIL, FEED_IN, steps=4)
    now = (START_S + 10 * SLOT_S + 1800) * 1000
    assert load_history(config, core, now) == 10
    assert core.last_slot == START_S + 9 * SLOT_S


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), drift=st.lists(st.integers(-2_000, 2_000), min_size=6, max_size=6),
       arbitrage=st.booleans())
def test_battery_limits_hold_through_replans_and_reused_plans(seed, drift, arbitrage):
    """Every decision, fresh or from the cached plan, keeps SoC in the band and power in the limits,
    however far the real SoC drifts from the plan between ticks."""
    data = world(seed, 2)
    core = AgentCore(RULES, RETAIL, FEED_IN, steps=8,
                     reference=ReferencePrices(START_S, SLOT_S, tuple(int(v) for v in data["reference"])))
    settings_ = AgentSettings(fill_probability=1.0 if arbitrage else 0.5, terminal_price=135_000,
                              soc_step_wh=500)
    soc = 5_000
    now = (START_S + 8 * SLOT_S) * 1000
    for step, change in enumerate(drift):
        slot = RULES.slot_of(now)
        core.observe(slot - SLOT_S, data["load"][step], data["pv"][step], None, now)
        for minute in (1, 20, 40):                       # three ticks per slot, SoC drifting
            tick = now + minute * 60_000
            soc = min(BATTERY.ceiling_wh, max(BATTERY.floor_wh, soc + change // 3))
            decision = core.decide(tick, soc, BATTERY, {}, settings_, 300.0, 0.0)
            path = decision.plan.slots
            for planned in path:
                assert BATTERY.floor_wh <= planned.soc_end_wh <= BATTERY.ceiling_wh
                assert -BATTERY.max_discharge_w - 1 <= planned.setpoint_w <= BATTERY.max_charge_w + 1
            for a, b in zip(path, path[1:]):
                assert a.soc_end_wh == b.soc_start_wh
        now += SLOT_S * 1000
    assert core.plans >= len(drift) and core.reuses > 0


def test_a_tick_with_nothing_changed_keeps_the_plan_and_a_new_trade_replans():
    core = AgentCore(RULES, RETAIL, FEED_IN, steps=8)
    settings_ = AgentSettings(terminal_price=135_000)
    now = (START_S + 3 * SLOT_S) * 1000 + 60_000
    first = core.decide(now, 5_000, BATTERY, {}, settings_, 800.0, 0.0)
    again = core.decide(now + 60_000, 5_000 + round(first.plan.first.soc_end_wh - 5_000) // 60, BATTERY, {},
                        settings_, 800.0, 0.0)
    assert again.plan is first.plan and core.plans == 1 and core.reuses == 1
    slot = RULES.slot_of(now) + SLOT_S
    core.decide(now + 120_000, 5_000, BATTERY, {slot: 300}, settings_, 800.0, 0.0)
    assert core.plans == 2


# --- the station's arbitrage plan is optimal ---------------------------------------------------

def brute_force(soc_wh: int, limits: BatteryLimits, load, pv, prices, step: int, terminal: float) -> float:
    levels = soc_levels(limits, soc_wh, step)
    up, down = limits.max_charge_stored_wh(SLOT_S), limits.max_discharge_stored_wh(SLOT_S)
    best = float("inf")
    for path in itertools.product(levels, repeat=len(load)):
        previous = soc_wh
        for level in path:
            if not -down <= level - previous <= up:
                break
            previous = level
        else:
            best = min(best, schedule_cost(soc_wh, path, limits, load, pv, prices, terminal_price=terminal))
    return best


@pytest.mark.parametrize("case", range(10))
def test_station_plan_equals_brute_force_on_small_horizons(case, tmp_path):
    """The station plans as an arbitrageur (buy = sell = the expected local price per slot), with
    its PV and its public chargers' load: the DP's plan costs what the best of all paths costs."""
    rng = random.Random(f"station:{case}")
    config = build_config({"node": {"data_dir": str(tmp_path)}, "zone": {"id": "z"},
                           "agent": {"strategy": "agent", "arbitrage": True}}, base_dir=tmp_path)
    settings_ = agent_settings(config)
    assert settings_.fill_probability == 1.0
    limits = BatteryLimits(capacity_wh=6_000, max_charge_w=3_000, max_discharge_w=3_000, min_soc_wh=600,
                           max_soc_wh=5_700, charge_efficiency=0.96, discharge_efficiency=0.96)
    horizon = 4
    load = [rng.choice([0, 0, 3_700, 7_400]) for _ in range(horizon)]               # EVs at the chargers
    pv = [rng.randrange(0, 9_000) for _ in range(horizon)]
    forecast = [rng.randrange(90_000, 290_000) for _ in range(horizon)]
    prices = [expected_prices(SlotMarket(k, RETAIL, FEED_IN, p), settings_.fill_probability)
              for k, p in enumerate(forecast)]
    assert all(p.buy == p.sell == f for p, f in zip(prices, forecast))
    step = 600
    soc0 = rng.choice(soc_levels(limits, limits.floor_wh, step))
    plan = plan_battery(soc0, limits, load, pv, prices, SLOT_S, soc_step_wh=step,
                        terminal_price=settings_.terminal_price)
    assert plan.expected_cost == pytest.approx(brute_force(soc0, limits, load, pv, prices, step,
                                                           settings_.terminal_price), abs=1e-6)


def test_station_buys_a_cheap_midday_to_sell_into_a_dear_evening():
    limits = BatteryLimits(capacity_wh=20_000, max_charge_w=10_000, max_discharge_w=10_000,
                           charge_efficiency=0.96, discharge_efficiency=0.96)
    prices = [SlotPrices(p, p) for p in (100_000, 100_000, 150_000, 250_000, 250_000)]
    plan = plan_battery(0, limits, [0] * 5, [0] * 5, prices, SLOT_S, terminal_price=100_000)
    grid = [round(s.grid_wh) for s in plan.slots]
    assert grid[0] > 0 and grid[1] > 0                 # buys at midday
    assert grid[3] < 0 and grid[4] < 0                 # sells in the evening
    assert sum(grid) > 0                               # the losses are bought too


def test_pool_terms_follow_the_plan_and_the_forecast():
    trader = AgentTrader()
    assert trader.pool_terms(START_S) is None          # no plan yet: the host's defaults
    trader.core = AgentCore(RULES, RETAIL, FEED_IN, steps=6)
    now = (START_S + 18 * SLOT_S) * 1000 + 60_000
    trader.core.decide(now, 9_000, BATTERY, {}, AgentSettings(fill_probability=1.0, terminal_price=100_000),
                       0.0, 0.0)
    slot = RULES.slot_of(now) + SLOT_S
    terms = trader.pool_terms(slot)
    assert terms is not None and terms.price == trader.core.expected_price(slot)
    assert terms.seed_wh == trader.core.planned_export_wh(slot)


@settings(max_examples=200, deadline=None)
@given(base=st.floats(-5_000, 5_000), bus=st.floats(-4_000, 4_000), committed=st.integers(-3_000, 3_000))
def test_the_battery_exports_only_what_was_sold_and_imports_only_what_was_bought(base, bus, committed):
    from p2pgrid.agent.control import traded_setpoint_w
    from p2pgrid.agent.plan import PlannedSlot

    planned = PlannedSlot(5_000, 5_000, bus, round(bus * 3600 / SLOT_S), base + bus, 0.0)
    held = traded_setpoint_w(planned, committed, SLOT_S) * SLOT_S / 3600     # bus Wh
    assert abs(held) <= abs(bus) + 1 and held * bus >= 0                      # never past the plan
    sold, bought = max(0, -committed), max(0, committed)
    if held < 0:
        assert -(base + held) <= max(0.0, -base) + sold + 1                   # export: PV surplus + sold
    if held > 0:
        assert base + held <= max(0.0, base) + bought + 1                     # import: own need + bought


def test_an_ask_on_the_book_lowers_the_buy_price_only_and_never_below_feed_in():
    plain = expected_prices(SlotMarket(0, RETAIL, FEED_IN, 190_000), 0.5)
    cheap = expected_prices(SlotMarket(0, RETAIL, FEED_IN, 190_000, best_ask=100_000), 0.5)
    assert cheap.buy == 100_000 < plain.buy and cheap.sell == plain.sell
    assert expected_prices(SlotMarket(0, RETAIL, FEED_IN, 190_000, best_ask=10_000), 0.5).buy == FEED_IN
    assert expected_prices(SlotMarket(0, RETAIL, FEED_IN, 190_000, best_ask=290_000), 0.5).buy == plain.buy
