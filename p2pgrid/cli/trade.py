"""``p2pgrid book``, ``p2pgrid trade buy|sell QTY``, ``p2pgrid trades``: trading through the
running node.

These commands are clients of the node's local JSON-RPC API (``[rpc] enabled = true`` in its
config; ``common.open_client``). ``trade`` quotes first, prints the route, then executes it and prints
the certified fills. Rendering functions return rich renderables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console, Group
from rich.table import Table

from p2pgrid.cli.common import node_slot, open_client
from p2pgrid.errors import P2PGridError
from p2pgrid.rpc.api import BookSnapshot, Execution, RouteQuote, TradeView
from p2pgrid.rpc.client import calls
from p2pgrid.units import format_price
from p2pgrid.wire import Side


def render_book(book: BookSnapshot) -> Table:
    table = Table(title=f"book {book.zone} slot {book.slot}", expand=False)
    table.add_column("bid Wh", justify="right")
    table.add_column("bid price", justify="right")
    table.add_column("ask price", justify="right")
    table.add_column("ask Wh", justify="right")
    for i in range(max(len(book.bids), len(book.asks), 1)):
        bid = book.bids[i] if i < len(book.bids) else None
        ask = book.asks[i] if i < len(book.asks) else None
        table.add_row(str(bid.qty_wh) if bid else "", format_price(bid.price) if bid else "",
                      format_price(ask.price) if ask else "", str(ask.qty_wh) if ask else "")
    return table


def render_quote(quote: RouteQuote) -> Table:
    table = Table(title=f"route: {quote.side.value} {quote.filled_wh}/{quote.requested_wh} Wh, "
                        f"{quote.value_uc} µc, average {format_price(quote.average_price)}")
    table.add_column("venue")
    table.add_column("Wh", justify="right")
    table.add_column("µc", justify="right")
    for leg in quote.legs:
        table.add_row(leg.venue.value, str(leg.qty_wh), str(leg.value_uc))
    return table


def render_trades(trades: tuple[TradeView, ...] | list[TradeView], title: str = "trades") -> Table:
    table = Table(title=title)
    for name, justify in (("slot", "left"), ("venue", "left"), ("buyer", "left"), ("seller", "left"),
                          ("Wh", "right"), ("price", "right"), ("µc", "right"), ("final", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for t in trades:
        table.add_row(str(t.slot), t.venue.value, t.buyer.hex()[:8], t.seller.hex()[:8], str(t.qty_wh),
                      format_price(t.price), str(t.value_uc), "yes" if t.certified else "no")
    return table


def render_execution(execution: Execution) -> Group:
    return Group(render_trades(execution.trades, f"filled {execution.filled_wh}/{execution.requested_wh} Wh "
                                                 f"for {execution.value_uc} µc"))


def do_book(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        info = client.call(calls.node_info())
        book = client.call(calls.book_get(info.zone, node_slot(args.slot, info), args.depth))
    Console().print(render_book(book))
    return 0


def do_trade(args: argparse.Namespace) -> int:
    side = Side(args.side)
    with open_client(args.data_dir) as client:
        info = client.call(calls.node_info())
        slot = node_slot(args.slot, info)
        quote = client.call(calls.route_quote(info.zone, slot, side, args.qty, args.limit))
        console = Console()
        console.print(render_quote(quote))
        if quote.filled_wh == 0:
            raise P2PGridError("nothing to trade within the limit")
        execution = client.call(calls.trade_execute(info.zone, slot, side, args.qty, args.limit))
    console.print(render_execution(execution))
    return 0


def do_trades(args: argparse.Namespace) -> int:
    with open_client(args.data_dir) as client:
        trades = client.call(calls.trade_list(0, args.limit))
    Console().print(render_trades(trades))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def node_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
        parser.add_argument("--slot", default="next", help="next, +N, or a slot start in Unix seconds")

    book = subparsers.add_parser("book", help="the running node's order book for a slot")
    node_args(book)
    book.add_argument("--depth", type=int, default=10, help="price levels per side")
    book.set_defaults(func=do_book)

    trade = subparsers.add_parser("trade", help="quote, then buy or sell through the running node")
    trade.add_argument("side", choices=("buy", "sell"))
    trade.add_argument("qty", type=int, metavar="QTY_WH")
    trade.add_argument("--limit", type=int, default=None, metavar="MICRO_PER_KWH", help="limit price, µc/kWh")
    node_args(trade)
    trade.set_defaults(func=do_trade)

    trades = subparsers.add_parser("trades", help="the running node's certified trades")
    trades.add_argument("--data-dir", type=Path, required=True, help="the running node's data dir")
    trades.add_argument("--limit", type=int, default=50)
    trades.set_defaults(func=do_trades)
