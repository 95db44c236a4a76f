"""``python -m simnet.bench all`` runs its sections and writes every headline with its baseline and
ratio to the JSON file. Tiny sizes: what is checked is that it runs and what it writes, never a
time (benchmarks measure, tests assert)."""

from __future__ import annotations

import json
import math

from simnet.bench import all as bench_all


def test_tiny_run_writes_every_headline_with_its_same_run_baseline(tmp_path, capsys):
    out = tmp_path / "nested" / "bench.json"
    code = bench_all.main(["--tiny", "--only", "market,ledger,trading", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["schema"] == bench_all.SCHEMA and report["errors"] == {}
    assert set(report["figures"]) == {"market", "ledger", "trading"}
    names = {h["name"] for h in report["headlines"]}
    assert {"book ops/s", "AMM lean quotes/s (out_exact_in)", "sync entries/s", "order → fill p50 at 5/s"} <= names
    for headline in report["headlines"]:
        assert headline["baseline"] and headline["baseline_value"] > 0
        assert math.isclose(headline["ratio"] * headline["baseline_value"], headline["value"], rel_tol=1e-6)
    assert len(report["machine"]["load_before"]) == 3
    printed = capsys.readouterr().out
    assert "ratio" in printed and str(out) in printed


def test_a_second_run_shows_the_previous_ratios_and_a_failing_section_is_reported(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    assert bench_all.main(["--tiny", "--only", "market", "--out", str(out)]) == 0
    capsys.readouterr()

    def broken(sizes):
        raise RuntimeError("section broke")

    monkeypatch.setitem(bench_all.RUNNERS, "ledger", broken)
    code = bench_all.main(["--tiny", "--only", "market,ledger", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1
    assert "previous" in captured.out and "FAILED" in captured.out
    assert "section broke" in captured.err
    report = json.loads(out.read_text())
    assert "section broke" in report["errors"]["ledger"] and "market" in report["figures"]


def test_an_unknown_section_is_refused(tmp_path, capsys):
    assert bench_all.main(["--only", "nonsense", "--out", str(tmp_path / "x.json")]) == 2
    assert "unknown section" in capsys.readouterr().err
