"""The ``do_*`` functions of the node commands: ``init``, ``run``, ``status``, ``order place``.

Each takes the parsed ``argparse.Namespace`` and returns an exit code; each raises a
``P2PGridError`` (one line, printed by ``main``) for anything the user or environment got wrong.

How ``order place`` reaches the running node: through the node's **control inbox** (see
``p2pgrid.node.app``): the command writes an unsigned order request into ``<data_dir>/inbox/`` and
waits for the node's reply file; the node signs the order with its key and gossips it in its next
batch. The command fails with one line if the node is not running or does not answer in time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

from rich.console import Console

from p2pgrid.cli.common import (CONFIG_FILE, NodeNotRunning, add_config_args, config_from_args, configure_logging,
                                load_node_key, parse_slot, read_passphrase, running_status)
from p2pgrid.clock import clock_from_config
from p2pgrid.config import ROLES, NodeConfig, load_config
from p2pgrid.data_dir import pid_alive
from p2pgrid.errors import ConfigError, KeystoreError, RpcError
from p2pgrid.identity import NodeKey, load_keystore, save_keystore
from p2pgrid.node.inbox import OrderRequest, inbox_dir
from p2pgrid.node.status import read_status
from p2pgrid.wire import ZONE_PATTERN

REPLY_TIMEOUT_S = 10.0
REPLY_POLL_S = 0.05


class NoReply(RpcError):
    """The running node did not answer a control request in time."""


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

    from p2pgrid.node.app import run_libp2p_node

    config = config_from_args(args)
    key = load_node_key(config, args.passphrase_file)
    clock = clock_from_config(config.clock.mode, config.clock.sim_epoch_ms, config.clock.speed,
                              config.clock.anchor_wall_ms)
    dashboard = not args.no_dashboard and sys.stdout.isatty()
    config.node.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = config.node.data_dir / "node.log" if dashboard else None
    configure_logging(config.node.log_level, log_file=log_file)
    also = [_live_dashboard] if dashboard else []
    trio.run(lambda: run_libp2p_node(config, key, clock, also=also))
    return 0


async def _live_dashboard(node) -> None:  # type: ignore[no-untyped-def]
    import trio
    from rich.live import Live

    from p2pgrid.cli.dashboard import render_node_dashboard
    from p2pgrid.node.api import dashboard_readings

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



