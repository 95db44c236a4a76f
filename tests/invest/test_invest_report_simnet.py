"""A station in a short simnet run gets a complete investment report from its certified ledger."""

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from p2pgrid.cli.invest import render_summary, terms_of
from p2pgrid.cli.main import main
from p2pgrid.config import InvestSection
from p2pgrid.invest.report import build_report, read_run
from p2pgrid.invest.statement import STREAMS, STREAM_KEYS, account_flows, statement
from simnet.scenario import load_scenario
from simnet.simulate import simulate

SCENARIOS = Path(__file__).resolve().parents[2] / "simnet" / "scenarios"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("simnet")
    # The profile strategy: its trades (and so the station's every revenue stream) do not depend on
    # how busy the machine is; agents trade from forecasts in real-time ticks (docs/AGENTS.md).
    scenario = load_scenario(SCENARIOS / "short.toml").with_overrides(transport="memory", hours=6.0, speed=1800.0,
                                                                      settle_s=30.0, strategy="profile")
    result = simulate(scenario, out, console=Console(file=io.StringIO(), width=100), live=False)
    assert result.kpis["trades"] > 0
    return out


def test_the_station_gets_a_complete_report_with_every_stream(run_dir, tmp_path, capsys):
    code = main(["invest", "report", "--account", "station-0", "--from", str(run_dir), "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "figures.json").read_text())
    (run,) = data["runs"]
    assert set(run["streams_uc"]) == set(STREAM_KEYS)
    assert all(run["streams_uc"][k] or run["energy_wh"][k] or run["notes"][k] for k in STREAM_KEYS)
    assert run["reconciled"] and run["entries_waiting"] == 0 and run["streams_uc"]["other"] == 0
    assert run["closing_uc"] == run["ledger_balance_uc"]
    assert run["streams_uc"]["deposits"] > 0 and run["revenue_uc"] > 0      # funded, and it sold energy
    assert run["streams_uc"]["charging_sales"] > 0 and run["energy_wh"]["charging_sales"] > 0
    assert data["annual"]["method"].startswith("per-season scaling")
    assert len(data["sensitivity"]) == 6 and "npv_uc" in data["figures"] and "irr" in data["figures"]
    assert data["pool_shares"]["ledger_backed"] is True and data["pool_shares"]["reconciled"]
    page = (tmp_path / "report.html").read_text()
    assert all(s.label in page for s in STREAMS) and "reconciled to the µc" in page
    for name in ("monthly", "cumulative", "sensitivity"):
        assert f"plots/{name}.png" in page and (tmp_path / "plots" / f"{name}.png").stat().st_size > 1000
    assert "reconciled with ledger" in capsys.readouterr().out


def test_every_participant_reconciles_from_every_nodes_copy(run_dir):
    names = [p["name"] for p in json.loads((run_dir / "community.json").read_text())["participants"]]
    for node in ("station-0", "operator"):
        for name in names:
            run = read_run(run_dir, name, node=node)
            flows = account_flows(run.entries, run.rules, run.account)
            whole = statement(flows)
            assert flows.waiting == 0
            assert whole.closing_uc == flows.balance_uc and whole.streams["other"] == 0, (node, name)


def test_seasons_from_the_command_line_are_annualised_by_their_days(run_dir, tmp_path):
    code = main(["invest", "report", "--account", "station-0", "--from", f"summer={run_dir}",
                 "--from", f"winter={run_dir}", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "figures.json").read_text())
    assert [r["season"] for r in data["runs"]] == ["summer", "winter"]
    days = data["runs"][0]["covered_days"]
    assert data["annual"]["weights"]["summer"] == pytest.approx(92 * 365 / 182 / days)


def test_an_unknown_season_or_account_is_one_error_line(run_dir, tmp_path, capsys):
    assert main(["invest", "report", "--account", "station-0", "--from", f"monsoon={run_dir}"]) == 1
    assert main(["invest", "report", "--account", "nobody", "--from", str(run_dir)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "season" in err[0] and "nobody" in err[1]


def test_the_summary_renders_in_plain_text(run_dir):
    report = build_report([read_run(run_dir, "station-0")], terms_of(InvestSection()))
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(render_summary(report))
    text = console.file.getvalue()
    assert "NPV" in text and "yes, to the µc" in text


def test_a_statement_for_a_later_period_opens_with_the_earlier_balance(run_dir, capsys):
    community = json.loads((run_dir / "community.json").read_text())
    middle_s = (community["profile_start_ms"] + community["end_ms"]) // 2000
    assert main(["invest", "statement", "--account", "consumer-0", "--from", str(run_dir),
                 "--start", str(middle_s)]) == 0
    out = capsys.readouterr().out
    assert "opening balance" in out and "ledger balance" in out and " ok " in out and "MISMATCH" not in out


def test_a_nodes_data_dir_alone_gives_the_same_reconciled_report(run_dir, tmp_path):
    """``--data-dir``: only the node's own ledger.sqlite, no community.json (as on a real node)."""
    people = {p["name"]: p["account"] for p in json.loads((run_dir / "community.json").read_text())["participants"]}
    node_dir = tmp_path / "station-home"
    node_dir.mkdir()
    (node_dir / "ledger.sqlite").write_bytes((run_dir / "nodes" / "station-0" / "ledger.sqlite").read_bytes())
    account = people["station-0"][:12]
    assert main(["invest", "report", "--account", account, "--data-dir", str(node_dir)]) == 0
    data = json.loads((node_dir / "invest" / "figures.json").read_text())
    (run,) = data["runs"]
    simnet = read_run(run_dir, "station-0")
    whole = statement(account_flows(simnet.entries, simnet.rules, simnet.account))
    assert run["reconciled"] and run["closing_uc"] == whole.closing_uc == run["ledger_balance_uc"]
    assert run["streams_uc"] == dict(whole.streams)
    assert main(["invest", "statement", "--account", account, "--data-dir", str(node_dir)]) == 0
    assert main(["invest", "report", "--account", "ffff", "--data-dir", str(node_dir)]) == 1
    assert main(["invest", "report", "--account", account, "--data-dir", str(tmp_path / "none")]) == 1
