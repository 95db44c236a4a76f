"""The share-programme service of a pool host (see ``p2pgrid.node`` for the service protocol).

``ShareHostService`` runs on a node whose config says ``[shares] offer = true`` and ``[pool]
enabled = true``. It runs the host's side of ``p2pgrid.trading.pool_shares``:

* at start, if none of the host's programmes is active, it offers one on the ``[shares]`` terms
  (lock-up and sale end counted from ``node.clock``; the lock-up rounded up to a slot start);
* then, every ``POLL_S`` real seconds, it asks ``pool_shares.plan_host_actions`` what to write
  next on the certified state and writes it: issues bought shares (or hands an escrow back with
  ``swap_decline`` when the cap or the holder limit is reached), pays the LPs their part of the
  pool fees every ``[shares] payout_every_s`` market seconds, and redeems the LPs' ``share_exit``
  requests once the lock-up is over. The decision is the pure function; this is only the shell.

One entry at a time: after each certified entry it plans again on the new state, so what it writes
is always judged on what the committee has certified, never on entries of its own in flight.

**Resilient.** A refused entry (``EntryRejected`` / ``BatchRejected``, no quorum, a net error) is
logged and counted, and the next round plans again after a bounded backoff; nothing here stops the
node. An entry some validator may have voted for (``LedgerService.is_in_doubt``) is never replaced
by a new one at its seq: it is offered again as it is until it is certified or another entry is
certified at its seq (as ``node_gateway`` does with mints), and only then is planning resumed.

Payout timer: the market instant of the last payout this service certified per programme is kept
in memory; a programme not paid out since the service started is due at once (a restart pays out
early, never twice: a payout pays only the fees since the last one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.errors import LedgerError, NetError
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.trading.pool_shares import (
    SHARE_OFFER_KIND, SHARE_PAYOUT_KIND, HostAction, HostPolicy, plan_host_actions, programmes,
)

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService
    from p2pgrid.node import Node

log = logging.getLogger(__name__)

POLL_S = 0.2          # real seconds between looks at the certified state when there is nothing to do
RETRY_MAX_S = 5.0     # longest backoff after refusals


def host_policy(shares: Any) -> HostPolicy:
    """The ``HostPolicy`` of a ``[shares]`` config section."""
    return HostPolicy(price_uc=shares.price_uc, fee_share_bps=shares.fee_share_bps, cap_shares=shares.cap_shares,
                      lockup_s=shares.lockup_s, sale_s=shares.sale_s, payout_every_ms=shares.payout_every_s * 1000,
                      residents_only=shares.residents_only)


@dataclass
class ShareHostStats:
    """What the service wrote and how often the committee refused it (for logs and tests)."""

    written: dict[str, int] = field(default_factory=dict)     # entry kind → certified entries
    refused: int = 0
    last_error: str = ""


class ShareHostService:
    name = "shares"

    def __init__(self, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self.stats = ShareHostStats()
        self.last_payout_ms: dict[bytes, int] = {}
        self.may_offer = True
        self._held: tuple[Any, HostAction] | None = None     # (signed entry in doubt, what it does)

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ledger = node.ledger
        if ledger is None:
            raise RuntimeError("the share host starts after the ledger service")
        policy = host_policy(node.config.shares)
        task_status.started()
        failures = 0
        while True:
            outcome = await self.step(node, ledger, policy)
            if outcome is None:
                failures = 0
                await trio.sleep(self.poll_s)
            elif outcome:
                failures = 0
            else:
                failures += 1
                await trio.sleep(min(RETRY_MAX_S, self.poll_s * 2 ** min(failures, 8)))

    async def step(self, node: Node, ledger: LedgerService, policy: HostPolicy) -> bool | None:
        """Write the next entry: True if it was certified, False if refused, None if there was
        nothing to write."""
        if self._held is not None:
            return await self._retry_held(node, ledger)
        now = node.clock.now_ms()
        if self.may_offer and any(p.is_active(now) for p in programmes(ledger.state, ledger.me)):
            self.may_offer = False     # a programme runs already (e.g. after a restart): run that one
        actions = plan_host_actions(ledger.state, ledger.me, now, ledger.rules, policy, self.last_payout_ms,
                                    may_offer=self.may_offer)
        if not actions:
            return None
        action = actions[0]
        entry = ledger.next_entry(action.kind, action.body)
        return await self._submit(node, ledger, entry, action)

    async def _submit(self, node: Node, ledger: LedgerService, entry: Any, action: HostAction) -> bool:
        try:
            await ledger.submit(entry)
        except (LedgerError, NetError) as exc:
            self.stats.refused += 1
            self.stats.last_error = str(exc)
            if ledger.is_in_doubt(entry):
                self._held = (entry, action)
            log.info("share %s not certified (%s)%s", action.kind, exc,
                     "; it is in doubt, offering it again" if self._held else "; planning again")
            return False
        self._certified(node, action)
        return True

    async def _retry_held(self, node: Node, ledger: LedgerService) -> bool | None:
        entry, action = self._held  # type: ignore[misc]
        if ledger.is_in_doubt(entry):
            self._held = None
            return await self._submit(node, ledger, entry, action)
        self._held = None
        stored = await ledger.store.account_entries(ledger.me, entry.body.seq, 1)
        if stored and entry_hash(stored[0]) == entry_hash(entry):
            self._certified(node, action)     # certified after all
            return True
        return None

    def _certified(self, node: Node, action: HostAction) -> None:
        self.stats.written[action.kind] = self.stats.written.get(action.kind, 0) + 1
        if action.kind == SHARE_OFFER_KIND:
            self.may_offer = False
            log.info("opened share programme %s", action.body.programme_id.hex())
        elif action.kind == SHARE_PAYOUT_KIND:
            self.last_payout_ms[action.body.programme_id] = node.clock.now_ms()


def share_services(config: Any) -> list[Any]:
    """The share services a node with a ledger runs, by config (``Node.__init__`` adds them)."""
    if config.shares.offer and config.pool.enabled:
        return [ShareHostService()]
    return []
