"""A p2pgrid node: the services of one participant composed under one trio nursery.

Composition (imperative shell; the rules live in pure modules)::

    transport (libp2p or memory)          opened by the caller, passed in
      └── Node.run ── nursery: the services of p2pgrid.node.registry, in its order
            ├── order gossip, book reconciliation, bootstrap    p2pgrid.node.network
            ├── ledger                            p2pgrid.node.ledger          (with a committee and a gateway)
            ├── trading                           p2pgrid.trading.node_service
            ├── pool client / host / delivery     p2pgrid.pools                ([pool] enabled on a battery node)
            ├── settlement, gateway               p2pgrid.settlement           (the zone gateway's node)
            ├── node API, RPC, metrics            p2pgrid.node.rpc             ([rpc], [metrics])
            ├── status file                       p2pgrid.node.status
            ├── strategies                        p2pgrid.agent                (agent.strategy)
            ├── devices, telemetry                p2pgrid.devices.service      (a node with devices)
            ├── meter readings                    p2pgrid.settlement.node_service
            ├── LP shares, EV charging            p2pgrid.shares, p2pgrid.charging
            └── extra services                    tests plug in here

**Services.** What a service is, and the narrow views of the node it is typed against, is
``p2pgrid.service``; ``Node`` is the object that satisfies them all: the basics (``config``,
``key``, ``clock``, ``zone``, ``transport``), the slots the services fill as they start
(``order_gossip``, ``ledger``, ``trading``, ``telemetry``, ``agent``, ``pool_host``), its counters
(``stats``) and ``place_order``. It imports no service module: ``p2pgrid.node.registry`` does.

**Time.** Market time comes only from ``node.clock`` (see ``p2pgrid.clock``); pacing sleeps
(publish interval, status period, agent tick) are in real trio time.

**Data dir.** ``Node.run`` holds the data dir's exclusive lock (``p2pgrid.data_dir``) while it runs:
a second node on the same dir stops at start with ``DataDirInUse``, before it touches any file.
Its status file (``p2pgrid.node.status``) tells the world how it is doing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from p2pgrid.clock import Clock
from p2pgrid.config import NodeConfig
from p2pgrid.data_dir import check_data_dir_free, hold_data_dir
from p2pgrid.errors import NetError
from p2pgrid.identity import NodeKey
from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.orders import OrderDelivery, OrderGossip
from p2pgrid.net.transport import Transport
from p2pgrid.node.registry import compose_services
from p2pgrid.node.status import NodeStats, NodeStatus, people_fields, write_status
from p2pgrid.testing.faults import gate_transport
from p2pgrid.wire import Order, Side, Signed, Source, sign

if TYPE_CHECKING:
    from p2pgrid.devices.service import DeviceService
    from p2pgrid.ledger.service import LedgerService
    from p2pgrid.net.reconcile_service import BookReconciler
    from p2pgrid.pools.host import PoolHost
    from p2pgrid.service import Service
    from p2pgrid.trading.service import TradingService

log = logging.getLogger(__name__)

S = TypeVar("S")


class Node:
    """One participant: its key, config, clock and transport, and the services that use them."""

    def __init__(self, config: NodeConfig, key: NodeKey, clock: Clock, transport: Transport,
                 extra_services: Sequence[Service] = ()) -> None:
        """``extra_services`` start after those of the registry (tests plug theirs in here)."""
        self.config = config
        self.key = key
        self.clock = clock
        self.transport = gate_transport(config, transport)   # a FaultGate only in simnet fault tests
        self.stats = NodeStats()
        self.order_gossip: OrderGossip | None = None          # set once OrderGossipService runs
        self.book_reconciler: BookReconciler | None = None    # set once OrderGossipService runs
        self.order_listeners: list[Callable[[OrderDelivery], None]] = []
        self.ledger: LedgerService | None = None                # set once the ledger service runs
        self.trading: TradingService | None = None              # set once the trading service runs
        self.pool_host: PoolHost | None = None                  # set once the pool host service runs ([pool])
        self.telemetry: DeviceService | None = None             # set once the device service runs (devices)
        self.agent: Any = None                                   # the trading strategy service, once it runs
        self.services: list[Service] = compose_services(config)   # p2pgrid.node.registry
        self.services.extend(extra_services)
        self._nonce = 0
        self._started = trio.Event()
        self._state = "starting"

    @property
    def zone(self) -> str:
        return self.config.zone.id

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start every service in order, report started, run until cancelled."""
        with hold_data_dir(self.config.node.data_dir):
            try:
                async with trio.open_nursery() as nursery:
                    for service in self.services:
                        await nursery.start(service.run, self)
                        log.debug("service %s started", service.name)
                    self._state = "running"
                    self._started.set()
                    task_status.started(self)
            finally:
                self._state = "stopped"
                self._write_final_status()

    async def wait_started(self) -> None:
        await self._started.wait()

    def place_order(self, side: Side, qty_wh: int, limit_price: int, slot: int, *,
                    green: bool = False, source: Source | None = None,
                    ttl_ms: int | None = None) -> Signed[Order]:
        """Sign an order with the node's key and queue it for the next gossip batch."""
        now = self.clock.now_ms()
        if source is None:
            source = Source.NONE if side is Side.BUY else Source.MIXED
        self._nonce += 1
        ttl = ttl_ms if ttl_ms is not None else self.config.agent.order_ttl_s * 1000
        order = Order(
            order_id=os.urandom(16), owner=self.key.public_key, side=side, zone=self.zone, slot=slot,
            qty_wh=qty_wh, limit_price=limit_price, green=green, source=source,
            created_ms=now, expiry_ms=now + ttl, nonce=self._nonce,
        )
        if self.order_gossip is None:
            raise RuntimeError("place_order needs a running node (order gossip not started)")
        if self.trading is not None:
            # The trading service keeps its own orders, so it can answer takes on them.
            signed = self.trading.place_order(side, qty_wh, limit_price, slot, green=green, source=source,
                                              expiry_ms=order.expiry_ms)
            self.stats.orders_published += 1
            return signed
        signed = sign(order, self.key)
        self.order_gossip.submit(signed)
        self.stats.orders_published += 1
        return signed

    def status(self) -> NodeStatus:
        stats = self.stats
        gossip = self.order_gossip.stats if self.order_gossip is not None else None
        return NodeStatus(
            name=self.config.node.name, role=self.config.node.role, zone=self.zone,
            account=self.key.account, pid=os.getpid(), state=self._state,
            listen_addrs=tuple(self.transport.listen_addrs), peers=len(self.transport.peers()),
            orders_seen=stats.orders_seen,
            orders_by_slot={slot: len(ids) for slot, ids in sorted(stats.orders_by_slot.items())},
            rejects=dict(gossip.rejected_batches) if gossip else {},
            ignored=dict(gossip.ignored_items) if gossip else {},
            orders_published=stats.orders_published,
            batches_received=gossip.delivered_batches if gossip else 0, market_now_ms=self.clock.now_ms(),
            items_reconciled=gossip.reconciled_items if gossip else 0,
            updated_wall_ms=time.time_ns() // 1_000_000,
            **self._ledger_status(), **people_fields(self),
        )

    def _ledger_status(self) -> dict[str, Any]:
        if self.ledger is None:
            return {}
        state = self.ledger.state
        trading = self.trading.stats if self.trading is not None else None
        return {"ledger_height": state.height, "state_root": self.ledger.state_root().hex(),
                "balance_uc": state.balance(self.key.public_key), "money_total_uc": state.money_total(),
                "trades_taken": trading.executions if trading else 0,
                "takes_served": trading.takes_served if trading else 0}

    def _write_final_status(self) -> None:
        try:
            write_status(self.config.node.data_dir, self.status())
        except OSError as exc:
            log.warning("could not write final status: %s", exc)


def find_service(node: Node, kind: type[S]) -> S:
    """The node's service of type ``kind`` (raises ``LookupError`` when it has none)."""
    for service in node.services:
        if isinstance(service, kind):
            return service
    raise LookupError(f"node {node.config.node.name} runs no {kind.__name__}")


# --- running a node until a signal ---------------------------------------------------------

async def run_until_signal(node: Node, *, also: Sequence[Any] = ()) -> int:
    """Run ``node`` (and the coroutine functions in ``also``, each called with the node) until
    SIGINT or SIGTERM, then stop everything cleanly. Returns the signal number received."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        received = 0
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            for task in also:
                nursery.start_soon(task, node)
            async for signum in signals:
                received = signum
                log.info("received %s, stopping", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    return received


async def run_libp2p_node(config: NodeConfig, key: NodeKey, clock: Clock, *,
                          also: Sequence[Any] = ()) -> int:
    """Open the libp2p transport from ``config.network`` and run a node on it until a signal."""
    from p2pgrid.net.libp2p_host import open_libp2p_transport

    import trio_asyncio

    # Bootstrap peers are dialled by the node's Bootstrap service (with retries), not here: a
    # bootstrap peer that starts a moment later must not stop this node from starting.
    # The asyncio bridge (ledger store) is opened first, so that the tasks py-libp2p spawns for
    # incoming streams (votes, sync) inherit it: a bridge opened later is invisible to them.
    check_data_dir_free(config.node.data_dir)    # before opening ports another node may hold
    async with trio_asyncio.open_loop():
        async with open_libp2p_transport(key, config.network.listen, (), mdns=config.network.mdns,
                                         discovery=discovery_config(config, key)) as transport:
            if config.network.listen and not transport.listen_addrs:
                # py-libp2p logs a failed listen (e.g. port in use) and carries on deaf; we do not.
                raise NetError(f"could not listen on {', '.join(config.network.listen)} (address in use?)")
            node = Node(config, key, clock, transport)
            try:
                return await run_until_signal(node, also=also)
            finally:
                await close_ledger_store(node)


def discovery_config(config: NodeConfig, key: NodeKey) -> DiscoveryConfig:
    """How the node finds peers and how many connections it keeps (``[network]``); the zone's
    validators serve a rendezvous point whatever ``serve_rendezvous`` says: every node dials them."""
    network = config.network
    validator = key.public_key.hex() in {v.public_key for v in config.zone.validators}
    return DiscoveryConfig(enabled=network.discovery, serve_rendezvous=network.serve_rendezvous or validator,
                           max_connections=network.max_connections, target_connections=network.target_connections)


async def close_ledger_store(node: Node) -> None:
    """Close the node's ledger database once its services are gone. The ledger service's own
    close runs while it is being cancelled, so it is cancelled too, and aiosqlite's worker thread
    (not a daemon) would keep the process alive after the node stopped."""
    if node.ledger is not None:
        with trio.CancelScope(shield=True):
            await node.ledger.store.aclose()
