"""The node's configuration: one frozen object, built once at start-up from TOML + CLI overrides.

Layout of a node config file (every key is optional unless noted; see ``node-configs/``)::

    [node]      name, data_dir (required), role, keystore, passphrase_file, log_level
    [zone]      preset (a zone preset file), id, gateway_account, ledger_domain
    [zone.slots]      length_s, horizon_s, gate_s, grace_s
    [zone.tariffs]    retail_price, feed_in_price            (µc per kWh)
    [zone.grid_fees]  <other zone id> = µc per kWh
    [[zone.validators]] public_key (hex), address (multiaddr)
    [network]   listen, bootstrap, mdns, publish_interval_ms, discovery, serve_rendezvous,
                max_connections, target_connections
    [clock]     mode (system | scaled), sim_epoch_ms, speed, anchor_wall_ms
    [devices]   mode (simulated | real), base_load_w, sample_period_ms, series_file, series_start_s
    [devices.pv] [devices.battery] [[devices.ev_chargers]] [devices.meter] [devices.adapter]
    [pool]      enabled, fee_bps, max_share, min_reserve_wh
    [agent]     strategy, seed, tick_ms, orders_per_tick, qty_min_wh, qty_max_wh, price_min, price_max,
                order_ttl_s, max_orders, profile_file; agent strategy: horizon_slots, offer_lead_slots,
                buy_lead_slots, fill_probability, expected_p2p_price, reprice_ramp_s, reprice_min_change,
                min_qty_wh, arbitrage, reference_prices_file, history_file
    [gateway]   fund_uc, fund_accounts, [[gateway.meters]] account, meter_key
                (the zone operator's node: initial credits, meter registrations)
    [simnet]    fault_control, overfill_once    (test-only switches; never set in production)
    [rpc]       enabled, port
    [metrics]   enabled, port
    [invest]    capex_uc, opex_uc_per_year, lifetime_years, degradation_per_year, discount_rate
                (investment terms, read only by ``p2pgrid invest report``)

**Presets per network stay apart from per-node configs**: ``[zone] preset = "zone-local.toml"``
loads a zone preset (a file holding one ``[zone]`` table, path relative to the config file);
keys written next to ``preset`` override the preset's. Relative ``data_dir`` and
``passphrase_file`` are resolved against the config file's directory.

**CLI overrides** are dotted keys (``network.listen=["/ip4/127.0.0.1/tcp/4001"]``) applied to the
raw TOML before it is checked, so an override is held to the same rules as the file.

**Rules.** An unknown key, a value of the wrong type or a value out of range raises
``ConfigError`` naming the field by its dotted path (``zone.tariffs.retail_price``). Every field's
meaning is in its ``doc`` metadata (``describe_fields()`` lists them all).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from p2pgrid.errors import ConfigError
from p2pgrid.units import SlotRules
from p2pgrid.wire import ZONE_PATTERN

ROLES = ("household", "consumer", "station")
LOG_LEVELS = ("debug", "info", "warning", "error")
HEX_KEY_PATTERN = r"[0-9a-f]{64}"
LOOPBACK_HOST = "127.0.0.1"
DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


def doc(text: str, **meta: Any) -> dict[str, Any]:
    """Field metadata: its documentation plus optional checks ``choices``, ``min``, ``max``, ``pattern``."""
    return {"doc": text, **meta}


# --- sections -------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeSection:
    data_dir: Path = field(metadata=doc("Directory for keystore, status file, RPC endpoint and token, and databases."))
    name: str = field(default="node", metadata=doc("Human name shown in dashboards and logs.",
                                                   pattern=r"[A-Za-z0-9_.-]{1,32}"))
    role: str = field(default="household", metadata=doc("What this node is.", choices=ROLES))
    keystore: str = field(default="node.key", metadata=doc("Keystore file name inside data_dir."))
    passphrase_file: Path | None = field(default=None, metadata=doc(
        "File whose first line is the keystore passphrase; unset for an unsealed keystore."))
    log_level: str = field(default="info", metadata=doc("Logging level.", choices=LOG_LEVELS))

    @property
    def keystore_path(self) -> Path:
        return self.data_dir / self.keystore


@dataclass(frozen=True)
class SlotSection:
    length_s: int = field(default=900, metadata=doc("Delivery slot length in seconds; divides a day.", min=1))
    horizon_s: int = field(default=24 * 3600, metadata=doc("Trading for a slot opens this long before it.", min=1))
    gate_s: int = field(default=300, metadata=doc("Gate closure: trading closes this long before the slot.", min=0))
    grace_s: int = field(default=300, metadata=doc("Meter readings are due this long after the slot ends.", min=0))

    def rules(self) -> SlotRules:
        return SlotRules(self.length_s, self.horizon_s, self.gate_s, self.grace_s)


@dataclass(frozen=True)
class TariffSection:
    retail_price: int = field(default=300_000, metadata=doc(
        "Grid retail price in µc/kWh: what a shortfall costs.", min=0))
    feed_in_price: int = field(default=80_000, metadata=doc(
        "Grid feed-in price in µc/kWh: what an excess earns.", min=0))


@dataclass(frozen=True)
class Validator:
    public_key: str = field(metadata=doc("Validator's Ed25519 public key, 64 lowercase hex digits.",
                                         pattern=HEX_KEY_PATTERN))
    address: str = field(default="", metadata=doc("Validator's libp2p multiaddr (may be empty if unknown)."))


@dataclass(frozen=True)
class ZoneSection:
    id: str = field(default="local", metadata=doc("Zone id: names the gossip topics.", pattern=ZONE_PATTERN))
    slots: SlotSection = field(default_factory=SlotSection, metadata=doc("Slot calendar of the zone."))
    tariffs: TariffSection = field(default_factory=TariffSection, metadata=doc("Grid tariffs of the zone."))
    grid_fees: dict[str, int] = field(default_factory=dict, metadata=doc(
        "Network fee in µc/kWh for energy moved between this zone and another zone (either direction), "
        "keyed by that zone's id. The zones listed are the ones this node trades with (it keeps their "
        "order books, read-only); a zone not listed is not tradable. Listed zones must share this zone's "
        "ledger_domain and list the same fee back.", min=0))
    ledger_domain: str = field(default="", metadata=doc(
        "Name of the ledger (committee) this zone's accounts are certified by; zones that trade with each "
        "other share one. Empty: the zone id.", pattern=f"(|{ZONE_PATTERN})"))
    validators: tuple[Validator, ...] = field(default=(), metadata=doc("The zone's ledger committee."))
    gateway_account: str = field(default="", metadata=doc(
        "Hex public key of the zone gateway account (mint/burn, imbalance); empty if none yet.",
        pattern=f"(|{HEX_KEY_PATTERN})"))
    credit_limit_uc: int = field(default=0, metadata=doc(
        "How far below zero an ordinary account's balance may go, µc (the gateway has no limit).", min=0))

    def __post_init__(self) -> None:
        for zone in self.grid_fees:
            if not re.fullmatch(ZONE_PATTERN, zone):
                raise ConfigError(f"zone.grid_fees.{zone}: not a zone id")
            if zone == self.id:
                raise ConfigError(f"zone.grid_fees.{zone}: a zone has no grid fee to itself")
        try:
            self.slots.rules()
        except ConfigError as exc:
            raise ConfigError(f"zone.slots: {exc}") from None

    @property
    def slot_rules(self) -> SlotRules:
        return self.slots.rules()

    @property
    def ledger_zone(self) -> str:
        """The ledger domain: the ``zone`` of ledger entries, committee and ledger topic."""
        return self.ledger_domain or self.id

    @property
    def neighbours(self) -> tuple[str, ...]:
        """The other zones this node trades with (those with a grid fee), sorted."""
        return tuple(sorted(self.grid_fees))


@dataclass(frozen=True)
class NetworkSection:
    listen: tuple[str, ...] = field(default=DEFAULT_LISTEN, metadata=doc(
        "Multiaddrs to listen on; port 0 picks a free port."))
    bootstrap: tuple[str, ...] = field(default=(), metadata=doc(
        "Multiaddrs (with /p2p/<peer id>) of peers to dial at start."))
    mdns: bool = field(default=False, metadata=doc("Discover peers on the local network with mDNS."))
    publish_interval_ms: int = field(default=1000, metadata=doc(
        "Order changes are batched and published at most once per this interval.", min=10))
    discovery: bool = field(default=True, metadata=doc(
        "Find the peers of the zone through rendezvous points (the bootstrap peers and validators that "
        "serve one) and dial peers on demand by id."))
    serve_rendezvous: bool = field(default=False, metadata=doc(
        "Serve a rendezvous point for others' discovery. The zone's validators always serve one."))
    max_connections: int = field(default=16, metadata=doc(
        "Connections kept: idle ones above this count are closed (bootstrap peers, validators dialled "
        "by address and connections with a stream in use are kept).", min=2, max=1000))
    target_connections: int = field(default=8, metadata=doc(
        "Discovery dials peers of the zone until the node has this many connections.", min=1, max=1000))

    def __post_init__(self) -> None:
        if self.target_connections > self.max_connections:
            raise ConfigError("network.target_connections: must not exceed network.max_connections")


@dataclass(frozen=True)
class ClockSection:
    mode: str = field(default="system", metadata=doc(
        "system: UTC wall clock. scaled: sim_epoch_ms + (now - anchor) × speed.", choices=("system", "scaled")))
    sim_epoch_ms: int = field(default=0, metadata=doc("Scaled clock: simulated time at the anchor (Unix ms).", min=0))
    speed: float = field(default=1.0, metadata=doc("Scaled clock: simulated seconds per real second.", min=0.001))
    anchor_wall_ms: int = field(default=0, metadata=doc(
        "Scaled clock: the wall-clock instant (Unix ms) shared by all processes where sim time = sim_epoch_ms.",
        min=0))


@dataclass(frozen=True)
class PvSection:
    kwp: float = field(metadata=doc("Peak power of the array in kWp.", min=0.0))
    tilt_deg: float = field(default=30.0, metadata=doc("Panel tilt from horizontal in degrees.", min=0.0, max=90.0))
    azimuth_deg: float = field(default=180.0, metadata=doc(
        "Panel azimuth in degrees clockwise from north (180 = south).", min=0.0, max=360.0))


@dataclass(frozen=True)
class BatterySection:
    capacity_wh: int = field(metadata=doc("Usable capacity in Wh.", min=1))
    max_charge_w: int = field(metadata=doc("Maximum charge power in W.", min=0))
    max_discharge_w: int = field(metadata=doc("Maximum discharge power in W.", min=0))
    round_trip_efficiency: float = field(default=0.92, metadata=doc(
        "Energy out / energy in over a full cycle.", min=0.01, max=1.0))
    self_discharge_per_day: float = field(default=0.001, metadata=doc(
        "Fraction of stored energy lost per day at rest.", min=0.0, max=1.0))
    soc_min: float = field(default=0.1, metadata=doc("Lowest state of charge allowed (0..1).", min=0.0, max=1.0))
    soc_max: float = field(default=0.95, metadata=doc("Highest state of charge allowed (0..1).", min=0.0, max=1.0))
    initial_soc: float = field(default=0.5, metadata=doc("Simulated state of charge at start (0..1).",
                                                         min=0.0, max=1.0))

    def __post_init__(self) -> None:
        if not self.soc_min < self.soc_max:
            raise ConfigError("devices.battery.soc_min: must be below soc_max")


@dataclass(frozen=True)
class EvChargerSection:
    max_power_w: int = field(metadata=doc("Charger power limit in W.", min=1))
    ev_capacity_wh: int = field(default=60_000, metadata=doc("Battery size of the car it usually charges, Wh.", min=1))
    departure_hour: int = field(default=7, metadata=doc("Usual departure hour (local, 0-23).", min=0, max=23))
    arrival_hour: int = field(default=18, metadata=doc("Usual arrival hour (local, 0-23).", min=0, max=23))


@dataclass(frozen=True)
class MeterSection:
    kind: str = field(default="simulated", metadata=doc(
        "Meter source.", choices=("simulated", "sunspec", "mqtt")))
    key_file: str = field(default="meter.key", metadata=doc(
        "Meter key file in data_dir (meter readings are signed by this key, not the node key)."))
    until_s: int = field(default=0, metadata=doc(
        "Send no meter reading for a slot whose metering deadline is after this UTC second; 0 = no end "
        "(simnet: a quiet ledger when the run stops).", min=0))
    max_gap_s: int = field(default=0, metadata=doc(
        "A slot is metered only if no two meter readings spanning part of it are further apart than "
        "this (market seconds; a longer outage makes the slot's split of energy a guess and the node "
        "sends no reading for it); 0 = max(60 s, a quarter of the slot).", min=0))


ADAPTER_ROLES = ("meter", "pv", "battery")
VICTRON_SERVICES = ("grid", "pv", "battery", "vebus")


def _check_roles(roles: tuple[str, ...], where: str) -> None:
    if not roles:
        raise ConfigError(f"{where}: name at least one of {', '.join(ADAPTER_ROLES)}")
    if len(set(roles)) != len(roles):
        raise ConfigError(f"{where}: a device is named twice")


@dataclass(frozen=True)
class ModbusUnitSection:
    host: str = field(metadata=doc("Modbus TCP host of this unit (any address: real devices sit on the LAN)."))
    port: int = field(default=502, metadata=doc("Modbus TCP port.", min=1, max=65535))
    unit_id: int = field(default=1, metadata=doc("Modbus unit id.", min=0, max=255))
    devices: tuple[str, ...] = field(default=("meter",), metadata=doc(
        "What this unit is (meter, pv, battery); its SunSpec models are found at 40000.", choices=ADAPTER_ROLES))

    def __post_init__(self) -> None:
        _check_roles(self.devices, "devices.adapter.units.devices")


@dataclass(frozen=True)
class AdapterSection:
    """The real hardware behind a node (``p2pgrid.devices.real_set`` builds the devices from it).

    SunSpec: the unit at ``host``/``port``/``unit_id`` serves ``devices``; ``[[devices.adapter.units]]``
    add more Modbus units (a separate meter, a second inverter). A device's models are discovered at
    run time (meter 201-204, inverter 101-103 + nameplate 120, battery 802 + storage controls 124).
    MQTT: the broker at ``host``/``port``; ``topic_map`` picks the preset (``generic``:
    ``<topic_prefix>/<device>/<field>``; ``victron``: Venus OS ``N/<portal_id>/...``), ``topics`` and
    ``scales`` override single fields. Ratings no topic carries come from ``[devices.pv]`` and
    ``[devices.battery]``.
    """

    kind: str = field(default="sunspec", metadata=doc("Real device protocol.", choices=("sunspec", "mqtt")))
    host: str = field(default="127.0.0.1", metadata=doc(
        "Device or broker host (any address: real devices sit on the LAN)."))
    port: int = field(default=0, metadata=doc(
        "Device or broker port; 0 = the protocol's default (502 Modbus TCP, 1883 MQTT).", min=0, max=65535))
    unit_id: int = field(default=1, metadata=doc("Modbus unit id (SunSpec).", min=0, max=255))
    devices: tuple[str, ...] = field(default=("meter", "pv", "battery"), metadata=doc(
        "What the device at host is or the broker carries: meter, pv, battery (the household load is "
        "derived: grid + PV + battery).", choices=ADAPTER_ROLES))
    units: tuple[ModbusUnitSection, ...] = field(default=(), metadata=doc(
        "SunSpec: more Modbus units, each with host, port, unit_id and devices."))
    timeout_ms: int = field(default=2000, metadata=doc(
        "How long one request may take before the device counts as unreachable.", min=10))
    poll_interval_ms: int = field(default=1000, metadata=doc(
        "How often a device or broker that went away is tried again (readings are sampled every "
        "devices.sample_period_ms).", min=10))
    meter_import_positive: bool = field(default=True, metadata=doc(
        "SunSpec meter counts grid import positive (false: the meter is wired the other way)."))
    battery_discharge_positive: bool = field(default=True, metadata=doc(
        "SunSpec battery model 802 reports W positive when discharging (false: positive when charging)."))
    battery_control: bool = field(default=True, metadata=doc(
        "Send battery setpoints to the device (SunSpec model 124 / MQTT setpoint topic); false: refused."))
    pv_rated_w: int = field(default=0, metadata=doc(
        "PV inverter rating in W when the device does not tell (no SunSpec nameplate, MQTT); 0 = [devices.pv] kwp.",
        min=0))
    revert_s: float = field(default=60.0, metadata=doc(
        "A battery returns to its own control this long after the node's last setpoint: written to the "
        "device with every setpoint (SunSpec model 124 InOutWRte_RvrtTms) and enforced by the node too "
        "(MQTT has no such register). The node repeats a standing setpoint well within it.", min=1.0, max=3600.0))
    topic_map: str = field(default="generic", metadata=doc(
        "MQTT topic preset: generic (<topic_prefix>/<device>/<field>) or victron (Venus OS dbus-mqtt).",
        choices=("generic", "victron")))
    topic_prefix: str = field(default="p2pgrid", metadata=doc("MQTT topic prefix of the generic preset."))
    topics: dict[str, str] = field(default_factory=dict, metadata=doc(
        "MQTT topic of single fields, keyed '<device>.<field>' (e.g. 'battery.soc_pct'; 'battery.setpoint' is "
        "where battery setpoints are published)."))
    scales: dict[str, float] = field(default_factory=dict, metadata=doc(
        "MQTT factor from published value to ours per field, keyed like topics (e.g. 1000 for kWh → Wh)."))
    portal_id: str = field(default="", metadata=doc("Victron: the GX device's portal id (VRM id)."))
    victron_instances: dict[str, int] = field(default_factory=dict, metadata=doc(
        "Victron: device instances by service (grid 30, pv 20, battery 512, vebus 276 by default).", min=0))
    keepalive_s: float = field(default=30.0, metadata=doc(
        "Victron: how often R/<portal_id>/keepalive is published (Venus OS stops publishing a minute after the last).",
        min=1.0))
    max_age_ms: int = field(default=60_000, metadata=doc(
        "MQTT: a reading whose oldest value is older than this is STALE.", min=100))
    client_id: str = field(default="", metadata=doc("MQTT client id; empty = chosen by the client library."))

    def __post_init__(self) -> None:
        _check_roles(self.devices, "devices.adapter.devices")
        if self.kind == "mqtt" and self.units:
            raise ConfigError("devices.adapter.units: only SunSpec has Modbus units")
        roles = list(self.devices) + [role for unit in self.units for role in unit.devices]
        for role in ("meter", "battery"):
            if roles.count(role) > 1:
                raise ConfigError(f"devices.adapter: more than one {role} (one grid meter and one battery per node)")
        if self.kind == "mqtt" and self.topic_map == "victron" and not self.portal_id:
            raise ConfigError("devices.adapter.portal_id: required by topic_map = \"victron\"")
        if unknown := sorted(set(self.victron_instances) - set(VICTRON_SERVICES)):
            raise ConfigError(f"devices.adapter.victron_instances.{unknown[0]}: unknown service "
                              f"(one of {', '.join(VICTRON_SERVICES)})")
        for table in ("topics", "scales"):
            for key in getattr(self, table):
                device, dot, name = key.partition(".")
                if device not in ADAPTER_ROLES or not dot or not name:
                    raise ConfigError(f"devices.adapter.{table}.{key}: expected '<device>.<field>' with device one "
                                      f"of {', '.join(ADAPTER_ROLES)}")

    @property
    def effective_port(self) -> int:
        """``port``, or the protocol's default when it is 0."""
        return self.port or (502 if self.kind == "sunspec" else 1883)


@dataclass(frozen=True)
class DevicesSection:
    mode: str = field(default="simulated", metadata=doc(
        "simulated: physics models; real: the hardware behind [devices.adapter].", choices=("simulated", "real")))
    base_load_w: int = field(default=400, metadata=doc("Average household load in W (simulated).", min=0))
    pv: PvSection | None = field(default=None, metadata=doc("Solar array; absent = none."))
    battery: BatterySection | None = field(default=None, metadata=doc("Stationary battery; absent = none."))
    ev_chargers: tuple[EvChargerSection, ...] = field(default=(), metadata=doc("EV chargers."))
    meter: MeterSection = field(default_factory=MeterSection, metadata=doc("The grid meter."))
    adapter: AdapterSection | None = field(default=None, metadata=doc("Real hardware adapter (mode = real)."))
    sample_period_ms: int = field(default=1000, metadata=doc(
        "Agent strategy: how often each device is read, in real ms (p2pgrid.devices.service).", min=10))
    series_file: str = field(default="", metadata=doc(
        "Simulated devices: JSON file in data_dir with load and PV energy per zone slot "
        "({\"load\": [Wh], \"pv\": [Wh]}, as simnet's energy.json); empty = constant base_load_w, no PV."))
    series_start_s: int = field(default=0, metadata=doc(
        "Simulated devices: UTC seconds of the first slot of series_file.", min=0))

    def __post_init__(self) -> None:
        if self.mode == "real" and self.adapter is None:
            raise ConfigError("devices.adapter: required when devices.mode = \"real\"")


@dataclass(frozen=True)
class PoolSection:
    enabled: bool = field(default=False, metadata=doc("Host AMM pools backed by this node's battery."))
    fee_bps: int = field(default=30, metadata=doc("Pool fee in basis points of each swap.", min=0, max=10_000))
    max_share: float = field(default=0.5, metadata=doc(
        "Share of the battery's tradable energy committed to pools.", min=0.0, max=1.0))
    min_reserve_wh: int = field(default=0, metadata=doc("Energy never offered through pools, Wh.", min=0))


@dataclass(frozen=True)
class SharesSection:
    """A pool host's programme of liquidity providers' shares, and an LP's standing instruction to
    invest in one (``p2pgrid.shares.service``)."""

    offer: bool = field(default=False, metadata=doc(
        "Pool host: open a share programme on its pools' fees at start (if none is active) and run "
        "it: issue bought shares, pay fees out, redeem at par."))
    price_uc: int = field(default=10_000_000, metadata=doc(
        "Price of one share, µc (paid back at par on redemption).", min=1, max=10**15))
    fee_share_bps: int = field(default=5_000, metadata=doc(
        "Part of the host's pool fees paid to the share holders, basis points.", min=1, max=10_000))
    cap_shares: int = field(default=1_000, metadata=doc("Most shares outstanding at once.", min=1, max=10**12))
    lockup_s: int = field(default=30 * 86_400, metadata=doc(
        "Market seconds from the offer until redemptions may start (rounded up to a slot start).",
        min=0, max=100 * 365 * 86_400))
    sale_s: int = field(default=7 * 86_400, metadata=doc(
        "Market seconds from the offer until the sale closes (no purchase after).", min=1,
        max=100 * 365 * 86_400))
    residents_only: bool = field(default=False, metadata=doc(
        "Sell only to accounts with a certified meter registration in the zone (local ownership)."))
    payout_every_s: int = field(default=86_400, metadata=doc(
        "Market seconds between payouts of the holders' part of the pool fees.", min=1,
        max=365 * 86_400))
    invest_shares: int = field(default=0, metadata=doc(
        "Investor (LP): keep this many shares bought, in the first open programme of the zone (by "
        "programme id; of invest_host if set), from this node's own balance. 0: not an investor.",
        min=0, max=10**12))
    invest_host: str = field(default="", metadata=doc(
        "Investor: buy only from this host (hex public key). Empty: any host of the zone.",
        pattern=f"(|{HEX_KEY_PATTERN})"))
    invest_reserve_uc: int = field(default=0, metadata=doc(
        "Investor: credits kept for trading, µc; shares are bought only from the balance above this.",
        min=0, max=10**15))
    exit_after_lockup: bool = field(default=False, metadata=doc(
        "Investor: once a programme's lock-up slot is reached, ask the host to redeem every share held in "
        "it (and buy no more there)."))


@dataclass(frozen=True)
class ChargingSection:
    """Public EV charging sold under a certified tariff (``p2pgrid.charging.service``)."""

    enabled: bool = field(default=False, metadata=doc(
        "Station: sell charging at its chargers to accounts of the zone under a certified tariff."))
    price_uc_per_kwh: int = field(default=450_000, metadata=doc(
        "Charging price, µc per kWh delivered to the car.", min=1))
    max_session_wh: int = field(default=60_000, metadata=doc(
        "Most energy one session may take, Wh (the driver escrows its price up front).", min=1))
    connectors: int = field(default=2, metadata=doc(
        "Charging connectors; each has its own metering key, <data_dir>/chargers/<n>.key (made 0600 on first "
        "start), named in the tariff.", min=1, max=16))
    max_power_w: int = field(default=22_000, metadata=doc("Power of one connector, W.", min=1))
    tariff_days: int = field(default=365, metadata=doc(
        "A tariff stays open this many days; the station opens the next one a day before it closes.", min=2))
    no_car_grace_s: int = field(default=900, metadata=doc(
        "A session whose driver has no car in the connectors' log is billed zero (escrow back) this many "
        "market seconds after it started.", min=0))
    sessions_file: str = field(default="", metadata=doc(
        "Simulation only: JSON of planned charging sessions in data_dir (simnet writes it: the station's "
        "sessions with their energy, or a driver's sessions to start). Empty: none."))


@dataclass(frozen=True)
class FlexSection:
    """Flexibility offered to the zone operator's requests (``p2pgrid.flex.service``). A node
    always awards and settles the requests it posted itself; offering is opt-in."""

    offer: bool = field(default=False, metadata=doc(
        "Offer flexibility for the zone's requests, sized by the battery's charge above its backup "
        "reserve (and by max_wh_per_slot)."))
    price_uc_per_kwh: int = field(default=200_000, metadata=doc(
        "Ask for delivered flexibility, µc per kWh (a request's cap lowers it).", min=0))
    max_wh_per_slot: int = field(default=0, metadata=doc(
        "Most offered per slot, Wh; without a battery, what the owner can shed by hand (0: the battery alone).",
        min=0))


@dataclass(frozen=True)
class AgentSection:
    strategy: str = field(default="auto", metadata=doc(
        "auto (default): the agent strategy when the node has devices behind its meter and a ledger "
        "(zone validators and gateway), else none. "
        "none: place no orders by itself. random: seeded random orders (demo/simnet). "
        "profile: trade the expected surplus/need of the slots from profile_file (simnet). "
        "agent: trade from the node's own devices through forecasts and the battery plan (p2pgrid.agent.agent_trader).",
        choices=("auto", "none", "random", "profile", "agent")))
    seed: int = field(default=0, metadata=doc("Seed of the agent's randomness.", min=0))
    tick_ms: int = field(default=2000, metadata=doc("How often the agent decides, in real ms.", min=10))
    orders_per_tick: int = field(default=2, metadata=doc("Random strategy: orders per tick.", min=0, max=256))
    qty_min_wh: int = field(default=100, metadata=doc("Random strategy: smallest order, Wh.", min=1))
    qty_max_wh: int = field(default=2000, metadata=doc("Random strategy: largest order, Wh.", min=1))
    price_min: int = field(default=60_000, metadata=doc("Random strategy: lowest limit price, µc/kWh.", min=0))
    price_max: int = field(default=320_000, metadata=doc("Random strategy: highest limit price, µc/kWh.", min=0))
    order_ttl_s: int = field(default=3600, metadata=doc("Orders expire this long after creation.", min=1))
    max_orders: int = field(default=0, metadata=doc(
        "Random strategy: stop after placing this many orders in total; 0 = never stop.", min=0))
    profile_file: str = field(default="profile.json", metadata=doc(
        "Profile strategy: JSON file in data_dir with the node's expected net energy and prices per slot "
        "(written by simnet; see p2pgrid.agent.profile_trader)."))
    horizon_slots: int = field(default=48, metadata=doc(
        "Agent strategy: slots planned ahead (forecast horizon of the battery plan).", min=2, max=672))
    offer_lead_slots: int = field(default=4, metadata=doc(
        "Agent strategy: the nearest tradable slots (after the first) that get resting offers.", min=1))
    buy_lead_slots: int = field(default=1, metadata=doc(
        "Agent strategy: the nearest tradable slots (after the first) whose need is bought from the book.", min=1))
    fill_probability: float = field(default=0.5, metadata=doc(
        "Agent strategy: expected chance an order fills at the local price (planning prices).", min=0.0, max=1.0))
    expected_p2p_price: int = field(default=0, metadata=doc(
        "Agent strategy: expected local price, µc/kWh; 0 = midway between feed-in and retail.", min=0))
    reprice_ramp_s: int = field(default=4 * 3600, metadata=doc(
        "Agent strategy: limit prices move toward the tariff over this long before gate closure.", min=1))
    reprice_min_change: int = field(default=40_000, metadata=doc(
        "Agent strategy: replace a resting order when its limit moved by at least this, µc/kWh (each "
        "replacement is a cancel and a new order a taker may miss: a few steps over the ramp, not many).", min=1))
    min_qty_wh: int = field(default=50, metadata=doc(
        "Agent strategy: smallest order worth placing, Wh (smaller needs are left to the grid).", min=1))
    arbitrage: bool = field(default=False, metadata=doc(
        "Agent strategy: plan as a storage arbitrageur (a station): plan at the expected local price itself "
        "and never bid above it; a household plans with fill_probability."))
    reference_prices_file: str = field(default="", metadata=doc(
        "Agent strategy: JSON file in data_dir with the reference market's (day-ahead) prices "
        '{"start_s", "slot_s", "prices": [µc/kWh]}; only what is published by now is used. Empty: none.'))
    history_file: str = field(default="", metadata=doc(
        "Agent strategy: JSON file in data_dir with the site's measured past "
        '{"start_s", "slot_s", "load": [Wh], "pv": [Wh]}, seeding the forecasts. Empty: start from nothing.'))

    def __post_init__(self) -> None:
        if self.qty_min_wh > self.qty_max_wh:
            raise ConfigError("agent.qty_min_wh: must not exceed qty_max_wh")
        if self.price_min > self.price_max:
            raise ConfigError("agent.price_min: must not exceed price_max")


@dataclass(frozen=True)
class MeterRegistrationSection:
    account: str = field(metadata=doc("Hex public key of the metered account.", pattern=HEX_KEY_PATTERN))
    meter_key: str = field(metadata=doc("Hex public key of the meter that measures it (its meter.key).",
                                        pattern=HEX_KEY_PATTERN))
    export_w: int = field(default=-1, metadata=doc(
        "What the metered connection can feed into the grid, W (inverter nameplate of PV and battery "
        "together, or the export limit if lower). Order admission lets the account offer at most this "
        "times the slot length per slot. -1 = not recorded (a v1 registration: the account may buy, "
        "not sell).", min=-1))

    def __post_init__(self) -> None:
        if self.account == self.meter_key:
            raise ConfigError("gateway.meters: a meter key must not be the account's own key")


@dataclass(frozen=True)
class GatewaySection:
    fund_uc: int = field(default=0, metadata=doc(
        "Zone gateway node only: credits (µc) minted once to each account in fund_accounts.", min=0))
    fund_accounts: tuple[str, ...] = field(default=(), metadata=doc(
        "Zone gateway node only: hex public keys of the accounts to fund at start (idempotent)."))
    meters: tuple[MeterRegistrationSection, ...] = field(default=(), metadata=doc(
        "Zone gateway node only: meter keys to register at start, one per account, as "
        "[[gateway.meters]] account = ..., meter_key = ... (idempotent; settlement needs them)."))
    settle_until_s: int = field(default=0, metadata=doc(
        "Zone gateway node only: settle no slot whose metering deadline is after this UTC second; "
        "0 = no end (simnet: a quiet ledger when the run stops).", min=0))
    settle_delay_ms: int = field(default=30_000, metadata=doc(
        "Zone gateway node only: market ms after a slot's metering deadline before the gateway settles it "
        "(W, the certification bound: a reading taken just before the deadline is certified by then; one "
        "certified later is reconciled, never lost). See p2pgrid.settlement.service.", min=0))

    def __post_init__(self) -> None:
        for account in self.fund_accounts:
            if not re.fullmatch(HEX_KEY_PATTERN, account):
                raise ConfigError(f"gateway.fund_accounts: {account!r} is not a 64-hex-digit public key")
        keys = [m.meter_key for m in self.meters]
        if len(keys) != len(set(keys)):
            raise ConfigError("gateway.meters: a meter key is listed twice (a meter measures one account)")


@dataclass(frozen=True)
class SimnetSection:
    fault_control: bool = field(default=False, metadata=doc(
        "Test-only: obey fault commands (partition, heal, byzantine acts, stale device) dropped in "
        "<data_dir>/control/ by simnet. Never enable outside a simulation."))
    overfill_once: bool = field(default=False, metadata=doc(
        "Test-only broken node: certify one wash trade that fills its own offer beyond its size, "
        "so simnet's end checks can be seen to fail."))


@dataclass(frozen=True)
class RpcSection:
    enabled: bool = field(default=False, metadata=doc("Serve JSON-RPC on 127.0.0.1 (token in data_dir)."))
    port: int = field(default=0, metadata=doc("RPC port on 127.0.0.1; 0 picks a free port.", min=0, max=65535))


@dataclass(frozen=True)
class MetricsSection:
    enabled: bool = field(default=False, metadata=doc("Serve Prometheus metrics on 127.0.0.1."))
    port: int = field(default=0, metadata=doc("Metrics port on 127.0.0.1; 0 picks a free port.", min=0, max=65535))


@dataclass(frozen=True)
class InvestSection:
    """Investment terms of the node's installation, read only by ``p2pgrid invest report``. The
    defaults are a rough 300 kWp PV + 200 kWh storage station with two chargers (1 credit ≈ 1 €)."""

    capex_uc: int = field(default=400_000 * 1_000_000, metadata=doc(
        "Capital expense of the installation, µc (default 400 000 credits: PV 300 kWp, battery 200 kWh, "
        "chargers, grid connection).", min=0))
    opex_uc_per_year: int = field(default=8_000 * 1_000_000, metadata=doc(
        "Operating expense per year (maintenance, insurance, metering), µc.", min=0))
    lifetime_years: int = field(default=20, metadata=doc("Years the installation earns.", min=1, max=100))
    degradation_per_year: float = field(default=0.01, metadata=doc(
        "Fraction of yearly earnings lost each year to PV and battery ageing.", min=0.0, max=1.0))
    discount_rate: float = field(default=0.06, metadata=doc(
        "Yearly discount rate for NPV and the levelised cost.", min=0.0, max=1.0))


@dataclass(frozen=True)
class NodeConfig:
    """Everything a node needs to start, checked. Build it with ``load_config``."""

    node: NodeSection = field(metadata=doc("This node."))
    zone: ZoneSection = field(default_factory=ZoneSection, metadata=doc("The zone (network preset)."))
    network: NetworkSection = field(default_factory=NetworkSection, metadata=doc("Peer-to-peer network."))
    clock: ClockSection = field(default_factory=ClockSection, metadata=doc("Where market time comes from."))
    devices: DevicesSection = field(default_factory=DevicesSection, metadata=doc("Devices behind the meter."))
    pool: PoolSection = field(default_factory=PoolSection, metadata=doc("AMM pool hosting."))
    shares: SharesSection = field(default_factory=SharesSection, metadata=doc("LP share programme (pool host)."))
    charging: ChargingSection = field(default_factory=ChargingSection, metadata=doc("Public EV charging sales."))
    flex: FlexSection = field(default_factory=FlexSection, metadata=doc("Flexibility offers (virtual power plant)."))
    agent: AgentSection = field(default_factory=AgentSection, metadata=doc("Trading strategy."))
    gateway: GatewaySection = field(default_factory=GatewaySection, metadata=doc("Zone operator duties."))
    simnet: SimnetSection = field(default_factory=SimnetSection, metadata=doc("Test-only simulation switches."))
    rpc: RpcSection = field(default_factory=RpcSection, metadata=doc("Local JSON-RPC API."))
    metrics: MetricsSection = field(default_factory=MetricsSection, metadata=doc("Prometheus metrics."))
    invest: InvestSection = field(default_factory=InvestSection, metadata=doc("Investment terms (reports only)."))
    source: Path | None = field(default=None, compare=False, metadata=doc("File this config was read from."))


# --- loading --------------------------------------------------------------------------------

def load_config(path: Path | str, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """Read ``path`` (TOML), resolve its zone preset, apply dotted ``overrides`` and check it all."""
    path = Path(path)
    raw = _read_toml(path)
    return build_config(raw, base_dir=path.parent.resolve(), overrides=overrides, source=path)


def build_config(raw: Mapping[str, Any], *, base_dir: Path, overrides: Mapping[str, Any] | None = None,
                 source: Path | None = None) -> NodeConfig:
    """Build a ``NodeConfig`` from already-parsed TOML data (see module docstring for the rules)."""
    data = _deep_copy(raw)
    zone = data.get("zone")
    if isinstance(zone, dict) and "preset" in zone:
        preset_ref = zone.pop("preset")
        if not isinstance(preset_ref, str):
            raise ConfigError("zone.preset: expected a file path string")
        preset_path = (base_dir / preset_ref)
        preset = _read_toml(preset_path)
        unknown = set(preset) - {"zone"}
        if unknown:
            raise ConfigError(f"zone.preset: {preset_path} may only hold a [zone] table, found {sorted(unknown)}")
        data["zone"] = _merge(preset.get("zone", {}), zone)
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value)
    data.pop("source", None)
    config = _build(NodeConfig, data, "")
    node = config.node
    node = dataclasses.replace(
        node,
        data_dir=_resolve(base_dir, node.data_dir),
        passphrase_file=_resolve(base_dir, node.passphrase_file) if node.passphrase_file else None,
    )
    return dataclasses.replace(config, node=node, source=source)


def zone_from_preset(preset: Mapping[str, Any]) -> ZoneSection:
    """The ``ZoneSection`` of already-parsed zone preset data (a table holding one ``[zone]`` table),
    checked by the same rules as a node config's; raises ``ConfigError`` naming the field."""
    unknown = set(preset) - {"zone"}
    if unknown:
        raise ConfigError(f"a zone preset may only hold a [zone] table, found {sorted(unknown)}")
    return _build(ZoneSection, _deep_copy(preset.get("zone", {})), "zone.")


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` → (dotted key, value). The value is TOML if it parses, else a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key, parsed


def describe_fields(cls: type = NodeConfig, prefix: str = "") -> list[tuple[str, str]]:
    """Every config field as (dotted path, documentation), depth first."""
    rows: list[tuple[str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        path = f"{prefix}{f.name}"
        rows.append((path, f.metadata.get("doc", "")))
        section = _section_type(hints[f.name])
        if section is not None:
            rows.extend(describe_fields(section, path + "."))
    return rows


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None


def _resolve(base_dir: Path, value: Path) -> Path:
    value = value.expanduser()
    return value if value.is_absolute() else (base_dir / value).resolve()


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _merge(base: Any, top: Any) -> Any:
    if isinstance(base, dict) and isinstance(top, dict):
        merged = dict(base)
        for key, value in top.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return top


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    target = data
    for i, part in enumerate(parts[:-1]):
        nxt = target.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(parts[:i + 1])}: is not a table, cannot override {dotted}")
        target = nxt
    target[parts[-1]] = value


def _section_type(hint: Any) -> type | None:
    """The dataclass a field holds (directly, optionally, or as tuple items), if any."""
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    for arg in typing.get_args(hint):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def _build(cls: type, table: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "config"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key" + ("" if prefix else " (unknown section)"))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: required")
            continue
        values[name] = _convert(hints[name], table[name], path, f.metadata)
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(hint: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(inner, value, path, meta)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path + ".")  # type: ignore[arg-type]
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        return tuple(_convert(item_hint, item, f"{path}[{i}]", meta) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {_show(value)}")
        value_hint = typing.get_args(hint)[1]
        return {str(k): _convert(value_hint, v, f"{path}.{k}", meta) for k, v in value.items()}
    if hint is bool:
        if type(value) is not bool:
            raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if type(value) is not int:
            raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
        return _check_range(value, path, meta)
    if hint is float:
        if type(value) not in (int, float):
            raise ConfigError(f"{path}: expected a number, got {_show(value)}")
        return _check_range(float(value), path, meta)
    if hint is str:
        if type(value) is not str:
            raise ConfigError(f"{path}: expected a string, got {_show(value)}")
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(meta['choices'])}")
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise ConfigError(f"{path}: {value!r} is not valid (must match {meta['pattern']})")
        return value
    if hint is Path:
        if type(value) is not str or not value:
            raise ConfigError(f"{path}: expected a non-empty path string, got {_show(value)}")
        return Path(value)
    raise TypeError(f"{path}: unsupported config type {hint!r}")


def _check_range(value: Any, path: str, meta: Mapping[str, Any]) -> Any:
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{path}: {value} is below the minimum {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{path}: {value} is above the maximum {meta['max']}")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
