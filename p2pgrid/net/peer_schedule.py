"""Which peers an anti-entropy loop pulls from now (pure: peers and ``now_s`` in, peers out).

Ledger sync (``/p2pgrid/sync/1``) and book reconciliation (``/p2pgrid/books/1``) both repair what
gossip missed by pulling from peers. ``PeerSchedule.due(peers, now_s)`` answers, each time the
loop wakes up, with

* every peer that is in ``peers`` now but was not at the previous call: a peer just connected,
  reconnected, or just identified as speaking the protocol is pulled from at once — what a node
  missed while it was away, or before anyone joined its topic, comes back without waiting. At
  most ``burst`` of them per call (the others the next calls): a node that connects to many
  peers at once does not pull from all of them in one go;
* once per ``interval_s``, one more peer, taking the peers in turn (sorted by key, so every
  peer gets its turn however the set changes), for what gossip misses while connected.

``peers`` should be the peers that speak the protocol (``transport.peers_supporting``), so a peer
that does not is never asked.
"""

from __future__ import annotations

from collections.abc import Iterable


class PeerSchedule:
    """Peers to pull from: new ones at once, then one in turn per interval (module docstring)."""

    def __init__(self, interval_s: float, burst: int = 4) -> None:
        if interval_s <= 0 or burst < 1:
            raise ValueError("an anti-entropy interval is positive, and at least one new peer is pulled from")
        self.interval_s = interval_s
        self.burst = burst
        self._known: frozenset[bytes] = frozenset()
        self._next_turn_s: float | None = None
        self._last_turn: bytes | None = None

    def due(self, peers: Iterable[bytes], now_s: float) -> list[bytes]:
        current = frozenset(peers)
        new = sorted(current - self._known)
        due, later = new[:self.burst], new[self.burst:]
        self._known = current - frozenset(later)
        if self._next_turn_s is None:
            self._next_turn_s = now_s + self.interval_s
        elif now_s >= self._next_turn_s and current:
            self._next_turn_s = now_s + self.interval_s
            turn = self._after(sorted(current), self._last_turn)
            self._last_turn = turn
            if turn not in due:
                due.append(turn)
        return due

    @staticmethod
    def _after(ordered: list[bytes], last: bytes | None) -> bytes:
        """The first peer after ``last`` in key order (wrapping round)."""
        if last is not None:
            for peer in ordered:
                if peer > last:
                    return peer
        return ordered[0]
