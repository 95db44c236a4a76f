"""``python -m simnet demo`` and ``python -m simnet up``: a live local cluster in the terminal.

``demo`` (what ``make demo`` runs): 5 real node processes on 127.0.0.1 with a scaled clock
(60× by default); each one's random agent places a few seeded orders per tick for the slots open
for trading, and gossips them as signed order batches. A live table shows each node's peers,
orders published and seen, and rejects. The agents stop a few seconds before the end so the table
settles: every node should have seen every order. Then all nodes are stopped (SIGTERM, clean
exit) and a summary is printed. Ctrl-C stops everything cleanly at any moment.

``up --nodes N --duration S``: the same cluster without the agents' stop, for poking at with
``p2pgrid status --data-dir <out>/<node>`` and ``p2pgrid order place --data-dir …``.

Exit code: 0 when every node ran and exited cleanly (and, for ``demo``, saw every order), else 1.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live

from p2pgrid.cli.dashboard import format_market_time, render_cluster
from p2pgrid.node import NodeStatus
from simnet.launcher import Cluster, ClusterError, ClusterSettings, default_specs

SETTLE_S = 8.0
EXIT_INTERRUPTED = 130
REFRESH_S = 0.5


def coverage(statuses: Sequence[NodeStatus | None]) -> tuple[int, list[int]]:
    """(orders published in total, orders seen by each node)."""
    published = sum(s.orders_published for s in statuses if s is not None)
    return published, [s.orders_seen if s is not None else 0 for s in statuses]


def caption_for(statuses: Sequence[NodeStatus | None], remaining_s: float) -> str:
    published, seen = coverage(statuses)
    complete = sum(1 for n in seen if published and n >= published)
    market = next((format_market_time(s.market_now_ms) for s in statuses if s is not None), "")
    return (f"market time {market}\n{published} orders · {complete}/{len(seen)} nodes saw all · "
            f"{max(0.0, remaining_s):.0f} s left · Ctrl-C stops")


def run_cluster(args: argparse.Namespace, *, settle: bool) -> int:
    console = Console()
    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="p2pgrid-simnet-"))
    ticks = max(1, int((args.duration - SETTLE_S) * 1000 // args.tick_ms)) if settle else 0
    settings = ClusterSettings(speed=args.speed, tick_ms=args.tick_ms, orders_per_tick=args.orders_per_tick,
                               max_orders=ticks * args.orders_per_tick)
    cluster = Cluster(out_dir, default_specs(args.nodes, args.seed), settings)
    console.print(f"starting {args.nodes} nodes on 127.0.0.1 (data in {out_dir}"
                  f"{'' if args.out else ', removed after a clean run'}) …")
    try:
        with cluster:
            cluster.start(timeout_s=args.start_timeout)
            console.print(f"all {args.nodes} nodes connected; trading at {args.speed:g}× speed for {args.duration:g} s")
            if not settle:
                console.print(f"try: p2pgrid status --data-dir {cluster.nodes[0].data_dir}")
            deadline = time.monotonic() + args.duration
            with Live(console=console, auto_refresh=False) as live:
                while time.monotonic() < deadline:
                    cluster.check_alive()
                    statuses = cluster.statuses()
                    live.update(render_cluster(statuses, cluster.names,
                                               caption=caption_for(statuses, deadline - time.monotonic())),
                                refresh=True)
                    time.sleep(REFRESH_S)
            console.line()
    except ClusterError as exc:
        console.print(f"[red]simnet: {exc}[/red]")
        console.print(f"node data and logs: {out_dir}")
        return 1
    except KeyboardInterrupt:
        console.line()
        console.print("interrupted: all nodes stopped")
        return EXIT_INTERRUPTED
    exits = cluster.clean_exits()
    final = cluster.statuses()          # each node's last word, written as it stopped
    console.print(render_cluster(final, cluster.names, title="final state"))
    published, seen = coverage(final)
    ok = all(code == 0 for code in exits.values())
    console.print(f"node exit codes: {', '.join(f'{n}={c}' for n, c in exits.items())}")
    if settle:
        everywhere = all(n >= published for n in seen)
        console.print(f"{published} signed orders gossiped; every node saw all of them: {'yes' if everywhere else 'NO'}")
        ok = ok and everywhere
    if ok and not args.out:
        shutil.rmtree(out_dir, ignore_errors=True)
    else:
        console.print(f"node data, logs and status files: {out_dir}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simnet", description="Local p2pgrid clusters.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, nodes, duration, help_text in (("demo", 5, 60.0, "the README demo: 5 nodes gossiping orders"),
                                             ("up", 5, 60.0, "start a cluster for a while")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--nodes", type=int, default=nodes)
        sub.add_argument("--duration", type=float, default=duration, help="seconds to run (real time)")
        sub.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
        sub.add_argument("--tick-ms", type=int, default=1000, help="agent decision interval (real ms)")
        sub.add_argument("--orders-per-tick", type=int, default=2)
        sub.add_argument("--seed", type=int, default=1)
        sub.add_argument("--out", help="keep node data dirs here (default: a new temp dir)")
        sub.add_argument("--start-timeout", type=float, default=90.0)
    return parser


def _terminate_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.nodes < 1 or args.duration <= 0:
        print("simnet: --nodes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    # SIGTERM gets the same clean path as Ctrl-C: the cluster's __exit__ stops every node.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return run_cluster(args, settle=args.command == "demo")
    finally:
        signal.signal(signal.SIGTERM, previous)
