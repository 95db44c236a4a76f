"""The report in a real browser (Debian's chromium, headless, driven over the DevTools protocol):
no broken image, no script error, the participants' table sorts, and a screenshot of the first
screen is kept (in the test's tmp dir, and in ``$P2PGRID_ARTIFACTS`` when set, as CI does).

One test loads the report of a real short simnet run (over the in-memory transport: the same node
code, 4 simulated hours); one loads the fixed fixture's report; one proves the check itself sees a
broken image and a script error. Without chromium they skip, unless P2PGRID_REQUIRE_REAL_SERVERS=1
(CI), where a missing chromium fails."""

import io
import os
import shutil
from pathlib import Path

import pytest
import trio
from rich.console import Console

from simnet.browser import PageCheck, check_page, find_chromium
from simnet.report import write_report
from simnet.scenario import load_scenario
from simnet.simulate import simulate

FIXTURE = Path(__file__).parent / "fixtures" / "short-run"
SCENARIOS = Path(__file__).resolve().parents[2] / "simnet" / "scenarios"

# Clicks the "savings" header once (ascending) and returns the column's values in their new order,
# and whether the totals row is still the table's last row.
SORT_BY_SAVINGS = """(function () {
  var table = document.getElementById('participants'), heads = table.tHead.rows[0].cells, col = -1;
  for (var i = 0; i < heads.length; i++) { if (heads[i].textContent.indexOf('savings') === 0) { col = i; } }
  heads[col].click();
  var values = Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[col].dataset.sort); });
  var last = table.rows[table.rows.length - 1].cells[0].textContent;
  return {values: values, totalsLast: last.indexOf('total') === 0};
})()"""


def chromium_or_skip() -> str:
    chromium = find_chromium()
    if chromium is None:
        if os.environ.get("P2PGRID_REQUIRE_REAL_SERVERS") == "1":
            pytest.fail("chromium not found and P2PGRID_REQUIRE_REAL_SERVERS=1: install Debian's 'chromium' package")
        pytest.skip("chromium not found: install Debian's 'chromium' package (.ci/run installs it)")
    return chromium


def keep_screenshot(check: PageCheck, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(check.screenshot)
    artifacts = os.environ.get("P2PGRID_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def assert_reads_cleanly(check: PageCheck, page: Path) -> None:
    assert check.images == page.read_text().count("<img ") >= 4 and not check.broken_images, check.broken_images
    assert not check.errors, check.errors
    assert check.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(check.screenshot) > 10_000
    sort = check.evaluated[0]
    assert sort["values"] == sorted(sort["values"]) and sort["totalsLast"], sort


@pytest.mark.slow
def test_report_of_a_real_short_run_loads_in_chromium_without_errors(tmp_path):
    chromium = chromium_or_skip()
    scenario = load_scenario(SCENARIOS / "short.toml").with_overrides(transport="memory", hours=4.0, speed=1800.0,
                                                                      settle_s=20.0)
    simulate(scenario, tmp_path, console=Console(file=io.StringIO(), width=100), live=False)
    check = trio.run(lambda: check_page(tmp_path / "report.html", chromium=chromium, evaluate=(SORT_BY_SAVINGS,)))
    keep_screenshot(check, tmp_path, "report-first-screen-real-run.png")
    assert_reads_cleanly(check, tmp_path / "report.html")


def test_fixture_report_loads_in_chromium_without_errors(tmp_path):
    chromium = chromium_or_skip()
    for name in ("kpis.json", "checks.json"):
        shutil.copy(FIXTURE / name, tmp_path / name)
    page = write_report(tmp_path)
    check = trio.run(lambda: check_page(page, chromium=chromium, evaluate=(SORT_BY_SAVINGS,)))
    keep_screenshot(check, tmp_path, "report-first-screen-fixture.png")
    assert_reads_cleanly(check, page)


def test_the_browser_check_sees_a_broken_image_and_a_script_error(tmp_path):
    chromium = chromium_or_skip()
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><html><body><img src='data:image/png;base64,bm90IGEgcG5n' alt='not a png'>"
                    "<script>undefinedFunction();</script></body></html>")
    check = trio.run(lambda: check_page(page, chromium=chromium))
    assert check.broken_images == ["not a png"]
    assert any("undefinedFunction" in e for e in check.errors), check.errors
