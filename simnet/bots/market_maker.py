"""An example trading bot: a market maker quoting around the pool price (or the book mid).

Run it against a node's local RPC::

    python -m simnet.bots.market_maker --rpc http://127.0.0.1:8645/ --token-file ~/.p2pgrid/rpc.token

Each round it cancels its live quotes, reads the book, the pools and its own trades in one batch,
then places one bid and one ask for the chosen slot (by default the first slot open for trading):

* **reference price**: the energy-weighted marginal price of the slot's live pools; without pools,
  the book mid; with a one-sided book, that side's best price; with nothing, it waits.
* **spread**: bid = ref − half-spread − skew, ask = ref + half-spread − skew.
* **inventory**: net Wh bought in this slot (from its trades). Quotes skew against inventory
  (long → lower prices to sell more) and sizes shrink so a full fill of either quote can never
  take inventory beyond ±``max_inventory_wh``.

The rules are pure functions (``reference_price``, ``inventory_wh``, ``plan_quotes``); ``run``
is the loop, on the blocking ``RpcClient``. Ctrl-C cancels the live quotes before exiting.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

from p2pgrid.errors import P2PGridError
from p2pgrid.rpc.api import BookSnapshot, PoolView, TradeView
from p2pgrid.rpc.client import RpcCallError, RpcClient, calls
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side

PPM = 1_000_000


@dataclass(frozen=True)
class MakerParams:
    spread_ppm: int = 20_000            # full bid-ask spread, parts per million of the reference
    quote_wh: int = 500                 # size of each quote
    max_inventory_wh: int = 5_000       # |net Wh bought| never beyond this
    skew_ppm: int = 10_000              # price shift at full inventory, ppm of the reference

    def __post_init__(self) -> None:
        if self.spread_ppm < 0 or self.quote_wh <= 0 or self.max_inventory_wh <= 0 or self.skew_ppm < 0:
            raise ValueError("market maker params must be positive (spread and skew may be 0)")


@dataclass(frozen=True)
class Quote:
    side: Side
    qty_wh: int
    price: int


def reference_price(book: BookSnapshot, pools: Iterable[PoolView]) -> int | None:
    """Pool price weighted by pool energy; else book mid; else the one best price; else None."""
    live = [p for p in pools if not p.frozen and p.energy_wh > 0 and p.price > 0]
    if live:
        return sum(p.price * p.energy_wh for p in live) // sum(p.energy_wh for p in live)
    best_bid = book.bids[0].price if book.bids else None
    best_ask = book.asks[0].price if book.asks else None
    if best_bid is not None and best_ask is not None:
        return (best_bid + best_ask) // 2
    return best_bid if best_bid is not None else best_ask


def inventory_wh(trades: Iterable[TradeView], account: bytes, zone: str, slot: int) -> int:
    """Net energy bought (+) or sold (−) by ``account`` in one (zone, slot)."""
    net = 0
    for t in trades:
        if t.zone == zone and t.slot == slot:
            net += t.qty_wh if t.buyer == account else -t.qty_wh if t.seller == account else 0
    return net


def plan_quotes(reference: int, inventory: int, params: MakerParams) -> list[Quote]:
    """Bid and ask around ``reference``, skewed and sized by ``inventory`` (see module doc)."""
    half_spread = reference * params.spread_ppm // (2 * PPM)
    bounded = max(-params.max_inventory_wh, min(params.max_inventory_wh, inventory))
    skew = reference * params.skew_ppm * bounded // (PPM * params.max_inventory_wh)
    bid = Quote(Side.BUY, min(params.quote_wh, params.max_inventory_wh - inventory), reference - half_spread - skew)
    ask = Quote(Side.SELL, min(params.quote_wh, params.max_inventory_wh + inventory), reference + half_spread - skew)
    return [q for q in (bid, ask) if q.qty_wh > 0 and q.price > 0]


def first_tradable_slot(slot_length_s: int, horizon_s: int, gate_s: int, now_ms: int) -> int:
    return SlotRules(length_s=slot_length_s, horizon_s=horizon_s, gate_s=gate_s).tradable_slots(now_ms)[0]


def run(client: RpcClient, *, zone: str | None, slot: int | None, params: MakerParams,
        rounds: int | None, interval_s: float, say: Callable[[str], Any] = print,
        sleep: Callable[[float], Any] = time.sleep) -> list[bytes]:
    """Quote for ``rounds`` rounds (None: until interrupted). Returns the ids still live."""
    info = client.call(calls.node_info())
    zone = zone or info.zone
    if slot is None:
        slot = first_tradable_slot(info.slot_length_s, info.horizon_s, info.gate_s, info.now_ms)
    say(f"market maker for {zone} slot {slot} as {info.account.hex()[:16]}…")
    live: list[bytes] = []
    done = 0
    try:
        while rounds is None or done < rounds:
            if live:
                for order_id, result in zip(live, client.batch([calls.order_cancel(i) for i in live])):
                    if isinstance(result, RpcCallError):
                        say(f"  cancel {order_id.hex()[:8]}: {result.message}")   # filled meanwhile
                live = []
            book, pools, trades = client.batch([calls.book_get(zone, slot, depth=1), calls.pool_list(zone, slot),
                                                calls.trade_list(0, 10_000)])
            for result in (book, pools, trades):
                if isinstance(result, RpcCallError):
                    raise result
            reference = reference_price(book, pools)
            inventory = inventory_wh(trades, info.account, zone, slot)
            if reference is None:
                say("  no pool and an empty book: nothing to quote around yet")
            else:
                quotes = plan_quotes(reference, inventory, params)
                placed = client.batch([calls.order_place(zone, slot, q.side, q.qty_wh, q.price) for q in quotes])
                for quote, result in zip(quotes, placed):
                    if isinstance(result, RpcCallError):
                        say(f"  {quote.side.value} refused: {result.message}")
                    else:
                        live.append(result.order_id)
                say(f"  ref {reference} µc/kWh, inventory {inventory:+d} Wh: "
                    + ", ".join(f"{q.side.value} {q.qty_wh} Wh @ {q.price}" for q in quotes))
            done += 1
            if rounds is None or done < rounds:
                sleep(interval_s)
    except KeyboardInterrupt:
        for order_id in live:
            client.call(calls.order_cancel(order_id))
        say(f"cancelled {len(live)} live quotes")
        live = []
    return live


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simnet.bots.market_maker", description=__doc__.split("\n")[0])
    parser.add_argument("--rpc", required=True, help="node RPC URL, e.g. http://127.0.0.1:8645/")
    parser.add_argument("--token-file", type=Path, required=True, help="the node's rpc.token (mode 0600)")
    parser.add_argument("--zone", help="zone to quote in (default: the node's)")
    parser.add_argument("--slot", type=int, help="slot start, Unix s (default: first tradable slot)")
    parser.add_argument("--spread-ppm", type=int, default=MakerParams.spread_ppm)
    parser.add_argument("--quote-wh", type=int, default=MakerParams.quote_wh)
    parser.add_argument("--max-inventory-wh", type=int, default=MakerParams.max_inventory_wh)
    parser.add_argument("--skew-ppm", type=int, default=MakerParams.skew_ppm)
    parser.add_argument("--rounds", type=int, help="stop after this many rounds (default: run until Ctrl-C)")
    parser.add_argument("--interval-s", type=float, default=5.0, help="seconds between rounds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        params = MakerParams(args.spread_ppm, args.quote_wh, args.max_inventory_wh, args.skew_ppm)
        with RpcClient(args.rpc, token_file=args.token_file) as client:
            run(client, zone=args.zone, slot=args.slot, params=params, rounds=args.rounds,
                interval_s=args.interval_s)
    except (P2PGridError, ValueError, httpx.HTTPError) as exc:
        print(f"market_maker: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
