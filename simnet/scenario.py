"""Scenario files: who is in the community, what they own, how long it runs, what goes wrong.

A scenario is one TOML file (see ``simnet/scenarios/``); every key has a default here::

    [scenario]  name, seed, year, start_day (profile day 0..364, CET), start_hour, hours (simulated),
                speed (simulated s per real s), slot_s, transport (libp2p | memory),
                tick_ms (agent decision interval, real ms), settle_s (real s to converge at the end),
                strategy (agent, the default: own simulated devices, forecasts and the battery plan,
                p2pgrid.agent.agent_trader | profile: trade the precomputed net energy with perfect
                foresight, kept as a comparison), meter_grace_real_s (metering
                grace in real seconds, default 10)
    [zone]      retail_price, feed_in_price (µc/kWh), credit_uc (minted to every participant)
    [committee] size (validators: the operator, then stations, then households)
    [participants] households, consumers, stations
    [household] pv_kwp = [lo, hi], battery_share, battery_wh, ev_share, ask = [lo, hi], bid = [lo, hi]
    [consumer]  annual_kwh = [lo, hi], bid = [lo, hi]
    [station]   pv_kwp, battery_wh, evs (public charging sessions from synPRO EV profiles), ask = [lo, hi],
                pools (host an AMM pool per slot backed by the battery; default false: see
                the note in p2pgrid/pools/node_service.py on swaps refused for slippage in fast simnet runs),
                charging (sell the EV charging to community drivers on the ledger: simnet/charging.py;
                default false), charging_price (µc/kWh), shares (sell LP shares in the pools' fee
                income: p2pgrid/shares/service.py), share_price (µc)
    [household] ... investor_share (share of households that buy the station's LP shares), invest_shares
    [[faults]]  at_h (simulated hours after the profile start), kind, node / nodes / groups, ...

Prices ``ask`` / ``bid`` are positions between feed-in (0) and retail (1); each node draws its
own from the range with the scenario seed, and shades it with the day-ahead price of the slot.

Fault kinds: ``kill`` (SIGKILL: a crash), ``restart``, ``partition`` (``groups = [[names], [names]]``),
``heal``, ``stale_device`` (node), and byzantine acts ``spam``, ``bad_signature``, ``replay``,
``equivocate``, ``double_vote`` (node: who misbehaves; ``double_vote`` needs a validator).
``[scenario] broken = "<node>"`` turns on the test-only over-fill switch of one node.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pgrid.errors import ConfigError

FAULT_KINDS = ("kill", "restart", "partition", "heal", "stale_device",
               "spam", "bad_signature", "replay", "equivocate", "double_vote")
TRANSPORTS = ("libp2p", "memory")


class ScenarioError(ConfigError):
    """A scenario file that cannot be run."""


@dataclass(frozen=True)
class Fault:
    at_h: float
    kind: str
    node: str = ""
    groups: tuple[tuple[str, ...], ...] = ()

    @property
    def at_s(self) -> int:
        return int(self.at_h * 3600)


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float


@dataclass(frozen=True)
class Scenario:
    name: str = "community"
    seed: int = 1
    year: int = 2018
    start_day: int = 172
    start_hour: int = 0
    hours: float = 24.0
    speed: float = 360.0
    slot_s: int = 3600
    transport: str = "libp2p"
    tick_ms: int = 500
    settle_s: float = 60.0
    meter_grace_real_s: float = 10.0   # metering grace in real seconds of the scaled clock (simnet.community)
    broken: str = ""
    strategy: str = "agent"         # the participants' agent.strategy: agent (own forecasts) | profile (perfect foresight)
    retail_price: int = 300_000
    feed_in_price: int = 80_000
    credit_uc: int = 200_000_000
    committee_size: int = 4
    households: int = 12
    consumers: int = 3
    stations: int = 1
    household_pv_kwp: Range = Range(4.0, 10.0)
    household_battery_share: float = 0.4
    household_battery_wh: int = 10_000
    household_ev_share: float = 0.3
    household_investor_share: float = 0.0   # households that buy the station's LP shares
    household_invest_shares: int = 0        # shares each of them keeps
    household_ask: Range = Range(0.25, 0.5)
    household_bid: Range = Range(0.55, 0.85)
    consumer_annual_kwh: Range = Range(1500.0, 3500.0)
    consumer_bid: Range = Range(0.55, 0.9)
    station_pv_kwp: float = 100.0
    station_battery_wh: int = 100_000
    station_evs: int = 4
    station_pools: bool = False     # the station hosts an AMM pool per slot, backed by its battery
    station_charging: bool = False  # the station sells its EV charging to community drivers (ledger)
    station_charging_price: int = 450_000   # µc per kWh charged
    station_shares: bool = False    # the station sells LP shares in its pools' fees (p2pgrid.shares.service)
    station_share_price: int = 10_000_000   # µc per share
    station_ask: Range = Range(0.15, 0.3)
    faults: tuple[Fault, ...] = field(default=())

    @property
    def participants(self) -> int:
        return self.households + self.consumers + self.stations

    def with_overrides(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


_SECTIONS = {
    "scenario": ("name", "seed", "year", "start_day", "start_hour", "hours", "speed", "slot_s", "transport", "tick_ms",
                 "settle_s", "broken", "strategy", "meter_grace_real_s"),
    "zone": ("retail_price", "feed_in_price", "credit_uc"),
    "committee": ("size",),
    "participants": ("households", "consumers", "stations"),
    "household": ("pv_kwp", "battery_share", "battery_wh", "ev_share", "ask", "bid", "investor_share",
                  "invest_shares"),
    "consumer": ("annual_kwh", "bid"),
    "station": ("pv_kwp", "battery_wh", "evs", "ask", "pools", "charging", "charging_price", "shares",
                "share_price"),
}


def _field_name(section: str, key: str) -> str:
    if section in ("scenario", "zone", "participants"):
        return key
    if section == "committee":
        return "committee_size"
    return f"{section}_{key}"


def load_scenario(path: Path | str) -> Scenario:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"scenario {path} is not valid TOML: {exc}") from None
    return build_scenario(raw)


def build_scenario(raw: dict[str, Any]) -> Scenario:
    values: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(Scenario)}
    for section, table in raw.items():
        if section == "faults":
            continue
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ScenarioError(f"unknown scenario section [{section}]")
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                raise ScenarioError(f"{section}.{key}: unknown key")
            name = _field_name(section, key)
            default = fields[name].default
            if isinstance(default, Range):
                if not (isinstance(value, list) and len(value) == 2 and value[0] <= value[1]):
                    raise ScenarioError(f"{section}.{key}: expected [low, high]")
                value = Range(float(value[0]), float(value[1]))
            elif isinstance(default, float) and isinstance(value, int):
                value = float(value)
            elif type(default) is not type(value):
                raise ScenarioError(f"{section}.{key}: expected {type(default).__name__}")
            values[name] = value
    values["faults"] = tuple(_fault(i, f) for i, f in enumerate(raw.get("faults", [])))
    scenario = Scenario(**values)
    check_scenario(scenario)
    return scenario


def _fault(index: int, table: Any) -> Fault:
    if not isinstance(table, dict) or "kind" not in table or "at_h" not in table:
        raise ScenarioError(f"faults[{index}]: needs kind and at_h")
    unknown = set(table) - {"kind", "at_h", "node", "groups"}
    if unknown:
        raise ScenarioError(f"faults[{index}]: unknown key {sorted(unknown)[0]}")
    if table["kind"] not in FAULT_KINDS:
        raise ScenarioError(f"faults[{index}].kind: {table['kind']!r} is not one of {', '.join(FAULT_KINDS)}")
    groups = tuple(tuple(g) for g in table.get("groups", ()))
    fault = Fault(float(table["at_h"]), table["kind"], table.get("node", ""), groups)
    if fault.kind == "partition" and len(groups) != 2:
        raise ScenarioError(f"faults[{index}]: a partition needs groups = [[names...], [names...]]")
    if fault.kind not in ("partition", "heal") and not fault.node:
        raise ScenarioError(f"faults[{index}]: {fault.kind} needs a node")
    return fault


STRATEGIES = ("profile", "agent")


def check_scenario(s: Scenario) -> None:
    if s.transport not in TRANSPORTS:
        raise ScenarioError(f"scenario.transport: {s.transport!r} is not one of {', '.join(TRANSPORTS)}")
    if s.hours <= 0 or s.speed <= 0:
        raise ScenarioError("scenario.hours and scenario.speed must be positive")
    if s.slot_s % 900 or 86400 % s.slot_s:
        raise ScenarioError("scenario.slot_s must be a multiple of 900 that divides a day")
    if s.strategy not in STRATEGIES:
        raise ScenarioError(f"scenario.strategy: {s.strategy!r} is not one of {', '.join(STRATEGIES)}")
    if s.participants < 2:
        raise ScenarioError("a community needs at least 2 participants")
    if not 1 <= s.committee_size <= 1 + s.stations + s.households:
        raise ScenarioError("committee.size: between 1 and 1 + stations + households")
    if not 0 <= s.start_day <= 364:
        raise ScenarioError("scenario.start_day: 0..364")
    if not 0 <= s.start_hour <= 23 or (s.start_hour * 3600) % s.slot_s:
        raise ScenarioError("scenario.start_hour: 0..23, on a slot boundary")


def scenario_to_toml(s: Scenario) -> str:
    """``s`` as a scenario file with every key, so ``load_scenario`` gives ``s`` back: a run's
    output keeps the exact scenario it ran (overrides and resizing included)."""
    lines = [f"# The scenario {s.name!r} exactly as it ran (every key; see simnet/scenario.py)."]
    for section, keys in _SECTIONS.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(getattr(s, _field_name(section, key)))}" for key in keys)
    for fault in s.faults:
        lines += ["\n[[faults]]", f"at_h = {_toml_value(fault.at_h)}", f"kind = {_toml_value(fault.kind)}"]
        if fault.node:
            lines.append(f"node = {_toml_value(fault.node)}")
        if fault.groups:
            lines.append(f"groups = {_toml_value([list(g) for g in fault.groups])}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Range):
        return f"[{value.lo!r}, {value.hi!r}]"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def resize(s: Scenario, nodes: int) -> Scenario:
    """The scenario with ``nodes`` nodes in total (operator included), keeping its mix."""
    people = nodes - 1
    if people < 2:
        raise ScenarioError("--nodes must be at least 3 (the operator and two participants)")
    total = s.participants
    stations = max(1 if s.stations else 0, round(people * s.stations / total))
    consumers = max(1 if s.consumers else 0, round(people * s.consumers / total))
    households = max(0, people - stations - consumers)
    committee = min(s.committee_size, 1 + stations + households)
    faults = tuple(f for f in s.faults if all(_exists(n, stations, households, consumers)
                                             for n in ([f.node] if f.node else []) + [x for g in f.groups for x in g]))
    return dataclasses.replace(s, households=households, consumers=consumers, stations=stations,
                               committee_size=committee, faults=faults)


def _exists(name: str, stations: int, households: int, consumers: int) -> bool:
    kind, _, index = name.partition("-")
    limits = {"operator": 1, "station": stations, "household": households, "consumer": consumers}
    return kind == "operator" or (kind in limits and index.isdigit() and int(index) < limits[kind])
