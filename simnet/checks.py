"""The end-of-run checks: the invariants of DESIGN §6, read from what the nodes left on disk.

After every node has stopped, each node's ``ledger.sqlite`` is opened read-through with
``open_store`` and its state derived with ``load_state``. A check fails the run (non-zero exit):

``money_conserved``        every node's state: balances + open locks sum to exactly 0 µc.
``no_order_overfilled``    per order: Wh filled (offers) / locked by the owner (bids) in the ledger
                           ≤ the size of the **signed** order the owner published (from the nodes'
                           ``orders.jsonl``; signatures checked); a fill on an order nobody signed fails.
``certificates_unique``    each certificate unit issued once and retired at most once — not applicable
                           (passes, marked so) while the ledger holds no certificate state.
``state_roots_equal``      every live node (not killed at the end) has the same state root.
``acknowledged_kept``      nothing acknowledged is lost across restarts: every certified trade a
                           node's trader logged is in every live node's state, and every restarted
                           node's height is at least what it reported before it was killed.
``nodes_ran``              the driver saw no crash and no node exited badly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pgrid.errors import WireError
from p2pgrid.ledger.chain import LedgerState, LockStatus, state_root
from p2pgrid.node_agent import ORDERS_LOG, TRADES_LOG, read_jsonl
from p2pgrid.node_trading import LEDGER_DB
from p2pgrid.wire import Order, Side, decode_signed


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    detail: str
    applicable: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail, "applicable": self.applicable}


@dataclass
class NodeLedger:
    name: str
    state: LedgerState | None
    root: str
    error: str = ""


async def _read_one(name: str, path: Path) -> NodeLedger:
    from p2pgrid.ledger.store import open_store

    if not path.exists():
        return NodeLedger(name, None, "", "no ledger database")
    async with open_store(path) as store:
        zone = await store.load_zone()
        if zone is None:
            return NodeLedger(name, None, "", "ledger database has no zone")
        state, _waiting = await store.load_state(zone[0])
    return NodeLedger(name, state, state_root(state).hex())


def read_ledgers(nodes_dir: Path, names: list[str]) -> dict[str, NodeLedger]:
    """Each node's certified state, from its store (run after the nodes have stopped)."""
    import trio
    import trio_asyncio

    async def main() -> dict[str, NodeLedger]:
        out = {}
        async with trio_asyncio.open_loop():
            for name in names:
                out[name] = await _read_one(name, nodes_dir / name / LEDGER_DB)
        return out

    return trio.run(main)


def signed_orders(nodes_dir: Path, names: list[str]) -> tuple[dict[tuple[bytes, bytes], Order], int]:
    """Every order the nodes logged, keyed by (owner, order id), with valid signatures; and how
    many logged lines had a bad signature."""
    orders: dict[tuple[bytes, bytes], Order] = {}
    bad = 0
    for name in names:
        for record in read_jsonl(nodes_dir / name / ORDERS_LOG):
            try:
                order = decode_signed(bytes.fromhex(record["signed"]), Order).body
            except (KeyError, ValueError, WireError):
                bad += 1
                continue
            orders[(order.owner, order.order_id)] = order
    return orders, bad


def check_money(ledgers: dict[str, NodeLedger]) -> CheckResult:
    wrong = {n: led.state.money_total() for n, led in ledgers.items()
             if led.state is not None and led.state.money_total() != 0}
    missing = [n for n, led in ledgers.items() if led.state is None]
    if wrong:
        return CheckResult("money_conserved", False, f"money total ≠ 0 µc at {wrong}")
    return CheckResult("money_conserved", True, f"balances + open locks = 0 µc on {len(ledgers) - len(missing)} nodes")


def check_overfill(state: LedgerState, orders: dict[tuple[bytes, bytes], Order]) -> CheckResult:
    problems = []
    for (owner, order_id), progress in state.orders.items():
        order = orders.get((owner, order_id))
        used = progress.filled_wh if order is None or order.side is Side.SELL else progress.locked_wh
        if order is None:
            if progress.filled_wh or progress.locked_wh:
                problems.append(f"{order_id.hex()[:8]}: {used} Wh traded on an order nobody signed")
        elif used > order.qty_wh:
            problems.append(f"{order_id.hex()[:8]}: {used} Wh {'filled' if order.side is Side.SELL else 'locked'}"
                            f" > {order.qty_wh} Wh signed")
    if problems:
        return CheckResult("no_order_overfilled", False, "; ".join(problems[:5]))
    return CheckResult("no_order_overfilled", True, f"{len(state.orders)} orders traded within their signed size")


def check_certificates(state: LedgerState) -> CheckResult:
    if not state.certificates:
        return CheckResult("certificates_unique", True, "no certificate units in the ledger state yet",
                           applicable=False)
    issued = [k for k in state.certificates]
    return CheckResult("certificates_unique", len(issued) == len(set(issued)), f"{len(issued)} certificate records")


def check_roots(ledgers: dict[str, NodeLedger], live: list[str]) -> CheckResult:
    roots = {n: ledgers[n].root for n in live if n in ledgers}
    distinct = set(roots.values())
    if len(distinct) == 1 and "" not in distinct:
        return CheckResult("state_roots_equal", True, f"{len(roots)} live nodes at root {next(iter(distinct))[:16]}…")
    groups: dict[str, list[str]] = {}
    for name, root in roots.items():
        groups.setdefault(root[:12] or "none", []).append(name)
    heights = {n: led.state.height if led.state else 0 for n in live if (led := ledgers.get(n)) is not None}
    return CheckResult("state_roots_equal", False, f"{len(distinct)} different roots: {groups}; heights {heights}")


def check_acknowledged(ledgers: dict[str, NodeLedger], live: list[str], nodes_dir: Path, names: list[str],
                       heights_before_kill: dict[str, int], restarted: set[str]) -> CheckResult:
    problems = []
    acknowledged = [t for name in names for t in read_jsonl(nodes_dir / name / TRADES_LOG)]
    for name in live:
        state = ledgers[name].state
        if state is None:
            problems.append(f"{name}: no ledger")
            continue
        missing = [t["take_id"][:8] for t in acknowledged
                   if (rec := state.locks.get(bytes.fromhex(t["take_id"]))) is None or rec.status is not LockStatus.FILLED]
        if missing:
            problems.append(f"{name}: {len(missing)} certified trades missing ({', '.join(missing[:3])})")
    for name in restarted:
        ledger = ledgers.get(name)
        height = ledger.state.height if ledger is not None and ledger.state is not None else 0
        before = heights_before_kill.get(name, 0)
        if height < before:
            problems.append(f"{name}: height {height} after restart < {before} before the kill")
    if problems:
        return CheckResult("acknowledged_kept", False, "; ".join(problems[:5]))
    return CheckResult("acknowledged_kept", True, f"{len(acknowledged)} acknowledged trades on every live node; "
                       f"{len(restarted)} restarted node(s) kept their height")


def run_checks(nodes_dir: Path, names: list[str], live: list[str], *, heights_before_kill: dict[str, int],
               restarted: set[str], errors: list[str]) -> tuple[list[CheckResult], dict[str, NodeLedger]]:
    ledgers = read_ledgers(nodes_dir, names)
    orders, bad = signed_orders(nodes_dir, names)
    reference = next((ledgers[n].state for n in live if ledgers.get(n) and ledgers[n].state), None)
    results = [check_money({n: ledgers[n] for n in live})]
    if reference is None:
        results.append(CheckResult("no_order_overfilled", False, "no live node has a ledger"))
    else:
        overfills = [check_overfill(state, orders) for n in live if (state := ledgers[n].state) is not None]
        results.append(next((r for r in overfills if not r.passed), overfills[0]))
        results.append(check_certificates(reference))
    results.append(check_roots(ledgers, live))
    results.append(check_acknowledged(ledgers, live, nodes_dir, names, heights_before_kill, restarted))
    results.append(CheckResult("nodes_ran", not errors and bad == 0,
                               "; ".join(errors[:3]) or (f"{bad} logged orders with bad signatures" if bad
                                                        else "no crash, every node exited cleanly")))
    return results, ledgers
