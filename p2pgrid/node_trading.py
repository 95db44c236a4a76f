"""The node's ledger and trading services (see ``p2pgrid.node`` for the service protocol).

``LedgerNodeService`` opens the node's SQLite store (``<data_dir>/ledger.sqlite``) and runs a
``LedgerService`` for the zone's committee; ``TradingNodeService`` runs a ``TradingService`` on top
of it, fed by the node's order gossip. Both run only when the zone has a committee and a gateway
(``[zone] validators`` and ``gateway_account``): without a ledger there is nothing to trade on.
The node dials every validator's address, since votes travel on direct streams.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

import p2pgrid.entry_kinds  # noqa: F401  every node validates every kind of its zone
from p2pgrid.errors import ConfigError
from p2pgrid.ledger.committee import Committee
from p2pgrid.ledger.service import LedgerConfig, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.market.locality import Locality, settlement_grid_fees
from p2pgrid.net.orders import open_neighbour_gossip
from p2pgrid.settlement import ImbalancePrices
from p2pgrid.settlement_entries import SettlementLedgerRules
from p2pgrid.settlement_service import SettlementService
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.trading.service import TradingConfig, TradingService

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig
    from p2pgrid.node import Node

LEDGER_DB = "ledger.sqlite"
OWN_ORDERS_FILE = "own-orders.journal"
LOCK_TTL_REAL_S = 30.0


def has_ledger(config: NodeConfig) -> bool:
    return bool(config.zone.validators) and bool(config.zone.gateway_account)


def ledger_config(config: NodeConfig) -> LedgerConfig:
    zone = config.zone
    if not has_ledger(config):
        raise ConfigError("zone.validators and zone.gateway_account are needed for a ledger")
    # The zone's settlement terms travel with its ledger rules: validators recompute settlements.
    rules = SettlementLedgerRules(zone.ledger_zone, bytes.fromhex(zone.gateway_account), zone.credit_limit_uc,
                                  slots=zone.slot_rules,
                                  prices=ImbalancePrices(zone.tariffs.retail_price, zone.tariffs.feed_in_price),
                                  grid_fees=settlement_grid_fees([Locality(zone.id, dict(zone.grid_fees))]))
    committee = Committee(zone.ledger_zone, 0, tuple(bytes.fromhex(v.public_key) for v in zone.validators))
    return LedgerConfig(rules, committee)


class LedgerNodeService:
    name = "ledger"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        config = ledger_config(node.config)
        node.config.node.data_dir.mkdir(parents=True, exist_ok=True)
        path = node.config.node.data_dir / LEDGER_DB
        async with open_store(path) as store:
            async with open_ledger_service(node.key, config, store, node.transport, node.clock.now_ms) as ledger:
                node.ledger = ledger
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dial_validators, node)
                    task_status.started()
                    await trio.sleep_forever()

    @staticmethod
    async def _dial_validators(node: Node) -> None:
        from p2pgrid.node import dial_until_connected   # node.py imports this module

        me = node.key.public_key.hex()
        addrs = [v.address for v in node.config.zone.validators if v.address and v.public_key != me]
        await dial_until_connected(node.transport, addrs, "validator")


class TradingNodeService:
    name = "trading"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None or node.order_gossip is None:
            raise RuntimeError("trading starts after the ledger and order gossip services")
        # A lock waits for its fill in market time; under a scaled clock (simnet) market time runs
        # ``speed`` times faster than the real time a take needs, so give it real seconds.
        speed = float(getattr(node.clock, "speed", 1.0))
        zone = node.config.zone
        config = TradingConfig(node.zone, zone.slot_rules,
                               lock_ttl_ms=max(60_000, int(LOCK_TTL_REAL_S * 1000 * speed)),
                               grid_fees=dict(zone.grid_fees))
        journal = OwnOrderJournal(node.config.node.data_dir / OWN_ORDERS_FILE)
        # Neighbour zones' order topics, read-only (market.locality): their books, never our orders.
        async with open_neighbour_gossip(node.transport, zone.neighbours, zone.slot_rules, node.clock.now_ms,
                                         tick_s=node.config.network.publish_interval_ms / 1000) as neighbours:
            trading = TradingService(node.key, config, node.transport, node.ledger, node.order_gossip,
                                     node.clock.now_ms, journal, neighbours)
            node.trading = trading
            node.order_listeners.append(trading.on_delivery)
            await trading.run(consume_gossip=False, task_status=task_status)


class SettlementNodeService:
    """On the zone gateway's node: propose the ``settle`` entry of each slot once it is due, and
    its reconciliations (``p2pgrid.settlement_service``; ``[gateway] settle_delay_ms`` after the
    metering deadline), up to ``[gateway] settle_until_s`` if set. Other nodes run nothing here."""

    name = "settlement"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None:
            raise RuntimeError("settlement starts after the ledger service")
        if node.ledger.rules.gateway != node.key.public_key:
            task_status.started()
            await trio.sleep_forever()
        until_s = node.config.gateway.settle_until_s
        service = SettlementService(node.ledger, node.clock.now_ms, until_ms=until_s * 1000 if until_s else None,
                                    settle_delay_ms=node.config.gateway.settle_delay_ms)
        await service.run(task_status=task_status)
