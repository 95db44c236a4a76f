"""``p2pgrid invest …``: what an installation earns, from certified ledger entries of simnet runs
or of a real node.

    p2pgrid invest report    --account NAME|HEX (--from [SEASON=]SIMNET_OUT … | --data-dir [SEASON=]DIR …)
                             [--config NODE.toml] [--ledger-of NODE] [--out DIR]
    p2pgrid invest statement --account NAME|HEX (--from SIMNET_OUT | --data-dir DIR) [--start T] [--end T]

``--data-dir`` reads a real node's ledger copy (``<DIR>/ledger.sqlite``, ``read_node_ledger``): the
account is a hex key or a unique prefix of a chain in it, and the time covered is from the first to
the last certified entry.

``statement`` prints one account's cash-flow statement for the market-time period ``[start, end)``
(T is an ISO date/time in UTC or Unix seconds; either end may be left open).

Each ``--from`` is a simnet output dir, optionally labelled with the season it stands for
(``winter``, ``spring``, ``summer``, ``autumn``; unlabelled means ``spring``); several runs are
annualised by season (see ``p2pgrid.invest.statement.annualise``). The investment terms come from the
``[invest]`` section of ``--config`` (defaults: a 300 kWp / 200 kWh station). Writes
``report.html``, ``figures.json`` and ``plots/`` into ``--out`` (default ``<first run>/invest``).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from rich.console import Console
from rich.table import Table

from p2pgrid.cli import shares
from p2pgrid.cli.common import parse_time, resolve_account
from p2pgrid.config import InvestSection, load_config
from p2pgrid.errors import ConfigError
from p2pgrid.invest.report import InvestReport, build_report, read_node_ledger, read_run, write_report
from p2pgrid.invest.statement import SEASON_DAYS, STREAMS, InvestTerms, Statement, account_flows, statement
from p2pgrid.units import format_credits


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    invest = subparsers.add_parser("invest", help="investment figures from certified ledger entries")
    commands = invest.add_subparsers(dest="invest_command", required=True, metavar="COMMAND")
    report = commands.add_parser("report", help="cash-flow statement, NPV/IRR/payback, HTML + JSON report")
    report.add_argument("--account", required=True, help="participant name, public key hex or unique prefix")
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="runs", action="append", metavar="[SEASON=]SIMNET_OUT",
                        help="a simnet output dir; repeat with season labels to annualise over seasons")
    source.add_argument("--data-dir", dest="node_dirs", action="append", metavar="[SEASON=]DIR",
                        help="a real node's data dir (its ledger.sqlite); repeatable like --from")
    report.add_argument("--config", type=Path, help="node config whose [invest] section holds the terms")
    report.add_argument("--ledger-of", dest="ledger_of", metavar="NODE",
                        help="read the ledger copy of this node (default: the account's own node)")
    report.add_argument("--out", type=Path, help="output dir (default: <first run or data dir>/invest)")
    report.set_defaults(func=do_report)

    stmt = commands.add_parser("statement", help="one account's cash-flow statement by stream for a period")
    stmt.add_argument("--account", required=True, help="participant name, public key hex or unique prefix")
    stmt_source = stmt.add_mutually_exclusive_group(required=True)
    stmt_source.add_argument("--from", dest="run", type=Path, metavar="SIMNET_OUT")
    stmt_source.add_argument("--data-dir", dest="node_dir", type=Path, metavar="DIR", help="a real node's data dir")
    stmt.add_argument("--start", type=parse_time, help="period start (ISO UTC or Unix s), inclusive")
    stmt.add_argument("--end", type=parse_time, help="period end (ISO UTC or Unix s), exclusive")
    stmt.add_argument("--ledger-of", dest="ledger_of", metavar="NODE")
    stmt.set_defaults(func=do_statement)

    shares.add_parser(commands)    # ``invest shares``: the offline side of the shares commands


def parse_run(text: str) -> tuple[str, Path]:
    """``summer=runs/jul`` → ("summer", Path("runs/jul")); a bare path is spring."""
    season, sep, path = text.partition("=")
    if not sep:
        return "spring", Path(text)
    if season not in SEASON_DAYS:
        raise ConfigError(f"--from {text!r}: season must be one of {', '.join(SEASON_DAYS)}")
    return season, Path(path)


def terms_of(section: InvestSection) -> InvestTerms:
    return InvestTerms(section.capex_uc, section.opex_uc_per_year, section.lifetime_years,
                       section.degradation_per_year, section.discount_rate)


def do_report(args: argparse.Namespace) -> int:
    section = load_config(args.config).invest if args.config else InvestSection()
    if args.node_dirs:
        runs = [read_node_ledger(path, _chooser(args.account), season) for season, path in map(parse_run, args.node_dirs)]
    else:
        runs = [read_run(path, args.account, season, args.ledger_of) for season, path in map(parse_run, args.runs)]
    report = build_report(runs, terms_of(section))
    out = args.out or runs[0].out_dir / "invest"
    html_path, json_path = write_report(report, out)
    console = Console()
    console.print(render_summary(report))
    console.print(f"report: {html_path}\nfigures: {json_path}")
    return 0


def _chooser(text: str):  # type: ignore[no-untyped-def]
    """The account ``text`` names (hex key or unique prefix) among a node ledger's accounts."""
    return lambda known: resolve_account(text, known)


def do_statement(args: argparse.Namespace) -> int:
    run = (read_node_ledger(args.node_dir, _chooser(args.account)) if args.node_dir is not None
           else read_run(args.run, args.account, node=args.ledger_of))
    flows = account_flows(run.entries, run.rules, run.account)
    Console().print(render_statement(statement(flows, args.start, args.end), flows.balance_uc))
    return 0


def render_statement(st: Statement, ledger_balance_uc: int) -> Table:
    def when(t: int | None) -> str:
        return "…" if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")

    table = Table(title=f"statement · {st.account.hex()[:16]}… · {when(st.start_s)} → {when(st.end_s)}")
    table.add_column("stream")
    table.add_column("group")
    table.add_column("credits", justify="right")
    table.add_column("kWh", justify="right")
    for s in STREAMS:
        table.add_row(s.label, s.group, format_credits(st.streams[s.key]), f"{st.energy_wh[s.key] / 1000:.3f}")
    table.add_row("operating net", "", format_credits(st.operating_net_uc), "")
    table.add_row("opening balance", "", format_credits(st.opening_uc), "")
    table.add_row("net change", "", format_credits(st.net_uc), "")
    table.add_row("closing balance", "", format_credits(st.closing_uc), "")
    if st.end_s is None:
        table.add_row("ledger balance", "", format_credits(ledger_balance_uc),
                      "ok" if ledger_balance_uc == st.closing_uc else "MISMATCH")
    return table


def render_summary(report: InvestReport) -> Table:
    table = Table(title=f"invest · {report.account.hex()[:16]}…", show_header=False)
    annual = report.annual
    fig = report.base
    table.add_row("annual revenue", f"{annual.revenue_uc / 1e6:,.2f} credits")
    table.add_row("annual costs", f"{annual.costs_uc / 1e6:,.2f} credits")
    table.add_row("NPV", f"{fig.npv_uc / 1e6:,.2f} credits")
    table.add_row("IRR", "none" if fig.irr is None else f"{fig.irr:.2%}")
    table.add_row("payback", "never" if fig.payback_years is None else f"{fig.payback_years:.1f} years")
    reconciled = all(s.reconciled and s.closing_uc == f.balance_uc for s, f in zip(report.statements, report.flows))
    table.add_row("reconciled with ledger", "yes, to the µc" if reconciled else "NO")
    return table
