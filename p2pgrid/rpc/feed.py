"""``EventFeed``: broadcast of node events to stream readers, where publishing never waits.

Each ``stream()`` reader gets its own bounded trio memory channel, fed with ``send_nowait``. A
reader that falls behind loses the events that do not fit (counted in ``dropped``); a reader that
closed its channel is forgotten. So the node's hot path (books, ledger) can publish from
synchronous code and is never slowed down by a stuck consumer (RPC server, metrics).
"""

from __future__ import annotations

from typing import AsyncIterator, Generic, TypeVar

import trio

T = TypeVar("T")

__all__ = ["EventFeed"]


class EventFeed(Generic[T]):
    """Broadcast of events to stream readers; publishing never waits."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.published = 0
        self.dropped = 0
        self._readers: list[trio.MemorySendChannel[T]] = []

    @property
    def readers(self) -> int:
        return len(self._readers)

    def stream(self) -> AsyncIterator[T]:
        send, receive = trio.open_memory_channel[T](self.capacity)
        self._readers.append(send)
        return receive

    def publish(self, event: T) -> None:
        self.published += 1
        for reader in list(self._readers):
            try:
                reader.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._readers.remove(reader)
