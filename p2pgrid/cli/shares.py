"""Pool shares from the command line: ``p2pgrid shares …`` through the running node, and
``p2pgrid invest shares`` from the certified ledger of a simnet run.

    p2pgrid shares list       --data-dir DIR                      programmes: terms, shares left
    p2pgrid shares buy ID N   --data-dir DIR [--wait S]           buy N shares; the host issues them
    p2pgrid shares exit ID N  --data-dir DIR                      ask the host to redeem N at par
    p2pgrid shares positions  --data-dir DIR                      this node's shares and income

These are clients of the node's local JSON-RPC API (``shares_programmes``, ``shares_buy``,
``shares_exit``, ``shares_positions``; ``[rpc] enabled = true``), as ``p2pgrid trade`` is. ``ID``
may be a unique prefix of a programme id (as ``list`` prints it). Register them with
``register(subparsers)`` (``p2pgrid.cli.main``).

``p2pgrid invest shares``:

    p2pgrid invest shares --account NAME|HEX --from SIMNET_OUT [--ledger-of NODE] [--at T]

As a liquidity provider: per programme its host, shares (and how many earn this period), the
lock-up and whether it is over at ``--at`` (ISO UTC or Unix s; default: the end of the run),
principal paid in and back, fee income received and what one share earned. As a host: the
programmes it runs and what it paid its LPs. The money lines are the account's ``share_income``,
``share_payouts`` and ``share_capital`` streams (``p2pgrid.invest.statement``); "reconciled" says the
positions and the streams agree to the µc.

Register it under ``p2pgrid invest`` with ``shares.add_parser(commands)``, where ``commands`` is
the ``invest`` command's sub-parsers.
"""

from __future__ import annotations

import argparse
import datetime as dt

from rich.console import Console, Group
from rich.table import Table

from pathlib import Path
from typing import Any

from p2pgrid.cli.common import open_client, parse_time
from p2pgrid.errors import P2PGridError
from p2pgrid.invest.statement import ShareStatement, share_statement
from p2pgrid.rpc.api import ShareBuyView, ShareExitView, SharePositionView, ShareProgrammeView
from p2pgrid.rpc.client import Call
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
    from p2pgrid.invest.report import read_run

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


# --- p2pgrid shares list|buy|exit|positions (through the running node) ------------------------------

class share_calls:  # noqa: N801 — a namespace of call builders, as ``p2pgrid.rpc.client.calls``
    """The share methods' ``Call``s (arguments as in API.md)."""

    @staticmethod
    def shares_programmes() -> Call[list[ShareProgrammeView]]:
        return Call("shares_programmes", {}, list[ShareProgrammeView])

    @staticmethod
    def shares_buy(programme_id: bytes, shares: int, wait_s: int = 10) -> Call[ShareBuyView]:
        return Call("shares_buy", {"programme_id": programme_id.hex(), "shares": shares, "wait_s": wait_s},
                    ShareBuyView)

    @staticmethod
    def shares_exit(programme_id: bytes, shares: int) -> Call[ShareExitView]:
        return Call("shares_exit", {"programme_id": programme_id.hex(), "shares": shares}, ShareExitView)

    @staticmethod
    def shares_positions() -> Call[list[SharePositionView]]:
        return Call("shares_positions", {}, list[SharePositionView])


class UnknownProgrammePrefix(P2PGridError):
    """No programme, or more than one, starts with the given id prefix."""


def resolve_programme(prefix: str, programmes: list[ShareProgrammeView]) -> bytes:
    """The programme id ``prefix`` (hex) names uniquely among ``programmes``."""
    wanted = prefix.lower()
    matches = [p.programme_id for p in programmes if p.programme_id.hex().startswith(wanted)]
    if len(matches) != 1:
        known = ", ".join(p.programme_id.hex()[:12] for p in programmes) or "none"
        raise UnknownProgrammePrefix(f"{len(matches)} programmes match {prefix!r} (known: {known})")
    return matches[0]


def render_programmes(programmes: list[ShareProgrammeView]) -> Table:
    table = Table(title="share programmes")
    for column in ("programme", "host", "price", "fee share", "shares / cap", "left", "LPs", "sale",
                   "locked until (UTC)", "paid to LPs"):
        table.add_column(column, justify="left" if column in ("programme", "host", "sale", "locked until (UTC)")
                         else "right")
    for p in programmes:
        table.add_row(p.programme_id.hex()[:12], p.host.hex()[:12], format_credits(p.price_uc),
                      f"{p.fee_share_bps / 100:.2f} %", f"{p.outstanding_shares} / {p.cap_shares}",
                      str(p.available_shares), str(p.holders), "open" if p.sale_open else "closed",
                      _slot_time(p.lockup_until_slot), format_credits(p.paid_uc))
    if not programmes:
        table.add_row("none", "", "", "", "", "", "", "", "", "")
    return table


def render_buy(buy: ShareBuyView) -> Table:
    table = Table(show_header=False, title=f"purchase {buy.buy_id.hex()[:12]}")
    table.add_row("programme", buy.programme_id.hex()[:12])
    table.add_row("shares", str(buy.shares))
    table.add_row("paid into escrow", format_credits(buy.amount_uc))
    table.add_row("status", buy.status.value)
    return table


def render_exit(view: ShareExitView) -> Table:
    table = Table(show_header=False, title=f"exit requests · programme {view.programme_id.hex()[:12]}")
    table.add_row("asked to redeem", str(view.requested_shares))
    table.add_row("redeemed in answer", str(view.answered_shares))
    table.add_row("pending", str(view.pending_shares))
    table.add_row("redeemable from (UTC)", _slot_time(view.redeemable_from_ms // MS_PER_S))
    return table


def render_positions(positions: list[SharePositionView]) -> Table:
    table = Table(title="my pool shares")
    for column in ("programme", "host", "shares", "earning", "locked until (UTC)", "principal", "income",
                   "exit pending"):
        table.add_column(column, justify="left" if column in ("programme", "host", "locked until (UTC)") else "right")
    for p in positions:
        lock = _slot_time(p.lockup_until_slot) + (" (locked)" if p.locked else " (free)")
        table.add_row(p.programme_id.hex()[:12], p.host.hex()[:12], str(p.shares), str(p.earning_shares), lock,
                      format_credits(p.shares * p.price_uc), format_credits(p.income_uc), str(p.pending_exit_shares))
    if not positions:
        table.add_row("none", "", "", "", "", "", "", "")
    return table


def _client(args: argparse.Namespace) -> Any:
    return open_client(args.data_dir)


def do_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        programmes = client.call(share_calls.shares_programmes())
    Console().print(render_programmes(programmes))
    return 0


def do_buy(args: argparse.Namespace) -> int:
    with _client(args) as client:
        programme_id = resolve_programme(args.programme, client.call(share_calls.shares_programmes()))
        buy = client.call(share_calls.shares_buy(programme_id, args.shares, args.wait))
    Console().print(render_buy(buy))
    return 0


def do_exit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        programme_id = resolve_programme(args.programme, client.call(share_calls.shares_programmes()))
        view = client.call(share_calls.shares_exit(programme_id, args.shares))
    Console().print(render_exit(view))
    return 0


def do_positions(args: argparse.Namespace) -> int:
    with _client(args) as client:
        positions = client.call(share_calls.shares_positions())
    Console().print(render_positions(positions))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``p2pgrid shares list|buy|exit|positions``."""
    shares = subparsers.add_parser("shares", help="pool shares through the running node: list, buy, exit, positions")
    commands = shares.add_subparsers(dest="shares_command", required=True, metavar="ACTION")

    def node_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
        return parser

    node_args(commands.add_parser("list", help="certified programmes, their terms and shares left")).set_defaults(
        func=do_list)
    buy = node_args(commands.add_parser("buy", help="buy shares; the host issues them"))
    buy.add_argument("programme", metavar="PROGRAMME_ID", help="programme id or a unique prefix")
    buy.add_argument("shares", type=int, metavar="N")
    buy.add_argument("--wait", type=int, default=10, metavar="S", help="seconds to wait for the host's issue")
    buy.set_defaults(func=do_buy)
    leave = node_args(commands.add_parser("exit", help="ask the host to redeem shares at par after the lock-up"))
    leave.add_argument("programme", metavar="PROGRAMME_ID", help="programme id or a unique prefix")
    leave.add_argument("shares", type=int, metavar="N")
    leave.set_defaults(func=do_exit)
    node_args(commands.add_parser("positions", help="this node's shares, income and exit requests")).set_defaults(
        func=do_positions)
