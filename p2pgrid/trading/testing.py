"""A trading cluster for tests and simnet: N nodes, each with transport, ledger store, ledger
service, order gossip and trading service; node 0 is the zone operator, whose key is the gateway.

``open_trading_cluster(kind, n, data_dir, n_validators=4)`` yields ``TradingNode``s; the first
``n_validators`` nodes form the committee. ``fund(nodes, amount)`` mints credits to every node.
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
from p2pgrid.net.orders import OrderGossip, open_order_gossip, orders_topic
from p2pgrid.net.testing import open_cluster, wait_for_mesh
from p2pgrid.net.transport import Transport
from p2pgrid.net.validation import OrderRules
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

    @property
    def account(self) -> bytes:
        return self.key.public_key


@asynccontextmanager
async def open_trading_node(transport: Transport, key: NodeKey, data_dir: Path, ledger_config: LedgerConfig,
                            trading_config: TradingConfig, clock: Callable[[], int]) -> AsyncIterator[TradingNode]:
    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(data_dir / f"{key.public_key.hex()[:12]}.sqlite"))
        ledger = await stack.enter_async_context(open_ledger_service(key, ledger_config, store, transport, clock))
        gossip = await stack.enter_async_context(open_order_gossip(
            transport, OrderRules(trading_config.zone, trading_config.slot_rules), clock, tick_s=0.05))
        trading = await stack.enter_async_context(open_trading_service(
            key, trading_config, transport, ledger, gossip, clock))
        yield TradingNode(key, transport, ledger, gossip, trading)


@asynccontextmanager
async def open_trading_cluster(kind: str, n: int, data_dir: Path, *, n_validators: int = 4,
                               slot_rules: SlotRules | None = None, clock: Callable[[], int] | None = None,
                               credit_limit_uc: int = 0) -> AsyncIterator[list[TradingNode]]:
    import time

    clock = clock or (lambda: time.time_ns() // 1_000_000)
    slot_rules = slot_rules or SlotRules()
    # Takes and votes are direct streams: every node of a (small) community is connected to all.
    full_mesh = [(i, j) for i in range(n) for j in range(i)]
    async with open_cluster(kind, n, links=full_mesh) as transports:
        keys = [_key_of(t, i) for i, t in enumerate(transports)]
        rules = LedgerRules(ZONE, transports[0].local_peer, credit_limit_uc)
        committee = Committee(ZONE, 0, tuple(t.local_peer for t in transports[:n_validators]))
        ledger_config = LedgerConfig(rules, committee, vote_timeout_s=10.0)
        trading_config = TradingConfig(ZONE, slot_rules, tick_s=0.1)
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(
                open_trading_node(t, k, data_dir, ledger_config, trading_config, clock))
                for t, k in zip(transports, keys)]
            with trio.fail_after(30):
                await wait_for_mesh(transports, orders_topic(ZONE))
                await wait_for_mesh(transports, ledger_topic(ZONE))
            yield nodes


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
