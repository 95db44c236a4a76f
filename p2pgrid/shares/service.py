"""The share services of a node: a pool host's programme and an LP's standing instruction to
invest (see ``p2pgrid.service`` for the service protocol).

``ShareHostService`` ("shares") runs on a node whose config says ``[shares] offer = true`` and
``[pool] enabled = true``. It runs the host's side of ``p2pgrid.shares.rules``:

* at start, if none of the host's programmes is active, it offers one on the ``[shares]`` terms
  (lock-up and sale end counted from ``node.clock``; the lock-up rounded up to a slot start);
* then, every ``POLL_S`` real seconds, it asks ``shares.planning.plan_host_actions`` what to write
  next on the certified state and writes it: issues bought shares (or hands an escrow back with
  ``swap_decline`` when the cap or the holder limit is reached, or its deadline is too near or
  past: an issue must be dated before it, a decline is valid at any time), pays the LPs their part of the
  pool fees every ``[shares] payout_every_s`` market seconds, and redeems the LPs' ``share_exit``
  requests once the lock-up is over. The decision is the pure function; this is only the shell.

``ShareInvestorService`` ("shares-investor") runs on a node whose config says ``[shares]
invest_shares = N`` (N > 0): the LP's side, without anybody at the RPC. Every round it asks
``shares.planning.plan_investor_actions`` and writes what it returns: buys shares of the first open
programme of the zone (of ``invest_host`` only, if set) until it holds N, from the balance above
``invest_reserve_uc``; takes back (``release``) an escrow the host left unissued once the host's
certified chain has passed its deadline (the host usually declines it first); and with ``exit_after_lockup = true`` asks for every share back once a programme's
lock-up slot is reached (the host's service redeems it at par).

Both write one entry at a time: after each certified entry they plan again on the new state, so
what they write is always judged on what the committee has certified, never on entries of their
own in flight.

**Resilient.** A refused entry (``EntryRejected`` / ``BatchRejected``, no quorum, a net error) is
logged and counted, and the next round plans again after a bounded backoff; nothing here stops the
node. An entry some validator may have voted for (``LedgerService.is_in_doubt``) is never replaced
by a new one at its seq: it is offered again as it is until it is certified or another entry is
certified at its seq (as ``settlement.gateway`` does with mints), and only then is planning resumed.

Payout timer: the market instant of the last payout the host's service certified per programme is
kept in memory; a programme not paid out since the service started is due at once (a restart pays
out early, never twice: a payout pays only the fees since the last one). The investor keeps no
memory at all: its instruction is a target, read against the certified state each round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.errors import LedgerError, NetError
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.service import WithLedger
from p2pgrid.shares.rules import SHARE_OFFER_KIND, SHARE_PAYOUT_KIND, programmes
from p2pgrid.shares.planning import (
    HostPolicy, InvestorPolicy, ShareAction, plan_host_actions, plan_investor_actions,
)

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService

log = logging.getLogger(__name__)

POLL_S = 0.2          # real seconds between looks at the certified state when there is nothing to do
RETRY_MAX_S = 5.0     # longest backoff after refusals
# Planning scans the certified state (O(state)); with nothing certified since a plan that found
# nothing to do, plan again only after this many real seconds (time-driven actions: payouts,
# lock-ups, deadlines). 17 simnet nodes in one process polling every 0.2 s slowed vote rounds
# enough for meter readings to straddle their deadline.
IDLE_REPLAN_S = 2.0


def host_policy(shares: Any) -> HostPolicy:
    """The ``HostPolicy`` of a ``[shares]`` config section."""
    return HostPolicy(price_uc=shares.price_uc, fee_share_bps=shares.fee_share_bps, cap_shares=shares.cap_shares,
                      lockup_s=shares.lockup_s, sale_s=shares.sale_s, payout_every_ms=shares.payout_every_s * 1000,
                      residents_only=shares.residents_only)


def investor_policy(shares: Any) -> InvestorPolicy:
    """The ``InvestorPolicy`` of a ``[shares]`` config section."""
    return InvestorPolicy(target_shares=shares.invest_shares,
                          host=bytes.fromhex(shares.invest_host) if shares.invest_host else None,
                          reserve_uc=shares.invest_reserve_uc, exit_after_lockup=shares.exit_after_lockup)


@dataclass
class ShareServiceStats:
    """What a share service wrote and how often the committee refused it (for logs and tests)."""

    written: dict[str, int] = field(default_factory=dict)     # entry kind → certified entries
    refused: int = 0
    rounds: int = 0                                           # plans made on the certified state
    last_error: str = ""


class _ShareWriter:
    """The shell both services share: plan on the certified state, write the first action, one
    entry at a time, with backoff after refusals and in-doubt entries offered again unchanged."""

    name = ""

    def __init__(self, poll_s: float = POLL_S, idle_replan_s: float = IDLE_REPLAN_S) -> None:
        self.poll_s = poll_s
        self.stats = ShareServiceStats()
        self._held: tuple[Any, ShareAction] | None = None     # (signed entry in doubt, what it does)
        self.idle_replan_s = idle_replan_s
        self._idle: tuple[int, float] | None = None    # (ledger height, trio time) of a plan with nothing to do

    def policy_of(self, config: Any) -> Any:
        raise NotImplementedError

    def plan(self, node: WithLedger, ledger: LedgerService, policy: Any) -> list[ShareAction]:
        raise NotImplementedError

    def on_certified(self, node: WithLedger, action: ShareAction) -> None:
        """Hook: ``action``'s entry was certified."""

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ledger = node.ledger
        if ledger is None:
            raise RuntimeError(f"the {self.name} service starts after the ledger service")
        policy = self.policy_of(node.config)
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

    async def step(self, node: WithLedger, ledger: LedgerService, policy: Any) -> bool | None:
        """Write the next entry: True if it was certified, False if refused, None if there was
        nothing to write."""
        if self._held is not None:
            return await self._retry_held(node, ledger)
        height, now = ledger.state.height, trio.current_time()
        if self._idle is not None and self._idle[0] == height and now - self._idle[1] < self.idle_replan_s:
            return None                      # nothing certified since a plan that found nothing to do
        actions = self.plan(node, ledger, policy)
        self.stats.rounds += 1
        if not actions:
            self._idle = (height, now)
            return None
        self._idle = None
        action = actions[0]
        entry = ledger.next_entry(action.kind, action.body)
        return await self._submit(node, ledger, entry, action)

    async def _submit(self, node: WithLedger, ledger: LedgerService, entry: Any, action: ShareAction) -> bool:
        try:
            await ledger.submit(entry)
        except (LedgerError, NetError) as exc:
            self.stats.refused += 1
            self.stats.last_error = str(exc)
            if ledger.is_in_doubt(entry):
                self._held = (entry, action)
            log.info("%s: %s not certified (%s)%s", self.name, action.kind, exc,
                     "; it is in doubt, offering it again" if self._held else "; planning again")
            return False
        self._certified(node, action)
        return True

    async def _retry_held(self, node: WithLedger, ledger: LedgerService) -> bool | None:
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

    def _certified(self, node: WithLedger, action: ShareAction) -> None:
        self.stats.written[action.kind] = self.stats.written.get(action.kind, 0) + 1
        self.on_certified(node, action)


class ShareHostService(_ShareWriter):
    name = "shares"

    def __init__(self, poll_s: float = POLL_S, idle_replan_s: float = IDLE_REPLAN_S) -> None:
        super().__init__(poll_s, idle_replan_s)
        self.last_payout_ms: dict[bytes, int] = {}
        self.may_offer = True

    def policy_of(self, config: Any) -> HostPolicy:
        return host_policy(config.shares)

    def plan(self, node: WithLedger, ledger: LedgerService, policy: HostPolicy) -> list[ShareAction]:
        now = node.clock.now_ms()
        if self.may_offer and any(p.is_active(now) for p in programmes(ledger.state, ledger.me)):
            self.may_offer = False     # a programme runs already (e.g. after a restart): run that one
        return plan_host_actions(ledger.state, ledger.me, now, ledger.rules, policy, self.last_payout_ms,
                                 may_offer=self.may_offer)

    def on_certified(self, node: WithLedger, action: ShareAction) -> None:
        if action.kind == SHARE_OFFER_KIND:
            self.may_offer = False
            log.info("opened share programme %s", action.body.programme_id.hex())
        elif action.kind == SHARE_PAYOUT_KIND:
            self.last_payout_ms[action.body.programme_id] = node.clock.now_ms()


class ShareInvestorService(_ShareWriter):
    name = "shares-investor"

    def policy_of(self, config: Any) -> InvestorPolicy:
        return investor_policy(config.shares)

    def plan(self, node: WithLedger, ledger: LedgerService, policy: InvestorPolicy) -> list[ShareAction]:
        return plan_investor_actions(ledger.state, ledger.me, node.clock.now_ms(), ledger.rules, policy)

    def on_certified(self, node: WithLedger, action: ShareAction) -> None:
        body = action.body
        log.info("investor: %s certified (%s)", action.kind,
                 f"{body.shares} shares of {body.programme_id.hex()}" if hasattr(body, "shares")
                 else body.take_id.hex())


def share_services(config: Any) -> list[Any]:
    """The share services a node with a ledger runs, by config (the registry, ``p2pgrid.node.registry``, adds them)."""
    services: list[Any] = []
    if config.shares.offer and config.pool.enabled:
        services.append(ShareHostService())
    if config.shares.invest_shares > 0:
        services.append(ShareInvestorService())
    return services
