"""The configs simnet writes for its nodes are valid node configs (fast; no processes)."""

from p2pgrid.config import load_config
from simnet.launcher import ClusterSettings, NodeSpec, default_specs, render_node_config


def test_default_cluster_cycles_through_roles():
    roles = [spec.role for spec in default_specs(6)]
    assert roles == ["station", "household", "household", "consumer", "consumer", "station"]
    assert len({spec.seed for spec in default_specs(6)}) == 6


def test_rendered_node_config_loads_with_a_shared_scaled_clock(tmp_path):
    settings = ClusterSettings(speed=30.0, max_orders=4)
    for spec in default_specs(3) + [NodeSpec("x", "consumer", 9, extra={"network.mdns": False, "agent.tick_ms": 50})]:
        path = tmp_path / spec.name / "config.toml"
        path.parent.mkdir()
        path.write_text(render_node_config(spec, settings, anchor_wall_ms=1_000, sim_epoch_ms=2_000))
        config = load_config(path)
        assert config.node.data_dir == path.parent.resolve()
        assert (config.clock.mode, config.clock.speed, config.clock.anchor_wall_ms, config.clock.sim_epoch_ms) == \
            ("scaled", 30.0, 1_000, 2_000)
        assert config.agent.strategy == "random" and config.agent.max_orders == 4
        assert config.network.listen == ("/ip4/127.0.0.1/tcp/0",)
        assert (config.devices.pv is not None) == (spec.role in ("station", "household"))
    assert config.agent.tick_ms == 50
