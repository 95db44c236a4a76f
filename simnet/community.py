"""A scenario turned into participants: keys, ports, energy series from real profiles, prices,
and one node data dir each (``config.toml``, ``node.key``, ``meter.key``, ``profile.json``,
``energy.json``).

Metering. Every participant but the operator runs a simulated site (``[devices]``: its PV array and
battery) driven by its own load and PV series, whatever its strategy: its meter measures what the
profile says happened (the site's battery does the same greedy self-consumption as
``self_consumption`` below, so the meter's net is the profile's ``net`` up to rounding). The site
reads ``site.json``: ``energy.json``'s load and PV with one idle slot (0 Wh) in front, starting one
slot before the profile — a series holds its first value before it starts, so the battery rests
through the warm-up and starts the profile at the same state of charge as the profile's. Each
gets its own meter key (``meter.key``, apart from its node key), and the operator's config lists
every (account, meter key) under ``[[gateway.meters]]``, with the site's export capacity
(``export_w``: what order admission bounds its offers by), so the gateway registers them at start and
settles every slot ``SETTLE_DELAY_REAL_S`` real seconds (W) after its grace, reconciling what is
certified later. The grace is the scenario's ``meter_grace_real_s`` (default 10) real seconds of scaled
time (at least 5 minutes): under an accelerated clock a reading needs real time to be sampled,
signed and certified. For the same reason a meter sampling gap of up to half that grace in real
time (``[devices.meter] max_gap_s``) still leaves a slot metered: on a busy machine the sampler of
a 720× run can miss a real second, which is a quarter of an hour of market time. Metering and settlement end ``QUIET_REAL_S`` real seconds before the run's
end (``[devices.meter] until_s``, ``[gateway] settle_until_s``: slots due later are neither
metered nor settled), so no entry is in flight when the driver compares the nodes' state roots
and stops them.

Who is who. ``operator`` is the zone operator: its key is the zone gateway (it mints the initial
credits) and it is the first validator; it neither consumes nor trades. Then ``station-<i>``
(PV + storage + public EV charging), ``household-<ii>`` (synPRO household load, PV on some roofs
with a seeded orientation, a battery and an EV on some) and ``consumer-<i>`` (BDEW H25 standard
load, no generation). The committee is the operator, then stations, then households, up to
``committee.size`` nodes.

Energy per slot (Wh, ints) for every participant, from ``simnet.profiles``: ``load`` (+ EV
charging), ``pv``; a battery does greedy self-consumption (charges from surplus, discharges into
need, within its power, SoC band 10–95 % and √0.92 efficiency each way), giving ``net`` = the grid
exchange before trading (+ import). Trading and the no-trading baseline use the same ``net``: the
agent trades it with perfect foresight (a known simplification: forecasts are not in the loop yet).

Prices (µc/kWh): a participant's ask / bid is ``feed_in + position × (retail − feed_in)``,
position drawn per participant from the scenario's range, shaded per slot by half the day-ahead
price's deviation from its mean over the run, and kept within [feed_in, retail].
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from p2pgrid.agent.profile_trader import TradingProfile
from p2pgrid.identity import NodeKey, save_keystore
from p2pgrid.net.libp2p_host import peer_id_of
from p2pgrid.net.ports import free_fixed_ports
from simnet import agent_inputs, charging, profiles
from simnet.scenario import Scenario

ZONE = "sim"
SOC_MIN, SOC_MAX, ROUND_TRIP = 0.10, 0.95, 0.92
WARMUP_SLOTS = 2
ENERGY_FILE = "energy.json"
SITE_FILE = "site.json"
METER_KEY_FILE = "meter.key"
CHARGING_MAX_SESSION_WH = 80_000
QUIET_REAL_S = 3.0
SETTLE_DELAY_REAL_S = 1.5
SAMPLE_PERIOD_MS = 250       # real ms between device samples (the meter must see every slot edge)


@dataclass
class Energy:
    load: list[int]
    pv: list[int]
    net: list[int] = field(default_factory=list)
    soc: list[float] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Energy:
        return cls(**json.loads(text))


@dataclass
class Participant:
    name: str
    role: str            # household | consumer | station (the operator is a "consumer" without load)
    seed: int
    key: NodeKey
    meter_key: NodeKey = field(default_factory=NodeKey.generate)   # signs its meter readings
    port: int = 0
    validator: bool = False
    operator: bool = False
    pv_kwp: float = 0.0
    battery_wh: int = 0
    has_ev: bool = False
    energy: Energy | None = None
    connectors: list[list[int]] = field(default_factory=list)   # a station's public charging, Wh per slot
    charging_file: bool = False     # has a charging sessions file (station log or driver plans)
    invest_shares: int = 0          # LP shares it keeps in the station's programme
    ask: list[int] = field(default_factory=list)
    bid: list[int] = field(default_factory=list)

    @property
    def account(self) -> str:
        return self.key.public_key.hex()

    def address(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{peer_id_of(self.key.public_key).to_base58()}"

    @property
    def memory_address(self) -> str:
        return f"memory/{self.account}"


@dataclass(frozen=True)
class Timeline:
    """Simulated time of a run (Unix ms) and the real instant the shared clock is anchored at."""

    profile_start_ms: int     # first slot of the profiles
    sim_epoch_ms: int         # market time at the anchor (a few slots of warm-up before the start)
    end_ms: int               # when the last profile slot has passed its gate closure
    anchor_wall_ms: int
    speed: float

    def real_s_until(self, market_ms: int) -> float:
        return self.anchor_wall_ms / 1000 + (market_ms - self.sim_epoch_ms) / 1000 / self.speed

    def market_ms_at(self, wall_s: float) -> int:
        return self.sim_epoch_ms + int((wall_s * 1000 - self.anchor_wall_ms) * self.speed)


def slots_of(s: Scenario) -> int:
    return math.ceil(s.hours * 3600 / s.slot_s)


def build_participants(s: Scenario) -> list[Participant]:
    rng = random.Random(f"community:{s.seed}")
    people = [Participant("operator", "consumer", s.seed * 1000, NodeKey.generate(), operator=True)]
    for i in range(s.stations):
        people.append(Participant(f"station-{i}", "station", s.seed * 1000 + 100 + i, NodeKey.generate(),
                                  pv_kwp=s.station_pv_kwp, battery_wh=s.station_battery_wh))
    for i in range(s.households):
        p = Participant(f"household-{i:02d}", "household", s.seed * 1000 + 200 + i, NodeKey.generate())
        p.pv_kwp = round(rng.uniform(s.household_pv_kwp.lo, s.household_pv_kwp.hi), 1)
        p.battery_wh = s.household_battery_wh if rng.random() < s.household_battery_share else 0
        p.has_ev = rng.random() < s.household_ev_share
        people.append(p)
    investors = random.Random(f"investors:{s.seed}")     # its own draws: other participants stay as they were
    for p in people:
        if p.role == "household" and investors.random() < s.household_investor_share:
            p.invest_shares = s.household_invest_shares
    for i in range(s.consumers):
        people.append(Participant(f"consumer-{i}", "consumer", s.seed * 1000 + 300 + i, NodeKey.generate()))
    for p in people[:s.committee_size]:
        p.validator = True
    return people


def compute_energy(s: Scenario, people: list[Participant]) -> list[int]:
    """Fill every participant's energy and prices; returns the day-ahead price per slot."""
    n = slots_of(s)
    first = s.start_hour * 3600 // s.slot_s
    days = math.ceil((first + n) * s.slot_s / 86400) + 1

    def window(values: list[int]) -> list[int]:
        return values[first:first + n]

    day_ahead = window(profiles.day_ahead_prices(s.year, days, s.start_day, s.slot_s))
    mean_da = sum(day_ahead) / len(day_ahead)
    spread = s.retail_price - s.feed_in_price
    for p in people:
        rng = random.Random(f"prices:{p.seed}")
        load, pv, connectors = site_series(s, p, days, s.start_day, rng)
        p.connectors = [window(ev) for ev in connectors]
        energy = Energy(window(load), window(pv))
        energy.net, energy.soc = self_consumption(energy.load, energy.pv, p.battery_wh, s.slot_s)
        p.energy = energy
        ask_range = s.station_ask if p.role == "station" else s.household_ask
        bid_range = s.consumer_bid if p.role == "consumer" else s.household_bid
        ask_pos = rng.uniform(ask_range.lo, ask_range.hi)
        bid_pos = rng.uniform(bid_range.lo, bid_range.hi)

        def price(position: float, da: int) -> int:
            value = s.feed_in_price + position * spread + 0.5 * (da - mean_da)
            return int(min(s.retail_price, max(s.feed_in_price, value)))

        p.ask = [price(ask_pos, da) for da in day_ahead]
        p.bid = [price(bid_pos, da) for da in day_ahead]
    return day_ahead


def site_series(s: Scenario, p: Participant, days: int, start_day: int,
                rng: random.Random) -> tuple[list[int], list[int], list[list[int]]]:
    """Load (+ EV), PV and the public connectors' charging of ``p``'s site, Wh per slot, for
    ``days`` days from ``start_day`` (``rng``: the participant's draws, consumers' annual use)."""
    slots = days * 86400 // s.slot_s
    connectors: list[list[int]] = []
    if p.operator:
        return [0] * slots, [0] * slots, connectors
    if p.role == "station":
        load = [0] * slots
        for k in range(s.station_evs):
            ev = profiles.ev_charging(p.seed * 10 + k, days, start_day, s.slot_s)
            load = [a + b for a, b in zip(load, ev)]
            connectors.append(ev)
        pv = profiles.pv_generation(p.pv_kwp, 20.0, 180.0, days, start_day, s.slot_s, seed=p.seed, year=s.year)
    elif p.role == "household":
        load = profiles.household_load(p.seed, days, start_day, s.slot_s)
        if p.has_ev:
            ev = profiles.ev_charging(p.seed, days, start_day, s.slot_s)
            load = [a + b for a, b in zip(load, ev)]
        pv = profiles.pv_generation(p.pv_kwp, 35.0, 180.0, days, start_day, s.slot_s, seed=p.seed, year=s.year)
    else:
        annual = rng.uniform(s.consumer_annual_kwh.lo, s.consumer_annual_kwh.hi)
        load = profiles.standard_load("H25", annual, days, start_day, s.slot_s, year=2025)
        pv = [0] * slots
    return load, pv, connectors


def self_consumption(load: list[int], pv: list[int], capacity_wh: int, slot_s: int) -> tuple[list[int], list[float]]:
    """Greedy battery: net grid exchange per slot (+ import) and SoC after each slot."""
    if capacity_wh <= 0:
        return [a - b for a, b in zip(load, pv)], []
    eta = math.sqrt(ROUND_TRIP)
    stored = 0.5 * capacity_wh
    low, high = SOC_MIN * capacity_wh, SOC_MAX * capacity_wh
    step = capacity_wh / 2 * slot_s / 3600     # 0.5 C
    net, soc = [], []
    for l_wh, p_wh in zip(load, pv):
        surplus = p_wh - l_wh
        if surplus > 0:
            charge = min(surplus, step, (high - stored) / eta)
            stored += charge * eta
            net.append(-round(surplus - charge))
        else:
            discharge = min(-surplus, step, (stored - low) * eta)
            stored -= discharge / eta
            net.append(round(-surplus - discharge))
        soc.append(round(stored / capacity_wh, 4))
    return net, soc


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


BOOTSTRAP_PEERS = 2


def bootstrap_peers(people: list[Participant], name: str) -> list[Participant]:
    """The few peers a node dials at start: the operator and the next validator (both serve
    rendezvous points), or the first two other validators for the operator itself. Discovery finds
    the rest of the zone; a node never needs every address (docs/ARCHITECTURE.md)."""
    validators = [q for q in people if q.validator and q.name != name] or [q for q in people if q.name != name]
    return validators[:BOOTSTRAP_PEERS]


def render_config(s: Scenario, p: Participant, people: list[Participant], timeline: Timeline, *,
                  memory: bool, fault_control: bool) -> str:
    others = [q for q in people if q is not p]
    # The memory transport has no discovery (a memory network is fully connected): it keeps
    # every peer as a bootstrap peer. Real libp2p nodes get only a few.
    bootstrap = others if memory else bootstrap_peers(people, p.name)
    operator = people[0]
    sections: dict[str, dict[str, object]] = {
        "node": {"name": p.name, "data_dir": ".", "role": p.role, "log_level": "warning"},
        "zone": {"id": ZONE, "gateway_account": operator.account, "credit_limit_uc": 0},
        "zone.slots": {"length_s": s.slot_s, "horizon_s": 86400, "gate_s": 300, "grace_s": grace_s(s)},
        "zone.tariffs": {"retail_price": s.retail_price, "feed_in_price": s.feed_in_price},
        "network": {"listen": [f"/ip4/127.0.0.1/tcp/{p.port}"],
                    "bootstrap": [q.memory_address if memory else q.address() for q in bootstrap],
                    "publish_interval_ms": 500},
        "clock": {"mode": "scaled", "sim_epoch_ms": timeline.sim_epoch_ms, "speed": float(s.speed),
                  "anchor_wall_ms": timeline.anchor_wall_ms},
        "agent": {"strategy": "none" if p.operator else s.strategy, "seed": p.seed, "tick_ms": s.tick_ms,
                  "profile_file": "profile.json", **agent_inputs.agent_config(p)},
        "simnet": {"fault_control": fault_control, "overfill_once": p.name == s.broken},
        # Every node serves its local JSON-RPC on 127.0.0.1 (port in <data_dir>/rpc.json), so bots
        # and `curl` can talk to a running simulation.
        "rpc": {"enabled": not memory},
    }
    if not p.operator:
        # A simulated site driven by the participant's energy series: the agent trades from it,
        # and every node's meter measures it (see the module docstring).
        sections["devices"] = {"series_file": SITE_FILE,
                               "series_start_s": timeline.profile_start_ms // 1000 - s.slot_s,
                               "sample_period_ms": SAMPLE_PERIOD_MS}
        sections["devices.meter"] = {"key_file": METER_KEY_FILE, "until_s": quiet_from_s(s, timeline),
                                     "max_gap_s": meter_max_gap_s(s)}
    if p.operator:
        sections["gateway"] = {"fund_uc": s.credit_uc, "fund_accounts": [q.account for q in others],
                               "settle_until_s": quiet_from_s(s, timeline),
                               "settle_delay_ms": settle_delay_ms(s)}
    if p.pv_kwp:
        sections["devices.pv"] = {"kwp": float(p.pv_kwp)}
    if p.battery_wh:
        sections["devices.battery"] = {"capacity_wh": p.battery_wh, "max_charge_w": p.battery_wh // 2,
                                       "max_discharge_w": p.battery_wh // 2}
    if p.role == "station" and s.station_charging:
        sections["charging"] = {"enabled": True, "price_uc_per_kwh": s.station_charging_price,
                                "connectors": max(1, s.station_evs), "max_session_wh": CHARGING_MAX_SESSION_WH}
    if p.charging_file:
        sections.setdefault("charging", {})["sessions_file"] = charging.SESSIONS_FILE
    if p.role == "station" and s.station_shares and s.station_pools:
        # Payouts every 6 slots; shares sold through the run, locked up for 30 days (beyond any run).
        sections["shares"] = {"offer": True, "price_uc": s.station_share_price, "fee_share_bps": 5000,
                              "cap_shares": 10_000, "lockup_s": 30 * 86400, "sale_s": 30 * 86400,
                              "residents_only": True, "payout_every_s": 6 * s.slot_s}
    if p.invest_shares and s.station_shares:
        sections["shares"] = {"invest_shares": p.invest_shares}
    if p.role == "station" and p.battery_wh and s.station_pools:
        sections["pool"] = {"enabled": True, "fee_bps": 30, "max_share": 0.5}
    lines = [f"# Written by simnet for scenario {s.name!r}: one node of the community."]
    for name, values in sections.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    if p.operator:
        for q in others:
            lines += ["\n[[gateway.meters]]", f"account = {_toml(q.account)}",
                      f"meter_key = {_toml(q.meter_key.public_key.hex())}", f"export_w = {export_w(q, s.slot_s)}"]
    for q in people:
        if q.validator:
            lines += ["\n[[zone.validators]]", f"public_key = {_toml(q.account)}",
                      f"address = {_toml('' if memory else q.address())}"]
    return "\n".join(lines) + "\n"


def export_w(p: Participant, slot_s: int) -> int:
    """What the operator registers as the site's export capacity, W (order admission bounds its
    offers by it): PV nameplate plus the battery's discharge power, or the most the simulated
    site ever exports in one slot if that is more (a published PV series may exceed nameplate)."""
    nameplate = math.ceil(p.pv_kwp * 1000) + p.battery_wh // 2
    exported = max((-wh for wh in p.energy.net), default=0) if p.energy is not None else 0
    return max(nameplate, math.ceil(exported * 3600 / slot_s))


def grace_s(s: Scenario) -> int:
    """Metering grace of the zone, market seconds (see the module docstring)."""
    return max(300, math.ceil(s.meter_grace_real_s * s.speed))


def meter_max_gap_s(s: Scenario) -> int:
    """The longest meter sampling gap a slot may contain and still be metered, market seconds:
    half the grace in real time, never less than the node's own default (a quarter slot)."""
    return max(s.slot_s // 4, math.ceil(s.meter_grace_real_s / 2 * s.speed))


def settle_delay_ms(s: Scenario) -> int:
    """W, the gateway's wait after a slot's metering deadline before it settles, market ms: a
    reading taken just before the deadline gets ``SETTLE_DELAY_REAL_S`` real seconds to be
    certified (one taking longer is reconciled later, never lost)."""
    return math.ceil(SETTLE_DELAY_REAL_S * s.speed * 1000)


def quiet_from_s(s: Scenario, timeline: Timeline) -> int:
    """UTC second after which no slot due is metered or settled (see the module docstring)."""
    return (timeline.end_ms - math.ceil(QUIET_REAL_S * s.speed * 1000)) // 1000


def make_timeline(s: Scenario, anchor_wall_ms: int) -> Timeline:
    start_ms = (profiles.profile_slot_utc_s(s.year, s.start_day, 0, s.slot_s) + s.start_hour * 3600) * 1000
    epoch = start_ms - WARMUP_SLOTS * s.slot_s * 1000
    end = start_ms + slots_of(s) * s.slot_s * 1000
    return Timeline(start_ms, epoch, end, anchor_wall_ms, s.speed)


def write_node_dirs(s: Scenario, people: list[Participant], timeline: Timeline, nodes_dir: Path, *,
                    memory: bool) -> None:
    fault_control = bool(s.faults)
    sessions = charging_sessions(s, people, timeline)
    for p in people:
        data_dir = nodes_dir / p.name
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if p.name in sessions:
            p.charging_file = True
            (data_dir / charging.SESSIONS_FILE).write_text(json.dumps(sessions[p.name], indent=1))
        save_keystore(data_dir / "node.key", p.key)
        if not p.operator:
            save_keystore(data_dir / METER_KEY_FILE, p.meter_key)
        (data_dir / "config.toml").write_text(render_config(s, p, people, timeline, memory=memory,
                                                            fault_control=fault_control))
        if p.energy is not None:
            (data_dir / ENERGY_FILE).write_text(p.energy.to_json())
            (data_dir / SITE_FILE).write_text(json.dumps({"load": [0, *p.energy.load], "pv": [0, *p.energy.pv]}))
            if not p.operator:
                profile = TradingProfile(slot_s=s.slot_s, start_s=timeline.profile_start_ms // 1000,
                                         net_wh=tuple(p.energy.net), ask_price=tuple(p.ask), bid_price=tuple(p.bid),
                                         soc=tuple(p.energy.soc))
                (data_dir / "profile.json").write_text(profile.to_json())
                agent_inputs.write_agent_inputs(s, p, data_dir, timeline.profile_start_ms // 1000, site_series)


@dataclass
class Community:
    scenario: Scenario
    people: list[Participant]
    timeline: Timeline
    day_ahead: list[int]
    nodes_dir: Path

    def by_name(self, name: str) -> Participant:
        for p in self.people:
            if p.name == name:
                return p
        raise KeyError(name)


def charging_sessions(s: Scenario, people: list[Participant], timeline: Timeline) -> dict[str, dict]:
    """Every node's charging sessions file content (``simnet.charging``), when stations sell charging."""
    if not s.station_charging:
        return {}
    drivers = [f"{p.name}/{p.account}" for p in people if p.role in ("household", "consumer") and not p.operator]
    files: dict[str, dict] = {}
    for p in people:
        if p.role != "station":
            continue
        for name, content in charging.community_sessions(
                f"{p.name}/{p.account}", p.connectors, drivers, timeline.profile_start_ms // 1000, s.slot_s,
                quiet_from_s(s, timeline), CHARGING_MAX_SESSION_WH, p.seed).items():
            merged = files.setdefault(name, {})
            for key, items in content.items():
                merged.setdefault(key, []).extend(items)
    return files


def prepare_community(s: Scenario, out_dir: Path, *, startup_s: float,
                      now_wall_ms: int | Callable[[], int]) -> Community:
    """Build everything a run needs on disk; the clock starts ``startup_s`` after the profiles are
    loaded (nodes need that long to start, connect and receive their credits before the first slot
    matters). ``now_wall_ms`` is read only then when it is a clock: loading real profiles takes
    seconds on a busy machine, and a market clock anchored before it would start that much late."""
    people = build_participants(s)
    memory = s.transport == "memory"
    if not memory:
        for p, port in zip(people, free_fixed_ports(len(people))):
            p.port = port
    day_ahead = compute_energy(s, people)
    now_ms = now_wall_ms() if callable(now_wall_ms) else now_wall_ms
    timeline = make_timeline(s, now_ms + int(startup_s * 1000))
    nodes_dir = Path(out_dir) / "nodes"
    write_node_dirs(s, people, timeline, nodes_dir, memory=memory)
    (Path(out_dir) / "community.json").write_text(json.dumps({
        "scenario": s.name, "zone": ZONE, "slot_s": s.slot_s, "profile_start_ms": timeline.profile_start_ms,
        "end_ms": timeline.end_ms, "retail_price": s.retail_price, "feed_in_price": s.feed_in_price,
        "grace_s": grace_s(s), "speed": s.speed, "settle_until_ms": quiet_from_s(s, timeline) * 1000,
        "day_ahead": day_ahead, "gateway": people[0].account,
        "participants": [{"name": p.name, "role": p.role, "account": p.account, "validator": p.validator,
                          "operator": p.operator, "pv_kwp": p.pv_kwp, "battery_wh": p.battery_wh,
                          "has_ev": p.has_ev} for p in people]}, indent=1))
    return Community(s, people, timeline, day_ahead, nodes_dir)
