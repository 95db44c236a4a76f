"""Token bucket for per-connection request rates (pure: time is passed in, in seconds).

A bucket holds at most ``burst`` tokens and gains ``rate`` tokens per second. Each JSON-RPC call
(each element of a batch) takes one token; a payload that cannot take all its tokens is refused
whole and takes none. A fresh bucket is full, so a client may burst ``burst`` calls at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = -1.0
    updated_s: float | None = None

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    def try_take(self, count: int, now_s: float) -> bool:
        if self.updated_s is not None and now_s > self.updated_s:
            self.tokens = min(float(self.burst), self.tokens + (now_s - self.updated_s) * self.rate)
        self.updated_s = now_s if self.updated_s is None else max(self.updated_s, now_s)
        if count > self.tokens:
            return False
        self.tokens -= count
        return True
