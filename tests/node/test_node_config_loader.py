"""The config loader: example configs load; unknown keys and bad values are refused by name."""

from pathlib import Path

import pytest

from p2pgrid.config import NodeConfig, build_config, describe_fields, load_config, parse_override
from p2pgrid.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "node-configs"


@pytest.mark.parametrize("name", ["household", "consumer", "station"])
def test_every_example_config_loads(name):
    config = load_config(EXAMPLES / f"{name}.toml")
    assert isinstance(config, NodeConfig)
    assert config.node.role == name
    assert config.zone.id == "local"                      # from the zone preset
    assert config.zone.tariffs.retail_price == 300_000
    assert config.zone.slot_rules.length_s == 900
    assert config.node.data_dir.is_absolute()


def test_household_has_pv_battery_and_ev():
    devices = load_config(EXAMPLES / "household.toml").devices
    assert devices.pv is not None and devices.battery is not None and len(devices.ev_chargers) == 1


def test_station_has_300_kwp_pv_200_kwh_storage_and_chargers():
    config = load_config(EXAMPLES / "station.toml")
    assert config.devices.pv.kwp == 300.0
    assert config.devices.battery.capacity_wh == 200_000
    assert len(config.devices.ev_chargers) >= 2
    assert config.pool.enabled


def test_consumer_has_no_generation_or_storage():
    devices = load_config(EXAMPLES / "consumer.toml").devices
    assert devices.pv is None and devices.battery is None and devices.ev_chargers == ()


def test_every_example_key_is_commented():
    for path in EXAMPLES.glob("*.toml"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if "=" in stripped and not stripped.startswith("#") and not stripped.startswith("["):
                assert "#" in stripped, f"{path.name}:{number} has no comment"


def test_every_field_is_documented():
    rows = describe_fields()
    assert len(rows) > 60
    assert all(text for _, text in rows), [path for path, text in rows if not text]


def minimal(**sections):
    raw = {"node": {"data_dir": "data"}}
    raw.update(sections)
    return raw


def build(raw, tmp_path=Path("/tmp"), overrides=None):
    return build_config(raw, base_dir=tmp_path, overrides=overrides)


def test_minimal_config_uses_documented_defaults(tmp_path):
    config = build(minimal(), tmp_path)
    assert config.node.data_dir == (tmp_path / "data").resolve()
    assert config.network.listen == ("/ip4/127.0.0.1/tcp/0",)
    assert config.clock.mode == "system"


def test_missing_data_dir_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"^node\.data_dir: required$"):
        build({"node": {}})


@pytest.mark.parametrize("raw, field", [
    ({"nodes": {}}, "nodes"),
    (minimal(network={"listen_addr": []}), "network.listen_addr"),
    (minimal(zone={"tariffs": {"retail": 1}}), "zone.tariffs.retail"),
    (minimal(devices={"battery": {"capacity_wh": 1, "max_charge_w": 1, "max_discharge_w": 1, "soc": 1}}),
     "devices.battery.soc"),
])
def test_unknown_key_is_refused_naming_it(raw, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', r'[.]')}: unknown key"):
        build(raw)


@pytest.mark.parametrize("raw, field, words", [
    (minimal(zone={"tariffs": {"retail_price": "cheap"}}), "zone.tariffs.retail_price", "expected an integer"),
    (minimal(zone={"tariffs": {"feed_in_price": -1}}), "zone.tariffs.feed_in_price", "below the minimum"),
    (minimal(node={"data_dir": "d", "role": "factory"}), "node.role", "not one of"),
    (minimal(network={"mdns": "yes"}), "network.mdns", "expected true or false"),
    (minimal(network={"listen": "/ip4/127.0.0.1/tcp/0"}), "network.listen", "expected a list"),
    (minimal(zone={"id": "Bad Zone"}), "zone.id", "is not valid"),
    (minimal(zone={"validators": [{"public_key": "zz"}]}), "zone.validators[0].public_key", "is not valid"),
    (minimal(zone={"grid_fees": {"north": "x"}}), "zone.grid_fees.north", "expected an integer"),
    (minimal(devices={"pv": {"kwp": 5, "tilt_deg": 120}}), "devices.pv.tilt_deg", "above the maximum"),
    (minimal(zone={"slots": {"length_s": 7}}), "zone.slots", "divide a day"),
    (minimal(agent={"qty_min_wh": 10, "qty_max_wh": 5}), "agent.qty_min_wh", "must not exceed"),
    (minimal(devices={"mode": "real"}), "devices.adapter", "required"),
])
def test_bad_value_is_refused_naming_the_field(raw, field, words):
    with pytest.raises(ConfigError) as info:
        build(raw)
    message = str(info.value)
    assert message.startswith(field + ":"), message
    assert words in message


def test_zone_preset_is_loaded_and_overridden_by_keys_next_to_it(tmp_path):
    (tmp_path / "zone.toml").write_text('[zone]\nid = "north"\n[zone.tariffs]\nretail_price = 250000\n')
    (tmp_path / "node.toml").write_text('[node]\ndata_dir = "d"\n[zone]\npreset = "zone.toml"\n'
                                        '[zone.tariffs]\nfeed_in_price = 1\n')
    config = load_config(tmp_path / "node.toml")
    assert config.zone.id == "north"
    assert config.zone.tariffs.retail_price == 250_000
    assert config.zone.tariffs.feed_in_price == 1


def test_zone_preset_with_other_sections_is_refused(tmp_path):
    (tmp_path / "zone.toml").write_text('[zone]\nid = "north"\n[network]\nmdns = true\n')
    (tmp_path / "node.toml").write_text('[node]\ndata_dir = "d"\n[zone]\npreset = "zone.toml"\n')
    with pytest.raises(ConfigError, match=r"^zone\.preset: .* may only hold a \[zone\] table"):
        load_config(tmp_path / "node.toml")


def test_cli_overrides_apply_and_are_held_to_the_same_rules(tmp_path):
    key, value = parse_override('network.bootstrap=["/ip4/127.0.0.1/tcp/1/p2p/x"]')
    config = build(minimal(), tmp_path, overrides={key: value, "agent.strategy": "random"})
    assert config.network.bootstrap == ("/ip4/127.0.0.1/tcp/1/p2p/x",)
    assert config.agent.strategy == "random"
    with pytest.raises(ConfigError, match=r"^agent\.tick_ms: expected an integer"):
        build(minimal(), tmp_path, overrides=dict([parse_override("agent.tick_ms=fast")]))
    with pytest.raises(ConfigError, match=r"^agent\.bogus: unknown key"):
        build(minimal(), tmp_path, overrides={"agent.bogus": 1})


def test_override_without_equals_sign_is_refused():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        parse_override("agent.strategy")


def test_missing_and_invalid_files_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[node\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_config_is_frozen(tmp_path):
    config = build(minimal(), tmp_path)
    with pytest.raises(AttributeError):
        config.node = None  # type: ignore[misc]
