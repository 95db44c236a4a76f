"""The investment report of one account: read simnet runs' ledgers, compute, write HTML + PNG + JSON.

Input: one or more simnet output dirs (``simulate(…, out_dir)``), each labelled with the season it
stands for (``summer=runs/jul``; unlabelled: ``spring``). From each dir this reads
``community.json`` (zone, gateway, covered time ``profile_start_ms .. end_ms``) and the certified
entries of ``nodes/<node>/ledger.sqlite`` — by default the node of the account itself, whose copy
of the ledger is the one its owner trusts. Everything money is derived by ``p2pgrid.invest`` from
those certified entries only.

Output in ``out_dir``: ``invest.json`` (every figure, the method, the notes), ``invest.html`` and
``plots/{monthly,cumulative,sensitivity}.png``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2pgrid.errors import P2PGridError
from p2pgrid.invest import (
    OPERATING_KEYS, STREAMS, STREAM_KEYS, AccountFlows, Annualised, Figures, InvestTerms, SeasonSample, SensitivityRow, Statement,
    account_flows, annualise, figures, lcos_uc_per_kwh, monthly, project_cashflows, sensitivity, statement,
)
from p2pgrid.ledger.chain import LedgerRules
from p2pgrid.ledger.messages import Entry
from p2pgrid.units import format_credits
from p2pgrid.wire import Signed

MS_PER_DAY = 86_400_000


class RunUnreadable(P2PGridError):
    """A simnet output dir lacks what the report needs."""


def register_entry_kinds() -> list[str]:
    """Import the modules that register the settlement and pool kinds (absent ones are skipped)."""
    loaded = []
    for name in ("p2pgrid.settlement_entries", "p2pgrid.trading.pool_entries"):
        try:
            __import__(name)
            loaded.append(name)
        except ImportError:
            pass
    return loaded


@dataclass(frozen=True)
class RunLedger:
    """One simnet run as the report sees it."""

    season: str
    out_dir: Path
    node: str
    account: bytes
    rules: LedgerRules
    entries: tuple[Signed[Entry], ...]
    start_ms: int
    end_ms: int

    @property
    def covered_days(self) -> float:
        return (self.end_ms - self.start_ms) / MS_PER_DAY


def _community(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "community.json"
    if not path.exists():
        raise RunUnreadable(f"{out_dir}: no community.json (not a simnet output dir)")
    return json.loads(path.read_text())


def resolve_account(out_dir: Path, account: str) -> tuple[str, bytes]:
    """``account`` is a participant name, a hex key or a unique hex prefix → (node name, key)."""
    people = _community(out_dir)["participants"]
    named = [p for p in people if p["name"] == account]
    matches = named or [p for p in people if p["account"].startswith(account.lower())]
    if len(matches) != 1:
        raise RunUnreadable(f"{out_dir}: account {account!r} matches {len(matches)} participants")
    return matches[0]["name"], bytes.fromhex(matches[0]["account"])


async def _read_entries(path: Path) -> tuple[LedgerRules, list[Signed[Entry]]]:
    from p2pgrid.ledger.store import open_store

    async with open_store(path) as store:
        zone = await store.load_zone()
        if zone is None:
            raise RunUnreadable(f"{path}: the ledger database has no zone")
        return zone[0], await store.all_entries()


def read_run(out_dir: Path, account: str, season: str = "spring", node: str | None = None) -> RunLedger:
    """Certified entries of one run, from ``node``'s ledger (default: the account's own node)."""
    import trio

    out_dir = Path(out_dir)
    community = _community(out_dir)
    own_node, key = resolve_account(out_dir, account)
    node = node or own_node
    path = out_dir / "nodes" / node / "ledger.sqlite"
    if not path.exists():
        raise RunUnreadable(f"{path}: no ledger database")
    register_entry_kinds()
    rules, entries = trio.run(_read_entries, path)
    return RunLedger(season, out_dir, node, key, rules, tuple(entries),
                     int(community["profile_start_ms"]), int(community["end_ms"]))


# --- computing -------------------------------------------------------------------------------

@dataclass(frozen=True)
class InvestReport:
    account: bytes
    runs: tuple[RunLedger, ...]
    flows: tuple[AccountFlows, ...]
    statements: tuple[Statement, ...]
    annual: Annualised
    terms: InvestTerms
    base: Figures
    lcos: float | None
    rows: tuple[SensitivityRow, ...]


def month_of(time_s: int) -> str:
    return dt.datetime.fromtimestamp(time_s, dt.timezone.utc).strftime("%Y-%m")


def build_report(runs: list[RunLedger], terms: InvestTerms) -> InvestReport:
    if not runs:
        raise RunUnreadable("no simnet run given")
    account = runs[0].account
    flows = tuple(account_flows(r.entries, r.rules, r.account) for r in runs)
    statements = tuple(statement(f) for f in flows)
    samples = [SeasonSample(r.season, s.streams, r.covered_days, s.energy_wh) for r, s in zip(runs, statements)]
    annual = annualise(samples)
    revenue = annual.revenue_uc
    operating = annual.operating_net_uc
    base = figures(terms, project_cashflows(terms, operating, annual_revenue_uc=revenue))
    delivered = sum(annual.energy_wh[k] for k in ("energy_sold_book", "energy_sold_pool", "feed_in"))
    rows = tuple(sensitivity(terms, operating, revenue))
    return InvestReport(account, tuple(runs), flows, statements, annual, terms, base,
                        lcos_uc_per_kwh(terms, delivered), rows)


def _figures_json(f: Figures) -> dict[str, Any]:
    return {"npv_uc": round(f.npv_uc), "irr": f.irr, "payback_years": f.payback_years,
            "cashflows_uc": [round(c) for c in f.cashflows]}


def report_json(report: InvestReport) -> dict[str, Any]:
    runs = []
    for run, flows, st in zip(report.runs, report.flows, report.statements):
        runs.append({
            "season": run.season, "out_dir": str(run.out_dir), "ledger_of_node": run.node,
            "covered_days": run.covered_days, "entries_read": len(run.entries),
            "entries_waiting": flows.waiting, "entries_touching_account": st.entries, "kinds": dict(flows.kinds),
            "streams_uc": dict(st.streams), "energy_wh": dict(st.energy_wh),
            "revenue_uc": st.revenue_uc, "costs_uc": st.costs_uc, "operating_net_uc": st.operating_net_uc,
            "net_uc": st.net_uc, "opening_uc": st.opening_uc, "closing_uc": st.closing_uc,
            "ledger_balance_uc": flows.balance_uc,
            "reconciled": st.reconciled and st.closing_uc == flows.balance_uc,
            "notes": dict(st.notes),
        })
    return {
        "account": report.account.hex(),
        "streams": [{"key": s.key, "label": s.label, "group": s.group} for s in STREAMS],
        "runs": runs,
        "annual": {"streams_uc": {k: round(v) for k, v in report.annual.streams.items()},
                   "energy_wh": {k: round(v) for k, v in report.annual.energy_wh.items()},
                   "revenue_uc": round(report.annual.revenue_uc), "costs_uc": round(report.annual.costs_uc),
                   "operating_net_uc": round(report.annual.operating_net_uc),
                   "weights": dict(report.annual.weights), "method": report.annual.method},
        "terms": asdict(report.terms),
        "figures": {**_figures_json(report.base), "lcos_uc_per_kwh": report.lcos,
                    "lcos_basis": "capex + discounted opex over discounted kWh the ledger shows sold "
                                  "(book, pool, feed-in), degrading yearly"},
        "sensitivity": [{"parameter": r.parameter, "change": r.change, **_figures_json(r.figures)}
                        for r in report.rows],
        "pool_shares": {"ledger_backed": False,
                        "note": "no ledger kind lets an LP buy into a pool yet; the pool_fees stream is the "
                                "host's certified fee income; p2pgrid.invest.distribute_ledger_fees splits those "
                                "certified fees over a ShareBook whose holdings are pure accounting only",
                        "host_pool_fees_uc": sum(st.streams["pool_fees"] for st in report.statements)},
    }


# --- writing ---------------------------------------------------------------------------------

def _plots(report: InvestReport, plots: Path) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    written = []

    months: dict[str, dict[str, int]] = {}
    for flows in report.flows:
        for month, row in monthly(flows, month_of).items():
            into = months.setdefault(month, dict.fromkeys(STREAM_KEYS, 0))
            for k, v in row.items():
                into[k] += v
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [m for m, row in months.items() if any(row[k] for k in OPERATING_KEYS)]
    pos_base = [0.0] * len(labels)
    neg_base = [0.0] * len(labels)
    for s in STREAMS:
        if s.key not in OPERATING_KEYS:
            continue          # deposits, withdrawals and escrow are not earnings
        values = [months[m][s.key] / 1e6 for m in labels]
        if not any(values):
            continue
        bottoms = [p if v >= 0 else n for v, p, n in zip(values, pos_base, neg_base)]
        ax.bar(labels, values, bottom=bottoms, label=s.label)
        pos_base = [p + max(v, 0) for p, v in zip(pos_base, values)]
        neg_base = [n + min(v, 0) for n, v in zip(neg_base, values)]
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("credits")
    ax.set_title("Operating cash flow by stream per month (certified ledger entries)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(plots / "monthly.png", dpi=90)
    plt.close(fig)
    written.append("monthly.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    position, cumulative = 0.0, []
    for cf in report.base.cashflows:
        position += cf
        cumulative.append(position / 1e6)
    ax.plot(range(len(cumulative)), cumulative, marker="o")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xlabel("year")
    ax.set_ylabel("credits")
    ax.set_title("Cumulative cash position (undiscounted)")
    fig.tight_layout()
    fig.savefig(plots / "cumulative.png", dpi=90)
    plt.close(fig)
    written.append("cumulative.png")

    fig, ax = plt.subplots(figsize=(8, 3.5))
    base = report.base.npv_uc / 1e6
    names = []
    for i, label in enumerate(dict.fromkeys(r.parameter for r in report.rows)):
        low, high = [r.figures.npv_uc / 1e6 for r in report.rows if r.parameter == label]
        ax.barh(i, low - base, left=base, color="tab:red", label="−20 %" if i == 0 else None)
        ax.barh(i, high - base, left=base, color="tab:green", label="+20 %" if i == 0 else None)
        names.append(label)
    ax.set_yticks(range(len(names)), names)
    ax.axvline(base, color="black", linewidth=0.8)
    ax.set_xlabel("NPV, credits")
    ax.set_title("Sensitivity of NPV (±20 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plots / "sensitivity.png", dpi=90)
    plt.close(fig)
    written.append("sensitivity.png")
    return written


def _credits(uc: float | int) -> str:
    return f"{uc / 1e6:,.2f}"


def _fmt_rate(rate: float | None) -> str:
    return "none (no sign change)" if rate is None else f"{rate * 100:.2f} %"


def _fmt_years(years: float | None) -> str:
    return "never within the lifetime" if years is None else f"{years:.1f} years"


def render_html(report: InvestReport, data: dict[str, Any], plots: list[str]) -> str:
    e = html.escape
    rows = []
    for s in STREAMS:
        cells = "".join(f"<td>{format_credits(st.streams[s.key])}</td>" for st in report.statements)
        note = report.statements[0].notes.get(s.key, "") if len(report.statements) == 1 else ""
        rows.append(f"<tr><td>{e(s.label)}</td><td>{s.group}</td>{cells}"
                    f"<td>{_credits(report.annual.streams[s.key])}</td><td class=n>{e(note)}</td></tr>")
    heads = "".join(f"<th>{e(r.season)} run ({r.covered_days * 24:.1f} h)</th>" for r in report.runs)
    recon = "".join(f"<li>{e(r['season'])}: opening {_credits(r['opening_uc'])} + net {_credits(r['net_uc'])} = closing "
                    f"{_credits(r['closing_uc'])}; ledger balance {_credits(r['ledger_balance_uc'])} — "
                    f"{'reconciled to the µc' if r['reconciled'] else 'NOT reconciled'}</li>" for r in data["runs"])
    sens = "".join(f"<tr><td>{e(r.parameter)}</td><td>{r.change:+.0%}</td><td>{_credits(r.figures.npv_uc)}</td>"
                   f"<td>{_fmt_rate(r.figures.irr)}</td><td>{_fmt_years(r.figures.payback_years)}</td></tr>"
                   for r in report.rows)
    t = report.terms
    lcos = "n/a (no energy sold)" if report.lcos is None else f"{report.lcos / 1e6:.4f} credits/kWh"
    covered = sum(r.covered_days for r in report.runs)
    caveat = (f"<p><b>Caution:</b> the runs cover {covered * 24:.1f} h in all; a year scaled from so little is "
              f"indicative only (one week per season is the intended basis).</p>" if covered < 7 else "")
    images = "".join(f'<p><img src="plots/{p}" alt="{p}"></p>' for p in plots)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>p2pgrid investment report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}td,th{{border:1px solid #ccc;padding:2px 6px;
text-align:right}}td:first-child,.n{{text-align:left}}.n{{font-size:80%;color:#666}}table{{border-collapse:collapse}}</style>
</head><body><h1>Investment report</h1><p>Account <code>{report.account.hex()}</code>. Every amount below is
derived from certified ledger entries only (credits; 1 credit = 10⁶ µc).</p>
<h2>Cash-flow statement</h2><table><tr><th>stream</th><th>group</th>{heads}<th>annualised</th><th>note</th></tr>
{''.join(rows)}</table><ul>{recon}</ul>
<h2>Annualisation</h2><p>{e(report.annual.method)}</p>{caveat}
<h2>Investment figures</h2><table>
<tr><td>capex</td><td>{_credits(t.capex_uc)}</td></tr><tr><td>opex per year</td><td>{_credits(t.opex_uc_per_year)}</td></tr>
<tr><td>lifetime</td><td>{t.lifetime_years} years</td></tr><tr><td>degradation</td><td>{t.degradation_per_year:.2%}/year</td></tr>
<tr><td>discount rate</td><td>{t.discount_rate:.2%}</td></tr>
<tr><td>annual operating net</td><td>{_credits(report.annual.operating_net_uc)}</td></tr>
<tr><td>NPV</td><td>{_credits(report.base.npv_uc)}</td></tr><tr><td>IRR</td><td>{_fmt_rate(report.base.irr)}</td></tr>
<tr><td>payback</td><td>{_fmt_years(report.base.payback_years)}</td></tr>
<tr><td>levelised cost per kWh delivered</td><td>{lcos}</td></tr></table>
<h2>Sensitivity</h2><table><tr><th>parameter</th><th>change</th><th>NPV</th><th>IRR</th><th>payback</th></tr>{sens}</table>
<h2>Pool shares</h2><p>{e(data['pool_shares']['note'])}</p>
<h2>Plots</h2>{images}</body></html>
"""


def write_report(report: InvestReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``invest.json``, ``invest.html`` and ``plots/*.png``; returns the two file paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report_json(report)
    plots = _plots(report, out_dir / "plots")
    json_path = out_dir / "invest.json"
    json_path.write_text(json.dumps(data, indent=1, sort_keys=False))
    html_path = out_dir / "invest.html"
    html_path.write_text(render_html(report, data, plots))
    return html_path, json_path
