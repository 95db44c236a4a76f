"""``[zone]`` locality settings: the zones with a grid fee are the ones a node trades with, and
zones that trade with each other share a ledger domain."""

from pathlib import Path

import pytest

from p2pgrid.config import build_config
from p2pgrid.errors import ConfigError
from p2pgrid.trading.service import TradingConfig


def zone_config(**zone):
    return build_config({"node": {"data_dir": "data"}, "zone": zone}, base_dir=Path("/tmp")).zone


def test_grid_fee_keys_are_the_neighbours_and_the_ledger_domain_is_shared():
    zone = zone_config(id="north", ledger_domain="valley", grid_fees={"south": 30_000, "east": 5_000})
    assert zone.neighbours == ("east", "south")
    assert zone.ledger_zone == "valley"
    locality = TradingConfig(zone.id, zone.slot_rules, grid_fees=zone.grid_fees).locality
    assert locality.zones == ("north", "east", "south") and locality.fee("south") == 30_000


def test_without_a_ledger_domain_the_zone_is_its_own_ledger():
    zone = zone_config(id="north")
    assert zone.ledger_zone == "north" and zone.neighbours == ()


@pytest.mark.parametrize("zone, field", [
    ({"id": "north", "grid_fees": {"north": 1}}, "zone.grid_fees.north"),
    ({"id": "north", "ledger_domain": "Not A Zone"}, "zone.ledger_domain"),
    ({"id": "north", "grid_fees": {"south": -1}}, "zone.grid_fees"),
])
def test_bad_locality_settings_are_refused_by_name(zone, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        zone_config(**zone)
