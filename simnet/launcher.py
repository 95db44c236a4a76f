"""Start, watch and stop a local cluster of real p2pgrid node processes on 127.0.0.1.

Each node gets its own data dir under ``out_dir`` (keystore, ``config.toml``, ``node.log``,
``status.json``) and runs as ``python -m p2pgrid.cli.main run --config … --no-dashboard`` in its
**own process group**. The first node starts alone; once its status file shows its listen
address, the others start bootstrapped to it (one bootstrap address each); the first node serves a
rendezvous point, through which the others find each other. Every node runs the same scaled clock
(``clock.mode = "scaled"`` with one shared wall-clock anchor), so they agree on market time.

Watching is by status files only (``p2pgrid.node.status.read_status``): no extra protocol.

**No orphans, ever.** ``Cluster`` is a context manager; ``stop()`` runs in ``__exit__`` whatever
happened, sends SIGTERM to every node's process group, waits (bounded) and SIGKILLs any group
still alive. Waiting for a condition is always bounded by a deadline and fails with
``ClusterError`` naming the nodes that did not get there (and the tail of a crashed node's log).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from p2pgrid.errors import NetError
from p2pgrid.identity import NodeKey, save_keystore
from p2pgrid.node.status import NodeStatus, read_status

POLL_S = 0.1
STOP_GRACE_S = 10.0
DEFAULT_ROLES = ("station", "household", "household", "consumer", "consumer")


class ClusterError(NetError):
    """A cluster node failed to start, crashed, or did not reach a condition in time."""


@dataclass(frozen=True)
class NodeSpec:
    """One node of a cluster: its name, role and agent seed; ``extra`` = more config keys."""

    name: str
    role: str
    seed: int
    extra: dict[str, object] = field(default_factory=dict)


def default_specs(count: int, seed: int = 1) -> list[NodeSpec]:
    """``count`` nodes cycling through station, households and consumers."""
    return [NodeSpec(f"n{i}-{DEFAULT_ROLES[i % len(DEFAULT_ROLES)]}", DEFAULT_ROLES[i % len(DEFAULT_ROLES)],
                     seed * 1000 + i) for i in range(count)]


@dataclass(frozen=True)
class ClusterSettings:
    speed: float = 60.0             # simulated seconds per real second
    sim_epoch_ms: int | None = None  # simulated time at start (default: the real start time)
    tick_ms: int = 1000             # agent decision interval, real ms
    orders_per_tick: int = 2
    max_orders: int = 0             # per node; 0 = unlimited
    publish_interval_ms: int = 500
    log_level: str = "info"


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_node_config(spec: NodeSpec, settings: ClusterSettings, *, anchor_wall_ms: int,
                       sim_epoch_ms: int, serve_rendezvous: bool = False) -> str:
    """The config.toml of one cluster node (its data dir is the file's directory)."""
    sections: dict[str, dict[str, object]] = {
        "node": {"name": spec.name, "data_dir": ".", "role": spec.role, "log_level": settings.log_level},
        "zone": {"id": "local"},
        "network": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": [],
                    "publish_interval_ms": settings.publish_interval_ms, "serve_rendezvous": serve_rendezvous},
        "clock": {"mode": "scaled", "sim_epoch_ms": sim_epoch_ms, "speed": float(settings.speed),
                  "anchor_wall_ms": anchor_wall_ms},
        "agent": {"strategy": "random", "seed": spec.seed, "tick_ms": settings.tick_ms,
                  "orders_per_tick": settings.orders_per_tick, "max_orders": settings.max_orders},
    }
    if spec.role in ("household", "station"):
        sections["devices.pv"] = {"kwp": 300.0 if spec.role == "station" else 6.0}
    for dotted, value in spec.extra.items():
        section, _, key = dotted.rpartition(".")
        sections.setdefault(section, {})[key] = value
    lines = ["# Written by simnet.launcher for one cluster node."]
    for section, values in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


class ClusterNode:
    """One node process of a cluster."""

    def __init__(self, spec: NodeSpec, data_dir: Path) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "config.toml"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "node.log"

    def status(self) -> NodeStatus | None:
        status = read_status(self.data_dir)
        if status is None or self.process is None or status.pid != self.process.pid:
            return None   # nothing yet, or a stale file from an earlier run
        return status

    def start(self, bootstrap: Sequence[str]) -> None:
        command = [sys.executable, "-m", "p2pgrid.cli.main", "run", "--config", str(self.config_path),
                   "--no-dashboard", "--set", f"network.bootstrap={_toml_value(list(bootstrap))}"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def signal_group(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass


class Cluster:
    """N node processes on 127.0.0.1; use as ``with Cluster(out_dir, specs) as cluster:``."""

    def __init__(self, out_dir: Path, specs: Sequence[NodeSpec], settings: ClusterSettings = ClusterSettings()) -> None:
        if len(specs) < 1:
            raise ClusterError("a cluster needs at least one node")
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.nodes = [ClusterNode(spec, self.out_dir / spec.name) for spec in specs]
        self.anchor_wall_ms = 0

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def names(self) -> list[str]:
        return [node.spec.name for node in self.nodes]

    def prepare(self) -> None:
        """Create every node's data dir, keystore (unsealed, 0600) and config."""
        self.anchor_wall_ms = time.time_ns() // 1_000_000
        sim_epoch = self.settings.sim_epoch_ms if self.settings.sim_epoch_ms is not None else self.anchor_wall_ms
        for index, node in enumerate(self.nodes):
            node.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            (node.data_dir / "status.json").unlink(missing_ok=True)
            save_keystore(node.data_dir / "node.key", NodeKey.generate())
            node.config_path.write_text(render_node_config(node.spec, self.settings,
                                                           anchor_wall_ms=self.anchor_wall_ms,
                                                           sim_epoch_ms=sim_epoch, serve_rendezvous=index == 0))

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the first node, then the rest bootstrapped to it; wait until all are connected."""
        self.prepare()
        first, rest = self.nodes[0], self.nodes[1:]
        first.start(bootstrap=())
        self.wait_for(lambda s: s[0] is not None and bool(s[0].listen_addrs), timeout_s,
                      what="the first node to listen")
        bootstrap = [addr for addr in first.status().listen_addrs if "/p2p/" in addr][:1]  # type: ignore[union-attr]
        for node in rest:
            node.start(bootstrap=bootstrap)
        self.wait_connected(timeout_s)

    def statuses(self) -> list[NodeStatus | None]:
        return [node.status() for node in self.nodes]

    def wait_connected(self, timeout_s: float) -> None:
        """Until every node runs and has a peer, and the first node sees all the others."""
        expected = len(self.nodes) - 1

        def connected(statuses: list[NodeStatus | None]) -> bool:
            return (all(s is not None and s.state == "running" and (s.peers >= 1 or expected == 0)
                        for s in statuses)
                    and statuses[0] is not None and statuses[0].peers >= expected)

        self.wait_for(connected, timeout_s, what="all nodes to connect")

    def wait_for(self, condition: Callable[[list[NodeStatus | None]], bool], timeout_s: float, *,
                 what: str) -> list[NodeStatus | None]:
        """Poll status files until ``condition`` holds; raise ``ClusterError`` at the deadline or
        as soon as a node process has exited."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            statuses = self.statuses()
            if condition(statuses):
                return statuses
            if time.monotonic() >= deadline:
                waiting = [n.spec.name for n, s in zip(self.nodes, statuses) if s is None or s.state != "running"]
                raise ClusterError(f"timed out after {timeout_s:g} s waiting for {what}"
                                   + (f" (not running: {', '.join(waiting)})" if waiting else ""))
            time.sleep(POLL_S)

    def check_alive(self) -> None:
        for node in self.nodes:
            code = node.exited()
            if code is not None:
                raise ClusterError(f"node {node.spec.name} exited with code {code}: {node.log_tail()}")

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.nodes if node.process is not None]

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every node's process group, wait up to ``grace_s``, SIGKILL what is left."""
        for node in self.nodes:
            node.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for node in self.nodes:
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes:
            if node.process is None:
                continue
            if node.process.poll() is None:
                node.signal_group(signal.SIGKILL)
                node.process.wait()
            # The leader has exited; make sure nothing else it started in its group survives.
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def clean_exits(self) -> dict[str, int | None]:
        """Exit code of each node process (None if never started or still running)."""
        return {node.spec.name: node.exited() for node in self.nodes}
