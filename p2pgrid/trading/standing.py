"""Back-off and a local reputation score of peers that waste this node's time (pure).

Used twice by the trading service: for **makers** that do not answer this node's takes (the
router skips them), and for **takers** that let this node's reservations lapse (their takes are
refused, ``lapsed_holds``). Both are described here for makers; a taker's lapsed hold is its
silence.

A maker that does not answer a round trip of a take (unreachable, no handler for the take
protocol, a stream that never replies within the taker's timeout, an answer that does not decode or
match) is a **silence**. A signed answer, refusals included, is not: the maker is alive and
speaks the protocol.

* **Score.** ``score(maker, now) = −penalty``, where each silence adds 1 to a penalty that halves
  every ``half_life_s`` (0 = never silent; −3 ≈ three recent silences). Only time heals it: a
  maker that answers the first round trip of a take and then falls silent (leaving the buyer's
  lock until its deadline) must not wipe its record by answering.
* **Back-off.** A silence makes the router skip the maker's orders for
  ``min(base_s × 2^(penalty − 1), cap_s)`` seconds, the penalty counted with this silence: 5 s
  for a first silence, then 10, 20, … up to 300 s by default for silences in quick succession.

Time ``now_s`` is seconds of a monotonic real clock passed in by the caller (the service uses
trio's), never market time: under a scaled clock (simnet) market time races ahead of the real
seconds a take needs, and the back-off is about real waiting. Memory is bounded by the makers with
a record; ``forget_recovered`` drops those whose back-off is over and penalty has decayed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BackoffRule:
    base_s: float = 5.0           # back-off after the first silence of a run
    cap_s: float = 300.0          # the longest back-off
    half_life_s: float = 600.0    # the score's penalty halves in this long
    forget_below: float = 0.01    # a penalty this small (and no back-off) is forgotten

    def backoff_s(self, penalty: float) -> float:
        """How long to skip a maker whose penalty, this silence included, is ``penalty``."""
        if penalty <= 0:
            return 0.0
        exponent = min(max(penalty - 1.0, 0.0), 32.0)    # 2^32 × base is far past any cap
        return min(self.base_s * 2.0 ** exponent, self.cap_s)

    def decayed(self, penalty: float, elapsed_s: float) -> float:
        return penalty * 0.5 ** (max(elapsed_s, 0.0) / self.half_life_s)


@dataclass
class _Record:
    backoff_until_s: float = -math.inf
    penalty: float = 0.0
    penalty_at_s: float = 0.0
    silences: int = 0             # in all, for reports


@dataclass
class PeerStanding:
    """Per peer: decaying penalty and back-off deadline (module docstring)."""

    rule: BackoffRule = field(default_factory=BackoffRule)
    _records: dict[bytes, _Record] = field(default_factory=dict)

    def on_silence(self, maker: bytes, now_s: float) -> float:
        """Record a silence; returns the back-off it starts (seconds)."""
        record = self._records.setdefault(maker, _Record(penalty_at_s=now_s))
        record.silences += 1
        record.penalty = self.rule.decayed(record.penalty, now_s - record.penalty_at_s) + 1.0
        record.penalty_at_s = now_s
        backoff = self.rule.backoff_s(record.penalty)
        record.backoff_until_s = max(record.backoff_until_s, now_s + backoff)
        return backoff

    def is_backing_off(self, maker: bytes, now_s: float) -> bool:
        record = self._records.get(maker)
        return record is not None and now_s < record.backoff_until_s

    def backing_off(self, now_s: float) -> frozenset[bytes]:
        """The makers skipped at ``now_s``."""
        return frozenset(m for m, r in self._records.items() if now_s < r.backoff_until_s)

    def score(self, maker: bytes, now_s: float) -> float:
        record = self._records.get(maker)
        return 0.0 if record is None else -self.rule.decayed(record.penalty, now_s - record.penalty_at_s)

    def silences(self, maker: bytes) -> int:
        record = self._records.get(maker)
        return 0 if record is None else record.silences

    def scores(self, now_s: float) -> dict[bytes, float]:
        return {maker: self.score(maker, now_s) for maker in self._records}

    def forget_recovered(self, now_s: float) -> None:
        """Drop the makers whose back-off is over and whose penalty has faded."""
        gone = [m for m, r in self._records.items()
                if now_s >= r.backoff_until_s and -self.score(m, now_s) < self.rule.forget_below]
        for maker in gone:
            del self._records[maker]
