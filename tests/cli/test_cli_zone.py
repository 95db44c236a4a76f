"""``zone init``, ``zone invite``, ``join`` and ``zone approve`` without a running node: what they
write, and that every bad bundle or request is one error line, exit 1, and nothing written."""

from __future__ import annotations

import base64
import dataclasses
import stat

import pytest

from p2pgrid.cli.zone import committee_in_words
from p2pgrid.config import load_config
from p2pgrid.identity import NodeKey, load_keystore
from p2pgrid.node.api import peer_id_base58
from p2pgrid.onboarding.invite import (INVITE_PREFIX, REQUEST_PREFIX, Invite, InvalidInvite,
                                       invite_text, parse_preset, read_invite, read_join_request, render_preset)
from p2pgrid.wire import sign
from cli_helpers import assert_one_error_line, run_cli


@pytest.fixture
def street(tmp_path, capsys):
    """An operator's data dir and its join bundle file."""
    op = tmp_path / "op"
    code, out, err = run_cli(capsys, "zone", "init", "--data-dir", op, "--zone", "street", "--slot-length", "60",
                             "--gate", "10", "--grace", "10", "--fund", "5000000")
    assert code == 0, err
    code, _, err = run_cli(capsys, "zone", "invite", "--data-dir", op, "--out", tmp_path / "invite.txt")
    assert code == 0, err
    return op, tmp_path / "invite.txt"


def files_under(path):
    return sorted(p.name for p in path.rglob("*")) if path.exists() else []


def test_zone_init_makes_the_operator_the_gateway_and_sole_validator(tmp_path, capsys):
    op = tmp_path / "op"
    code, out, err = run_cli(capsys, "zone", "init", "--data-dir", op, "--zone", "street", "--port", "24999",
                             "--slot-length", "60", "--fund", "2000000")
    assert code == 0, err
    key = load_keystore(op / "node.key")
    assert stat.S_IMODE((op / "node.key").stat().st_mode) == 0o600
    config = load_config(op / "config.toml")
    address = f"/ip4/127.0.0.1/tcp/24999/p2p/{peer_id_base58(key.public_key)}"
    assert config.zone.id == "street" and config.zone.gateway_account == key.account
    assert [(v.public_key, v.address) for v in config.zone.validators] == [(key.account, address)]
    assert config.zone.slots.length_s == 60 and config.gateway.fund_uc == 2_000_000 and config.rpc.enabled
    assert parse_preset((op / "zone.toml").read_text()) == config.zone       # the preset is the zone
    assert f"bootstrap address {address}\n" in out
    assert "tolerates no faulty or unreachable validator" in out and "zone invite" in out


def test_committee_tolerance_in_words():
    assert "1 of 1 votes" in committee_in_words(1) and "4 validators" in committee_in_words(1)
    assert "3 of 4 votes" in committee_in_words(4) and "tolerates 1 faulty" in committee_in_words(4)
    assert "5 of 7 votes" in committee_in_words(7) and "tolerates 2 faulty" in committee_in_words(7)


@pytest.mark.parametrize("argv, words", [
    (("--zone", "Not A Zone"), ("--zone",)),
    (("--zone", "street", "--slot-length", "7"), ("zone.slots",)),
    (("--zone", "street", "--fund", "-1"), ("--fund",)),
])
def test_zone_init_refuses_bad_settings_and_writes_nothing(tmp_path, capsys, argv, words):
    code, _, err = run_cli(capsys, "zone", "init", "--data-dir", tmp_path / "op", *argv)
    assert code == 1
    assert_one_error_line(err, *words)
    assert files_under(tmp_path / "op") == []


def test_zone_init_refuses_an_existing_node(street, capsys):
    op, _ = street
    before = (op / "node.key").read_bytes()
    code, _, err = run_cli(capsys, "zone", "init", "--data-dir", op, "--zone", "street")
    assert code == 1
    assert_one_error_line(err, "already exists", "--force")
    assert (op / "node.key").read_bytes() == before


def test_join_writes_keys_preset_and_config_and_prints_the_request(street, tmp_path, capsys):
    op, bundle = street
    operator = load_config(op / "config.toml")
    code, out, err = run_cli(capsys, "join", bundle, "--data-dir", tmp_path / "anna", "--export-w", "4000",
                             "--pv-w", "5000", "--battery-wh", "10000", "--zone", "street",
                             "--operator", operator.zone.gateway_account[:12])
    assert code == 0, err
    anna = load_config(tmp_path / "anna" / "config.toml")
    assert anna.zone == operator.zone and anna.rpc.enabled and anna.network.discovery
    assert anna.network.bootstrap == tuple(v.address for v in operator.zone.validators)
    key, meter = load_keystore(tmp_path / "anna" / "node.key"), load_keystore(tmp_path / "anna" / "meter.key")
    assert stat.S_IMODE((tmp_path / "anna" / "meter.key").stat().st_mode) == 0o600
    request_line = (tmp_path / "anna" / "join-request.txt").read_text().strip()
    assert request_line in out.splitlines()
    request = read_join_request(request_line, zone="street").body
    assert (request.account, request.meter_key, request.role, request.name) == (
        key.public_key, meter.public_key, "household", "anna")
    assert (request.export_w, request.pv_w, request.battery_wh) == (4000, 5000, 10_000)
    assert f"account {key.account}\n" in out and f"meter key {meter.account}\n" in out


def test_a_consumer_exports_nothing_and_the_bundle_may_be_given_as_its_line(street, tmp_path, capsys):
    _, bundle = street
    code, out, err = run_cli(capsys, "join", bundle.read_text().strip(), "--data-dir", tmp_path / "ben",
                             "--role", "consumer", "--request-out", tmp_path / "ben.txt")
    assert code == 0, err
    assert read_join_request((tmp_path / "ben.txt").read_text(), zone="street").body.export_w == 0
    assert "can buy, not sell" in out


def tampered(text: str) -> str:
    """The bundle with one byte of its preset changed (the signature no longer covers it)."""
    prefix, body = text[:len(INVITE_PREFIX)], text[len(INVITE_PREFIX):].strip()
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    at = raw.index(b"length_s = 60")
    raw[at + len("length_s = ")] = ord("3")                 # 60-second slots become 30-second ones
    return prefix + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")


def resigned_by_stranger(text: str) -> str:
    """The bundle with the stranger's bootstrap address, re-signed by the stranger's key."""
    invite = read_invite(text).body
    stranger = NodeKey.generate()
    forged = dataclasses.replace(invite, operator=stranger.public_key,
                                 bootstrap=(f"/ip4/127.0.0.1/tcp/1/p2p/{peer_id_base58(stranger.public_key)}",))
    return invite_text(sign(forged, stranger))


@pytest.mark.parametrize("make_bundle, argv, words", [
    (lambda text: "hello", (), ("neither a join bundle",)),
    (lambda text: INVITE_PREFIX + "!!!", (), ("damaged",)),
    (lambda text: text[:-20], (), ("damaged",)),
    (tampered, (), ("bad signature",)),
    (resigned_by_stranger, (), ("not signed by the gateway",)),
    (lambda text: text, ("--zone", "other"), ("zone 'street', not 'other'",)),
    (lambda text: text, ("--operator", "00000000"), ("signed by operator",)),
    (lambda text: REQUEST_PREFIX + text[len(INVITE_PREFIX):], (), ("not a join bundle",)),
])
def test_join_refuses_a_bad_bundle_and_writes_nothing(street, tmp_path, capsys, make_bundle, argv, words):
    _, bundle = street
    code, _, err = run_cli(capsys, "join", make_bundle(bundle.read_text().strip()), "--data-dir",
                           tmp_path / "anna", *argv)
    assert code == 1
    assert_one_error_line(err, *words)
    assert files_under(tmp_path / "anna") == []


def test_join_refuses_a_missing_bundle_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "join", tmp_path / "nope.txt", "--data-dir", tmp_path / "anna")
    assert code == 1
    assert_one_error_line(err, "nope.txt", "neither a join bundle")
    assert files_under(tmp_path / "anna") == []


def test_a_bundle_whose_preset_names_another_gateway_is_refused(street):
    _, bundle = street
    invite = read_invite(bundle.read_text()).body
    zone = parse_preset(invite.preset)
    stranger = NodeKey.generate()
    # Signed by a key that is not the preset's gateway, though the preset is untouched.
    forged = invite_text(sign(dataclasses.replace(invite, operator=stranger.public_key), stranger))
    with pytest.raises(InvalidInvite, match="not signed by the gateway"):
        read_invite(forged)
    # A preset naming the stranger as gateway, but no validator: nothing could be certified.
    empty = dataclasses.replace(zone, gateway_account=stranger.account, validators=())
    with pytest.raises(InvalidInvite, match="no validators"):
        read_invite(invite_text(sign(Invite(stranger.public_key, "street", render_preset(empty), invite.bootstrap,
                                            invite.issued_ms), stranger)))


def test_the_bundle_printed_alone_on_stdout_can_be_redirected_to_a_file(street, tmp_path, capsys):
    op, _ = street
    code, out, err = run_cli(capsys, "zone", "invite", "--data-dir", op)
    assert code == 0, err
    assert out.count("\n") == 1 and out.startswith(INVITE_PREFIX) and "--operator" in err
    (tmp_path / "redirected.txt").write_text(out)
    assert run_cli(capsys, "join", tmp_path / "redirected.txt", "--data-dir", tmp_path / "anna")[0] == 0


def test_a_neighbour_who_opts_in_as_validator_keeps_the_key_and_port_it_gave_the_operator(tmp_path, capsys):
    code, out, err = run_cli(capsys, "init", "--data-dir", tmp_path / "vera", "--port", "24555")
    assert code == 0, err
    vera = load_keystore(tmp_path / "vera" / "node.key")
    address = out.split("listen ", 1)[1].split()[0]
    code, out, err = run_cli(capsys, "zone", "init", "--data-dir", tmp_path / "op", "--zone", "street",
                             "--validator", f"{vera.account}={address}")
    assert code == 0, err
    assert "2 validators: an entry is final with 2 of 2 votes" in out
    operator = load_config(tmp_path / "op" / "config.toml")
    assert [v.public_key for v in operator.zone.validators][1:] == [vera.account]
    assert operator.network.bootstrap == (address,)
    assert run_cli(capsys, "zone", "invite", "--data-dir", tmp_path / "op", "--out", tmp_path / "invite.txt")[0] == 0
    # Without --keep-key the node made by `init` is not replaced by accident.
    code, _, err = run_cli(capsys, "join", tmp_path / "invite.txt", "--data-dir", tmp_path / "vera")
    assert code == 1
    assert_one_error_line(err, "already exists")
    code, out, err = run_cli(capsys, "join", tmp_path / "invite.txt", "--data-dir", tmp_path / "vera", "--keep-key")
    assert code == 0, err
    joined = load_config(tmp_path / "vera" / "config.toml")
    assert load_keystore(tmp_path / "vera" / "node.key") == vera
    assert joined.network.listen == ("/ip4/127.0.0.1/tcp/24555",) and joined.zone == operator.zone
    assert f"listen {address}\n" in out


def test_invite_is_refused_on_a_node_that_is_not_the_gateway(street, tmp_path, capsys):
    _, bundle = street
    assert run_cli(capsys, "join", bundle, "--data-dir", tmp_path / "anna")[0] == 0
    code, _, err = run_cli(capsys, "zone", "invite", "--data-dir", tmp_path / "anna")
    assert code == 1
    assert_one_error_line(err, "not its zone's gateway")


def join_request(capsys, bundle, data_dir):
    assert run_cli(capsys, "join", bundle, "--data-dir", data_dir, "--export-w", "3000")[0] == 0
    return (data_dir / "join-request.txt").read_text().strip()


def test_approve_refuses_a_request_for_another_zone_before_asking_the_node(street, tmp_path, capsys):
    op, bundle = street
    other = tmp_path / "other"
    assert run_cli(capsys, "zone", "init", "--data-dir", other, "--zone", "elsewhere")[0] == 0
    request = join_request(capsys, bundle, tmp_path / "anna")
    code, _, err = run_cli(capsys, "zone", "approve", request, "--data-dir", other)
    assert code == 1
    assert_one_error_line(err, "for zone 'street'", "zone 'elsewhere'")


@pytest.mark.parametrize("damage, words", [
    (lambda line: line[:-8], ("damaged",)),
    (lambda line: line[:40] + ("A" if line[40] != "A" else "B") + line[41:], ("join request",)),
    (lambda line: "p2pgrid-invite:" + line[len(REQUEST_PREFIX):], ("not a join request",)),
])
def test_approve_refuses_a_damaged_request(street, tmp_path, capsys, damage, words):
    op, bundle = street
    request = join_request(capsys, bundle, tmp_path / "anna")
    code, _, err = run_cli(capsys, "zone", "approve", damage(request), "--data-dir", op)
    assert code == 1
    assert_one_error_line(err, *words)


def test_approve_needs_the_running_operator_node(street, tmp_path, capsys):
    op, bundle = street
    request = join_request(capsys, bundle, tmp_path / "anna")
    code, _, err = run_cli(capsys, "zone", "approve", request, "--data-dir", op)
    assert code == 1
    assert_one_error_line(err, "no RPC endpoint")

