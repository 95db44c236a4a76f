"""Which MQTT topic carries which reading field, and how payloads become readings (pure).

A ``MqttDeviceMap`` binds each field of one reading type (``p2pgrid.devices.readings``) to a
topic, with a scale (Victron publishes energy in kWh: scale 1000 gives Wh; it counts battery
power positive when charging: scale −1 gives our discharge-positive sign) and, for enumerations,
a table from published values to ours. Fields no topic carries (a battery's capacity, an
inverter's rating) come from ``constants``.

Payloads: Victron's ``{"value": x}`` JSON, a bare JSON number or string, or plain text of a
number. ``{"value": null}`` (Victron: the value is gone) and anything else that does not parse
is garbage: the field is marked with the error, and a read of the device raises
``DeviceProtocolError`` until a good message replaces it.

A reading is as old as its oldest field: it is stamped with that instant, and marked STALE when
that is more than ``max_age_ms`` before ``now_ms``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from p2pgrid.devices.base import (
    DeviceKind,
    DeviceProtocolError,
    DeviceUnreachable,
    Quality,
)
from p2pgrid.devices.readings import (
    BatteryMode,
    BatteryReading,
    EvReading,
    EvStatus,
    LoadReading,
    MeterReading,
    PvReading,
    Reading,
    validate_reading,
)
from p2pgrid.errors import ConfigError

PayloadValue = float | str

_PHASE_FIELDS = ("l1_w", "l2_w", "l3_w")
_FIELDS: dict[DeviceKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required fields, optional fields)
    DeviceKind.METER: (("power_w", "import_wh", "export_wh"), _PHASE_FIELDS),
    DeviceKind.PV: (("power_w", "lifetime_wh", "rated_w"), ("limit_w",)),
    DeviceKind.BATTERY: (("power_w", "soc_pct", "capacity_wh", "max_charge_w",
                          "max_discharge_w"),
                         ("min_soc_pct", "max_soc_pct", "reserve_pct", "setpoint_w")),
    DeviceKind.EV: (("status", "current_limit_a", "power_w", "session_wh"), ("phases",)),
    DeviceKind.LOAD: (("power_w",), ()),
}
_INT_FIELDS = {"import_wh", "export_wh", "lifetime_wh", "capacity_wh", "session_wh", "phases"}


@dataclass(frozen=True)
class TopicBinding:
    topic: str
    scale: float = 1.0
    enum: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HandBack:
    """How a device is returned to its own control: publish ``{"value": value}`` to ``topic``."""

    topic: str
    value: float | str


@dataclass(frozen=True)
class MqttDeviceMap:
    kind: DeviceKind
    fields: Mapping[str, TopicBinding]
    constants: Mapping[str, float | int | str] = field(default_factory=dict)
    #: where ``apply`` publishes ``{"value": x}`` (x = setpoint × scale); None: not writable
    setpoint: TopicBinding | None = None
    #: how ``apply(BatterySetpoint(None))`` hands the battery back; a map with a setpoint topic
    #: must declare one, since a node that can take control must be able to give it back
    hand_back: HandBack | None = None

    def __post_init__(self) -> None:
        required, optional = _FIELDS[self.kind]
        known = set(required) | set(optional)
        given = set(self.fields) | set(self.constants)
        if unknown := given - known:
            raise ConfigError(f"mqtt {self.kind.value} map: unknown fields {sorted(unknown)}")
        if missing := set(required) - given:
            raise ConfigError(f"mqtt {self.kind.value} map: no topic or constant for "
                              f"{sorted(missing)}")
        if self.setpoint is not None and self.hand_back is None:
            raise ConfigError(f"mqtt {self.kind.value} map: a setpoint topic needs a hand-back "
                              "(how the device returns to its own control)")


@dataclass(frozen=True)
class TopicValue:
    """The last message on a topic: when it arrived, its value, or why it was garbage."""

    t_ms: int
    value: PayloadValue | None
    error: str = ""


def parse_payload(payload: bytes) -> PayloadValue:
    """The value carried by an MQTT payload; garbage raises ``DeviceProtocolError``."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise DeviceProtocolError("payload is not UTF-8") from exc
    try:
        data = json.loads(text)
    except ValueError:
        data = text
    if isinstance(data, dict):
        if "value" not in data:
            raise DeviceProtocolError(f"JSON payload without 'value': {text[:80]!r}")
        data = data["value"]
    if isinstance(data, bool) or data is None:
        raise DeviceProtocolError(f"payload carries no value: {text[:80]!r}")
    if isinstance(data, (int, float)):
        return float(data)
    if isinstance(data, str):
        try:
            return float(data)
        except ValueError:
            if data and len(data) <= 32 and data.isprintable():
                return data  # an enumeration value, e.g. "C"
    raise DeviceProtocolError(f"unparseable payload: {text[:80]!r}")


def decode_message(payload: bytes, t_ms: int) -> TopicValue:
    try:
        return TopicValue(t_ms, parse_payload(payload))
    except DeviceProtocolError as exc:
        return TopicValue(t_ms, None, str(exc))


def _field_value(name: str, binding: TopicBinding, tv: TopicValue) -> float | str:
    if tv.error:
        raise DeviceProtocolError(f"{binding.topic} ({name}): {tv.error}")
    value = tv.value
    if binding.enum:
        key = value if isinstance(value, str) else f"{value:g}"
        if key not in binding.enum:
            raise DeviceProtocolError(f"{binding.topic} ({name}): unknown value {value!r}")
        return binding.enum[key]
    if not isinstance(value, float):
        raise DeviceProtocolError(f"{binding.topic} ({name}): not a number: {value!r}")
    return value * binding.scale


def build_reading(dmap: MqttDeviceMap, latest: Mapping[str, TopicValue], now_ms: int,
                  max_age_ms: int) -> Reading:
    """The device's reading from the last message on each of its topics (see module doc)."""
    values: dict[str, float | int | str] = dict(dmap.constants)
    oldest = now_ms
    for name, binding in dmap.fields.items():
        tv = latest.get(binding.topic)
        if tv is None:
            if name in _FIELDS[dmap.kind][0]:
                raise DeviceUnreachable(f"no message yet on {binding.topic} ({name})")
            continue
        values[name] = _field_value(name, binding, tv)
        oldest = min(oldest, tv.t_ms)
    for name in _INT_FIELDS & set(values):
        number = values[name]
        if isinstance(number, str) or not math.isfinite(number):
            raise DeviceProtocolError(f"{dmap.kind.value} {name} is not a number: {number!r}")
        values[name] = math.floor(number)
    quality = Quality.STALE if now_ms - oldest > max_age_ms else Quality.GOOD
    reading = _assemble(dmap.kind, values, oldest, quality)
    validate_reading(reading)
    return reading


def _num(values: Mapping[str, float | int | str], name: str, default: float = 0.0) -> float:
    value = values.get(name, default)
    if isinstance(value, str):
        raise DeviceProtocolError(f"{name} is not a number: {value!r}")
    return float(value)


def _int(values: Mapping[str, float | int | str], name: str, default: int = 0) -> int:
    return int(_num(values, name, default))


def _assemble(kind: DeviceKind, v: Mapping[str, float | int | str], t_ms: int,
              quality: Quality) -> Reading:
    if kind is DeviceKind.METER:
        phases = tuple(_num(v, name) for name in _PHASE_FIELDS if name in v)
        return MeterReading(t_ms, _num(v, "power_w"), _int(v, "import_wh"),
                            _int(v, "export_wh"), phases, quality)
    if kind is DeviceKind.PV:
        limit = _num(v, "limit_w") if "limit_w" in v else None
        return PvReading(t_ms, _num(v, "power_w"), _int(v, "lifetime_wh"), _num(v, "rated_w"),
                         limit, quality)
    if kind is DeviceKind.BATTERY:
        setpoint = _num(v, "setpoint_w") if "setpoint_w" in v else None
        return BatteryReading(
            t_ms, _num(v, "power_w"), _num(v, "soc_pct"), _int(v, "capacity_wh"),
            _num(v, "max_charge_w"), _num(v, "max_discharge_w"), _num(v, "min_soc_pct"),
            _num(v, "max_soc_pct", 100.0), _num(v, "reserve_pct"),
            BatteryMode.AUTO if setpoint is None else BatteryMode.REMOTE, setpoint, quality)
    if kind is DeviceKind.EV:
        status = v.get("status")
        try:
            ev_status = EvStatus(status)
        except ValueError as exc:
            raise DeviceProtocolError(f"ev status {status!r} is not A/B/C/E") from exc
        return EvReading(t_ms, ev_status, _num(v, "current_limit_a"), _num(v, "power_w"),
                         _int(v, "session_wh"), _int(v, "phases", 3), quality)
    return LoadReading(t_ms, _num(v, "power_w"), quality)


def victron_maps(portal_id: str, *, grid_instance: int = 30, pv_instance: int = 20,
                 battery_instance: int = 512, vebus_instance: int = 276,
                 battery_capacity_wh: int, battery_max_charge_w: float,
                 battery_max_discharge_w: float, pv_rated_w: float
                 ) -> dict[str, MqttDeviceMap]:
    """Topic maps for a Victron GX device (Venus OS dbus-mqtt: ``N/<portal>/<service>/<inst>/…``).

    Victron publishes energy in kWh (scaled to Wh), battery power positive when charging
    (scaled by −1), and takes an ESS external-control AC setpoint positive when charging.
    """
    n = f"N/{portal_id}"
    grid, pv, bat = f"{n}/grid/{grid_instance}", f"{n}/pvinverter/{pv_instance}", \
        f"{n}/battery/{battery_instance}"
    return {
        "grid": MqttDeviceMap(DeviceKind.METER, {
            "power_w": TopicBinding(f"{grid}/Ac/Power"),
            "l1_w": TopicBinding(f"{grid}/Ac/L1/Power"),
            "l2_w": TopicBinding(f"{grid}/Ac/L2/Power"),
            "l3_w": TopicBinding(f"{grid}/Ac/L3/Power"),
            "import_wh": TopicBinding(f"{grid}/Ac/Energy/Forward", scale=1000.0),
            "export_wh": TopicBinding(f"{grid}/Ac/Energy/Reverse", scale=1000.0),
        }),
        "pv": MqttDeviceMap(DeviceKind.PV, {
            "power_w": TopicBinding(f"{pv}/Ac/Power"),
            "lifetime_wh": TopicBinding(f"{pv}/Ac/Energy/Forward", scale=1000.0),
        }, constants={"rated_w": pv_rated_w}),
        "battery": MqttDeviceMap(DeviceKind.BATTERY, {
            "power_w": TopicBinding(f"{bat}/Dc/0/Power", scale=-1.0),
            "soc_pct": TopicBinding(f"{bat}/Soc"),
        }, constants={"capacity_wh": battery_capacity_wh,
                      "max_charge_w": battery_max_charge_w,
                      "max_discharge_w": battery_max_discharge_w},
            setpoint=TopicBinding(f"W/{portal_id}/vebus/{vebus_instance}/Hub4/L1/AcPowerSetpoint",
                                  scale=-1.0),
            # ESS mode 1 ("optimised"): the GX's own control, instead of 3 (external control).
            hand_back=HandBack(f"W/{portal_id}/settings/0/Settings/CGwacs/Hub4Mode", 1)),
    }


def victron_keepalive_topic(portal_id: str) -> str:
    return f"R/{portal_id}/keepalive"
