"""``p2pgrid zone init|invite|approve`` (the operator) and ``p2pgrid join`` (a neighbour).

    p2pgrid zone init --data-dir OP --zone street [--port 4101] [slot, tariff, funding options]
    p2pgrid zone invite --data-dir OP [--out invite.txt]          → one line: the signed join bundle
    p2pgrid join BUNDLE --data-dir HOME --role household [--export-w W] [--port 4102]
                                                                  → one line: the signed join request
    p2pgrid zone approve REQUEST --data-dir OP                    (the operator's node must run)

``zone init`` makes the operator's node the zone's gateway and (by default) its only validator,
and writes the zone preset next to its config. ``invite`` signs the preset and the operator's
bootstrap address (``p2pgrid.onboarding.invite``). ``join`` checks a bundle before writing
anything, then writes the neighbour's keystore, meter key, the zone preset and a config with RPC
on and the bundle's bootstrap addresses, and prints the join request. ``approve`` checks the
request and has the running operator node register the meter with the request's export capacity
and fund the account, through its local RPC (``gateway_approve``; ``p2pgrid.onboarding.api``).
Nobody copies a peer id by hand; discovery finds the rest of the zone from the bootstrap address.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from p2pgrid.cli.common import add_config_args, config_from_args, load_node_key, open_client, read_passphrase
from p2pgrid.config import ROLES, SlotSection, TariffSection, Validator, ZoneSection, load_config
from p2pgrid.errors import ConfigError, RpcError
from p2pgrid.identity import NodeKey, load_keystore
from p2pgrid.node.api import peer_id_base58
from p2pgrid.onboarding.invite import (INVITE_PREFIX, MAX_EXPORT_W, REQUEST_PREFIX, Invite, InvalidInvite, InvalidJoinRequest,
                                       JoinRequest, invite_text, parse_preset, read_invite, read_join_request,
                                       render_preset, request_text)
from p2pgrid.onboarding.node_dir import (CONFIG_FILE, KEYSTORE_FILE, create_node_dir, free_loopback_port,
                                         refuse_existing)
from p2pgrid.rpc.api import ApprovalView
from p2pgrid.rpc.client import Call, RpcCallError
from p2pgrid.units import format_credits
from p2pgrid.wire import ZONE_PATTERN, sign

APPROVE_TIMEOUT_S = 90.0
REQUEST_FILE = "join-request.txt"
TEXT_FORM = "p2pgrid-"          # what every one-line form starts with (INVITE_PREFIX, REQUEST_PREFIX)


class gateway_calls:  # noqa: N801 — a namespace of call builders, as ``p2pgrid.rpc.client.calls``
    @staticmethod
    def gateway_approve(account: bytes, meter_key: bytes, export_w: int, fund_uc: int | None = None) -> Call[ApprovalView]:
        return Call("gateway_approve", {"account": account.hex(), "meter_key": meter_key.hex(), "export_w": export_w,
                                        "fund_uc": fund_uc}, ApprovalView)


# --- zone init ----------------------------------------------------------------------------------

def committee_in_words(n: int) -> str:
    """What a committee of ``n`` validators tolerates, said plainly."""
    f = (n - 1) // 3
    quorum = n - f
    who = "the operator's node alone" if n == 1 else f"{n} validators"
    if f == 0:
        tolerance = ("tolerates no faulty or unreachable validator: while "
                     + ("it" if n == 1 else "any of them") + " is down nothing new is certified "
                     "(trades and settlements wait; nothing certified is lost)")
    else:
        tolerance = f"tolerates {f} faulty or unreachable validator{'s' if f > 1 else ''}"
    more = 3 * (f + 1) + 1
    return (f"{who}: an entry is final with {quorum} of {n} votes; it {tolerance}. "
            f"{more} validators (the operator and neighbours who opt in) would tolerate {f + 1}.")


def parse_validator(text: str) -> Validator:
    """``HEXKEY=MULTIADDR`` of a validator besides the operator (a neighbour who opted in)."""
    key, _, address = text.partition("=")
    if not re.fullmatch(r"[0-9a-f]{64}", key.strip()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected PUBLIC_KEY_HEX=/ip4/…/tcp/…/p2p/<peer id>")
    return Validator(key.strip(), address.strip())


def do_zone_init(args: argparse.Namespace) -> int:
    if not re.fullmatch(ZONE_PATTERN, args.zone):
        raise ConfigError(f"--zone: {args.zone!r} is not a zone id")
    data_dir = Path(args.data_dir).expanduser().resolve()
    refuse_existing(data_dir, force=args.force, preset=True)
    passphrase_file = Path(args.passphrase_file).expanduser().resolve() if args.passphrase_file else None
    passphrase = read_passphrase(passphrase_file)
    for option, value in (("--fund", args.fund), ("--credit-limit", args.credit_limit),
                          ("--settle-delay-ms", args.settle_delay_ms), ("--port", args.port)):
        if value < 0:
            raise ConfigError(f"{option}: must not be negative")
    key = NodeKey.generate()
    port = args.port or free_loopback_port()
    own = Validator(key.account, f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_base58(key.public_key)}")
    others = [v for v in args.validator if v.public_key != key.account]
    zone = ZoneSection(id=args.zone, gateway_account=key.account, credit_limit_uc=args.credit_limit,
                       slots=SlotSection(args.slot_length, args.horizon, args.gate, args.grace),
                       tariffs=TariffSection(args.retail_price, args.feed_in_price),
                       validators=(own, *others))
    if len({v.public_key for v in zone.validators}) != len(zone.validators):
        raise ConfigError("--validator: a validator is named twice")
    zone = parse_preset(render_preset(zone))     # held to the rules every node checks a preset by
    gateway = ["[gateway]", f"fund_uc = {args.fund}   # credits (µc) minted once to each neighbour `zone approve` admits",
               f"settle_delay_ms = {args.settle_delay_ms}   # after a slot's metering deadline, before it is settled", ""]
    new = create_node_dir(data_dir, name=args.name or data_dir.name or "operator", role=args.role, zone=args.zone,
                          passphrase=passphrase, passphrase_file=passphrase_file, port=port,
                          bootstrap=[v.address for v in others if v.address], preset_text=render_preset(zone),
                          extra_lines=gateway, key=key, force=args.force)
    print(f"zone {zone.id}: preset {data_dir / 'zone.toml'}")
    print(f"gateway account {key.account}")
    print(f"peer id {new.peer_id}")
    print(f"bootstrap address {new.address}")
    print(f"config {new.config_path} (RPC on 127.0.0.1)")
    print(f"slots of {zone.slots.length_s} s, trading closes {zone.slots.gate_s} s before a slot, readings due "
          f"{zone.slots.grace_s} s after it; shortfall {zone.tariffs.retail_price} µc/kWh, "
          f"excess {zone.tariffs.feed_in_price} µc/kWh; each neighbour approved gets {format_credits(args.fund)} cr")
    print(f"validators: {committee_in_words(len(zone.validators))}")
    print("next:")
    print(f"  p2pgrid run --config {new.config_path}        # keep the operator's node running")
    print(f"  p2pgrid zone invite --data-dir {data_dir} --out invite.txt   # the join bundle for neighbours")
    print(f"  p2pgrid zone approve REQUEST --data-dir {data_dir}   # for each neighbour's join request")
    return 0


# --- zone invite --------------------------------------------------------------------------------

def do_zone_invite(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    key = load_node_key(config, args.passphrase_file)
    if config.zone.gateway_account != key.account:
        raise ConfigError("this node is not its zone's gateway ([zone] gateway_account): only the operator invites")
    bootstrap = list(args.bootstrap)
    if not bootstrap:
        peer_id = peer_id_base58(key.public_key)
        bootstrap = [f"{addr}/p2p/{peer_id}" for addr in config.network.listen if not addr.endswith("/tcp/0")]
    if not bootstrap:
        raise ConfigError("the operator's node listens on a port chosen at start ([network] listen ends in /tcp/0): "
                          "set a fixed port or give --bootstrap ADDR")
    signed = sign(Invite(key.public_key, config.zone.id, render_preset(config.zone), tuple(bootstrap),
                         int(time.time() * 1000)), key)
    text = invite_text(signed)
    read_invite(text)                       # what we hand out must be joinable
    # With the bundle on stdout (`zone invite > invite.txt`), the notes go to stderr: stdout is the bundle alone.
    notes = sys.stdout if args.out is not None else sys.stderr
    if args.out is not None:
        Path(args.out).write_text(text + "\n")
        print(f"join bundle for zone {config.zone.id} written to {args.out}")
    else:
        print(text, flush=True)
    print(f"operator {key.account[:16]} — a neighbour checks it with `p2pgrid join BUNDLE --operator "
          f"{key.account[:16]} …`", file=notes, flush=True)
    return 0


# --- join ---------------------------------------------------------------------------------------

def read_text_arg(value: str, prefix: str, what: str, error: type[ConfigError]) -> str:
    """``value`` itself when it is a one-line form (``p2pgrid-…:``), else the content of the file it names."""
    if value.strip().startswith(TEXT_FORM):
        return value
    try:
        return Path(value).expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{value!r} is neither a {what} ({prefix}…) nor a readable file: "
                    f"{getattr(exc, 'strerror', None) or exc}") from None


def kept_identity(data_dir: Path, passphrase: bytes | None, port: int) -> tuple[NodeKey, int]:
    """``join --keep-key``: the key of the node ``p2pgrid init`` made in ``data_dir`` (a neighbour
    who opted in as a validator gave the operator its account and address before the zone
    existed), and the fixed port its config listens on unless ``--port`` names one."""
    key = load_keystore(data_dir / KEYSTORE_FILE, passphrase)
    if not port:
        try:
            listen = load_config(data_dir / CONFIG_FILE).network.listen
        except ConfigError:
            listen = ()
        ports = [int(m.group(1)) for m in (re.search(r"/tcp/(\d+)$", a) for a in listen) if m]
        port = next((p for p in ports if p), 0)
    return key, port


def do_join(args: argparse.Namespace) -> int:
    from p2pgrid.settlement.service import load_or_create_meter_key

    invite = read_invite(read_text_arg(args.bundle, INVITE_PREFIX, "join bundle", InvalidInvite),
                         zone=args.zone, operator_prefix=args.operator).body
    data_dir = Path(args.data_dir).expanduser().resolve()
    refuse_existing(data_dir, force=args.force, preset=True, keep_key=args.keep_key)
    passphrase_file = Path(args.passphrase_file).expanduser().resolve() if args.passphrase_file else None
    passphrase = read_passphrase(passphrase_file)
    key, port = kept_identity(data_dir, passphrase, args.port) if args.keep_key else (None, args.port)
    export_w = args.export_w if args.export_w is not None else (0 if args.role == "consumer" else args.pv_w)
    for option, value in (("--export-w", export_w), ("--pv-w", args.pv_w), ("--battery-wh", args.battery_wh),
                          ("--port", args.port)):
        if not 0 <= value <= MAX_EXPORT_W:
            raise ConfigError(f"{option}: {value} is out of range (0 to {MAX_EXPORT_W})")
    name = args.name or data_dir.name or "node"
    new = create_node_dir(data_dir, name=name, role=args.role, zone=invite.zone, passphrase=passphrase,
                          passphrase_file=passphrase_file, port=port, bootstrap=invite.bootstrap,
                          preset_text=invite.preset, key=key, force=args.force or args.keep_key)
    meter = load_or_create_meter_key(data_dir, new.config.devices.meter.key_file)
    request = sign(JoinRequest(new.key.public_key, meter.public_key, invite.zone, new.config.node.name, args.role,
                               export_w, args.pv_w, args.battery_wh, int(time.time() * 1000)), new.key)
    text = request_text(request)
    request_path = Path(args.request_out).expanduser() if args.request_out else data_dir / REQUEST_FILE
    request_path.write_text(text + "\n")
    print(f"joined zone {invite.zone} (operator {invite.operator.hex()[:16]}): config {new.config_path}")
    print(f"account {new.key.account}")
    print(f"meter key {meter.account}")
    print(f"peer id {new.peer_id}")
    print(f"listen {new.address}")
    print(f"export capacity {export_w} W" + ("" if export_w else " (this node can buy, not sell: --export-w)"))
    print(f"send this join request to the operator (also in {request_path}):")
    print(text)
    print(f"then start the node: p2pgrid run --config {new.config_path}")
    return 0


# --- zone approve -------------------------------------------------------------------------------

def do_zone_approve(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    signed = read_join_request(read_text_arg(args.request, REQUEST_PREFIX, "join request", InvalidJoinRequest),
                               zone=config.zone.id)
    request = signed.body
    if config.zone.gateway_account != "" and config.zone.gateway_account == request.account.hex():
        raise InvalidJoinRequest("the join request is the gateway's own account")
    with open_client(config.node.data_dir, timeout_s=args.timeout) as client:
        try:
            approval = client.call(gateway_calls.gateway_approve(request.account, request.meter_key, request.export_w,
                                                                 args.fund))
        except RpcCallError as exc:
            raise RpcError(f"not approved: {exc.message}") from None
    print(f"approved {request.name} ({request.role}) in zone {request.zone}")
    print(f"account {approval.account.hex()}")
    print(f"meter key {approval.meter_key.hex()} registered, export capacity {approval.export_w} W")
    print(f"funded {format_credits(approval.funded_uc)} cr" if approval.funded_uc else "funded nothing now")
    return 0


# --- parser -------------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    zone = subparsers.add_parser("zone", help="the zone operator: create a zone, invite and approve neighbours")
    commands = zone.add_subparsers(dest="zone_command", required=True, metavar="COMMAND")

    init = commands.add_parser("init", help="create the operator's node and the zone preset")
    init.add_argument("--data-dir", required=True, type=Path)
    init.add_argument("--zone", required=True, help="zone id (lowercase letters, digits, -)")
    init.add_argument("--name", help="node name (default: the data dir's name)")
    init.add_argument("--role", choices=ROLES, default="household")
    init.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a port free now)")
    init.add_argument("--passphrase-file", help="seal the keystore with the first line of this file")
    init.add_argument("--force", action="store_true", help="replace an existing keystore, config and preset")
    defaults_slots, defaults_tariffs = SlotSection(), TariffSection()
    init.add_argument("--slot-length", type=int, default=defaults_slots.length_s, metavar="S",
                      help="delivery slot length, seconds (divides a day; default 900)")
    init.add_argument("--horizon", type=int, default=defaults_slots.horizon_s, metavar="S",
                      help="trading for a slot opens this long before it (default 86400)")
    init.add_argument("--gate", type=int, default=defaults_slots.gate_s, metavar="S",
                      help="trading closes this long before a slot (default 300)")
    init.add_argument("--grace", type=int, default=defaults_slots.grace_s, metavar="S",
                      help="meter readings are due this long after a slot (default 300)")
    init.add_argument("--retail-price", type=int, default=defaults_tariffs.retail_price, metavar="MICRO_PER_KWH",
                      help="what a shortfall costs, µc/kWh")
    init.add_argument("--feed-in-price", type=int, default=defaults_tariffs.feed_in_price, metavar="MICRO_PER_KWH",
                      help="what an excess earns, µc/kWh")
    init.add_argument("--credit-limit", type=int, default=0, metavar="UC", help="how far below zero a balance may go, µc")
    init.add_argument("--fund", type=int, default=0, metavar="UC", help="credits minted to each approved neighbour, µc")
    init.add_argument("--settle-delay-ms", type=int, default=30_000, metavar="MS",
                      help="wait after a slot's metering deadline before settling it (default 30000)")
    init.add_argument("--validator", action="append", type=parse_validator, default=[], metavar="KEY=ADDR",
                      help="another validator (a neighbour who opted in): public key hex = its multiaddr; repeatable")
    init.set_defaults(func=do_zone_init)

    invite = commands.add_parser("invite", help="print the signed join bundle for neighbours")
    add_config_args(invite)
    invite.add_argument("--out", type=Path, help="write the bundle to this file instead of printing it")
    invite.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                        help="address(es) to hand out (default: the operator node's listen addresses)")
    invite.set_defaults(func=do_zone_invite)

    approve = commands.add_parser("approve", help="register a neighbour's meter and fund it (operator node running)")
    approve.add_argument("request", metavar="REQUEST", help="the join request line, or a file holding it")
    add_config_args(approve)
    approve.add_argument("--fund", type=int, default=None, metavar="UC",
                         help="credits to mint to the neighbour, µc (default: the zone's [gateway] fund_uc)")
    approve.add_argument("--timeout", type=float, default=APPROVE_TIMEOUT_S,
                         help="seconds to wait for the entries to be certified")
    approve.set_defaults(func=do_zone_approve)

    join = subparsers.add_parser("join", help="join a zone from the operator's join bundle")
    join.add_argument("bundle", metavar="BUNDLE", help="the join bundle line, or a file holding it")
    join.add_argument("--data-dir", required=True, type=Path)
    join.add_argument("--role", choices=ROLES, default="household")
    join.add_argument("--name", help="node name (default: the data dir's name)")
    join.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a port free now)")
    join.add_argument("--export-w", type=int, default=None, metavar="W",
                      help="what the connection can feed into the grid, W (default: --pv-w; consumers 0)")
    join.add_argument("--pv-w", type=int, default=0, metavar="W", help="PV inverter nameplate, W")
    join.add_argument("--battery-wh", type=int, default=0, metavar="WH", help="battery capacity, Wh")
    join.add_argument("--zone", help="refuse a bundle of any other zone")
    join.add_argument("--operator", metavar="HEX", help="refuse a bundle not signed by this operator (≥ 8 hex digits)")
    join.add_argument("--request-out", metavar="FILE", help=f"where to write the join request (default DATA_DIR/{REQUEST_FILE})")
    join.add_argument("--passphrase-file", help="seal the keystore with the first line of this file")
    join.add_argument("--force", action="store_true", help="replace an existing keystore, config and preset")
    join.add_argument("--keep-key", action="store_true",
                      help="keep the keystore (and port) `p2pgrid init` made in DATA_DIR: for a neighbour named "
                           "as a validator at `zone init`")
    join.set_defaults(func=do_join)
