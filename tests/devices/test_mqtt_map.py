"""MQTT payloads and topic maps (pure)."""

from __future__ import annotations

import pytest

from p2pgrid.devices.base import (
    DeviceKind,
    DeviceProtocolError,
    DeviceUnreachable,
    DeviceValueError,
    Quality,
)
from p2pgrid.devices.mqtt_map import (
    MqttDeviceMap,
    TopicBinding,
    TopicValue,
    build_reading,
    decode_message,
    parse_payload,
    victron_maps,
)
from p2pgrid.devices.readings import EvStatus
from p2pgrid.errors import ConfigError

T = 1_782_000_000_000
MAPS = victron_maps("c0619ab1", battery_capacity_wh=10_000, battery_max_charge_w=5_000,
                    battery_max_discharge_w=5_000, pv_rated_w=6_000)


@pytest.mark.parametrize("payload,value", [(b'{"value": 12.5}', 12.5), (b"42", 42.0),
                                           (b" 7.25 ", 7.25), (b'"C"', "C"),
                                           (b'{"value": "B"}', "B")])
def test_payload_forms(payload, value):
    assert parse_payload(payload) == value


@pytest.mark.parametrize("payload", [b'{"value": null}', b"{}", b"\xff\xfe", b"true",
                                     b'{"value": [1, 2]}', b"", b"x" * 100])
def test_garbage_payloads_are_protocol_errors(payload):
    with pytest.raises(DeviceProtocolError):
        parse_payload(payload)


def latest(values: dict[str, bytes], t_ms: int = T) -> dict[str, TopicValue]:
    return {topic: decode_message(payload, t_ms) for topic, payload in values.items()}


GRID = {
    "N/c0619ab1/grid/30/Ac/Power": b'{"value": -2300}',
    "N/c0619ab1/grid/30/Ac/L1/Power": b'{"value": -800}',
    "N/c0619ab1/grid/30/Ac/Energy/Forward": b'{"value": 1234.5678}',
    "N/c0619ab1/grid/30/Ac/Energy/Reverse": b'{"value": 88.0004}',
}


def test_victron_grid_meter_in_wh_with_export_negative():
    reading = build_reading(MAPS["grid"], latest(GRID), T + 1000, max_age_ms=60_000)
    assert reading.power_w == -2300 and reading.phase_power_w == (-800,)
    assert reading.import_wh == 1_234_567 and reading.export_wh == 88_000
    assert reading.quality is Quality.GOOD and reading.t_ms == T


def test_victron_battery_charging_is_negative_here():
    values = {"N/c0619ab1/battery/512/Dc/0/Power": b'{"value": 1200}',
              "N/c0619ab1/battery/512/Soc": b'{"value": 64}'}
    reading = build_reading(MAPS["battery"], latest(values), T, max_age_ms=60_000)
    assert reading.power_w == -1200 and reading.soc_pct == 64 and reading.capacity_wh == 10_000


def test_old_values_make_a_stale_reading():
    reading = build_reading(MAPS["grid"], latest(GRID), T + 61_000, max_age_ms=60_000)
    assert reading.quality is Quality.STALE


def test_missing_topic_is_unreachable_garbage_is_protocol_out_of_range_is_value():
    partial = dict(GRID)
    del partial["N/c0619ab1/grid/30/Ac/Energy/Reverse"]
    with pytest.raises(DeviceUnreachable, match="Reverse"):
        build_reading(MAPS["grid"], latest(partial), T, 60_000)
    with pytest.raises(DeviceProtocolError, match="Ac/Power"):
        build_reading(MAPS["grid"], latest({**GRID, "N/c0619ab1/grid/30/Ac/Power": b"~~"}),
                      T, 60_000)
    with pytest.raises(DeviceValueError, match="soc_pct"):
        build_reading(MAPS["battery"], latest({"N/c0619ab1/battery/512/Dc/0/Power": b"0",
                                               "N/c0619ab1/battery/512/Soc": b"140"}), T, 60_000)


def test_ev_status_through_an_enum_table():
    dmap = MqttDeviceMap(DeviceKind.EV, {
        "status": TopicBinding("ev/status", enum={"0": "A", "1": "B", "2": "C"}),
        "current_limit_a": TopicBinding("ev/current"),
        "power_w": TopicBinding("ev/power"),
        "session_wh": TopicBinding("ev/session", scale=1000.0),
    })
    values = {"ev/status": b"2", "ev/current": b"16", "ev/power": b"11000",
              "ev/session": b"3.5"}
    reading = build_reading(dmap, latest(values), T, 60_000)
    assert reading.status is EvStatus.CHARGING and reading.session_wh == 3_500
    with pytest.raises(DeviceProtocolError, match="unknown value"):
        build_reading(dmap, latest({**values, "ev/status": b"9"}), T, 60_000)


def test_map_must_cover_required_fields():
    with pytest.raises(ConfigError, match="export_wh"):
        MqttDeviceMap(DeviceKind.METER, {"power_w": TopicBinding("a"),
                                         "import_wh": TopicBinding("b")})
    with pytest.raises(ConfigError, match="unknown"):
        MqttDeviceMap(DeviceKind.LOAD, {"power_w": TopicBinding("a"), "volts": TopicBinding("b")})
