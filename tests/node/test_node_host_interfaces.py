"""Services see the node only through the narrow Protocols of ``p2pgrid.service`` (and the few their
modules combine from them): a real ``Node`` has every member each of them names, and every service
the registry can start declares one of them as what its ``run`` gets."""

import importlib
import inspect
import sys
from pathlib import Path
from typing import Protocol

import pytest

import p2pgrid
from p2pgrid.config import build_config
from p2pgrid.identity import NodeKey
from p2pgrid.node.app import Node
from p2pgrid.node.registry import REGISTRY, compose_services
from p2pgrid.service import NodeBasics, OrderCounters, Service

NOT_HOSTS = {Service, OrderCounters}     # what a service is; what ``node.stats`` is


def service_modules():
    """Every module that declares a Protocol."""
    root = Path(p2pgrid.__file__).parent
    names = [".".join(("p2pgrid", *path.relative_to(root).with_suffix("").parts)) for path in sorted(root.rglob("*.py"))
             if "Protocol):" in path.read_text()]
    return [importlib.import_module(name) for name in names]


def host_protocols():
    """Every view of the node in ``p2pgrid.service``, and every Protocol elsewhere built on ``NodeBasics``."""
    found = {}
    for module in service_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if getattr(cls, "_is_protocol", False) and cls.__module__ == module.__name__ and cls not in NOT_HOSTS and (
                    module.__name__ == "p2pgrid.service" or NodeBasics in cls.__mro__[1:]):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def members(protocol):
    names = set()
    for cls in protocol.__mro__:
        if cls in (Protocol, object) or cls.__module__ == "typing":
            continue
        names |= set(cls.__dict__.get("__annotations__", {}))
        names |= {n for n, v in cls.__dict__.items() if not n.startswith("_") and (callable(v) or isinstance(v, property))}
    return names


def full_config(tmp_path, key, strategy, **extra):
    raw = {"node": {"data_dir": str(tmp_path / strategy), "name": strategy},
           "zone": {"gateway_account": key.public_key.hex(), "validators": [{"public_key": key.public_key.hex()}]},
           "agent": {"strategy": strategy},
           "devices": {"battery": {"capacity_wh": 5000, "max_charge_w": 2000, "max_discharge_w": 2000}},
           "pool": {"enabled": True}, "rpc": {"enabled": True}, "metrics": {"enabled": True},
           "shares": {"offer": True, "invest_shares": 1}, "charging": {"enabled": True},
           "simnet": {"fault_control": True, "overfill_once": True},
           "gateway": {"fund_accounts": [key.public_key.hex()], "meters": [
               {"account": key.public_key.hex(), "meter_key": NodeKey.generate().public_key.hex()}]}}
    return build_config(raw, base_dir=tmp_path, overrides=extra)


def node_for(tmp_path, strategy):
    key = NodeKey.generate()
    return Node(full_config(tmp_path, key, strategy), key, clock=object(), transport=object())


def test_the_host_protocols_are_found():
    names = set(host_protocols())
    assert {"p2pgrid.service.WithLedger", "p2pgrid.devices.service.WithDevices",
            "p2pgrid.node.api.NodeApiHost", "p2pgrid.agent.agent_trader.AgentHost"} <= names


@pytest.mark.parametrize("name, protocol", sorted(host_protocols().items()))
def test_a_node_has_every_member_of_each_host_protocol(tmp_path, name, protocol):
    node = node_for(tmp_path, "agent")
    assert members(protocol), name
    assert sorted(m for m in members(protocol) if not hasattr(node, m)) == []


def test_the_node_stats_and_services_are_what_the_protocols_say(tmp_path):
    node = node_for(tmp_path, "agent")
    assert all(hasattr(node.stats, m) for m in members(OrderCounters))
    assert all(hasattr(service, m) for service in node.services for m in members(Service))


@pytest.mark.parametrize("strategy", ["agent", "profile", "random"])
def test_every_service_the_registry_starts_is_typed_against_a_host_protocol(tmp_path, strategy):
    protocols = set(host_protocols().values())
    node = node_for(tmp_path, strategy)
    assert len(node.services) > 12        # nearly every row of the registry contributes
    for service in node.services:
        annotation = inspect.get_annotations(service.run)["node"]
        host = eval(annotation, vars(sys.modules[type(service).__module__]))
        assert host in protocols, f"{type(service).__name__}.run(node: {annotation})"


def test_a_node_without_a_ledger_runs_only_the_rows_that_need_none(tmp_path):
    config = build_config({"node": {"data_dir": str(tmp_path), "name": "n"}, "agent": {"strategy": "random"}},
                          base_dir=tmp_path)
    names = [service.name for service in compose_services(config)]
    assert names[:2] == ["order-gossip", "bootstrap"] and "random-trader" in names
    assert "ledger" not in names and "trading" not in names
    assert all(row.what for row in REGISTRY)
