"""Scale benchmark: ``python -m simnet.bench scale [--transport libp2p|memory] [--nodes N] [--hours H]``.

Runs the community scenario with ``N`` participants (households:consumers:stations in the demo's
12:3:1 proportions, plus the operator) for ``H`` simulated hours and prints wall time, CPU time,
peak memory (whole run and per node), certified trades, gossip delivery ratio and whether every
end check passed.

* ``--transport libp2p``: real node processes on 127.0.0.1 (the issue's question: the largest
  community that runs one simulated day in ≤ 15 min with 100 % order delivery; goal ≥ 30 nodes).
* ``--transport memory``: every node in this process over the in-memory transport, same node code,
  signatures and ledger (goal: 1,000 nodes for one simulated week in ≤ 1 h).

CPU and memory of node processes are read from ``getrusage(RUSAGE_CHILDREN)`` after they exit.
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console

from simnet.scenario import load_scenario
from simnet.simulate import simulate

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "community.toml"


def participants(nodes: int) -> dict[str, int]:
    """``nodes`` traders split 12:3:1 like the demo community (at least one station)."""
    stations = max(1, round(nodes / 16))
    consumers = max(0, round(nodes * 3 / 16))
    return {"households": max(1, nodes - stations - consumers), "consumers": consumers, "stations": stations}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("libp2p", "memory"), default="memory")
    parser.add_argument("--nodes", type=int, default=60, help="trading participants (the operator comes on top)")
    parser.add_argument("--hours", type=float, default=24.0, help="simulated hours")
    parser.add_argument("--speed", type=float, default=None, help="simulated seconds per real second")
    parser.add_argument("--out", type=Path, default=None, help="keep the run's output here")
    args = parser.parse_args(argv)

    scenario = load_scenario(SCENARIO).with_overrides(transport=args.transport, hours=args.hours, speed=args.speed,
                                                      **participants(args.nodes))
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        result = simulate(scenario, out, console=Console(quiet=True), live=False)
        wall = time.perf_counter() - wall_start
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (time.process_time() - cpu_start) + children.ru_utime + children.ru_stime
        peak_mib = max(own.ru_maxrss, children.ru_maxrss) / 1024   # Linux reports KiB
        n = args.nodes + 1
        delivery = result.kpis.get("gossip_delivery_ratio", {}).get("value")
        print(f"scale benchmark: {n} nodes ({scenario.households} households, {scenario.consumers} consumers, "
              f"{scenario.stations} station(s), operator) over {args.transport}, {args.hours:g} simulated h "
              f"at {scenario.speed:g}×")
        print(f"  wall time              {wall:,.1f} s")
        print(f"  CPU time               {cpu:,.1f} s ({cpu / n:,.2f} s per node)")
        peak_note = "whole process" if args.transport == "memory" else "largest node process"
        print(f"  peak memory            {peak_mib:,.0f} MiB ({peak_note})"
              + (f", {peak_mib / n:,.1f} MiB per node" if args.transport == "memory" else ""))
        print(f"  certified trades       {result.kpis.get('trades', 0)}")
        print(f"  gossip delivery ratio  {delivery}")
        print(f"  end checks             {'all passed' if result.passed else 'FAILED'}")
        print("  goals: libp2p ≥ 30 nodes for one simulated day in ≤ 15 min with 100 % delivery; "
              "memory 1,000 nodes for a simulated week in ≤ 1 h")
    return 0 if result.passed else 1
