"""The node's trading service: a ``TradingService`` run on the node's ledger and order gossip.

``TradingNodeService`` (name ``trading``) runs on every node with a ledger, after the ledger and
order gossip services: it fills ``node.trading`` and listens to the node's order gossip
(``node.order_listeners``). It also reads the neighbour zones' order topics, read-only
(``market.locality``): their books, never our orders. Its own orders are journalled in
``<data_dir>/own-orders.journal`` so that a restarted maker can still answer takes on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.net.orders import open_neighbour_gossip
from p2pgrid.service import WithOrderGossip, WithTrading
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.trading.service import TradingConfig, TradingService

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

OWN_ORDERS_FILE = "own-orders.journal"
LOCK_TTL_REAL_S = 30.0


class TradingHost(WithTrading, WithOrderGossip, Protocol):
    """What the trading service uses of the node: it fills ``node.trading``."""


class TradingNodeService:
    name = "trading"

    async def run(self, node: TradingHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
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
                                         tick_s=node.config.network.publish_interval_ms / 1000,
                                         admission=node.order_gossip.admission) as neighbours:
            if node.book_reconciler is not None:       # their books converge like the home zone's
                for gossip in neighbours:
                    node.book_reconciler.add(gossip)
            trading = TradingService(node.key, config, node.transport, node.ledger, node.order_gossip,
                                     node.clock.now_ms, journal, neighbours)
            node.trading = trading
            node.order_listeners.append(trading.on_delivery)
            await trading.run(consume_gossip=False, task_status=task_status)


def trading_services(config: NodeConfig) -> list[Any]:
    """The trading service (the registry runs it on nodes with a ledger only)."""
    return [TradingNodeService()]
