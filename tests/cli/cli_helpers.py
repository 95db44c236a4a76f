"""Helpers of the CLI tests (a uniquely named module: tests/ has no packages)."""

from p2pgrid.cli.main import main


def run_cli(capsys, *argv):
    """Run ``p2pgrid ARGV`` in this process: (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("p2pgrid: error: ")
    for word in words:
        assert word in lines[0], lines[0]
