"""A p2pgrid node: the services of one participant composed under one trio nursery.

Composition (imperative shell; the rules live in pure modules)::

    transport (libp2p or memory)          opened by the caller, passed in
      └── Node.run ── nursery
            ├── OrderGossip      p2pgrid.net.orders on p2pgrid/v1/<zone>/orders: validated
            │                    deliveries (counted per slot, passed to node.order_listeners),
            │                    rejects by reason, our own orders batched per publish interval
            ├── Bootstrap        dial the configured bootstrap peers until connected
            ├── StatusWriter     write <data_dir>/status.json twice a second (dashboards, simnet)
            ├── ControlInbox     execute order requests dropped in <data_dir>/inbox/ (CLI)
            ├── RandomTrader     agent.strategy = "random": seeded random orders (demo, simnet)
            ├── GatewayFunder    p2pgrid.node_gateway: the zone gateway mints initial credits
            ├── GatewayMeterRegistrar  p2pgrid.node_gateway: the zone gateway registers meter keys
            ├── ProfileTrader    p2pgrid.node_agent: agent.strategy = "profile" (simnet); fault controls
            ├── DeviceService    p2pgrid.node_devices: every node with devices: devices, telemetry
            ├── MeterNodeService p2pgrid.node_metering: signed meter entries of the devices' slots
            ├── AgentTrader      p2pgrid.node_planner: agent.strategy = "agent": forecasts, plan, orders
            ├── Ledger/Trading/Settlement  p2pgrid.node_trading: with a committee and a gateway
            ├── PoolTrading/PoolHost       p2pgrid.node_pools: [pool] enabled on a battery node
            ├── PoolDeliveryService        p2pgrid.node_pool_delivery: the battery exports pool sales
            └── extra services   rpc, metrics ... plug in here

**Service protocol.** A service is any object with a ``name`` and
``async def run(self, node, *, task_status=trio.TASK_STATUS_IGNORED)``. ``Node.run`` starts
each with ``nursery.start`` (so it is ready — subscribed, listening — before the next one starts,
in list order) and stops all of them by cancelling the nursery: a service cleans up in
``finally`` / ``async with``, never needs a separate stop call. A service that raises takes the
node down (a bug is loud); ``P2PGridError``s from peers are handled inside the service.

**Time.** Market time comes only from ``node.clock`` (see ``p2pgrid.clock``); pacing sleeps
(publish interval, status period, agent tick) are in real trio time.

**Data dir.** ``Node.run`` holds the data dir's exclusive lock (``p2pgrid.data_dir``) while it runs:
a second node on the same dir stops at start with ``DataDirInUse``, before it touches any file.

**Status file.** ``<data_dir>/status.json`` is replaced atomically; it holds ``NodeStatus``
(``state`` is ``running`` while the node runs and ``stopped`` after a clean shutdown). The CLI
``status`` command and the simnet launcher read it; nothing else is needed to watch a node.

**Control inbox.** ``p2pgrid order place`` writes ``<data_dir>/inbox/<id>.request.json`` (an order request,
unsigned) and waits for ``<id>.reply.json``. The running node signs the order with its own key and
publishes it. The inbox directory is mode 0700 like the keystore: whoever can write it can trade
for the node, exactly as whoever can read the keystore can.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.clock import Clock
from p2pgrid.config import NodeConfig
from p2pgrid.data_dir import check_data_dir_free, hold_data_dir
from p2pgrid.errors import NetError, P2PGridError
from p2pgrid.identity import NodeKey
from p2pgrid.net.orders import OrderDelivery, OrderGossip, open_order_gossip
from p2pgrid.net.transport import Transport
from p2pgrid.net.validation import OrderRules
from p2pgrid.node_agent import agent_services, gate_transport
from p2pgrid.node_charging import charging_services
from p2pgrid.node_devices import device_services
from p2pgrid.node_metering import metering_services
from p2pgrid.node_planner import planner_services
from p2pgrid.node_gateway import gateway_services
from p2pgrid.node_pools import pool_services
from p2pgrid.node_shares import share_services
from p2pgrid.node_trading import LedgerNodeService, SettlementNodeService, TradingNodeService, has_ledger
from p2pgrid.node_rpc import api_services
from p2pgrid.wire import Order, Side, Signed, Source, sign

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService
    from p2pgrid.trading.service import TradingService

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
INBOX_DIR = "inbox"
STATUS_PERIOD_S = 0.5
INBOX_POLL_S = 0.1
BOOTSTRAP_RETRY_S = 0.5
MAX_SLOTS_TRACKED = 512


class Service(Protocol):
    """A part of the node that runs until cancelled (see module docstring)."""

    name: str

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


# --- stats ----------------------------------------------------------------------------------

@dataclass
class NodeStats:
    """Counters the node's services update; ``NodeStatus`` is their frozen, serialisable view."""

    orders_by_slot: dict[int, set[bytes]] = field(default_factory=dict)
    orders_published: int = 0

    def record_order(self, order: Order) -> None:
        seen = self.orders_by_slot.setdefault(order.slot, set())
        seen.add(order.order_id)
        if len(self.orders_by_slot) > MAX_SLOTS_TRACKED:
            del self.orders_by_slot[min(self.orders_by_slot)]

    @property
    def orders_seen(self) -> int:
        return sum(len(ids) for ids in self.orders_by_slot.values())


@dataclass(frozen=True)
class NodeStatus:
    """What a running node tells the world through its status file."""

    name: str
    role: str
    zone: str
    account: str
    pid: int
    state: str
    listen_addrs: tuple[str, ...]
    peers: int
    orders_seen: int
    orders_by_slot: dict[int, int]
    rejects: dict[str, int]
    ignored: dict[str, int]
    orders_published: int
    batches_received: int
    market_now_ms: int
    updated_wall_ms: int
    ledger_height: int = 0
    state_root: str = ""
    balance_uc: int = 0
    money_total_uc: int = 0
    trades_taken: int = 0
    takes_served: int = 0

    def to_json(self) -> str:
        data = asdict(self)
        data["orders_by_slot"] = {str(k): v for k, v in self.orders_by_slot.items()}
        data["listen_addrs"] = list(self.listen_addrs)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeStatus:
        data = json.loads(text)
        data["orders_by_slot"] = {int(k): int(v) for k, v in data["orders_by_slot"].items()}
        data["listen_addrs"] = tuple(data["listen_addrs"])
        return cls(**data)


def read_status(data_dir: Path) -> NodeStatus | None:
    """The last status a node wrote in ``data_dir``, or None if there is none (yet)."""
    try:
        return NodeStatus.from_json((Path(data_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):   # missing, or written by another version
        return None


def write_status(data_dir: Path, status: NodeStatus) -> None:
    path = Path(data_dir) / STATUS_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(status.to_json())
    os.replace(tmp, path)


# --- the node -------------------------------------------------------------------------------

class Node:
    """One participant: its key, config, clock and transport, and the services that use them."""

    def __init__(self, config: NodeConfig, key: NodeKey, clock: Clock, transport: Transport,
                 extra_services: Sequence[Service] = ()) -> None:
        self.config = config
        self.key = key
        self.clock = clock
        self.transport = gate_transport(config, transport)   # a FaultGate only in simnet fault tests
        self.stats = NodeStats()
        self.order_gossip: OrderGossip | None = None          # set once OrderGossipService runs
        self.order_listeners: list[Callable[[OrderDelivery], None]] = []
        self.ledger: LedgerService | None = None                # set once the ledger service runs
        self.trading: TradingService | None = None              # set once the trading service runs
        self.pool_host: Any = None                               # node_pools.PoolHostService, [pool] enabled
        self.telemetry: Any = None                               # node_devices.DeviceService, with devices
        self.services: list[Service] = [OrderGossipService(), Bootstrap()]
        if has_ledger(config):
            self.services += [LedgerNodeService(), TradingNodeService(), *pool_services(config),
                              SettlementNodeService()]
        self.services += api_services(config)      # [rpc] and [metrics], after trading
        self.services += [StatusWriter(), ControlInbox()]
        if config.agent.strategy == "random":
            self.services.append(RandomTrader())
        if has_ledger(config):
            self.services += gateway_services(config) + agent_services(config)   # node_gateway, node_agent
            self.services += device_services(config) + metering_services(config)  # node_devices, node_metering
            self.services += planner_services(config)                              # node_planner
            self.services += share_services(config) + charging_services(config)    # node_shares, node_charging
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
            updated_wall_ms=time.time_ns() // 1_000_000,
            **self._ledger_status(),
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


# --- services -------------------------------------------------------------------------------

class OrderGossipService:
    """Runs ``p2pgrid.net.orders`` for the node's zone and feeds deliveries to the node.

    Every accepted batch (our own included) is counted per slot and handed to each callback in
    ``node.order_listeners`` (the market book plugs in there), in arrival order.
    """

    name = "order-gossip"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        rules = OrderRules(zone=node.zone, slot_rules=node.config.zone.slot_rules)
        tick_s = node.config.network.publish_interval_ms / 1000
        async with open_order_gossip(node.transport, rules, node.clock.now_ms, tick_s=tick_s) as gossip:
            node.order_gossip = gossip
            task_status.started()
            async for delivery in gossip.deliveries:
                for signed in delivery.items:
                    if isinstance(signed.body, Order):
                        node.stats.record_order(signed.body)
                for listener in node.order_listeners:
                    listener(delivery)


class Bootstrap:
    """Dials the configured bootstrap peers, retrying until each answers once."""

    name = "bootstrap"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
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


class StatusWriter:
    """Keeps ``<data_dir>/status.json`` current."""

    name = "status-writer"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        node.config.node.data_dir.mkdir(parents=True, exist_ok=True)
        task_status.started()
        while True:
            write_status(node.config.node.data_dir, node.status())
            await trio.sleep(STATUS_PERIOD_S)


@dataclass(frozen=True)
class OrderRequest:
    """An order asked for through the control inbox (unsigned; the node signs it)."""

    side: str
    qty_wh: int
    price: int
    slot: int
    green: bool = False
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def inbox_dir(data_dir: Path) -> Path:
    return Path(data_dir) / INBOX_DIR


class ControlInbox:
    """Executes order requests the CLI drops in ``<data_dir>/inbox/`` and answers each one."""

    name = "control-inbox"

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        inbox = inbox_dir(node.config.node.data_dir)
        inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(inbox, 0o700)
        task_status.started()
        while True:
            for request_path in sorted(inbox.glob("*.request.json")):
                self._handle(node, request_path)
            await trio.sleep(INBOX_POLL_S)

    def _handle(self, node: Node, request_path: Path) -> None:
        reply_path = request_path.with_name(request_path.name.replace(".request.json", ".reply.json"))
        try:
            request = OrderRequest(**json.loads(request_path.read_text()))
            side = Side(request.side)
            source = Source(request.source) if request.source else None
            signed = node.place_order(side, request.qty_wh, request.price, request.slot,
                                      green=request.green, source=source)
            reply: dict[str, Any] = {"ok": True, "order_id": signed.body.order_id.hex()}
        except (ValueError, TypeError, KeyError, P2PGridError) as exc:
            reply = {"ok": False, "error": str(exc)}
        tmp = reply_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(reply))
        os.replace(tmp, reply_path)
        request_path.unlink(missing_ok=True)


class RandomTrader:
    """Seeded random orders for the tradable slots of the near future (demo and simnet load).

    Households sell green PV in the daytime half of their ticks and buy otherwise; consumers buy;
    stations sell (PV when the node has PV, else battery).
    """

    name = "random-trader"
    NEAR_SLOTS = 4

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        agent = node.config.agent
        rng = random.Random(agent.seed)
        rules = node.config.zone.slot_rules
        placed = 0
        task_status.started()
        while agent.max_orders == 0 or placed < agent.max_orders:
            await trio.sleep(agent.tick_ms / 1000)
            # Skip the first open slot: it may reach gate closure while the order is in flight.
            slots = rules.tradable_slots(node.clock.now_ms())[1: 1 + self.NEAR_SLOTS]
            if not slots:
                continue
            for _ in range(agent.orders_per_tick):
                if agent.max_orders and placed >= agent.max_orders:
                    break
                side, source = self._side_and_source(node, rng)
                node.place_order(
                    side, rng.randint(agent.qty_min_wh, agent.qty_max_wh),
                    rng.randint(agent.price_min, agent.price_max), rng.choice(slots),
                    green=source.is_green, source=source,
                )
                placed += 1
        await trio.sleep_forever()

    @staticmethod
    def _side_and_source(node: Node, rng: random.Random) -> tuple[Side, Source]:
        role = node.config.node.role
        has_pv = node.config.devices.pv is not None
        if role == "consumer":
            return Side.BUY, Source.NONE
        if role == "station":
            return Side.SELL, Source.PV if has_pv and rng.random() < 0.6 else Source.BATTERY
        if rng.random() < 0.5:
            return Side.SELL, Source.PV if has_pv else Source.BATTERY
        return Side.BUY, Source.NONE


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
        async with open_libp2p_transport(key, config.network.listen, (), mdns=config.network.mdns) as transport:
            if config.network.listen and not transport.listen_addrs:
                # py-libp2p logs a failed listen (e.g. port in use) and carries on deaf; we do not.
                raise NetError(f"could not listen on {', '.join(config.network.listen)} (address in use?)")
            node = Node(config, key, clock, transport)
            try:
                return await run_until_signal(node, also=also)
            finally:
                await close_ledger_store(node)


async def close_ledger_store(node: Node) -> None:
    """Close the node's ledger database once its services are gone. The ledger service's own
    close runs while it is being cancelled, so it is cancelled too, and aiosqlite's worker thread
    (not a daemon) would keep the process alive after the node stopped."""
    if node.ledger is not None:
        with trio.CancelScope(shield=True):
            await node.ledger.store.aclose()
