"""Subscriptions: fan node events out to WebSocket clients without ever blocking the node.

Shape of the flow::

    node stream ──(one pump task per topic)──▶ SubscriptionHub.publish (synchronous, never waits)
                                                   │ offer_event (bounded, non-blocking)
                                                   ▼
                                  Outbox of each WebSocket connection ──▶ its writer task ──▶ socket

Rules:

* ``publish`` encodes an event once and *offers* it to each matching subscription's connection
  outbox. It never awaits, so a pump keeps draining its node stream whatever clients do.
* Each connection's outbox holds at most ``event_capacity`` undelivered events. An event that does
  not fit means the client reads too slowly: **all** its subscriptions are dropped at once, and a
  ``subscription_dropped`` notice per subscription is queued after the events already buffered
  (the notice may exceed the capacity by one per subscription — that is its reserved room). The
  connection stays open; the client may subscribe again.
* The buffer absorbs bursts, not just slowness: a pump hands over one event per scheduler round
  while a writer needs about two, so a burst of more than ~2× ``event_capacity`` events with no
  pause can drop even a reader that keeps up on average. The default (1024) covers a whole gossip
  batch (≤ 256 orders) with room to spare.
* Responses to the client's own calls go through a separate, smaller queue whose back-pressure
  falls on that client's reader: a client that sends calls but reads no answers stalls only itself.

Notifications sent to a subscriber (JSON-RPC notifications, no ``id``)::

    {"jsonrpc":"2.0","method":"subscription",
     "params":{"subscription":"<id>","topic":"book","result":{...BookUpdate...}}}
    {"jsonrpc":"2.0","method":"subscription_dropped",
     "params":{"subscription":"<id>","topic":"book","reason":"..."}}
"""

from __future__ import annotations

import enum
import itertools
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import trio

from p2pgrid.rpc.codec import to_json
from p2pgrid.rpc.errors import NeedsWebSocket, TooManySubscriptions, UnknownSubscription
from p2pgrid.rpc.jsonrpc import encode


class Topic(str, enum.Enum):
    BOOK = "book"
    FILLS = "fills"
    TELEMETRY = "telemetry"
    SETTLEMENTS = "settlements"


class Outbox:
    """Messages waiting to be written to one WebSocket connection."""

    def __init__(self, event_capacity: int, response_capacity: int = 32, max_subscriptions: int = 64) -> None:
        self.event_capacity = event_capacity
        self.max_subscriptions = max_subscriptions
        self._events: deque[str] = deque()
        self._responses: deque[str] = deque()
        self._response_slots = trio.Semaphore(response_capacity)
        self._wakeup = trio.Event()
        self._last_was_response = False
        self.subscriptions: set[str] = set()

    def offer_event(self, text: str) -> bool:
        if len(self._events) >= self.event_capacity:
            return False
        self._events.append(text)
        self._wakeup.set()
        return True

    def put_notice(self, text: str) -> None:
        self._events.append(text)
        self._wakeup.set()

    async def put_response(self, text: str) -> None:
        await self._response_slots.acquire()
        self._responses.append(text)
        self._wakeup.set()

    async def next_message(self) -> str:
        """The next message to write; responses first. Call ``sent()`` once it is written."""
        while not (self._responses or self._events):
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        if self._responses:
            self._last_was_response = True
            return self._responses.popleft()
        self._last_was_response = False
        return self._events.popleft()

    def sent(self) -> None:
        if self._last_was_response:
            self._last_was_response = False
            self._response_slots.release()

    @property
    def queued_events(self) -> int:
        return len(self._events)


@dataclass
class Subscription:
    sub_id: str
    topic: Topic
    outbox: Outbox
    zone: str | None = None
    slot: int | None = None

    def wants(self, event: Any) -> bool:
        if self.zone is not None and getattr(event, "zone", self.zone) != self.zone:
            return False
        return self.slot is None or getattr(event, "slot", self.slot) == self.slot


@dataclass
class HubStats:
    published: int = 0               # events received from the node
    delivered: int = 0               # events queued to subscribers
    dropped_connections: int = 0     # slow subscribers dropped
    dropped_subscriptions: int = 0


@dataclass
class SubscriptionHub:
    stats: HubStats = field(default_factory=HubStats)
    _by_topic: dict[Topic, dict[str, Subscription]] = field(
        default_factory=lambda: {t: {} for t in Topic})
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _salt: str = field(default_factory=lambda: secrets.token_hex(4))

    def subscribe(self, topic: Topic, outbox: Outbox, zone: str | None = None,
                  slot: int | None = None) -> Subscription:
        if len(outbox.subscriptions) >= outbox.max_subscriptions:
            # Each subscription costs a filter test per published event: one connection must not
            # slow the fan-out for everyone.
            raise TooManySubscriptions(f"this connection already holds {outbox.max_subscriptions} "
                                       "subscriptions; unsubscribe first")
        sub = Subscription(f"{self._salt}{next(self._ids):08x}", topic, outbox, zone, slot)
        self._by_topic[topic][sub.sub_id] = sub
        outbox.subscriptions.add(sub.sub_id)
        return sub

    def unsubscribe(self, sub_id: str, outbox: Outbox) -> None:
        if sub_id not in outbox.subscriptions:
            raise UnknownSubscription(f"no subscription {sub_id!r} on this connection")
        outbox.subscriptions.discard(sub_id)
        for subs in self._by_topic.values():
            subs.pop(sub_id, None)

    def close_outbox(self, outbox: Outbox) -> None:
        """Forget every subscription of a closed connection."""
        for sub_id in list(outbox.subscriptions):
            self.unsubscribe(sub_id, outbox)

    def subscriber_count(self, topic: Topic | None = None) -> int:
        topics = [topic] if topic is not None else list(Topic)
        return sum(len(self._by_topic[t]) for t in topics)

    def publish(self, topic: Topic, event: Any) -> None:
        """Offer one node event to every matching subscription. Never waits."""
        self.stats.published += 1
        subs = [s for s in self._by_topic[topic].values() if s.wants(event)]
        if not subs:
            return
        result = encode(to_json(event))
        for sub in subs:
            if sub.sub_id not in sub.outbox.subscriptions:
                continue    # dropped earlier in this loop together with its connection
            text = ('{"jsonrpc":"2.0","method":"subscription","params":{"subscription":"%s",'
                    '"topic":"%s","result":%s}}' % (sub.sub_id, topic.value, result))
            if sub.outbox.offer_event(text):
                self.stats.delivered += 1
            else:
                self._drop_slow(sub.outbox)

    def _drop_slow(self, outbox: Outbox) -> None:
        reason = (f"subscriber too slow: {outbox.event_capacity} undelivered events buffered; "
                  "subscribe again when ready")
        self.stats.dropped_connections += 1
        for sub_id in sorted(outbox.subscriptions):
            topic = next(t for t, subs in self._by_topic.items() if sub_id in subs)
            self.unsubscribe(sub_id, outbox)
            self.stats.dropped_subscriptions += 1
            outbox.put_notice(encode({"jsonrpc": "2.0", "method": "subscription_dropped",
                                      "params": {"subscription": sub_id, "topic": topic.value,
                                                 "reason": reason}}))


async def pump(hub: SubscriptionHub, topic: Topic, stream: AsyncIterator[Any]) -> None:
    """Drain one node event stream into the hub for as long as it runs."""
    async for event in stream:
        hub.publish(topic, event)


@dataclass
class Session:
    """What a handler knows of the connection it serves: the hub and, on a WebSocket, its outbox."""

    hub: SubscriptionHub
    outbox: Outbox | None = None

    def require_outbox(self) -> Outbox:
        if self.outbox is None:
            raise NeedsWebSocket("subscriptions need a WebSocket connection (ws://…/ws)")
        return self.outbox
