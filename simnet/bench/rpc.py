"""``python -m simnet.bench rpc``: requests/s and latency of the local RPC.

Serves the **fake node** (``p2pgrid.rpc.testing``, seeded book and pool) in a child process, so
the figures are the RPC stack's cost (h11 / trio-websocket / JSON / dispatch), not the market's;
re-run against a real node once it implements ``NodeApi``. The client side runs in this process
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


def payloads(slot: int) -> dict[str, bytes]:
    calls = {
        "book_get": {"zone": "z1", "slot": slot, "depth": 10},
        "route_quote": {"zone": "z1", "slot": slot, "side": "buy", "qty_wh": 3000, "limit_price": 300_000},
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


def start_server(data_dir: Path) -> tuple[subprocess.Popen, int, str]:
    port_file = data_dir / "port"
    process = subprocess.Popen([sys.executable, "-m", "p2pgrid.rpc.testing", "--data-dir", str(data_dir),
                                "--port-file", str(port_file),
                                "--rate-per-s", "1000000"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the fake-node RPC server did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text()), (data_dir / "rpc.token").read_text().strip()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench rpc", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each case")
    parser.add_argument("--concurrency", default="1,8", help="comma-separated connection counts")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    slot = seeded_fake_node().next_slot()

    with tempfile.TemporaryDirectory(prefix="bench-rpc-") as tmp:
        process, port, token = start_server(Path(tmp))
        try:
            print(f"RPC benchmark against the FAKE node (p2pgrid.rpc.testing) on 127.0.0.1:{port}, "
                  f"server in its own process, {args.seconds:g} s per case, {os.cpu_count()} cores")
            print(f"{'method':<12} {'transport':<10} {'conns':>5} {'calls':>7} {'calls/s':>8} "
                  f"{'p50 ms':>7} {'p99 ms':>7}")
            rates: dict[tuple[str, str, int], float] = {}
            for method, body in payloads(slot).items():
                for concurrency in levels:
                    for transport, worker in (("http", http_worker), ("websocket", ws_worker)):
                        latencies = trio.run(run_case, worker, port, token, body, concurrency, args.seconds)
                        latencies.sort()
                        rate = len(latencies) / args.seconds
                        rates[(method, transport, concurrency)] = rate
                        print(f"{method:<12} {transport:<10} {concurrency:>5} {len(latencies):>7} {rate:>8.0f} "
                              f"{percentile(latencies, 0.5) * 1000:>7.2f} {percentile(latencies, 0.99) * 1000:>7.2f}")
            for method in payloads(slot):
                for concurrency in levels:
                    ratio = rates[(method, "websocket", concurrency)] / rates[(method, "http", concurrency)]
                    print(f"ratio websocket/http calls/s, {method}, {concurrency} conns: {ratio:.2f}")
        finally:
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
