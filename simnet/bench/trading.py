"""Trading benchmark: ``python -m simnet.bench trading [--nodes 30] [--rate 5] [--mode both]``.

A cluster of real trading services (transport, ledger store, ledger service with 4 validators,
order gossip, trading service; ``p2pgrid.trading.testing``) in this one process. The first four
nodes are the committee; of the others, half sell and half buy.

**Gossip load.** Every seller signs ``--offers-per-tick`` fresh offers (``--offer-wh`` each, so
one offer serves several 200 Wh buys and the closed loop is never short of supply) every 0.5 s at
seeded random prices and cancels its oldest beyond ``--live-offers``, so order gossip (offers and cancels) runs
all the time while the book stays the size a real seller keeps, not a pile that grows for ever.

**Open loop** (``--mode open``): buy arrivals form a Poisson process of ``--rate`` trades/s
(seeded), each handed to a buyer in turn and run as its own task, whatever is still in flight.
Figures:

* **order → certified fill**: from the arrival instant (the buy order's scheduled time, so time
  spent waiting for a busy process counts too) until ``TradingService.execute`` returns with the
  trade certified (quote, lock certified, take, maker's fill certified), p50 / p99;
* **take**: the duration of ``execute`` alone, p50 / p99;
* **offer age**: from the seller signing the offer to its fill (resting time included; context);
* **CPU per trade**: this process's CPU time over the window per certified trade (gossip load
  included), and CPU busy % (100 = one core): less sensitive to other work on the machine than
  the latencies, so it is the figure to compare code changes by.

Before the measuring windows the cluster runs ``--idle`` seconds with no orders at all (CPU busy
% idle: what the nodes' periodic services cost doing nothing), then ``--warmup`` seconds of offer
gossip only (CPU busy % gossip only).

**Closed loop** (``--mode closed``): every buyer buys again as soon as its last buy returned:
saturation throughput (certified trades/s); its latencies are queueing under saturation.

All nodes share this machine's cores and one Python process, so each node's work (every node
verifies and stores every certified batch and every order) is paid ``--nodes`` times on the same
cores: the figures are a floor for what separate machines reach. The machine's 1-minute load
average before and after is printed: other work on the machine moves the figures. Figures, never
assertions.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pgrid.errors import P2PGridError
from p2pgrid.ledger.chain import state_root
from p2pgrid.trading.testing import TradingNode, fund, open_trading_cluster
from p2pgrid.wire import Side, Source

CREDITS = 10**12
BUY_WH = 200
SELL_TICK_S = 0.5
GOAL_P50_MS, GOAL_P99_MS = 100.0, 500.0
ANCHORS_MS = (("GSY DEX 6 s blocks", 6_000.0), ("Quartierstrom 30 s", 30_000.0))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Phase:
    """What one measuring window saw."""

    name: str
    seconds: float = 0.0
    cpu_s: float = 0.0               # this process's CPU time over the window (all nodes)
    offered: int = 0                 # buy arrivals (open loop) or attempts (closed loop)
    trades: int = 0
    empty_book: int = 0              # arrivals that found nothing to buy
    failed: int = 0                  # executes that raised or came back without a trade
    failures: Counter[str] = field(default_factory=Counter)   # why, by the first words of the reason
    order_to_fill: list[float] = field(default_factory=list)
    take: list[float] = field(default_factory=list)
    offer_age: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        return {
            "offered": self.offered, "trades": self.trades, "empty_book": self.empty_book, "failed": self.failed,
            "trades_per_s": self.trades / self.seconds if self.seconds else float("nan"),
            "cpu_ms_per_trade": 1000 * self.cpu_s / self.trades if self.trades else float("nan"),
            "cpu_busy_percent": 100 * self.cpu_s / self.seconds if self.seconds else float("nan"),
            "order_to_fill_p50_ms": 1000 * percentile(self.order_to_fill, 0.5),
            "order_to_fill_p99_ms": 1000 * percentile(self.order_to_fill, 0.99),
            "take_p50_ms": 1000 * percentile(self.take, 0.5),
            "take_p99_ms": 1000 * percentile(self.take, 0.99),
            "offer_age_p50_ms": 1000 * percentile(self.offer_age, 0.5),
        }


def _reason(problems: tuple[str, ...]) -> str:
    """The gist of why an execute came back empty (order ids and details cut off)."""
    if not problems:
        return "nothing routed"
    return problems[-1].split(": ", 1)[-1][:50]


class Market:
    """The traders of a running cluster and what they measured."""

    def __init__(self, nodes: list[TradingNode], seed: int) -> None:
        traders = nodes[4:] if len(nodes) > 6 else nodes[1:]
        self.nodes = nodes
        self.sellers = traders[: len(traders) // 2]
        self.buyers = traders[len(traders) // 2:]
        self.slot = nodes[0].trading.config.slot_rules.tradable_slots(nodes[0].trading.clock())[2]
        self.rng = random.Random(seed)
        self.signed_at: dict[bytes, float] = {}
        self.gossip_items = 0
        self.phase = Phase("warm-up")

    async def sell(self, node: TradingNode, offers_per_tick: int, live_offers: int, offer_wh: int) -> None:
        live: deque[bytes] = deque()
        while True:
            for _ in range(offers_per_tick):
                price = self.rng.randrange(140_000, 160_000)
                signed = node.trading.place_order(Side.SELL, offer_wh, price, self.slot, green=True, source=Source.PV)
                self.signed_at[signed.body.order_id] = time.perf_counter()
                live.append(signed.body.order_id)
                self.gossip_items += 1
            while len(live) > live_offers:
                order_id = live.popleft()
                if order_id in node.trading.own_orders:
                    node.trading.cancel_order(order_id)
                    self.gossip_items += 1
            await trio.sleep(SELL_TICK_S)

    async def buy_once(self, node: TradingNode, arrived: float) -> None:
        """One buy of ``BUY_WH``, counted in the current phase."""
        phase = self.phase
        phase.offered += 1
        if not node.trading.books.resting(self.slot, Side.BUY, node.account, node.trading.clock()):
            phase.empty_book += 1
            await trio.sleep(0.05)
            return
        start = time.perf_counter()
        try:
            report = await node.trading.execute(Side.BUY, BUY_WH, self.slot)
        except P2PGridError as exc:
            phase.failed += 1
            phase.failures[f"{type(exc).__name__}: {str(exc)[:40]}"] += 1
            return
        done = time.perf_counter()
        if not report.executions:
            phase.failed += 1
            phase.failures[_reason(report.problems)] += 1
            return
        phase.trades += len(report.executions)
        phase.take.append(done - start)
        phase.order_to_fill.append(done - arrived)
        for execution in report.executions:
            if execution.order_id in self.signed_at:
                phase.offer_age.append(done - self.signed_at[execution.order_id])

    async def open_loop(self, rate: float, seconds: float) -> Phase:
        """Poisson arrivals at ``rate`` per second, round robin over the buyers."""
        phase = self.phase = Phase(f"open loop at {rate:g} trades/s")
        started, cpu_started = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            arrival, turn = 0.0, 0
            while True:
                arrival += self.rng.expovariate(rate)
                if arrival >= seconds:
                    break
                await trio.sleep(max(0.0, started + arrival - time.perf_counter()))
                nursery.start_soon(self.buy_once, self.buyers[turn % len(self.buyers)], started + arrival)
                turn += 1
            # Buys still in flight at the end of the window finish and count (their latency is real).
        phase.seconds = time.perf_counter() - started
        phase.cpu_s = time.process_time() - cpu_started
        return phase

    async def closed_loop(self, seconds: float) -> Phase:
        """Every buyer buys again as soon as its last buy returned."""
        phase = self.phase = Phase("closed loop (saturation)")

        async def keep_buying(node: TradingNode) -> None:
            while True:
                await self.buy_once(node, time.perf_counter())

        started, cpu_started = time.perf_counter(), time.process_time()
        async with trio.open_nursery() as nursery:
            for node in self.buyers:
                nursery.start_soon(keep_buying, node)
            await trio.sleep(seconds)
            phase.seconds = time.perf_counter() - started
            phase.cpu_s = time.process_time() - cpu_started
            nursery.cancel_scope.cancel()
        return phase

    async def converge(self, timeout_s: float = 60.0) -> tuple[float, bool]:
        """Until every node holds the same certified state; returns (seconds taken, roots equal)."""
        start = time.perf_counter()
        with trio.move_on_after(timeout_s):
            while len({n.ledger.state.height for n in self.nodes}) > 1:
                await trio.sleep(0.1)
        roots = {state_root(n.ledger.state) for n in self.nodes}
        return time.perf_counter() - start, len(roots) == 1


async def run(args: argparse.Namespace) -> tuple[list[Phase], dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_trading_cluster(args.transport, args.nodes, Path(tmp)) as nodes:
            await fund(nodes, CREDITS)
            market = Market(nodes, args.seed)
            phases: list[Phase] = []
            # Idle: the cluster's own periodic work (ticks, pulls, housekeeping) with no orders
            # and no trades: what every node costs doing nothing.
            cpu_started, started = time.process_time(), time.perf_counter()
            await trio.sleep(args.idle)
            idle_cpu_busy = 100 * (time.process_time() - cpu_started) / (time.perf_counter() - started)
            gossip_started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for node in market.sellers:
                    nursery.start_soon(market.sell, node, args.offers_per_tick, args.live_offers, args.offer_wh)
                cpu_started, started = time.process_time(), time.perf_counter()
                await trio.sleep(args.warmup)   # the first offers spread
                gossip_cpu_busy = 100 * (time.process_time() - cpu_started) / (time.perf_counter() - started)
                if args.mode in ("open", "both"):
                    phases.append(await market.open_loop(args.rate, args.seconds))
                if args.mode in ("closed", "both"):
                    phases.append(await market.closed_loop(args.seconds))
                gossip_s = time.perf_counter() - gossip_started
                nursery.cancel_scope.cancel()
            converge_s, roots_equal = await market.converge()
            cluster = {
                "sellers": len(market.sellers), "buyers": len(market.buyers),
                "cpu_busy_percent_idle": idle_cpu_busy,
                "offer_and_cancel_items_per_s": market.gossip_items / gossip_s,
                "cpu_busy_percent_gossip_only": gossip_cpu_busy,
                "converge_after_window_s": converge_s, "state_roots_equal": float(roots_equal),
                "money_total": float(nodes[0].ledger.state.money_total()),
            }
            return phases, cluster


def print_phase(phase: Phase) -> None:
    figures = phase.figures()
    print(f"\n{phase.name}, {phase.seconds:.1f} s window:")
    for name, value in figures.items():
        print(f"  {name:<24} {value:>10,.1f}")
    for reason, count in phase.failures.most_common(3):
        print(f"  failed because {reason!r}: {count}")
    p50, p99 = figures["order_to_fill_p50_ms"], figures["order_to_fill_p99_ms"]
    print(f"  vs goal:    p50 {p50:,.0f} ms = {p50 / GOAL_P50_MS:.2f} × 100 ms, "
          f"p99 {p99:,.0f} ms = {p99 / GOAL_P99_MS:.2f} × 500 ms (≤ 1 meets the goal)")
    for anchor, ms in ANCHORS_MS:
        print(f"  vs {anchor}: p50 {ms / p50:,.1f}× faster, p99 {ms / p99:,.1f}× faster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench trading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--transport", choices=("memory", "libp2p"), default="memory")
    parser.add_argument("--mode", choices=("open", "closed", "both"), default="both",
                        help="open loop at --rate, closed loop (saturation), or one after the other")
    parser.add_argument("--rate", type=float, default=5.0, help="open loop: offered buys per second (Poisson)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measuring window per mode, real seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of offer gossip before measuring")
    parser.add_argument("--offers-per-tick", type=int, default=1, help="offers per seller every 0.5 s")
    parser.add_argument("--live-offers", type=int, default=10, help="offers a seller keeps; older ones are cancelled")
    parser.add_argument("--offer-wh", type=int, default=2_000,
                        help=f"size of an offer; a buy takes {BUY_WH} Wh, so one offer serves several buys")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds the cluster runs with no orders before the gossip load starts (idle CPU)")
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    print(f"trading benchmark: {args.nodes} nodes over {args.transport}, all in one process on this machine; "
          f"gossip load {args.offers_per_tick} offers per seller every {SELL_TICK_S} s, "
          f"{args.live_offers} live per seller")
    load_before = os.getloadavg()[0]
    phases, cluster = trio.run(run, args)
    cluster["machine_load_1min_before"] = load_before
    cluster["machine_load_1min_after"] = os.getloadavg()[0]
    for name, value in cluster.items():
        print(f"  {name:<28} {value:>10,.1f}")
    for phase in phases:
        print_phase(phase)
    print(f"\ngoal: order→certified fill p50 < {GOAL_P50_MS:.0f} ms, p99 < {GOAL_P99_MS:.0f} ms on loopback "
          "(anchors: GSY DEX 6 s blocks, Quartierstrom 30 s)")
    return 0
