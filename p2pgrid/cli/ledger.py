"""``p2pgrid ledger …``: read a node's ledger database offline.

    p2pgrid ledger head    [--db FILE | --data-dir DIR]            chain heads, height, state root
    p2pgrid ledger show    ACCOUNT [--from SEQ] [--limit N] …      one account's certified entries
    p2pgrid ledger balance [ACCOUNT] …                             balances (all accounts, or one)
    p2pgrid ledger verify  …                                       check certificates, chains, money

The database is ``<data dir>/ledger.sqlite`` (or ``--db``). The zone rules and committee come from
the database itself (the node saves them), so these commands need no key and no running node.
ACCOUNT is a public key in hex, or a unique prefix of one. Each ``do_*`` returns the exit code.

``show`` decodes every entry kind a node validates (``p2pgrid.node.entry_kinds``) into its fields:
accounts and ids as their first ``SHORT_ID`` hex digits, energies in Wh, money in credits, prices in
credits/kWh, times and slots as UTC, a signed meter reading carried in a ``meter`` entry decoded too
(``describe_body``); bytes it cannot read are shown as their length.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table
from rich.text import Text

import p2pgrid.node.entry_kinds  # noqa: F401  (registers every kind, so every body decodes)
from p2pgrid.cli.common import resolve_account
from p2pgrid.errors import LedgerError, P2PGridError
from p2pgrid.ledger.chain import LedgerState, decode_body, state_root
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.ledger.store import LEDGER_DB_FILE, LedgerStore, VerifyReport, open_store
from p2pgrid.settlement.metering import decode_meter_reading
from p2pgrid.units import format_credits
from p2pgrid.wire import Signed


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ledger = subparsers.add_parser("ledger", help="inspect and verify the replicated ledger")
    commands = ledger.add_subparsers(dest="ledger_command", required=True, metavar="COMMAND")

    head = commands.add_parser("head", help="chain heads, entry count and state root")
    _add_db_args(head)
    head.set_defaults(func=do_head)

    show = commands.add_parser("show", help="an account's certified entries")
    _add_db_args(show)
    show.add_argument("account", metavar="ACCOUNT", help="public key in hex (or a unique prefix)")
    show.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    show.add_argument("--limit", type=int, default=50, metavar="N")
    show.set_defaults(func=do_show)

    balance = commands.add_parser("balance", help="balances derived from the certified entries")
    _add_db_args(balance)
    balance.add_argument("account", nargs="?", metavar="ACCOUNT")
    balance.set_defaults(func=do_balance)

    verify = commands.add_parser("verify", help="check certificates, chains and money conservation")
    _add_db_args(verify)
    verify.set_defaults(func=do_verify)


def _add_db_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--db", type=Path, help="ledger database file")
    where.add_argument("--data-dir", type=Path, help=f"node data dir (uses its {LEDGER_DB_FILE})")


def db_path(args: argparse.Namespace) -> Path:
    path = args.db if args.db is not None else Path(args.data_dir) / LEDGER_DB_FILE
    if not Path(path).exists():
        raise LedgerError(f"no ledger database at {path}")
    return Path(path)


# --- commands --------------------------------------------------------------------------------

def do_head(args: argparse.Namespace, console: Console | None = None) -> int:
    state, pending = _run(_load_state, db_path(args))
    (console or Console()).print(render_heads(state, len(pending)))
    return 0


def do_show(args: argparse.Namespace, console: Console | None = None) -> int:
    async def load() -> list[Signed[Any]]:
        async with open_store(db_path(args)) as store:
            account = resolve_account(args.account, (await store.heads()).keys())
            return await store.account_entries(account, args.from_seq, args.limit)
    (console or Console()).print(render_entries(_run(load)))
    return 0


def do_balance(args: argparse.Namespace, console: Console | None = None) -> int:
    state, _ = _run(_load_state, db_path(args))
    accounts = [resolve_account(args.account, state.balances.keys())] if args.account else None
    (console or Console()).print(render_balances(state, accounts))
    return 0


def do_verify(args: argparse.Namespace, console: Console | None = None) -> int:
    async def run() -> VerifyReport:
        async with open_store(db_path(args)) as store:
            rules, committee = await _zone(store)
            return await store.verify(rules, committee)
    report = _run(run)
    (console or Console()).print(
        f"ok: {report.entries} entries in {report.certificates} certificates over {report.accounts} chains; "
        f"{report.pending} waiting for predecessors; state root {report.state_root.hex()}")
    return 0


# --- helpers ---------------------------------------------------------------------------------

def _run(fn: Any, *args: Any) -> Any:
    """``trio.run``, with a lone error unwrapped from trio's exception groups so the CLI's one-line
    error handling sees the ``P2PGridError`` itself."""
    try:
        return trio.run(fn, *args)
    except BaseExceptionGroup as group:
        leaves = _leaves(group)
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def _zone(store: LedgerStore) -> Any:
    zone = await store.load_zone()
    if zone is None:
        raise LedgerError("this ledger database has no zone parameters (was it written by a node?)")
    return zone


async def _load_state(path: Path) -> tuple[LedgerState, dict[Any, Any]]:
    async with open_store(path) as store:
        rules, _ = await _zone(store)
        return await store.load_state(rules)


def render_heads(state: LedgerState, pending: int = 0) -> Table:
    table = Table(title=f"ledger: {state.height} entries, {len(state.heads)} chains, {pending} pending")
    table.add_column("account")
    table.add_column("next seq", justify="right")
    table.add_column("last hash")
    for account, head in sorted(state.heads.items()):
        table.add_row(account.hex()[:16], str(head.next_seq), head.last_hash.hex()[:16])
    table.caption = f"state root {state_root(state).hex()}"
    return table


def render_entries(entries: Sequence[Signed[Any]]) -> Table:
    table = Table(title=f"{len(entries)} entries" + (f" of {entries[0].body.account.hex()}" if entries else ""))
    for name in ("seq", "kind", "body", "hash"):
        table.add_column(name, overflow="fold")
    for signed in entries:
        entry = signed.body
        try:
            body = describe_body(decode_body(entry))
        except LedgerError:
            body = f"<{len(entry.body)} bytes: not a {entry.kind} body this version reads>"
        table.add_row(str(entry.seq), entry.kind, Text(body), entry_hash(signed).hex()[:SHORT_ID])
    return table


def render_balances(state: LedgerState, accounts: Sequence[bytes] | None = None) -> Table:
    table = Table(title="balances (credits)")
    table.add_column("account")
    table.add_column("balance", justify="right")
    for account in accounts if accounts is not None else sorted(state.balances):
        table.add_row(account.hex()[:16], format_credits(state.balance(account)))
    table.caption = f"in open locks: {format_credits(state.locked_total())}; total {format_credits(state.money_total())}"
    return table


SHORT_ID = 8
MAX_ITEMS = 6
PRICE_FIELDS = {"price", "limit_price", "shortfall_price", "feed_in_price", "price_uc_per_kwh"}
#: Byte fields that carry a signed message of their own, and how to read it.
SIGNED_FIELDS: dict[str, Callable[[bytes], Any]] = {"reading": decode_meter_reading}


def describe_body(body: Any) -> str:
    """A decoded entry body as ``name=value`` pairs in units people read (see the module docstring)."""
    return " ".join(f"{f.name}={describe_value(f.name, getattr(body, f.name))}" for f in dataclasses.fields(body))


def describe_value(name: str, value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "{" + describe_body(value) + "}"
    if isinstance(value, tuple):
        items = [describe_value(name, item) for item in value[:MAX_ITEMS]]
        more = [f"+{len(value) - MAX_ITEMS} more"] if len(value) > MAX_ITEMS else []
        return "[" + ", ".join(items + more) + "]"
    if isinstance(value, bytes):
        return _describe_bytes(name, value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool) or not isinstance(value, int):
        return str(value)
    return _describe_int(name, value)


def _describe_bytes(name: str, value: bytes) -> str:
    decode = SIGNED_FIELDS.get(name)
    if decode is not None:
        try:
            return "{" + describe_body(decode(value).body) + ", signed}"
        except (P2PGridError, ValueError):
            pass    # not what it should be: show its size, as any other bytes
    if len(value) in (16, 32):        # ids and public keys
        return value.hex()[:SHORT_ID]
    return f"<{len(value)} bytes>"


def _describe_int(name: str, value: int) -> str:
    if name in PRICE_FIELDS:
        return f"{format_credits(value)} cr/kWh"
    if name == "amount" or name.endswith("_uc"):
        return f"{format_credits(value)} cr"
    if name.endswith("_wh"):
        return f"{value:,d} Wh"
    if name.endswith("_w"):
        return f"{value:,d} W"
    if name.endswith("_bps"):
        return f"{value} bps"
    try:
        if name.endswith("_ms") and value > 0:
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if (name == "slot" or name.endswith("_slot")) and value > 0:
            return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (ValueError, OverflowError, OSError):
        pass    # beyond the calendar: the number itself
    return str(value)
