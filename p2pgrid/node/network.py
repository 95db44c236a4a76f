"""The node on its network: the zone's order gossip, and dialling the peers it must reach.

* ``OrderGossipService`` runs ``p2pgrid.net.orders`` on ``p2pgrid/v1/<zone>/orders``: it fills
  ``node.order_gossip``, counts every accepted order per slot (``node.stats``) and hands each
  delivery to the callbacks in ``node.order_listeners`` (the trading service's books, metrics), in
  arrival order; rejects are counted by reason, our own orders batched per publish interval. On a
  node of a zone with a ledger, order admission is on from the first order
  (``p2pgrid.trading.admission``, judged on ``node.ledger``'s state; until the ledger service has
  started, every owner counts as unregistered, which is IGNORE: those orders can come again).
  Beside it runs the zone's book reconciliation (``p2pgrid.net.reconcile_service``,
  ``node.book_reconciler``): what gossip missed is pulled from peers that speak
  ``/p2pgrid/books/1``, judged by the same validator (admission included) and delivered the same way.
* ``Bootstrap`` dials the configured bootstrap peers until each answered once.
* ``dial_until_connected`` is that loop, also used for the committee's validators
  (``p2pgrid.node.ledger``): votes travel on direct streams.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import trio

from p2pgrid.errors import P2PGridError
from p2pgrid.net.orders import open_order_gossip
from p2pgrid.net.reconcile_service import open_book_reconciler
from p2pgrid.net.transport import Transport
from p2pgrid.net.validation import OrderRules
from p2pgrid.service import WithOrderGossip, WithStats, WithTransport
from p2pgrid.trading.admission import AdmissionGate, LedgerFacts
from p2pgrid.wire import Order

log = logging.getLogger(__name__)

BOOTSTRAP_RETRY_S = 0.5


class GossipHost(WithOrderGossip, WithStats, Protocol):
    """What the order gossip service uses of the node: it fills ``node.order_gossip``."""


class OrderGossipService:
    """Runs ``p2pgrid.net.orders`` for the node's zone and feeds deliveries to the node.

    Every accepted batch (our own included) is counted per slot and handed to each callback in
    ``node.order_listeners`` (the market book plugs in there), in arrival order.
    """

    name = "order-gossip"

    async def run(self, node: GossipHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        rules = OrderRules(zone=node.zone, slot_rules=node.config.zone.slot_rules)
        tick_s = node.config.network.publish_interval_ms / 1000
        async with open_order_gossip(node.transport, rules, node.clock.now_ms, tick_s=tick_s,
                                     admission=admission_gate(node)) as gossip, \
                open_book_reconciler(node.transport, [gossip], node.clock.now_ms) as reconciler:
            node.order_gossip = gossip
            node.book_reconciler = reconciler
            task_status.started()
            async for delivery in gossip.deliveries:
                for signed in delivery.items:
                    if isinstance(signed.body, Order):
                        node.stats.record_order(signed.body)
                for listener in node.order_listeners:
                    listener(delivery)


def admission_gate(node: Any) -> AdmissionGate | None:
    """The node's order admission gate, reading ``node.ledger`` as it is at each check; None on a
    node whose zone has no ledger (no committee or gateway: there are no facts to judge on)."""
    zone = node.config.zone
    if not (zone.validators and zone.gateway_account):
        return None

    def state() -> Any:
        return node.ledger.state if node.ledger is not None else None

    def rules() -> Any:
        return node.ledger.rules if node.ledger is not None else None

    return AdmissionGate(LedgerFacts(state, rules), zone.slot_rules)


class Bootstrap:
    """Dials the configured bootstrap peers, retrying until each answers once."""

    name = "bootstrap"

    async def run(self, node: WithTransport, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await dial_until_connected(node.transport, node.config.network.bootstrap, "bootstrap peer")


async def dial_until_connected(transport: Transport, addrs: Sequence[str], what: str) -> None:
    """Dial every address in ``addrs`` (but our own), retrying each until it answers once."""
    own = set(transport.listen_addrs)
    pending = [addr for addr in addrs if addr not in own]
    while pending:
        for addr in list(pending):
            try:
                await transport.connect(addr)
                pending.remove(addr)
                log.info("connected to %s %s", what, addr)
            except P2PGridError as exc:
                log.debug("%s %s not reachable yet: %s", what, addr, exc)
        if pending:
            await trio.sleep(BOOTSTRAP_RETRY_S)


def network_services(config: Any) -> list[Any]:
    """Order gossip and bootstrap: every node runs them, first."""
    return [OrderGossipService(), Bootstrap()]
