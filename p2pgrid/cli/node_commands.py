"""The ``do_*`` functions of the node commands: ``init``, ``run``, ``status``, ``order place``.

Each takes the parsed ``argparse.Namespace`` and returns an exit code; each raises a
``P2PGridError`` (one line, printed by ``main``) for anything the user or environment got wrong.

``init`` writes a config listening on 127.0.0.1 at a port free at init time (``--port``), with RPC
on, and prints the account, the peer id and the full listen address others bootstrap to.
``status`` renders the running node's dashboard from its status file (``--dev`` adds the developer
counters; ``--full`` prints every id and address whole; ``--json`` the status file itself).

How ``order place`` reaches the running node: through its local JSON-RPC API, like every command
that talks to a running node (``common.open_client``; ``[rpc] enabled = true``, which ``init``
writes): ``order_place`` asks the node to sign the order with its key and gossip it in its next
batch. The order is the one the node's own strategies would make: a sell without ``--source`` is
``mixed``, a buy ``none``, and it expires ``[agent] order_ttl_s`` after now. The command fails with
one line if the node is not running, serves no RPC, refuses the order or does not answer in time;
otherwise it says where the order went (``order_outcome_lines``: peers connected, and that nobody
can take it on a node without a ledger).
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from rich.console import Console

from p2pgrid.cli.common import (RPC_TIMEOUT_S, add_config_args, config_from_args, configure_logging,
                                load_node_key, node_slot, open_client, read_passphrase, running_status)
from p2pgrid.clock import clock_from_config
from p2pgrid.config import ROLES, NodeConfig
from p2pgrid.data_dir import pid_alive
from p2pgrid.errors import ConfigError, KeystoreError, RpcError
from p2pgrid.identity import load_keystore
from p2pgrid.onboarding.node_dir import create_node_dir, refuse_existing
from p2pgrid.node.status import read_status
from p2pgrid.rpc.client import calls
from p2pgrid.rpc.errors import RpcCallError
from p2pgrid.wire import ZONE_PATTERN, Side, Source



# --- commands -------------------------------------------------------------------------------

def do_init(args: argparse.Namespace) -> int:
    """Create a data dir with a new keystore (mode 0600) and a config file."""
    import re

    data_dir = Path(args.data_dir).expanduser().resolve()
    if not re.fullmatch(ZONE_PATTERN, args.zone):
        raise ConfigError(f"--zone: {args.zone!r} is not a zone id")
    refuse_existing(data_dir, force=args.force, preset=False)
    passphrase_file = Path(args.passphrase_file).expanduser().resolve() if args.passphrase_file else None
    passphrase = read_passphrase(passphrase_file)
    new = create_node_dir(data_dir, name=args.name or data_dir.name or "node", role=args.role, zone=args.zone,
                          passphrase=passphrase, passphrase_file=passphrase_file, port=args.port,
                          bootstrap=args.bootstrap, force=args.force)
    print(f"account {new.key.account}")
    print(f"peer id {new.peer_id}")
    print(f"listen {new.address}")
    print(f"keystore {new.keystore} ({'sealed with passphrase' if passphrase else 'unsealed'}, mode 0600)")
    print(f"config {new.config_path} (RPC on 127.0.0.1)")
    print("the listen address is what other nodes put in [network] bootstrap to reach this one")
    return 0


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
    also = [functools.partial(_live_dashboard, developer=args.dev)] if dashboard else []
    trio.run(lambda: run_libp2p_node(config, key, clock, also=also))
    return 0


async def _live_dashboard(node, *, developer: bool = False) -> None:  # type: ignore[no-untyped-def]
    import trio
    from rich.live import Live

    from p2pgrid.cli.dashboard import render_node_dashboard
    from p2pgrid.node.api import dashboard_readings

    console = Console()

    def view():  # type: ignore[no-untyped-def]
        return render_node_dashboard(node.status(), *dashboard_readings(node), developer=developer,
                                     rows=dashboard_rows(console.height))

    with Live(view(), auto_refresh=False, console=console) as live:
        while True:
            live.update(view(), refresh=True)
            await trio.sleep(0.5)


def dashboard_rows(height: int) -> int:
    """Own orders and trades shown each on a terminal ``height`` lines high: what is left after the
    rest of the dashboard (about 22 lines), shared by the two, 1 to 8 each."""
    return min(8, max(1, (height - 22) // 2))


def do_status(args: argparse.Namespace) -> int:
    """Show the running node's dashboard (``--full``: every id and address whole, one per line;
    ``--json``: the status file), or its identity and config when it is not running."""
    from p2pgrid.cli.dashboard import render_config_summary, render_node_dashboard

    config = config_from_args(args)
    console = Console()
    status = read_status(config.node.data_dir)
    if status is not None and status.state == "running" and pid_alive(status.pid):
        if args.json:
            print(status.to_json())
        elif args.full:
            for line in full_identity_lines(status):
                print(line)
        else:
            rows = dashboard_rows(console.height) if console.is_terminal else 8
            console.print(render_node_dashboard(status, developer=args.dev, rows=rows))
        return 0
    account = None
    if args.passphrase_file or config.node.passphrase_file or _keystore_is_plain(config):
        account = load_node_key(config, args.passphrase_file).account
    console.print(render_config_summary(config.node.name, config.node.role, config.zone.id,
                                        str(config.node.data_dir), account))
    return 0


def full_identity_lines(status) -> list[str]:  # type: ignore[no-untyped-def]
    """``status --full``: "key value" lines, nothing abbreviated (for copying into configs)."""
    lines = [f"name {status.name}", f"role {status.role}", f"zone {status.zone}", f"account {status.account}",
             f"peer_id {status.peer_id}"]
    lines += [f"listen {addr}" for addr in status.listen_addrs]
    lines += [f"ledger_height {status.ledger_height}", f"peers {status.peers}"]
    lines += [f"notice {notice}" for notice in status.notices]
    return lines


def _keystore_is_plain(config: NodeConfig) -> bool:
    try:
        load_keystore(config.node.keystore_path, None)
    except KeystoreError as exc:
        if "passphrase is needed" in str(exc):
            return False
        raise
    return True


def do_order_place(args: argparse.Namespace) -> int:
    """Ask the running node, over its local RPC, to sign and gossip an order; print its id and
    where it went (how many peers it was gossiped to; whether anyone can take it)."""
    config = config_from_args(args)
    status = running_status(config)
    side = Side(args.side)
    source = Source(args.source) if args.source else Source.NONE if side is Side.BUY else Source.MIXED
    with open_client(config.node.data_dir, timeout_s=args.timeout) as client:
        info = client.call(calls.node_info())
        slot = node_slot(args.slot, info)
        try:
            order = client.call(calls.order_place(info.zone, slot, side, args.qty, args.price, green=args.green,
                                                  source=source,
                                                  expiry_ms=info.now_ms + config.agent.order_ttl_s * 1000))
        except RpcCallError as exc:
            raise RpcError(f"node refused the order: {exc.message}") from None
        peers = len(client.call(calls.peers_list()))
    print(f"order {order.order_id.hex()} {args.side} {args.qty} Wh at {args.price} µc/kWh for slot {slot}")
    for line in order_outcome_lines(peers=peers, ledger=status.ledger, zone=info.zone):
        print(line)
    return 0


def order_outcome_lines(*, peers: int, ledger: bool, zone: str) -> list[str]:
    """What became of a placed order, said plainly: signed and queued for the node's next gossip
    batch, to how many peers, and whether anyone can take it."""
    lines = [f"signed and queued for the next gossip batch of zone {zone} ({peers} peers connected)"]
    if peers == 0:
        lines.append("no peer is connected: nobody sees this order until one connects "
                     "(check [network] bootstrap; `p2pgrid status`)")
    if not ledger:
        lines.append("this node runs no ledger ([zone] has no validators or gateway_account): peers see the "
                     "order in their books, but nobody can take it and nothing settles")
    return lines


# --- parser ---------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = subparsers.add_parser("init", help="create keys and a config file in a data dir")
    init.add_argument("--data-dir", required=True, type=Path)
    init.add_argument("--zone", default="local", help="zone id (default: local)")
    init.add_argument("--role", choices=ROLES, default="household")
    init.add_argument("--name", help="node name (default: the data dir's name)")
    init.add_argument("--passphrase-file", help="seal the keystore with the first line of this file")
    init.add_argument("--force", action="store_true", help="replace an existing keystore and config")
    init.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: a port free now)")
    init.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                      help="a running node of the zone (/ip4/…/tcp/…/p2p/<peer id>); repeatable, one is enough")
    init.set_defaults(func=do_init)

    run = subparsers.add_parser("run", help="run a node (live dashboard on a terminal)")
    add_config_args(run, config_required=True)
    run.add_argument("--no-dashboard", action="store_true", help="log to stderr instead of a dashboard")
    run.add_argument("--dev", action="store_true", help="show developer counters (gossip, rejects) on the dashboard")
    run.set_defaults(func=do_run)

    status = subparsers.add_parser("status", help="show a node's status or identity")
    add_config_args(status)
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--full", action="store_true", help="ids and listen addresses whole, one per line")
    shown.add_argument("--json", action="store_true", help="the node's status file as JSON")
    shown.add_argument("--dev", action="store_true", help="add the developer counters (gossip, rejects)")
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
    place.add_argument("--timeout", type=float, default=RPC_TIMEOUT_S, help="seconds to wait for the node")
    place.set_defaults(func=do_order_place)



