"""``report.html``: one self-contained page (plots embedded as PNG data URIs, a few lines of inline
JavaScript to sort the participants' table; nothing loaded from the network), built from
``kpis.json`` and ``checks.json`` alone — the JSON is the source, the HTML a view of it.

Order of the page: a pass/fail banner naming failed checks and what needs attention
(``simnet.summary.attention``); the headline KPIs in human units with the no-trading baseline,
the difference and the goal or optimum (``simnet.summary.headline``); one row per participant,
sortable, with totals and their reconciliation against the ledger figures
(``simnet.summary.reconciliation``); the plots with captions (``simnet.report_figures``); the
checks; the faults injected; the method (scenario, data sources, speed, transport, seed and the
command that reproduces the run); every KPI of ``kpis.json`` in human units.

``render_report`` is pure (dicts and PNG bytes in, an HTML string out); ``write_report`` reads the
JSON files of a run directory, draws the plots, and writes ``report.html`` and ``plots/*.png``.
``python -m simnet report DIR`` rebuilds a run's report that way.
"""

from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from simnet.report_figures import Plot, figures
from simnet.summary import UC_PER_CREDIT, attention, headline, is_null, reconciliation

REPORT_HTML = "report.html"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


# --- numbers in human units ------------------------------------------------------------------

def number(value: float | int | None, decimals: int = 2) -> str:
    """``1234.5`` → ``1,234.50``; ``None`` → an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:,.{decimals}f}"


DECIMALS = {"kWh": 2, "kW": 2, "credits": 2, "credits/kWh": 3, "%": 1, "s": 3, "count": 0, "kWp": 1}


def quantity(value: Any, unit: str) -> str:
    """A value with its unit, e.g. ``12.50 kWh``, ``61.7 %``, ``-0.13 credits``."""
    if value is None:
        return "–"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return html.escape(str(value))
    decimals = DECIMALS.get(unit, 2)
    if unit == "credits" and 0 < abs(value) < 1:
        decimals = 4    # small runs move fractions of a credit: 0.0033, not 0.00
    text = number(value, decimals)
    return text if unit == "count" else f"{text} {unit}"


def signed_quantity(value: Any, unit: str) -> str:
    text = quantity(value, unit)
    return f"+{text}" if isinstance(value, (int, float)) and value > 0 else text


def human(key: str, value: Any) -> str:
    """A raw kpis.json value in human units, the unit read from the key's suffix (``_wh`` Wh,
    ``_uc`` µc, ``_nc`` nanocredits, ``_s`` seconds); ratios (0..1) of share-like keys as %."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return html.escape("–" if value is None else str(value) if not isinstance(value, bool)
                           else "yes" if value else "no")
    if isinstance(value, (int, float)):
        if key.endswith("_wall_s"):
            return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if key.endswith("_wh") or key.endswith("wh"):
            return quantity(value / 1000, "kWh")
        if key.endswith("_w"):
            return quantity(value / 1000, "kW")
        if key == "fraction_of_optimum_gain":
            return quantity(100 * value, "%")
        if key.endswith("_uc") or key in ("retail", "feed_in", "retail_price", "feed_in_price"):
            unit = "credits/kWh" if "price" in key or key in ("retail", "feed_in") else "credits"
            return quantity(value / UC_PER_CREDIT, unit)
        if key.endswith("_nc"):
            return quantity(value / UC_PER_CREDIT / 1000, "credits")
        if key.endswith("_s") or key in ("p50", "p90", "max", "real_seconds"):
            return quantity(value, "s")
        if isinstance(value, float) and 0 <= value <= 1 and key in RATIO_KEYS:
            return quantity(100 * value, "%")
        return number(value, 0 if isinstance(value, int) else 4)
    if isinstance(value, dict):
        if is_null(value):
            return f"<i>not computed: {html.escape(str(value.get('reason', '')))}</i>"
        unit = value.get("unit")
        items = "".join(f"<li>{html.escape(k)}: {human(_unit_key(k, unit), v)}</li>"
                        for k, v in value.items() if k != "unit")
        return f"<ul class=kv>{items}</ul>"
    if isinstance(value, list):
        if not value:
            return "none"
        shown = ", ".join(human(key, v) for v in value[:12])
        return shown + (f" … ({len(value)} in all)" if len(value) > 12 else "")
    return html.escape(str(value))


RATIO_KEYS = {"value", "trading", "baseline", "optimum", "book", "pools", "completeness", "share", "self_sufficiency"}
UNIT_SUFFIX = {"µc": "_uc", "Wh": "_wh", "W": "_w"}
FIGURE_KEYS = ("trading", "baseline", "optimum", "by_node", "mean", "total")   # keys read in the dict's unit


def _unit_key(key: str, unit: str | None) -> str:
    """Inside a dict that states its unit (``{"unit": "µc", "by_node": …}``), read its figures so."""
    return f"{key}{UNIT_SUFFIX[unit]}" if unit in UNIT_SUFFIX and key in FIGURE_KEYS else key


# --- page parts ------------------------------------------------------------------------------

def banner(checks: list[dict[str, Any]], notes: list[str]) -> str:
    failed = [c["name"] for c in checks if not c["passed"]]
    if failed:
        head = (f"<div class='banner fail'><b>FAILED</b> — {len(failed)} of {len(checks)} end checks failed: "
                f"{html.escape(', '.join(failed))}</div>")
    else:
        head = f"<div class='banner pass'><b>PASSED</b> — all {len(checks)} end checks passed</div>"
    if not notes:
        return head
    items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return head + f"<div class=attention><b>Look at first:</b><ul>{items}</ul></div>"


def headline_table(rows: list[dict[str, Any]]) -> str:
    body = []
    for r in rows:
        unit = r["unit"]
        value = quantity(r["value"], unit) if r["value"] is not None else "<i>not computed</i>"
        reference = quantity(r["reference"], unit) if isinstance(r["reference"], (int, float)) else \
            html.escape(r["reference"] or "")
        verdict = _verdict(r)
        body.append(f"<tr><td>{html.escape(r['label'])}</td><td class=num>{value}</td>"
                    f"<td class=num>{quantity(r['baseline'], unit)}</td>"
                    f"<td class='num {verdict}'>{signed_quantity(r['difference'], unit) if r['difference'] is not None else '–'}</td>"
                    f"<td class=num>{reference or '–'}</td><td class=note>{html.escape(r['note'])}</td></tr>")
    return ("<table class=headline><thead><tr><th>KPI</th><th class=num>value</th><th class=num>without trading</th>"
            "<th class=num>difference</th><th class=num>goal / optimum</th><th>note</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def _verdict(row: dict[str, Any]) -> str:
    """CSS class of the difference: good or bad in the direction the KPI should move."""
    d = row["difference"]
    if d is None or d == 0 or row["better"] is None:
        return ""
    return "good" if (d > 0) == (row["better"] == "higher") else "bad"


# (header, tooltip, key or function of the row, unit) — raw kpis.json values, shown in human units
PARTICIPANT_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("participant", "node name", "name", "text"),
    ("role", "household, consumer or station; * = validator", "role", "text"),
    ("PV kWp", "PV peak power", "pv_kwp", "kWp"),
    ("battery kWh", "battery capacity", "battery_wh", "kWh"),
    ("EV", "charges an EV at home", "has_ev", "flag"),
    ("bought book kWh", "bought through the order book (certified)", "bought_book_wh", "kWh"),
    ("bought pools kWh", "bought from AMM pools (certified swaps)", "bought_pool_wh", "kWh"),
    ("sold book kWh", "sold through the order book", "sold_book_wh", "kWh"),
    ("sold pools kWh", "sold to buyers of its pools", "sold_pool_wh", "kWh"),
    ("metered import kWh", "grid import metered in the settled slots (ledger)", "metered_import_wh", "kWh"),
    ("metered export kWh", "grid export metered in the settled slots (ledger)", "metered_export_wh", "kWh"),
    ("bill without trading cr", "grid imports at retail minus exports at feed-in, no trades (credits)",
     "bill_baseline_uc", "credits"),
    ("bill with trading cr", "the same with its trades: residual grid exchange plus trade payments (credits)",
     "bill_uc", "credits"),
    ("savings cr", "bill without minus bill with trading (credits)", "savings_uc", "credits"),
    ("metering %", "certified meter readings of the slots due", "metering_completeness", "%"),
    ("certs received kWh", "green certificates received with green trades", "certificates_received_wh", "kWh"),
    ("certs retired kWh", "green certificates retired against its imports", "certificates_retired_wh", "kWh"),
)
SCALE = {"kWh": 1 / 1000, "credits": 1 / UC_PER_CREDIT, "%": 100, "kWp": 1}


def _decimals(people: list[dict[str, Any]], key: str, unit: str) -> int:
    """A column's decimals: more for credits when the whole column is below one credit."""
    if unit == "credits" and all(abs(p.get(key) or 0) * SCALE[unit] < 1 for p in people):
        return 4
    return DECIMALS[unit]


def _cell(row: dict[str, Any], key: str, unit: str, decimals: int) -> tuple[str, str]:
    """(text shown, sort key) of one cell."""
    value = row.get(key)
    if unit == "text":
        text = str(value) + ("*" if key == "role" and row.get("validator") else "")
        return html.escape(text), html.escape(text)
    if unit == "flag":
        return ("yes" if value else "–"), ("1" if value else "0")
    if value is None:
        return "–", ""
    scaled = value * SCALE[unit]
    return number(scaled, decimals), repr(scaled)


def participants_table(people: list[dict[str, Any]]) -> str:
    head = "".join(f"<th title='{html.escape(tip)}' data-col={i}>{html.escape(label)}</th>"
                   for i, (label, tip, _, _) in enumerate(PARTICIPANT_COLUMNS))
    decimals = {key: _decimals(people, key, unit) for _, _, key, unit in PARTICIPANT_COLUMNS if unit in SCALE}
    rows = []
    for p in people:
        cells = []
        for _, _, key, unit in PARTICIPANT_COLUMNS:
            text, sort = _cell(p, key, unit, decimals.get(key, 0))
            cls = " class='num bad'" if key == "savings_uc" and p[key] < 0 else " class=num" if unit != "text" else ""
            cells.append(f"<td data-sort='{sort}'{cls}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    totals = []
    for label, _, key, unit in PARTICIPANT_COLUMNS:
        if key == "name":
            totals.append(f"<td>total ({len(people)})</td>")
        elif unit in ("kWh", "credits", "kWp") and people:
            totals.append(f"<td class=num>{number(sum(p.get(key) or 0 for p in people) * SCALE[unit], decimals[key])}</td>")
        elif key == "metering_completeness" and people:
            due = sum(p["meter_entries_due"] for p in people)
            totals.append(f"<td class=num>{number(100 * sum(p['meter_entries'] for p in people) / due, 1) if due else '–'}</td>")
        else:
            totals.append("<td></td>")
    return ("<table id=participants class=sortable><thead><tr>" + head + "</tr></thead><tbody>" + "".join(rows)
            + "</tbody><tfoot><tr>" + "".join(totals) + "</tr></tfoot></table>")


def reconciliation_list(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>Nothing to reconcile: no participant.</p>"
    items = []
    for r in rows:
        unit = r["unit"]
        scale = 1 / 1000 if unit == "Wh" else 1 / UC_PER_CREDIT if unit == "µc" else 1
        shown = "kWh" if unit == "Wh" else "credits" if unit == "µc" else "count"
        decimals = 3 if unit == "Wh" else 6 if unit == "µc" else 0
        figure = "–" if r["figure"] is None else number(r["figure"] * scale, decimals)
        mark = "<span class=good>✓ agrees</span>" if r["ok"] else "<span class=bad>✗ differs</span>"
        items.append(f"<li>{mark} — {html.escape(r['what'])}: table total {number(r['table'] * scale, decimals)}"
                     f" {'' if shown == 'count' else shown} · {html.escape(r['source'])} {figure}</li>")
    return "<ul class=reconcile>" + "".join(items) + "</ul>"


def plots_html(plots: list[Plot]) -> str:
    parts = []
    for n, plot in enumerate(plots, 1):
        if plot.png is None:
            parts.append(f"<figure id='plot-{plot.name}'><figcaption><b>Figure {n}. {html.escape(plot.title)}</b> — "
                         f"not drawn: {html.escape(plot.reason)}.</figcaption></figure>")
            continue
        data = base64.b64encode(plot.png).decode("ascii")
        parts.append(f"<figure id='plot-{plot.name}'><img src='data:image/png;base64,{data}' "
                     f"alt='{html.escape(plot.title)}'><figcaption><b>Figure {n}. {html.escape(plot.title)}.</b> "
                     f"{html.escape(plot.caption)}</figcaption></figure>")
    return "".join(parts)


def checks_table(checks: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td class={'good' if c['passed'] else 'bad'}>"
        f"{'pass' if c['passed'] else 'FAIL'}{'' if c.get('applicable', True) else ' (n/a)'}</td>"
        f"<td>{html.escape(c['detail'])}</td></tr>" for c in checks)
    return f"<table><thead><tr><th>check</th><th>result</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table>"


def faults_table(faults: list[dict[str, Any]]) -> str:
    if not faults:
        return "<p>None.</p>"
    rows = "".join(f"<tr><td class=num>{f['at_h']}</td><td>{html.escape(f['kind'])}</td>"
                   f"<td>{html.escape(f.get('node') or str(f.get('groups')))}</td></tr>" for f in faults)
    return f"<table><thead><tr><th>at (simulated h)</th><th>kind</th><th>who</th></tr></thead><tbody>{rows}</tbody></table>"


def method_html(method: dict[str, Any] | None, run: dict[str, Any]) -> str:
    if not method:
        return (f"<p>This kpis.json has no method record (written by an older simnet). Run: "
                f"{html.escape(json.dumps({k: v for k, v in run.items() if k != 'faults'}, default=str))}</p>")
    m = method
    sources = "".join(f"<li>{html.escape(s)}</li>" for s in m["data_sources"])
    command = (f"<p>Command as run:</p><pre>{html.escape(m['command'])}</pre>" if m.get("command") else "")
    return f"""<dl class=method>
<dt>scenario</dt><dd>{html.escape(m['scenario'])}: {m['households']} households, {m['consumers']} consumers,
{m['stations']} station(s) and the zone operator; committee of {m['committee_size']} validators;
{m['faults']} fault(s) scheduled; trading strategy <code>{html.escape(m['strategy'])}</code></dd>
<dt>time</dt><dd>{number(m['simulated_hours'], 1)} simulated hours from {html.escape(m['start_utc'])} UTC
(profile year {m['profile_year']}, day {m['profile_day']}) in slots of {m['slot_s'] // 60} min;
{number(m['speed'], 0)}× faster than real time ({number(run.get('real_seconds'), 0)} real seconds in all)</dd>
<dt>transport</dt><dd>{html.escape(m['transport'])}</dd>
<dt>seed</dt><dd>{m['seed']}</dd>
<dt>tariffs</dt><dd>retail {quantity(m['retail_price'] / UC_PER_CREDIT, 'credits/kWh')}, feed-in
{quantity(m['feed_in_price'] / UC_PER_CREDIT, 'credits/kWh')}; {quantity(m['credit_uc'] / UC_PER_CREDIT, 'credits')}
credited to every participant at the start (1 credit = 10⁶ µc)</dd>
<dt>data sources</dt><dd><ul>{sources}</ul></dd>
<dt>reproduce</dt><dd>{command}<p>The exact scenario of this run is saved next to this report as
<code>{html.escape(m['scenario_file'])}</code>; from the repository root:</p><pre>{html.escape(m['reproduce'])}</pre>
<p>Same community, profiles, prices, seed and faults; trades differ slightly from run to run because
the nodes run in real time on a shared machine.</p></dd>
</dl>"""


DETAIL_SKIP = ("series_wh", "prices_per_slot", "participants", "headline", "reconciliation", "imbalance_per_slot",
               "soc_per_slot", "latency_series", "method")


def details_table(kpis: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{human(k, v)}</td></tr>"
                   for k, v in kpis.items() if k not in DETAIL_SKIP)
    return f"<table class=details>{rows}</table>"


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1280px;margin:1.2em auto;padding:0 1em;color:#222;line-height:1.35}
h1{font-size:1.5em;margin:.2em 0} h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ccc}
.facts{color:#555;margin:.3em 0 .8em}
.banner{padding:.6em 1em;border-radius:4px;font-size:1.1em;margin:.5em 0}
.banner.pass{background:#e3f4e3;border:1px solid #4a4}.banner.fail{background:#fbe3e3;border:1px solid #c33}
.attention{background:#fff6d9;border:1px solid #e0b400;padding:.3em 1em;border-radius:4px}
.attention ul{margin:.3em 0}
table{border-collapse:collapse;margin:.4em 0;font-size:.92em} th,td{padding:3px 8px;vertical-align:top;text-align:left}
th{background:#eef;border-bottom:1px solid #99a} tbody tr:nth-child(even){background:#f6f6f6}
tfoot td{border-top:2px solid #888;font-weight:bold}
td.num{text-align:right;white-space:nowrap} th.num{text-align:right} td.note{color:#555;font-size:.9em}
.good{color:#17772b}.bad{color:#b00;font-weight:bold}
table.sortable th{cursor:pointer;font-size:.85em} table.sortable th:after{content:" \\2195";color:#999}
#participants td{font-size:.92em} #participants td:first-child{white-space:nowrap}
figure{margin:1em 0} img{max-width:100%;border:1px solid #ddd} figcaption{color:#444;font-size:.92em}
ul.kv{margin:0;padding-left:1.1em} pre{background:#f4f4f4;padding:.5em;overflow-x:auto}
dl.method dt{font-weight:bold;margin-top:.4em}
.wide{overflow-x:auto}
"""

# Sorts the participants' table on a header click (numbers by their raw value); rows of tfoot
# (the totals) stay put. Inline so that the report works offline from one file.
SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var up = th.dataset.dir !== 'up';
      th.dataset.dir = up ? 'up' : 'down';
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        var nx = parseFloat(x), ny = parseFloat(y);
        var d = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
        return up ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def render_report(kpis: dict[str, Any], checks: list[dict[str, Any]], plots: list[Plot], title: str) -> str:
    run = kpis.get("run", {})
    rows = kpis.get("headline") or headline(kpis)
    reconcile = kpis.get("reconciliation") or reconciliation(kpis)
    facts = (f"{run.get('nodes', '?')} nodes over {html.escape(str(run.get('transport', '?')))} · "
             f"{number(run.get('simulated_hours'), 1)} simulated h at {number(run.get('speed'), 0)}× · "
             f"{number(run.get('real_seconds'), 0)} real s · {kpis.get('trades', 0)} certified trades")
    return f"""<!doctype html>
<html lang=en><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name=viewport content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=facts>{facts}</p>
{banner(checks, attention(kpis, checks))}
<h2 id=headline>Headline KPIs</h2>
{headline_table(rows)}
<h2 id=participants-section>Participants</h2>
<p>One row per participant (the zone operator is the grid and is left out). Click a column to sort;
hover a header for its definition. Energy in kWh, money in credits (cr).</p>
<div class=wide>{participants_table(kpis.get('participants') or [])}</div>
<p>Totals against the ledger:</p>
{reconciliation_list(reconcile)}
<h2 id=plots>Plots</h2>
{plots_html(plots)}
<h2 id=checks>End checks</h2>
{checks_table(checks)}
<h2 id=faults>Faults injected</h2>
{faults_table(run.get('faults', []))}
<h2 id=method>Method</h2>
{method_html(kpis.get('method'), run)}
<h2 id=all-kpis>All KPIs</h2>
<p>Every figure of <code>kpis.json</code> (the machine-readable source of this page) but the per-slot series,
in human units.</p>
{details_table(kpis)}
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def write_report(out_dir: Path, title: str | None = None) -> Path:
    """Build ``report.html`` (and ``plots/*.png``) from ``out_dir``'s ``kpis.json`` and ``checks.json``."""
    kpis = json.loads((out_dir / "kpis.json").read_text())
    checks_file = out_dir / "checks.json"
    checks = json.loads(checks_file.read_text()) if checks_file.exists() else []
    scenario = (kpis.get("method") or {}).get("scenario") or kpis.get("run", {}).get("scenario", "")
    plots = figures(kpis)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    for plot in plots:
        if plot.png is not None:
            (plots_dir / f"{plot.name}.png").write_bytes(plot.png)
    path = out_dir / REPORT_HTML
    path.write_text(render_report(kpis, checks, plots, title or f"p2pgrid simnet: {scenario}"))
    return path
