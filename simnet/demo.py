"""``python -m simnet``: community simulations of real nodes (and the plain gossip cluster).

``demo`` — the README demo: ``simnet/scenarios/community.toml`` (12 households, 3 consumers,
1 station and the operator; committee of 4; one simulated day) over real libp2p on 127.0.0.1,
live progress in the terminal, then the end checks, ``kpis.json`` and ``report.html`` in
``simnet-out/`` (or ``--out``).

``up --scenario FILE [--nodes N] [--speed X] [--hours H] [--transport libp2p|memory] [--out DIR]``
— any scenario, with overrides. ``--nodes N`` resizes the community to N nodes in total
(operator included), keeping its mix of households, consumers and stations.

Exit code: 0 when every end check passed, 1 when one failed or the run broke, 2 for bad
arguments, 130 when interrupted (Ctrl-C stops every node cleanly and still writes the report).

``report [DIR]`` — rebuild ``DIR/report.html`` (default ``simnet-out``) from the run's ``kpis.json`` and
``checks.json``.

``study [--scenario station] [--days D] [--out DIR]`` — one representative period per season, then the
annualised investment report of the station (see ``simnet.study``).

``gossip --nodes N --duration S`` — the earlier demo: N nodes gossiping seeded random orders,
no ledger; every node must see every order.
"""

from __future__ import annotations

import argparse
import shlex
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
from p2pgrid.node.status import NodeStatus
from simnet.launcher import Cluster, ClusterError, ClusterSettings, default_specs
from simnet.report import write_report
from simnet.scenario import ScenarioError, check_scenario, load_scenario, resize
from simnet.simulate import simulate
from simnet.study import do_study, register as register_study

DEFAULT_SCENARIO = Path(__file__).parent / "scenarios" / "community.toml"

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
    parser = argparse.ArgumentParser(prog="python -m simnet", description="Local p2pgrid community simulations.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("demo", "the README demo: a trading community over real libp2p"),
                            ("up", "run a scenario file")):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--scenario", default=None if name == "up" else str(DEFAULT_SCENARIO),
                         required=name == "up", help="scenario TOML (see simnet/scenarios/)")
        sub.add_argument("--nodes", type=int, help="resize the community to N nodes (operator included)")
        sub.add_argument("--speed", type=float, help="simulated seconds per real second")
        sub.add_argument("--hours", type=float, help="simulated hours")
        sub.add_argument("--transport", choices=("libp2p", "memory"))
        sub.add_argument("--seed", type=int)
        sub.add_argument("--out", default="simnet-out", help="output directory (default: simnet-out)")
        sub.add_argument("--quiet", action="store_true", help="no live view")
    register_study(commands)
    sub = commands.add_parser("report", help="rebuild report.html of a run from its kpis.json and checks.json")
    sub.add_argument("dir", nargs="?", default="simnet-out", help="the run's output directory (default: simnet-out)")
    for name, nodes, duration, help_text in (("gossip", 5, 60.0, "N nodes gossiping random orders (no ledger)"),):
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


def run_scenario_command(args: argparse.Namespace, argv: list[str]) -> int:
    console = Console()
    try:
        scenario = load_scenario(args.scenario)
        if args.nodes is not None:
            scenario = resize(scenario, args.nodes)
        scenario = scenario.with_overrides(speed=args.speed, hours=args.hours, transport=args.transport,
                                           seed=args.seed)
        check_scenario(scenario)
    except ScenarioError as exc:
        print(f"simnet: {exc}", file=sys.stderr)
        return 2
    result = simulate(scenario, Path(args.out), console=console, live=not args.quiet,
                      command=f"python -m simnet {shlex.join(argv)}")
    return result.exit_code


def do_report(args: argparse.Namespace) -> int:
    """Rebuild a run's report.html from its kpis.json and checks.json."""
    try:
        path = write_report(Path(args.dir))
    except FileNotFoundError as exc:
        print(f"simnet: {args.dir} is not a simnet output directory: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "report":
        return do_report(args)
    if args.command == "study":
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        try:
            return do_study(args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if args.command in ("demo", "up"):
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
        try:
            return run_scenario_command(args, argv)
        finally:
            signal.signal(signal.SIGTERM, previous)
    if args.nodes < 1 or args.duration <= 0:
        print("simnet: --nodes must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    # SIGTERM gets the same clean path as Ctrl-C: the cluster's __exit__ stops every node.
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        return run_cluster(args, settle=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
