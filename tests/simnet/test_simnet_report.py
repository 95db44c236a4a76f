"""The report page, rebuilt from a fixed simnet output (tests/simnet/fixtures/short-run: the JSON
files of a real short run over libp2p): numbers in human units, totals that reconcile, a banner
that names what failed, one self-contained file. Fast: no nodes run."""

import base64
import copy
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from simnet.demo import main
from simnet.report import human, quantity, render_report, write_report
from simnet.report_figures import figures
from simnet.scenario import build_scenario, load_scenario, scenario_to_toml
from simnet.summary import attention, headline, reconciliation

FIXTURE = Path(__file__).parent / "fixtures" / "short-run"
SCENARIOS = Path(__file__).resolve().parents[2] / "simnet" / "scenarios"


def fixture() -> tuple[dict, list]:
    return (json.loads((FIXTURE / "kpis.json").read_text()), json.loads((FIXTURE / "checks.json").read_text()))


class Tables(HTMLParser):
    """Every table of a page as rows of cell texts, by the table's id (or its position)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.sources: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id") or attrs.get("class") or str(len(self.tables)), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])
        if tag in ("script", "link", "img", "iframe") and (attrs.get("src") or attrs.get("href")):
            self.sources.append(attrs.get("src") or attrs.get("href"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def page_of(kpis, checks, *, plots: bool = True) -> tuple[str, Tables]:
    page = render_report(kpis, checks, figures(kpis) if plots else [], "test")
    tables = Tables()
    tables.feed(page)
    return page, tables


def test_numbers_carry_their_units():
    assert quantity(1234.5, "kWh") == "1,234.50 kWh"
    assert quantity(61.66, "%") == "61.7 %"
    assert quantity(0.0033, "credits") == "0.0033 credits"       # a fraction of a credit is not rounded to 0.00
    assert quantity(-132.404, "credits") == "-132.40 credits"
    assert quantity(0.1458, "credits/kWh") == "0.146 credits/kWh"
    assert human("energy_wh", 3271) == "3.27 kWh" and human("revenue_uc", 1_471_950) == "1.47 credits"
    assert human("decentralised_nc", 147_499_441) == "0.1475 credits"
    assert "not computed: no PV" in human("self_consumption", {"value": None, "reason": "no PV"})


def test_headline_shows_value_baseline_difference_and_goal_in_human_units():
    kpis, checks = fixture()
    _, tables = page_of(kpis, checks)
    rows = {r[0]: r for r in tables.tables["headline"][1:]}
    ss = kpis["self_sufficiency"]
    sufficiency = rows["Self-sufficiency (consumption not imported from the grid)"]
    assert sufficiency[1:5] == [f"{100 * ss['trading']:.1f} %", f"{100 * ss['baseline']:.1f} %",
                                f"+{100 * (ss['trading'] - ss['baseline']):.1f} %", f"{100 * ss['optimum']:.1f} %"]
    assert f"this run reached {100 * ss['fraction_of_optimum_gain']:.1f} % of its gain" in sufficiency[5]
    traded = rows["Energy traded in the community"]
    assert traded[1] == f"{kpis['traded_volume_wh'] / 1000:.2f} kWh" and traded[2] == "0.00 kWh"
    assert rows["Average trade price (volume-weighted)"][1].endswith(" credits/kWh")
    assert rows["Certification latency, median"][1] == f"{kpis['certification_latency_s']['p50']:.3f} s"
    bill = rows["Community energy bill (grid minus feed-in, trades net out)"]
    assert bill[1].endswith(" credits") and bill[2].endswith(" credits")
    # No raw JSON and no micro- or nanocredits anywhere in the headline.
    assert not any("{" in cell or "µc" in cell or "_nc" in cell for row in rows.values() for cell in row)


def test_headline_compares_the_run_with_no_trading_and_with_the_community_optimum():
    kpis, checks = fixture()
    _, tables = page_of(kpis, checks, plots=False)
    rows = {r[0]: r for r in tables.tables["headline"][1:]}
    peak, cost = kpis["zone_peak_import"], kpis["community_cost"]
    assert rows["Zone peak grid import (highest slot, mean power)"][1:5] == [
        f"{peak['trading'] / 1000:.2f} kW", f"{peak['baseline'] / 1000:.2f} kW",
        f"{(peak['trading'] - peak['baseline']) / 1000:+.2f} kW", f"{peak['optimum'] / 1000:.2f} kW"]
    bill = rows["Community energy bill (grid minus feed-in, trades net out)"]
    assert bill[4] == f"{cost['optimum'] / 1e6:.2f} credits" and "of its gain over no trading" in bill[5]
    optimum_import = kpis["community_optimum"]["objectives"]["import"]["import_wh"]
    assert rows["Community grid import"][4] == f"{optimum_import / 1000:.2f} kWh"
    # This six-hour run ends at 15:00 CET: no evening slot, and the row says so.
    evening = rows["Evening grid import (slots 17–22 h CET)"]
    assert evening[1] == "not computed" and "the run has no evening slot" in evening[5]
    assert not any("evening" in note for note in attention(kpis, checks))    # by the run's hours, not a fault
    welfare = rows["Welfare (book and pool trades) vs a central pay-as-clear auction"]
    assert welfare[1] == f"{100 * kpis['welfare_with_pools']['value']:.1f} %" and welfare[4] == "100.0 %"
    # A run with evening slots: kWh, the difference, the optimum and the share of its gain reached.
    kpis["evening_import"] = {"unit": "Wh", "trading": 12_000, "baseline": 15_000, "optimum": 9_000,
                              "fraction_of_optimum_gain": 0.5, "window": "slots starting 17:00–22:00 CET", "slots": 5}
    kpis.pop("headline")
    page, tables = page_of(kpis, checks, plots=False)
    evening = next(r for r in tables.tables["headline"] if r[0] == "Evening grid import (slots 17–22 h CET)")
    assert evening[1:5] == ["12.00 kWh", "15.00 kWh", "-3.00 kWh", "9.00 kWh"]
    assert "this run reached 50.0 % of its gain over no trading" in evening[5]
    details = {r[0]: r[1] for r in tables.tables["details"]}
    assert "fraction_of_optimum_gain: 50.0 %" in details["evening_import"] and "optimum: 9.00 kWh" in details["evening_import"]
    assert "optimum: 0.00 kW" in details["zone_peak_import"] and " credits" in details["community_cost"]
    assert "import_wh: " in details["community_optimum"] and "self_sufficiency: 100.0 %" in details["community_optimum"]


def test_participants_table_totals_reconcile_with_the_ledger_figures():
    kpis, checks = fixture()
    assert reconciliation(kpis) and all(r["ok"] for r in reconciliation(kpis)), reconciliation(kpis)
    _, tables = page_of(kpis, checks)
    table = tables.tables["participants"]
    header, body, total = table[0], table[1:-1], table[-1]
    assert len(body) == len(kpis["participants"]) and total[0] == f"total ({len(body)})"
    column = {name.replace(" ↕", ""): i for i, name in enumerate(header)}
    bought = column["bought book kWh"]
    assert float(total[bought].replace(",", "")) == pytest.approx(kpis["traded_volume_wh"] / 1000)
    for p in kpis["participants"]:
        assert p["savings_uc"] == p["bill_baseline_uc"] - p["bill_uc"]
    assert sum(p["savings_uc"] for p in kpis["participants"]) == kpis["savings_per_participant"]["total"]
    assert [p["name"] for p in kpis["participants"]] == [r[0] for r in body]


def test_a_total_that_does_not_match_the_ledger_is_shown_as_differing():
    kpis, checks = fixture()
    kpis["participants"][0]["metered_import_wh"] += 1
    kpis.pop("reconciliation")          # recomputed from the participants, as for an older kpis.json
    rows = {r["what"]: r for r in reconciliation(kpis)}
    assert not rows["metered grid import"]["ok"] and rows["energy bought (book + pools)"]["ok"]
    page, _ = page_of(kpis, checks)
    assert "✗ differs</span> — metered grid import" in page


def test_banner_names_the_failed_checks_and_who_lost_money():
    kpis, checks = fixture()
    page, _ = page_of(kpis, checks)
    assert f"<b>PASSED</b> — all {len(checks)} end checks passed" in page
    failing = copy.deepcopy(checks)
    failing[1]["passed"] = False
    failing[3]["passed"] = False
    station = kpis["participants"][0]
    station["bill_uc"] = station["bill_baseline_uc"] + 132_404
    station["savings_uc"] = -132_404
    kpis.pop("headline")
    page, tables = page_of(kpis, failing)
    assert f"2 of {len(checks)} end checks failed: {failing[1]['name']}, {failing[3]['name']}" in page
    assert f"{station['name']} ({station['role']}) is worse off with trading than without: -0.13 credits." in page
    worse = next(r for r in tables.tables["headline"] if r[0] == "Participants worse off than without trading")
    assert worse[1] == "1" and worse[-1] == station["name"]
    assert attention(kpis, failing)[0].startswith("2 end check(s) failed")


def test_a_kpi_that_could_not_be_computed_says_why():
    kpis, checks = fixture()
    kpis["welfare_vs_central_auction"] = {"value": None, "reason": "no buy request logged"}
    rows = {r["key"]: r for r in headline(kpis)}
    assert rows["welfare"]["value"] is None and rows["welfare"]["note"] == "not computed: no buy request logged"
    kpis.pop("headline")
    page, _ = page_of(kpis, checks)
    assert "welfare vs central auction not computed: no buy request logged." in page


def test_the_page_is_one_self_contained_file_with_every_plot_embedded(tmp_path):
    for name in ("kpis.json", "checks.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    path = write_report(tmp_path)
    page = path.read_text()
    tables = Tables()
    tables.feed(page)
    assert tables.sources == tables.images and len(tables.images) == 7     # no script, style or image fetched
    for src in tables.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=['\"]?https?:", page)
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {f"{p.name}.png" for p in figures(fixture()[0])}
    for caption in ("Figure 1. Prices per slot.", "Figure 3. Battery state of charge.",
                    "Figure 5. Settlement imbalances per slot.", "Figure 6. Certification latency over time."):
        assert caption in page


def test_method_section_says_how_to_reproduce_the_run():
    kpis, checks = fixture()
    page, tables = page_of(kpis, checks)
    method = page[page.index("<h2 id=method>"):page.index("<h2 id=all-kpis>")]
    for text in ("short: 4 households", "900× faster than real time", "<dd>libp2p</dd>", "<dd>3</dd>",
                 "synPRO", "SMARD", "python -m simnet up --scenario simnet/scenarios/short.toml",
                 "scenario.toml --out simnet-rerun"):
        assert text in method, text


def test_older_kpis_without_the_new_keys_still_render():
    kpis, checks = fixture()
    for key in ("participants", "method", "headline", "reconciliation", "imbalance_per_slot", "soc_per_slot",
                "latency_series", "welfare_with_pools", "community_cost", "evening_import", "zone_peak_import",
                "community_optimum"):
        kpis.pop(key)
    for key in ("optimum", "fraction_of_optimum_gain"):
        kpis["self_sufficiency"].pop(key)
    kpis["series_wh"].pop("import_optimum")
    page, tables = page_of(kpis, checks)
    assert "no method record" in page and "Nothing to reconcile" in page
    rows = {r[0]: r for r in tables.tables["headline"][1:]}
    assert rows["Self-sufficiency (consumption not imported from the grid)"][4] == "100.0 %"    # the goal
    assert rows["Community grid import"][4] == "–"
    assert not any(label.startswith(("Evening", "Zone peak", "Welfare (book and pool")) for label in rows)
    assert "Figure 3. Battery state of charge</b> — not drawn: no participant has a battery." in page


def test_report_command_rebuilds_the_page_from_the_json_files(tmp_path, capsys):
    for name in ("kpis.json", "checks.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    assert main(["report", str(tmp_path)]) == 0
    assert "<b>PASSED</b>" in (tmp_path / "report.html").read_text()
    assert main(["report", str(tmp_path / "missing")]) == 2


@pytest.mark.parametrize("name", ["short", "faults", "community", "station"])
def test_a_scenario_written_back_as_toml_loads_as_the_same_scenario(name):
    import tomllib

    scenario = load_scenario(SCENARIOS / f"{name}.toml").with_overrides(speed=123.0, seed=9)
    assert build_scenario(tomllib.loads(scenario_to_toml(scenario))) == scenario
