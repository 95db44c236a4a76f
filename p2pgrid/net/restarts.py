"""How often the libp2p host may be restarted before the node gives up (pure; time passed in).

``libp2p_host`` restarts its py-libp2p host when one of the library's own loops fails. A failure
that comes back at once (a bug that trips on every start, a port taken for good) must not turn
into a restart loop that hides it: each restart waits longer than the one before, and once more
than ``max_restarts`` failures fall within ``window_s`` the transport stops with a fatal error.

    budget = RestartBudget(RestartPolicy(max_restarts=3, window_s=60, first_delay_s=1))
    budget.next_delay(now_s=0)     # 1.0   first failure: restart after 1 s
    budget.next_delay(now_s=5)     # 2.0   the pause doubles (up to max_delay_s)
    budget.next_delay(now_s=9)     # 4.0
    budget.next_delay(now_s=12)    # None  a 4th failure within 60 s: give up

Failures older than the window are forgotten, so a node that fails once a day restarts every
time, after ``first_delay_s``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    """Bounds on restarting the libp2p host. All times in seconds."""

    max_restarts: int = 5          # restarts allowed within window_s; one more failure is fatal
    window_s: float = 600.0
    first_delay_s: float = 0.5     # pause before the first restart of a window
    max_delay_s: float = 30.0      # the pause doubles with each failure in the window, up to this

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window_s <= 0 or not 0 <= self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"inconsistent restart policy: {self}")


class RestartBudget:
    """The failures of the last ``policy.window_s`` seconds, and what the next one allows."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._failures: deque[float] = deque()

    def next_delay(self, now_s: float) -> float | None:
        """Record a failure at ``now_s``: the pause before restarting, or None to give up."""
        while self._failures and self._failures[0] <= now_s - self.policy.window_s:
            self._failures.popleft()
        self._failures.append(now_s)
        if len(self._failures) > self.policy.max_restarts:
            return None
        return min(self.policy.max_delay_s, self.policy.first_delay_s * 2 ** (len(self._failures) - 1))

    @property
    def recent_failures(self) -> int:
        """Failures recorded within the window as of the last ``next_delay`` call."""
        return len(self._failures)
