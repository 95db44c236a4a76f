"""``p2pgrid invest shares``: an account's pool shares, from the certified ledger of a simnet run.

    p2pgrid invest shares --account NAME|HEX --from SIMNET_OUT [--ledger-of NODE] [--at T]

As a liquidity provider: per programme its host, shares (and how many earn this period), the
lock-up and whether it is over at ``--at`` (ISO UTC or Unix s; default: the end of the run),
principal paid in and back, fee income received and what one share earned. As a host: the
programmes it runs and what it paid its LPs. The money lines are the account's ``share_income``,
``share_payouts`` and ``share_capital`` streams (``p2pgrid.invest``); "reconciled" says the
positions and the streams agree to the µc.

Register it under ``p2pgrid invest`` with ``shares.add_parser(commands)``, where ``commands`` is
the ``invest`` command's sub-parsers.
"""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console, Group
from rich.table import Table

from p2pgrid.cli.invest import parse_time
from p2pgrid.invest import ShareStatement, share_statement
from p2pgrid.units import MS_PER_S, format_credits


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = subparsers.add_parser("shares", help="pool shares held (as LP) and hosted, with fee income")
    parser.add_argument("--account", required=True, help="participant name, public key hex or unique prefix")
    parser.add_argument("--from", dest="run", required=True, metavar="SIMNET_OUT", help="a simnet output dir")
    parser.add_argument("--ledger-of", dest="ledger_of", metavar="NODE",
                        help="read the ledger copy of this node (default: the account's own node)")
    parser.add_argument("--at", type=parse_time, metavar="T",
                        help="judge lock-ups at this time (ISO UTC or Unix s; default: the end of the run)")
    parser.set_defaults(func=do_shares)
    return parser


def do_shares(args: argparse.Namespace) -> int:
    from p2pgrid.invest_report import read_run

    run = read_run(args.run, args.account, node=args.ledger_of)
    at_ms = args.at * MS_PER_S if args.at is not None else run.end_ms
    Console().print(render_shares(share_statement(run.entries, run.rules, run.account), at_ms))
    return 0


def _slot_time(slot: int) -> str:
    return dt.datetime.fromtimestamp(slot, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def render_shares(statement: ShareStatement, at_ms: int) -> Group:
    """The account's share positions and hosted programmes, and the money lines."""
    parts: list[Table] = []
    held = Table(title=f"pool shares held · {statement.account.hex()[:16]}…")
    for column in ("programme", "host", "shares", "earning", "locked until (UTC)", "principal", "income",
                   "income/share"):
        held.add_column(column, justify="left" if column in ("programme", "host", "locked until (UTC)") else "right")
    for p in statement.positions:
        lock = _slot_time(p.lockup_until_slot) + (" (locked)" if p.is_locked(at_ms) else " (free)")
        held.add_row(p.programme_id.hex()[:12], p.host.hex()[:12], str(p.shares), str(p.earning_shares), lock,
                     format_credits(p.principal_uc), format_credits(p.income_uc),
                     f"{p.income_per_share_uc:,.1f} µc")
    if not statement.positions:
        held.add_row("none", "", "", "", "", "", "", "")
    parts.append(held)
    if statement.hosted:
        hosted = Table(title="programmes hosted")
        for column in ("programme", "shares / cap", "LPs", "fee share", "price", "pool fees counted", "paid to LPs",
                       "payouts"):
            hosted.add_column(column, justify="left" if column == "programme" else "right")
        for h in statement.hosted:
            hosted.add_row(h.programme_id.hex()[:12], f"{h.outstanding_shares} / {h.cap_shares}", str(h.holders),
                           f"{h.fee_share_bps / 100:.2f} %", format_credits(h.price_uc),
                           format_credits(h.fees_counted_uc), format_credits(h.paid_uc), str(h.payouts))
        parts.append(hosted)
    money = Table(show_header=False, title="money")
    money.add_row("fee income as LP", format_credits(statement.income_uc))
    money.add_row("paid to LPs as host", format_credits(statement.payouts_uc))
    money.add_row("share capital in (+) / out (−)", format_credits(statement.capital_uc))
    money.add_row("reconciled with positions", "yes, to the µc" if statement.reconciled else "NO")
    parts.append(money)
    return Group(*parts)
