"""The p2pgrid command: init, status, usage and errors (one line on stderr, non-zero exit)."""

import stat
import subprocess
import sys

import pytest

from p2pgrid.cli.main import main
from p2pgrid.config import load_config
from p2pgrid.identity import load_keystore
from p2pgrid.node.api import peer_id_base58
from cli_helpers import assert_one_error_line, run_cli


def test_init_writes_a_0600_keystore_and_a_config_that_loads(tmp_path, capsys):
    code, out, err = run_cli(capsys, "init", "--data-dir", tmp_path / "home", "--role", "consumer", "--zone", "north")
    assert code == 0, err
    keystore = tmp_path / "home" / "node.key"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    config = load_config(tmp_path / "home" / "config.toml")
    assert config.node.role == "consumer" and config.zone.id == "north"
    assert config.node.data_dir == (tmp_path / "home").resolve()
    assert load_keystore(keystore).account in out
    # RPC on (loopback only), and the address neighbours bootstrap to, whole: peer id and port.
    assert config.rpc.enabled
    peer_id = peer_id_base58(load_keystore(keystore).public_key)
    (listen,) = config.network.listen
    assert listen.startswith("/ip4/127.0.0.1/tcp/") and not listen.endswith("/tcp/0")
    assert f"peer id {peer_id}\n" in out and f"listen {listen}/p2p/{peer_id}\n" in out


def test_init_with_one_bootstrap_address_writes_it_and_discovery_stays_on(tmp_path, capsys):
    operator = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWKbn2v9ceWsYnRWwQ8DpForaJoLvYTehC3ewyGjzyT3Hf"
    code, _, err = run_cli(capsys, "init", "--data-dir", tmp_path / "home", "--bootstrap", operator)
    assert code == 0, err
    config = load_config(tmp_path / "home" / "config.toml")
    assert config.network.bootstrap == (operator,)
    assert config.network.discovery and config.network.max_connections == 16


def test_init_with_passphrase_seals_the_keystore_and_status_shows_the_account(tmp_path, capsys):
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse\n")
    secret.chmod(0o600)
    code, out, _ = run_cli(capsys, "init", "--data-dir", tmp_path / "home", "--passphrase-file", secret)
    assert code == 0
    keystore = tmp_path / "home" / "node.key"
    assert stat.S_IMODE(keystore.stat().st_mode) == 0o600
    assert b"correct horse" not in keystore.read_bytes()
    account = load_keystore(keystore, b"correct horse").account
    code, out, err = run_cli(capsys, "status", "--data-dir", tmp_path / "home")
    assert code == 0, err
    assert account[:40] in out and "not running" in out


def test_wrong_passphrase_is_one_clear_line_and_exit_1(tmp_path, capsys):
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.write_text("correct horse\n")
    wrong.write_text("battery staple\n")
    right.chmod(0o600)
    wrong.chmod(0o600)
    assert run_cli(capsys, "init", "--data-dir", tmp_path / "home", "--passphrase-file", right)[0] == 0
    code, out, err = run_cli(capsys, "status", "--data-dir", tmp_path / "home", "--passphrase-file", wrong)
    assert code == 1
    assert_one_error_line(err, "wrong passphrase")


def test_init_refuses_to_overwrite_an_existing_keystore(tmp_path, capsys):
    assert run_cli(capsys, "init", "--data-dir", tmp_path)[0] == 0
    before = (tmp_path / "node.key").read_bytes()
    code, _, err = run_cli(capsys, "init", "--data-dir", tmp_path)
    assert code == 1
    assert_one_error_line(err, "already exists")
    assert (tmp_path / "node.key").read_bytes() == before


@pytest.mark.parametrize("setup, argv, words", [
    (None, ["status", "--config", "{tmp}/missing.toml"], ["not found"]),
    ("[node]\ndata_dir = \".\"\nflavour = 1\n", ["status", "--config", "{tmp}/c.toml"], ["node.flavour", "unknown key"]),
    ("[node]\ndata_dir = \".\"\n[zone.tariffs]\nretail_price = 1.5\n", ["status", "--config", "{tmp}/c.toml"],
     ["zone.tariffs.retail_price", "integer"]),
    ("[node]\ndata_dir = \".\"\n", ["status", "--config", "{tmp}/c.toml"], ["no keystore"]),
    ("[node]\ndata_dir = \".\"\n", ["order", "place", "--config", "{tmp}/c.toml", "--side", "buy", "--qty", "1",
                                    "--price", "1"], ["no running node"]),
    ("[node]\ndata_dir = \".\"\n", ["status", "--config", "{tmp}/c.toml", "--set", "agent.tick_ms=soon"],
     ["agent.tick_ms"]),
    (None, ["init", "--data-dir", "{tmp}/x", "--zone", "No Such Zone"], ["--zone"]),
])
def test_errors_are_one_line_and_exit_1(tmp_path, capsys, setup, argv, words):
    if setup is not None:
        (tmp_path / "c.toml").write_text(setup)
    code, _, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 1
    assert_one_error_line(err, *words)


@pytest.mark.parametrize("argv", [["bogus"], ["order", "place", "--side", "sideways"], ["run"], []])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err


def test_the_console_script_entry_point_reports_errors_the_same_way(tmp_path):
    result = subprocess.run([sys.executable, "-m", "p2pgrid.cli.main", "status", "--config", str(tmp_path / "no.toml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"p2pgrid: error: config file {tmp_path / 'no.toml'} not found"]


def test_order_place_needs_a_tradable_slot(tmp_path, capsys):
    from p2pgrid.cli.common import parse_slot
    from p2pgrid.errors import ConfigError

    (tmp_path / "c.toml").write_text("[node]\ndata_dir = \".\"\n")
    config = load_config(tmp_path / "c.toml")
    now_ms = 1_800_000_000_000
    first = parse_slot("next", config.zone.slot_rules, now_ms)
    assert config.zone.slot_rules.is_tradable(first, now_ms)
    assert parse_slot("+2", config.zone.slot_rules, now_ms) == first + 2 * 900
    assert parse_slot(str(first + 900), config.zone.slot_rules, now_ms) == first + 900
    with pytest.raises(ConfigError, match="not open for trading"):
        parse_slot(str(first - 3600), config.zone.slot_rules, now_ms)
    with pytest.raises(ConfigError, match="not an integer"):
        parse_slot("soon", config.zone.slot_rules, now_ms)


def test_a_group_of_p2pgrid_errors_from_a_nursery_is_still_one_line(monkeypatch, capsys):
    from p2pgrid.cli import node_commands
    from p2pgrid.errors import NetError

    def fail(args):
        raise ExceptionGroup("nursery", [NetError("peer went away")])

    monkeypatch.setattr(node_commands, "do_status", fail)
    code, _, err = run_cli(capsys, "status", "--data-dir", ".")
    assert code == 1
    assert_one_error_line(err, "peer went away")


def test_a_bug_inside_a_group_is_not_hidden(monkeypatch, capsys):
    from p2pgrid.cli import node_commands
    from p2pgrid.errors import NetError

    def fail(args):
        raise ExceptionGroup("nursery", [NetError("peer went away"), ZeroDivisionError()])

    monkeypatch.setattr(node_commands, "do_status", fail)
    with pytest.raises(ExceptionGroup):
        main(["status", "--data-dir", "."])


def test_run_on_a_port_in_use_fails_with_one_error_line(tmp_path):
    import socket

    assert subprocess.run([sys.executable, "-m", "p2pgrid.cli.main", "init", "--data-dir", str(tmp_path)],
                          capture_output=True, timeout=60).returncode == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "p2pgrid.cli.main", "run", "--config", str(tmp_path / "config.toml"),
             "--no-dashboard", "--set", f'network.listen=["/ip4/127.0.0.1/tcp/{port}"]'],
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("p2pgrid:")]
    assert errors == [f"p2pgrid: error: could not listen on /ip4/127.0.0.1/tcp/{port} (address in use?)"]
    assert "Traceback" not in result.stderr


def test_ledger_commands_are_registered_next_to_the_node_commands(capsys):
    import importlib.util

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for command in ("init", "run", "status", "order"):
        assert command in text
    assert ("ledger" in text) == (importlib.util.find_spec("p2pgrid.cli.ledger") is not None)


def test_meter_show_prints_the_meter_key_before_the_node_ever_ran(tmp_path, capsys):
    assert run_cli(capsys, "init", "--data-dir", tmp_path / "home")[0] == 0
    code, out, err = run_cli(capsys, "meter", "show", "--data-dir", tmp_path / "home")
    assert code == 0, err
    meter = load_keystore(tmp_path / "home" / "meter.key")
    account = load_keystore(tmp_path / "home" / "node.key").account
    assert f"meter key {meter.account}\n" in out and "(created now, mode 0600)" in out
    assert stat.S_IMODE((tmp_path / "home" / "meter.key").stat().st_mode) == 0o600
    assert f'[[gateway.meters]]\naccount = "{account}"\nmeter_key = "{meter.account}"\n' in out
    code, again, _ = run_cli(capsys, "meter", "show", "--data-dir", tmp_path / "home")
    assert code == 0 and f"meter key {meter.account}\n" in again and "created now" not in again
