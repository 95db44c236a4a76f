"""The flexibility market from the command line, through the running node: ``p2pgrid flex …``.

    p2pgrid flex requests    --data-dir DIR                       the zone's requests and their status
    p2pgrid flex offers      --data-dir DIR [--request ID]        offers of a request (default: mine)
    p2pgrid flex awards      --data-dir DIR [--request ID]        awarded offers (default: mine)
    p2pgrid flex settlements --data-dir DIR [--request ID]        settlement lines (default: mine)
    p2pgrid flex request FIRST_SLOT N_SLOTS QTY_WH --price P --penalty Q --deadline-ms MS --data-dir DIR
                         [--direction down|up] [--feeder NAME] [--exclude-day D …] [--grant-seq S]

These are clients of the node's local JSON-RPC API (``flex_requests``, ``flex_offers``,
``flex_awards``, ``flex_settlements``, ``flex_request``; ``[rpc] enabled = true``), as ``p2pgrid
charge`` is. ``ID`` may be a unique prefix of a request id (as ``requests`` prints it).
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
from p2pgrid.rpc.api import FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestView, FlexSettlementView
from p2pgrid.rpc.client import Call
from p2pgrid.units import MS_PER_S, format_credits, format_price

ID_CHARS = 8             # hex digits of an id shown in tables: plenty to name it uniquely

__all__ = ["UnknownRequest", "flex_calls", "register", "render_awards", "render_offers", "render_requests", "render_settlements"]


class flex_calls:  # noqa: N801 — a namespace of call builders, as ``p2pgrid.rpc.client.calls``
    """The flex methods' ``Call``s (arguments as in API.md)."""

    @staticmethod
    def flex_requests() -> Call[list[FlexRequestView]]:
        return Call("flex_requests", {}, list[FlexRequestView])

    @staticmethod
    def flex_offers(request_id: bytes | None = None) -> Call[list[FlexOfferView]]:
        return Call("flex_offers", {"request_id": _hex(request_id)}, list[FlexOfferView])

    @staticmethod
    def flex_awards(request_id: bytes | None = None) -> Call[list[FlexAwardView]]:
        return Call("flex_awards", {"request_id": _hex(request_id)}, list[FlexAwardView])

    @staticmethod
    def flex_settlements(request_id: bytes | None = None) -> Call[list[FlexSettlementView]]:
        return Call("flex_settlements", {"request_id": _hex(request_id)}, list[FlexSettlementView])

    @staticmethod
    def flex_request(order: FlexRequestOrder) -> Call[FlexRequestView]:
        return Call("flex_request", {"feeder": order.feeder, "direction": order.direction,
                                     "first_slot": order.first_slot, "n_slots": order.n_slots,
                                     "qty_wh": order.qty_wh, "price_uc_per_kwh": order.price_uc_per_kwh,
                                     "penalty_uc_per_kwh": order.penalty_uc_per_kwh,
                                     "offer_deadline_ms": order.offer_deadline_ms,
                                     "excluded_days": list(order.excluded_days), "grant_seq": order.grant_seq},
                    FlexRequestView)


class UnknownRequest(P2PGridError):
    """No certified request, or more than one, starts with the given id prefix."""


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _time(ms: int, fmt: str = "%m-%d %H:%M") -> str:
    return dt.datetime.fromtimestamp(ms // MS_PER_S, dt.timezone.utc).strftime(fmt)


def _table(title: str, ids: tuple[str, ...], columns: tuple[str, ...]) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in ids:
        table.add_column(name, no_wrap=True, min_width=ID_CHARS)
    for name in columns:
        table.add_column(name, no_wrap=True, justify="left" if name in ("from", "dir", "status", "due") else "right")
    return table


def _per_slot(values: tuple[int, ...]) -> str:
    return "/".join(f"{v:,}" for v in values)


def render_requests(requests: list[FlexRequestView]) -> Table:
    table = _table("flexibility requests (times UTC, prices in credits)", ("request",),
                   ("from", "Wh × slots", "c/kWh", "due", "offers", "awarded", "status"))
    for r in requests:
        table.add_row(r.request_id.hex()[:ID_CHARS], _time(r.first_slot * MS_PER_S),
                      f"{r.direction} {r.qty_wh:,}×{r.n_slots}", format_price(r.price_uc_per_kwh).removesuffix("/kWh"),
                      _time(r.offer_deadline_ms, "%H:%M"), str(r.offers), f"{r.awarded_wh:,}", r.status.value)
    if not requests:
        table.add_row("none", *[""] * 7)
    return table


def render_offers(offers: list[FlexOfferView]) -> Table:
    table = _table("flexibility offers (Wh per slot)", ("request", "account"),
                   ("c/kWh", "offered", "baseline", "awarded"))
    for o in offers:
        table.add_row(o.request_id.hex()[:ID_CHARS], o.account.hex()[:ID_CHARS],
                      format_price(o.price_uc_per_kwh).removesuffix("/kWh"), _per_slot(o.qty_wh),
                      _per_slot(o.baseline_wh), _per_slot(o.awarded_wh))
    if not offers:
        table.add_row("none", "", "", "", "", "")
    return table


def render_awards(awards: list[FlexAwardView]) -> Table:
    table = _table("awarded flexibility (Wh per slot)", ("request", "account"), ("c/kWh", "awarded", "total Wh"))
    for a in awards:
        table.add_row(a.request_id.hex()[:ID_CHARS], a.account.hex()[:ID_CHARS],
                      format_price(a.price_uc_per_kwh).removesuffix("/kWh"), _per_slot(a.awarded_wh),
                      f"{sum(a.awarded_wh):,}")
    if not awards:
        table.add_row("none", "", "", "", "")
    return table


def render_settlements(lines: list[FlexSettlementView]) -> Table:
    table = _table("flexibility settlements (Wh; credits, + to the node)", ("request", "account"),
                   ("awarded", "delivered", "paid Wh", "short", "net"))
    for s in lines:
        table.add_row(s.request_id.hex()[:ID_CHARS], s.account.hex()[:ID_CHARS], f"{s.awarded_wh:,}",
                      f"{s.delivered_wh:,}", f"{s.paid_wh:,}", f"{s.short_wh:,}", format_credits(s.net_uc))
    if not lines:
        table.add_row("none", *[""] * 6)
    return table


def _client(args: argparse.Namespace) -> Any:
    return open_client(args.data_dir)


def _request_id(client: Any, prefix: str | None) -> bytes | None:
    """The certified request whose id starts with ``prefix`` (hex, any case); None for None."""
    if prefix is None:
        return None
    ids = [r.request_id for r in client.call(flex_calls.flex_requests())]
    matches = [i for i in ids if i.hex().startswith(prefix.lower())]
    if len(matches) != 1:
        raise UnknownRequest(f"{len(matches)} requests match {prefix!r} (known: "
                             f"{', '.join(i.hex()[:ID_CHARS] for i in ids) or 'none'})")
    return matches[0]


def do_requests(args: argparse.Namespace) -> int:
    with _client(args) as client:
        requests = client.call(flex_calls.flex_requests())
    Console().print(render_requests(requests))
    return 0


def _listing(name: str, call: Any, render: Any) -> Any:
    """``do_<name>``: list what ``call`` returns for ``--request`` (or this node's own), rendered."""
    def do(args: argparse.Namespace) -> int:
        with _client(args) as client:
            rows = client.call(call(_request_id(client, args.request)))
        Console().print(render(rows))
        return 0
    do.__name__ = do.__qualname__ = f"do_{name}"
    return do


do_offers = _listing("offers", flex_calls.flex_offers, render_offers)
do_awards = _listing("awards", flex_calls.flex_awards, render_awards)
do_settlements = _listing("settlements", flex_calls.flex_settlements, render_settlements)


def do_request(args: argparse.Namespace) -> int:
    order = FlexRequestOrder(args.feeder, args.direction, args.first_slot, args.n_slots, args.qty_wh, args.price,
                             args.penalty, args.deadline_ms, tuple(args.exclude_day or ()), args.grant_seq)
    with _client(args) as client:
        request = client.call(flex_calls.flex_request(order))
    Console().print(render_requests([request]))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``p2pgrid flex requests|offers|awards|settlements|request``."""
    flex = subparsers.add_parser("flex", help="the zone's flexibility market (virtual power plant) through the "
                                              "running node: requests, offers, awards, settlements")
    commands = flex.add_subparsers(dest="flex_command", required=True, metavar="ACTION")

    def node_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
        return parser

    node_args(commands.add_parser("requests", help="the zone's flexibility requests")).set_defaults(func=do_requests)
    for name, func, what in (("offers", do_offers, "offers"), ("awards", do_awards, "awarded offers"),
                             ("settlements", do_settlements, "settlement lines")):
        parser = node_args(commands.add_parser(name, help=f"{what} of a request (default: this node's own)"))
        parser.add_argument("--request", metavar="ID", help="request id or a unique prefix")
        parser.set_defaults(func=func)
    request = node_args(commands.add_parser("request", help="zone operator or granted DSO: post a request"))
    request.add_argument("first_slot", type=int, metavar="FIRST_SLOT", help="first slot start, Unix seconds")
    request.add_argument("n_slots", type=int, metavar="N_SLOTS", help="consecutive slots (1-96)")
    request.add_argument("qty_wh", type=int, metavar="QTY_WH", help="flexibility wanted per slot, Wh")
    request.add_argument("--price", type=int, required=True, metavar="UC", help="most paid per delivered kWh, µc")
    request.add_argument("--penalty", type=int, default=0, metavar="UC", help="per awarded kWh not delivered, µc")
    request.add_argument("--deadline-ms", type=int, required=True, metavar="MS", help="offers due, Unix ms")
    request.add_argument("--direction", choices=("down", "up"), default="down",
                         help="down: less import / more export (default); up: the opposite")
    request.add_argument("--feeder", default="", help="feeder or area label")
    request.add_argument("--exclude-day", type=int, action="append", metavar="DAY",
                         help="a holiday the baselines skip, Unix day (repeatable)")
    request.add_argument("--grant-seq", type=int, default=-1, metavar="S", help="a DSO: seq of its flex_grant")
    request.set_defaults(func=do_request)
