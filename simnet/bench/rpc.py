"""``python -m simnet.bench rpc``: requests/s and latency of the local RPC.

Targets (``--target``):

* ``fake`` (default) — the **fake node** (``p2pgrid.rpc.testing``, seeded book and pool) in a
  child process: the figures are the RPC stack's cost (h11 / trio-websocket / JSON / dispatch).
* ``cluster`` — a child process runs 4 **real nodes** (``p2pgrid.node.testing.open_node_cluster``:
  ledger, trading, in-memory transport) with RPC on node 1 and a seeded two-sided book (orders
  from node 3, arrived by gossip): the figures include the real ``LiveNodeApi`` (local books,
  router), with the cluster's own background work (gossip, ledger) sharing the child's core.
* ``--data-dir DIR`` — an already running node whose ``DIR/rpc.json`` names its RPC (e.g. one
  started by ``p2pgrid run`` with ``[rpc] enabled``); quotes its first tradable slot + 2. Its
  per-connection rate limit (500 calls/s) is *not* lifted, so rates above it are capped.

The client side runs in this process
with minimal clients (a raw keep-alive HTTP/1.1 client and trio-websocket), ``C`` connections
each sending one call at a time, for ``--seconds`` per case. The server's per-connection rate
limit (500 calls/s by default) is lifted for the run.

Cases: ``book_get`` and ``route_quote`` × HTTP keep-alive and WebSocket × each concurrency.
Printed per case: calls, calls/s, p50 and p99 latency (ms), and the WebSocket / HTTP ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio_websocket

from p2pgrid.rpc.testing import seeded_fake_node


def payloads(zone: str, slot: int) -> dict[str, bytes]:
    calls = {
        "book_get": {"zone": zone, "slot": slot, "depth": 10},
        "route_quote": {"zone": zone, "slot": slot, "side": "buy", "qty_wh": 3000, "limit_price": 300_000},
    }
    return {name: json.dumps({"jsonrpc": "2.0", "method": name, "params": params, "id": 1}).encode()
            for name, params in calls.items()}


async def http_worker(port: int, token: str, body: bytes, until: float, latencies: list[float]) -> None:
    request = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    buffer = b""
    async with stream:
        while time.perf_counter() < until:
            started = time.perf_counter()
            await stream.send_all(request)
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65536)
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(buffer) < length:
                buffer += await stream.receive_some(65536)
            body_in, buffer = buffer[:length], buffer[length:]
            if not head.startswith(b"HTTP/1.1 200") or b'"result"' not in body_in:
                raise RuntimeError(f"unexpected answer: {head[:40]!r} {body_in[:80]!r}")
            latencies.append(time.perf_counter() - started)


async def ws_worker(port: int, token: str, body: bytes, until: float, latencies: list[float]) -> None:
    async with trio_websocket.open_websocket_url(
            f"ws://127.0.0.1:{port}/ws", extra_headers=[(b"authorization", f"Bearer {token}".encode())]) as ws:
        text = body.decode()
        while time.perf_counter() < until:
            started = time.perf_counter()
            await ws.send_message(text)
            answer = await ws.get_message()
            if '"result"' not in answer:
                raise RuntimeError(f"unexpected answer: {answer[:80]!r}")
            latencies.append(time.perf_counter() - started)


async def run_case(worker, port: int, token: str, body: bytes, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker, port, token, body, until, latencies)
    return latencies


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def wait_for_file(path: Path, process: subprocess.Popen | None, what: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists() or not path.read_text():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            if process is not None:
                process.kill()
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def start_server(data_dir: Path) -> tuple[subprocess.Popen, int, str]:
    port_file = data_dir / "port"
    process = subprocess.Popen([sys.executable, "-m", "p2pgrid.rpc.testing", "--data-dir", str(data_dir),
                                "--port-file", str(port_file),
                                "--rate-per-s", "1000000"], stdout=subprocess.DEVNULL)
    wait_for_file(port_file, process, "the fake-node RPC server")
    return process, int(port_file.read_text()), (data_dir / "rpc.token").read_text().strip()


BOOK_LEVELS = 5


async def serve_cluster(data_dir: Path) -> None:
    """The child of ``--target cluster``: 4 real nodes, RPC on node 1, a seeded book; writes
    ``ready.json`` (zone, slot) once everything is up, then runs until killed."""
    from p2pgrid.node.testing import open_node_cluster
    from p2pgrid.rpc.server import RpcLimits
    from p2pgrid.wire import Side

    limits = RpcLimits(rate_per_s=1_000_000, burst=1_000_000)
    async with open_node_cluster(data_dir, 4, rpc_nodes=(1,), rpc_limits=limits, funds_uc=10**9) as nodes:
        seeder, served = nodes[3].trading, nodes[1]
        if seeder is None or served.trading is None:
            raise RuntimeError("the cluster nodes run no trading service")
        slot = served.config.zone.slot_rules.tradable_slots(served.clock.now_ms())[2]
        for i in range(BOOK_LEVELS):
            seeder.place_order(Side.BUY, 1000 + 100 * i, 240_000 - 2_000 * i, slot)
            seeder.place_order(Side.SELL, 1000 + 100 * i, 260_000 + 2_000 * i, slot)
        with trio.fail_after(30):
            while len(served.trading.books.book(slot)) < 2 * BOOK_LEVELS:
                await trio.sleep(0.05)
        (data_dir / "ready.json").write_text(json.dumps({"zone": served.zone, "slot": slot}))
        await trio.sleep_forever()


def start_cluster(data_dir: Path) -> tuple[subprocess.Popen, int, str, str, int]:
    process = subprocess.Popen([sys.executable, "-m", "simnet.bench", "rpc", "--serve-cluster", str(data_dir)],
                               stdout=subprocess.DEVNULL)
    wait_for_file(data_dir / "ready.json", process, "the node cluster")
    ready = json.loads((data_dir / "ready.json").read_text())
    endpoint = json.loads((data_dir / "n1" / "rpc.json").read_text())
    token = (data_dir / "n1" / "rpc.token").read_text().strip()
    return process, endpoint["port"], token, ready["zone"], ready["slot"]


def running_node(data_dir: Path) -> tuple[int, str, str, int]:
    """Port, token, zone and a slot of the node whose data dir is ``data_dir``."""
    from p2pgrid.rpc.auth import read_token
    from p2pgrid.rpc.client import RpcClient, calls
    from p2pgrid.units import SlotRules

    endpoint = json.loads((data_dir / "rpc.json").read_text())
    token = read_token(data_dir / "rpc.token")
    with RpcClient(endpoint["url"], token=token) as client:
        info = client.call(calls.node_info())
    rules = SlotRules(length_s=info.slot_length_s, horizon_s=info.horizon_s, gate_s=info.gate_s)
    return endpoint["port"], token, info.zone, rules.tradable_slots(info.now_ms)[2]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench rpc", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each case")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated connection counts")
    parser.add_argument("--target", choices=("fake", "cluster"), default="fake",
                        help="fake node, or 4 real nodes in a child process")
    parser.add_argument("--data-dir", type=Path, help="benchmark the running node of this data dir instead")
    parser.add_argument("--serve-cluster", type=Path, help=argparse.SUPPRESS)   # the cluster child
    args = parser.parse_args(argv)
    if args.serve_cluster:
        trio.run(serve_cluster, args.serve_cluster)
        return 0
    levels = [int(c) for c in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        process: subprocess.Popen | None = None
        if args.data_dir:
            port, token, zone, slot = running_node(args.data_dir)
            label = f"the running node of {args.data_dir}"
        elif args.target == "cluster":
            process, port, token, zone, slot = start_cluster(Path(tmp))
            label = "a REAL node (4-node in-memory cluster, child process)"
        else:
            process, port, token = start_server(Path(tmp))
            zone, slot = "z1", seeded_fake_node().next_slot()
            label = "the FAKE node (p2pgrid.rpc.testing), server in its own process"
        try:
            print(f"RPC benchmark against {label} on 127.0.0.1:{port}, "
                  f"{args.seconds:g} s per case, {os.cpu_count()} cores")
            print(f"{'method':<12} {'transport':<10} {'conns':>5} {'calls':>7} {'calls/s':>8} "
                  f"{'p50 ms':>7} {'p99 ms':>7}")
            rates: dict[tuple[str, str, int], float] = {}
            bodies = payloads(zone, slot)
            for method, body in bodies.items():
                for concurrency in levels:
                    for transport, worker in (("http", http_worker), ("websocket", ws_worker)):
                        latencies = trio.run(run_case, worker, port, token, body, concurrency, args.seconds)
                        latencies.sort()
                        rate = len(latencies) / args.seconds
                        rates[(method, transport, concurrency)] = rate
                        print(f"{method:<12} {transport:<10} {concurrency:>5} {len(latencies):>7} {rate:>8.0f} "
                              f"{percentile(latencies, 0.5) * 1000:>7.2f} {percentile(latencies, 0.99) * 1000:>7.2f}")
            for method in bodies:
                for concurrency in levels:
                    ratio = rates[(method, "websocket", concurrency)] / rates[(method, "http", concurrency)]
                    print(f"ratio websocket/http calls/s, {method}, {concurrency} conns: {ratio:.2f}")
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
