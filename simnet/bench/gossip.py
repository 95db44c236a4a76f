"""Gossip benchmark: p2pgrid's batched order gossip vs raw py-libp2p gossipsub, same run, same machine.

    python -m simnet.bench gossip --nodes 10            (and --nodes 30)

What runs. ``--nodes`` real libp2p hosts on 127.0.0.1, spread over ``--procs`` worker processes
(one process cannot carry many hosts: py-libp2p costs ~6 ms CPU per delivery). Each node dials
up to 3 random earlier nodes (seeded), so the graph is connected and sparse, as in the field.
Three phases, each with fresh processes so the library's process-wide settings never leak:

``raw``       py-libp2p's default ``GossipSub`` (only the heartbeat shortened from 120 s to 1 s so a
              mesh forms), one signed order per gossip message, ``--msgs-per-s`` messages per
              second across the network.
``p2pgrid``   p2pgrid's transport (``gossip_config``) and ``OrderGossip``: the same number of gossip
              messages per second, each an ``OrderBatch`` of ``--batch`` signed orders, validated
              by the full order validator (signature, zone, slot, replay).
``raw-burst`` (``--burst``) raw py-libp2p at p2pgrid's *order* rate, i.e. one message per order
              for ``--burst-seconds``: what batching saves.

Every node publishes on its own schedule (staggered phases). Latency is publish → received at
each other node (wall clock; all processes are on one machine), p50 and p99 over all deliveries.
Delivery ratio = distinct orders received by other nodes / (orders published × (nodes − 1)).
Own deliveries are not counted. Also printed: Ed25519 sign and verify rates on this machine, and
each phase's connections per node (min/mean/max) when publishing ended.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass

MARK = "@@"
LISTEN = "/ip4/127.0.0.1/tcp/0"
ZONE = "bench"
MESH_TIMEOUT_S = 20
DRAIN_S = 10
QUIET_S = 2


# --- the coordinator ------------------------------------------------------------------------

@dataclass
class PhaseResult:
    mode: str
    nodes: int
    procs: int
    seconds: float
    msgs_per_s: float
    orders_per_msg: int
    published_orders: int
    expected: int
    delivered: int
    latencies_ms: list[float]
    cpu_s: float
    wall_s: float
    drop_warnings: int
    connections: list[int]     # each node's connection count when publishing ended

    @property
    def ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def orders_per_s(self) -> float:
        return self.published_orders / self.seconds


def pooled(results: list[PhaseResult]) -> PhaseResult:
    """Several runs of one phase as one: counts and times added, latencies pooled."""
    first = results[0]
    return PhaseResult(first.mode, first.nodes, first.procs, sum(r.seconds for r in results), first.msgs_per_s,
                       first.orders_per_msg, sum(r.published_orders for r in results),
                       sum(r.expected for r in results), sum(r.delivered for r in results),
                       [x for r in results for x in r.latencies_ms], sum(r.cpu_s for r in results),
                       sum(r.wall_s for r in results), sum(r.drop_warnings for r in results),
                       [c for r in results for c in r.connections])


def links_for(nodes: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    links = []
    for i in range(1, nodes):
        for j in rng.sample(range(i), min(i, 3)):
            links.append((i, j))
    return links


def run_phase(mode: str, args: argparse.Namespace, msgs_per_s: float, orders_per_msg: int, seconds: float) -> PhaseResult:
    nodes, procs = args.nodes, max(1, min(args.procs, args.nodes))
    assignment = [list(range(p, nodes, procs)) for p in range(procs)]
    log = tempfile.NamedTemporaryFile(prefix=f"p2pgrid-bench-gossip-{mode}-", suffix=".log", delete=False)
    started = time.monotonic()
    workers = [subprocess.Popen([sys.executable, "-m", "simnet.bench.gossip", "--worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
               for _ in assignment]
    try:
        config = dict(mode=mode, nodes=nodes, msgs_per_s=msgs_per_s, orders_per_msg=orders_per_msg,
                      seconds=seconds, seed=args.seed)
        for worker, indices in zip(workers, assignment):
            _send(worker, dict(config, indices=indices))
        addrs: dict[int, str] = {}
        for worker in workers:
            addrs.update({int(k): v for k, v in _receive(worker)["addrs"].items()})
        links = links_for(nodes, args.seed)
        for worker in workers:
            _send(worker, {"addrs": addrs, "links": links})
        unready = sum(_receive(worker)["unready"] for worker in workers)  # connected, subscribed, mesh formed
        if unready:
            print(f"  ({mode}: {unready} nodes had no full mesh after {MESH_TIMEOUT_S} s; publishing anyway)")
        start_ms = int(time.time() * 1000) + 1500
        for worker in workers:
            _send(worker, {"start_ms": start_ms})
        results = [_receive(worker) for worker in workers]
    finally:
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()
    if args.timeline:
        for number, r in enumerate(results):
            print(f"    worker {number} by second of publishing: (deliveries, p50 ms, max ms) {r['timeline']}")
    published = sum(r["published"] for r in results)
    delivered = sum(r["delivered"] for r in results)
    latencies = [x for r in results for x in r["latencies_ms"]]
    os.unlink(log.name)
    return PhaseResult(mode, nodes, procs, seconds, msgs_per_s, orders_per_msg, published, published * (nodes - 1),
                       delivered, latencies, sum(r["cpu_s"] for r in results), time.monotonic() - started,
                       sum(r["drop_warnings"] for r in results), [c for r in results for c in r["connections"]])


def _send(worker: subprocess.Popen, message: dict) -> None:
    assert worker.stdin is not None
    worker.stdin.write(json.dumps(message) + "\n")
    worker.stdin.flush()


def _receive(worker: subprocess.Popen) -> dict:
    assert worker.stdout is not None
    for line in worker.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"benchmark worker exited with code {worker.wait()} (see its log under {tempfile.gettempdir()})")


def ed25519_rates(seconds: float = 1.0) -> tuple[float, float]:
    from nacl.signing import SigningKey

    key = SigningKey(bytes(32))
    message = bytes(200)
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        key.sign(message)
        count += 1
    sign_rate = count / seconds
    signed = key.sign(message)
    verify_key = key.verify_key
    count, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        verify_key.verify(signed)
        count += 1
    return sign_rate, count / seconds


def report(result: PhaseResult) -> None:
    print(f"  {result.mode:<10} msgs/s {result.msgs_per_s:6.1f}  orders/msg {result.orders_per_msg:3d}  "
          f"orders/s {result.orders_per_s:7.1f}  delivery {100 * result.ratio:6.2f}% "
          f"({result.delivered}/{result.expected})  latency p50 {result.percentile(0.5):7.1f} ms  "
          f"p99 {result.percentile(0.99):7.1f} ms  cpu {result.cpu_s:5.1f} s  wall {result.wall_s:5.1f} s  "
          f"library drop warnings {result.drop_warnings}  connections per node "
          f"{min(result.connections, default=0)}/{sum(result.connections) / max(1, len(result.connections)):.1f}/"
          f"{max(result.connections, default=0)} (min/mean/max)")


def measure(nodes: int, procs: int, seconds: float, rounds: int, batch: int, seed: int) -> dict[str, float]:
    """Raw gossipsub and p2pgrid phases, alternating for ``rounds`` (pooled), at the default
    message load for ``nodes``: the figures and the p99 ratio p2pgrid / raw."""
    args = argparse.Namespace(nodes=nodes, procs=procs, seed=seed, timeline=False)
    msgs_per_s = max(2.0, 100.0 / nodes)
    plan = [("raw", 1), ("p2pgrid", batch)]
    runs: dict[str, list[PhaseResult]] = {"raw": [], "p2pgrid": []}
    for round_number in range(rounds):
        for phase, orders_per_msg in (plan if round_number % 2 == 0 else plan[::-1]):
            runs[phase].append(run_phase(phase, args, msgs_per_s, orders_per_msg, seconds))
    raw, ours = pooled(runs["raw"]), pooled(runs["p2pgrid"])
    return {"nodes": nodes, "msgs_per_s": msgs_per_s, "raw_p50_ms": raw.percentile(0.5),
            "raw_p99_ms": raw.percentile(0.99), "raw_delivery": raw.ratio, "p2pgrid_p50_ms": ours.percentile(0.5),
            "p2pgrid_p99_ms": ours.percentile(0.99), "p2pgrid_delivery": ours.ratio,
            "p2pgrid_orders_per_s": ours.orders_per_s, "raw_orders_per_s": raw.orders_per_s,
            "p99_ratio": ours.percentile(0.99) / raw.percentile(0.99) if raw.latencies_ms else float("nan")}


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        return worker_main()
    parser = argparse.ArgumentParser(prog="python -m simnet.bench gossip", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--procs", type=int, default=2, help="worker processes sharing the nodes (default 2)")
    parser.add_argument("--seconds", type=float, default=6.0, help="publishing time per phase and round")
    parser.add_argument("--rounds", type=int, default=2, help="raw and p2pgrid phases alternate this many times")
    parser.add_argument("--msgs-per-s", type=float, default=None,
                        help="gossip messages per second across the network (default: 100 / nodes, at least 2)")
    parser.add_argument("--batch", type=int, default=25, help="orders per p2pgrid batch (default 25)")
    parser.add_argument("--phases", default="raw,p2pgrid,raw-burst",
                        help="comma-separated phases to run (default raw,p2pgrid,raw-burst)")
    parser.add_argument("--burst-seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeline", action="store_true", help="print latency per second of each phase")
    args = parser.parse_args(argv)
    msgs_per_s = args.msgs_per_s if args.msgs_per_s is not None else max(2.0, 100.0 / args.nodes)

    sign_rate, verify_rate = ed25519_rates()
    print(f"gossip benchmark: {args.nodes} nodes in {args.procs} processes on 127.0.0.1, "
          f"{os.cpu_count()} cores; graph: each node dials up to 3 earlier nodes")
    print(f"  ed25519    sign {sign_rate:8.0f}/s  verify {verify_rate:8.0f}/s  (one core, PyNaCl)")
    phases = args.phases.split(",")
    print(f"  load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other processes share these cores)")
    plan = [("raw", msgs_per_s, 1, args.seconds), ("p2pgrid", msgs_per_s, args.batch, args.seconds)]
    runs: dict[str, list[PhaseResult]] = {"raw": [], "p2pgrid": []}
    for round_number in range(args.rounds):
        # Alternate the order each round, so drifting background load hits both alike.
        for phase, rate, batch, seconds in (plan if round_number % 2 == 0 else plan[::-1]):
            if phase in phases:
                runs[phase].append(run_phase(phase, args, rate, batch, seconds))
                report(runs[phase][-1])
    if "raw-burst" in phases:
        report(run_phase("raw-burst", args, msgs_per_s * args.batch, 1, args.burst_seconds))
    if not runs["raw"] or not runs["p2pgrid"]:
        return 0
    raw, ours = pooled(runs["raw"]), pooled(runs["p2pgrid"])
    print(f"  pooled over {args.rounds} rounds:")
    report(raw)
    report(ours)
    ratio = ours.orders_per_s / raw.orders_per_s if raw.orders_per_s else float("nan")
    p99_ratio = ours.percentile(0.99) / raw.percentile(0.99) if raw.latencies_ms else float("nan")
    print(f"  => p2pgrid carries {ratio:.0f}x the orders/s of raw gossipsub at the same message load; "
          f"delivery {100 * ours.ratio:.2f}% vs {100 * raw.ratio:.2f}%; p99 latency ratio p2pgrid/raw {p99_ratio:.2f}")
    return 0


# --- a worker process -----------------------------------------------------------------------

def worker_main() -> int:
    import trio

    config = json.loads(sys.stdin.readline())
    drops = _DropCounter()
    import libp2p  # noqa: F401  (configures its logger on import; we only add a counter to it)

    logging.getLogger("libp2p").addHandler(drops)
    _count_queue_drops(drops)
    result = trio.run(_worker, config)
    result["drop_warnings"] = drops.count
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    print(MARK + json.dumps(result), flush=True)
    return 0


class _CachedSigner:
    """A NodeKey's signing half kept expanded (NodeKey re-derives it from the seed on every call)."""

    def __init__(self, key) -> None:  # type: ignore[no-untyped-def]
        from nacl.signing import SigningKey

        self._signing_key = SigningKey(key.seed)
        self.public_key = key.public_key

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature


class _DropCounter(logging.Handler):
    """Counts py-libp2p's warnings about messages it dropped (rate limit, full queue or channel)."""

    WORDS = ("fail to deliver", "rate limit exceeded", "queue_full", "dropping", "dropped")

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if any(word in record.getMessage().lower() for word in self.WORDS):
            self.count += 1


def _count_queue_drops(counter: _DropCounter) -> None:
    """py-libp2p logs a full outbound queue only at debug level: count those drops directly."""
    from libp2p.pubsub.gossipsub import GossipSub

    original = GossipSub._handle_dropped_rpc

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        counter.count += 1
        return original(self, *args, **kwargs)

    GossipSub._handle_dropped_rpc = counted  # type: ignore[method-assign]


async def _read_line() -> dict:
    import trio

    line = await trio.to_thread.run_sync(sys.stdin.readline)
    if not line:
        raise SystemExit("benchmark coordinator went away")
    return json.loads(line)


async def _worker(config: dict) -> dict:
    import trio

    from p2pgrid.identity import NodeKey
    from p2pgrid.net.libp2p_host import open_libp2p_transport
    from p2pgrid.net.orders import open_order_gossip, orders_topic, wall_clock_ms
    from p2pgrid.net.testing import has_mesh, make_order
    from p2pgrid.net.transport import accept_all
    from p2pgrid.net.validation import OrderRules
    from p2pgrid.units import SlotRules
    from p2pgrid.wire import decode_signed, sign

    connections: list[int] = []      # each node's connection count, taken when publishing has ended
    mode, indices, nodes = config["mode"], config["indices"], config["nodes"]
    rules = OrderRules(zone=ZONE, slot_rules=SlotRules())
    topic = orders_topic(ZONE)
    node_keys = {i: NodeKey(i.to_bytes(4, "big") + bytes(28)) for i in indices}
    keys = {i: _CachedSigner(key) for i, key in node_keys.items()}
    public_keys = {i: key.public_key for i, key in keys.items()}
    published = 0
    delivered = 0
    latencies: list[float] = []
    seen: dict[int, set[tuple[bytes, bytes]]] = {i: set() for i in indices}
    last_delivery_ms = [0]
    start_at = [0]
    by_second: dict[int, list[int]] = {}

    def note(receiver: int, signer: bytes, order_id: bytes, created_ms: int, now_ms: int) -> None:
        nonlocal delivered
        if signer == public_keys[receiver] or (signer, order_id) in seen[receiver]:
            return
        seen[receiver].add((signer, order_id))
        delivered += 1
        last_delivery_ms[0] = now_ms
        latencies.append(now_ms - created_ms)
        by_second.setdefault((created_ms - start_at[0]) // 1000, []).append(now_ms - created_ms)

    async with AsyncExitStack() as stack:
        transports = {i: await stack.enter_async_context(
            open_libp2p_transport(node_keys[i], [LISTEN], raw_router=mode != "p2pgrid")) for i in indices}
        print(MARK + json.dumps({"addrs": {i: t.listen_addrs[0] for i, t in transports.items()}}), flush=True)
        peers = await _read_line()
        addrs = {int(k): v for k, v in peers["addrs"].items()}
        services = {}
        subscriptions = {}
        for i, transport in transports.items():
            if mode == "p2pgrid":
                services[i] = await stack.enter_async_context(open_order_gossip(transport, rules, tick_s=3600))
            else:
                subscriptions[i] = await transport.subscribe(topic, accept_all)
        async with trio.open_nursery() as nursery:  # dialling costs ~0.25 s each: do it all at once
            for dialer, listener in peers["links"]:
                if dialer in transports:
                    nursery.start_soon(transports[dialer].connect, addrs[listener])
        with trio.move_on_after(MESH_TIMEOUT_S):
            while not all(has_mesh(t, topic) for t in transports.values()):
                await trio.sleep(0.1)
        unready = sum(not has_mesh(t, topic) for t in transports.values())
        print(MARK + json.dumps({"ready": True, "unready": unready}), flush=True)
        start_ms = (await _read_line())["start_ms"]
        start_at[0] = start_ms

        interval_s = nodes / config["msgs_per_s"]
        end_ms = start_ms + int(config["seconds"] * 1000)

        async def publish_loop(i: int) -> None:
            nonlocal published
            number = 0
            next_ms = start_ms + int(interval_s * 1000 * i / nodes)
            while next_ms < end_ms:
                await trio.sleep(max(0.0, (next_ms - wall_clock_ms()) / 1000))
                now = wall_clock_ms()
                slot = rules.slot_rules.tradable_slots(now)[0]
                if mode == "p2pgrid":
                    for _ in range(config["orders_per_msg"]):
                        services[i].submit(sign(make_order(keys[i], rules, now, number, slot=slot), keys[i]))
                        number += 1
                    await services[i].flush()
                else:
                    order = make_order(keys[i], rules, now, number, slot=slot)
                    number += 1
                    await transports[i].publish(topic, sign(order, keys[i]).encoded)
                next_ms += int(interval_s * 1000)
            published += number

        async def receive_loop(i: int) -> None:
            if mode == "p2pgrid":
                async for delivery in services[i].deliveries:
                    now = wall_clock_ms()
                    for item in delivery.items:
                        note(i, item.signer, item.body.order_id, item.body.created_ms, now)
            else:
                async for message in subscriptions[i]:
                    now = wall_clock_ms()
                    signed = decode_signed(message.data)
                    note(i, signed.signer, signed.body.order_id, signed.body.created_ms, now)

        async with trio.open_nursery() as nursery:
            for i in indices:
                nursery.start_soon(receive_loop, i)
            async with trio.open_nursery() as publishers:
                for i in indices:
                    publishers.start_soon(publish_loop, i)
            # Drain: deliveries still in flight when publishing stops count, until QUIET_S pass
            # without one (or DRAIN_S in all).
            drain_until = wall_clock_ms() + DRAIN_S * 1000
            while wall_clock_ms() < drain_until and wall_clock_ms() - last_delivery_ms[0] < QUIET_S * 1000:
                await trio.sleep(0.25)
            connections.extend(len(t.peers()) for t in transports.values())
            nursery.cancel_scope.cancel()
    timeline = {second: (len(v), sorted(v)[len(v) // 2], max(v)) for second, v in sorted(by_second.items())}
    return {"published": published, "delivered": delivered, "latencies_ms": latencies, "timeline": timeline,
            "connections": connections}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
