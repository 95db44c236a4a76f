"""``PoolHost``: a storage node hosting AMM pools, run under trio (the shell around ``pools.entries``).

* **Pools.** For each of the next ``slots_ahead`` tradable slots the host opens one pool (a
  certified ``pool_open``) seeded with ``seed_energy_wh`` (at most its cap) and
  ``initial_credits_uc`` — or, when ``terms`` answers for the slot (a station run by the agent
  strategy), with the energy it plans to export then, priced at its forecast of the local price. A pool's energy cap is what the battery can deliver in that slot:
  ``deliverable_energy_wh(available_wh // slots_ahead, power_limit_w, slot length)`` — the
  available energy is shared evenly among the hosted slots, so the pools together never promise
  more than the battery holds. Each tick the cap is recomputed from ``config.battery()``; a lower
  cap (or one higher by at least ``cap_step_wh``) is certified as a ``pool_update``, which trims
  the reserve to it. With ``open_until_ms`` no pool opens for a slot metered after it.
* **Trims after gate closure.** A pool past its gate closure is frozen, but until its slot ends
  the host still owes its delivery: when the battery can deliver less than such a pool's cap
  (``config.battery()`` says so, e.g. no energy at all once the node's battery stopped
  answering), the host certifies a ``pool_update`` that only lowers the cap — the one update a
  frozen pool takes (``pool_entries``).
* **Announcements.** The certified state of every live pool is published on
  ``p2pgrid/v1/<zone>/pools`` at start, after changes (at most once per tick) and every
  ``announce_interval_s``.
* **Swaps.** ``/p2pgrid/swap/1`` on persistent streams. A request is checked (signed by the
  sender, this host, a known live pool, limit), a BUY waits for the trader's certified lock
  (pulling the trader's chain if gossip has not brought it), then the swap is computed from the
  certified pool state and certified — one swap at a time (``_sequencer``), so each swap is
  computed on the state the previous one left. The host dry-runs the validators' own rule
  (``pools.entries.validate_swap``) before submitting, so what it refuses it refuses with the
  validators' reason. After gate closure the pool is frozen and every swap is refused
  (``pool_frozen``).
* **Declines.** A refused BUY whose certified lock names this host and pool has that lock handed
  back at once by a certified ``swap_decline`` (in the same sequence as swaps), so a refusal never
  holds the buyer's credits until the lock's deadline. A decline is valid at any time (only a
  filled lock refuses it), so each tick the host also declines every lock of its pools still open
  at its deadline (a buyer that locked and never asked, or whose request failed): the buyer's
  credits come back at once, and the host's chain is dated past the deadline, which is what the
  buyer's own ``release`` waits for (``chain.seller_passed_deadline``).
* **Queries.** A ``PoolQuery`` is answered with the pool's certified state; so is every swap
  answer. Takers quote on replicas that lag this host; these answers let them catch up before they
  lock credits (see ``pools.messages``).

Time: ``clock()`` returns Unix ms (market time); real waiting is bounded by trio timeouts. The
ledger dates each entry with the same clock when it is built (``LedgerService.next_entry``), after
the body's ``at_ms`` was read, so ``at_ms ≤ entry.time_ms`` as ``pools.entries`` requires; the
validators judge every limit on that signed date, never on when they vote.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import cast

import trio

from p2pgrid.errors import LedgerError, NetError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import EntryRejected, LockStatus, RejectReason, build_entry, kind_rules
from p2pgrid.ledger.messages import Certificate, Entry
from p2pgrid.ledger.service import BatchRejected, LedgerService
from p2pgrid.market.amm import NO_LOSSES, HostLosses, accrue
from p2pgrid.net.orders import pools_topic
from p2pgrid.net.requests import StreamServer
from p2pgrid.net.transport import Transport
from p2pgrid.pools.entries import (
    POOL_OPEN_KIND, POOL_UPDATE_KIND, SWAP_DECLINE_KIND, SWAP_KIND, PoolOpen, PoolRecord, PoolUpdate, Swap,
    SwapDecline, SwapRejected, compute_pool_id, deliverable_energy_wh, plan_swap, validate_swap, with_request,
)
from p2pgrid.pools.messages import (
    LOCK_RELEASED, MAX_POOLS_PER_ANNOUNCEMENT, MAX_SWAP_BYTES, SWAP_PROTOCOL, PoolAnnouncement, PoolQuery, PoolState,
    SwapAnswer, SwapRefuseReason, SwapRequest, SwapStatus, pool_state_of,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, Signed, decode_signed, encode, sign

Clock = Callable[[], int]


@dataclass(frozen=True)
class BatteryLimits:
    """What the host's battery offers now: energy it may discharge (above its own reserve) and
    its discharge power limit."""

    available_wh: int
    power_limit_w: int


def battery_limits(stored_wh: float, floor_wh: float, max_discharge_w: float, *, max_share: float = 1.0,
                   min_reserve_wh: int = 0) -> BatteryLimits:
    """What a battery may commit to pools (the ``[pool]`` config section): ``max_share`` of the
    energy above both its own floor and ``min_reserve_wh``, at its discharge power limit."""
    above = stored_wh - max(floor_wh, float(min_reserve_wh))
    return BatteryLimits(available_wh=max(0, int(above * max_share)), power_limit_w=max(0, int(max_discharge_w)))


@dataclass(frozen=True)
class PoolTerms:
    """What a new pool opens with: its price (credits / energy reserve, µc/kWh) and energy seed."""

    price: int
    seed_wh: int


def opening_reserves(terms: PoolTerms | None, cap_wh: int, default_credits_uc: int,
                     default_seed_wh: int) -> tuple[int, int]:
    """(energy Wh, credits µc) a pool opens with: the seed within the cap, and the credits that
    price it at ``terms.price`` (the constant defaults without terms)."""
    if terms is None:
        return min(default_seed_wh, cap_wh), default_credits_uc
    seed = min(max(0, terms.seed_wh), cap_wh)
    return seed, seed * max(0, terms.price) // 1000


@dataclass(frozen=True)
class PoolHostConfig:
    """Settings of a pool host (``pool.enabled`` in a station's config)."""

    battery: Callable[[], BatteryLimits]    # read every tick: SoC-derived energy and power limit
    fee_bps: int = 30
    initial_credits_uc: int = 400_000       # credits reserve of a new pool (with the seed: its opening price)
    seed_energy_wh: int = 2_000             # energy reserve of a new pool, at most its cap
    slots_ahead: int = 4                    # pools for the next N tradable slots
    losses: HostLosses = NO_LOSSES          # self-discharge and conversion losses of the battery
    cap_step_wh: int = 50                   # a cap rise smaller than this is not worth an entry
    tick_s: float = 0.5
    announce_interval_s: float = 5.0
    lock_wait_s: float = 5.0                # real time to wait for a buyer's certified lock
    # The opening terms of a slot's pool, (price µc/kWh, seed energy Wh), from the host's own plan
    # (the agent's price forecast and planned export); None, or a None answer: the constant seed
    # ``initial_credits_uc`` / ``seed_energy_wh`` above.
    terms: Callable[[int], PoolTerms | None] | None = None
    # Open no pool for a slot metered after this (Unix ms): a slot nobody meters cannot settle.
    # simnet sets it to the run's end, so the ledger is quiet when the nodes stop.
    open_until_ms: int | None = None


@dataclass
class PoolHostStats:
    swaps: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    declined: int = 0           # refused buys whose lock the host handed back at once
    expired_declined: int = 0   # locks of its pools the host handed back at their deadline
    queries: int = 0
    opened: int = 0
    updates: int = 0
    frozen_trims: int = 0       # caps of pools past gate closure lowered (the battery failed)
    announcements: int = 0


class PoolHost:
    """See the module docstring. Build with ``open_pool_host``."""

    def __init__(self, key: NodeKey, zone: str, slot_rules: SlotRules, transport: Transport, ledger: LedgerService,
                 clock: Clock, config: PoolHostConfig) -> None:
        self.key = key
        self.zone = zone
        self.slot_rules = slot_rules
        self.transport = transport
        self.ledger = ledger
        self.clock = clock
        self.config = config
        self.stats = PoolHostStats()
        self._sequencer = trio.Lock()
        self._in_flight: set[bytes] = set()
        self._dirty = True
        self._pool_locks: dict[bytes, None] = {}    # open locks naming this host on one of its pools
        self._lock_scan: tuple[object, int] = (None, 0)

    @property
    def me(self) -> bytes:
        return self.key.public_key

    # --- pools --------------------------------------------------------------------------------

    def pool_id(self, slot: int) -> bytes:
        return compute_pool_id(self.me, self.zone, slot)

    def record(self, pool_id: bytes) -> PoolRecord | None:
        record = self.ledger.state.pools.get(pool_id)
        return record if isinstance(record, PoolRecord) and record.pool.host == self.me else None

    def live_pools(self, now_ms: int | None = None) -> list[PoolRecord]:
        """This host's certified pools that are not frozen yet, by slot."""
        now = self.clock() if now_ms is None else now_ms
        own = [r for r in self.ledger.state.pools.values()
               if isinstance(r, PoolRecord) and r.pool.host == self.me and not r.pool.is_frozen(now)]
        return sorted(own, key=lambda r: r.pool.slot)

    def energy_cap_wh(self) -> int:
        limits = self.config.battery()
        share = max(0, limits.available_wh) // max(1, self.config.slots_ahead)
        return deliverable_energy_wh(share, max(0, limits.power_limit_w), self.slot_rules.length_s)

    async def maintain_pools(self) -> None:
        """Open missing pools for the next slots and certify cap changes (one tick's work)."""
        now = self.clock()
        cap = self.energy_cap_wh()
        for slot in self.slot_rules.tradable_slots(now)[:self.config.slots_ahead]:
            pool_id = self.pool_id(slot)
            record = self.record(pool_id)
            async with self._sequencer:
                if record is None:
                    until = self.config.open_until_ms
                    if until is None or self.slot_rules.metering_due_ms(slot) <= until:
                        await self._open(slot, pool_id, cap)
                else:
                    await self._update_cap(record, cap)
        await self._trim_frozen(now, cap)

    async def _open(self, slot: int, pool_id: bytes, cap: int) -> None:
        terms = self.config.terms(slot) if self.config.terms is not None else None
        seed, credits = opening_reserves(terms, cap, self.config.initial_credits_uc, self.config.seed_energy_wh)
        if seed <= 0 or credits <= 0:
            return
        body = PoolOpen(pool_id=pool_id, slot=slot, energy_wh=seed, credits_uc=credits,
                        fee_bps=self.config.fee_bps, energy_cap_wh=cap,
                        self_discharge_ppm_per_h=self.config.losses.self_discharge_ppm_per_h,
                        conversion_loss_w=self.config.losses.conversion_loss_w, at_ms=self.clock())
        if await self._certify_pool_entry(POOL_OPEN_KIND, body):
            self.stats.opened += 1

    async def _update_cap(self, record: PoolRecord, cap: int) -> None:
        now = self.clock()
        if record.pool.is_frozen(now):
            return
        current = accrue(record.pool, now).energy_cap_wh
        if cap == current or current < cap < current + self.config.cap_step_wh:
            return
        body = PoolUpdate(pool_id=record.pool.pool_id, energy_cap_wh=cap, add_energy_wh=0, at_ms=self.clock())
        if await self._certify_pool_entry(POOL_UPDATE_KIND, body):
            self.stats.updates += 1

    def frozen_undelivered(self, now_ms: int) -> list[PoolRecord]:
        """This host's pools past gate closure whose slot has not ended: those of the slots from
        the current one to the last whose gate has closed."""
        rules = self.slot_rules
        slots = range(rules.slot_of(now_ms), rules.slot_of(now_ms + rules.gate_s * 1000) + 1, rules.length_s)
        records = (self.record(self.pool_id(slot)) for slot in slots)
        return [r for r in records if r is not None and r.pool.is_frozen(now_ms)]

    async def _trim_frozen(self, now_ms: int, cap: int) -> None:
        for record in self.frozen_undelivered(now_ms):
            if cap >= record.pool.energy_cap_wh:
                continue
            body = PoolUpdate(pool_id=record.pool.pool_id, energy_cap_wh=cap, add_energy_wh=0, at_ms=self.clock())
            async with self._sequencer:
                if await self._certify_pool_entry(POOL_UPDATE_KIND, body):
                    self.stats.updates += 1
                    self.stats.frozen_trims += 1

    async def _submit(self, entry: Signed[Entry]) -> Certificate:
        """Certify one of our entries (its limits are judged on its own date, so how long
        certification takes no longer matters to any rule)."""
        return await self.ledger.submit(entry)

    async def _certify_pool_entry(self, kind: str, body: PoolOpen | PoolUpdate) -> bool:
        """Certify a pool entry if our own certified state says validators will accept it. Judging
        first matters: a doomed entry that a few validators vote for anyway (their state ahead of
        the others') would hold those votes at this seq and could stall the chain."""
        if not self._judge(kind, body):
            return False
        try:
            await self._submit(self.ledger.next_entry(kind, body))
        except LedgerError:
            return False   # e.g. the balance does not back it yet, or gate closure came: next tick decides
        self._dirty = True
        return True

    def _judge(self, kind: str, body: object) -> bool:
        """Would validators take ``body`` as our next entry, dated now, on our certified state?"""
        state = self.ledger.state
        entry = build_entry(self.ledger.rules, self.me, state.head(self.me), kind, body, self.clock())
        try:
            kind_rules(kind).validate(state, entry, body, self.ledger.rules)
        except EntryRejected:
            return False
        return True

    def announcement(self) -> Signed[PoolAnnouncement]:
        live = self.live_pools()[:MAX_POOLS_PER_ANNOUNCEMENT]
        return sign(PoolAnnouncement(host=self.me, zone=self.zone, sent_ms=self.clock(),
                                     pools=tuple(pool_state_of(r.pool, r.version) for r in live)), self.key)

    async def announce(self) -> None:
        try:
            await self.transport.publish(pools_topic(self.zone), self.announcement().encoded)
        except NetError:
            return   # best effort: the next tick announces again
        self.stats.announcements += 1
        self._dirty = False

    # --- swaps --------------------------------------------------------------------------------

    async def _answer_frame(self, data: bytes, peer: bytes) -> bytes:
        return sign(await self.answer(data, peer), self.key).encoded

    async def answer(self, data: bytes, peer: bytes) -> SwapAnswer:
        """The host's answer to one request frame (a ``SwapRequest`` or a ``PoolQuery``) from ``peer``."""
        try:
            signed: Signed[object] = decode_signed(data)
        except WireError as exc:
            return self._refusal(os.urandom(16), SwapRefuseReason.MALFORMED, str(exc))
        if isinstance(signed.body, PoolQuery):
            return self._state_answer(signed.body, peer)
        if not isinstance(signed.body, SwapRequest):
            return self._refusal(os.urandom(16), SwapRefuseReason.MALFORMED, "neither a swap request nor a pool query")
        request = signed.body
        if request.trader != peer:
            return self._refusal(request.request_id, SwapRefuseReason.MALFORMED,
                                 "the request is signed by another peer than the sender")
        if request.request_id in self._in_flight:
            return self._refusal(request.request_id, SwapRefuseReason.DUPLICATE, "this request is being swapped")
        self._in_flight.add(request.request_id)
        try:
            return await self._swap(cast(Signed[SwapRequest], signed))
        except SwapRejected as exc:
            released = request.side is Side.BUY and exc.reason is not SwapRefuseReason.DUPLICATE \
                and await self._decline(request, exc.reason)
            return self._refusal(request.request_id, exc.reason, exc.detail, request.pool_id,
                                 note=LOCK_RELEASED if released else "")
        finally:
            self._in_flight.discard(request.request_id)

    def _state_answer(self, query: PoolQuery, peer: bytes) -> SwapAnswer:
        if query.trader != peer:
            return self._refusal(query.query_id, SwapRefuseReason.MALFORMED,
                                 "the query is signed by another peer than the sender")
        if query.host != self.me or self.record(query.pool_id) is None:
            return self._refusal(query.query_id, SwapRefuseReason.UNKNOWN_POOL, f"no pool {query.pool_id.hex()} here")
        self.stats.queries += 1
        return SwapAnswer(request_id=query.query_id, host=self.me, status=SwapStatus.STATE, energy_wh=0,
                          credits_uc=0, reason="", certificate=b"", pools=self._state_of(query.pool_id))

    def _state_of(self, pool_id: bytes) -> tuple[PoolState, ...]:
        """The pool's certified state as this host has it now (none for a pool not hosted here)."""
        record = self.record(pool_id)
        return (pool_state_of(record.pool, record.version),) if record is not None else ()

    async def _swap(self, signed: Signed[SwapRequest]) -> SwapAnswer:
        request = signed.body
        plan_swap(self.record(request.pool_id), request, self.me, self.zone, self.clock())   # fail fast
        if request.side is Side.BUY:
            await self._wait_for_lock(request.request_id, request.trader)
        async with self._sequencer:
            for attempt in range(4):
                now = self.clock()
                body = with_request(plan_swap(self.record(request.pool_id), request, self.me, self.zone, now), signed)
                self._dry_run(body, now)
                try:
                    certificate = await self._submit(self.ledger.next_entry(SWAP_KIND, body))
                except BatchRejected as exc:
                    reasons = {r.reason for rs in exc.reasons.values() for r in rs}
                    if attempt < 3 and RejectReason.NO_LOCK.value in reasons:
                        await trio.sleep(0.05 * 2 ** attempt)   # the lock's confirm is still on its way
                        continue
                    raise SwapRejected(SwapRefuseReason.NOT_CERTIFIED, str(exc)[:150]) from None
                except LedgerError as exc:
                    raise SwapRejected(SwapRefuseReason.NOT_CERTIFIED, str(exc)[:150]) from None
                self.stats.swaps += 1
                self._dirty = True
                return SwapAnswer(request_id=request.request_id, host=self.me, status=SwapStatus.SWAPPED,
                                  energy_wh=body.energy_wh, credits_uc=body.credits_uc, reason="",
                                  certificate=encode(certificate), pools=self._state_of(request.pool_id))
        raise SwapRejected(SwapRefuseReason.NOT_CERTIFIED, "the buyer's lock never reached the committee")

    def _dry_run(self, body: Swap, now_ms: int) -> None:
        """Judge the swap with the validators' rule on our certified state, without signing it."""
        state = self.ledger.state
        entry = build_entry(self.ledger.rules, self.me, state.head(self.me), SWAP_KIND, body, now_ms)
        try:
            validate_swap(state, entry, body, self.ledger.rules)
        except EntryRejected as exc:
            raise SwapRejected(_refuse_reason(exc), exc.detail or exc.reason.value) from None

    async def _decline(self, request: SwapRequest, reason: SwapRefuseReason) -> bool:
        """Hand back the certified lock of a refused BUY; True if the decline is certified.

        The buyer certifies its lock before it sends the request, so the lock is in our state or
        one pull of the buyer's chain away; a lock that is not (a request sent without one) has
        nothing to hand back, and we do not wait for it."""
        if request.request_id not in self.ledger.state.locks:
            with trio.move_on_after(self.config.lock_wait_s):
                try:
                    await self.ledger.sync_with(request.trader)
                except (NetError, LedgerError):
                    return False
        body = SwapDecline(swap_id=request.request_id, pool_id=request.pool_id, trader=request.trader,
                           reason=reason.value)
        async with self._sequencer:
            if request.request_id not in self.ledger.state.locks:
                return False        # nothing to hand back
            if not await self._certify_decline(body):
                return False        # e.g. the lock was consumed meanwhile
        self.stats.declined += 1
        return True

    async def _certify_decline(self, body: SwapDecline) -> bool:
        """Certify a ``swap_decline`` if our certified state says validators take it (any time
        before the lock is filled; a no-op once the buyer released it)."""
        if not self._judge(SWAP_DECLINE_KIND, body):
            return False
        try:
            await self._submit(self.ledger.next_entry(SWAP_DECLINE_KIND, body))
        except LedgerError:
            return False
        return True

    def _note_pool_locks(self) -> None:
        """Add the locks certified since the last call that name this host on one of its pools
        (lock records are only ever added or replaced in place, and a dict keeps insertion
        order: the records past the count already read are new)."""
        locks = self.ledger.state.locks
        seen_in, read = self._lock_scan
        if seen_in is not locks or read > len(locks):    # another state object: read it whole
            read = 0
        for take_id, record in itertools.islice(locks.items(), read, None):
            if record.lock.seller == self.me and record.status is LockStatus.OPEN \
                    and self.record(record.lock.order_id) is not None:
                self._pool_locks[take_id] = None
        self._lock_scan = (locks, len(locks))

    async def decline_expired(self) -> int:
        """Hand back every lock of our pools still open at its deadline (we can no longer swap
        it: a swap must be dated before the deadline). Returns how many were declined."""
        self._note_pool_locks()
        now = self.clock()
        declined = 0
        for take_id in list(self._pool_locks):
            record = self.ledger.state.locks.get(take_id)
            if record is None or record.status is not LockStatus.OPEN:
                del self._pool_locks[take_id]
                continue
            if now < record.lock.deadline_ms or take_id in self._in_flight:
                continue
            body = SwapDecline(swap_id=take_id, pool_id=record.lock.order_id, trader=record.buyer,
                               reason=SwapRefuseReason.EXPIRED.value)
            async with self._sequencer:
                if await self._certify_decline(body):
                    declined += 1
                    del self._pool_locks[take_id]
        self.stats.expired_declined += declined
        return declined

    async def _wait_for_lock(self, take_id: bytes, owner: bytes) -> None:
        if not await self.ledger.wait_for_lock(take_id, owner, self.config.lock_wait_s):
            raise SwapRejected(SwapRefuseReason.BAD_LOCK, "no certified lock for this buy")

    def _refusal(self, request_id: bytes, reason: SwapRefuseReason, detail: str, pool_id: bytes | None = None,
                 note: str = "") -> SwapAnswer:
        self.stats.refused[reason.value] = self.stats.refused.get(reason.value, 0) + 1
        text = f"{reason.value}: {detail}"[:200 - len(note)] + note
        return SwapAnswer(request_id=request_id, host=self.me, status=SwapStatus.REFUSED, energy_wh=0,
                          credits_uc=0, reason=text, certificate=b"",
                          pools=self._state_of(pool_id) if pool_id is not None else ())

    # --- running ------------------------------------------------------------------------------

    async def _tick(self) -> None:
        since_announce = 0.0
        while True:
            await self.maintain_pools()
            await self.decline_expired()
            if self._dirty or since_announce >= self.config.announce_interval_s:
                await self.announce()
                since_announce = 0.0
            await trio.sleep(self.config.tick_s)
            since_announce += self.config.tick_s

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        server = StreamServer(self._answer_frame)
        self.transport.set_stream_handler(SWAP_PROTOCOL, server.serve, max_frame_bytes=MAX_SWAP_BYTES)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._tick)
                task_status.started()
        finally:
            await server.aclose()     # the transport outlives this service (see net.requests)


_LOCK_REASONS = {RejectReason.NO_LOCK, RejectReason.LOCK_CLOSED, RejectReason.LOCK_MISMATCH,
                 RejectReason.LOCK_TOO_SMALL, RejectReason.DEADLINE_PASSED}


def _refuse_reason(exc: EntryRejected) -> SwapRefuseReason:
    """The swap refusal matching a validator's rejection."""
    if exc.reason in _LOCK_REASONS:
        return SwapRefuseReason.BAD_LOCK
    if exc.reason is RejectReason.DUPLICATE_TAKE:
        return SwapRefuseReason.DUPLICATE
    if exc.reason is RejectReason.OVERDRAFT:
        return SwapRefuseReason.INSUFFICIENT_LIQUIDITY
    prefix = exc.detail.split(":", 1)[0]
    try:
        return SwapRefuseReason(prefix)
    except ValueError:
        return SwapRefuseReason.NOT_CERTIFIED


@asynccontextmanager
async def open_pool_host(key: NodeKey, zone: str, slot_rules: SlotRules, transport: Transport, ledger: LedgerService,
                         clock: Clock, config: PoolHostConfig) -> AsyncIterator[PoolHost]:
    host = PoolHost(key, zone, slot_rules, transport, ledger, clock, config)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        yield host
        nursery.cancel_scope.cancel()
