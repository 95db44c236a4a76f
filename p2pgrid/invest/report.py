"""The investment report of one account: read simnet runs' ledgers, compute, write HTML + PNG + JSON.

Input: one or more simnet output dirs (``simulate(…, out_dir)``), each labelled with the season it
stands for (``summer=runs/jul``; unlabelled: ``spring``). From each dir this reads
``community.json`` (zone, gateway, covered time ``profile_start_ms .. end_ms``) and the certified
entries of ``nodes/<node>/ledger.sqlite`` — by default the node of the account itself, whose copy
of the ledger is the one its owner trusts. Everything money is derived by ``p2pgrid.invest.statement`` from
those certified entries only.

Output in ``out_dir``: ``figures.json`` (every figure, the method, the assumptions, the notes),
``report.html`` and ``plots/{monthly,cumulative,sensitivity}.png``.

Every stream is always present. A stream that is zero carries a **reason read from the data**
(``stream_reasons``): e.g. the settlement streams say "no slot was settled" when the ledger holds
no ``settle`` entry at all, and "slots were settled; none posted to this account" otherwise — so a
report made before and after a feature lands tells the two cases apart without code changes.

Besides the ledger, the report reads what the run simulated physically for the account's node
(``nodes/<node>/energy.json``: PV, load, grid exchange before trading, per slot) and annualises it
with the same season weights; these kWh come from the profiles, not the ledger, and are labelled
so. They show how much of the installation's output the market actually took.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from p2pgrid.errors import P2PGridError
from p2pgrid.invest.statement import (
    OPERATING_KEYS, STREAM_NOTES, STREAMS, STREAM_KEYS, AccountFlows, Annualised, Figures, InvestTerms, SeasonSample, SensitivityRow, Statement,
    account_flows, annualise, figures, lcos_uc_per_kwh, monthly, project_cashflows, sensitivity, statement,
)
from p2pgrid.ledger.chain import LedgerRules
from p2pgrid.ledger.messages import Entry
from p2pgrid.units import format_credits
from p2pgrid.wire import Signed

MS_PER_DAY = 86_400_000
REPORT_HTML = "report.html"
FIGURES_JSON = "figures.json"
SETTLEMENT_STREAMS = ("feed_in", "imbalance_credit", "shortfall_charges", "extra_import", "grid_fees")
POOL_STREAMS = ("energy_sold_pool", "pool_fees", "energy_bought_pool")
SOLD_STREAMS = ("energy_sold_book", "energy_sold_pool", "charging_sales")   # energy the account delivered
DATA_SOURCES = ("household load and EV charging: Fraunhofer ISE synPRO profiles; consumers: BDEW 2025 "
                "standard load profile H25; PV: DWD test reference year TRY2010 weather through pvlib; "
                "day-ahead prices: SMARD (Bundesnetzagentur) hourly prices of the run's year (simnet.profiles)")


class RunUnreadable(P2PGridError):
    """A simnet output dir lacks what the report needs."""


def register_entry_kinds() -> list[str]:
    """Register every entry kind a node validates (``p2pgrid.node.entry_kinds``)."""
    from p2pgrid.node.entry_kinds import registered_kinds
    return registered_kinds()


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
    community: dict[str, Any] = field(default_factory=dict)   # community.json as written by simnet
    run_info: dict[str, Any] = field(default_factory=dict)    # run.json (speed, transport), if present
    energy: dict[str, list[Any]] = field(default_factory=dict)  # the node's simulated series, if present

    @property
    def covered_days(self) -> float:
        return (self.end_ms - self.start_ms) / MS_PER_DAY

    @property
    def ledger_kinds(self) -> dict[str, int]:
        """Certified entries in the whole ledger copy, per kind (not only the account's)."""
        counts: dict[str, int] = {}
        for signed in self.entries:
            counts[signed.body.kind] = counts.get(signed.body.kind, 0) + 1
        return counts

    @property
    def participant(self) -> dict[str, Any]:
        return next((p for p in self.community.get("participants", []) if p["account"] == self.account.hex()), {})


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


def read_entries(path: Path) -> list[Signed[Entry]]:
    """Every certified entry of one ledger copy (``ledger.sqlite``), entry kinds registered."""
    return read_ledger_file(path)[1]


def read_ledger_file(path: Path) -> tuple[LedgerRules, list[Signed[Entry]]]:
    import trio

    if not path.exists():
        raise RunUnreadable(f"{path}: no ledger database")
    register_entry_kinds()
    return trio.run(_read_entries, path)


def read_run(out_dir: Path, account: str, season: str = "spring", node: str | None = None) -> RunLedger:
    """Certified entries of one run, from ``node``'s ledger (default: the account's own node)."""
    out_dir = Path(out_dir)
    community = _community(out_dir)
    own_node, key = resolve_account(out_dir, account)
    node = node or own_node
    rules, entries = read_ledger_file(out_dir / "nodes" / node / "ledger.sqlite")
    return RunLedger(season, out_dir, node, key, rules, tuple(entries),
                     int(community["profile_start_ms"]), int(community["end_ms"]), community,
                     _optional_json(out_dir / "run.json"), _optional_json(out_dir / "nodes" / own_node / "energy.json"))


def read_node_ledger(data_dir: Path, choose_account: Callable[[set[bytes]], bytes],
                     season: str = "spring") -> RunLedger:
    """A real node's ledger copy (``<data_dir>/ledger.sqlite``) as a run: the time covered is from
    its first to its last certified entry (at least a minute); ``choose_account`` picks the account
    among those with a chain in that ledger. There is no community file: the terms the simnet
    notes describe (participants, profiles) are absent from the report's method lines."""
    data_dir = Path(data_dir)
    path = data_dir / "ledger.sqlite"
    if not path.exists():
        raise RunUnreadable(f"{path}: no ledger database (is {data_dir} a node's data dir?)")
    rules, entries = read_ledger_file(path)
    if not entries:
        raise RunUnreadable(f"{path}: no certified entries yet")
    key = choose_account({signed.body.account for signed in entries})
    times = [signed.body.time_ms for signed in entries]
    start, end = min(times), max(max(times), min(times) + MIN_COVERED_MS)
    return RunLedger(season, data_dir, data_dir.name, key, rules, tuple(entries), start, end,
                     {"zone": rules.zone}, {"transport": "libp2p (a real node)"})


MIN_COVERED_MS = 60_000


def _optional_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


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
    context: tuple[tuple[str, str], ...] = ()    # extra method lines from the caller (e.g. the study)


def month_of(time_s: int) -> str:
    return dt.datetime.fromtimestamp(time_s, dt.timezone.utc).strftime("%Y-%m")


def build_report(runs: list[RunLedger], terms: InvestTerms,
                 context: tuple[tuple[str, str], ...] = ()) -> InvestReport:
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
    delivered = sum(annual.energy_wh[k] for k in SOLD_STREAMS) + fed_in_wh(annual, runs)
    rows = tuple(sensitivity(terms, operating, revenue))
    return InvestReport(account, tuple(runs), flows, statements, annual, terms, base,
                        lcos_uc_per_kwh(terms, delivered), rows, tuple(context))


_FIXED_REASONS = {
    "energy_sold_book": "no fill of the account's offers was certified",
    "energy_bought_book": "the account bought nothing in the order book",
    "energy_bought_grid": "the account bought nothing from the zone gateway in the book",
    "deposits": "nothing was minted or transferred to the account",
    "withdrawals": "no burn or transfer out of the account",
    "escrow": "every lock of the account was consumed or released",
    "other": "every balance change is explained by a known entry kind",
}


def zero_reason(key: str, kinds: dict[str, int]) -> str:
    """Why stream ``key`` is zero, given the certified entries per kind in the ledgers read."""
    if key in STREAM_NOTES:
        return STREAM_NOTES[key]
    if key in SETTLEMENT_STREAMS:
        if kinds.get("settle"):
            reason = f"{kinds['settle']} settle entries certified; none posted this to the account"
        else:
            reason = ("no slot was settled in these runs: the ledger holds no settle entries"
                      + ("" if kinds.get("meter") else " and no meter entries"))
        return reason + ("; and the gateway bought nothing in the book" if key == "feed_in" else "")
    if key in POOL_STREAMS:
        if not kinds.get("pool_open"):
            return "no pool was opened in these runs (the account hosts none and joined none)"
        if not kinds.get("swap"):
            return "pools were opened but no swap was certified"
        return f"{kinds['swap']} swaps certified; none of this kind touched the account"
    if key.startswith("charging_"):
        if not kinds.get("charge_tariff"):
            return "no charging tariff was certified in these runs (the station sells no charging)"
        if not kinds.get("charge_bill"):
            return f"{kinds.get('charge_start', 0)} charging sessions started; none was billed"
        return f"{kinds['charge_bill']} charging sessions billed; none touched the account"
    if key.startswith("share_"):
        if not kinds.get("share_offer"):
            return "no pool-share programme was offered in these runs (simnet sets none up)"
        return f"{kinds['share_offer']} share programmes offered; none of this kind touched the account"
    if key.startswith("ppa_"):
        if not kinds.get("ppa_accept"):
            return "no power purchase agreement was accepted in these runs"
        return f"{kinds['ppa_accept']} agreements accepted; none of this kind touched the account"
    return _FIXED_REASONS.get(key, "no certified entries in these runs")


def fed_in_wh(annual: Annualised, runs: list[RunLedger]) -> float:
    """Annual Wh fed into the grid: the feed-in stream's Wh where the flows carry them; else its µc
    at the zone's feed-in price (settlement postings carry money only, priced at that tariff)."""
    if annual.energy_wh["feed_in"]:
        return annual.energy_wh["feed_in"]
    price = runs[0].community.get("feed_in_price", 0)
    return annual.streams["feed_in"] * 1000 / price if price > 0 else 0.0


def stream_reasons(report: InvestReport) -> dict[str, str]:
    """For each stream whose annualised total (µc and Wh) is zero: why, read from the runs' ledgers."""
    kinds: dict[str, int] = {}
    for run in report.runs:
        for kind, n in run.ledger_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return {key: zero_reason(key, kinds) for key in STREAM_KEYS
            if not (report.annual.streams[key] or report.annual.energy_wh[key])}


def profile_energy(report: InvestReport) -> dict[str, Any]:
    """What the account's node simulated physically (kWh from the profiles, not the ledger), per
    run and annualised with the season weights: PV generated, load, export and import before trading."""
    runs = []
    annual = dict.fromkeys(("pv_kwh", "load_kwh", "export_kwh", "import_kwh"), 0.0)
    for run in report.runs:
        if not run.energy:
            continue
        net = run.energy.get("net", [])
        row = {"season": run.season, "pv_kwh": sum(run.energy.get("pv", [])) / 1000,
               "load_kwh": sum(run.energy.get("load", [])) / 1000,
               "export_kwh": -sum(n for n in net if n < 0) / 1000, "import_kwh": sum(n for n in net if n > 0) / 1000}
        runs.append(row)
        for k in annual:
            annual[k] += row[k] * report.annual.weights[run.season]
    kwp = report.runs[0].participant.get("pv_kwp", 0.0)
    sold = (sum(report.annual.energy_wh[k] for k in SOLD_STREAMS)
            + fed_in_wh(report.annual, list(report.runs))) / 1000
    return {"source": "nodes/<node>/energy.json: the simulated series the node traded (simnet.community); "
                      "export/import are the grid exchange before trading, after the battery's self-consumption",
            "runs": runs, "annual": {k: round(v, 1) for k, v in annual.items()},
            "pv_kwp": kwp, "specific_yield_kwh_per_kwp": round(annual["pv_kwh"] / kwp, 1) if kwp and runs else None,
            "sold_kwh_per_year": round(sold, 1),
            "share_of_export_sold": round(sold / annual["export_kwh"], 4) if annual["export_kwh"] else None}


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def assumptions(report: InvestReport) -> list[tuple[str, str]]:
    """The method and assumptions behind the figures, as (label, text) lines."""
    t = report.terms
    lines = [("annualisation", report.annual.method),
             ("investment terms", f"capex {t.capex_uc / 1e6:,.0f} credits; opex {t.opex_uc_per_year / 1e6:,.0f} "
                                  f"credits/year; lifetime {t.lifetime_years} years; degradation "
                                  f"{t.degradation_per_year:.2%}/year of the operating net; discount rate "
                                  f"{t.discount_rate:.2%}; 1 credit ≈ 1 €"),
             ("project cash flows", "year 0: −capex; year t: annualised operating net × (1 − degradation)^(t−1) "
                                    "− opex; financing (deposits, withdrawals) and escrow are not earnings"),
             ("sensitivity", "±20 % on the price level (whole operating net), the PV yield (revenue only) and "
                             "the battery degradation rate, one at a time")]
    years = sorted({dt.datetime.fromtimestamp(r.start_ms / 1000, dt.timezone.utc).year for r in report.runs})
    lines.append(("year of data", f"{', '.join(map(str, years))}; {DATA_SOURCES}"))
    for run in report.runs:
        c, info = run.community, run.run_info
        day_ahead = c.get("day_ahead") or []
        mean_da = f"; mean day-ahead {sum(day_ahead) / len(day_ahead) / 1000:.1f} €/MWh" if day_ahead else ""
        me = run.participant
        station = (f"; the account: {me.get('role', '?')} with {me.get('pv_kwp', 0):g} kWp PV, "
                   f"{me.get('battery_wh', 0) / 1000:g} kWh storage") if me else ""
        lines.append((f"{run.season} run",
                      f"{run.out_dir}: {_when(run.start_ms)} → {_when(run.end_ms)} ({run.covered_days:.3g} d), "
                      f"{len(c.get('participants', []))} nodes, slot {c.get('slot_s', '?')} s, "
                      f"{info.get('transport', '?')} transport at {info.get('speed', '?')}× speed; retail "
                      f"{c.get('retail_price', 0) / 1e6:.3f} and feed-in {c.get('feed_in_price', 0) / 1e6:.3f} "
                      f"credits/kWh{mean_da}{station}; ledger copy of {run.node}"))
    return lines + list(report.context)


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
    reasons = stream_reasons(report)
    return {
        "account": report.account.hex(),
        "streams": [{"key": s.key, "label": s.label, "group": s.group, "present": True,
                     "zero_reason": reasons.get(s.key)} for s in STREAMS],
        "runs": runs,
        "annual": {"streams_uc": {k: round(v) for k, v in report.annual.streams.items()},
                   "energy_wh": {k: round(v) for k, v in report.annual.energy_wh.items()},
                   "revenue_uc": round(report.annual.revenue_uc), "costs_uc": round(report.annual.costs_uc),
                   "operating_net_uc": round(report.annual.operating_net_uc),
                   "weights": dict(report.annual.weights), "method": report.annual.method,
                   "earnings_streams": list(OPERATING_KEYS)},
        "terms": asdict(report.terms),
        "figures": {**_figures_json(report.base), "lcos_uc_per_kwh": report.lcos,
                    "lcos_basis": "capex + discounted opex over discounted kWh the ledger shows sold (book, "
                                  "pool) or fed in (settlement µc at the feed-in price), degrading yearly"},
        "sensitivity": [{"parameter": r.parameter, "change": r.change, **_figures_json(r.figures)}
                        for r in report.rows],
        "assumptions": [{"label": label, "text": text} for label, text in assumptions(report)],
        "profile_energy": profile_energy(report),
        "pool_shares": _pool_shares_json(report),
    }


def _pool_shares_json(report: InvestReport) -> dict[str, Any]:
    """The account's pool-share programmes and positions (ledger objects), from the last run's copy."""
    host_fees = sum(st.streams.get("pool_fees", 0) for st in report.statements)
    try:
        from p2pgrid.invest.statement import share_statement
    except ImportError:
        return {"ledger_backed": False, "host_pool_fees_uc": host_fees,
                "note": "this build has no pool-share entry kinds"}
    run = report.runs[-1]
    shares = share_statement(run.entries, run.rules, run.account)
    return {"ledger_backed": True, "host_pool_fees_uc": host_fees, "of_run": run.season,
            "programmes_hosted": len(shares.hosted), "positions": len(shares.positions),
            "income_uc": shares.income_uc, "payouts_uc": shares.payouts_uc, "capital_uc": shares.capital_uc,
            "reconciled": shares.reconciled,
            "note": "pool shares are ledger objects (p2pgrid.shares.rules): share_income / share_payouts "
                    "are LP fee income and the host's payouts; share_capital is principal, not earnings"}


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


def _share(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.2%}"


def _fmt_years(years: float | None) -> str:
    return "never within the lifetime" if years is None else f"{years:.1f} years"


def render_html(report: InvestReport, data: dict[str, Any], plots: list[str]) -> str:
    e = html.escape
    rows = []
    reasons = {s["key"]: s["zero_reason"] for s in data["streams"]}
    for s in STREAMS:
        cells = "".join(f"<td>{format_credits(st.streams[s.key])}</td>" for st in report.statements)
        note = reasons.get(s.key) or ""
        annual = _credits(report.annual.streams[s.key]) if s.key in OPERATING_KEYS else "—"
        rows.append(f"<tr><td>{e(s.label)}</td><td>{s.group}</td>{cells}"
                    f"<td>{annual}</td><td class=n>{e(note)}</td></tr>")
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
    method = "".join(f"<li><b>{e(a['label'])}</b>: {e(a['text'])}</li>" for a in data["assumptions"])
    phys = data["profile_energy"]
    physical = "".join(f"<tr><td>{e(r['season'])} run</td><td>{r['pv_kwh']:,.0f}</td><td>{r['load_kwh']:,.0f}</td>"
                       f"<td>{r['export_kwh']:,.0f}</td><td>{r['import_kwh']:,.0f}</td></tr>" for r in phys["runs"])
    if physical:
        a = phys["annual"]
        physical = (f"<h2>Energy simulated (profiles, not ledger)</h2><table><tr><th>period</th><th>PV kWh</th>"
                    f"<th>load kWh</th><th>export kWh</th><th>import kWh</th></tr>{physical}<tr><td>annualised</td>"
                    f"<td>{a['pv_kwh']:,.0f}</td><td>{a['load_kwh']:,.0f}</td><td>{a['export_kwh']:,.0f}</td>"
                    f"<td>{a['import_kwh']:,.0f}</td></tr></table><p>Specific yield "
                    f"{phys['specific_yield_kwh_per_kwp']} kWh/kWp/year; energy sold on the ledger "
                    f"{phys['sold_kwh_per_year']:,.0f} kWh/year = {_share(phys['share_of_export_sold'])} of the "
                    f"export available before trading. {e(phys['source'])}.</p>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>p2pgrid investment report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:auto}}td,th{{border:1px solid #ccc;padding:2px 6px;
text-align:right}}td:first-child,.n{{text-align:left}}.n{{font-size:80%;color:#666}}table{{border-collapse:collapse}}</style>
</head><body><h1>Investment report</h1><p>Account <code>{report.account.hex()}</code>. Every amount below is
derived from certified ledger entries only (credits; 1 credit = 10⁶ µc).</p>
<h2>Cash-flow statement</h2><p>Per run as certified; the annualised column scales the operating
streams only (financing, escrow and other are not earnings and are not scaled).</p><table><tr><th>stream</th><th>group</th>{heads}<th>annualised</th><th>note</th></tr>
{''.join(rows)}</table><ul>{recon}</ul>
<h2>Method and assumptions</h2><ul>{method}</ul>{caveat}{physical}
<h2>Investment figures</h2><table>
<tr><td>capex</td><td>{_credits(t.capex_uc)}</td></tr><tr><td>opex per year</td><td>{_credits(t.opex_uc_per_year)}</td></tr>
<tr><td>lifetime</td><td>{t.lifetime_years} years</td></tr><tr><td>degradation</td><td>{t.degradation_per_year:.2%}/year</td></tr>
<tr><td>discount rate</td><td>{t.discount_rate:.2%}</td></tr>
<tr><td>annual operating net</td><td>{_credits(report.annual.operating_net_uc)}</td></tr>
<tr><td>NPV</td><td>{_credits(report.base.npv_uc)}</td></tr><tr><td>IRR</td><td>{_fmt_rate(report.base.irr)}</td></tr>
<tr><td>payback</td><td>{_fmt_years(report.base.payback_years)}</td></tr>
<tr><td>levelised cost per kWh delivered</td><td>{lcos}</td></tr></table>
<h2>Sensitivity</h2><table><tr><th>parameter</th><th>change</th><th>NPV</th><th>IRR</th><th>payback</th></tr>{sens}</table>
<h2>Pool shares</h2><p>{e(data['pool_shares']['note'])}; programmes hosted
{data['pool_shares'].get('programmes_hosted', 0)}, positions held {data['pool_shares'].get('positions', 0)}.</p>
<h2>Plots</h2>{images}</body></html>
"""


def write_report(report: InvestReport, out_dir: Path) -> tuple[Path, Path]:
    """Write ``figures.json``, ``report.html`` and ``plots/*.png``; returns (html, json) paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report_json(report)
    plots = _plots(report, out_dir / "plots")
    json_path = out_dir / FIGURES_JSON
    json_path.write_text(json.dumps(data, indent=1, sort_keys=False))
    html_path = out_dir / REPORT_HTML
    html_path.write_text(render_html(report, data, plots))
    return html_path, json_path
