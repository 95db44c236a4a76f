"""A driver buys public EV charging through the RPC on a cluster of real nodes (memory transport,
one manual market clock): a station with ``[charging] enabled`` opens its tariff by itself and
bills from its connectors' session log; the driver — with no sessions file of its own — starts
sessions with ``charging_start``, sees them billed through ``charging_sessions``, and sees the
escrow of a session the station let expire come back by the station's ``decline`` (after which
``charging_release`` has nothing left to take back). Every node ends on the same state root."""

from __future__ import annotations

import json

import pytest
import trio

from p2pgrid.charging.rules import tariffs
from p2pgrid.charging.service import ChargingService
from p2pgrid.cli.charging import charge_calls
from p2pgrid.cli.main import main
from p2pgrid.clock import ManualClock
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.testing import cluster_keys
from p2pgrid.node.api import LiveNodeApi
from p2pgrid.node.app import find_service
from p2pgrid.node.testing import open_node_cluster
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import ChargeRole, ChargeSessionStatus
from p2pgrid.units import trade_value
from rpc_node_helpers import poll, refused, rpc_client, wait_until

pytestmark = pytest.mark.slow     # a cluster of real nodes

NOW = 1_800_000_000_000 + 60_000
FUNDS_UC = 50_000_000
PRICE = 450_000
MAX_SESSION_WH = 30_000
HOUR_MS = 3_600_000
GATEWAY, STATION, DRIVER, OTHER = range(4)
SEED = 7                               # open_node_cluster's default: the keys below are the nodes'
STATION_CONFIG = {"charging.enabled": True, "charging.no_car_grace_s": 0, "charging.price_uc_per_kwh": PRICE, "charging.connectors": 2,
                  "charging.max_power_w": 50_000, "charging.max_session_wh": MAX_SESSION_WH,
                  "charging.sessions_file": "sessions.json"}


async def cli(capsys, *argv):
    code = await trio.to_thread.run_sync(main, ["charge", *argv])
    return code, capsys.readouterr()


def write_station_log(root, driver: bytes) -> None:
    """The driver's car takes 5000 Wh at connector 0 over the next 10 minutes, and is plugged in at
    connector 1 for three hours (9000 Wh)."""
    start_s = NOW // 1000
    log = [{"connector": 0, "driver": driver.hex(), "start_s": start_s, "end_s": start_s + 600, "energy_wh": 5_000},
           {"connector": 1, "driver": driver.hex(), "start_s": start_s, "end_s": start_s + 3 * 3600,
            "energy_wh": 9_000}]
    (root / f"n{STATION}").mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / f"n{STATION}" / "sessions.json").write_text(json.dumps({"log": log}))


async def test_a_driver_charges_through_the_rpc_and_the_station_bills_it(tmp_path, capsys):
    driver_key = cluster_keys(4, SEED)[DRIVER].public_key
    write_station_log(tmp_path, driver_key)
    clock = ManualClock(NOW)
    async with open_node_cluster(tmp_path, 4, rpc_nodes=(DRIVER,), funds_uc=FUNDS_UC, clock=clock, seed=SEED,
                                 node_overrides={STATION: STATION_CONFIG}) as nodes:
        station, driver = nodes[STATION], nodes[DRIVER]
        assert driver.key.public_key == driver_key
        me = station.key.public_key
        await wait_until(lambda: all(tariffs(n.ledger.state, me) for n in nodes), timeout_s=30)

        async with rpc_client(driver) as client:
            [tariff] = await client.call(charge_calls.charging_tariffs(me))
            assert (tariff.connectors, tariff.max_session_wh, tariff.price_uc_per_kwh) == (2, MAX_SESSION_WH, PRICE)
            too_much = await refused(client.call, charge_calls.charging_start(tariff.tariff_id, MAX_SESSION_WH + 1))
            assert too_much.code == codes.LEDGER_ERROR and "too_much" in too_much.message
            unknown = await refused(client.call, charge_calls.charging_start(bytes(16), 1_000))
            assert unknown.code == codes.TRADING_ERROR

            # Plugged in at connector 0 as its charge begins: the station waits for the car to leave.
            first = await client.call(charge_calls.charging_start(tariff.tariff_id, 6_000, wait_s=0))
            assert (first.status, first.plugged_in_ms, first.escrow_uc) == (
                ChargeSessionStatus.CHARGING, NOW, trade_value(6_000, PRICE))
            clock.advance(1_000)           # at connector 1 for three hours, but the escrow lasts one
            long = await client.call(charge_calls.charging_start(tariff.tariff_id, 20_000, wait_s=0, hours=1))
            assert long.deadline_ms == NOW + 1_000 + HOUR_MS
            clock.advance(1_000)           # no third car of this driver at the station: billed zero at once
            no_car = await client.call(charge_calls.charging_start(tariff.tariff_id, 1_000, wait_s=15))
            assert (no_car.status, no_car.delivered_wh, no_car.amount_uc) == (ChargeSessionStatus.BILLED, 0, 0)
            early = await refused(client.call, charge_calls.charging_release(first.session_id))
            assert early.code == codes.LEDGER_ERROR and "deadline_not_reached" in early.message

            clock.set(NOW + 600_000)       # the first car leaves connector 0
            billed, still, _ = await poll(lambda: client.call(charge_calls.charging_sessions()),
                                          lambda s: s[0].billed, timeout_s=30)
            assert (billed.session_id, billed.delivered_wh, billed.amount_uc, billed.ended_ms) == (
                first.session_id, 5_000, trade_value(5_000, PRICE), NOW + 600_000)
            assert (still.session_id, still.status) == (long.session_id, ChargeSessionStatus.CHARGING)

            # The station did not bill in time: it can no longer (a bill must be dated before the
            # deadline), so it hands the escrow back with a decline.
            clock.set(long.deadline_ms)
            await poll(lambda: client.call(charge_calls.charging_sessions()),
                       lambda s: any(x.session_id == long.session_id and x.status is ChargeSessionStatus.RELEASED
                                     for x in s), timeout_s=30)
            again = await refused(client.call, charge_calls.charging_release(long.session_id))
            assert again.code == codes.LEDGER_ERROR and "lock_closed" in again.message
            [tariff] = await client.call(charge_calls.charging_tariffs())
            assert (tariff.sessions_billed, tariff.sold_wh) == (2, 5_000)

        sold = await LiveNodeApi(station).charge_sessions(ChargeRole.STATION)
        assert [s.status for s in sold] == [ChargeSessionStatus.BILLED, ChargeSessionStatus.RELEASED,
                                            ChargeSessionStatus.BILLED]

        # The same through ``p2pgrid charge``, ids given by prefix.
        data_dir = str(driver.config.node.data_dir)
        code, out = await cli(capsys, "tariffs", "--data-dir", data_dir)
        assert code == 0 and tariff.tariff_id.hex()[:10] in out.out and "30,000" in out.out
        code, out = await cli(capsys, "sessions", "--data-dir", data_dir)
        assert code == 0 and out.out.count("billed") == 2 and "released" in out.out
        code, out = await cli(capsys, "release", first.session_id.hex()[:8], "--data-dir", data_dir)
        assert code == 1 and out.err.count("\n") == 1 and "lock_closed" in out.err
        code, out = await cli(capsys, "start", tariff.tariff_id.hex()[:6], "2000", "--wait", "15",
                              "--data-dir", data_dir)
        assert code == 0 and "no car of yours" in out.out, out
        with trio.fail_after(30):
            while len({n.ledger.state.height for n in nodes}) > 1 or len({state_root(n.ledger.state)
                                                                           for n in nodes}) > 1:
                await trio.sleep(0.05)
        paid = trade_value(5_000, PRICE)
        state = station.ledger.state
        assert (state.balance(me), state.balance(driver_key)) == (FUNDS_UC + paid, FUNDS_UC - paid)
        assert all(n.ledger.state.money_total() == 0 for n in nodes)
        service = find_service(station, ChargingService)
        assert service.stats.written["charge_bill"] == 3 and service.stats.written["charge_tariff"] == 1
