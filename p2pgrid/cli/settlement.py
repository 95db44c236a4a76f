"""``p2pgrid settle show``, ``p2pgrid statement``, ``p2pgrid certs``: settled slots and green
certificates, read offline from a node's ledger database (like ``p2pgrid ledger``).

    p2pgrid settle show --slot SLOT  [--db FILE | --data-dir DIR]    one settled slot, per account
                                                                     (SLOT ``last``: the latest settled)
    p2pgrid statement   --day DAY    [--account ACCOUNT] …           per account, the day's slots
    p2pgrid certs                    [--account ACCOUNT] …           green certificates held/retired

SLOT is the slot start as Unix seconds or a UTC time ``YYYY-MM-DDTHH:MM``; DAY is ``YYYY-MM-DD``
(UTC). ACCOUNT is a public key in hex or a unique prefix. Rendering functions return rich
renderables; each ``do_*`` returns the exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections import defaultdict

from rich.console import Console, Group
from rich.table import Table

from p2pgrid.cli.ledger import _add_db_args, _load_state, _run, db_path, resolve_account
from p2pgrid.errors import SettlementError
from p2pgrid.ledger.chain import LedgerState
from p2pgrid.settlement.certificates import CertificateRegistry, total_wh
from p2pgrid.settlement.entries import certificate_registry, certificates_of, settled_slots, settlement_of
from p2pgrid.settlement.rules import Reason, SlotSettlement
from p2pgrid.units import format_credits

DAY_S = 86_400


class NotSettled(SettlementError):
    """The asked-for slot has no certified settlement (yet)."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    settle = subparsers.add_parser("settle", help="settled slots (certified settlement entries)")
    commands = settle.add_subparsers(dest="settle_command", required=True, metavar="COMMAND")
    show = commands.add_parser("show", help="one settled slot: energy and money per account")
    _add_db_args(show)
    show.add_argument("--slot", required=True, type=parse_slot, metavar="SLOT",
                      help="slot start: Unix seconds, YYYY-MM-DDTHH:MM (UTC), or last (the latest settled)")
    show.set_defaults(func=do_settle_show)

    statement = subparsers.add_parser("statement", help="an account's settled slots of one day")
    _add_db_args(statement)
    statement.add_argument("--day", required=True, type=parse_day, metavar="DAY", help="YYYY-MM-DD (UTC)")
    statement.add_argument("--account", metavar="ACCOUNT", help="public key in hex (or a unique prefix); default all")
    statement.set_defaults(func=do_statement)

    certs = subparsers.add_parser("certs", help="green certificates: issued, held, retired")
    _add_db_args(certs)
    certs.add_argument("--account", metavar="ACCOUNT", help="public key in hex (or a unique prefix); default all")
    certs.set_defaults(func=do_certs)


LAST_SETTLED = -1     # ``--slot last``: the latest slot settled in the ledger


def parse_slot(text: str) -> int:
    text = text.strip()
    if text == "last":
        return LAST_SETTLED
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a slot (Unix seconds or YYYY-MM-DDTHH:MM): {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


def parse_day(text: str) -> int:
    """The Unix seconds of the day's 00:00 UTC."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a day (YYYY-MM-DD): {text!r}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def slot_label(slot: int) -> str:
    return dt.datetime.fromtimestamp(slot, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


# --- commands --------------------------------------------------------------------------------

def do_settle_show(args: argparse.Namespace, console: Console | None = None) -> int:
    state, _ = _run(_load_state, db_path(args))
    slot = args.slot
    if slot == LAST_SETTLED:
        settled = settled_slots(state)
        if not settled:
            raise NotSettled("no slot is settled in this ledger yet")
        slot = settled[-1]
    (console or Console()).print(render_settlement(state, slot))
    return 0


def do_statement(args: argparse.Namespace, console: Console | None = None) -> int:
    state, _ = _run(_load_state, db_path(args))
    account = resolve_account(args.account, state.balances.keys()) if args.account else None
    (console or Console()).print(render_statement(state, args.day, account))
    return 0


def do_certs(args: argparse.Namespace, console: Console | None = None) -> int:
    state, _ = _run(_load_state, db_path(args))
    account = resolve_account(args.account, state.balances.keys()) if args.account else None
    (console or Console()).print(render_certificates(certificate_registry(state), account))
    return 0


# --- rendering -------------------------------------------------------------------------------

def render_settlement(state: LedgerState, slot: int) -> Group:
    settled = settlement_of(state, slot)
    if settled is None:
        raise NotSettled(f"slot {slot} ({slot_label(slot)} UTC) is not settled in this ledger")
    table = Table(title=f"slot {slot_label(slot)} UTC settled (Wh; credits)")
    for name in ("account", "meter", "sold", "bought", "export", "import", "net"):
        table.add_column(name, justify="left" if name in ("account", "meter") else "right", no_wrap=True)
    for line in settled.lines:
        gateway = line.account == settled.gateway
        table.add_row(_short(line.account) + (" gw" if gateway else ""),
                      "-" if gateway else ("yes" if line.metered else "none=0"), str(line.sold_wh),
                      str(line.bought_wh), str(line.export_wh), str(line.import_wh), format_credits(line.net_uc))
    table.caption = (f"shortfall {format_credits(settled.prices.shortfall_price)}/kWh, feed-in "
                     f"{format_credits(settled.prices.feed_in_price)}/kWh; net includes the trades "
                     f"(paid when certified); total {format_credits(settled.total_uc)}")
    deliveries = Table(title=f"{len(settled.deliveries)} trades delivered (Wh)")
    for name in ("trade", "seller", "buyer", "contracted", "delivered", "green"):
        deliveries.add_column(name, justify="right" if name in ("contracted", "delivered") else "left", no_wrap=True)
    for d in settled.deliveries:
        deliveries.add_row(_short(d.trade_id), _short(d.seller), _short(d.buyer), str(d.contracted_wh),
                           str(d.delivered_wh), "yes" if d.green else "")
    certs = certificates_of(state, slot)
    parts: list[object] = [table, deliveries]
    if certs is not None:
        parts.append(f"green certificates: {total_wh(certs.issued)} Wh issued, "
                     f"{sum(t.units.wh for t in certs.transfers)} Wh moved with trades, "
                     f"{sum(r.units.wh for r in certs.retirements)} Wh retired")
    return Group(*parts)  # type: ignore[arg-type]


def _day_slots(state: LedgerState, day_start: int) -> list[SlotSettlement]:
    return [s for slot in settled_slots(state) if day_start <= slot < day_start + DAY_S
            and (s := settlement_of(state, slot)) is not None]


def render_statement(state: LedgerState, day_start: int, account: bytes | None = None) -> Group:
    """One account's slots of the day (energy, net) and its money by reason; or, without an
    account, every account's day totals."""
    day = dt.datetime.fromtimestamp(day_start, dt.timezone.utc).date().isoformat()
    slots = _day_slots(state, day_start)
    columns = ("sold", "bought", "export", "import")
    if account is None:
        table = Table(title=f"statement {day} UTC: {len(slots)} settled slots (Wh; credits)")
        for name in ("account", *columns, "net"):
            table.add_column(name, justify="left" if name == "account" else "right", no_wrap=True)
        totals: dict[bytes, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for settled in slots:
            for line in settled.lines:
                row = totals[line.account]
                for i, value in enumerate((line.sold_wh, line.bought_wh, line.export_wh, line.import_wh, line.net_uc)):
                    row[i] += value
        for acct, row in sorted(totals.items()):
            table.add_row(_short(acct), *map(str, row[:4]), format_credits(row[4]))
        return Group(table)
    table = Table(title=f"statement {day} UTC of {_short(account)} (Wh; credits)")
    for name in ("slot", *columns, "net"):
        table.add_column(name, justify="left" if name == "slot" else "right", no_wrap=True)
    by_reason: dict[Reason, int] = defaultdict(int)
    total = 0
    for settled in slots:
        mine = next((x for x in settled.lines if x.account == account), None)
        if mine is None:
            continue
        total += mine.net_uc
        for reason, amount in mine.payments:
            by_reason[reason] += amount
        table.add_row(slot_label(settled.slot)[11:], str(mine.sold_wh), str(mine.bought_wh), str(mine.export_wh),
                      str(mine.import_wh), format_credits(mine.net_uc))
    table.caption = f"net for the day: {format_credits(total)}"
    reasons = Table(title="by reason (+ received, - paid)")
    reasons.add_column("reason")
    reasons.add_column("credits", justify="right")
    for reason in Reason:
        if by_reason.get(reason):
            reasons.add_row(reason.value, format_credits(by_reason[reason]))
    return Group(table, reasons)


def _short(value: bytes) -> str:
    return value.hex()[:8]


def render_certificates(registry: CertificateRegistry, account: bytes | None = None) -> Table:
    issued: dict[bytes, int] = defaultdict(int)
    for slot in registry.slots:
        for r in slot.issued:
            issued[r.batch.producer] += r.wh
    accounts = {a for s in registry.slots for a, _ in s.holdings} | {r.account for s in registry.slots
                                                                      for r in s.retirements} | set(issued)
    if account is not None:
        accounts = {account}
    table = Table(title=f"green certificates (Wh): {registry.issued_wh} issued, {registry.retired_wh} retired "
                        f"over {len(registry.slots)} slots")
    for name in ("account", "issued", "held", "retired", "consumed", "retired by source"):
        table.add_column(name, justify="left" if name in ("account", "retired by source") else "right", no_wrap=True)
    for acct in sorted(accounts):
        statement = registry.retirement_statement(acct)
        sources = ", ".join(f"{src.value} {wh}" for src, wh in sorted(statement.retired_by_source().items(),
                                                                       key=lambda item: item[0].value))
        table.add_row(_short(acct), str(issued.get(acct, 0)), str(total_wh(registry.holdings(acct))),
                      str(statement.retired_wh), str(statement.consumed_wh), sources)
    return table


__all__ = ["NotSettled", "do_certs", "do_settle_show", "do_statement", "parse_day", "parse_slot", "register",
           "render_certificates", "render_settlement", "render_statement"]
