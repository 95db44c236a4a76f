"""``python -m simnet.bench all [--quick] [--out bench-out/bench.json]``: every headline figure.

Runs the headline benchmarks one after the other in small, fixed sizes (``--quick``: about two
minutes on a 2-core machine; without it, sizes closer to each benchmark's own defaults) and
prints every headline figure **as a ratio to a baseline measured in the same run**, so a figure
taken on a busy machine still compares with one taken on a quiet one:

========  ===================================  =============================================
section   headline                             baseline (same run)
========  ===================================  =============================================
market    book ops/s                           a bare SortedDict book on the same op sequence
market    lean AMM quotes/s (``out_exact_in``)  a bare Uniswap v2 getAmountOut, same amounts
ledger    certified entries/s                  the Ed25519 verify floor (verifies/s, 1 core)
ledger    sync entries/s                       the Ed25519 verify floor
gossip    p99 latency, p2pgrid order gossip    raw py-libp2p gossipsub at the same message load
trading   CPU ms per certified trade           a work unit: CPU ms an idle process takes to sign,
                                               encode, decode and verify 100 orders
trading   idle CPU ms per s (no orders)        the work unit (the ratio: work units per second)
trading   p50 / p99 order → certified fill     the goal (100 / 500 ms): no same-run baseline
                                               exists for a latency; the load average is beside
========  ===================================  =============================================

Every figure, the baselines and the machine's load average before and after go to a JSON file
(``--out``, default ``bench-out/bench.json``; the directory is created). If that file exists
already, its headline ratios are printed beside the new ones ("previous"), so a submission shows
what it changed. A section that fails is reported (traceback on stderr, ``errors`` in the JSON)
and the others still run; the exit code is then 1. Benchmarks measure; nothing here asserts a
time, and CI runs this report-only (``.ci/run``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("bench-out") / "bench.json"
SCHEMA = 1


@dataclass(frozen=True)
class Sizes:
    """How big each section runs."""

    book_resting: int
    book_ops: int
    amm_quotes: int
    repeats: int
    ledger_transport: str
    ledger_entries: int
    ledger_sync_entries: int
    gossip_nodes: int
    gossip_seconds: float
    gossip_rounds: int
    trading_nodes: int
    trading_seconds: float


QUICK = Sizes(book_resting=20_000, book_ops=50_000, amm_quotes=50_000, repeats=3, ledger_transport="libp2p",
              ledger_entries=2_000, ledger_sync_entries=10_000, gossip_nodes=6, gossip_seconds=4.0,
              gossip_rounds=1, trading_nodes=12, trading_seconds=6.0)
FULL = Sizes(book_resting=50_000, book_ops=200_000, amm_quotes=200_000, repeats=3, ledger_transport="libp2p",
             ledger_entries=5_000, ledger_sync_entries=100_000, gossip_nodes=10, gossip_seconds=6.0,
             gossip_rounds=2, trading_nodes=30, trading_seconds=20.0)
# For tests of this module only: every section, seconds each (figures meaningless).
TINY = Sizes(book_resting=500, book_ops=1_000, amm_quotes=1_000, repeats=1, ledger_transport="memory",
             ledger_entries=50, ledger_sync_entries=300, gossip_nodes=3, gossip_seconds=1.0,
             gossip_rounds=1, trading_nodes=6, trading_seconds=1.0)
SECTIONS = ("market", "ledger", "gossip", "trading")


@dataclass(frozen=True)
class Headline:
    """One headline figure beside its baseline; ``ratio`` is what to compare between runs."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    goal: str

    def line(self, previous: float | None) -> str:
        before = f"   previous {previous:8.3f}" if previous is not None else ""
        return (f"  {self.name:<34} {self.value:>12,.1f} {self.unit:<10} ratio {self.ratio:8.3f}  "
                f"[{self.baseline} {self.baseline_value:,.1f}]  goal {self.goal}{before}")


def work_unit_ms(orders: int = 100) -> float:
    """CPU ms this process takes to sign, encode, decode and verify ``orders`` orders: the trading
    section's yardstick, measured before any cluster runs (best of 5)."""
    from p2pgrid.identity import NodeKey
    from p2pgrid.net.testing import make_order
    from p2pgrid.net.validation import OrderRules
    from p2pgrid.units import SlotRules
    from p2pgrid.wire import Order, decode_signed, sign

    key = NodeKey(bytes(range(32)))
    rules = OrderRules(zone="bench", slot_rules=SlotRules())
    now = 1_700_000_000_000
    slot = rules.slot_rules.tradable_slots(now)[0]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        for number in range(orders):
            decode_signed(sign(make_order(key, rules, now, number, slot=slot), key).encoded, Order)
        best = min(best, time.process_time() - start)
    return 1000 * best


def market_section(sizes: Sizes) -> tuple[list[Headline], dict[str, Any]]:
    from simnet.bench import market

    book = market.measure_book(sizes.book_resting, sizes.book_ops, sizes.repeats, seed=1)
    _, _, pools = market._router_case(10, 1, seed=1)
    quotes = market.measure_amm(pools[0], sizes.repeats, seed=1, count=sizes.amm_quotes)
    headlines = [
        Headline("book ops/s", book["book_ops_per_s"], "ops/s", "bare SortedDict book", book["bare_book_ops_per_s"],
                 book["book_ratio"], ">= 0.9"),
        Headline("AMM lean quotes/s (out_exact_in)", quotes["out_exact_in_per_s"], "quotes/s", "bare getAmountOut",
                 quotes["bare_get_amount_out_per_s"], quotes["quote_ratio"], ">= 0.5"),
        Headline("AMM full quotes/s (quote_exact_in)", quotes["quote_exact_in_per_s"], "quotes/s",
                 "bare getAmountOut", quotes["bare_get_amount_out_per_s"], quotes["full_quote_ratio"], "(display)"),
    ]
    return headlines, {"book": book, "amm": quotes}


def ledger_section(sizes: Sizes) -> tuple[list[Headline], dict[str, Any]]:
    import trio

    from simnet.bench import ledger

    figures = trio.run(lambda: ledger.measure(
        sizes.ledger_transport, entries=sizes.ledger_entries, latency_samples=20, paced_rate=200.0, paced_s=1.0,
        sync_entries=sizes.ledger_sync_entries, sync_chunk=4096, max_batch=256))
    floor = figures["verify_floor_per_s"]
    return [
        Headline(f"certified entries/s ({sizes.ledger_transport})", figures["certified_entries_per_s"], "entries/s",
                 "Ed25519 verify floor", floor, figures["certified_vs_verify_floor"], ">= 1,000 entries/s"),
        Headline("sync entries/s", figures["sync_entries_per_s"], "entries/s", "Ed25519 verify floor", floor,
                 figures["sync_vs_verify_floor"], ">= 0.65"),
    ], figures


def gossip_section(sizes: Sizes) -> tuple[list[Headline], dict[str, Any]]:
    from simnet.bench import gossip

    figures = gossip.measure(sizes.gossip_nodes, procs=2, seconds=sizes.gossip_seconds, rounds=sizes.gossip_rounds,
                             batch=25, seed=1)
    return [
        Headline(f"gossip p99, {sizes.gossip_nodes} libp2p nodes", figures["p2pgrid_p99_ms"], "ms",
                 "raw gossipsub p99", figures["raw_p99_ms"], figures["p99_ratio"], "<= 1.0"),
        Headline("gossip delivery", 100 * figures["p2pgrid_delivery"], "%", "raw gossipsub delivery %",
                 100 * figures["raw_delivery"],
                 figures["p2pgrid_delivery"] / figures["raw_delivery"] if figures["raw_delivery"] else float("nan"),
                 "100 %"),
    ], figures


def trading_section(sizes: Sizes) -> tuple[list[Headline], dict[str, Any]]:
    import trio

    from simnet.bench import trading

    unit = work_unit_ms()
    args = trading.build_parser().parse_args([
        "--nodes", str(sizes.trading_nodes), "--seconds", str(sizes.trading_seconds), "--mode", "both",
        "--warmup", str(min(3.0, sizes.trading_seconds)), "--idle", str(min(2.0, sizes.trading_seconds))])
    logging.getLogger("libp2p").setLevel(logging.ERROR)
    phases, cluster = trio.run(trading.run, args)
    by_name = {("open" if p.name.startswith("open") else "closed"): p.figures() for p in phases}
    open_loop, closed = by_name["open"], by_name["closed"]
    figures: dict[str, Any] = {"work_unit_ms": unit, "cluster": cluster, "open": open_loop, "closed": closed}
    nodes = sizes.trading_nodes
    return [
        Headline(f"trading CPU ms/trade, {nodes} nodes", open_loop["cpu_ms_per_trade"], "ms", "work unit (ms)",
                 unit, open_loop["cpu_ms_per_trade"] / unit, "<= 100 ms at 30 nodes"),
        Headline(f"trading idle CPU ms/s, {nodes} nodes", 10 * cluster["cpu_busy_percent_idle"], "ms/s",
                 "work unit (ms)", unit, 10 * cluster["cpu_busy_percent_idle"] / unit, "close to 0"),
        Headline("order → fill p50 at 5/s", open_loop["order_to_fill_p50_ms"], "ms", "goal", 100.0,
                 open_loop["order_to_fill_p50_ms"] / 100.0, "< 100 ms"),
        Headline("order → fill p99 at 5/s", open_loop["order_to_fill_p99_ms"], "ms", "goal", 500.0,
                 open_loop["order_to_fill_p99_ms"] / 500.0, "< 500 ms"),
        Headline("saturation trades/s", closed["trades_per_s"], "trades/s", "goal", 20.0,
                 closed["trades_per_s"] / 20.0, ">= 20 at 30 nodes"),
    ], figures


RUNNERS: dict[str, Callable[[Sizes], tuple[list[Headline], dict[str, Any]]]] = {
    "market": market_section, "ledger": ledger_section, "gossip": gossip_section, "trading": trading_section,
}


def _previous_ratios(path: Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
        return {h["name"]: float(h["ratio"]) for h in data.get("headlines", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about two minutes on 2 cores")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # tests of this module
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file written (default {DEFAULT_OUT})")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections ({','.join(SECTIONS)})")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    sections = [s for s in args.only.split(",") if s]
    unknown = [s for s in sections if s not in RUNNERS]
    if unknown:
        print(f"simnet.bench all: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}",
              file=sys.stderr)
        return 2
    previous = _previous_ratios(args.out)
    started, wall = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    load_before = os.getloadavg()
    print(f"simnet.bench all ({'tiny' if args.tiny else 'quick' if args.quick else 'full'} sizes), "
          f"{os.cpu_count()} cores, load average {' '.join(f'{x:.2f}' for x in load_before)}")
    headlines: list[Headline] = []
    figures: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    for section in sections:
        section_started = time.perf_counter()
        print(f"\n{section}:", flush=True)
        try:
            found, figures[section] = RUNNERS[section](sizes)
        except Exception:       # noqa: BLE001 - one broken section must not hide the others' figures
            errors[section] = traceback.format_exc()
            print("  FAILED (traceback on stderr)", flush=True)
            print(f"simnet.bench all: section {section} failed:\n{errors[section]}", file=sys.stderr, flush=True)
            continue
        finally:
            timings[section] = time.perf_counter() - section_started
        for headline in found:
            print(headline.line(previous.get(headline.name)), flush=True)
        headlines += found
    load_after = os.getloadavg()
    report = {
        "schema": SCHEMA, "started_utc": started, "wall_s": time.perf_counter() - wall,
        "sizes": {"name": "tiny" if args.tiny else "quick" if args.quick else "full", **asdict(sizes)},
        "machine": {"cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after,
                    "python": platform.python_version(), "platform": platform.platform()},
        "commit": _commit(), "section_wall_s": timings,
        "headlines": [asdict(h) for h in headlines], "figures": figures, "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in load_after)}; "
          f"{time.perf_counter() - wall:.0f} s in all; written to {args.out}")
    return 1 if errors else 0
