"""The admission benchmark runs (small sizes): a benchmark nobody can run is no figure."""

from simnet.bench import admission


def test_the_admission_benchmark_prints_its_three_figures(capsys):
    assert admission.main(["--orders", "64", "--owners", "4", "--per-batch", "8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "64 orders of 4 owners, 8 per batch" in out
    assert "validate without admission" in out and "validate with admission" in out and "judge alone" in out
