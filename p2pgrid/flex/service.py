"""The flexibility market in a running node: ``FlexService`` (trio shell around ``flex.plan``).

Every ``poll_s`` real seconds it asks ``flex.plan.flex_actions`` what the node should write now —
offers as a provider, the award and settlement of its own requests as a requester — given its
certified ledger state and market time, signs each and submits it, one at a time. A requester
posts a request with ``post_request`` (the RPC ``flex_request``, or simnet's operator).

**Retries.** An entry some validator may have voted for (``is_in_doubt``) is offered again as it
is before anything new, never replaced (so a request is never awarded or settled twice by two
different entries); one refused for good is planned afresh next round from the new state.

**Time.** Market time comes from ``clock`` (Unix ms). No validity rule reads a clock, so a slow
round only makes an entry later: an offer signed before the deadline is valid whenever it is
certified; an award is signed between the deadline and the first slot; a settle at the last
slot's metering due plus W (``settle_delay_ms``), then reconciliations as late readings arrive.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from p2pgrid.errors import LedgerError, NetError
from p2pgrid.flex.agent import home_limits
from p2pgrid.flex.entries import FLEX_REQUEST_KIND, FlexRequest, FlexRequestRecord
from p2pgrid.flex.plan import DEFAULT_SETTLE_DELAY_MS, OfferPolicy, flex_actions
from p2pgrid.devices.service import WithDevices
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.service import WithLedger

__all__ = ["FlexHost", "FlexNodeService", "FlexService", "FlexStats", "flex_services", "node_offer_limits"]

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class FlexStats:
    written: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    last_error: str = ""


class FlexService:
    """See the module docstring. ``ledger`` is the node's ``LedgerService``."""

    name = "flex"

    def __init__(self, ledger: Any, clock: Callable[[], int], *, policy: OfferPolicy | None = None,
                 settle_delay_ms: int = DEFAULT_SETTLE_DELAY_MS, poll_s: float = POLL_S) -> None:
        if settle_delay_ms < 0:
            raise ValueError("settle_delay_ms must be >= 0")
        self.ledger = ledger
        self.clock = clock
        self.policy = policy
        self.settle_delay_ms = settle_delay_ms
        self.poll_s = poll_s
        self.stats = FlexStats()
        self._held: Any = None
        self._lock = trio.Lock()        # one writer of this node's flex entries at a time

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await self.round()
            await trio.sleep(self.poll_s)

    async def round(self) -> None:
        async with self._lock:
            if self._held is not None and not await self._retry_held():
                return
            ledger = self.ledger
            for action in flex_actions(ledger.state, ledger.rules, ledger.me, self.clock(), self.policy,
                                       self.settle_delay_ms):
                if not await self._submit(ledger.next_entry(action.kind, action.body)):
                    return                   # plan again from the new state next round

    async def post_request(self, terms: FlexRequest) -> bool:
        """Post a request from this node's chain; True once certified (False: refused or in doubt,
        the reason in ``stats.last_error``; an entry in doubt is offered again by ``round``)."""
        async with self._lock:
            if self._held is not None and not await self._retry_held():
                return False
            return await self._submit(self.ledger.next_entry(FLEX_REQUEST_KIND, terms))

    async def _submit(self, entry: Any) -> bool:
        try:
            await self.ledger.submit(entry)
        except (LedgerError, NetError) as exc:
            self.stats.refused += 1
            self.stats.last_error = str(exc)
            if self.ledger.is_in_doubt(entry):
                self._held = entry
            log.info("flex %s not certified (%s)", entry.body.kind, exc)
            return False
        self.stats.written[entry.body.kind] += 1
        return True

    async def _retry_held(self) -> bool:
        """Offer the entry in doubt again; True once it is decided one way or the other."""
        entry, self._held = self._held, None
        if self.ledger.is_in_doubt(entry):
            return await self._submit(entry)
        store = getattr(self.ledger, "store", None)
        if store is not None:
            stored = await store.account_entries(self.ledger.me, entry.body.seq, 1)
            if stored and entry_hash(stored[0]) == entry_hash(entry):
                self.stats.written[entry.body.kind] += 1     # certified after all
        return True


class FlexHost(WithLedger, WithDevices, Protocol):
    """What the flex service uses of the node: its ledger, config, clock and device telemetry."""


def node_offer_limits(node: FlexHost, request: FlexRequestRecord) -> tuple[int, ...] | None:
    """What a node's devices can move per slot of ``request`` now: its battery (``[devices.battery]``,
    from the latest reading's state of charge), capped by ``[flex] max_wh_per_slot``; without a
    battery, ``max_wh_per_slot`` alone (a load the owner sheds by hand). None: nothing."""
    from p2pgrid.agent.agent_trader import battery_limits

    config = node.config
    cap = config.flex.max_wh_per_slot
    slots, slot_s = request.slots, request.slot_length_s
    battery = node.telemetry.battery() if config.devices.battery is not None and node.telemetry else None
    if battery is None:
        return tuple(cap for _ in slots) if cap else None
    soc_wh = round(battery.soc_pct * battery.capacity_wh / 100)
    limits = home_limits(request.terms.direction, slots, slot_s, battery_limits(config), soc_wh)
    if limits is None:
        return None
    return tuple(min(wh, cap) for wh in limits) if cap else limits


class FlexNodeService:
    """``FlexService`` on a node (name ``flex``): every node with a ledger awards and settles the
    requests it posts; with ``[flex] offer`` it also offers, signed for its meter key's connection."""

    name = "flex"

    def __init__(self) -> None:
        self.service: FlexService | None = None

    async def run(self, node: FlexHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from p2pgrid.settlement.node_service import meter_key_of

        if node.ledger is None:
            raise RuntimeError("flex starts after the ledger service")
        config = node.config
        policy = None
        if config.flex.offer and node.ledger.me != node.ledger.rules.gateway:
            policy = OfferPolicy(meter_key_of(config).public_key, config.flex.price_uc_per_kwh,
                                 lambda request: node_offer_limits(node, request))
        self.service = FlexService(node.ledger, node.clock.now_ms, policy=policy)
        await self.service.run(task_status=task_status)


def flex_services(config: Any) -> list[Any]:
    """The flex service (on every node with a ledger: the registry starts it only there)."""
    return [FlexNodeService()]
