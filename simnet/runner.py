"""Run a community scenario: start the nodes, inject the faults on schedule, watch, settle, stop.

Two drivers behind one ``run_scenario``:

* **libp2p** — every participant is a real ``p2pgrid run`` process on 127.0.0.1 in its own
  process group (``simnet.launcher.ClusterNode``), listening on a port chosen up front, so every
  config lists every validator's address and its few bootstrap peers (``simnet.community.
  bootstrap_peers``: the operator and one other validator); the validators serve rendezvous
  points, through which the nodes find the rest of the zone, and takes and votes dial their peer on
  demand. Faults reach a node as JSON files in ``<data_dir>/control/``; ``kill`` is
  SIGKILL to the group (a crash), ``restart`` starts the same data dir again.
* **memory** — the same ``Node`` code, all in this process over one ``MemoryNetwork``; faults are
  applied by calling ``p2pgrid.testing.faults.apply_fault``; ``kill`` cancels the node's scope.

Both use the one shared scaled clock written in every config, so a fault scheduled at a market
time happens at the same market time in either. The run ends when the last profile slot has
passed its gate closure (or at Ctrl-C); then the live nodes are given ``settle_s`` real seconds to
agree on one ledger state root (on the memory transport every live node also pulls from every
peer every ``PULL_EVERY_S``, as its anti-entropy would over time), and are stopped cleanly
(SIGTERM / cancel).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from p2pgrid.node.status import read_status
from simnet.community import Community, Participant, bootstrap_peers
from simnet.launcher import ClusterError, ClusterNode, NodeSpec
from simnet.monitor import Snapshot, take_snapshot
from simnet.pacing import Backlog, pace_for
from simnet.scenario import Fault

POLL_S = 0.5
PULL_EVERY_S = 3.0      # settling, memory transport: every node pulls from every peer this often
# Settling: one state root at unchanged heights must hold this long (real seconds) before the
# nodes stop. An entry still on its way at the first agreement (a pool host's decline at the last
# deadline) would otherwise be certified at its proposer after the check and nowhere else.
SETTLED_FOR_S = 3.0
STOP_GRACE_S = 15.0


@dataclass
class RunLog:
    """What the driver did and saw, for the checks and the report."""

    transport: str
    faults: list[dict[str, Any]] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)          # dead at the end
    restarted: set[str] = field(default_factory=set)
    heights_before_kill: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    settled: bool = False
    settle_real_s: float | None = None     # how long the live nodes took to agree on one state root
    started_wall_s: float = 0.0
    ended_wall_s: float = 0.0
    lost_real_s: float = 0.0               # memory runs: real time the paced clock did not count (behind)
    held_real_s: float = 0.0               # memory runs: real time market time was slowed (work behind)
    most_behind: dict[str, int] = field(default_factory=dict)   # memory runs: the largest backlog seen
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"transport": self.transport, "faults": self.faults, "killed": sorted(self.killed),
                "restarted": sorted(self.restarted), "heights_before_kill": self.heights_before_kill,
                "interrupted": self.interrupted, "settled": self.settled,
                "settle_real_s": self.settle_real_s,
                "real_seconds": round(self.ended_wall_s - self.started_wall_s, 1), "errors": self.errors,
                "clock_lost_real_s": self.lost_real_s, "clock_held_real_s": self.held_real_s,
                "most_behind": self.most_behind,
                "started_wall_s": round(self.started_wall_s, 3)}


Show = Callable[[Snapshot, str], None]


def due_faults(faults: tuple[Fault, ...], done: int, community: Community, market_ms: int) -> list[Fault]:
    start = community.timeline.profile_start_ms
    return [f for f in faults[done:] if start + f.at_s * 1000 <= market_ms]


def partition_commands(fault: Fault, community: Community) -> dict[str, dict[str, Any]]:
    """Per node name: the partition command blocking the other group."""
    a, b = ([community.by_name(n) for n in group] for group in fault.groups)
    commands = {p.name: {"op": "partition", "peers": [q.account for q in b]} for p in a}
    commands.update({p.name: {"op": "partition", "peers": [q.account for q in a]} for p in b})
    return commands


def settled(snapshot: Snapshot) -> bool:
    return snapshot.nodes_up > 0 and snapshot.roots_agreeing == snapshot.nodes_up \
        and snapshot.heights[0] == snapshot.heights[1]


class SettleWatch:
    """Whether the live nodes have agreed on one state root, at the same heights, for
    ``SETTLED_FOR_S`` in a row (and, where the runner can see it, with nothing left to propose)."""

    def __init__(self, hold_s: float = SETTLED_FOR_S) -> None:
        self.hold_s = hold_s
        self._since: float | None = None
        self._heights: tuple[int, int] | None = None

    def update(self, snapshot: Snapshot, now_s: float, quiet: bool = True) -> bool:
        if not (quiet and settled(snapshot)):
            self._since = None
            return False
        if self._since is None or snapshot.heights != self._heights:
            self._since, self._heights = now_s, snapshot.heights
        return now_s - self._since >= self.hold_s


# --- libp2p ----------------------------------------------------------------------------------

class ProcessDriver:
    def __init__(self, community: Community, log: RunLog) -> None:
        self.community = community
        self.log = log
        self.nodes = {p.name: ClusterNode(NodeSpec(p.name, p.role, p.seed), community.nodes_dir / p.name)
                      for p in community.people}
        self.alive: set[str] = set()
        self._control_seq = 0

    def start(self, name: str) -> None:
        node = self.nodes[name]
        (node.data_dir / "status.json").unlink(missing_ok=True)
        node.start([q.address() for q in bootstrap_peers(self.community.people, name)])
        self.alive.add(name)

    def start_all(self) -> None:
        for name in self.nodes:
            self.start(name)

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        status = read_status(node.data_dir)
        self.log.heights_before_kill[name] = status.ledger_height if status else 0
        node.signal_group(signal.SIGKILL)
        if node.process is not None:
            node.process.wait()
        self.alive.discard(name)

    def command(self, name: str, command: dict[str, Any]) -> None:
        control = self.nodes[name].data_dir / "control"
        control.mkdir(exist_ok=True, mode=0o700)
        self._control_seq += 1
        tmp = control / f"{self._control_seq:06d}.tmp"
        tmp.write_text(json.dumps(command))
        os.replace(tmp, control / f"{self._control_seq:06d}.json")

    def check_alive(self) -> None:
        for name in sorted(self.alive):
            code = self.nodes[name].exited()
            if code is not None:
                self.alive.discard(name)
                raise ClusterError(f"node {name} exited with code {code}: {self.nodes[name].log_tail()}")

    def stop_all(self) -> dict[str, int | None]:
        for node in self.nodes.values():
            node.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node in self.nodes.values():
            if node.process is None:
                continue
            try:
                node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:   # noqa: BLE001 - subprocess.TimeoutExpired: escalated just below
                pass
        codes: dict[str, int | None] = {}
        for name, node in self.nodes.items():
            if node.process is None:
                continue
            if node.process.poll() is None:
                node.signal_group(signal.SIGKILL)
                node.process.wait()
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            codes[name] = node.process.returncode
        return codes


def apply_process_fault(driver: ProcessDriver, fault: Fault) -> dict[str, Any]:
    record: dict[str, Any] = {"at_h": fault.at_h, "kind": fault.kind, "node": fault.node,
                              "groups": [list(g) for g in fault.groups], "wall_s": round(time.time(), 2)}
    if fault.kind == "kill":
        driver.kill(fault.node)
        driver.log.killed.add(fault.node)
    elif fault.kind == "restart":
        driver.start(fault.node)
        driver.log.killed.discard(fault.node)
        driver.log.restarted.add(fault.node)
    elif fault.kind == "partition":
        for name, command in partition_commands(fault, driver.community).items():
            driver.command(name, command)
    elif fault.kind == "heal":
        for name in driver.alive:
            driver.command(name, {"op": "heal"})
    else:
        driver.command(fault.node, {"op": fault.kind})
    return record


def run_processes(community: Community, log: RunLog, show: Show, *, funded_timeout_s: float) -> None:
    driver = ProcessDriver(community, log)
    dirs = {p.name: community.nodes_dir / p.name for p in community.people}
    timeline = community.timeline
    faults = community.scenario.faults
    done = 0
    try:
        driver.start_all()
        deadline = time.monotonic() + funded_timeout_s
        while not all_funded(community):
            driver.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"nodes not connected and funded after {funded_timeout_s:.0f} s "
                                   "(2 cores may be too few for this many processes: try --nodes)")
            show(take_snapshot(dirs, driver.alive), "starting and funding")
            time.sleep(POLL_S)
        while True:
            market = timeline.market_ms_at(time.time())
            if market >= timeline.end_ms:
                break
            for fault in due_faults(faults, done, community, market):
                log.faults.append(apply_process_fault(driver, fault))
                done += 1
            driver.check_alive()
            show(take_snapshot(dirs, driver.alive), "trading · Ctrl-C stops and reports")
            time.sleep(POLL_S)
        began = time.monotonic()
        watch = SettleWatch()
        while time.monotonic() < began + community.scenario.settle_s:
            snapshot = take_snapshot(dirs, driver.alive)
            show(snapshot, "settling: waiting for one state root")
            if watch.update(snapshot, time.monotonic()):
                log.settled = True
                log.settle_real_s = round(time.monotonic() - began, 1)
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        log.interrupted = True
    except ClusterError as exc:
        log.errors.append(str(exc))
    finally:
        codes = driver.stop_all()
        log.errors += [f"node {n} exited with code {c}" for n, c in codes.items()
                       if c not in (0, None) and n in driver.alive]


def all_funded(community: Community) -> bool:
    """Every participant runs and has received its initial credits (a balance is 0 only before
    funding: nothing can be spent before it)."""
    for p in community.people:
        status = read_status(community.nodes_dir / p.name)
        if status is None or status.state != "running":
            return False
        if not p.operator and community.scenario.credit_uc and status.balance_uc == 0:
            return False
    return True


# --- memory ----------------------------------------------------------------------------------

def run_memory(community: Community, log: RunLog, show: Show) -> None:
    import trio

    try:
        trio.run(_memory_main, community, log, show)
    except* KeyboardInterrupt:   # trio may deliver it wrapped in the nodes' exception groups
        log.interrupted = True
    except* Exception as group:  # noqa: BLE001 - a node that crashed fails the run's checks, with its error
        log.errors += [f"in-memory node crashed: {type(e).__name__}: {e}" for e in group.exceptions]


async def _memory_main(community: Community, log: RunLog, show: Show) -> None:
    import trio
    import trio_asyncio

    from p2pgrid.net.memory import MemoryNetwork

    from p2pgrid.clock import PacedClock

    timeline = community.timeline
    async with trio_asyncio.open_loop():
        network = MemoryNetwork()
        handles: dict[str, _MemoryNode] = {}

        def pace() -> float:
            backlog = backlog_of(handles.values(), clock.now_ms())
            log.most_behind = {"queued_entries": max(log.most_behind.get("queued_entries", 0), backlog.queued_entries),
                               "settle_slots_behind": max(log.most_behind.get("settle_slots_behind", 0),
                                                          backlog.settle_slots_behind)}
            return pace_for(backlog)

        # One clock for every node of the process, paced by it: a starved run slows down
        # instead of letting market time run ahead of its nodes (simnet.pacing).
        clock = PacedClock(timeline.market_ms_at(time.time()), timeline.speed, pace=pace)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(clock.run)
            handles.update((p.name, _MemoryNode(p, community, network, clock)) for p in community.people)
            for handle in handles.values():
                await handle.start(nursery)
            try:
                await _memory_loop(community, log, show, handles, clock)
                log.lost_real_s = round(clock.lost_real_s, 1)
                log.held_real_s = round(clock.held_real_s, 1)
            finally:
                for handle in handles.values():
                    await handle.stop()
                nursery.cancel_scope.cancel()


async def _memory_loop(community: Community, log: RunLog, show: Show, handles: dict[str, _MemoryNode],
                       clock: Any) -> None:
    import trio

    from p2pgrid.testing.faults import apply_fault

    dirs = {p.name: community.nodes_dir / p.name for p in community.people}
    timeline = community.timeline

    def alive() -> set[str]:
        return {n for n, h in handles.items() if h.node is not None}

    with trio.move_on_after(120) as scope:
        while not all_funded(community):
            show(take_snapshot(dirs, alive()), "starting and funding")
            await trio.sleep(POLL_S)
    if scope.cancelled_caught:
        log.errors.append("nodes not funded after 120 s")
        return
    done = 0
    while True:
        market = clock.now_ms()
        if market >= timeline.end_ms:
            break
        for fault in due_faults(community.scenario.faults, done, community, market):
            done += 1
            record: dict[str, Any] = {"at_h": fault.at_h, "kind": fault.kind, "node": fault.node,
                                      "groups": [list(g) for g in fault.groups], "wall_s": round(time.time(), 2)}
            log.faults.append(record)
            if fault.kind == "kill":
                status = read_status(dirs[fault.node])
                log.heights_before_kill[fault.node] = status.ledger_height if status else 0
                await handles[fault.node].stop()
                log.killed.add(fault.node)
            elif fault.kind == "restart":
                await handles[fault.node].start(handles[fault.node].parent)
                log.killed.discard(fault.node)
                log.restarted.add(fault.node)
            else:
                if fault.kind == "partition":
                    commands = partition_commands(fault, community)
                elif fault.kind == "heal":
                    commands = {n: {"op": "heal"} for n in alive()}
                else:
                    commands = {fault.node: {"op": fault.kind}}
                for name, command in commands.items():
                    node = handles[name].node
                    if node is not None:
                        try:
                            record.setdefault("results", {})[name] = await apply_fault(node, command)
                        except Exception as exc:  # noqa: BLE001 - a failed fault is reported, the run goes on
                            log.errors.append(f"fault {fault.kind} on {name}: {exc}")
        show(take_snapshot(dirs, alive()), "trading · Ctrl-C stops and reports")
        await trio.sleep(POLL_S)
    began = time.monotonic()
    pulled = began
    watch = SettleWatch()
    with trio.move_on_after(community.scenario.settle_s):
        while True:
            snapshot = take_snapshot(dirs, alive())
            show(snapshot, "settling: waiting for one state root")
            live = [handles[n].node for n in alive() if handles[n].node is not None]
            # Nothing left to propose: no entry queued or in doubt anywhere, and no slot due for
            # settlement that the gateway has not settled yet (the summer study once stopped
            # with its last due slot unsettled, the roots agreeing).
            backlog = backlog_of([handles[n] for n in alive()], clock.now_ms())
            quiet = backlog.queued_entries == 0 and backlog.settle_slots_behind == 0 and all(
                n.ledger is None or not n.ledger.in_doubt_entries() for n in live)
            if watch.update(snapshot, time.monotonic(), quiet):
                log.settled = True
                log.settle_real_s = round(time.monotonic() - began, 1)
                break
            if time.monotonic() - pulled >= PULL_EVERY_S:
                pulled = time.monotonic()
                await pull_from_everyone([handles[n].node for n in alive()])
            await trio.sleep(POLL_S)


def backlog_of(handles: Iterable[_MemoryNode], now_ms: int) -> Backlog:
    """What the live nodes of this process have not done yet (their ledgers' queues, the
    gateway's settlements past due)."""
    from p2pgrid.node.app import find_service
    from p2pgrid.settlement.node_service import SettlementNodeService

    nodes = [h.node for h in handles if h.node is not None]
    queued = sum(n.ledger.queued_entries for n in nodes if n.ledger is not None)
    gateways = [find_service(n, SettlementNodeService).settlement for n in nodes
                if n.ledger is not None and n.ledger.rules.gateway == n.key.public_key]
    behind = max((s.slots_behind(now_ms) for s in gateways if s is not None), default=0)
    return Backlog(nodes=len(nodes), queued_entries=queued, settle_slots_behind=behind)


async def pull_from_everyone(nodes: list[Any]) -> None:
    """Each live node pulls its peers' ledgers once (the anti-entropy sync, to every peer at once):
    a batch whose gossip was lost just before the end otherwise waits for the one node that has it
    to be drawn as a sync peer (one peer per 10 s), and the run would be compared before that."""
    for node in nodes:
        if node is not None and node.ledger is not None:
            await node.ledger.sync_all()


class _MemoryNode:
    def __init__(self, participant: Participant, community: Community, network: Any, clock: Any) -> None:
        self.participant = participant
        self.community = community
        self.network = network
        self.clock = clock
        self.node: Any = None
        self.scope: Any = None
        self.finished: Any = None
        self.parent: Any = None

    async def start(self, nursery: Any) -> None:
        self.parent = nursery
        await nursery.start(self._run)

    async def _run(self, task_status: Any) -> None:
        import trio

        from p2pgrid.config import load_config
        from p2pgrid.identity import load_keystore
        from p2pgrid.node.app import Node, close_ledger_store

        data_dir = self.community.nodes_dir / self.participant.name
        config = load_config(data_dir / "config.toml")
        key = load_keystore(data_dir / "node.key")
        clock = self.clock
        self.finished = trio.Event()
        try:
            with trio.CancelScope() as self.scope:
                async with self.network.open_transport(key, connect_to=self.network.addresses) as transport:
                    node = Node(config, key, clock, transport)
                    async with trio.open_nursery() as inner:
                        await inner.start(node.run)
                        self.node = node
                        task_status.started()
        finally:
            if self.node is not None:
                await close_ledger_store(self.node)
            self.node = None
            self.finished.set()

    async def stop(self) -> None:
        if self.scope is not None and self.node is not None:
            self.scope.cancel()
            await self.finished.wait()
