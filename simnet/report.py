"""``report.html`` with PNG plots (matplotlib, Agg backend) and ``kpis.json`` / ``checks.json``.

The HTML is one self-contained page next to its ``plots/``: the checks (pass/fail), the KPIs
(a KPI that could not be computed shows its reason), the faults injected, and four plots: prices
per slot against the tariffs and the day-ahead price; community energy per slot (load, PV, grid
import with and without trading, traded volume); savings per participant; certification latency.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from simnet.checks import CheckResult


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


def _plots(out_dir: Path, kpis: dict[str, Any]) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    made: list[tuple[str, str]] = []

    prices = kpis["prices_per_slot"]
    slots = prices["slots"]
    x = [r["slot"] for r in slots]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(x, [prices["retail"] / 1000] * len(x), "--", color="tab:red", label="grid retail")
    ax.plot(x, [prices["feed_in"] / 1000] * len(x), "--", color="tab:green", label="feed-in")
    ax.plot(x, [r["day_ahead"] / 1000 for r in slots], color="tab:gray", label="day-ahead (SMARD)")
    traded = [r for r in slots if r["avg"] is not None]
    if traded:
        ax.plot([r["slot"] for r in traded], [r["avg"] / 1000 for r in traded], "o-", color="tab:blue", label="avg trade")
        ax.vlines([r["slot"] for r in traded], [r["min"] / 1000 for r in traded], [r["max"] / 1000 for r in traded],
                  color="tab:blue", alpha=0.5, label="min–max")
    ax.set_xlabel("slot")
    ax.set_ylabel("µc/Wh (= credits/MWh)")
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("prices per slot")
    fig.tight_layout()
    fig.savefig(plots_dir / "prices.png", dpi=90)
    plt.close(fig)
    made.append(("prices.png", "Prices per slot vs grid tariffs and the day-ahead price"))

    series = kpis.get("series_wh")
    if series:
        fig, ax = plt.subplots(figsize=(9, 3.6))
        n = range(len(series["load"]))
        for key, style in (("load", "k-"), ("pv", "y-"), ("import_baseline", "r--"), ("import", "r-"),
                           ("traded", "b-")):
            ax.plot(list(n), [v / 1000 for v in series[key]], style, label=key.replace("_", " "))
        ax.set_xlabel("slot")
        ax.set_ylabel("kWh per slot")
        ax.legend(fontsize=7, ncol=5)
        ax.set_title("community energy: grid import with and without trading")
        fig.tight_layout()
        fig.savefig(plots_dir / "energy.png", dpi=90)
        plt.close(fig)
        made.append(("energy.png", "Community energy per slot"))

    savings = kpis["savings_per_participant"]["by_node"]
    if savings:
        fig, ax = plt.subplots(figsize=(9, 3.2))
        names = list(savings)
        ax.bar(range(len(names)), [savings[n] / 1e6 for n in names], color="tab:purple")
        ax.set_xticks(range(len(names)), [n.replace("household-", "h") for n in names], rotation=60, fontsize=7)
        ax.set_ylabel("credits saved vs no trading")
        ax.set_title("savings per participant")
        fig.tight_layout()
        fig.savefig(plots_dir / "savings.png", dpi=90)
        plt.close(fig)
        made.append(("savings.png", "Savings per participant over the run"))

    latency = kpis["certification_latency_s"]
    if latency.get("n"):
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.axvline(latency["p50"], color="tab:blue", label=f"p50 {latency['p50']} s")
        ax.axvline(latency["p90"], color="tab:orange", label=f"p90 {latency['p90']} s")
        ax.axvline(latency["max"], color="tab:red", label=f"max {latency['max']} s")
        ax.set_xlabel("real seconds from buy start to certified trades")
        ax.legend(fontsize=8)
        ax.set_title(f"certification latency ({latency['n']} trades)")
        fig.tight_layout()
        fig.savefig(plots_dir / "latency.png", dpi=90)
        plt.close(fig)
        made.append(("latency.png", "Certification latency"))
    return made


def _value(v: Any) -> str:
    if isinstance(v, dict) and "value" in v and v["value"] is None:
        return f"<i>not computed: {html.escape(str(v.get('reason', '')))}</i>"
    text = json.dumps(v, default=str)
    return html.escape(text if len(text) < 400 else text[:400] + " …")


def write_report(out_dir: Path, title: str, kpis: dict[str, Any], checks: list[CheckResult]) -> Path:
    plots = _plots(out_dir, kpis)
    ok = all(c.passed for c in checks)
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td class={'ok' if c.passed else 'bad'}>"
        f"{'pass' if c.passed else 'FAIL'}{'' if c.applicable else ' (n/a)'}</td><td>{html.escape(c.detail)}</td></tr>"
        for c in checks)
    skip = {"series_wh", "prices_per_slot", "run"}
    kpi_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_value(v)}</td></tr>"
                       for k, v in kpis.items() if k not in skip)
    faults = kpis["run"].get("faults", [])
    fault_rows = "".join(f"<tr><td>{f['at_h']}</td><td>{html.escape(f['kind'])}</td>"
                         f"<td>{html.escape(f.get('node') or str(f.get('groups')))}</td></tr>" for f in faults)
    images = "".join(f"<figure><img src='plots/{name}' alt='{html.escape(cap)}'><figcaption>{html.escape(cap)}"
                     f"</figcaption></figure>" for name, cap in plots)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} td{{padding:2px 8px;vertical-align:top}}
.ok{{color:green}} .bad{{color:#b00;font-weight:bold}} table{{border-collapse:collapse}} tr:nth-child(even){{background:#f4f4f4}}
figure{{margin:1em 0}} img{{max-width:100%}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>End checks: <b class={'ok' if ok else 'bad'}>{'all passed' if ok else 'FAILED'}</b>.
Run: {html.escape(json.dumps({k: v for k, v in kpis['run'].items() if k != 'faults'}, default=str))}</p>
<h2>Checks</h2><table>{rows}</table>
<h2>KPIs</h2><table>{kpi_rows}</table>
<h2>Faults injected</h2><table><tr><th>at (h)</th><th>kind</th><th>who</th></tr>{fault_rows or '<tr><td>none</td></tr>'}</table>
<h2>Plots</h2>{images}
</body></html>
"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
