"""Scenario files, the community they describe, and the configs written for its nodes (fast: no nodes run)."""

import json
from pathlib import Path

import pytest

from p2pgrid.agent.profile_trader import TradingProfile, load_profile
from p2pgrid.config import load_config
from simnet.community import build_participants, prepare_community, self_consumption
from simnet.demo import main
from simnet.scenario import FAULT_KINDS, ScenarioError, build_scenario, load_scenario, resize

SCENARIOS = Path(__file__).resolve().parents[2] / "simnet" / "scenarios"


@pytest.mark.parametrize("name", ["community", "short", "faults"])
def test_shipped_scenarios_load(name):
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    assert scenario.name == name and scenario.participants >= 5


def test_the_fault_scenario_exercises_every_fault_kind():
    kinds = {f.kind for f in load_scenario(SCENARIOS / "faults.toml").faults}
    assert kinds == set(FAULT_KINDS)


@pytest.mark.parametrize("raw, message", [
    ({"scenario": {"speed": "fast"}}, "scenario.speed: expected float"),
    ({"scenario": {"colour": 1}}, "scenario.colour: unknown key"),
    ({"weather": {}}, r"unknown scenario section \[weather\]"),
    ({"scenario": {"transport": "carrier-pigeon"}}, "scenario.transport"),
    ({"scenario": {"slot_s": 1000}}, "slot_s"),
    ({"household": {"ask": [0.6, 0.2]}}, r"household.ask: expected \[low, high\]"),
    ({"faults": [{"at_h": 1.0, "kind": "meteor"}]}, "faults\\[0\\].kind"),
    ({"faults": [{"at_h": 1.0, "kind": "partition", "groups": [["a"]]}]}, "partition needs groups"),
    ({"faults": [{"at_h": 1.0, "kind": "kill"}]}, "kill needs a node"),
])
def test_invalid_scenarios_are_refused_naming_the_key(raw, message):
    with pytest.raises(ScenarioError, match=message):
        build_scenario(raw)


def test_resize_keeps_the_mix_and_drops_faults_on_missing_nodes():
    scenario = load_scenario(SCENARIOS / "faults.toml")
    small = resize(scenario, 5)
    assert (small.stations, small.consumers, small.households) == (1, 1, 2)
    assert small.committee_size == 4
    assert all(f.node in ("", "household-00", "household-01", "consumer-0", "station-0", "operator")
               for f in small.faults)
    assert not any(f.kind == "partition" for f in small.faults)   # its groups name absent households


def test_battery_self_consumption_stores_surplus_and_covers_need():
    # 10 kWh at 0.5 C: charges at most up to 95 % (losses √0.92 each way), then exports the rest;
    # the evening need comes out of storage.
    net, soc = self_consumption(load=[500, 500, 2000], pv=[8000, 1500, 0], capacity_wh=10_000, slot_s=3600)
    assert net == [-2808, -1000, 0]
    assert soc[0] == soc[1] == 0.95 and soc[2] == pytest.approx(0.7415, abs=1e-3)
    assert self_consumption([1, 2], [0, 5], 0, 900) == ([1, -3], [])


def test_prepared_nodes_have_loadable_configs_profiles_and_one_committee(tmp_path):
    scenario = build_scenario({"scenario": {"hours": 3.0, "start_hour": 10, "transport": "memory"},
                               "participants": {"households": 3, "consumers": 1, "stations": 1}})
    community = prepare_community(scenario, tmp_path, startup_s=5, now_wall_ms=1_000_000)
    configs = {p.name: load_config(tmp_path / "nodes" / p.name / "config.toml") for p in community.people}
    operator = configs["operator"]
    assert operator.gateway.fund_uc == scenario.credit_uc and len(operator.gateway.fund_accounts) == 5
    assert all(c.zone.gateway_account == community.people[0].account for c in configs.values())
    assert {len(c.zone.validators) for c in configs.values()} == {4}
    assert all(c.clock.anchor_wall_ms == 1_005_000 for c in configs.values())
    household = configs["household-00"]
    assert household.agent.strategy == "agent"
    assert configs["station-0"].agent.arbitrage and not household.agent.arbitrage
    # The agent's inputs: its site's past up to the first slot, and the day-ahead reference.
    history = json.loads((tmp_path / "nodes" / "household-00" / household.agent.history_file).read_text())
    end_s = history["start_s"] + len(history["load"]) * history["slot_s"]
    assert end_s * 1000 == community.timeline.profile_start_ms and len(history["pv"]) == len(history["load"])
    reference = json.loads((tmp_path / "nodes" / "household-00" / household.agent.reference_prices_file).read_text())
    assert reference["start_s"] == history["start_s"] and len(reference["prices"]) > len(history["load"])
    profile = load_profile(household)
    assert len(profile.net_wh) == 3 and profile.start_s * 1000 == community.timeline.profile_start_ms
    assert all(scenario.feed_in_price <= p <= scenario.retail_price for p in profile.ask_price + profile.bid_price)
    summary = json.loads((tmp_path / "community.json").read_text())
    assert len(summary["day_ahead"]) == 3


def test_participants_differ_by_seed_but_repeat_for_one_seed():
    scenario = build_scenario({"scenario": {"seed": 11}})
    first = [(p.name, p.pv_kwp, p.battery_wh, p.has_ev) for p in build_participants(scenario)]
    again = [(p.name, p.pv_kwp, p.battery_wh, p.has_ev) for p in build_participants(scenario)]
    assert first == again
    assert len({kwp for _, kwp, _, _ in first if kwp}) > 3


def test_trading_profile_round_trips_and_finds_its_slots():
    profile = TradingProfile(3600, 7200, (100, -200), (90_000, 95_000), (250_000, 260_000), (0.5, 0.6))
    again = TradingProfile.from_json(profile.to_json())
    assert again == profile
    assert again.index(7200) == 0 and again.index(10800) == 1
    assert again.index(9000) is None and again.index(14400) is None and again.index(3600) is None


def test_command_line_refuses_nonsense(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[scenario]\nspeed = -1.0\n")
    assert main(["up", "--scenario", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "speed" in capsys.readouterr().err
    assert main(["up", "--scenario", str(SCENARIOS / "short.toml"), "--nodes", "2"]) == 2


def test_the_run_counts_as_settled_only_after_one_root_held_with_nothing_left_to_propose():
    from simnet.monitor import Snapshot
    from simnet.runner import SettleWatch

    def snap(heights, agreeing=3):
        return Snapshot(0, 3, 3, 0, 0, 0, 0, 0, None, heights, agreeing, 0)

    watch = SettleWatch(hold_s=3.0)
    assert not watch.update(snap((10, 10)), 0.0)
    assert not watch.update(snap((10, 10)), 2.9)
    assert not watch.update(snap((11, 11)), 3.5)          # an entry landed meanwhile: the hold restarts
    assert not watch.update(snap((11, 11)), 5.0, quiet=False)   # something is still queued somewhere
    assert not watch.update(snap((11, 11)), 6.0)
    assert not watch.update(snap((11, 11), agreeing=2), 8.0)
    assert not watch.update(snap((11, 11)), 9.0)
    assert watch.update(snap((11, 11)), 12.0)
