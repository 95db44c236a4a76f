"""What a node service is, and the narrow views of the node that services are written against.

**Service protocol.** A service is any object with a ``name`` and
``async def run(self, node, *, task_status=trio.TASK_STATUS_IGNORED)``. The node
(``p2pgrid.node.app.Node``) runs the services its registry (``p2pgrid.node.registry``) picks for its
config: it starts each with ``nursery.start`` (so it is ready — subscribed, listening — before the
next one starts, in registry order) and stops all of them by cancelling the nursery: a service
cleans up in ``finally`` / ``async with``, never needs a separate stop call. A service that raises
takes the node down (a bug is loud); ``P2PGridError``s from peers are handled inside the service.

**What a service sees of the node.** Never the whole ``Node``: ``run`` types its ``node`` argument
with the ``typing.Protocol`` classes below (or a small one its module declares by combining them),
which list exactly what it may use. ``Node`` satisfies every one of them structurally, and no
service module imports ``p2pgrid.node``: the node depends on its services, never the other way
round (``tests/test_import_cycles.py``; ``tests/node/test_node_host_interfaces.py`` checks that a
real ``Node`` has every member these protocols name).

* ``NodeBasics`` — read-only, for every service: ``config``, ``key`` (the node's signing key),
  ``clock`` (market time, ``p2pgrid.clock``), ``zone``.
* ``WithTransport`` — ``transport``: publish/subscribe and streams (``p2pgrid.net.transport``).
* **Slots**, each filled while the node starts by the one service that provides it, ``None``
  until then (a service that needs one starts after its provider, by registry order, and checks):

  - ``order_gossip`` (and ``order_listeners``, callbacks per delivery) and ``book_reconciler``
    (``/p2pgrid/books/1``, which other services ``add`` their read-only zones to):
    ``WithOrderGossip``, filled by ``p2pgrid.node.network.OrderGossipService``;
  - ``ledger``: ``WithLedger``, by ``p2pgrid.node.ledger.LedgerNodeService``;
  - ``trading``: ``WithTrading``, by ``p2pgrid.trading.node_service.TradingNodeService``;
  - ``telemetry``: ``p2pgrid.devices.service.WithDevices``, by the ``DeviceService`` itself;
  - ``agent``: ``WithAgent``, by the trading strategy (``p2pgrid.agent``);
  - ``pool_host``: ``WithPoolHost``, by ``p2pgrid.pools.node_service.PoolHostService``.
* ``WithStats`` — ``stats``: the node's order counters (``OrderCounters``).
* ``OrderPlacer`` — ``place_order``: sign an order with the node's key and gossip it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from p2pgrid.clock import Clock
    from p2pgrid.config import NodeConfig
    from p2pgrid.identity import NodeKey
    from p2pgrid.ledger.service import LedgerService
    from p2pgrid.net.orders import OrderDelivery, OrderGossip
    from p2pgrid.net.reconcile_service import BookReconciler
    from p2pgrid.net.transport import Transport
    from p2pgrid.trading.service import TradingService
    from p2pgrid.wire import Order, Side, Signed, Source

__all__ = ["NodeBasics", "OrderCounters", "OrderPlacer", "Service", "WithAgent", "WithLedger", "WithOrderGossip",
           "WithPoolHost", "WithStats", "WithTrading", "WithTransport"]


class Service(Protocol):
    """A part of the node that runs until cancelled (see the module docstring)."""

    name: str

    async def run(self, node: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class NodeBasics(Protocol):
    """What every service may read: the node's config, signing key, market clock and zone."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def key(self) -> NodeKey: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def zone(self) -> str: ...


class WithTransport(NodeBasics, Protocol):
    @property
    def transport(self) -> Transport: ...


class WithOrderGossip(WithTransport, Protocol):
    order_gossip: OrderGossip | None
    order_listeners: list[Callable[[OrderDelivery], None]]
    book_reconciler: BookReconciler | None


class WithLedger(NodeBasics, Protocol):
    ledger: LedgerService | None


class WithTrading(WithLedger, Protocol):
    trading: TradingService | None


class OrderPlacer(NodeBasics, Protocol):
    """A node that signs orders with its own key and gossips them with its next batch (through its
    trading service when it runs one, so that it can answer takes on them)."""

    def place_order(self, side: Side, qty_wh: int, limit_price: int, slot: int, *, green: bool = False,
                    source: Source | None = None, ttl_ms: int | None = None) -> Signed[Order]: ...


class OrderCounters(Protocol):
    orders_published: int

    def record_order(self, order: Order) -> None: ...


class WithStats(Protocol):
    @property
    def stats(self) -> OrderCounters: ...


class WithAgent(Protocol):
    agent: Any      # the trading strategy service (profile or agent) once it runs; fault commands find it here


class WithPoolHost(Protocol):
    pool_host: Any  # p2pgrid.pools.host.PoolHost once the pool host service runs
