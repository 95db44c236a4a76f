"""``PoolClient``: the taker's side of pool trading, run under trio.

* **Known pools.** Subscribes to ``p2pgrid/v1/<zone>/pools``. The gossip validator REJECTs an
  announcement that is not a valid ``PoolAnnouncement`` signed by its publisher for this zone, or
  that names a pool id other than ``compute_pool_id(host, zone, slot)`` or energy beyond the cap.
  ``pools(slot)`` merges the certified pools of the replicated ledger with the announcements,
  taking for each pool the newer ``version`` (the ledger wins a tie): these are what the router
  splits a trade against.
* **Fresh state before credits are locked.** Our view of a pool lags its host by the gossip delay
  (ledger entries and announcements), and one swap moves a shallow pool's price by far more than a
  leg's slippage allowance — the cause of the buys refused for slippage "with no swap in between"
  (the swap had happened; our replica had not seen it). So before a BUY locks anything, the client
  asks the host for the pool's state (``PoolQuery``) and prices the swap on it at ``now``; if not
  even part of it is within the limit (the host fills a BUY in part when the pool became dearer,
  see ``pools.entries``) it raises ``SwapRefused("slippage")`` having locked nothing, and the fresh
  state is in ``pools()`` for the next quote. Every host answer refreshes the view the same way.
  A ``SwapResult`` holds the energy actually bought, which may be less than asked.
* **Swaps.** ``swap(side, pool_id, energy_wh, limit_uc)``: for a BUY the client then certifies a
  lock of ``limit_uc`` in its own chain (take id = request id, seller = host, order = pool,
  deadline ``lock_ttl_ms`` ahead and never past gate closure), then sends the signed request on a
  persistent ``/p2pgrid/swap/1`` stream and waits for the host's answer; a SELL needs no lock.
  The lock carries the pool's delivery ``slot`` (as a book take's lock does); settlement reads the
  swap itself from the certified swap record, never from the lock.
  A buy still refused after its lock (another trader's swap came first) has its lock handed back
  by the host's certified ``swap_decline``; if that failed, the host declines it at its deadline
  (a decline is valid at any time), and otherwise the trading service's housekeeping releases it
  once the host's certified chain has passed the deadline (``chain.seller_passed_deadline``). ``swap_leg(leg, limit_price)`` executes a router ``PoolLeg``,
  allowing ``slippage_bps`` for the pool moving between quote and swap, never beyond the limit price.

Time: ``clock()`` returns Unix ms (market time).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from p2pgrid.errors import LedgerError, NetError, TradingError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LockStatus
from p2pgrid.ledger.messages import Lock
from p2pgrid.ledger.service import LedgerService
from p2pgrid.market.amm import Pool
from p2pgrid.market.router import PoolLeg
from p2pgrid.net.orders import pools_topic
from p2pgrid.net.requests import RequestStreams
from p2pgrid.net.transport import GossipMessage, Transport, ValidationResult
from p2pgrid.pools.entries import (
    PoolRecord, SwapRejected, affordable_buy, compute_pool_id, compute_swap, pools_of_slot, swap_record,
)
from p2pgrid.pools.messages import (
    LOCK_RELEASED, MAX_SWAP_BYTES, SWAP_PROTOCOL, PoolAnnouncement, PoolQuery, PoolState, SwapAnswer, SwapRefuseReason,
    SwapRequest, SwapStatus, pool_of_state,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, decode_signed, sign

Clock = Callable[[], int]
BPS = 10_000
WH_PER_KWH = 1000


class SwapRefused(TradingError):
    """The host refused the swap; ``reason`` is a ``SwapRefuseReason`` value. Nothing was swapped."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SwapFailed(TradingError):
    """A swap could not complete (host unreachable, timeout, lock not certified)."""


@dataclass(frozen=True)
class PoolClientConfig:
    slippage_bps: int = 50          # what a leg may move against the taker between quote and swap
    lock_ttl_ms: int = 30_000       # market time a buyer's lock waits for the host's swap
    request_ttl_ms: int = 30_000    # market time a sell request stays valid
    swap_timeout_s: float = 20.0    # real time one swap may take end to end
    settle_wait_s: float = 5.0      # real time to wait for the certified swap to reach our ledger


@dataclass
class PoolClientStats:
    """What this trader's pool trading did: swaps certified; buys stopped by the check against the
    host's state before any lock (``checked_out``); refusals by the host, by reason; of those,
    locks the host handed back at once (``declined``)."""

    swaps: int = 0
    queries: int = 0
    checked_out: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    declined: int = 0


@dataclass(frozen=True)
class SwapResult:
    request_id: bytes
    pool_id: bytes
    host: bytes
    side: Side
    energy_wh: int
    credits_uc: int

    @property
    def average_price(self) -> int:
        """µc per kWh, floor."""
        return self.credits_uc * WH_PER_KWH // self.energy_wh


@dataclass(frozen=True)
class _Known:
    host: bytes
    state: PoolState


class PoolClient:
    """See the module docstring. Build with ``open_pool_client``."""

    def __init__(self, key: NodeKey, zone: str, slot_rules: SlotRules, transport: Transport, ledger: LedgerService,
                 clock: Clock, config: PoolClientConfig | None = None) -> None:
        self.key = key
        self.zone = zone
        self.slot_rules = slot_rules
        self.transport = transport
        self.ledger = ledger
        self.clock = clock
        self.config = config or PoolClientConfig()
        self.announced: dict[bytes, _Known] = {}
        self.rejected_announcements = 0
        self.stats = PoolClientStats()
        self._requests = RequestStreams(transport, SWAP_PROTOCOL, MAX_SWAP_BYTES)

    @property
    def me(self) -> bytes:
        return self.key.public_key

    # --- known pools --------------------------------------------------------------------------

    def pools(self, slot: int, now_ms: int | None = None) -> list[Pool]:
        """The pools of ``slot`` not frozen at ``now_ms``, newest known state of each, by pool id."""
        now = self.clock() if now_ms is None else now_ms
        best: dict[bytes, tuple[int, Pool]] = {}
        for record in pools_of_slot(self.ledger.state, slot):
            best[record.pool.pool_id] = (record.version, record.pool)
        for pool_id, known in self.announced.items():
            if known.state.slot == slot and known.state.version > best.get(pool_id, (-1, None))[0]:
                best[pool_id] = (known.state.version, pool_of_state(known.state, known.host, self.zone))
        return [pool for _, (_, pool) in sorted(best.items()) if not pool.is_frozen(now) and pool.host != self.me]

    def host_of(self, pool_id: bytes) -> bytes | None:
        record = self.ledger.state.pools.get(pool_id)
        if isinstance(record, PoolRecord):
            return record.pool.host
        known = self.announced.get(pool_id)
        return known.host if known else None

    def _pool(self, pool_id: bytes) -> Pool | None:
        """The newest state we know of pool ``pool_id``: certified ledger or host's word, by version."""
        record = self.ledger.state.pools.get(pool_id)
        known = self.announced.get(pool_id)
        if isinstance(record, PoolRecord) and (known is None or record.version >= known.state.version):
            return record.pool
        return pool_of_state(known.state, known.host, self.zone) if known else None

    def _learn(self, host: bytes, states: tuple[PoolState, ...]) -> None:
        """Take the pool states a host sent us (an announcement or an answer) when they are newer."""
        for state in states:
            known = self.announced.get(state.pool_id)
            genuine = state.pool_id == compute_pool_id(host, self.zone, state.slot) \
                and state.energy_wh <= state.energy_cap_wh
            if genuine and (known is None or state.version >= known.state.version):
                self.announced[state.pool_id] = _Known(host, state)

    def validate_announcement(self, sender: bytes, data: bytes) -> ValidationResult:
        """Gossip validator of the pools topic (synchronous, no I/O)."""
        try:
            announcement = decode_signed(data, PoolAnnouncement).body
        except WireError:
            return self._reject()
        if announcement.host != sender or announcement.zone != self.zone:
            return self._reject()
        for state in announcement.pools:
            if state.pool_id != compute_pool_id(announcement.host, self.zone, state.slot) \
                    or state.energy_wh > state.energy_cap_wh:
                return self._reject()
        return ValidationResult.ACCEPT

    def _reject(self) -> ValidationResult:
        self.rejected_announcements += 1
        return ValidationResult.REJECT

    def on_announcement(self, message: GossipMessage) -> None:
        try:
            announcement = decode_signed(message.data, PoolAnnouncement).body
        except WireError:
            return   # the validator passed it: only a transport bug could bring us here
        now = self.clock()
        self._learn(announcement.host, announcement.pools)
        self.announced = {pid: k for pid, k in self.announced.items() if now < k.state.gate_closure_ms}

    # --- swapping -----------------------------------------------------------------------------

    async def swap_leg(self, leg: PoolLeg, limit_price: int | None = None) -> SwapResult:
        """Execute a router ``PoolLeg`` (BUY exact-out, SELL exact-in)."""
        slack = -(-leg.credits_uc * self.config.slippage_bps // BPS)
        if leg.side is Side.BUY:
            limit_uc = leg.credits_uc + slack
            if limit_price is not None:
                limit_uc = max(leg.credits_uc, min(limit_uc, leg.energy_wh * limit_price // WH_PER_KWH))
        else:
            limit_uc = max(0, leg.credits_uc - slack)
            if limit_price is not None:
                floor = -(-leg.energy_wh * limit_price // WH_PER_KWH)
                limit_uc = min(leg.credits_uc, max(limit_uc, floor))
        return await self.swap(leg.side, leg.pool_id, leg.energy_wh, limit_uc)

    async def swap(self, side: Side, pool_id: bytes, energy_wh: int, limit_uc: int) -> SwapResult:
        """Swap exactly ``energy_wh`` with pool ``pool_id``: BUY paying at most ``limit_uc`` µc,
        SELL receiving at least ``limit_uc`` µc. Returns the certified swap or raises."""
        pool = self._pool(pool_id)
        host = self.host_of(pool_id)
        if pool is None or host is None:
            raise SwapRefused(SwapRefuseReason.UNKNOWN_POOL.value, f"no known pool {pool_id.hex()}")
        now = self.clock()
        request_id = os.urandom(16)
        deadline = min(pool.gate_closure_ms, now + (self.config.lock_ttl_ms if side is Side.BUY
                                                     else self.config.request_ttl_ms))
        request = SwapRequest(request_id=request_id, trader=self.me, host=host, pool_id=pool_id, zone=self.zone,
                              slot=pool.slot, side=side, energy_wh=energy_wh, limit_uc=limit_uc, expires_ms=deadline)
        with trio.move_on_after(self.config.swap_timeout_s) as scope:
            if side is Side.BUY:
                await self._check_with_host(host, pool_id, energy_wh, limit_uc)
                await self._lock(request, deadline)
            answer = await self._ask(host, sign(request, self.key).encoded, request_id)
            if answer.status is not SwapStatus.SWAPPED:
                reason = answer.reason.split(":")[0]
                self.stats.refused[reason] = self.stats.refused.get(reason, 0) + 1
                if answer.reason.endswith(LOCK_RELEASED):
                    self.stats.declined += 1
                    await self._see_lock_closed(request_id, host)
                raise SwapRefused(reason, answer.reason)
            self.stats.swaps += 1
            await self._see_swap(request_id, host)
        if scope.cancelled_caught:
            raise SwapFailed(f"swap with pool {pool_id.hex()[:8]} timed out after {self.config.swap_timeout_s} s")
        record = swap_record(self.ledger.state, request_id)
        if record is not None:
            return SwapResult(request_id, pool_id, host, side, record.energy_wh, record.credits_uc)
        return SwapResult(request_id, pool_id, host, side, answer.energy_wh, answer.credits_uc)

    async def _check_with_host(self, host: bytes, pool_id: bytes, energy_wh: int, limit_uc: int) -> None:
        """Price a buy on the host's current state (see the module docstring); raise
        ``SwapRefused`` — with nothing locked — if the host would refuse it."""
        query = PoolQuery(query_id=os.urandom(16), trader=self.me, host=host, pool_id=pool_id)
        self.stats.queries += 1
        answer = await self._ask(host, sign(query, self.key).encoded, query.query_id)
        if answer.status is not SwapStatus.STATE:
            raise SwapRefused(answer.reason.split(":")[0], answer.reason)
        pool = self._pool(pool_id)
        if pool is None:
            raise SwapRefused(SwapRefuseReason.UNKNOWN_POOL.value, f"host sent no state of pool {pool_id.hex()}")
        now = self.clock()
        try:
            _, quote = compute_swap(pool, Side.BUY, energy_wh, now)
        except SwapRejected as exc:
            raise SwapRefused(exc.reason.value, str(exc)) from None
        if quote.credits_uc > limit_uc and affordable_buy(pool, energy_wh, limit_uc, now) is None:
            self.stats.checked_out += 1
            raise SwapRefused(SwapRefuseReason.SLIPPAGE.value,
                              f"{SwapRefuseReason.SLIPPAGE.value}: the pool now asks {quote.credits_uc} µc "
                              f"> limit {limit_uc} µc, and no part of it is within (checked before locking)")

    async def _lock(self, request: SwapRequest, deadline_ms: int) -> None:
        lock = Lock(take_id=request.request_id, seller=request.host, order_id=request.pool_id,
                    order_owner=request.host, order_size_wh=request.energy_wh, qty_wh=request.energy_wh,
                    price=request.limit_uc * WH_PER_KWH // request.energy_wh, amount=request.limit_uc,
                    deadline_ms=deadline_ms, slot=request.slot)
        try:
            await self.ledger.submit(self.ledger.next_entry("lock", lock))
        except LedgerError as exc:
            raise SwapFailed(f"could not certify the lock for a pool buy: {exc}") from exc

    async def _see_swap(self, request_id: bytes, host: bytes) -> None:
        """Wait (bounded) until the certified swap is in our ledger, pulling the host's chain."""
        if swap_record(self.ledger.state, request_id) is not None:
            return
        with trio.move_on_after(self.config.settle_wait_s):
            await self._catch_up(host)   # gossip may still bring it; the answer's certificate proves it
            while swap_record(self.ledger.state, request_id) is None:
                await self.ledger.wait_for_height(self.ledger.state.height + 1)

    async def _see_lock_closed(self, request_id: bytes, host: bytes) -> None:
        """Wait (bounded) until the host's certified decline of our lock is in our ledger, so the
        caller sees the credits back (and our housekeeping does not try a release of it)."""
        def still_open() -> bool:
            record = self.ledger.state.locks.get(request_id)
            return record is not None and record.status is LockStatus.OPEN

        if not still_open():
            return
        with trio.move_on_after(self.config.settle_wait_s):
            await self._catch_up(host)
            while still_open():
                await self.ledger.wait_for_height(self.ledger.state.height + 1)

    async def _catch_up(self, host: bytes) -> None:
        with trio.move_on_after(self.config.settle_wait_s):
            try:
                await self.ledger.sync_with(host)
            except (NetError, LedgerError):
                pass   # best effort: the next quote may be stale and is refused again, within the rounds

    async def _ask(self, host: bytes, frame: bytes, request_id: bytes) -> SwapAnswer:
        """Send one signed request or query; the host's answer, whose pool state we learn."""
        try:
            reply = await self._requests.request(host, frame)
        except NetError as exc:
            raise SwapFailed(f"pool host {host.hex()[:8]} unreachable: {exc}") from exc
        try:
            answer = decode_signed(reply, SwapAnswer).body
        except WireError as exc:
            raise SwapFailed(f"pool host {host.hex()[:8]} sent a bad answer: {exc}") from exc
        if answer.request_id != request_id or answer.host != host:
            raise SwapFailed("the answer does not match the request")
        self._learn(host, answer.pools)
        return answer

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        subscription = await self.transport.subscribe(pools_topic(self.zone), self.validate_announcement)
        task_status.started()
        try:
            async for message in subscription:
                self.on_announcement(message)
        finally:
            with trio.CancelScope(shield=True):
                await subscription.aclose()
            await self._requests.aclose()


@asynccontextmanager
async def open_pool_client(key: NodeKey, zone: str, slot_rules: SlotRules, transport: Transport,
                           ledger: LedgerService, clock: Clock,
                           config: PoolClientConfig | None = None) -> AsyncIterator[PoolClient]:
    client = PoolClient(key, zone, slot_rules, transport, ledger, clock, config)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        yield client
        nursery.cancel_scope.cancel()
