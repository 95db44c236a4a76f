"""The ``[invest]`` config section: documented defaults for a 300 kWp / 200 kWh station, checked values."""

import tomllib
from pathlib import Path

import pytest

from p2pgrid.config import InvestSection, build_config, describe_fields, load_config
from p2pgrid.errors import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "node-configs"


def test_defaults_apply_when_the_section_is_absent():
    assert load_config(EXAMPLES / "station.toml").invest == InvestSection()


def test_the_commented_example_in_station_toml_states_the_defaults():
    lines = (EXAMPLES / "station.toml").read_text().split("# [invest]", 1)[1].splitlines()
    block = "\n".join(line.lstrip("# ") for line in lines if line.startswith("# ") and "=" in line)
    assert tomllib.loads(block) == {k: getattr(InvestSection(), k) for k in tomllib.loads(block)}
    assert set(tomllib.loads(block)) == set(InvestSection.__dataclass_fields__)


def test_every_invest_field_is_documented():
    rows = dict(describe_fields())
    assert all(rows[f"invest.{name}"] for name in InvestSection.__dataclass_fields__)


@pytest.mark.parametrize("key, value", [("discount_rate", 1.5), ("lifetime_years", 0), ("capex_uc", -1),
                                        ("degradation_per_year", "high")])
def test_out_of_range_terms_are_refused_by_name(key, value, tmp_path):
    with pytest.raises(ConfigError, match=f"invest.{key}"):
        build_config({"node": {"data_dir": "d"}, "invest": {key: value}}, base_dir=tmp_path)
