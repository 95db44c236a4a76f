"""Charging sales on a live ledger: a station opens its tariff by itself, drivers start sessions
when their planned charges begin, the station bills each from its connectors' log once the car
has gone, and every node derives the same state — four real ``Node``s on the in-memory transport.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import trio
import trio_asyncio

from p2pgrid.charging.plan import billable_wh, driver_actions
from p2pgrid.charging.rules import charger_counter, sessions, tariffs
from p2pgrid.charging.service import ChargingService, connector_keys, read_sessions_file
from p2pgrid.clock import SystemClock
from p2pgrid.config import build_config
from p2pgrid.invest.statement import statement_for
from p2pgrid.ledger.chain import state_root
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import cluster_keys, wait_until
from p2pgrid.node.app import Node, close_ledger_store
from p2pgrid.units import trade_value

NAMES = ("gateway", "station", "driver-a", "driver-b")
CREDITS = 50_000_000
PRICE = 450_000


def node_config(root: Path, name: str, keys, sessions_file: str = ""):
    raw = {
        "node": {"data_dir": str(root / name), "name": name},
        "zone": {"id": "chargezone", "gateway_account": keys[0].public_key.hex(),
                 "validators": [{"public_key": k.public_key.hex(), "address": f"memory/{k.public_key.hex()}"}
                                for k in keys]},
        "network": {"publish_interval_ms": 50},
    }
    if name == "gateway":
        raw["gateway"] = {"fund_uc": CREDITS, "fund_accounts": [k.public_key.hex() for k in keys[1:]]}
    if name == "station":
        raw["charging"] = {"enabled": True, "price_uc_per_kwh": PRICE, "connectors": 2,
                           "max_power_w": 10_000_000, "sessions_file": sessions_file, "no_car_grace_s": 1}
    elif sessions_file:
        raw["charging"] = {"sessions_file": sessions_file}
    return build_config(raw, base_dir=root)


def write_sessions(root: Path, keys, start_s: int) -> None:
    """Driver A charges 3000 Wh at connector 0; driver B 2000 Wh at connector 1 but escrows for
    1500 Wh only; driver B's second plan has no car at the station (billed zero)."""
    station, a, b = (k.public_key.hex() for k in keys[1:])
    end_s = start_s + 3
    station_log = {"log": [
        {"connector": 0, "driver": a, "start_s": start_s, "end_s": end_s, "energy_wh": 3000},
        {"connector": 1, "driver": b, "start_s": start_s, "end_s": end_s, "energy_wh": 2000}]}
    plans = {"driver-a": [{"station": station, "start_s": start_s, "end_s": end_s, "max_wh": 4000}],
             "driver-b": [{"station": station, "start_s": start_s, "end_s": end_s, "max_wh": 1500},
                          {"station": station, "start_s": end_s, "end_s": end_s + 3, "max_wh": 1000}]}
    for name in NAMES[1:]:
        (root / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        content = station_log if name == "station" else {"plans": plans[name]}
        (root / name / "sessions.json").write_text(json.dumps(content))


async def test_a_station_sells_charging_sessions_billed_from_signed_connector_values(tmp_path):
    keys = cluster_keys(len(NAMES), seed=23)
    start_s = int(time.time()) + 3
    write_sessions(tmp_path, keys, start_s)
    configs = {n: node_config(tmp_path, n, keys, "" if n == "gateway" else "sessions.json") for n in NAMES}
    network = MemoryNetwork()
    nodes: dict[str, Node] = {}

    async def run(name, *, task_status=trio.TASK_STATUS_IGNORED):
        key = keys[NAMES.index(name)]
        others = tuple(a for a in network.addresses if a != f"memory/{key.public_key.hex()}")
        async with network.open_transport(key, connect_to=others) as transport:
            node = Node(configs[name], key, SystemClock(), transport)
            try:
                async with trio.open_nursery() as inner:
                    await inner.start(node.run)
                    nodes[name] = node
                    task_status.started()
            finally:
                await close_ledger_store(node)

    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        for name in NAMES:
            await nursery.start(run, name)
        station, a, b = (nodes[n] for n in NAMES[1:])
        accounts = {n: nodes[n].key.public_key for n in NAMES}
        with trio.fail_after(60):
            # The tariff names the station's two connector keys, made in its data dir.
            await wait_until(lambda: tariffs(a.ledger.state, accounts["station"]), 0.02)
            tariff = tariffs(a.ledger.state, accounts["station"])[0]
            assert tariff.terms.charger_keys == tuple(
                k.public_key for k in connector_keys(tmp_path / "station", 2))
            # Three sessions start (two with cars, one without); all three get billed.
            await wait_until(lambda: len([s for s in sessions(station.ledger.state) if s.billed]) == 3, 0.05)
            await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes.values()}) == 1
                             and len({n.ledger.state.height for n in nodes.values()}) == 1, 0.02)
        state = station.ledger.state
        by_driver = {n: sorted((s for s in sessions(state, driver=accounts[n])), key=lambda s: s.plugged_in_ms)
                     for n in ("driver-a", "driver-b")}
        # Each bill is the logged energy after the driver plugged in (a few ms after the charge
        # began), within the escrow: driver B escrowed for 1500 of its 2000 Wh; its second plan had no car.
        station_log = read_sessions_file(tmp_path / "station" / "sessions.json")[0]
        (session_a,), (session_b, no_car) = by_driver["driver-a"], by_driver["driver-b"]
        billed_a = billable_wh(station_log[0], session_a, 10_000_000)
        billed_b = billable_wh(station_log[1], session_b, 10_000_000)
        assert 0 < billed_a <= 3_000 and 0 < billed_b <= 1_500
        assert (session_a.delivered_wh, session_b.delivered_wh, no_car.delivered_wh) == (billed_a, billed_b, 0)
        sold = trade_value(billed_a, PRICE) + trade_value(billed_b, PRICE)
        assert state.balance(accounts["station"]) == CREDITS + sold
        assert state.balance(accounts["driver-a"]) == CREDITS - trade_value(billed_a, PRICE)
        assert state.balance(accounts["driver-b"]) == CREDITS - trade_value(billed_b, PRICE)
        assert state.money_total() == 0
        assert [charger_counter(state, k) for k in tariff.terms.charger_keys] == [billed_a, billed_b]
        # Nothing more to write: no duplicate start for a plan that already has its session.
        plans = read_sessions_file(tmp_path / "driver-b" / "sessions.json")[1]
        assert driver_actions(b.ledger.state, accounts["driver-b"], plans, start_s * 1000 + 1000) == []
        service = next(s for s in station.services if isinstance(s, ChargingService))
        assert service.stats.written["charge_bill"] == 3 and service.stats.written["charge_tariff"] == 1
        # The statements read the same money from the certified entries.
        entries = await station.ledger.store.all_entries()
        statement = statement_for(entries, station.ledger.rules, accounts["station"])
        assert statement.streams["charging_sales"] == sold
        assert statement.energy_wh["charging_sales"] == billed_a + billed_b
        nursery.cancel_scope.cancel()
