"""What a community run looks like right now, read from the nodes' files only (``status.json``
written by the node, ``agent.json`` by its trader), and the live view of it (rich).

Reading files keeps the monitor identical for real processes and in-memory nodes, and costs the
nodes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from p2pgrid.agent.runlog import AGENT_STATUS
from p2pgrid.node.status import NodeStatus, read_status


def read_agent(data_dir: Path) -> dict[str, object]:
    try:
        return json.loads((Path(data_dir) / AGENT_STATUS).read_text())
    except (OSError, ValueError):
        return {}


@dataclass(frozen=True)
class Snapshot:
    market_ms: int
    nodes_up: int
    nodes_total: int
    trades: int
    bought_wh: int
    spent_uc: int
    offers: int
    offered_wh: int
    mean_soc: float | None
    heights: tuple[int, int]
    roots_agreeing: int
    last_price: int

    @property
    def avg_price(self) -> int | None:
        return round(self.spent_uc * 1000 / self.bought_wh) if self.bought_wh else None


def take_snapshot(dirs: dict[str, Path], alive: set[str]) -> Snapshot:
    statuses: dict[str, NodeStatus] = {}
    agents: dict[str, dict[str, object]] = {}
    for name, path in dirs.items():
        status = read_status(path)
        if status is not None:
            statuses[name] = status
        agents[name] = read_agent(path)
    up = [s for n, s in statuses.items() if n in alive and s.state == "running"
          and time.time() * 1000 - s.updated_wall_ms < 5000]
    roots = [s.state_root for s in up if s.state_root]
    common = max((roots.count(r) for r in set(roots)), default=0)
    socs = [float(a["soc"]) for a in agents.values() if a.get("soc") is not None]  # type: ignore[arg-type]
    heights = [s.ledger_height for s in up] or [0]
    last_prices = [int(a.get("last_price", 0) or 0) for a in agents.values()]  # type: ignore[call-overload]
    return Snapshot(
        market_ms=max((s.market_now_ms for s in up), default=0), nodes_up=len(up), nodes_total=len(dirs),
        trades=sum(int(a.get("executions", 0)) for a in agents.values()),  # type: ignore[call-overload]
        bought_wh=sum(int(a.get("bought_wh", 0)) for a in agents.values()),  # type: ignore[call-overload]
        spent_uc=sum(int(a.get("spent_uc", 0)) for a in agents.values()),  # type: ignore[call-overload]
        offers=sum(int(a.get("offers", 0)) for a in agents.values()),  # type: ignore[call-overload]
        offered_wh=sum(int(a.get("offered_wh", 0)) for a in agents.values()),  # type: ignore[call-overload]
        mean_soc=sum(socs) / len(socs) if socs else None, heights=(min(heights), max(heights)),
        roots_agreeing=common, last_price=max(last_prices, default=0))


def render_live(snapshot: Snapshot, *, start_ms: int, end_ms: int, title: str, note: str = "") -> RenderableType:
    from p2pgrid.cli.dashboard import format_market_time

    done = min(max(snapshot.market_ms - start_ms, 0), end_ms - start_ms)
    table = Table(title=title, show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    price = snapshot.avg_price
    table.add_row("market time", format_market_time(snapshot.market_ms) if snapshot.market_ms else "starting")
    table.add_row("nodes", f"{snapshot.nodes_up}/{snapshot.nodes_total} up")
    table.add_row("offers", f"{snapshot.offers} ({snapshot.offered_wh / 1000:.1f} kWh)")
    table.add_row("trades", f"{snapshot.trades} certified, {snapshot.bought_wh / 1000:.1f} kWh")
    table.add_row("prices", f"avg {price / 1000:.0f} µc/Wh, last {snapshot.last_price / 1000:.0f} µc/Wh"
                  if price is not None else "no trade yet")
    table.add_row("battery SoC", f"{snapshot.mean_soc:.0%} mean" if snapshot.mean_soc is not None else "-")
    table.add_row("ledger", f"height {snapshot.heights[0]}–{snapshot.heights[1]}, "
                  f"{snapshot.roots_agreeing}/{snapshot.nodes_up} on one state root")
    if note:
        table.add_row("", note)
    bar = ProgressBar(total=max(1, end_ms - start_ms), completed=done, width=60)
    return Group(bar, table)
