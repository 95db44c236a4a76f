"""The CLI run as a user would, by subprocess, in environments that used to end in a traceback:
each case prints exactly one line on stderr, no "Traceback", and exits non-zero.

Some cases run a real node (``p2pgrid run`` over libp2p on 127.0.0.1): two nodes on one data dir,
a node killed with SIGKILL (stale ``rpc.json``), the RPC or metrics port taken.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_BOUND_S = 60      # generous bound for a node to come up on a busy machine (waited on, not timed)


def cli(*argv: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2pgrid.cli.main", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str, code: int = 1) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert result.returncode == code, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    data_dir = tmp_path / "home"
    assert cli("init", "--data-dir", data_dir).returncode == 0     # its config enables the local RPC
    return data_dir


# Quiet logs, so that stderr holds only what the CLI itself says.
QUIET = ("--no-dashboard", "--set", 'node.log_level="error"')


@contextmanager
def running_node(data_dir: Path, *extra: str):
    process = subprocess.Popen([sys.executable, "-m", "p2pgrid.cli.main", "run", "--config",
                                str(data_dir / "config.toml"), *QUIET, *extra],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_BOUND_S
        while endpoint_pid(data_dir) != process.pid:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=START_BOUND_S)
        process.stderr.close()


def endpoint_pid(data_dir: Path) -> int | None:
    try:
        return json.loads((data_dir / "rpc.json").read_text())["pid"]
    except (OSError, ValueError):
        return None     # not written yet (it is replaced atomically, never seen half-written)


def busy_port():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


# --- no node needed ---------------------------------------------------------------------------

def test_unknown_flag_is_named_even_when_a_required_one_is_missing():
    assert_one_line(cli("run", "--bogus"), "unrecognized arguments: --bogus", code=2)
    assert_one_line(cli("status", "--data-dir", ".", "--bogus"), "--bogus", code=2)


def test_a_config_file_with_bytes_that_are_not_utf8(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[node]\nname = "\xff\xfe"\ndata_dir = "."\n')
    assert_one_line(cli("status", "--config", bad), "not UTF-8")


def test_a_passphrase_file_readable_by_others_is_refused(tmp_path):
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\n")
    secret.chmod(0o644)
    assert_one_line(cli("init", "--data-dir", tmp_path / "home", "--passphrase-file", secret),
                    "readable by other users", "chmod 600")
    assert not (tmp_path / "home" / "node.key").exists()


# --- with a running node ----------------------------------------------------------------------

def test_a_second_node_on_the_same_data_dir_stops_with_one_line_and_touches_nothing(home):
    with running_node(home) as first:
        endpoint = (home / "rpc.json").read_text()
        second = cli("run", "--config", home / "config.toml", *QUIET)
        assert_one_line(second, "in use by another node", f"pid {first.pid}")
        assert (home / "rpc.json").read_text() == endpoint
        assert json.loads(endpoint)["pid"] == first.pid
    assert not (home / "rpc.json").exists()       # the first node removed its own file on stop


def test_book_and_trades_after_the_node_was_killed(home):
    with running_node(home) as node:
        assert cli("trades", "--data-dir", home).returncode == 0
        node.send_signal(signal.SIGKILL)
        node.wait(timeout=START_BOUND_S)
    assert (home / "rpc.json").exists()           # a killed node cannot clean up
    for command in (("book", "--data-dir", home), ("trades", "--data-dir", home)):
        assert_one_line(cli(*command), "not running")
    with running_node(home):                      # the kernel released the lock: the node starts again
        assert cli("trades", "--data-dir", home).returncode == 0


@pytest.mark.parametrize("section", ["rpc", "metrics"])
def test_run_with_its_rpc_or_metrics_port_taken(home, section):
    with busy_port() as listener:
        port = listener.getsockname()[1]
        result = cli("run", "--config", home / "config.toml", *QUIET, "--set", f"{section}.enabled=true",
                     "--set", f"{section}.port={port}")
    assert_one_line(result, f"127.0.0.1:{port}", "in use")
    assert not (home / f"{section}.json").exists()


def test_rpc_client_against_a_port_where_nothing_listens(home):
    with busy_port() as listener:
        port = listener.getsockname()[1]
    (home / "rpc.json").write_text(json.dumps({"url": f"http://127.0.0.1:{port}/", "pid": os.getpid(),
                                               "token_file": str(home / "rpc.token")}))
    (home / "rpc.token").write_text("x" * 32)
    (home / "rpc.token").chmod(0o600)
    assert_one_line(cli("trades", "--data-dir", home), "cannot reach the node's RPC")
