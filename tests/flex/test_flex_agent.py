"""Offers sized from a home's battery and EV limits (p2pgrid.flex.agent)."""

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.flex.agent import EvSession, battery_flex_wh, deliverable_wh, ev_flex_wh, home_limits
from p2pgrid.flex.rules import Direction

SLOTS = [72_000, 72_900]          # two 15-minute slots
BATTERY = BatteryLimits(capacity_wh=10_000, max_charge_w=3_000, max_discharge_w=4_000, min_soc_wh=500,
                        reserve_wh=2_000, discharge_efficiency=0.9, charge_efficiency=0.9)


def test_the_battery_discharges_at_its_power_and_never_into_the_backup_reserve():
    # 1000 Wh per slot at 4 kW; from 5000 Wh, 3000 Wh above the reserve, 2700 Wh after losses.
    assert battery_flex_wh(Direction.DOWN, BATTERY, 5_000, 2, 900) == (1000, 1000)
    # Nearly at the reserve: 500 Wh above it, 450 delivered, spread over both slots.
    assert battery_flex_wh(Direction.DOWN, BATTERY, 2_500, 2, 900) == (225, 225)
    assert battery_flex_wh(Direction.DOWN, BATTERY, 5_000, 4, 900) == (675, 675, 675, 675)
    assert battery_flex_wh(Direction.DOWN, BATTERY, 1_500, 2, 900) == (0, 0)


def test_the_battery_absorbs_up_to_its_room_for_an_up_request():
    assert battery_flex_wh(Direction.UP, BATTERY, 9_500, 2, 900) == (278, 277)
    assert battery_flex_wh(Direction.UP, BATTERY, 0, 2, 900) == (750, 750)


def test_the_ev_pauses_only_if_it_can_still_be_charged_before_departure():
    slot_end_ms = (SLOTS[-1] + 900) * 1000
    # 7 kW, 6 kWh still needed: leaving 1 h after the event it could only add 7 kWh afterwards — enough.
    ev = EvSession(plugged_in_ms=0, departure_ms=slot_end_ms + 3_600_000, need_wh=6_000, max_charge_w=7_000)
    assert ev_flex_wh(Direction.DOWN, ev, SLOTS, 900) == (1750, 1750)
    # Leaving 30 min after the event: 3.5 kWh afterwards is short of 6 kWh, so it does not pause.
    short = EvSession(0, slot_end_ms + 1_800_000, 6_000, 7_000)
    assert ev_flex_wh(Direction.DOWN, short, SLOTS, 900) == (0, 0)
    # Plugged in only for the second slot; nothing to shed for an up request.
    late = EvSession(SLOTS[1] * 1000, slot_end_ms + 3_600_000, 2_000, 7_000)
    assert ev_flex_wh(Direction.DOWN, late, SLOTS, 900) == (0, 1750)
    assert ev_flex_wh(Direction.UP, ev, SLOTS, 900) == (0, 0)
    # With its charge plan: only what the plan draws in each slot can be paused.
    planned = EvSession(0, slot_end_ms + 3_600_000, 6_000, 7_000, planned_wh=(0, 900))
    assert ev_flex_wh(Direction.DOWN, planned, SLOTS, 900) == (0, 900)


def test_a_home_adds_its_devices_and_offers_nothing_without_any():
    ev = EvSession(0, (SLOTS[-1] + 900) * 1000 + 3_600_000, 6_000, 7_000)
    assert home_limits(Direction.DOWN, SLOTS, 900, BATTERY, 5_000, ev) == (2750, 2750)
    assert home_limits(Direction.DOWN, SLOTS, 900) is None


def test_an_offer_is_capped_by_what_shedding_delivers_against_the_baseline():
    # Shedding 1000 Wh from an expected 1200 against a baseline of 800 delivers 600; from an
    # expected 2500 (an unusual car charge) it delivers nothing; below the baseline, all of it.
    assert deliverable_wh((1000, 1000, 1000), (800, 800, 800), (1200, 2500, 500)) == (600, 0, 1000)
