"""Rendering for people: node and cluster dashboards as rich renderables.

Every function here takes plain status data (``NodeStatus``, and the RPC's ``Telemetry`` /
``SlotSettlement`` values, e.g. from ``p2pgrid.node.api.dashboard_readings``) and returns a
renderable; nothing here reads files, clocks or the network, so each is tested by rendering into
``Console(file=io.StringIO(), width=80, color_system=None)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from p2pgrid.node.status import NodeStatus
from p2pgrid.rpc.api import SlotSettlement, Telemetry
from p2pgrid.units import format_credits

RECENT_SLOTS = 8


def format_market_time(t_ms: int) -> str:
    try:
        return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return f"{t_ms} ms"      # outside the calendar datetime knows: show the raw number


def format_slot(slot: int) -> str:
    try:
        return dt.datetime.fromtimestamp(slot, dt.UTC).strftime("%H:%M")
    except (ValueError, OverflowError, OSError):
        return str(slot)


def render_identity(status: NodeStatus) -> Table:
    """Who the node is and how it is connected."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("node", f"{status.name} ({status.role}, zone {status.zone})")
    table.add_row("account", status.account)
    table.add_row("state", f"{status.state}, pid {status.pid}")
    table.add_row("market time", format_market_time(status.market_now_ms))
    table.add_row("peers", str(status.peers))
    for addr in status.listen_addrs[:2]:
        table.add_row("listening", addr)
    return table


def render_orders_by_slot(status: NodeStatus, limit: int = RECENT_SLOTS) -> Table:
    """Orders seen per delivery slot, the latest ``limit`` slots."""
    table = Table(title="orders seen per slot", expand=False)
    table.add_column("slot (UTC)")
    table.add_column("orders", justify="right")
    slots = sorted(status.orders_by_slot)[-limit:]
    for slot in slots:
        table.add_row(format_slot(slot), str(status.orders_by_slot[slot]))
    if not slots:
        table.add_row("—", "0")
    return table


def render_rejects(status: NodeStatus) -> Table:
    """Gossip batches rejected by this node's validator by reason, then items ignored (no penalty)."""
    table = Table(title="rejects by reason", expand=False)
    table.add_column("reason")
    table.add_column("count", justify="right")
    for reason, count in sorted(status.rejects.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(reason, str(count))
    for reason, count in sorted(status.ignored.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(f"{reason} (ignored)", str(count))
    if not status.rejects and not status.ignored:
        table.add_row("none", "0")
    return table


def render_devices(telemetry: Telemetry) -> Text:
    """Battery state of charge and the powers (W; grid + import, battery + charging)."""
    soc = (f"SoC {telemetry.soc_wh / 1000:.1f}/{telemetry.capacity_wh / 1000:.1f} kWh "
           f"({100 * telemetry.soc_wh // telemetry.capacity_wh} %) · " if telemetry.capacity_wh else "")
    stale = f" · stale: {', '.join(telemetry.stale)}" if telemetry.stale else ""
    return Text(f"{soc}PV {telemetry.pv_w} W · load {telemetry.load_w} W\n"
                f"battery {telemetry.battery_w:+d} W · grid {telemetry.grid_w:+d} W{stale}")


def render_last_settlement(settled: SlotSettlement) -> Text:
    """The node's last settled slot (Wh; credits, + paid / − received)."""
    return Text(f"settled {format_slot(settled.slot)}: contracted {settled.contracted_wh:+d} Wh, metered "
                f"{settled.metered_wh:+d} Wh\ntrades {format_credits(settled.trade_value_uc)}, imbalance "
                f"{format_credits(settled.imbalance_value_uc)} credits")


def render_node_dashboard(status: NodeStatus, telemetry: Telemetry | None = None,
                          settlement: SlotSettlement | None = None) -> Panel:
    """The live dashboard of ``p2pgrid run``: identity, orders per slot, rejects; with devices their
    powers and SoC, and once a slot of this node settled, that settlement."""
    totals = Text(f"orders seen {status.orders_seen} · published {status.orders_published} · "
                  f"batches received {status.batches_received} · pulled {status.items_reconciled}")
    side_by_side = Table.grid(padding=(0, 2))
    side_by_side.add_row(render_orders_by_slot(status), render_rejects(status))
    parts: list[RenderableType] = [render_identity(status), totals]
    if telemetry is not None:
        parts.append(render_devices(telemetry))
    if settlement is not None:
        parts.append(render_last_settlement(settlement))
    return Panel(Group(*parts, side_by_side), title=f"p2pgrid · {status.name}")


def render_cluster(statuses: Sequence[NodeStatus | None], names: Sequence[str], *,
                   title: str = "p2pgrid cluster", caption: str | None = None) -> Table:
    """One row per node: peers, orders published and seen, rejects. ``None`` = no status yet."""
    table = Table(title=title, caption=caption)
    table.add_column("node")
    table.add_column("role")
    table.add_column("state")
    table.add_column("peers", justify="right")
    table.add_column("published", justify="right")
    table.add_column("seen", justify="right")
    table.add_column("rejects", justify="right")
    for name, status in zip(names, statuses):
        if status is None:
            table.add_row(name, "", "starting", "", "", "", "")
            continue
        table.add_row(name, status.role, status.state, str(status.peers), str(status.orders_published),
                      str(status.orders_seen), str(sum(status.rejects.values())))
    return table


def render_config_summary(name: str, role: str, zone: str, data_dir: str, account: str | None) -> RenderableType:
    """What ``p2pgrid status`` shows for a node that is not running."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("node", f"{name} ({role}, zone {zone})")
    table.add_row("account", account or "(sealed keystore: give the passphrase to show it)")
    table.add_row("data dir", data_dir)
    table.add_row("state", "not running")
    return table
