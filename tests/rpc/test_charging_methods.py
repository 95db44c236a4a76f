"""The charging methods over real HTTP against the fake node, the CLI's calls and renderings."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from p2pgrid.cli.charging import (UnknownIdPrefix, charge_calls, render_session, render_sessions, render_tariffs,
                                  resolve_prefix)
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import ChargeRole, ChargeSessionStatus, ChargeSessionView, ChargeTariffView
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError
from p2pgrid.rpc.codec import from_json, to_json
from p2pgrid.rpc.testing import FAKE_ACCOUNT, OTHER_ACCOUNT, FakeNode
from p2pgrid.units import trade_value

HOUR_MS = 3_600_000


def text(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


async def test_a_driver_lists_starts_reads_and_releases_sessions(server, node, token):
    tariff = node.add_charge_tariff(price_uc_per_kwh=400_000, max_session_wh=30_000)
    node.balances[FAKE_ACCOUNT] = 50_000_000
    async with AsyncRpcClient(server.url, token=token) as rpc:
        assert await rpc.call(charge_calls.charging_tariffs()) == [tariff]
        assert await rpc.call(charge_calls.charging_tariffs(OTHER_ACCOUNT)) == [tariff]
        assert await rpc.call(charge_calls.charging_tariffs(FAKE_ACCOUNT)) == []

        billed = await rpc.call(charge_calls.charging_start(tariff.tariff_id, 10_000, wait_s=0))
        assert (billed.status, billed.escrow_uc, billed.deadline_ms) == (
            ChargeSessionStatus.CHARGING, trade_value(10_000, 400_000), node.now_ms + 12 * HOUR_MS)
        node.bill_charge_session(billed.session_id, 7_500)
        node.now_ms += 1_000
        expiring = await rpc.call(charge_calls.charging_start(tariff.tariff_id, 5_000, wait_s=0, hours=1))
        assert expiring.deadline_ms == node.now_ms + HOUR_MS

        with pytest.raises(RpcCallError) as too_much:
            await rpc.call(charge_calls.charging_start(tariff.tariff_id, 30_001))
        assert too_much.value.code == codes.LEDGER_ERROR and "too_much" in too_much.value.message
        with pytest.raises(RpcCallError) as unknown:
            await rpc.call(charge_calls.charging_start(bytes(16), 1_000))
        assert unknown.value.code == codes.TRADING_ERROR
        with pytest.raises(RpcCallError) as early:
            await rpc.call(charge_calls.charging_release(expiring.session_id))
        assert early.value.code == codes.LEDGER_ERROR and "deadline_not_reached" in early.value.message

        node.now_ms += HOUR_MS
        first, second = await rpc.call(charge_calls.charging_sessions())
        assert (first.status, first.delivered_wh, first.amount_uc) == (
            ChargeSessionStatus.BILLED, 7_500, trade_value(7_500, 400_000))
        assert second.status is ChargeSessionStatus.EXPIRED
        released = await rpc.call(charge_calls.charging_release(expiring.session_id))
        assert released.status is ChargeSessionStatus.RELEASED
        with pytest.raises(RpcCallError) as again:
            await rpc.call(charge_calls.charging_release(expiring.session_id))
        assert again.value.code == codes.LEDGER_ERROR and "lock_closed" in again.value.message
        with pytest.raises(RpcCallError) as not_mine:
            await rpc.call(charge_calls.charging_release(bytes(16)))
        assert not_mine.value.code == codes.TRADING_ERROR
        assert await rpc.call(charge_calls.charging_sessions(ChargeRole.STATION)) == []
    assert node.balances[FAKE_ACCOUNT] == 50_000_000 - trade_value(7_500, 400_000)
    assert node.calls["charge_start"] == 4 and node.calls["charge_release"] == 4


async def test_charging_params_are_checked_before_the_node_is_asked(http, node):
    tariff = "00" * 16
    for method, params in (("charging_start", {"tariff_id": "00" * 15, "max_wh": 1}),
                           ("charging_start", {"tariff_id": tariff, "max_wh": 0}),
                           ("charging_start", {"tariff_id": tariff, "max_wh": 1, "wait_s": 61}),
                           ("charging_start", {"tariff_id": tariff, "max_wh": 1, "hours": 0}),
                           ("charging_start", {"tariff_id": tariff, "max_wh": 1, "hours": 49}),
                           ("charging_start", {"tariff_id": tariff, "max_wh": 1.5}),
                           ("charging_sessions", {"role": "owner"}),
                           ("charging_tariffs", {"station": "00" * 16}),
                           ("charging_release", {"session_id": "zz" * 16})):
        answer = (await http.post("", json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1})).json()
        assert answer["error"]["code"] == -32602, (method, params)
    assert not {"charge_start", "charge_sessions", "charge_tariffs", "charge_release"} & set(node.calls)


async def test_positional_params_follow_the_documented_order(http, node):
    tariff = node.add_charge_tariff()
    params = [tariff.tariff_id.hex(), 2_000, 0, 3]          # tariff_id, max_wh, wait_s, hours
    answer = (await http.post("", json={"jsonrpc": "2.0", "method": "charging_start", "params": params,
                                        "id": 1})).json()
    session = answer["result"]
    assert (session["max_wh"], session["deadline_ms"] - session["plugged_in_ms"]) == (2_000, 3 * HOUR_MS)
    assert session["status"] == "charging" and isinstance(session["escrow_uc"], int)


def test_charging_values_survive_a_json_round_trip():
    tariff = ChargeTariffView(b"\x01" * 16, b"\x02" * 32, "z1", 450_000, 2, 22_000, 60_000, 5, 1, 3_000, 1_350_000)
    session = ChargeSessionView(b"\x03" * 16, b"\x01" * 16, b"\x02" * 32, b"\x04" * 32, 4_000, 1_800_000, 1, 2,
                                True, 3_000, 1_350_000, 3, ChargeSessionStatus.BILLED)
    for value in (tariff, session):
        wire = json.loads(json.dumps(to_json(value)))
        assert from_json(type(value), wire) == value
    assert to_json(session)["status"] == "billed" and to_json(tariff)["tariff_id"] == "01" * 16


async def test_charging_renderings_show_tariffs_sessions_and_a_zero_bill(node):
    tariff = node.add_charge_tariff(price_uc_per_kwh=450_000)
    listing = text(render_tariffs([tariff]))
    assert tariff.tariff_id.hex()[:10] in listing and "0.4500" in listing and "60,000" in listing
    assert "none" in text(render_tariffs([]))
    session = await node.charge_start(tariff.tariff_id, 4_000, 0, 12)
    assert "charging" in text(render_session(session)) and "up to 4,000 Wh" in text(render_session(session))
    zero = node.bill_charge_session(session.session_id, 0)
    assert "no car of yours" in text(render_session(zero))
    rows = text(render_sessions([zero], ChargeRole.DRIVER))
    assert session.session_id.hex()[:10] in rows and OTHER_ACCOUNT.hex()[:10] in rows and "billed" in rows
    assert "none" in text(render_sessions([], ChargeRole.STATION))


def test_a_tariff_or_session_is_named_by_a_unique_prefix():
    fake = FakeNode()
    ids = [fake.add_charge_tariff().tariff_id, fake.add_charge_tariff().tariff_id]
    assert resolve_prefix(ids[0].hex()[:10].upper(), ids, "tariff") == ids[0]
    with pytest.raises(UnknownIdPrefix, match="2 tariffs match"):
        resolve_prefix("", ids, "tariff")
    with pytest.raises(UnknownIdPrefix, match="0 sessions match"):
        resolve_prefix("zz", ids, "session")


def test_the_cli_registers_charge_tariffs_start_sessions_release():
    from p2pgrid.cli.main import build_parser
    args = build_parser().parse_args(["charge", "start", "ab12", "7000", "--data-dir", "/tmp/x", "--hours", "3"])
    assert (args.tariff, args.max_wh, args.hours, args.wait, args.func.__name__) == ("ab12", 7000, 3, 10, "do_start")
    assert build_parser().parse_args(["charge", "tariffs", "--data-dir", "d"]).station is None
    station = build_parser().parse_args(["charge", "tariffs", "--data-dir", "d", "--station", "11" * 32]).station
    assert station == bytes.fromhex("11" * 32)
    sessions = build_parser().parse_args(["charge", "sessions", "--data-dir", "d", "--station"])
    assert (sessions.station, sessions.func.__name__) == (True, "do_sessions")
    release = build_parser().parse_args(["charge", "release", "cd", "--data-dir", "d"])
    assert (release.session, release.func.__name__) == ("cd", "do_release")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["charge", "tariffs", "--data-dir", "d", "--station", "11"])
