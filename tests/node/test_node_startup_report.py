"""What a node says at start about what it does not do (``p2pgrid.node.startup``)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import trio

from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.node.api import peer_id_base58
from p2pgrid.node.startup import StartupReport, startup_notices

KEY = NodeKey(bytes(range(32)))
VALIDATOR = NodeKey(bytes(range(1, 33)))


def config(tmp_path, **sections):
    return build_config({"node": {"data_dir": str(tmp_path)}, **sections}, base_dir=tmp_path)


def zone_with_ledger(gateway: str = "ee" * 32):
    return {"validators": [{"public_key": VALIDATOR.account}], "gateway_account": gateway}


def test_the_config_init_writes_is_told_what_it_lacks(tmp_path):
    notices = startup_notices(config(tmp_path, rpc={"enabled": True}), KEY.account)
    assert any(n.startswith("no ledger: [zone] has no validators and gateway_account") for n in notices)
    assert any("not metered" in n for n in notices)
    assert any("no bootstrap peers" in n for n in notices)
    assert not any("RPC off" in n for n in notices)


def test_rpc_off_pv_without_a_series_and_a_missing_gateway_account_are_each_said(tmp_path):
    notices = startup_notices(config(tmp_path, devices={"pv": {"kwp": 8}},
                                     zone={"validators": [{"public_key": VALIDATOR.account}]},
                                     network={"bootstrap": ["/ip4/127.0.0.1/tcp/1/p2p/x"]}), KEY.account)
    assert any(n.startswith("no ledger: [zone] has no gateway_account;") and "devices are not read" in n
               for n in notices)
    assert any(n.startswith("RPC off") for n in notices)
    assert any("8 kWp has no devices.series_file: it produces 0 W" in n for n in notices)
    assert not any("not metered" in n or "bootstrap" in n for n in notices)


def test_a_complete_household_and_the_gateway_hear_nothing(tmp_path):
    household = config(tmp_path, rpc={"enabled": True}, zone=zone_with_ledger(), devices={"base_load_w": 300,
                       "series_file": "energy.json", "pv": {"kwp": 5}}, network={"mdns": True})
    assert startup_notices(household, KEY.account) == []
    gateway = config(tmp_path, rpc={"enabled": True}, zone=zone_with_ledger(KEY.account), network={"mdns": True})
    assert startup_notices(gateway, KEY.account) == []     # the gateway is the grid: not metered


class Transport:
    def __init__(self) -> None:
        self.connected: frozenset[bytes] = frozenset()
        self.listen_addrs = (f"/ip4/127.0.0.1/tcp/4001/p2p/{peer_id_base58(KEY.public_key)}",)

    def peers(self) -> frozenset[bytes]:
        return self.connected


async def test_the_report_names_the_node_and_warns_until_a_validator_is_reachable(tmp_path, caplog, autojump_clock):
    caplog.set_level(logging.INFO, logger="p2pgrid.node")
    node = SimpleNamespace(config=config(tmp_path, zone=zone_with_ledger()), key=KEY, transport=Transport(),
                           services=[SimpleNamespace(name="order-gossip"), SimpleNamespace(name="ledger")])
    report = StartupReport(grace_s=30, poll_s=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(report.run, node)
        text = caplog.text
        assert f"account {KEY.account}, peer id {peer_id_base58(KEY.public_key)}" in text
        assert f"listening on {node.transport.listen_addrs[0]}" in text
        assert "running: order-gossip, ledger" in text
        await trio.sleep(29)
        assert not report.validator_warned
        await trio.sleep(2)
        assert report.validator_warned and "no validator reachable 30 s after start" in caplog.text
        node.transport.connected = frozenset({VALIDATOR.public_key})
        await trio.sleep(2)
        assert "1 of 1 validators reachable" in caplog.text
        nursery.cancel_scope.cancel()
