"""A trading cluster for tests and simnet: N nodes, each with transport, ledger store, ledger
service, order gossip and trading service; node 0 is the zone operator, whose key is the gateway.

``open_trading_cluster(kind, n, data_dir, n_validators=4)`` yields ``TradingNode``s; the first
``n_validators`` nodes form the committee. ``fund(nodes, amount)`` mints credits to every node.
With ``pool_host=i`` (and a ``PoolHostConfig``) node ``i`` hosts AMM pools and every node trades
with pools through a ``PoolClient`` (``node.pools``, also ``node.trading.pool_client``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LedgerRules
from p2pgrid.ledger.committee import Committee
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import LedgerConfig, LedgerService, ledger_topic, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.net.orders import OrderGossip, open_order_gossip, orders_topic, pools_topic
from p2pgrid.net.testing import open_cluster, wait_for_mesh
from p2pgrid.net.transport import Transport
from p2pgrid.net.validation import OrderRules
from p2pgrid.settlement import ImbalancePrices
from p2pgrid.settlement_entries import SettlementLedgerRules
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.trading.pool_client import PoolClient, PoolClientConfig, open_pool_client
from p2pgrid.trading.pool_host import PoolHost, PoolHostConfig, open_pool_host
from p2pgrid.trading.service import TradingConfig, TradingService, open_trading_service
from p2pgrid.units import SlotRules

ZONE = "testzone"


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

    @property
    def account(self) -> bytes:
        return self.key.public_key

    async def close(self) -> None:
        """Stop this node's services (its transport stays up), as a crash-free restart would.
        Only the most recently opened node can be closed early (trio cancel scopes nest)."""
        await self._services.aclose()


@asynccontextmanager
async def open_trading_node(transport: Transport, key: NodeKey, data_dir: Path, ledger_config: LedgerConfig,
                            trading_config: TradingConfig, clock: Callable[[], int]) -> AsyncIterator[TradingNode]:
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(data_dir / f"{key.public_key.hex()[:12]}.sqlite"))
        ledger = await stack.enter_async_context(open_ledger_service(key, ledger_config, store, transport, clock))
        gossip = await stack.enter_async_context(open_order_gossip(
            transport, OrderRules(trading_config.zone, trading_config.slot_rules), clock, tick_s=0.05))
        journal = OwnOrderJournal(data_dir / f"{key.public_key.hex()[:12]}.orders")
        trading = await stack.enter_async_context(open_trading_service(
            key, trading_config, transport, ledger, gossip, clock, journal))
        yield TradingNode(key, transport, ledger, gossip, trading, stack)


@asynccontextmanager
async def open_trading_cluster(kind: str, n: int, data_dir: Path, *, n_validators: int = 4,
                               slot_rules: SlotRules | None = None, clock: Callable[[], int] | None = None,
                               credit_limit_uc: int = 0, pool_host: int | None = None,
                               pool_config: PoolHostConfig | None = None,
                               pool_client_config: PoolClientConfig | None = None,
                               settlement_prices: ImbalancePrices | None = None) -> AsyncIterator[list[TradingNode]]:
    """With ``settlement_prices`` the zone's rules carry its settlement terms (slot calendar and
    imbalance prices), so ``settle`` entries can be certified."""
    import time

    clock = clock or (lambda: time.time_ns() // 1_000_000)
    slot_rules = slot_rules or SlotRules()
    # Takes and votes are direct streams: every node of a (small) community is connected to all.
    full_mesh = [(i, j) for i in range(n) for j in range(i)]
    async with open_cluster(kind, n, links=full_mesh) as transports:
        keys = [_key_of(t, i) for i, t in enumerate(transports)]
        rules: LedgerRules = LedgerRules(ZONE, transports[0].local_peer, credit_limit_uc)
        if settlement_prices is not None:
            rules = SettlementLedgerRules(ZONE, transports[0].local_peer, credit_limit_uc, slots=slot_rules,
                                          prices=settlement_prices)
        committee = Committee(ZONE, 0, tuple(t.local_peer for t in transports[:n_validators]))
        ledger_config = LedgerConfig(rules, committee, vote_timeout_s=10.0)
        trading_config = TradingConfig(ZONE, slot_rules, tick_s=0.1)
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(
                open_trading_node(t, k, data_dir, ledger_config, trading_config, clock))
                for t, k in zip(transports, keys)]
            if pool_host is not None and pool_config is not None:
                await _start_pools(stack, nodes, pool_host, pool_config, pool_client_config, slot_rules, clock)
            with trio.fail_after(30):
                await wait_for_mesh(transports, orders_topic(ZONE))
                await wait_for_mesh(transports, ledger_topic(ZONE))
                if pool_host is not None:
                    await wait_for_mesh(transports, pools_topic(ZONE))
            yield nodes


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


async def fund(nodes: list[TradingNode], amount_uc: int) -> None:
    """The operator (node 0, the gateway) mints ``amount_uc`` to every other node."""
    operator = nodes[0]
    entries = [operator.ledger.next_entry("mint", Mint(to=node.account, amount=amount_uc)) for node in nodes[1:]]
    async with trio.open_nursery() as nursery:
        for entry in entries:
            nursery.start_soon(operator.ledger.submit, entry)
    height = operator.ledger.state.height
    with trio.fail_after(30):
        for node in nodes:
            await node.ledger.wait_for_height(height)
