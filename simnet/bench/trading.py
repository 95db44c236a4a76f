"""Trading benchmark: ``python -m simnet.bench trading [--nodes 30] [--transport memory|libp2p]``.

A cluster of real trading services (transport, ledger store, ledger service with 4 validators,
order gossip, trading service; ``p2pgrid.trading.testing``) in this one process. Half the
non-validator nodes sell, half buy. While sellers keep gossiping fresh offers (the gossip load),
every buyer repeatedly buys from the book through ``TradingService.execute``:

* **order → certified fill latency**: from the moment a seller signs an offer until a buyer's
  ``execute`` returns with that offer's trade certified (gossip + lock + take + fill), p50 / p99;
* **take latency**: the duration of one ``execute`` (lock, take, fill certified), p50 / p99;
* **certified trades/s**: trades certified over the measuring window, all buyers together.

All nodes share this machine's cores (2 here) and one Python process, so the figures are a floor
for what separate processes reach. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.trading.testing import TradingNode, fund, open_trading_cluster
from p2pgrid.wire import Side, Source

CREDITS = 10**12


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(nodes_n: int, transport: str, seconds: float, offers_per_tick: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_trading_cluster(transport, nodes_n, Path(tmp)) as nodes:
            await fund(nodes, CREDITS)
            traders = nodes[4:] if nodes_n > 6 else nodes[1:]
            sellers, buyers = traders[: len(traders) // 2], traders[len(traders) // 2:]
            slot = nodes[0].trading.config.slot_rules.tradable_slots(nodes[0].trading.clock())[2]
            signed_at: dict[bytes, float] = {}
            order_to_fill: list[float] = []
            take_times: list[float] = []
            trades = 0

            async def sell(node: TradingNode) -> None:
                price = 150_000
                while True:
                    for _ in range(offers_per_tick):
                        signed = node.trading.place_order(Side.SELL, 200, price, slot, green=True, source=Source.PV)
                        signed_at[signed.body.order_id] = time.perf_counter()
                        price += 1
                    await trio.sleep(0.5)

            async def buy(node: TradingNode) -> None:
                nonlocal trades
                while True:
                    if not node.trading.books.resting(slot, Side.BUY, node.account, node.trading.clock()):
                        await trio.sleep(0.05)
                        continue
                    start = time.perf_counter()
                    report = await node.trading.execute(Side.BUY, 200, slot)
                    done = time.perf_counter()
                    if report.executions:
                        take_times.append(done - start)
                        trades += len(report.executions)
                        for execution in report.executions:
                            if execution.order_id in signed_at:
                                order_to_fill.append(done - signed_at[execution.order_id])

            async with trio.open_nursery() as nursery:
                for node in sellers:
                    nursery.start_soon(sell, node)
                await trio.sleep(1.0)   # warm-up: first offers spread
                trades_before, started = trades, time.perf_counter()
                for node in buyers:
                    nursery.start_soon(buy, node)
                await trio.sleep(seconds)
                elapsed = time.perf_counter() - started
                nursery.cancel_scope.cancel()
            # Takes cut off by the end of the window may still certify: wait for every node to agree.
            converge_start = time.perf_counter()
            with trio.move_on_after(60):
                while len({(n.ledger.state.height, state_root(n.ledger.state)) for n in nodes}) > 1:
                    await trio.sleep(0.1)
            roots = {state_root(n.ledger.state) for n in nodes}
            return {
                "nodes": nodes_n, "sellers": len(sellers), "buyers": len(buyers),
                "trades": trades - trades_before, "trades_per_s": (trades - trades_before) / elapsed,
                "order_to_fill_p50_ms": 1000 * percentile(order_to_fill, 0.5),
                "order_to_fill_p99_ms": 1000 * percentile(order_to_fill, 0.99),
                "take_p50_ms": 1000 * percentile(take_times, 0.5), "take_p99_ms": 1000 * percentile(take_times, 0.99),
                "state_roots_equal": float(len(roots) == 1),
                "converge_after_window_s": time.perf_counter() - converge_start,
                "money_total": float(nodes[0].ledger.state.money_total()),
            }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench trading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--transport", choices=("memory", "libp2p"), default="memory")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window, real seconds")
    parser.add_argument("--offers-per-tick", type=int, default=2, help="offers per seller every 0.5 s")
    args = parser.parse_args(argv)
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    print(f"trading benchmark: {args.nodes} nodes over {args.transport}, {args.seconds:.0f} s window "
          "(all nodes in one process on this machine)")
    figures = trio.run(run, args.nodes, args.transport, args.seconds, args.offers_per_tick)
    for name, value in figures.items():
        print(f"  {name:<22} {value:,.1f}")
    print("  goal: order→certified fill p50 < 100 ms, p99 < 500 ms on loopback "
          "(anchors: GSY DEX 6 s blocks, Quartierstrom 30 s)")
    return 0
