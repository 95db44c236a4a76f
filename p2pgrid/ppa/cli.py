"""Power purchase agreements from the command line: ``p2pgrid ppa …``.

    p2pgrid ppa draft FILE [--out TEXT]                 the contract text of a filled template and its hash
    p2pgrid ppa draft --template                        print the TOML template to fill
    p2pgrid ppa offer FILE --data-dir DIR [--accept-by-ms MS]
    p2pgrid ppa accept ID --data-dir DIR                accept the other party's offer
    p2pgrid ppa show ID --data-dir DIR                  the text, verified against the ledger's hash
    p2pgrid ppa list --data-dir DIR                     my offers and agreements
    p2pgrid ppa positions ID --data-dir DIR             settled slots: Wh contracted, delivered, paid
    p2pgrid ppa terminate ID --data-dir DIR [--end-slot S]

``draft`` needs no node: it renders the canonical text (what both parties sign) and prints its
SHA-256, the agreement's id. The others are clients of the running node's JSON-RPC API
(``ppa_offer``, ``ppa_accept``, ``ppa_show``, ``ppa_list``, ``ppa_positions``, ``ppa_terminate``).
``ID`` may be a unique prefix of an id as ``list`` prints it. ``show`` exits with status 1 when the
text the node stores does not hash to the id the ledger names.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from p2pgrid.cli.charging import resolve_prefix
from p2pgrid.cli.common import open_client
from p2pgrid.ppa.api import PpaPositionView, PpaView
from p2pgrid.ppa.terms import TEMPLATE_TOML, InvalidTerms, parse_terms_toml, render_terms, terms_hash
from p2pgrid.rpc.client import Call
from p2pgrid.units import format_credits, format_price

__all__ = ["ppa_calls", "register", "render_draft", "render_list", "render_positions", "render_show"]

ID_CHARS = 12


class ppa_calls:  # noqa: N801 — a namespace of call builders, as ``p2pgrid.rpc.client.calls``
    @staticmethod
    def ppa_offer(terms_toml: str, accept_by_ms: int | None = None) -> Call[PpaView]:
        return Call("ppa_offer", {"terms_toml": terms_toml, "accept_by_ms": accept_by_ms}, PpaView)

    @staticmethod
    def ppa_accept(ppa_id: bytes) -> Call[PpaView]:
        return Call("ppa_accept", {"ppa_id": ppa_id.hex()}, PpaView)

    @staticmethod
    def ppa_show(ppa_id: bytes) -> Call[PpaView]:
        return Call("ppa_show", {"ppa_id": ppa_id.hex()}, PpaView)

    @staticmethod
    def ppa_list() -> Call[list[PpaView]]:
        return Call("ppa_list", {}, list[PpaView])

    @staticmethod
    def ppa_positions(ppa_id: bytes) -> Call[list[PpaPositionView]]:
        return Call("ppa_positions", {"ppa_id": ppa_id.hex()}, list[PpaPositionView])

    @staticmethod
    def ppa_terminate(ppa_id: bytes, end_slot: int | None = None) -> Call[PpaView]:
        return Call("ppa_terminate", {"ppa_id": ppa_id.hex(), "end_slot": end_slot}, PpaView)


def _when(slot_s: int) -> str:
    return dt.datetime.fromtimestamp(slot_s, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def render_draft(text: str, ppa_id: bytes) -> str:
    return f"{text}\n---\nsha256 (the agreement's id): {ppa_id.hex()}\n"


def render_show(view: PpaView) -> Table:
    table = Table(show_header=False, title=f"agreement {view.ppa_id.hex()[:ID_CHARS]} ({view.status.value})",
                  box=box.SIMPLE)
    table.add_row("name", view.name)
    table.add_row("seller → buyer", f"{view.seller.hex()[:ID_CHARS]} → {view.buyer.hex()[:ID_CHARS]}")
    table.add_row("term (UTC)", f"{_when(view.start_slot)} – {_when(view.ends_slot)}"
                  + (" (terminated)" if view.ends_slot < view.end_slot else ""))
    table.add_row("shape, price", f"{view.shape}, {format_price(view.price_uc_per_kwh)}")
    table.add_row("text hash", "matches the id the ledger's entries sign" if view.text_verified
                  else "DOES NOT MATCH the ledger's id: this text is not the agreement")
    return table


def render_list(views: list[PpaView]) -> Table:
    table = Table(title="my power purchase agreements (UTC)", box=box.SIMPLE_HEAD)
    for name in ("id", "status", "from", "until", "c/kWh"):
        table.add_column(name, no_wrap=True, justify="right" if name == "c/kWh" else "left")
    for v in views:
        table.add_row(v.ppa_id.hex()[:ID_CHARS], v.status.value, _when(v.start_slot), _when(v.ends_slot),
                      format_price(v.price_uc_per_kwh).removesuffix("/kWh"))
    if not views:
        table.add_row("none", "", "", "", "")
    return table


def render_positions(positions: list[PpaPositionView]) -> Table:
    table = Table(title="settled positions (UTC)", box=box.SIMPLE_HEAD)
    for name in ("slot", "contracted Wh", "delivered Wh", "paid", "penalty"):
        table.add_column(name, justify="left" if name == "slot" else "right")
    for p in positions:
        table.add_row(_when(p.slot), f"{p.contracted_wh:,}", f"{p.delivered_wh:,}", format_credits(p.paid_uc),
                      format_credits(p.penalty_uc))
    table.add_row("total", f"{sum(p.contracted_wh for p in positions):,}",
                  f"{sum(p.delivered_wh for p in positions):,}", format_credits(sum(p.paid_uc for p in positions)),
                  format_credits(sum(p.penalty_uc for p in positions)))
    return table


def _read_terms(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidTerms(f"cannot read {path}: {exc.strerror}") from None


def do_draft(args: argparse.Namespace) -> int:
    if args.template:
        print(TEMPLATE_TOML, end="")
        return 0
    if args.file is None:
        raise InvalidTerms("give the filled template's FILE, or --template to print one")
    terms = parse_terms_toml(_read_terms(args.file))
    text = render_terms(terms)
    if args.out is not None:
        args.out.write_bytes(text.encode("ascii"))
    print(render_draft(text, terms_hash(terms)), end="")
    return 0


def _resolve(client: Any, prefix: str) -> bytes:
    return resolve_prefix(prefix, [v.ppa_id for v in client.call(ppa_calls.ppa_list())], "agreement")


def do_offer(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        view = client.call(ppa_calls.ppa_offer(_read_terms(args.file), args.accept_by_ms))
    Console().print(render_show(view))
    print(f"offered: {view.ppa_id.hex()}")
    return 0


def do_accept(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        view = client.call(ppa_calls.ppa_accept(_resolve(client, args.id)))
    Console().print(render_show(view))
    return 0


def do_show(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        view = client.call(ppa_calls.ppa_show(_resolve(client, args.id)))
    print(view.text, end="" if view.text.endswith("\n") else "\n")
    Console().print(render_show(view))
    return 0 if view.text_verified else 1


def do_list(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        views = client.call(ppa_calls.ppa_list())
    Console().print(render_list(views))
    return 0


def do_positions(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        positions = client.call(ppa_calls.ppa_positions(_resolve(client, args.id)))
    Console().print(render_positions(positions))
    return 0


def do_terminate(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        view = client.call(ppa_calls.ppa_terminate(_resolve(client, args.id), args.end_slot))
    Console().print(render_show(view))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``p2pgrid ppa draft|offer|accept|show|list|positions|terminate``."""
    ppa = subparsers.add_parser("ppa", help="power purchase agreements: draft, offer, accept, show, list, "
                                            "positions, terminate")
    commands = ppa.add_subparsers(dest="ppa_command", required=True, metavar="ACTION")

    def node_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
        return parser

    draft = commands.add_parser("draft", help="the contract text of a filled template and its hash (no node)")
    draft.add_argument("file", type=Path, nargs="?", help="the filled TOML template")
    draft.add_argument("--template", action="store_true", help="print the template to fill")
    draft.add_argument("--out", type=Path, help="also write the text to this file")
    draft.set_defaults(func=do_draft)
    offer = node_args(commands.add_parser("offer", help="offer the agreement of a filled template"))
    offer.add_argument("file", type=Path, help="the filled TOML template")
    offer.add_argument("--accept-by-ms", type=int, help="open until (Unix ms; default: the term's start)")
    offer.set_defaults(func=do_offer)
    for name, func, what in (("accept", do_accept, "accept the other party's offer"),
                             ("show", do_show, "the agreement's text, verified against the ledger"),
                             ("positions", do_positions, "the agreement's settled slots"),
                             ("terminate", do_terminate, "terminate with the notice the terms require")):
        command = node_args(commands.add_parser(name, help=what))
        command.add_argument("id", help="agreement id or a unique prefix of it")
        if name == "terminate":
            command.add_argument("--end-slot", type=int, help="first slot without a position (Unix s; "
                                                              "default: the earliest the notice allows)")
        command.set_defaults(func=func)
    listing = node_args(commands.add_parser("list", help="my offers and agreements"))
    listing.set_defaults(func=do_list)
