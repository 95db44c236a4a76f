"""The end-of-run checks: the invariants of docs/ARCHITECTURE.md §6-§7, read from what the nodes left on disk.

After every node has stopped, each node's ``ledger.sqlite`` is opened read-through with
``open_store`` and its state derived with ``load_state``. A check fails the run (non-zero exit):

``money_conserved``        every node's state: balances + open locks sum to exactly 0 µc.
``no_order_overfilled``    per order: Wh filled (offers) / locked by the owner (bids) in the ledger
                           ≤ the size of the **signed** order the owner published (from the nodes'
                           ``orders.jsonl``; signatures checked); a fill on an order nobody signed fails.
``slots_settled``          every delivered slot (certified trades or meter entries) whose metering
                           deadline passed at least ``SETTLE_MARGIN_REAL_S`` real seconds (in market
                           time) before the run's end is settled in the reference state, every
                           certified input of it named by its settlements (late ones reconciled); the end is
                           the latest market time in the live nodes' final status files, or the
                           community's settlement cutoff (``settle_until_ms``) if earlier.
``certificates_unique``    certificates issued = green Wh metered, slot by slot (one batch per meter
                           entry with green energy, units [0, green_wh)); each unit is retired at most
                           once and only if issued — not applicable (passes, marked so) while the
                           ledger holds no certificate state.
``charging_billed``        every charging session whose charge ended ``SETTLE_MARGIN_REAL_S`` (market
                           time) before the end was billed, within the driver's escrow, and no
                           connector sold more than its counter (not applicable without a tariff).
``state_roots_equal``      every live node (not killed at the end) has the same state root.
``acknowledged_kept``      nothing acknowledged is lost across restarts: every certified trade a
                           node's trader logged is in every live node's state, and every restarted
                           node's height is at least what it reported before it was killed.
``nodes_ran``              the driver saw no crash and no node exited badly.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pgrid.agent.runlog import ORDERS_LOG, TRADES_LOG, read_jsonl
from p2pgrid.charging.plan import BILL_MARGIN_MS
from p2pgrid.charging.rules import charger_counter, sessions, tariffs
from p2pgrid.errors import WireError
from p2pgrid.ledger.chain import LedgerRules, LedgerState, LockStatus, state_root
from p2pgrid.node.ledger import LEDGER_DB
from p2pgrid.node.status import read_status
from p2pgrid.settlement.certificates import UnitRange, total_wh
from p2pgrid.settlement.entries import (
    certificates_of, meter_entries_for_slot, settled_slots, slots_to_reconcile, unsettled_slots,
)
from p2pgrid.wire import Order, Side, decode_signed

SETTLE_MARGIN_REAL_S = 5.0   # real time the gateway gets after a deadline to certify the slot's settle


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
    problems: list[str] = []
    issued_by_batch: dict[Any, list[UnitRange]] = defaultdict(list)
    retired_by_batch: dict[Any, list[UnitRange]] = defaultdict(list)
    issued_wh = green_wh = retired_wh = 0
    for slot in settled_slots(state):
        certs = certificates_of(state, slot)
        if certs is None:
            problems.append(f"slot {slot}: settled without certificate state")
            continue
        green = sum(m.green_wh for m in meter_entries_for_slot(state, slot) if m.green_wh > 0)
        issued = total_wh(certs.issued)
        issued_wh, green_wh = issued_wh + issued, green_wh + green
        if issued != green:
            problems.append(f"slot {slot}: {issued} Wh of certificates issued for {green} Wh of green metered")
        for r in certs.issued:
            issued_by_batch[r.batch].append(r)
        for retirement in certs.retirements:
            retired_by_batch[retirement.units.batch].append(retirement.units)
            retired_wh += retirement.units.wh
    for batch, ranges in issued_by_batch.items():
        if len(ranges) != 1 or ranges[0].start != 0:
            problems.append(f"batch of {batch.producer.hex()[:8]} slot {batch.slot} issued {len(ranges)} times")
    for batch, ranges in retired_by_batch.items():
        ranges.sort(key=lambda r: r.start)
        limit = max((r.end for r in issued_by_batch.get(batch, ())), default=0)
        if any(a.end > b.start for a, b in zip(ranges, ranges[1:])) or ranges[-1].end > limit:
            problems.append(f"batch of {batch.producer.hex()[:8]} slot {batch.slot}: "
                            "units retired twice or never issued")
    if problems:
        return CheckResult("certificates_unique", False, "; ".join(problems[:5]))
    return CheckResult("certificates_unique", True,
                       f"{issued_wh} Wh issued = {green_wh} Wh green metered over {len(settled_slots(state))} "
                       f"settled slots; {retired_wh} Wh retired, each unit at most once")


def run_end_ms(nodes_dir: Path, live: list[str]) -> int | None:
    """The latest market time the live nodes reported (their final status files)."""
    times = [status.market_now_ms for n in live if (status := read_status(nodes_dir / n)) is not None]
    return max(times, default=None)


def check_settled(state: LedgerState, nodes_dir: Path, live: list[str]) -> CheckResult:
    community_file = nodes_dir.parent / "community.json"
    if not community_file.exists():
        return CheckResult("slots_settled", True, "no community description: not checked", applicable=False)
    community = json.loads(community_file.read_text())
    end_ms = run_end_ms(nodes_dir, live)
    if end_ms is None or "grace_s" not in community:
        return CheckResult("slots_settled", False, "no final status or no metering grace to judge by")
    slot_s, grace_s = int(community["slot_s"]), int(community["grace_s"])
    margin_ms = int(SETTLE_MARGIN_REAL_S * float(community.get("speed", 1.0)) * 1000)

    cutoff_ms = int(community.get("settle_until_ms") or end_ms)

    def required(slot: int) -> bool:
        due_ms = (slot + slot_s + grace_s) * 1000
        return due_ms + margin_ms <= end_ms and due_ms <= cutoff_ms

    settled = settled_slots(state)
    delivered = unsettled_slots(state) + settled
    due = [s for s in delivered if required(s)]
    missing = [s for s in unsettled_slots(state) if required(s)]
    start_s = community["profile_start_ms"] // 1000
    if missing:
        names = ", ".join(str((s - start_s) // slot_s) for s in missing[:8])
        return CheckResult("slots_settled", False, f"{len(missing)} of {len(due)} due slots not settled "
                           f"(profile slots {names})")
    # A reading or trade certified after its slot settled is reconciled by a later settle: a slot
    # still holding certified inputs its settlements do not name is not settled completely.
    rules = LedgerRules("", bytes.fromhex(community["gateway"])) if "gateway" in community else None
    unreconciled = [s for s in slots_to_reconcile(state, rules) if required(s)] if rules else []
    if unreconciled:
        names = ", ".join(str((s - start_s) // slot_s) for s in unreconciled[:8])
        return CheckResult("slots_settled", False, f"{len(unreconciled)} settled slots hold certified inputs "
                           f"not reconciled (profile slots {names})")
    if not due:
        return CheckResult("slots_settled", True, f"no slot due before the end ({len(settled)} settled)",
                           applicable=False)
    waiting = len(unsettled_slots(state))
    return CheckResult("slots_settled", True, f"all {len(due)} due slots settled ({len(settled)} in all); "
                       f"{waiting} not due before the end")


def check_charging(state: LedgerState, nodes_dir: Path, live: list[str]) -> CheckResult:
    """Every charging session whose charge ended at least ``SETTLE_MARGIN_REAL_S`` real seconds
    (in market time) before the run's end was billed, within its escrow, and no connector sold a
    Wh twice. A session's planned end is its escrow deadline less ``BILL_MARGIN_MS``."""
    started = sessions(state)
    if not tariffs(state):
        return CheckResult("charging_billed", True, "no station sells charging in this run", applicable=False)
    end_ms = run_end_ms(nodes_dir, live)
    community_file = nodes_dir.parent / "community.json"
    speed = float(json.loads(community_file.read_text()).get("speed", 1.0)) if community_file.exists() else 1.0
    margin_ms = int(SETTLE_MARGIN_REAL_S * speed * 1000)

    def due(session: Any) -> bool:
        return end_ms is None or session.deadline_ms - BILL_MARGIN_MS + margin_ms <= end_ms

    unbilled = [s for s in started if not s.billed and due(s)]
    over = [s for s in started if s.billed and s.amount_uc > s.escrow_uc]
    sold: dict[bytes, int] = {}
    for s in started:
        if s.billed:
            sold[s.charger_key] = sold.get(s.charger_key, 0) + s.delivered_wh
    twice = [k for k, wh in sold.items() if wh > charger_counter(state, k)]
    if unbilled or over or twice:
        return CheckResult("charging_billed", False, f"{len(unbilled)} of {len(started)} sessions unbilled, "
                           f"{len(over)} billed beyond their escrow, {len(twice)} connectors sold energy twice")
    wh = sum(s.delivered_wh for s in started)
    in_flight = sum(1 for s in started if not s.billed)
    return CheckResult("charging_billed", True, f"{len(started) - in_flight} of {len(started)} charging sessions "
                       f"billed ({wh} Wh), each within its escrow and its connector's counter"
                       + (f"; {in_flight} ended too close to the end to be billed" if in_flight else ""))


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
        results.append(check_settled(reference, nodes_dir, live))
        results.append(check_certificates(reference))
        results.append(check_charging(reference, nodes_dir, live))
    results.append(check_roots(ledgers, live))
    results.append(check_acknowledged(ledgers, live, nodes_dir, names, heights_before_kill, restarted))
    results.append(CheckResult("nodes_ran", not errors and bad == 0,
                               "; ".join(errors[:3]) or (f"{bad} logged orders with bad signatures" if bad
                                                        else "no crash, every node exited cleanly")))
    return results, ledgers
