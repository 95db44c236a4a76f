"""Rendering for people: node and cluster dashboards as rich renderables.

Words over signs: a trade is "bought … paid" or "sold … received", a battery "charging" or
"discharging", the grid "importing" or "exporting"; a device that stopped answering shows "—"
with the age of its last value, never 0 W. Nothing is cut at 80 columns: the account and the peer
id have a line each (folded if narrower); listen addresses are shown without their ``/p2p/<peer
id>`` suffix (the peer id is the line above; ``p2pgrid status --full`` prints them whole).

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


def _credits(value_uc: int) -> str:
    return f"{format_credits(value_uc)} cr"


def _price(price: int | None) -> str:
    return f"{price / 1_000_000:.4f} cr/kWh" if price is not None else "—"


def _age(age_ms: int) -> str:
    seconds = max(0, age_ms) // 1000
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _flow(watts: int, positive: str, negative: str) -> str:
    """A signed power in words: ``-262`` with (import, export) → ``262 W exporting``."""
    if watts == 0:
        return "0 W idle"
    return f"{abs(watts):,d} W {positive if watts > 0 else negative}"


def _section(title: str) -> Text:
    return Text(title, style="bold")


def without_peer_suffix(addr: str) -> str:
    """A listen address without its ``/p2p/<peer id>`` (the dashboard shows the peer id once; the
    full address is in ``p2pgrid status --full``)."""
    head, sep, _ = addr.partition("/p2p/")
    return head if sep else addr


def render_identity(status: NodeStatus) -> Table:
    """Who the node is, its money and its connections: ids in full, each on a line of its own."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("account", status.account)
    if status.peer_id:
        table.add_row("peer id", status.peer_id)
    for addr in status.listen_addrs[:2]:
        table.add_row("listening", without_peer_suffix(addr))
    table.add_row("peers", f"{status.peers} connected · market time {format_market_time(status.market_now_ms)}")
    # Text, not markup: "[zone]" would be read as a style tag and vanish.
    table.add_row("ledger", Text(f"{status.ledger_height} entries" if status.ledger else "none (no validators in [zone])"))
    if status.ledger:
        table.add_row("balance", _credits(status.balance_uc))
    return table


DEVICE_WORDS = {"meter": ("grid", "importing", "exporting"), "battery": ("battery", "discharging", "charging"),
                "pv": ("PV", "generating", "consuming"), "load": ("load", "consuming", "feeding"),
                "ev": ("EV", "charging", "feeding")}
DEVICE_LEGEND = "grid: + import, − export · battery: − charging, + discharging"


def render_device_lines(status: NodeStatus) -> Table:
    """Each device's last good value in words; a stale one as "—" with the age of its last value."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for line in status.devices:
        label, positive, negative = DEVICE_WORDS.get(line.kind, (line.name, "+", "−"))
        if line.stale or line.power_w is None:
            last = ("no good reading yet" if line.power_w is None
                    else f"last {line.power_w:+,d} W {_age(status.market_now_ms - line.at_ms)} ago")
            table.add_row(label, Text(f"— (stale: {last})"))
            continue
        value = _flow(line.power_w, positive, negative)
        if line.soc_pct is not None:
            value += f", SoC {line.soc_pct:.0f} % of {line.capacity_wh / 1000:.1f} kWh"
        table.add_row(label, Text(value))
    return table


def render_devices(telemetry: Telemetry) -> Text:
    """The RPC's telemetry (API signs: battery + charging, grid + import) in words."""
    soc = (f"SoC {telemetry.soc_wh / 1000:.1f}/{telemetry.capacity_wh / 1000:.1f} kWh "
           f"({100 * telemetry.soc_wh // telemetry.capacity_wh} %) · " if telemetry.capacity_wh else "")
    stale = f" · stale: {', '.join(telemetry.stale)}" if telemetry.stale else ""
    return Text(f"{soc}PV {telemetry.pv_w:,d} W · load {telemetry.load_w:,d} W\n"
                f"battery {_flow(telemetry.battery_w, 'charging', 'discharging')} · "
                f"grid {_flow(telemetry.grid_w, 'importing', 'exporting')}{stale}")


def render_last_settlement(settled: SlotSettlement) -> Text:
    """The node's last settled slot, with what it paid or received in words."""
    def money(value_uc: int) -> str:
        return f"paid {_credits(value_uc)}" if value_uc >= 0 else f"received {_credits(-value_uc)}"

    def energy(wh: int, positive: str, negative: str) -> str:
        return f"{positive} {wh:,d} Wh" if wh >= 0 else f"{negative} {-wh:,d} Wh"

    return Text(f"settled {format_slot(settled.slot)}: contracted {energy(settled.contracted_wh, 'bought', 'sold')}, "
                f"metered {energy(settled.metered_wh, 'imported', 'exported')}\n"
                f"trades {money(settled.trade_value_uc)} · imbalance {money(settled.imbalance_value_uc)}")


def render_prices(status: NodeStatus) -> Table:
    """Best bid and ask of the next slots (price and Wh at that price)."""
    table = Table.grid(padding=(0, 2))
    table.add_column("slot", no_wrap=True)
    table.add_column("bid", justify="right")
    table.add_column("ask", justify="right")
    table.add_row(Text("next slot", style="bold"), Text("best bid", style="bold"), Text("best ask", style="bold"))
    for line in status.best_prices:
        bid = f"{_price(line.bid)} · {line.bid_wh:,d} Wh" if line.bid is not None else "—"
        ask = f"{_price(line.ask)} · {line.ask_wh:,d} Wh" if line.ask is not None else "—"
        table.add_row(format_slot(line.slot), bid, ask)
    return table


def _slot_rows(title: str, rows: list[tuple[int, str]], empty: str) -> Group:
    """A section: its title (with ``empty`` when there are no rows), then "HH:MM  text" lines."""
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for slot, text in rows:
        table.add_row(format_slot(slot), Text(text))
    return Group(Text.assemble((title, "bold"), "" if rows else f"  {empty}"), table)


def render_own_orders(status: NodeStatus, limit: int) -> Group:
    return _slot_rows("own open orders (slot)", [
        (order.slot, f"{order.side} {order.qty_wh:,d} Wh at {_price(order.price)}, {order.filled_wh:,d} Wh filled"
                     f" · {order.order_id[:8]}") for order in status.own_orders[:limit]], "none")


def render_recent_trades(status: NodeStatus, limit: int) -> Group:
    """Recent trades: bought (paid) or sold (received), never a bare signed number."""
    rows = []
    for trade in status.recent_trades[:limit]:
        bought = trade.side == "bought"
        rows.append((trade.slot, f"{trade.side} {trade.qty_wh:,d} Wh at {_price(trade.price)}, "
                                 f"{'paid' if bought else 'received'} {_credits(trade.value_uc)}, "
                                 f"{'from' if bought else 'to'} {trade.counterparty[:8]}"))
    return _slot_rows("recent trades (slot)", rows, "none")


def render_developer_counters(status: NodeStatus) -> RenderableType:
    """Gossip counters, orders per slot and rejects by reason (``--dev``)."""
    totals = Text(f"orders seen {status.orders_seen} · published {status.orders_published} · "
                  f"batches received {status.batches_received} · pulled {status.items_reconciled} · "
                  f"trades taken {status.trades_taken} · "
                  f"takes served {status.takes_served}")
    side_by_side = Table.grid(padding=(0, 2))
    side_by_side.add_row(render_orders_by_slot(status), render_rejects(status))
    return Group(totals, side_by_side)


def render_node_dashboard(status: NodeStatus, telemetry: Telemetry | None = None,
                          settlement: SlotSettlement | None = None, *, developer: bool = False,
                          rows: int = 8) -> Panel:
    """The dashboard of ``p2pgrid run`` and ``p2pgrid status``: identity, balance, devices with a
    legend, what the node does not do, best prices of the next slots, own open orders and recent
    trades (at most ``rows`` of each); developer counters only with ``developer``. Ids are never
    cut: the account and peer id each have a line, wrapped if the terminal is narrower."""
    parts: list[RenderableType] = [render_identity(status)]
    for notice in status.notices:
        parts.append(Text(f"! {notice}", style="yellow"))
    if status.devices:
        parts += [Text.assemble(("devices", "bold"), f"  ({DEVICE_LEGEND})"), render_device_lines(status)]
    elif telemetry is not None:
        parts.append(render_devices(telemetry))
    if settlement is not None:
        parts.append(render_last_settlement(settlement))
    if status.ledger:
        parts += [render_prices(status), render_own_orders(status, rows), render_recent_trades(status, rows)]
    if developer:
        parts.append(render_developer_counters(status))
    return Panel(Group(*parts), title=f"p2pgrid · {status.name} ({status.role}, zone {status.zone})",
                 title_align="left")


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
