"""A trading cluster for tests and simnet: N nodes, each with transport, ledger store, ledger
service, order gossip and trading service; node 0 is the zone operator, whose key is the gateway.

``open_trading_cluster(kind, n, data_dir, n_validators=4)`` yields ``TradingNode``s; the first
``n_validators`` nodes form the committee. ``fund(nodes, amount)`` mints credits to every node.
With ``pool_host=i`` (and a ``PoolHostConfig``) node ``i`` hosts AMM pools and every node trades
with pools through a ``PoolClient`` (``node.pools``, also ``node.trading.pool_client``).

Order admission (``trading.admission``) is **off** here unless ``admission=True``: these clusters
test the trading protocol itself, and most of their tests neither fund every node nor register
meters, so an admission gate would have no facts to admit their orders on. Node-level clusters
(``p2pgrid.node.testing``) and simnet always run with it on. With it on, ``register_meters(nodes,
{account: export_w})`` registers a meter with that export capacity for each account, and ``fund``
gives every node credits: what their orders need to be admitted.

``open_zoned_cluster(kind, homes, grid_fees, data_dir)`` is the same across zones: node ``i``
lives in zone ``homes[i]``, trades with the zones of ``grid_fees[homes[i]]`` (keeping their books
from read-only gossip) and every node shares one ledger domain (``LEDGER_DOMAIN``) and committee.

``AgentTestHost`` is what the agent strategy's services see of a node, over a cluster node.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from p2pgrid.clock import ManualClock
from p2pgrid.identity import NodeKey
from p2pgrid.node.status import NodeStats
from p2pgrid.ledger.chain import LedgerRules
from p2pgrid.ledger.committee import Committee
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import EntryInDoubt, LedgerConfig, LedgerService, ledger_topic, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.net.orders import OrderGossip, open_neighbour_gossip, open_order_gossip, orders_topic, pools_topic
from p2pgrid.net.connections import DiscoveryConfig
from p2pgrid.net.testing import bootstrap_links, has_mesh, open_cluster, wait_for_mesh, wait_until
from p2pgrid.net.transport import Transport
from p2pgrid.net.validation import OrderRules
from p2pgrid.pools.client import PoolClient, PoolClientConfig, open_pool_client
from p2pgrid.pools.host import PoolHost, PoolHostConfig, open_pool_host
from p2pgrid.settlement.entries import SettlementLedgerRules
from p2pgrid.settlement.rules import ImbalancePrices
from p2pgrid.settlement.service import register_meters as certify_registrations
from p2pgrid.trading.admission import AdmissionGate, LedgerFacts
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.trading.service import TradingConfig, TradingService, open_trading_service
from p2pgrid.units import SlotRules

@dataclass
class AgentTestHost:
    """The parts of a ``Node`` the agent strategy's services use, over a cluster node's trading
    service (tests drive the agent's ticks and a ``ManualClock`` themselves)."""

    config: Any
    key: NodeKey
    clock: ManualClock
    trading: TradingService
    stats: NodeStats = field(default_factory=NodeStats)
    telemetry: Any = None
    agent: Any = None

    @property
    def zone(self) -> str:
        return self.config.zone.id


# Gossip is best effort (py-libp2p drops messages under load); the ledger's anti-entropy makes it
# complete. Clusters here pull from a peer every 2 s, so a lost batch heals well within a test's waits.
SYNC_INTERVAL_S = 2.0
ZONE = "testzone"
LEDGER_DOMAIN = "testarea"


@dataclass
class TradingNode:
    key: NodeKey
    transport: Transport
    ledger: LedgerService
    gossip: OrderGossip
    trading: TradingService
    _services: AsyncExitStack
    pools: PoolClient | None = None
    pool_host: PoolHost | None = None
    neighbour_gossip: list[OrderGossip] = field(default_factory=list)

    @property
    def zone(self) -> str:
        return self.trading.config.zone

    @property
    def account(self) -> bytes:
        return self.key.public_key

    async def close(self) -> None:
        """Stop this node's services (its transport stays up), as a crash-free restart would.
        Only the most recently opened node can be closed early (trio cancel scopes nest)."""
        await self._services.aclose()


@asynccontextmanager
async def open_trading_node(transport: Transport, key: NodeKey, data_dir: Path, ledger_config: LedgerConfig,
                            trading_config: TradingConfig, clock: Callable[[], int], *,
                            admission: bool = False) -> AsyncIterator[TradingNode]:
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(data_dir / f"{key.public_key.hex()[:12]}.sqlite"))
        ledger = await stack.enter_async_context(open_ledger_service(key, ledger_config, store, transport, clock))
        gate = (AdmissionGate(LedgerFacts(lambda: ledger.state, lambda: ledger.rules), trading_config.slot_rules)
                if admission else None)
        gossip = await stack.enter_async_context(open_order_gossip(
            transport, OrderRules(trading_config.zone, trading_config.slot_rules), clock, tick_s=0.05,
            admission=gate))
        neighbours = await stack.enter_async_context(open_neighbour_gossip(
            transport, trading_config.grid_fees, trading_config.slot_rules, clock, tick_s=0.05, admission=gate))
        journal = OwnOrderJournal(data_dir / f"{key.public_key.hex()[:12]}.orders")
        trading = await stack.enter_async_context(open_trading_service(
            key, trading_config, transport, ledger, gossip, clock, journal, neighbours))
        yield TradingNode(key, transport, ledger, gossip, trading, stack, neighbour_gossip=neighbours)


@asynccontextmanager
async def open_trading_cluster(kind: str, n: int, data_dir: Path, *, n_validators: int = 4,
                               slot_rules: SlotRules | None = None, clock: Callable[[], int] | None = None,
                               credit_limit_uc: int = 0, pool_host: int | None = None,
                               pool_config: PoolHostConfig | None = None,
                               pool_client_config: PoolClientConfig | None = None,
                               settlement_prices: ImbalancePrices | None = None,
                               admission: bool = False,
                               bootstrap_peers: int | None = None,
                               take_timeout_s: float | None = None) -> AsyncIterator[list[TradingNode]]:
    """With ``settlement_prices`` the zone's rules carry its settlement terms (slot calendar and
    imbalance prices), so ``settle`` entries can be certified. ``admission``: see the module
    docstring.

    By default every node is connected to every other. With ``bootstrap_peers=k`` (libp2p only)
    each node dials only the first ``k`` nodes, and the validators (which know each other's
    addresses, as a committee's members do) dial each other; the validators serve rendezvous
    points, and the nodes find the rest of the zone there and dial makers and validators on demand.
    ``take_timeout_s`` replaces the trading service's (for clusters that must pass on a busy machine)."""
    import time

    clock = clock or (lambda: time.time_ns() // 1_000_000)
    slot_rules = slot_rules or SlotRules()
    if bootstrap_peers is None:
        # Takes and votes are direct streams: every node of a (small) community is connected to all.
        links, discovery = [(i, j) for i in range(n) for j in range(i)], None
    elif kind != "libp2p":
        raise ValueError("bootstrap_peers needs libp2p transports: only they discover peers")
    else:
        committee_links = {(i, j) for i in range(n_validators) for j in range(i)}
        links = sorted(set(bootstrap_links(n, bootstrap_peers)) | committee_links)

        def discovery(i: int) -> DiscoveryConfig:
            return DiscoveryConfig(serve_rendezvous=i < n_validators)
    async with open_cluster(kind, n, links=links, discovery=discovery) as transports:
        keys = [_key_of(t, i) for i, t in enumerate(transports)]
        rules: LedgerRules = LedgerRules(ZONE, transports[0].local_peer, credit_limit_uc)
        if settlement_prices is not None:
            rules = SettlementLedgerRules(ZONE, transports[0].local_peer, credit_limit_uc, slots=slot_rules,
                                          prices=settlement_prices)
        committee = Committee(ZONE, 0, tuple(t.local_peer for t in transports[:n_validators]))
        ledger_config = LedgerConfig(rules, committee, vote_timeout_s=10.0, sync_interval_s=SYNC_INTERVAL_S)
        trading_config = TradingConfig(ZONE, slot_rules, tick_s=0.1)
        if take_timeout_s is not None:
            trading_config = replace(trading_config, take_timeout_s=take_timeout_s)
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(
                open_trading_node(t, k, data_dir, ledger_config, trading_config, clock, admission=admission))
                for t, k in zip(transports, keys)]
            if pool_host is not None and pool_config is not None:
                await _start_pools(stack, nodes, pool_host, pool_config, pool_client_config, slot_rules, clock)
            topics = [orders_topic(ZONE), ledger_topic(ZONE)] + ([pools_topic(ZONE)] if pool_host is not None else [])
            if bootstrap_peers is None:
                await wait_for_meshes(transports, topics)
            else:
                await wait_for_sparse_meshes(transports, topics)
            yield nodes


async def wait_for_sparse_meshes(transports: Sequence[Transport], topics: Sequence[str],
                                timeout_s: float = 90.0) -> None:
    """Until, on every topic, every node of a discovered (not fully connected) cluster has a gossip
    mesh and the meshes join all nodes into one graph: what gossip needs to reach everyone."""
    def ready(topic: str) -> bool:
        index = {t.local_peer: i for i, t in enumerate(transports)}
        links: dict[int, set[int]] = {i: set() for i in range(len(transports))}
        for i, transport in enumerate(transports):
            for peer in getattr(transport, "mesh_peers")(topic):
                if peer in index:
                    links[i].add(index[peer])
                    links[index[peer]].add(i)
        if not all(links.values()):
            return False
        reached, frontier = {0}, [0]
        while frontier:
            for j in links[frontier.pop()] - reached:
                reached.add(j)
                frontier.append(j)
        return len(reached) == len(transports)

    try:
        with trio.fail_after(timeout_s):
            await wait_until(lambda: all(ready(topic) for topic in topics))
    except trio.TooSlowError:
        state = {topic: {i: (len(t.peers()), len(t.topic_peers(topic)), len(getattr(t, "mesh_peers")(topic)))
                         for i, t in enumerate(transports)} for topic in topics if not ready(topic)}
        raise AssertionError(f"no joined gossip mesh after {timeout_s:g} s (topic: node: (peers, topic peers, "
                             f"mesh peers)): {state}") from None


async def wait_for_meshes(transports: Sequence[Transport], topics: Sequence[str], timeout_s: float = 30.0) -> None:
    """Until every transport has a gossip mesh on every topic; on timeout, say which do not."""
    try:
        with trio.fail_after(timeout_s):
            for topic in topics:
                await wait_for_mesh(transports, topic)
    except trio.TooSlowError:
        missing = {topic: [i for i, t in enumerate(transports) if not has_mesh(t, topic)] for topic in topics}
        raise AssertionError(f"no gossip mesh after {timeout_s:g} s (topic: nodes without one): {missing}") from None


@asynccontextmanager
async def open_zoned_cluster(kind: str, homes: Sequence[str], grid_fees: Mapping[str, Mapping[str, int]],
                             data_dir: Path, *, n_validators: int = 4, slot_rules: SlotRules | None = None,
                             clock: Callable[[], int] | None = None,
                             settlement_prices: ImbalancePrices | None = None) -> AsyncIterator[list[TradingNode]]:
    """Nodes in several zones of one ledger domain: node ``i`` in zone ``homes[i]`` with the fee
    table ``grid_fees.get(homes[i], {})``. Node 0 is the operator (gateway); the first
    ``n_validators`` nodes, whatever their zones, are the domain's committee."""
    import time

    clock = clock or (lambda: time.time_ns() // 1_000_000)
    slot_rules = slot_rules or SlotRules()
    n = len(homes)
    full_mesh = [(i, j) for i in range(n) for j in range(i)]
    async with open_cluster(kind, n, links=full_mesh) as transports:
        keys = [_key_of(t, i) for i, t in enumerate(transports)]
        rules: LedgerRules = LedgerRules(LEDGER_DOMAIN, transports[0].local_peer, 0)
        if settlement_prices is not None:
            rules = SettlementLedgerRules(LEDGER_DOMAIN, transports[0].local_peer, 0, slots=slot_rules,
                                          prices=settlement_prices)
        committee = Committee(LEDGER_DOMAIN, 0, tuple(t.local_peer for t in transports[:n_validators]))
        ledger_config = LedgerConfig(rules, committee, vote_timeout_s=10.0, sync_interval_s=SYNC_INTERVAL_S)
        async with AsyncExitStack() as stack:
            nodes = []
            for transport, key, home in zip(transports, keys, homes):
                config = TradingConfig(home, slot_rules, tick_s=0.1, grid_fees=dict(grid_fees.get(home, {})))
                nodes.append(await stack.enter_async_context(
                    open_trading_node(transport, key, data_dir, ledger_config, config, clock)))
            with trio.fail_after(60):
                await wait_for_mesh(transports, ledger_topic(LEDGER_DOMAIN))
                for zone in sorted(set(homes) | {z for fees in grid_fees.values() for z in fees}):
                    await wait_for_subscribers([node for node in nodes if node.trading.locality.trades_with(zone)],
                                               orders_topic(zone))
            yield nodes


async def wait_for_subscribers(nodes: Sequence[TradingNode], topic: str) -> None:
    """Wait (inside ``trio.fail_after``) until each of ``nodes`` sees all the others on ``topic``."""
    def ready(node: TradingNode) -> bool:
        others = {other.account for other in nodes if other is not node}
        mesh = getattr(node.transport, "mesh_peers", None)
        if not others <= node.transport.topic_peers(topic):
            return False
        return mesh is None or len(mesh(topic)) >= min(len(others), 4)

    await wait_until(lambda: all(ready(node) for node in nodes))


async def _start_pools(stack: AsyncExitStack, nodes: list[TradingNode], host_index: int, config: PoolHostConfig,
                       client_config: PoolClientConfig | None, slot_rules: SlotRules,
                       clock: Callable[[], int]) -> None:
    for node in nodes:
        node.pools = await stack.enter_async_context(open_pool_client(
            node.key, ZONE, slot_rules, node.transport, node.ledger, clock, client_config))
        node.trading.pool_client = node.pools  # type: ignore[attr-defined]
    host = nodes[host_index]
    host.pool_host = await stack.enter_async_context(open_pool_host(
        host.key, ZONE, slot_rules, host.transport, host.ledger, clock, config))


def _key_of(transport: Transport, index: int) -> NodeKey:
    from p2pgrid.net.testing import cluster_keys
    key = cluster_keys(index + 1)[index]
    if key.public_key != transport.local_peer:
        raise RuntimeError("cluster keys out of step with open_cluster")
    return key


async def register_meters(nodes: list[TradingNode], export_w: Mapping[bytes, int]) -> dict[bytes, NodeKey]:
    """The operator (node 0, the gateway) registers a new meter key for each account of
    ``export_w``, with that export capacity (W); returns the meter keys by account."""
    operator = nodes[0]
    meters = {account: NodeKey.generate() for account in export_w}
    await certify_registrations(operator.ledger, [(a, k.public_key) for a, k in meters.items()],
                                operator.trading.clock(), {meters[a].public_key: w for a, w in export_w.items()})
    height = operator.ledger.state.height
    with trio.fail_after(30):
        for node in nodes:
            await node.ledger.wait_for_height(height)
    return meters


async def fund(nodes: list[TradingNode], amount_uc: int, timeout_s: float = 60.0) -> None:
    """The operator (node 0, the gateway) mints ``amount_uc`` to every other node, and waits
    (at most ``timeout_s``) until every node holds those entries. A mint whose votes did not come
    in time (a busy machine) is not lost: the ledger proposes an entry in doubt again by itself."""
    operator = nodes[0]
    entries = [operator.ledger.next_entry("mint", Mint(to=node.account, amount=amount_uc)) for node in nodes[1:]]

    async def submit(entry) -> None:  # type: ignore[no-untyped-def]
        try:
            await operator.ledger.submit(entry)
        except EntryInDoubt:
            pass    # waited for below

    async with trio.open_nursery() as nursery:
        for entry in entries:
            nursery.start_soon(submit, entry)
    with trio.fail_after(timeout_s):
        await wait_until(lambda: all(operator.ledger.state.balance(n.account) >= amount_uc for n in nodes[1:]))
        height = operator.ledger.state.height
        for node in nodes:
            await node.ledger.wait_for_height(height)
