"""A committee of ``LedgerService`` nodes for fault tests: memory transport, one clock stepped by
hand, and controls to partition, heal, kill and restart nodes (each keeps its store file, so a
restart is what a process restart would be). Shared by the ledger's and the kinds' fault tests.

    async with trio.open_nursery() as nursery:
        cluster = await open_fault_cluster(tmp_path, nursery, config, members={"alice": ALICE})
        cluster.partition("alice", ["v2", "v3"]); cluster.clock.now = ...; await cluster.heal()
        await cluster.members["alice"].kill(); await cluster.members["alice"].start()
        await cluster.converge()     # one state root everywhere, money conserved
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.service import EntryInDoubt, LedgerConfig, LedgerService, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.net.testing import wait_until

T0 = 1_700_000_000_000


class Clock:
    """Market time stepped by hand, shared by every node of a test."""

    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Member:
    """One node: its own store file and transport, which the test can kill and start again."""

    def __init__(self, cluster: Cluster, key, name: str) -> None:
        self.cluster, self.key, self.path = cluster, key, cluster.tmp / f"{name}.db"
        self.service: LedgerService | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self) -> LedgerService:
        started = trio.Event()
        self._stopped = trio.Event()
        self.cluster.nursery.start_soon(self._run, started)
        await started.wait()
        return self.service

    async def _run(self, started: trio.Event) -> None:
        try:
            with trio.CancelScope() as self._scope:
                async with AsyncExitStack() as stack:
                    store = await stack.enter_async_context(open_store(self.path))
                    transport = await stack.enter_async_context(
                        self.cluster.network.open_transport(self.key, connect_to=self.cluster.network.addresses))
                    self.transport = transport
                    self.service = await stack.enter_async_context(
                        open_ledger_service(self.key, self.cluster.config, store, transport, self.cluster.clock))
                    started.set()
                    await trio.sleep_forever()
        finally:
            self._stopped.set()

    async def kill(self) -> None:
        """Stop at once (the store keeps only what was committed, as after a process kill)."""
        self._scope.cancel()
        await self._stopped.wait()


class Cluster:
    def __init__(self, tmp: Path, nursery: trio.Nursery, config: LedgerConfig) -> None:
        self.tmp, self.nursery, self.config = tmp, nursery, config
        self.network = MemoryNetwork()
        self.clock = Clock()
        self.members: dict[str, Member] = {}

    async def add(self, name: str, key) -> LedgerService:
        self.members[name] = Member(self, key, name)
        return await self.members[name].start()

    def __getitem__(self, name: str) -> LedgerService:
        return self.members[name].service

    def partition(self, name: str, others: list[str]) -> None:
        for other in others:
            self.members[name].transport.disconnect(self.members[other].key.public_key)

    async def heal(self) -> None:
        for member in self.members.values():
            for addr in self.network.addresses:
                if addr not in member.transport.listen_addrs:
                    await member.transport.connect(addr)

    async def converge(self) -> None:
        """Every node ends with one state root, money conserved."""
        services = [m.service for m in self.members.values()]
        with trio.fail_after(60):
            await wait_until(lambda: len({state_root(s.state) for s in services}) == 1)
        if any(s.state.money_total() != 0 for s in services):
            raise AssertionError("money is not conserved")


async def open_fault_cluster(tmp: Path, nursery: trio.Nursery, fixture: LedgerFixture, config: LedgerConfig,
                             members: dict[str, Any]) -> Cluster:
    """The fixture's validators (``v0``…) and its gateway (``gateway``), then ``members`` (name →
    key), each a running ``LedgerService``."""
    cluster = Cluster(tmp, nursery, config)
    for i, key in enumerate(fixture.validators):
        await cluster.add(f"v{i}", key)
    await cluster.add("gateway", fixture.gateway)
    for name, key in members.items():
        await cluster.add(name, key)
    return cluster


async def submit(service: LedgerService, entry) -> None:
    """Submit and wait until certified: on a loaded machine a round may end undecided (the entry
    then stays in doubt and is offered again by the ledger itself)."""
    try:
        await service.submit(entry)
    except EntryInDoubt:
        await certified(service, entry.body.account, entry.body.seq)


async def submit_in_doubt(service: LedgerService, entry) -> None:
    """Submit an entry that cannot be decided now; it must stay in doubt, not be refused."""
    try:
        await service.submit(entry)
    except EntryInDoubt:
        pass
    else:
        raise AssertionError("the entry was certified, it should have stayed in doubt")
    if not service.is_in_doubt(entry):
        raise AssertionError("the entry is not in doubt")


async def certified(service: LedgerService, account: bytes, seq: int) -> None:
    with trio.fail_after(60):
        await wait_until(lambda: service.state.head(account).next_seq > seq)


