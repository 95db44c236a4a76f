"""The agent benchmark runs end to end on a tiny configuration and prints its figures."""

from __future__ import annotations

from simnet.bench import agent as bench


def test_agent_benchmark_runs_on_one_short_day(capsys):
    code = bench.main(["--days", "1", "--warmup-days", "1", "--start-day", "150", "--households", "1",
                       "--horizon", "8"])
    out = capsys.readouterr().out
    assert code == 0
    assert "gate vs best single expert" in out and "% of perfect foresight" in out
