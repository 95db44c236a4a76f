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
from typing import Any

import trio

from p2pgrid.errors import LedgerError, NetError
from p2pgrid.flex.entries import FLEX_REQUEST_KIND, FlexRequest
from p2pgrid.flex.plan import DEFAULT_SETTLE_DELAY_MS, OfferPolicy, flex_actions
from p2pgrid.ledger.messages import entry_hash

__all__ = ["FlexService", "FlexStats"]

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
