"""The seasonal study: the standard station's scenario, season runs, and the annualised report."""

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from p2pgrid.invest.statement import SEASON_DAYS, STREAM_KEYS
from simnet.demo import main as simnet_main
from simnet.scenario import load_scenario
from simnet.study import (
    SEASON_START_DAYS, StudyError, finished_run_matches, render_headline, render_revenue_by_season, render_sensitivity,
    resolve_scenario, season_scenario,
)

SCENARIOS = Path(__file__).resolve().parents[2] / "simnet" / "scenarios"


def test_the_station_scenario_is_the_standard_station_in_a_community():
    s = load_scenario(resolve_scenario("station"))
    assert (s.station_pv_kwp, s.station_battery_wh, s.stations) == (300.0, 200_000, 1)
    assert s.station_evs > 0 and s.station_pools
    assert s.households + s.consumers >= 15          # see the size note in station.toml
    assert s.transport == "memory" and s.slot_s == 3600


def test_each_season_starts_on_its_monday_and_keeps_the_rest_of_the_scenario():
    base = load_scenario(resolve_scenario("station"))
    for season, day in SEASON_START_DAYS.items():
        s = season_scenario(base, season, 48.0)
        assert (s.start_day, s.hours, s.year, s.seed) == (day, 48.0, base.year, base.seed)
    assert set(SEASON_START_DAYS) == set(SEASON_DAYS)      # the seasons the annualisation weighs


def test_an_unknown_season_is_refused():
    with pytest.raises(StudyError, match="monsoon"):
        season_scenario(load_scenario(resolve_scenario("station")), "monsoon", 24.0)


def test_a_scenario_name_resolves_to_the_shipped_file_and_a_path_stays_a_path(tmp_path):
    assert resolve_scenario("station") == SCENARIOS / "station.toml"
    assert resolve_scenario(str(tmp_path / "x.toml")) == tmp_path / "x.toml"


def test_an_empty_dir_holds_no_finished_run(tmp_path):
    assert not finished_run_matches(tmp_path, load_scenario(resolve_scenario("station")))


def test_bad_study_arguments_are_one_error_line_and_exit_2(tmp_path, capsys):
    assert simnet_main(["study", "--seasons", "winter,monsoon", "--out", str(tmp_path)]) == 2
    assert simnet_main(["study", "--hours", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "monsoon" in err[0] and "positive" in err[1]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A short study: the `short` community (station included), 09:00-13:00 in winter and summer."""
    out = tmp_path_factory.mktemp("study")
    code = simnet_main(["study", "--scenario", str(SCENARIOS / "short.toml"), "--hours", "4",
                        "--seasons", "winter,summer", "--transport", "memory", "--speed", "1800",
                        "--quiet", "--out", str(out)])
    return out, code


def test_a_short_study_writes_the_report_and_its_exit_code_follows_the_end_checks(study_dir):
    out, code = study_dir
    study = json.loads((out / "study.json").read_text())
    assert [r["season"] for r in study["seasons"]] == ["winter", "summer"]
    assert all(not r["reused"] and r["real_s"] > 0 for r in study["seasons"])
    for r in study["seasons"]:
        checks = json.loads((out / r["season"] / "checks.json").read_text())
        assert r["failed_checks"] == [c["name"] for c in checks if not c["passed"]]
        assert r["exit_code"] == (1 if r["failed_checks"] else 0)
    assert code == (0 if all(r["exit_code"] == 0 for r in study["seasons"]) else 1)
    ppa = study["ppa_case"]                                    # the PPA case: with vs without
    assert (ppa["share_ppm"], ppa["price_uc_per_kwh"], ppa["years"]) == (300_000, 120_000, 10)
    assert {"npv_uc", "irr"} <= set(ppa["with_ppa"]) <= set(ppa["without"])
    # Short runs may end before any reading is due: no metered export, nothing for the PPA to sell.
    moved = ppa["with_ppa"]["npv_uc"] != ppa["without"]["npv_uc"]
    assert moved == (ppa["annual_export_wh"] > 0 and ppa["realised_uc_per_kwh"] != ppa["price_uc_per_kwh"])
    assert (out / "invest" / "report.html").exists() and (out / "invest" / "figures.json").exists()
    method = {a["label"]: a["text"] for a in json.loads((out / "invest" / "figures.json").read_text())["assumptions"]}
    assert ("end checks FAILED" in method) == (code == 1)      # a failed check is stated in the report


def test_the_station_gets_every_stream_with_a_value_or_a_reason(study_dir):
    out, _ = study_dir
    data = json.loads((out / "invest" / "figures.json").read_text())
    assert [s["key"] for s in data["streams"]] == list(STREAM_KEYS)
    for s in data["streams"]:
        annual = data["annual"]["streams_uc"][s["key"]] or data["annual"]["energy_wh"][s["key"]]
        assert s["present"] and (annual or s["zero_reason"]), s["key"]
    assert data["annual"]["revenue_uc"] > 0                    # the station sold energy in the study
    for run in data["runs"]:
        assert set(run["streams_uc"]) == set(STREAM_KEYS) and run["reconciled"] and run["entries_waiting"] == 0
    assert set(data["annual"]["weights"]) == {"winter", "summer"}
    days = data["runs"][0]["covered_days"]
    assert data["annual"]["weights"]["winter"] == pytest.approx(90 * 365 / 182 / days)


def test_the_study_gives_the_station_revenue_by_stream_per_season_and_the_community_share(study_dir):
    out, _ = study_dir
    revenue = json.loads((out / "study.json").read_text())["station_revenue"]
    figures = json.loads((out / "invest" / "figures.json").read_text())
    assert [r["season"] for r in revenue["seasons"]] == ["winter", "summer"]
    assert {"energy_sold_book", "energy_sold_pool", "pool_fees", "feed_in", "charging_sales"} <= set(revenue["streams"])
    for season, run in zip(revenue["seasons"], figures["runs"]):
        # The same certified figures as the invest report's, per season run.
        assert season["operating_net_uc"] == run["operating_net_uc"] == sum(season["streams_uc"].values())
        assert all(season["streams_uc"][k] == run["streams_uc"][k] for k in revenue["streams"])
        energy = json.loads((out / season["season"] / "nodes" / "station-0" / "energy.json").read_text())
        assert season["pv_wh"] == sum(energy["pv"]) > 0
        sold = season["energy_wh"]["energy_sold_book"] + season["energy_wh"]["energy_sold_pool"]
        assert season["community_wh"] == sold and season["community_share_of_pv"] == round(sold / sum(energy["pv"]), 4)
    annual = revenue["annual"]
    assert annual["operating_net_uc"] == figures["annual"]["operating_net_uc"]
    weights = figures["annual"]["weights"]
    assert annual["pv_wh"] == round(sum(s["pv_wh"] * weights[s["season"]] for s in revenue["seasons"]))
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(render_revenue_by_season(revenue))
    text = console.file.getvalue()
    assert "community share of PV output" in text and "operating net" in text and "winter (4 h)" in text
    season = json.loads((out / "study.json").read_text())["community_kpis"]["summer"]
    kpis = json.loads((out / "summer" / "kpis.json").read_text())
    assert season["self_sufficiency"] == kpis["self_sufficiency"] and "optimum" in season["community_cost"]


def test_the_method_states_annualisation_terms_prices_and_year(study_dir):
    out, _ = study_dir
    data = json.loads((out / "invest" / "figures.json").read_text())
    method = {a["label"]: a["text"] for a in data["assumptions"]}
    assert method["annualisation"].startswith("per-season scaling")
    assert "capex 400,000 credits" in method["investment terms"] and "discount rate 6.00%" in method["investment terms"]
    assert method["year of data"].startswith("2018") and "SMARD" in method["year of data"]
    assert "retail 0.300" in method["winter run"] and "feed-in 0.080" in method["summer run"]
    assert "Mon 15 Jan" in method["study"] and "Mon 16 Jul" in method["study"]
    assert "less than a week" in method["representativeness"]
    energy = data["profile_energy"]
    assert energy["annual"]["pv_kwh"] > 0 and energy["sold_kwh_per_year"] > 0
    page = (out / "invest" / "report.html").read_text()
    assert "Method and assumptions" in page and "Energy simulated (profiles, not ledger)" in page


def test_reuse_keeps_finished_seasons_and_gives_the_same_figures(study_dir):
    out, _ = study_dir
    before = json.loads((out / "invest" / "figures.json").read_text())
    first = json.loads((out / "study.json").read_text())
    code = simnet_main(["study", "--scenario", str(SCENARIOS / "short.toml"), "--hours", "4",
                        "--seasons", "winter,summer", "--transport", "memory", "--speed", "1800",
                        "--quiet", "--reuse", "--out", str(out)])
    assert code == (0 if all(r["exit_code"] == 0 for r in first["seasons"]) else 1)
    study = json.loads((out / "study.json").read_text())
    assert all(r["reused"] for r in study["seasons"])
    after = json.loads((out / "invest" / "figures.json").read_text())
    assert after["annual"] == before["annual"] and after["figures"] == before["figures"]


def test_the_headline_and_sensitivity_render_in_plain_text(study_dir):
    from p2pgrid.cli.invest import terms_of
    from p2pgrid.config import InvestSection
    from p2pgrid.invest.report import build_report, read_run

    out, _ = study_dir
    runs = [read_run(out / season, "station-0", season) for season in ("winter", "summer")]
    report = build_report(runs, terms_of(InvestSection()))
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(render_headline(report))
    console.print(render_sensitivity(report))
    text = console.file.getvalue()
    for word in ("Energy sold via order book", "NPV", "IRR", "payback", "LCOS", "price level", "PV yield",
                 "battery degradation"):
        assert word in text, word


def test_a_zero_settlement_stream_says_whether_any_slot_was_settled():
    from p2pgrid.invest.report import zero_reason

    assert "no settle entries and no meter entries" in zero_reason("feed_in", {"fill": 3})
    assert zero_reason("extra_import", {"meter": 5}).endswith("the ledger holds no settle entries")
    assert zero_reason("shortfall_charges", {"settle": 4, "meter": 9}).startswith("4 settle entries certified")
    assert "gateway bought nothing" in zero_reason("feed_in", {"settle": 4})


def test_a_zero_pool_or_share_stream_says_how_far_the_pools_got():
    from p2pgrid.invest.report import zero_reason

    assert zero_reason("pool_fees", {}).startswith("no pool was opened")
    assert zero_reason("pool_fees", {"pool_open": 2}) == "pools were opened but no swap was certified"
    assert zero_reason("energy_sold_pool", {"pool_open": 2, "swap": 7}).startswith("7 swaps certified")
    assert zero_reason("share_income", {}).startswith("no pool-share programme")
    assert zero_reason("share_capital", {"share_offer": 1}).startswith("1 share programmes offered")
    assert zero_reason("charging_sales", {"fill": 1}).startswith("no charging tariff was certified")
    assert zero_reason("charging_bought", {"charge_tariff": 1, "charge_start": 3}).startswith("3 charging sessions started")
    assert zero_reason("charging_sales", {"charge_tariff": 1, "charge_bill": 2}).startswith("2 charging sessions billed")
