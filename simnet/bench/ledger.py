"""Ledger benchmark: ``python -m simnet.bench ledger [options]``.

Measures, in one process on this machine (all nodes share its cores):

1. the Ed25519 verify floor — ``wire.verify_signature`` per second on one core (the cost every
   certified entry pays at least once, at each validator);
2. certified entries/s with 4 validators and one proposer, over real libp2p on 127.0.0.1
   (``--transport memory`` for the in-process network): many concurrent ``submit`` calls,
   batched into vote requests of up to ``--max-batch`` entries;
3. end-to-end certification latency (submit → certificate stored, gossiped, confirmed by a
   quorum): p50 and p99, idle (one entry at a time), at a paced offered load (``--paced-rate``)
   and for the burst of (2) (there it is mostly time spent queued behind other batches);
4. sync from scratch: a fresh node pulls ``--sync-entries`` certified entries from a validator
   over ``/p2pgrid/sync/1`` (verify certificates once per batch, Merkle inclusion, store, apply).

Each rate is also printed as a fraction of the verify floor. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import trio

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.committee import assemble_certificate, make_vote
from p2pgrid.ledger.messages import Mint, entry_hash
from p2pgrid.ledger.service import LedgerConfig, LedgerService, open_ledger_service
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.net.memory import MemoryNetwork
from p2pgrid.wire import sign, signing_bytes, verify_signature

LOOPBACK = ("/ip4/127.0.0.1/tcp/0",)


def measure_verify_floor(seconds: float = 1.0) -> float:
    key = NodeKey(bytes(range(32)))
    message = signing_bytes("p2pgrid/entry/v1", key.public_key, [b"x" * 150])
    signature = key.sign(message)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            verify_signature(key.public_key, message, signature)
        count += 200
    return count / (time.perf_counter() - start)


class _Cluster:
    def __init__(self, kind: str, tmp: Path, config: LedgerConfig) -> None:
        self.kind, self.tmp, self.config = kind, tmp, config
        self.network = MemoryNetwork()
        self.nodes: list[LedgerService] = []

    @asynccontextmanager
    async def node(self, key: NodeKey, name: str) -> AsyncIterator[LedgerService]:
        async with AsyncExitStack() as stack:
            store = await stack.enter_async_context(open_store(self.tmp / f"{name}.db"))
            if self.kind == "libp2p":
                from p2pgrid.net.libp2p_host import open_libp2p_transport
                transport: Any = await stack.enter_async_context(open_libp2p_transport(key, LOOPBACK))
                for other in self.nodes:
                    await transport.connect(other.transport.listen_addrs[0])
            else:
                transport = await stack.enter_async_context(
                    self.network.open_transport(key, connect_to=self.network.addresses))
            service = await stack.enter_async_context(open_ledger_service(key, self.config, store, transport))
            self.nodes.append(service)
            try:
                yield service
            finally:
                self.nodes.remove(service)


async def certify_load(proposer: LedgerService, receiver: bytes, count: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one(i: int) -> None:
        entry = proposer.next_entry("mint", Mint(receiver, 1 + i))
        start = time.perf_counter()
        await proposer.submit(entry)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
    return time.perf_counter() - start, latencies


async def certify_one_at_a_time(proposer: LedgerService, receiver: bytes, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        entry = proposer.next_entry("mint", Mint(receiver, 1 + i))
        start = time.perf_counter()
        await proposer.submit(entry)
        latencies.append(time.perf_counter() - start)
    return latencies


async def certify_paced(proposer: LedgerService, receiver: bytes, rate: float, seconds: float) -> list[float]:
    """Submit at a steady ``rate`` per second for ``seconds``; latency of each submit."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        entry = proposer.next_entry("mint", Mint(receiver, 1 + i))
        start = time.perf_counter()
        await proposer.submit(entry)
        latencies.append(time.perf_counter() - start)

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        for i in range(int(rate * seconds)):
            await trio.sleep_until(start + i / rate)
            nursery.start_soon(one, i)
    return latencies


async def fill_store(path: Path, fx: LedgerFixture, count: int, batch: int) -> None:
    """A store holding ``count`` certified entries (gateway mints to 64 accounts), written directly."""
    from p2pgrid.ledger.service import _FastSigner
    from p2pgrid.ledger.chain import ChainHead, build_entry

    signer = _FastSigner(fx.gateway)
    voters = [_FastSigner(v) for v in fx.validators[:fx.committee.quorum]]
    receivers = [seeded_key(f"account-{i}").public_key for i in range(64)]
    head = ChainHead()
    async with open_store(path) as store:
        await store.save_zone(fx.rules, fx.committee)
        for first in range(0, count, batch):
            entries = []
            for i in range(first, min(count, first + batch)):
                signed = sign(build_entry(fx.rules, fx.gateway.public_key, head, "mint",
                                          Mint(receivers[i % len(receivers)], 1 + i), 0), signer)
                head = ChainHead(head.next_seq + 1, entry_hash(signed))
                entries.append(signed)
            hashes = [entry_hash(e) for e in entries]
            certificate = assemble_certificate(fx.committee, [make_vote(fx.committee, v, hashes) for v in voters])
            await store.add_certified([(certificate, hashes, entries)])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def measure(transport: str, *, entries: int, latency_samples: int, paced_rate: float, paced_s: float,
                  sync_entries: int, sync_chunk: int, max_batch: int) -> dict[str, float]:
    """Every figure of this benchmark (see the module docstring), rates also as fractions of the
    verify floor measured first in the same run."""
    floor = measure_verify_floor()
    fx = LedgerFixture(zone="bench")
    config = LedgerConfig(fx.rules, fx.committee, max_batch=max_batch, sync_interval_s=0,
                          vote_timeout_s=60.0, sync_max_entries=sync_chunk)
    figures: dict[str, float] = {"verify_floor_per_s": floor}
    with tempfile.TemporaryDirectory(prefix="p2pgrid-bench-ledger-") as tmp:
        cluster = _Cluster(transport, Path(tmp), config)
        async with AsyncExitStack() as stack:
            for i, key in enumerate(fx.validators):
                await stack.enter_async_context(cluster.node(key, f"validator-{i}"))
            proposer = await stack.enter_async_context(cluster.node(fx.gateway, "proposer"))
            receiver = fx.validators[0].public_key

            await certify_one_at_a_time(proposer, receiver, 20)    # warm up streams and caches
            idle = await certify_one_at_a_time(proposer, receiver, latency_samples)
            paced = await certify_paced(proposer, receiver, paced_rate, paced_s)
            elapsed, burst = await certify_load(proposer, receiver, entries)
        figures.update({
            "certified_entries_per_s": entries / elapsed, "certified_entries": entries,
            "certify_s": elapsed, "latency_idle_p50_ms": pct(idle, .5) * 1e3,
            "latency_idle_p99_ms": pct(idle, .99) * 1e3, "latency_paced_p50_ms": pct(paced, .5) * 1e3,
            "latency_paced_p99_ms": pct(paced, .99) * 1e3, "latency_burst_p50_ms": pct(burst, .5) * 1e3,
            "latency_burst_p99_ms": pct(burst, .99) * 1e3})

        sync_path = Path(tmp) / "source.db"
        start = time.perf_counter()
        await fill_store(sync_path, fx, sync_entries, max_batch)
        figures["sync_store_built_s"] = time.perf_counter() - start
        cluster = _Cluster(transport, Path(tmp), config)
        async with AsyncExitStack() as stack:
            source = await stack.enter_async_context(cluster.node(fx.validators[0], "source"))
            fresh = await stack.enter_async_context(cluster.node(seeded_key("fresh"), "fresh"))
            start = time.perf_counter()
            added = await fresh.sync_with(source.key.public_key)
            elapsed = time.perf_counter() - start
            figures.update({"synced_entries": added, "sync_entries_per_s": added / elapsed,
                            "sync_roots_equal": float(fresh.state_root() == source.state_root())})
    figures["certified_vs_verify_floor"] = figures["certified_entries_per_s"] / floor
    figures["sync_vs_verify_floor"] = figures["sync_entries_per_s"] / floor
    return figures


async def run(args: argparse.Namespace) -> None:
    f = await measure(args.transport, entries=args.entries, latency_samples=args.latency_samples,
                      paced_rate=args.paced_rate, paced_s=3.0, sync_entries=args.sync_entries,
                      sync_chunk=args.sync_chunk, max_batch=args.max_batch)
    print(f"Ed25519 verify floor (wire.verify_signature, 1 core): {f['verify_floor_per_s']:,.0f}/s")
    print(f"\n4 validators + 1 proposer over {args.transport} (one process, {args.max_batch}-entry batches)")
    print(f"  certified entries/s:      {f['certified_entries_per_s']:,.0f}  "
          f"({f['certified_vs_verify_floor']:.1%} of verify floor)  [{args.entries} entries in {f['certify_s']:.2f} s]")
    print(f"  latency idle   p50/p99:   {f['latency_idle_p50_ms']:.1f} / {f['latency_idle_p99_ms']:.1f} ms"
          f"  [{args.latency_samples} entries one at a time]")
    print(f"  latency paced  p50/p99:   {f['latency_paced_p50_ms']:.1f} / {f['latency_paced_p99_ms']:.1f} ms"
          f"  [offered {args.paced_rate:g} entries/s for 3 s]")
    print(f"  latency burst  p50/p99:   {f['latency_burst_p50_ms']:.1f} / {f['latency_burst_p99_ms']:.1f} ms"
          f"  [all {args.entries} submitted at once: mostly queueing]")
    print(f"\nsync from scratch: {args.sync_entries:,} certified entries "
          f"(store built in {f['sync_store_built_s']:.1f} s)")
    print(f"  synced {f['synced_entries']:,.0f} entries: {f['sync_entries_per_s']:,.0f} entries/s "
          f"({f['sync_vs_verify_floor']:.1%} of verify floor); state roots equal: {bool(f['sync_roots_equal'])}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("libp2p", "memory"), default="libp2p")
    parser.add_argument("--entries", type=int, default=5000, help="entries certified for the throughput figure")
    parser.add_argument("--latency-samples", type=int, default=100, help="entries certified one at a time")
    parser.add_argument("--paced-rate", type=float, default=500.0, help="offered entries/s for the paced latency")
    parser.add_argument("--sync-entries", type=int, default=100_000)
    parser.add_argument("--sync-chunk", type=int, default=4096, help="entries per sync reply")
    parser.add_argument("--max-batch", type=int, default=256)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)   # py-libp2p's own logging is noise here
    trio.run(run, args)
    return 0
