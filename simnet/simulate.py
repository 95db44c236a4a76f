"""One whole simulation: prepare the community, run it, check it, score it, report it.

``simulate(scenario, out_dir)`` returns a ``SimulationResult``; its ``exit_code`` is 0 when every
end check passed, 1 when one failed (or the run broke), 130 when interrupted (after writing the
report of what there is). Output in ``out_dir``: ``nodes/<name>/`` (each node's data dir and
logs), ``community.json``, ``scenario.toml`` (the scenario exactly as run), ``run.json``, ``checks.json``,
``kpis.json``, ``report.html`` (built from the JSON files: ``simnet.report``), ``plots/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from simnet.checks import CheckResult, run_checks
from simnet.community import Community, prepare_community
from simnet.kpis import SCENARIO_COPY, compute_kpis, method
from simnet.monitor import Snapshot, render_live
from simnet.report import write_json, write_report
from simnet.runner import RunLog, run_memory, run_processes
from simnet.scenario import Scenario, scenario_to_toml
from simnet.summary import headline, reconciliation

EXIT_INTERRUPTED = 130
STARTUP_MEMORY_S = 3.0


def startup_budget_s(s: Scenario) -> float:
    """Real seconds between writing the configs and the shared clock's anchor (nodes start,
    connect and get funded meanwhile). Measured: ~1.5 s per libp2p process on 2 busy cores."""
    return STARTUP_MEMORY_S if s.transport == "memory" else 8.0 + 1.5 * (s.participants + 1)


@dataclass
class SimulationResult:
    out_dir: Path
    checks: list[CheckResult]
    kpis: dict[str, Any]
    log: RunLog

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def exit_code(self) -> int:
        if self.log.interrupted:
            return EXIT_INTERRUPTED
        return 0 if self.passed else 1


def simulate(s: Scenario, out_dir: Path, *, console: Console | None = None, live: bool = True,
             command: str | None = None) -> SimulationResult:
    """Run ``s`` into ``out_dir``; ``command`` is the command line that asked for it (for the
    report's method section)."""
    console = console or Console()
    out_dir = Path(out_dir)
    if (out_dir / "nodes").exists():
        shutil.rmtree(out_dir / "nodes")
    out_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]{s.name}[/bold]: {s.households} households, {s.consumers} consumers, {s.stations} "
                  f"station(s) + operator, committee of {s.committee_size}, {s.hours:g} simulated h at "
                  f"{s.speed:g}× over {s.transport}; reading real profiles …")
    community = prepare_community(s, out_dir, startup_s=startup_budget_s(s), now_wall_ms=lambda: time.time_ns() // 1_000_000)
    log = RunLog(s.transport, started_wall_s=time.time())
    title = f"simnet · {s.name} · {len(community.people)} nodes over {s.transport}"
    with Live(console=console, auto_refresh=False, transient=False) as view:
        def show(snapshot: Snapshot, note: str) -> None:
            if live:
                view.update(render_live(snapshot, start_ms=community.timeline.profile_start_ms,
                                        end_ms=community.timeline.end_ms, title=title, note=note), refresh=True)

        try:
            if s.transport == "memory":
                run_memory(community, log, show)
            else:
                run_processes(community, log, show, funded_timeout_s=startup_budget_s(s) + 60)
        except KeyboardInterrupt:
            log.interrupted = True
    log.ended_wall_s = time.time()
    return finish(community, out_dir, log, console, command)


def finish(community: Community, out_dir: Path, log: RunLog, console: Console,
           command: str | None = None) -> SimulationResult:
    names = [p.name for p in community.people]
    live_nodes = [n for n in names if n not in log.killed]
    console.print("run over; reading every node's ledger …")
    checks, ledgers = run_checks(community.nodes_dir, names, live_nodes, heights_before_kill=log.heights_before_kill,
                                 restarted=log.restarted, errors=log.errors)
    reference = next((ledgers[n].state for n in live_nodes if ledgers.get(n) and ledgers[n].state), None)
    run = {**log.to_json(), "scenario": community.scenario.name, "nodes": len(names),
           "speed": community.scenario.speed, "simulated_hours": community.scenario.hours}
    kpis = compute_kpis(out_dir, reference, run)
    (out_dir / SCENARIO_COPY).write_text(scenario_to_toml(community.scenario))
    community_json = json.loads((out_dir / "community.json").read_text())
    kpis["method"] = method(community.scenario, community_json, out_dir, command)
    kpis["headline"] = headline(kpis)
    kpis["reconciliation"] = reconciliation(kpis)
    write_json(out_dir / "run.json", run)
    write_json(out_dir / "checks.json", [c.to_json() for c in checks])
    write_json(out_dir / "kpis.json", kpis)
    # The page is built from the JSON just written, never from the in-memory figures.
    report = write_report(out_dir, f"p2pgrid simnet: {community.scenario.name}")
    for c in checks:
        mark = "[green]pass[/green]" if c.passed else "[red]FAIL[/red]"
        console.print(f"  {mark} {c.name}: {c.detail}")
    ss = kpis["self_sufficiency"]
    optimum = (f" (optimum {ss['optimum']}, {ss['fraction_of_optimum_gain']} of its gain)"
               if ss.get("optimum") is not None else "")
    console.print(f"trades: {kpis['trades']} ({kpis['traded_volume_wh'] / 1000:.1f} kWh); self-sufficiency "
                  f"{ss['trading']} with trading vs {ss['baseline']} without{optimum}; welfare vs central auction: "
                  f"{kpis['welfare_with_pools'].get('value')} with pools, "
                  f"{kpis['welfare_vs_central_auction'].get('value')} book only")
    metering = kpis["metering"]
    if metering.get("expected"):
        console.print(f"metering: {metering['meter_entries']} of {metering['expected']} readings due were certified "
                      f"({metering['completeness']:.0%}); a slot a node did not meter settles as zero delivery")
    charging = kpis["charging"]
    if charging.get("sessions"):
        console.print(f"charging: {charging['billed']} of {charging['sessions']} sessions billed, "
                      f"{charging['energy_wh'] / 1000:.1f} kWh for {charging['revenue_uc'] / 1e6:.2f} credits "
                      f"({charging['drivers']} drivers)")
    console.print(f"report: {report}")
    return SimulationResult(out_dir, checks, kpis, log)
