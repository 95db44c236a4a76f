"""``python -m simnet study``: one representative period per season, then the annualised invest report.

    python -m simnet study [--scenario station] [--days D | --hours H] [--seasons winter,spring,…]
                           [--nodes N] [--speed X] [--transport memory|libp2p] [--account station-0] [--config NODE.toml] [--out DIR]
                           [--reuse] [--quiet]

Method. The scenario (default ``simnet/scenarios/station.toml``: the standard 300 kWp / 200 kWh
station with chargers in a community) runs once per season on the real profiles and weather of
the scenario's year, each run starting at the scenario's ``start_hour`` (station: 00:00 CET) of the
season's representative day
(``SEASON_START_DAYS``: the Monday nearest the middle of each meteorological season, so a week
holds five weekdays and a weekend) for ``--days`` days. Each run is a full simnet run with its
end checks (``simnet.simulate``), written to ``DIR/<season>/``. The account's certified ledger
entries from the four runs are then annualised by ``p2pgrid.invest.statement.annualise`` (each season's
totals × the days it stands for / the days its run covered) and turned into the investment
figures (``p2pgrid.invest.report``) with the terms of ``--config``'s ``[invest]`` section (default
``InvestSection()``: the standard station). Output: ``DIR/invest/report.html`` and
``DIR/invest/figures.json`` (+ ``plots/``), ``DIR/study.json`` (what ran, how long it took, and
``station_revenue``: the account's revenue and costs by stream — book and pool sales, pool fees,
charging, feed-in, … — per season run and per year, with the community's share of its PV output;
``community_kpis``: each season's self-sufficiency, community bill, evening and peak import against
no trading and the community optimum, and its welfare), and the headline figures and the revenue
by season on the terminal.

PPA case. The study also values selling ``--ppa-share`` percent (default 30) of the station's
metered export on a ``--ppa-years`` (10) power purchase agreement to the community's consumers at
``--ppa-price`` (0.12 credits/kWh): NPV and IRR with and without it, by revenue substitution on
the same certified runs (``p2pgrid.ppa.study``), in ``study.json`` (``ppa_case``) and on the
terminal.

``--reuse`` keeps a season whose ``DIR/<season>/`` already holds a finished run of the same
length and start day (an interrupted study resumes where it stopped; ``--seasons`` with
``--reuse`` re-runs one season).

Exit code: 0 when the report was written and every season's end checks passed; 1 when a run
failed its checks (the report is still written, and says so) or broke; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from p2pgrid.config import InvestSection, load_config
from p2pgrid.errors import P2PGridError
from p2pgrid.invest.report import InvestReport, build_report, read_run, stream_reasons, write_report
from p2pgrid.invest.statement import STREAMS
from p2pgrid.ppa.study import PpaCase, PpaComparison, compare_ppa, metered_export_wh
from p2pgrid.units import credits
from simnet.profiles import profile_slot_utc_s
from simnet.scenario import Scenario, ScenarioError, check_scenario, load_scenario, resize

SCENARIOS_DIR = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO = "station"
DEFAULT_ACCOUNT = "station-0"
# Profile day (0 = 1 January, CET) each season's run starts on: the Monday nearest the middle of the
# meteorological season (DJF, MAM, JJA, SON — the seasons ``p2pgrid.invest.statement.SEASON_DAYS`` weighs).
# In 2018: 15 January, 16 April, 16 July, 15 October.
SEASON_START_DAYS = {"winter": 14, "spring": 105, "summer": 196, "autumn": 287}
DEFAULT_DAYS = 2.0


class StudyError(P2PGridError):
    """A study that cannot be run as asked."""


@dataclass(frozen=True)
class SeasonRun:
    season: str
    start_day: int
    out_dir: Path
    exit_code: int
    real_s: float
    reused: bool
    failed_checks: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"season": self.season, "start_day": self.start_day, "out_dir": str(self.out_dir),
                "exit_code": self.exit_code, "real_s": round(self.real_s, 1), "reused": self.reused,
                "failed_checks": list(self.failed_checks)}


def resolve_scenario(name: str) -> Path:
    """A scenario name (``station``) or a path to a TOML file."""
    path = Path(name)
    if path.suffix == ".toml" or path.exists():
        return path
    return SCENARIOS_DIR / f"{name}.toml"


def season_scenario(base: Scenario, season: str, hours: float) -> Scenario:
    """The base scenario moved to the season's representative start day (same start hour), ``hours`` long."""
    if season not in SEASON_START_DAYS:
        raise StudyError(f"unknown season {season!r} (one of {', '.join(SEASON_START_DAYS)})")
    scenario = base.with_overrides(start_day=SEASON_START_DAYS[season], hours=hours)
    check_scenario(scenario)
    return scenario


def finished_run_matches(out_dir: Path, scenario: Scenario) -> bool:
    """Whether ``out_dir`` already holds a finished run of this scenario's period."""
    try:
        community = json.loads((out_dir / "community.json").read_text())
        run = json.loads((out_dir / "run.json").read_text())
    except (OSError, ValueError):
        return False
    start_ms = (profile_slot_utc_s(scenario.year, scenario.start_day, 0, scenario.slot_s)
                + scenario.start_hour * 3600) * 1000
    return (community.get("scenario") == scenario.name and community.get("profile_start_ms") == start_ms
            and len(community.get("participants", [])) == scenario.participants + 1
            and run.get("simulated_hours") == scenario.hours and not run.get("interrupted")
            and (out_dir / "checks.json").exists())


def failed_checks(out_dir: Path) -> tuple[str, ...]:
    try:
        checks = json.loads((out_dir / "checks.json").read_text())
    except (OSError, ValueError):
        return ("checks.json missing",)
    return tuple(c["name"] for c in checks if not c.get("passed"))


def run_season(scenario: Scenario, season: str, out_dir: Path, *, reuse: bool, console: Console,
               live: bool) -> SeasonRun:
    from simnet.simulate import simulate

    if reuse and finished_run_matches(out_dir, scenario):
        console.print(f"[bold]{season}[/bold]: reusing the finished run in {out_dir}")
        failed = failed_checks(out_dir)
        return SeasonRun(season, scenario.start_day, out_dir, 1 if failed else 0, 0.0, True, failed)
    start = dt.date(scenario.year, 1, 1) + dt.timedelta(days=scenario.start_day)
    console.rule(f"{season}: {start:%a %d %b %Y}, {scenario.hours:g} h")
    began = time.monotonic()
    result = simulate(scenario, out_dir, console=console, live=live)
    return SeasonRun(season, scenario.start_day, out_dir, result.exit_code, time.monotonic() - began, False,
                     tuple(c.name for c in result.checks if not c.passed))


def study_context(scenario_path: Path, base: Scenario, hours: float,
                  runs: list[SeasonRun]) -> tuple[tuple[str, str], ...]:
    """The study's own method lines for the report."""
    days = ", ".join(f"{r.season} from profile day {r.start_day} "
                     f"({dt.date(base.year, 1, 1) + dt.timedelta(days=r.start_day):%a %d %b})" for r in runs)
    failed = [f"{r.season}: {', '.join(r.failed_checks)}" for r in runs if r.failed_checks]
    lines = [("study", f"scenario {scenario_path.name} ({base.households} households, {base.consumers} consumers, "
                       f"{base.stations} station(s) with {base.station_pv_kwp:g} kWp PV, "
                       f"{base.station_battery_wh / 1000:g} kWh storage, {base.station_evs} EV charging profiles, "
                       f"pools {'on' if base.station_pools else 'off'}; "
                       f"charging {'sold at ' + f'{base.station_charging_price / 1e6:g} credits/kWh' if base.station_charging else 'not sold'}; "
                       f"LP shares {'offered' if base.station_shares else 'not offered'}"
                       f"{f' ({base.household_investor_share:.0%} of households hold {base.household_invest_shares})' if base.station_shares else ''}; "
                       f"strategy {base.strategy}); "
                       f"{hours:g} simulated hours per season starting {base.start_hour:02d}:00 CET: {days}; "
                       "the Monday nearest the middle of each meteorological season (DJF, MAM, JJA, SON)")]
    if hours < 7 * 24:
        lines.append(("representativeness", f"{hours / 24:g} days per season is less than a week: the runs "
                                             "start on a Monday, so weekends are under-represented, and a few "
                                             "days of weather stand for a whole season"))
    coverage = [f"{r.season} {c:.0%}" for r in runs if (c := metering_completeness(r.out_dir)) is not None]
    if coverage:
        lines.append(("metering completeness", ", ".join(coverage) + " of the readings due were certified; a "
                      "slot a node did not meter settles as zero delivery for it (its export earns no feed-in, "
                      "its sales become shortfall), so the figures cover that share of the simulated slots"))
    if failed:
        lines.append(("end checks FAILED", "; ".join(failed)))
    return tuple(lines)


def metering_completeness(run_dir: Path) -> float | None:
    """Certified meter readings over the readings due in one run (``simnet.kpis.metering``)."""
    from simnet.checks import read_ledgers
    from simnet.kpis import metering

    try:
        community = json.loads((run_dir / "community.json").read_text())
        state = read_ledgers(run_dir / "nodes", ["operator"])["operator"].state
    except (OSError, KeyError, ValueError):
        return None
    return metering(state, community).get("completeness")


def short_reason(reason: str) -> str:
    """The first clause of a zero stream's reason (the report has it whole)."""
    return reason.split(":")[0].split(";")[0]


def render_headline(report: InvestReport) -> Table:
    """Revenue and costs by stream per year, then the investment figures."""
    table = Table(title=f"standard station · {report.account.hex()[:16]}… · per year (annualised)")
    table.add_column("stream")
    table.add_column("credits/year", justify="right")
    table.add_column("kWh/year", justify="right")
    table.add_column("note", overflow="fold")
    reasons = stream_reasons(report)
    for s in STREAMS:
        if s.group not in ("revenue", "cost"):
            continue
        table.add_row(s.label, f"{report.annual.streams[s.key] / 1e6:,.2f}",
                      f"{report.annual.energy_wh[s.key] / 1000:,.1f}", short_reason(reasons.get(s.key, "")))
    table.add_row("operating net", f"{report.annual.operating_net_uc / 1e6:,.2f}", "", "")
    fig = report.base
    table.add_row("NPV", f"{fig.npv_uc / 1e6:,.0f}", "", f"at {report.terms.discount_rate:.1%} over "
                                                        f"{report.terms.lifetime_years} years")
    table.add_row("IRR", "none" if fig.irr is None else f"{fig.irr:.2%}", "", "")
    table.add_row("payback", "never" if fig.payback_years is None else f"{fig.payback_years:.1f} years", "", "")
    table.add_row("LCOS", "n/a" if report.lcos is None else f"{report.lcos / 1e6:.4f} credits/kWh", "",
                  "per kWh sold (book, pool, feed-in)")
    return table


COMMUNITY_SALES = ("energy_sold_book", "energy_sold_pool")     # energy the community took from the station


def station_revenue(report: InvestReport) -> dict[str, Any]:
    """The account's revenue and costs by stream (µc, and the Wh a stream moved), per season run as
    certified and annualised (``p2pgrid.invest.statement``), and the community's share of its PV
    output: Wh sold on the book and through its pools / Wh its PV generated (its ``energy.json``),
    per run and per year (the same season weights)."""
    operating = [s for s in STREAMS if s.group in ("revenue", "cost")]
    seasons = []
    pv_year = community_year = 0.0
    for run, st in zip(report.runs, report.statements):
        pv = sum(run.energy.get("pv", []))
        community = sum(st.energy_wh[k] for k in COMMUNITY_SALES)
        weight = report.annual.weights[run.season]
        pv_year += pv * weight
        community_year += community * weight
        seasons.append({"season": run.season, "covered_days": round(run.covered_days, 4),
                        "streams_uc": {s.key: st.streams[s.key] for s in operating},
                        "energy_wh": {s.key: st.energy_wh[s.key] for s in operating},
                        "revenue_uc": st.revenue_uc, "costs_uc": st.costs_uc, "operating_net_uc": st.operating_net_uc,
                        "pv_wh": pv, "community_wh": community,
                        "community_share_of_pv": round(community / pv, 4) if pv else None})
    return {"account": report.account.hex(), "streams": {s.key: s.label for s in operating},
            "community_streams": list(COMMUNITY_SALES), "seasons": seasons,
            "annual": {"streams_uc": {s.key: round(report.annual.streams[s.key]) for s in operating},
                       "energy_wh": {s.key: round(report.annual.energy_wh[s.key]) for s in operating},
                       "revenue_uc": round(report.annual.revenue_uc), "costs_uc": round(report.annual.costs_uc),
                       "operating_net_uc": round(report.annual.operating_net_uc),
                       "pv_wh": round(pv_year), "community_wh": round(community_year),
                       "community_share_of_pv": round(community_year / pv_year, 4) if pv_year else None}}


COMPARED_KPIS = ("self_sufficiency", "community_cost", "evening_import", "zone_peak_import")


def season_kpis(out_dir: Path) -> dict[str, Any]:
    """One season run's community KPIs from its ``kpis.json``: the ones compared with no trading
    and the community optimum (docs/KPIS.md), and the welfare with pools."""
    try:
        kpis = json.loads((out_dir / "kpis.json").read_text())
    except (OSError, ValueError) as exc:
        return {"reason": f"no kpis.json: {exc}"}
    out = {key: kpis[key] for key in COMPARED_KPIS if key in kpis}
    if "welfare_with_pools" in kpis:
        out["welfare_with_pools"] = kpis["welfare_with_pools"].get("value")
    return out


def render_revenue_by_season(revenue: dict[str, Any]) -> Table:
    """Credits by stream for each season run as certified, and per year; streams all zero left out."""
    table = Table(title="station revenue and costs by stream (credits; per season run as certified, and per year)")
    table.add_column("stream")
    for season in revenue["seasons"]:
        table.add_column(f"{season['season']} ({season['covered_days'] * 24:.3g} h)", justify="right")
    table.add_column("per year", justify="right")
    for key, label in revenue["streams"].items():
        values = [season["streams_uc"][key] for season in revenue["seasons"]] + [revenue["annual"]["streams_uc"][key]]
        if any(values):
            table.add_row(label, *(f"{v / 1e6:,.2f}" for v in values))
    rows = revenue["seasons"] + [revenue["annual"]]
    table.add_row("operating net", *(f"{r['operating_net_uc'] / 1e6:,.2f}" for r in rows))
    table.add_row("community share of PV output", *("n/a" if r["community_share_of_pv"] is None
                                                    else f"{r['community_share_of_pv']:.1%}" for r in rows))
    return table


def render_sensitivity(report: InvestReport) -> Table:
    table = Table(title="sensitivity (one parameter at a time)")
    for column in ("parameter", "change", "NPV credits", "IRR", "payback"):
        table.add_column(column, justify="left" if column == "parameter" else "right")
    for r in report.rows:
        table.add_row(r.parameter, f"{r.change:+.0%}", f"{r.figures.npv_uc / 1e6:,.0f}",
                      "none" if r.figures.irr is None else f"{r.figures.irr:.2%}",
                      "never" if r.figures.payback_years is None else f"{r.figures.payback_years:.1f} y")
    return table


def ppa_comparison(report: InvestReport, case: PpaCase) -> PpaComparison:
    """The PPA case (``p2pgrid.ppa.study``) on the study's runs: the account's metered export and
    energy sales, annualised with the report's season weights."""
    export = sum(metered_export_wh(run.entries, run.account) * report.annual.weights[run.season]
                 for run in report.runs)
    return compare_ppa(report.terms, report.base.cashflows, export, report.annual.streams, case)


def ppa_json(c: PpaComparison) -> dict[str, Any]:
    def fig(f: Any) -> dict[str, Any]:
        return {"npv_uc": round(f.npv_uc), "irr": f.irr, "payback_years": f.payback_years}
    return {"method": "revenue substitution on the same certified runs (p2pgrid.ppa.study)",
            "share_ppm": c.case.share_ppm, "price_uc_per_kwh": c.case.price_uc_per_kwh, "years": c.case.years,
            "annual_export_wh": round(c.annual_export_wh), "annual_energy_revenue_uc": round(c.annual_energy_revenue_uc),
            "realised_uc_per_kwh": None if c.realised_uc_per_kwh is None else round(c.realised_uc_per_kwh),
            "annual_delta_uc": round(c.annual_delta_uc), "without": fig(c.without), "with_ppa": fig(c.with_ppa)}


def render_ppa(c: PpaComparison) -> Table:
    case = c.case
    table = Table(title=f"with vs without a {case.years}-year PPA: {case.share_ppm / 10_000:g} % of the metered "
                        f"export to the community's consumers at {case.price_uc_per_kwh / 1e6:.4f} credits/kWh")
    for column in ("", "NPV credits", "IRR", "payback"):
        table.add_column(column, justify="left" if not column else "right")
    for label, f in (("without PPA", c.without), ("with PPA", c.with_ppa)):
        table.add_row(label, f"{f.npv_uc / 1e6:,.0f}", "none" if f.irr is None else f"{f.irr:.2%}",
                      "never" if f.payback_years is None else f"{f.payback_years:.1f} y")
    realised = "n/a" if c.realised_uc_per_kwh is None else f"{c.realised_uc_per_kwh / 1e6:.4f}"
    table.caption = (f"export {c.annual_export_wh / 1e6:,.1f} MWh/year, realised {realised} credits/kWh without; "
                     f"PPA changes the operating net by {c.annual_delta_uc / 1e6:+,.2f} credits in year 1")
    return table


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    sub = commands.add_parser("study", help="seasonal runs of a station scenario and its annualised invest report")
    sub.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario name or TOML path (default: station)")
    length = sub.add_mutually_exclusive_group()
    length.add_argument("--days", type=float, help=f"simulated days per season (default {DEFAULT_DAYS:g})")
    length.add_argument("--hours", type=float, help="simulated hours per season")
    sub.add_argument("--seasons", default=",".join(SEASON_START_DAYS),
                     help="comma-separated seasons to run (default: all four)")
    sub.add_argument("--nodes", type=int, help="resize the community to N nodes (operator included), keeping its mix")
    sub.add_argument("--speed", type=float, help="simulated seconds per real second (default: the scenario's)")
    sub.add_argument("--transport", choices=("libp2p", "memory"), help="default: the scenario's")
    sub.add_argument("--account", default=DEFAULT_ACCOUNT, help="whose investment (default: station-0)")
    sub.add_argument("--config", type=Path, help="node config whose [invest] section holds the terms")
    sub.add_argument("--out", default="study-out", help="output directory (default: study-out)")
    sub.add_argument("--reuse", action="store_true", help="keep seasons already run with the same period")
    sub.add_argument("--quiet", action="store_true", help="no live view")
    sub.add_argument("--ppa-share", type=float, default=30.0,
                     help="PPA case: percent of the station's metered export sold on the PPA (default 30)")
    sub.add_argument("--ppa-price", default="0.12", help="PPA case: credits per kWh (default 0.12)")
    sub.add_argument("--ppa-years", type=int, default=10, help="PPA case: years of the agreement (default 10)")


def do_study(args: argparse.Namespace) -> int:
    console = Console()
    try:
        seasons = [s.strip() for s in args.seasons.split(",") if s.strip()]
        if not seasons or len(set(seasons)) != len(seasons):
            raise StudyError("--seasons: name each season once")
        hours = args.hours if args.hours is not None else 24.0 * (args.days if args.days is not None else DEFAULT_DAYS)
        if hours <= 0:
            raise StudyError("--days / --hours must be positive")
        scenario_path = resolve_scenario(args.scenario)
        base = load_scenario(scenario_path)
        if args.nodes is not None:
            base = resize(base, args.nodes)
        base = base.with_overrides(speed=args.speed, transport=args.transport)
        scenarios = {season: season_scenario(base, season, hours) for season in seasons}
        terms_section = load_config(args.config).invest if args.config else InvestSection()
        if not 0 < args.ppa_share <= 100 or args.ppa_years < 1:
            raise StudyError("--ppa-share is a percent in (0, 100], --ppa-years at least 1")
        ppa_case = PpaCase(round(args.ppa_share * 10_000), credits(args.ppa_price), args.ppa_years)
    except (StudyError, ScenarioError, P2PGridError, ValueError) as exc:
        print(f"simnet study: {exc}", file=sys.stderr)
        return 2
    from p2pgrid.cli.invest import terms_of

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    runs: list[SeasonRun] = []
    for season, scenario in scenarios.items():
        run = run_season(scenario, season, out / season, reuse=args.reuse, console=console, live=not args.quiet)
        runs.append(run)
        if run.exit_code == 130:
            console.print("interrupted: no report")
            return 130
    try:
        ledgers = [read_run(r.out_dir, args.account, r.season) for r in runs]
        report = build_report(ledgers, terms_of(terms_section), study_context(scenario_path, base, hours, runs))
        html_path, json_path = write_report(report, out / "invest")
        ppa = ppa_comparison(report, ppa_case)
    except P2PGridError as exc:
        print(f"simnet study: {exc}", file=sys.stderr)
        return 1
    total_s = time.monotonic() - began
    revenue = station_revenue(report)
    (out / "study.json").write_text(json.dumps({
        "scenario": str(scenario_path), "account": args.account, "hours_per_season": hours,
        "speed": base.speed, "transport": base.transport, "year": base.year, "strategy": base.strategy,
        "seasons": [r.to_json() for r in runs], "real_s": round(total_s, 1),
        "report": str(html_path), "figures": str(json_path), "station_revenue": revenue,
        "community_kpis": {r.season: season_kpis(r.out_dir) for r in runs}, "ppa_case": ppa_json(ppa)}, indent=1))
    console.print(render_headline(report))
    console.print(render_revenue_by_season(revenue))
    console.print(render_sensitivity(report))
    console.print(render_ppa(ppa))
    console.print(f"{len(runs)} season runs of {hours:g} h in {total_s / 60:.1f} min "
                  f"({', '.join(f'{r.season} {r.real_s:.0f} s' for r in runs)})")
    console.print(f"report: {html_path}\nfigures: {json_path}")
    return 0 if all(r.exit_code == 0 for r in runs) else 1
