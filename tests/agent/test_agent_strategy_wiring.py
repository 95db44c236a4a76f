"""Strategy "agent" is wired: config accepts it, the node runs the device and planner services
after trading, simnet scenarios can choose it, and the device service measures slot energies."""

import json

import pytest
import trio

from p2pgrid.agent.agent_trader import AgentTrader, battery_limits
from p2pgrid.clock import ManualClock
from p2pgrid.config import build_config
from p2pgrid.devices.base import BatterySetpoint, DeviceKind
from p2pgrid.devices.service import DeviceService, simulated_device_set
from p2pgrid.errors import ConfigError
from p2pgrid.identity import NodeKey
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import wait_until
from p2pgrid.node.app import Node
from simnet.scenario import ScenarioError, build_scenario

SLOT_MS = 900_000
START_MS = 1_800_000_000_000 - 1_800_000_000_000 % SLOT_MS


def agent_node_config(tmp_path, key, **devices):
    raw = {"node": {"data_dir": str(tmp_path / "n"), "name": "n"},
           "zone": {"gateway_account": key.public_key.hex(),
                    "validators": [{"public_key": key.public_key.hex()}]},
           "agent": {"strategy": "agent"}, "devices": devices}
    return build_config(raw, base_dir=tmp_path)


async def test_a_node_with_strategy_agent_runs_devices_then_the_planner_after_trading(tmp_path):
    key = NodeKey.generate()
    config = agent_node_config(tmp_path, key, battery={"capacity_wh": 5000, "max_charge_w": 2000,
                                                       "max_discharge_w": 2000})
    async with MemoryNetwork().open_transport(key) as transport:
        node = Node(config, key, ManualClock(START_MS), transport)
        names = [s.name for s in node.services]
        assert names.index("trading") < names.index("devices") < names.index("agent-trader")
        assert "profile-trader" not in names


def test_config_rejects_an_unknown_strategy_and_accepts_agent(tmp_path):
    key = NodeKey.generate()
    assert agent_node_config(tmp_path, key).agent.strategy == "agent"
    with pytest.raises(ConfigError, match="agent.strategy"):
        build_config({"node": {"data_dir": "x"}, "agent": {"strategy": "clairvoyant"}}, base_dir=tmp_path)


def test_battery_limits_follow_the_config_band_and_efficiency(tmp_path):
    config = agent_node_config(tmp_path, NodeKey.generate(), battery={
        "capacity_wh": 10_000, "max_charge_w": 3000, "max_discharge_w": 4000, "soc_min": 0.2, "soc_max": 0.9,
        "round_trip_efficiency": 0.81})
    limits = battery_limits(config)
    assert (limits.floor_wh, limits.ceiling_wh) == (2000, 9000)
    assert limits.charge_efficiency == pytest.approx(0.9) == limits.discharge_efficiency
    assert battery_limits(agent_node_config(tmp_path, NodeKey.generate())).max_discharge_w == 0


def test_simnet_scenarios_choose_the_strategy_and_default_to_agent():
    assert build_scenario({}).strategy == "agent"
    assert build_scenario({"scenario": {"strategy": "profile"}}).strategy == "profile"
    with pytest.raises(ScenarioError, match="scenario.strategy"):
        build_scenario({"scenario": {"strategy": "oracle"}})


async def test_device_service_meters_each_ended_slot_and_flags_a_silent_device(tmp_path):
    data = tmp_path / "n"
    data.mkdir()
    (data / "energy.json").write_text(json.dumps({"load": [400, 800, 200], "pv": [0, 1000, 1000]}))
    config = build_config({"node": {"data_dir": str(data)}, "agent": {"strategy": "agent"},
                           "devices": {"series_file": "energy.json", "series_start_s": START_MS // 1000,
                                       "pv": {"kwp": 8.0}}}, base_dir=tmp_path)
    clock = ManualClock(START_MS)
    host = type("Host", (), {"config": config, "clock": clock, "telemetry": None})()
    service = DeviceService(simulated_device_set(config, clock.now_ms), period_s=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run, host)
        assert host.telemetry is service
        for step in range(2 * 15 + 1):                # two slots, one sample per market minute
            clock.advance(60_000 if step else 0)
            with trio.fail_after(10):
                await wait_until(lambda: len(service.last) == 3
                                 and all(s.t_ms == clock.now_ms() for s in service.last.values()), 0.005)
        by_slot = {s.slot: s for s in service.completed_slots()}
        first, second = by_slot[START_MS // 1000], by_slot[START_MS // 1000 + 900]
        assert first.complete and second.complete
        assert (first.import_wh, first.export_wh) == (400, 0)           # load only
        assert (second.import_wh, second.export_wh) == (0, 200)         # 1000 PV − 800 load
        assert first.load_wh == pytest.approx(400) and second.pv_wh == pytest.approx(1000)
        assert service.stale_devices() == set()
        clock.advance(10 * 60_000)                     # market time jumps; no sample yet
        assert service.stale_devices() == {"meter", "load", "pv"}
        with pytest.raises(Exception, match="battery"):
            await service.apply(DeviceKind.BATTERY, BatterySetpoint(100.0))
        nursery.cancel_scope.cancel()


def test_agent_trader_needs_trading(tmp_path):
    trader = AgentTrader()
    host = type("Host", (), {"trading": None})()

    async def main():
        await trader.run(host)

    with pytest.raises(RuntimeError, match="trading"):
        trio.run(main)
