"""The report's plots, drawn from a kpis dict (matplotlib, Agg backend, PNG bytes in memory).

``figures(kpis)`` returns one ``Plot`` per plot the report shows, in order: prices per slot,
community energy, battery state of charge, traded volume by venue, settlement imbalances,
certification latency over time, savings per participant. Each has axes with units and a caption
saying what to look for; a plot without data has no PNG and says why (``reason``). Nothing here
writes files: ``simnet.report`` does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simnet.summary import UC_PER_CREDIT

DPI = 90
WIDE = (10.5, 3.4)
LEGEND = {"fontsize": 7, "loc": "center left", "bbox_to_anchor": (1.01, 0.5)}   # beside the axes, never over data


@dataclass(frozen=True)
class Plot:
    name: str            # file stem, e.g. "prices"
    title: str
    caption: str
    png: bytes | None    # None when there was nothing to draw
    reason: str = ""


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _axes() -> tuple[Any, Any]:
    return _pyplot().subplots(figsize=WIDE)


def _png(fig: Any, bottom: float = 0.2) -> bytes:
    buffer = io.BytesIO()
    # The same margins on every plot (not tight_layout): the axes line up down the page whatever
    # the width of each legend.
    fig.subplots_adjust(left=0.085, right=0.79, top=0.88, bottom=bottom)
    fig.savefig(buffer, format="png", dpi=DPI)
    _pyplot().close(fig)
    return buffer.getvalue()


def hour_label(start_s: int) -> str:
    return datetime.fromtimestamp(start_s, tz=timezone.utc).strftime("%H:%M")


def _slot_axis(ax: Any, starts: list[int]) -> None:
    """Slots on x, labelled by their start time (UTC); at most ~12 labels."""
    step = max(1, len(starts) // 12)
    ax.set_xticks(range(0, len(starts), step), [hour_label(s) for s in starts[::step]], fontsize=8)
    ax.set_xlabel("slot start (UTC)")


def prices_plot(kpis: dict[str, Any]) -> Any:
    prices = kpis["prices_per_slot"]
    slots = prices["slots"]
    if not slots:
        return "no slots in the run"
    fig, ax = _axes()
    x = list(range(len(slots)))
    per_kwh = 1 / UC_PER_CREDIT
    ax.step(x, [prices["retail"] * per_kwh] * len(x), "--", where="mid", color="tab:red", label="grid retail tariff")
    ax.step(x, [prices["feed_in"] * per_kwh] * len(x), "--", where="mid", color="tab:green", label="feed-in tariff")
    ax.plot(x, [r["day_ahead"] * per_kwh for r in slots], color="tab:gray", marker=".", label="day-ahead (SMARD)")
    ranged = [r for r in slots if r["min"] is not None]
    if ranged:
        ax.vlines([r["slot"] for r in ranged], [r["min"] * per_kwh for r in ranged], [r["max"] * per_kwh for r in ranged],
                  color="tab:blue", alpha=0.3, linewidth=5, label="lowest–highest trade")
    # kpis.json files written before venues were told apart have only "avg" (all book trades then).
    book = [(r["slot"], r["book_avg"] if "book_avg" in r else r["avg"]) for r in slots]
    book = [(x, avg) for x, avg in book if avg is not None]
    if book:
        ax.plot([x for x, _ in book], [avg * per_kwh for _, avg in book], "o", color="tab:blue",
                label="book trades (avg)")
    pool = [r for r in slots if r.get("pool_avg") is not None]
    if pool:
        ax.plot([r["slot"] for r in pool], [r["pool_avg"] * per_kwh for r in pool], "s", color="tab:orange",
                label="pool swaps (avg)")
    _slot_axis(ax, [r["start_s"] for r in slots])
    ax.set_ylabel("credits/kWh")
    ax.set_ylim(bottom=min(0.0, min(r["day_ahead"] * per_kwh for r in slots)))
    ax.legend(**LEGEND)
    return fig


def energy_plot(kpis: dict[str, Any]) -> Any:
    series = kpis.get("series_wh")
    slots = kpis["prices_per_slot"]["slots"]
    if not series or not series["load"]:
        return "no energy series in kpis.json"
    fig, ax = _axes()
    x = list(range(len(series["load"])))
    for key, style, color, label in (("load", "-", "black", "load (incl. EV)"),
                                     ("pv", "-", "goldenrod", "PV generation"),
                                     ("import_baseline", "--", "tab:red", "grid import without trading"),
                                     ("import", "-", "tab:red", "grid import with trading"),
                                     ("export_baseline", "--", "tab:green", "grid export without trading"),
                                     ("export", "-", "tab:green", "grid export with trading")):
        ax.plot(x, [v / 1000 for v in series[key]], linestyle=style, color=color, label=label)
    if series.get("import_optimum"):
        ax.plot(x, [v / 1000 for v in series["import_optimum"]], linestyle=":", linewidth=2, color="tab:purple",
                label="grid import, optimum")
    _slot_axis(ax, [r["start_s"] for r in slots])
    ax.set_ylabel("kWh per slot")
    ax.legend(**LEGEND)
    return fig


def soc_plot(kpis: dict[str, Any]) -> Any:
    soc = kpis.get("soc_per_slot") or {}
    if not soc:
        return "no participant has a battery"
    fig, ax = _axes()
    for name, values in soc.items():
        ax.plot(range(len(values)), [100 * v for v in values], linewidth=2.5 if name.startswith("station") else 1.2,
                label=name)
    ax.axhspan(10, 95, color="tab:green", alpha=0.06, label="allowed band 10–95 %")
    _slot_axis(ax, [r["start_s"] for r in kpis["prices_per_slot"]["slots"]])
    ax.set_ylabel("state of charge (%)")
    ax.set_ylim(0, 100)
    ax.legend(**LEGEND)
    return fig


def volume_plot(kpis: dict[str, Any]) -> Any:
    slots = kpis["prices_per_slot"]["slots"]
    if not kpis.get("traded_volume_wh"):
        return "nothing was traded"
    fig, ax = _axes()
    x = list(range(len(slots)))
    book = [r.get("book_volume_wh", r["volume_wh"]) / 1000 for r in slots]
    pool = [r.get("pool_volume_wh", 0) / 1000 for r in slots]
    ax.bar(x, book, color="tab:blue", label="order book")
    ax.bar(x, pool, bottom=book, color="tab:orange", label="AMM pools")
    _slot_axis(ax, [r["start_s"] for r in slots])
    ax.set_ylabel("kWh traded per slot")
    ax.legend(**LEGEND)
    return fig


IMBALANCE_LABELS = {"shortfall_wh": "shortfall (sold, not delivered)", "extra_import_wh": "extra import",
                    "surplus_export_wh": "surplus export", "unused_purchase_wh": "unused purchase"}


def imbalance_plot(kpis: dict[str, Any]) -> Any:
    rows = kpis.get("imbalance_per_slot") or []
    if not rows:
        return "no slot was settled"
    fig, ax = _axes()
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for key, label in IMBALANCE_LABELS.items():
        values = [r[key] / 1000 for r in rows]
        ax.bar(x, values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    _slot_axis(ax, [r["start_s"] for r in rows])
    ax.set_ylabel("kWh settled as imbalance")
    ax.legend(**LEGEND)
    return fig


def latency_plot(kpis: dict[str, Any]) -> Any:
    points = kpis.get("latency_series") or []
    if not points:
        return "no certified trade with a timestamp"
    fig, ax = _axes()
    for venue, color in (("book", "tab:blue"), ("pool", "tab:orange")):
        mine = [p for p in points if p["venue"] == venue]
        if mine:
            ax.plot([p["real_s"] for p in mine], [p["latency_s"] for p in mine], "o", color=color, markersize=4,
                    label=f"{venue} ({len(mine)} trades)")
    p50 = kpis.get("certification_latency_s", {}).get("p50")
    if p50 is not None:
        ax.axhline(p50, color="tab:gray", linestyle=":", label=f"median {p50} s")
    since = "the run started" if kpis.get("run", {}).get("started_wall_s") else "the first trade"
    ax.set_xlabel(f"real seconds since {since}")
    ax.set_ylabel("certification latency (s)")
    ax.set_ylim(bottom=0)
    ax.legend(**LEGEND)
    return fig


def savings_plot(kpis: dict[str, Any]) -> Any:
    people = kpis.get("participants") or []
    if not people:
        return "no participant"
    fig, ax = _axes()
    values = [p["savings_uc"] / UC_PER_CREDIT for p in people]
    ax.bar(range(len(people)), values, color=["tab:red" if v < 0 else "tab:purple" for v in values])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(people)), [p["name"] for p in people], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("credits saved vs no trading")
    return fig


PLOTS: tuple[tuple[str, str, Callable[[dict[str, Any]], Any], str], ...] = (
    ("prices", "Prices per slot", prices_plot,
     "Average price of book trades and pool swaps per slot (bars: lowest to highest trade), against the grid "
     "tariffs and the SMARD day-ahead price. Look for trades between the feed-in and the retail tariff: there both "
     "sides gain. Pool swaps dearer than book trades mean the pools are the expensive venue."),
    ("energy", "Community energy per slot", energy_plot,
     "The whole community's load, PV, and grid exchange with trading (solid) and without (dashed). Where the "
     "solid import line lies below the dashed one, trading replaced grid energy with neighbours' PV. Dotted "
     "(when drawn): the import of the community optimum, the least any schedule of the batteries and exchanges "
     "reaches with perfect foresight — the gap to the solid line is what better coordination could still gain."),
    ("soc", "Battery state of charge", soc_plot,
     "State of charge of every battery in the energy model (greedy self-consumption; stations drawn thicker). "
     "A battery pinned at the top of its band all day is storage that could have sold more."),
    ("volume", "Traded volume by venue", volume_plot,
     "kWh certified per slot, by venue. Slots with PV surplus but no trades are missed trading opportunities."),
    ("imbalance", "Settlement imbalances per slot", imbalance_plot,
     "Energy the settlement priced at the grid tariffs instead of trade prices, per settled slot (the first bars "
     "may be warm-up slots before the profile starts). Shortfalls mean sellers sold energy they did not deliver; "
     "large surplus exports mean PV went to the grid at feed-in."),
    ("latency", "Certification latency over time", latency_plot,
     "Real seconds from a buy's start to its certified trades, for each trade in the order it happened. Latency "
     "that grows over the run points at a node or the committee falling behind."),
    ("savings", "Savings per participant", savings_plot,
     "Each participant's bill without trading minus its bill with trading. Red bars: worse off than without "
     "trading."),
)


def figures(kpis: dict[str, Any]) -> list[Plot]:
    out = []
    for name, title, draw, caption in PLOTS:
        result = draw(kpis)
        if isinstance(result, str):
            out.append(Plot(name, title, caption, None, result))
        else:
            result.suptitle(title, fontsize=10)
            out.append(Plot(name, title, caption, _png(result, bottom=0.32 if name == "savings" else 0.2)))
    return out
