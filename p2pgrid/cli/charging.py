"""Public EV charging from the command line, through the running node: ``p2pgrid charge …``.

    p2pgrid charge tariffs  --data-dir DIR [--station HEX]              tariffs open now
    p2pgrid charge start TARIFF MAX_WH --data-dir DIR [--hours H] [--wait S]
                                                                        plug in: escrow for MAX_WH
    p2pgrid charge sessions --data-dir DIR [--station]                  my sessions (as driver / station)
    p2pgrid charge release SESSION --data-dir DIR                       take back an unbilled escrow

These are clients of the node's local JSON-RPC API (``charging_tariffs``, ``charging_start``,
``charging_sessions``, ``charging_release``; ``[rpc] enabled = true``), as ``p2pgrid shares`` is.
``TARIFF`` and ``SESSION`` may be a unique prefix of an id (as ``tariffs`` / ``sessions`` print
them). ``start`` waits ``--wait`` seconds (default 10) for a bill: a station that has no car of
this driver at its connectors bills zero after its no-car grace, which ``start`` then shows. Register them with
``register(subparsers)`` (``p2pgrid.cli.main``).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from p2pgrid.cli.common import open_client
from p2pgrid.errors import P2PGridError
from p2pgrid.rpc.api import ChargeRole, ChargeSessionStatus, ChargeSessionView, ChargeTariffView
from p2pgrid.rpc.client import Call
from p2pgrid.units import MS_PER_S, format_credits, format_price

ID_CHARS = 10            # hex digits of an id shown in tables: plenty to name it uniquely

__all__ = ["UnknownIdPrefix", "charge_calls", "register", "render_session", "render_sessions", "render_tariffs",
           "resolve_prefix"]


class charge_calls:  # noqa: N801 — a namespace of call builders, as ``p2pgrid.rpc.client.calls``
    """The charging methods' ``Call``s (arguments as in API.md)."""

    @staticmethod
    def charging_tariffs(station: bytes | None = None) -> Call[list[ChargeTariffView]]:
        return Call("charging_tariffs", {"station": station.hex() if station is not None else None},
                    list[ChargeTariffView])

    @staticmethod
    def charging_start(tariff_id: bytes, max_wh: int, wait_s: int = 10, hours: int = 12) -> Call[ChargeSessionView]:
        return Call("charging_start", {"tariff_id": tariff_id.hex(), "max_wh": max_wh, "wait_s": wait_s,
                                       "hours": hours}, ChargeSessionView)

    @staticmethod
    def charging_sessions(role: ChargeRole = ChargeRole.DRIVER) -> Call[list[ChargeSessionView]]:
        return Call("charging_sessions", {"role": role.value}, list[ChargeSessionView])

    @staticmethod
    def charging_release(session_id: bytes) -> Call[ChargeSessionView]:
        return Call("charging_release", {"session_id": session_id.hex()}, ChargeSessionView)


class UnknownIdPrefix(P2PGridError):
    """No tariff or session, or more than one, starts with the given id prefix."""


def resolve_prefix(prefix: str, ids: list[bytes], what: str) -> bytes:
    """The id among ``ids`` that ``prefix`` (hex, any case) names uniquely."""
    wanted = prefix.lower()
    matches = [i for i in ids if i.hex().startswith(wanted)]
    if len(matches) != 1:
        known = ", ".join(i.hex()[:ID_CHARS] for i in ids) or "none"
        raise UnknownIdPrefix(f"{len(matches)} {what}s match {prefix!r} (known: {known})")
    return matches[0]


def _time(ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return dt.datetime.fromtimestamp(ms // MS_PER_S, dt.timezone.utc).strftime(fmt)


def _kw(watts: int) -> str:
    return f"{watts / 1000:g} kW"


def _rows_table(title: str, ids: tuple[str, ...], columns: tuple[str, ...]) -> Table:
    """A table that fits 80 columns: light borders; id columns never shrink, as a reader copies a
    prefix from them (``resolve_prefix``); the rest are numbers, right-aligned."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ids:
        table.add_column(name, no_wrap=True, min_width=ID_CHARS)
    for name in columns:
        table.add_column(name, justify="left" if name in ("until", "plugged in", "status") else "right")
    return table


def render_tariffs(tariffs: list[ChargeTariffView]) -> Table:
    table = _rows_table("charging tariffs open now (prices in credits, times UTC)", ("tariff", "station"),
                        ("c/kWh", "chargers", "max Wh", "until", "billed", "sold Wh"))
    for t in tariffs:
        table.add_row(t.tariff_id.hex()[:ID_CHARS], t.station.hex()[:ID_CHARS],
                      format_price(t.price_uc_per_kwh).removesuffix("/kWh"), f"{t.connectors} × {_kw(t.max_power_w)}",
                      f"{t.max_session_wh:,}", _time(t.until_ms, "%Y-%m-%d"), str(t.sessions_billed), f"{t.sold_wh:,}")
    if not tariffs:
        table.add_row("none", "", "", "", "", "", "", "")
    return table


def _outcome(session: ChargeSessionView) -> str:
    if session.status is ChargeSessionStatus.BILLED and session.delivered_wh == 0:
        return "billed 0 Wh (the station had no car of yours): escrow back"
    return session.status.value


def render_session(session: ChargeSessionView) -> Table:
    table = Table(show_header=False, title=f"charging session {session.session_id.hex()[:ID_CHARS]}")
    table.add_row("tariff", session.tariff_id.hex()[:ID_CHARS])
    table.add_row("station", session.station.hex()[:ID_CHARS])
    table.add_row("escrowed", f"{format_credits(session.escrow_uc)} for up to {session.max_wh:,} Wh")
    table.add_row("plugged in (UTC)", _time(session.plugged_in_ms))
    table.add_row("bill by (UTC)", _time(session.deadline_ms))
    if session.billed:
        table.add_row("delivered", f"{session.delivered_wh:,} Wh until {_time(session.ended_ms)}")
        table.add_row("paid", format_credits(session.amount_uc))
    table.add_row("status", _outcome(session))
    return table


def render_sessions(sessions: list[ChargeSessionView], role: ChargeRole) -> Table:
    other = "station" if role is ChargeRole.DRIVER else "driver"
    table = _rows_table(f"my charging sessions as {role.value} (UTC)", ("session", other),
                        ("plugged in", "max Wh", "got Wh", "paid", "status"))
    for s in sessions:
        table.add_row(s.session_id.hex()[:ID_CHARS],
                      (s.station if role is ChargeRole.DRIVER else s.driver).hex()[:ID_CHARS],
                      _time(s.plugged_in_ms, "%m-%d %H:%M"), f"{s.max_wh:,}", f"{s.delivered_wh:,}",
                      format_credits(s.amount_uc), s.status.value)
    if not sessions:
        table.add_row("none", "", "", "", "", "", "")
    return table


def _client(args: argparse.Namespace) -> Any:
    return open_client(args.data_dir)


def _station(text: str) -> bytes:
    try:
        station = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a station's public key, 64 hex digits") from None
    if len(station) != 32:
        raise argparse.ArgumentTypeError("expected a station's public key, 64 hex digits")
    return station


def do_tariffs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tariffs = client.call(charge_calls.charging_tariffs(args.station))
    Console().print(render_tariffs(tariffs))
    return 0


def do_start(args: argparse.Namespace) -> int:
    with _client(args) as client:
        open_ids = [t.tariff_id for t in client.call(charge_calls.charging_tariffs())]
        tariff_id = resolve_prefix(args.tariff, open_ids, "open tariff")
        session = client.call(charge_calls.charging_start(tariff_id, args.max_wh, args.wait, args.hours))
    Console().print(render_session(session))
    return 0


def do_sessions(args: argparse.Namespace) -> int:
    role = ChargeRole.STATION if args.station else ChargeRole.DRIVER
    with _client(args) as client:
        sessions = client.call(charge_calls.charging_sessions(role))
    Console().print(render_sessions(sessions, role))
    return 0


def do_release(args: argparse.Namespace) -> int:
    with _client(args) as client:
        mine = [s.session_id for s in client.call(charge_calls.charging_sessions())]
        session_id = resolve_prefix(args.session, mine, "session")
        session = client.call(charge_calls.charging_release(session_id))
    Console().print(render_session(session))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``p2pgrid charge tariffs|start|sessions|release``."""
    charge = subparsers.add_parser("charge", help="public EV charging through the running node: tariffs, start, "
                                                  "sessions, release")
    commands = charge.add_subparsers(dest="charge_command", required=True, metavar="ACTION")

    def node_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
        return parser

    tariffs = node_args(commands.add_parser("tariffs", help="charging tariffs of the zone open now"))
    tariffs.add_argument("--station", type=_station, metavar="HEX", help="one station's tariffs only")
    tariffs.set_defaults(func=do_tariffs)
    start = node_args(commands.add_parser("start", help="plug in now: escrow the price of at most MAX_WH"))
    start.add_argument("tariff", metavar="TARIFF", help="tariff id or a unique prefix")
    start.add_argument("max_wh", type=int, metavar="MAX_WH", help="most energy to take, Wh")
    start.add_argument("--hours", type=int, default=12, metavar="H",
                       help="the station bills within H hours (1-48; then the escrow may be released)")
    start.add_argument("--wait", type=int, default=10, metavar="S",
                       help="seconds to wait for a bill (a station with no car of yours bills zero after its grace)")
    start.set_defaults(func=do_start)
    sessions = node_args(commands.add_parser("sessions", help="this node's charging sessions"))
    sessions.add_argument("--station", action="store_true", help="the sessions this node sold as a station")
    sessions.set_defaults(func=do_sessions)
    release = node_args(commands.add_parser("release", help="take back an unbilled escrow after its deadline"))
    release.add_argument("session", metavar="SESSION", help="session id or a unique prefix")
    release.set_defaults(func=do_release)
