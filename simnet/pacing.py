"""How fast market time may run in a one-process simulation: as fast as its nodes' work allows.

A simulation at 720× gives each node a fixed budget of real time per slot. When the process
lacks the throughput (the machine is shared, another process keeps a core busy), work piles up:
entries wait for votes, the gateway's settlements fall behind, readings are certified after their
slot was settled. Letting market time run on regardless would make a run's results depend on the
machine's load — slots unsettled at the end, state roots compared mid-flight. So the runner
measures the backlog once per clock tick and slows market time (``p2pgrid.clock.PacedClock``'s
``pace``) until the backlog is back to what a keeping-up zone shows; the run then gives the same
results, only later (``run.json`` records ``clock_held_real_s``).

``pace_for`` is the rule (pure); ``Backlog`` is what the runner measures.
"""

from __future__ import annotations

from dataclasses import dataclass

# A zone that keeps up has a few entries per node waiting for votes (a reading and a trade or
# two, batched) and settles each slot before the next is due (0, at most 1 slot past due + W).
QUEUED_ENTRIES_PER_NODE = 4
SETTLE_SLOTS_BEHIND = 2
# Market time while behind: a tenth of the run's speed. Never 0: work that waits for market time
# (a reading due at the slot's end, a lock's deadline) must still see it pass.
SLOW_PACE = 0.1


@dataclass(frozen=True)
class Backlog:
    """The work a simulated zone has not done yet."""

    nodes: int                   # live nodes
    queued_entries: int          # ledger entries submitted and not decided yet, over all nodes
    settle_slots_behind: int     # the gateway's slots past due + W with inputs not settled

    def is_behind(self) -> bool:
        return (self.queued_entries > QUEUED_ENTRIES_PER_NODE * max(self.nodes, 1)
                or self.settle_slots_behind > SETTLE_SLOTS_BEHIND)


def pace_for(backlog: Backlog) -> float:
    """The share of the run's speed market time runs at until the next measurement."""
    return SLOW_PACE if backlog.is_behind() else 1.0
