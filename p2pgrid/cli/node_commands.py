"""The ``do_*`` functions of the node commands: ``init``, ``run``, ``status``, ``order place``.

Each takes the parsed ``argparse.Namespace`` and returns an exit code; each raises a
``P2PGridError`` (one line, printed by ``main``) for anything the user or environment got wrong.

How ``order place`` reaches the running node: through the node's **control inbox** (see
``p2pgrid.node``): the command writes an unsigned order request into ``<data_dir>/inbox/`` and
waits for the node's reply file; the node signs the order with its key and gossips it in its next
batch. The command fails with one line if the node is not running or does not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console

from p2pgrid.clock import clock_from_config
from p2pgrid.config import ROLES, NodeConfig, load_config, parse_override
from p2pgrid.units import SlotRules
from p2pgrid.errors import ConfigError, KeystoreError, RpcError
from p2pgrid.identity import NodeKey, load_keystore, save_keystore
from p2pgrid.data_dir import pid_alive
from p2pgrid.node import OrderRequest, inbox_dir, read_status
from p2pgrid.wire import ZONE_PATTERN

CONFIG_FILE = "config.toml"
REPLY_TIMEOUT_S = 10.0
REPLY_POLL_S = 0.05


class NodeNotRunning(RpcError):
    """The command needs a running node and there is none for this data dir."""


class NoReply(RpcError):
    """The running node did not answer a control request in time."""


# --- helpers shared by commands -------------------------------------------------------------

def read_passphrase(path: Path | None) -> bytes | None:
    """The first line of ``path`` (without its newline), or None when no file is given. The file
    must be private to its owner (no group or other permission bits)."""
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        first_line = Path(path).read_bytes().splitlines()[:1]
    except OSError as exc:
        raise KeystoreError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if mode & 0o077:
        # The passphrase guards the keystore; readable by others it guards nothing (ssh refuses
        # such key files for the same reason).
        raise KeystoreError(f"passphrase file {path} is readable by other users (mode {mode:04o}); "
                            f"run: chmod 600 {path}")
    if not first_line or not first_line[0]:
        raise KeystoreError(f"passphrase file {path} is empty")
    return first_line[0]


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """The config named by ``--config``, or ``<--data-dir>/config.toml``, with ``--set`` overrides."""
    overrides = dict(parse_override(text) for text in getattr(args, "set", None) or [])
    path = getattr(args, "config", None)
    if path is None:
        data_dir = getattr(args, "data_dir", None)
        if data_dir is None:
            raise ConfigError("give --config FILE or --data-dir DIR")
        path = Path(data_dir) / CONFIG_FILE
    return load_config(Path(path), overrides)


def load_node_key(config: NodeConfig, passphrase_file: Path | None = None) -> NodeKey:
    passphrase = read_passphrase(passphrase_file or config.node.passphrase_file)
    return load_keystore(config.node.keystore_path, passphrase)


def render_init_config(*, name: str, role: str, zone: str, passphrase_file: Path | None) -> str:
    """The config file ``init`` writes next to the keystore (data_dir "." = the file's directory)."""
    lines = [
        "# Written by `p2pgrid init`. Every key is explained in node-configs/*.toml;",
        "# unknown keys are refused at start-up.",
        "[node]",
        f"name = {json.dumps(name)}",
        'data_dir = "."            # relative to this file: the directory holding it',
        f"role = {json.dumps(role)}",
    ]
    if passphrase_file is not None:
        lines.append(f"passphrase_file = {json.dumps(str(passphrase_file))}")
    lines += [
        "",
        "[zone]",
        f"id = {json.dumps(zone)}",
        "",
        "[network]",
        'listen = ["/ip4/127.0.0.1/tcp/0"]   # 127.0.0.1 only unless you mean to expose the node',
        "bootstrap = []",
        "",
    ]
    return "\n".join(lines)


# --- commands -------------------------------------------------------------------------------

def do_init(args: argparse.Namespace) -> int:
    """Create a data dir with a new keystore (mode 0600) and a config file."""
    import re

    data_dir = Path(args.data_dir).expanduser().resolve()
    if not re.fullmatch(ZONE_PATTERN, args.zone):
        raise ConfigError(f"--zone: {args.zone!r} is not a zone id")
    keystore = data_dir / "node.key"
    config_path = data_dir / CONFIG_FILE
    for existing in (keystore, config_path):
        if existing.exists() and not args.force:
            raise ConfigError(f"{existing} already exists (use --force to replace it)")
    passphrase_file = Path(args.passphrase_file).expanduser().resolve() if args.passphrase_file else None
    passphrase = read_passphrase(passphrase_file)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = NodeKey.generate()
    save_keystore(keystore, key, passphrase)
    name = args.name or data_dir.name or "node"
    config_path.write_text(render_init_config(name=_safe_name(name), role=args.role, zone=args.zone,
                                              passphrase_file=passphrase_file))
    load_config(config_path)   # what we wrote must load
    print(f"account {key.account}")
    print(f"keystore {keystore} ({'sealed with passphrase' if passphrase else 'unsealed'}, mode 0600)")
    print(f"config {config_path}")
    return 0


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:32]
    return cleaned or "node"


def do_run(args: argparse.Namespace) -> int:
    """Run a node until SIGINT/SIGTERM, with a live dashboard unless ``--no-dashboard``."""
    import trio

    from p2pgrid.node import run_libp2p_node

    config = config_from_args(args)
    key = load_node_key(config, args.passphrase_file)
    clock = clock_from_config(config.clock.mode, config.clock.sim_epoch_ms, config.clock.speed,
                              config.clock.anchor_wall_ms)
    dashboard = not args.no_dashboard and sys.stdout.isatty()
    config.node.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = config.node.data_dir / "node.log" if dashboard else None
    from p2pgrid.cli.main import configure_logging

    configure_logging(config.node.log_level, log_file=log_file)
    also = [_live_dashboard] if dashboard else []
    trio.run(lambda: run_libp2p_node(config, key, clock, also=also))
    return 0


async def _live_dashboard(node) -> None:  # type: ignore[no-untyped-def]
    import trio
    from rich.live import Live

    from p2pgrid.cli.dashboard import render_node_dashboard
    from p2pgrid.node_api import dashboard_readings

    def view():  # type: ignore[no-untyped-def]
        return render_node_dashboard(node.status(), *dashboard_readings(node))

    with Live(view(), auto_refresh=False, console=Console()) as live:
        while True:
            live.update(view(), refresh=True)
            await trio.sleep(0.5)


def do_status(args: argparse.Namespace) -> int:
    """Show the running node's status, or its identity and config when it is not running."""
    from p2pgrid.cli.dashboard import render_config_summary, render_node_dashboard

    config = config_from_args(args)
    console = Console()
    status = read_status(config.node.data_dir)
    if status is not None and status.state == "running" and pid_alive(status.pid):
        console.print(render_node_dashboard(status))
        return 0
    account = None
    if args.passphrase_file or config.node.passphrase_file or _keystore_is_plain(config):
        account = load_node_key(config, args.passphrase_file).account
    console.print(render_config_summary(config.node.name, config.node.role, config.zone.id,
                                        str(config.node.data_dir), account))
    return 0


def _keystore_is_plain(config: NodeConfig) -> bool:
    try:
        load_keystore(config.node.keystore_path, None)
    except KeystoreError as exc:
        if "passphrase is needed" in str(exc):
            return False
        raise
    return True


def running_status(config: NodeConfig):  # type: ignore[no-untyped-def]
    status = read_status(config.node.data_dir)
    if status is None or status.state != "running" or not pid_alive(status.pid):
        raise NodeNotRunning(f"no running node for {config.node.data_dir} (start it with `p2pgrid run`)")
    return status


def parse_slot(text: str, rules: SlotRules, market_now_ms: int) -> int:
    """``next`` (first tradable slot), ``+N`` (N slots after that) or a slot start in Unix seconds."""
    tradable = rules.tradable_slots(market_now_ms)
    if text == "next" or text.startswith("+"):
        offset = 0 if text == "next" else _int_arg("--slot", text[1:])
        if offset >= len(tradable):
            raise ConfigError(f"--slot: only {len(tradable)} slots are open for trading")
        return int(tradable[offset])
    slot = _int_arg("--slot", text)
    if not rules.is_tradable(slot, market_now_ms):
        raise ConfigError(f"--slot: {slot} is not open for trading now (try `next`)")
    return slot


def _int_arg(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an integer") from None


def do_order_place(args: argparse.Namespace) -> int:
    """Ask the running node to sign and gossip an order; print its id."""
    config = config_from_args(args)
    status = running_status(config)
    slot = parse_slot(args.slot, config.zone.slot_rules, status.market_now_ms)
    request = OrderRequest(side=args.side, qty_wh=args.qty, price=args.price, slot=slot,
                           green=args.green, source=args.source or "")
    reply = send_control_request(config.node.data_dir, request.to_json(), timeout_s=args.timeout)
    if not reply.get("ok"):
        raise RpcError(f"node refused the order: {reply.get('error', 'no reason given')}")
    print(f"order {reply['order_id']} {args.side} {args.qty} Wh at {args.price} µc/kWh for slot {slot}")
    return 0


def send_control_request(data_dir: Path, payload: str, *, timeout_s: float = REPLY_TIMEOUT_S) -> dict:  # type: ignore[type-arg]
    """Drop ``payload`` in the node's inbox and wait (bounded) for the node's reply."""
    inbox = inbox_dir(data_dir)
    if not inbox.is_dir():
        raise NodeNotRunning(f"node at {data_dir} has no control inbox (is it running?)")
    request_id = uuid.uuid4().hex
    request_path = inbox / f"{request_id}.request.json"
    reply_path = inbox / f"{request_id}.reply.json"
    tmp = inbox / f"{request_id}.tmp"
    tmp.write_text(payload)
    os.replace(tmp, request_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reply_path.exists():
            reply = json.loads(reply_path.read_text())
            reply_path.unlink(missing_ok=True)
            return reply
        time.sleep(REPLY_POLL_S)
    request_path.unlink(missing_ok=True)
    raise NoReply(f"node at {data_dir} did not answer within {timeout_s:g} s")


# --- parser ---------------------------------------------------------------------------------

def add_config_args(parser: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    where = parser.add_mutually_exclusive_group(required=config_required)
    where.add_argument("--config", type=Path, help="node config file (TOML)")
    if not config_required:
        where.add_argument("--data-dir", type=Path, help="node data dir (uses its config.toml)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax), repeatable")
    parser.add_argument("--passphrase-file", type=Path, help="file holding the keystore passphrase")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = subparsers.add_parser("init", help="create keys and a config file in a data dir")
    init.add_argument("--data-dir", required=True, type=Path)
    init.add_argument("--zone", default="local", help="zone id (default: local)")
    init.add_argument("--role", choices=ROLES, default="household")
    init.add_argument("--name", help="node name (default: the data dir's name)")
    init.add_argument("--passphrase-file", help="seal the keystore with the first line of this file")
    init.add_argument("--force", action="store_true", help="replace an existing keystore and config")
    init.set_defaults(func=do_init)

    run = subparsers.add_parser("run", help="run a node (live dashboard on a terminal)")
    add_config_args(run, config_required=True)
    run.add_argument("--no-dashboard", action="store_true", help="log to stderr instead of a dashboard")
    run.set_defaults(func=do_run)

    status = subparsers.add_parser("status", help="show a node's status or identity")
    add_config_args(status)
    status.set_defaults(func=do_status)

    order = subparsers.add_parser("order", help="orders of the running node")
    order_commands = order.add_subparsers(dest="order_command", required=True, metavar="COMMAND")
    place = order_commands.add_parser("place", help="sign and gossip an order through the running node")
    add_config_args(place)
    place.add_argument("--side", required=True, choices=("buy", "sell"))
    place.add_argument("--qty", required=True, type=int, metavar="WH", help="quantity in Wh")
    place.add_argument("--price", required=True, type=int, metavar="MICRO_PER_KWH",
                       help="limit price in µc per kWh")
    place.add_argument("--slot", default="next", help="next, +N, or a slot start in Unix seconds")
    place.add_argument("--green", action="store_true", help="offer green energy (needs a green source)")
    place.add_argument("--source", choices=("pv", "wind", "battery", "grid", "mixed", "none"))
    place.add_argument("--timeout", type=float, default=REPLY_TIMEOUT_S, help="seconds to wait for the node")
    place.set_defaults(func=do_order_place)



