"""Which services a node runs, in which order: the one table the node is composed from.

Each row names a function of the node's config that returns the services of one package (maybe
none), and whether the row needs the zone's ledger (``[zone] validators`` and ``gateway_account``,
``p2pgrid.node.ledger.has_ledger``). ``Node`` starts the services in table order, each ready before
the next starts, so a service comes after the ones whose slot it reads (``p2pgrid.service``):
trading after the ledger and order gossip, pools after trading, metering and the agent after the
devices. A new service is one row here; ``Node`` itself knows no service.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2pgrid.agent.agent_trader import planner_services
from p2pgrid.agent.profile_trader import profile_services
from p2pgrid.agent.random_trader import random_services
from p2pgrid.charging.service import charging_services
from p2pgrid.devices.service import device_services
from p2pgrid.flex.service import flex_services
from p2pgrid.node.ledger import has_ledger, ledger_services
from p2pgrid.node.network import network_services
from p2pgrid.node.rpc import api_services
from p2pgrid.node.status import status_services
from p2pgrid.pools.node_service import pool_services
from p2pgrid.ppa.service import ppa_services
from p2pgrid.settlement.gateway import gateway_services
from p2pgrid.settlement.node_service import metering_services, settlement_services
from p2pgrid.shares.service import share_services
from p2pgrid.testing.faults import fault_services
from p2pgrid.trading.node_service import trading_services

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig
    from p2pgrid.service import Service


@dataclass(frozen=True)
class Row:
    services: Callable[[NodeConfig], list[Any]]
    needs_ledger: bool
    what: str


REGISTRY: tuple[Row, ...] = (
    Row(network_services, False, "order gossip, bootstrap peers"),
    Row(ledger_services, True, "the replicated ledger (node.ledger)"),
    Row(trading_services, True, "books, takes, own orders (node.trading)"),
    Row(pool_services, True, "pool client; [pool] host (node.pool_host) and its battery's delivery"),
    Row(settlement_services, True, "the gateway's settle entries"),
    Row(api_services, False, "[rpc] JSON-RPC and [metrics] Prometheus, with the node API behind them"),
    Row(status_services, False, "<data_dir>/status.json"),
    Row(random_services, False, 'agent.strategy = "random"'),
    Row(gateway_services, True, "the gateway's initial credits and meter registrations"),
    Row(profile_services, True, 'agent.strategy = "profile" (node.agent)'),
    Row(fault_services, True, "simnet fault control and the broken node (test-only)"),
    Row(device_services, True, "devices and telemetry (node.telemetry)"),
    Row(metering_services, True, "signed meter entries of the devices' slots"),
    Row(planner_services, True, 'agent.strategy = "agent": forecasts, battery plan, orders (node.agent)'),
    Row(share_services, True, "[shares] programme host and LP investor"),
    Row(charging_services, True, "[charging] station and planned charges"),
    Row(flex_services, True, "flexibility: awards and settles own requests; [flex] offer from the battery"),
    Row(ppa_services, True, "power purchase agreements: offers, acceptances, their texts (node's ppa service)"),
)


def compose_services(config: NodeConfig, registry: tuple[Row, ...] = REGISTRY) -> list[Service]:
    """The services ``config`` calls for, in start order."""
    ledger = has_ledger(config)
    return [service for row in registry if ledger or not row.needs_ledger for service in row.services(config)]
