"""Ledger entry kinds of AMM pools: ``pool_open``, ``pool_update``, ``swap`` and ``swap_decline`` (pure).

Importing this module registers the four kinds with ``p2pgrid.ledger.chain.register_kind``. All
live in the **host's** chain, so the host's chain sequences its pools: a pool's state is a pure
function of the host's certified entries, applied in chain order, and every node derives the
same reserves. ``LedgerState.pools[pool_id]`` holds a ``PoolRecord`` (the ``amm.Pool`` plus a
version and totals); each swap leaves a ``SwapRecord`` in ``LedgerState.extra["swap/<id hex>"]``.

Time. No rule reads a validator's clock (``chain``: validity is a deterministic, monotone function
of the entry and its certified causal past). Two signed times are used:

* ``entry.time_ms`` — the host's signed entry time (never decreasing along its chain; a validator
  waits for an entry dated too far ahead of its own clock, ``committee.decide_vote``). Every
  *limit* is judged on it: gate closure, the trader's request expiry, the buyer's lock deadline.
* ``body.at_ms`` — the market time the pool is decayed to (``amm.accrue``) before the operation,
  so applying an entry never depends on when it is applied. It must satisfy
  ``pool.updated_ms ≤ at_ms ≤ entry.time_ms``: a pool's entries are dated in chain order, and
  never after the entry that carries them (so a limit met by ``entry.time_ms`` is met by
  ``at_ms`` too).

There is deliberately no bound on how *old* ``at_ms`` may be besides these: back-dating only
gives the host less decay — energy its own liquidity providers would have lost — and never an
older pool state; and certification latency (multiplied by a scaled clock) never matters, since
nothing is judged on when a validator looks.

Rules, each with its time base:

``pool_open`` (host only)
    Opens pool ``pool_id == compute_pool_id(host, zone, slot)`` — one pool per (host, zone, slot),
    ever — with seed reserves, fee, energy cap, losses, and gate closure from the zone's slot
    calendar. ``at_ms ≤ entry.time_ms < gate closure``. The credits reserve is a commitment backed
    by the host's balance, not an escrow: the host's balance must cover it when the pool opens
    (its sale proceeds go to that balance, and it pays sellers from it), so ``money_total()``
    stays 0 without a pool account.
``pool_update`` (host only)
    Sets the energy cap to what the host's battery can now deliver in the slot (``amm.set_energy_cap``
    trims the reserve to it) and optionally deposits ``add_energy_wh`` more energy (within the cap).
    ``updated_ms ≤ at_ms ≤ entry.time_ms``. Dated before gate closure (``entry.time_ms <`` gate
    closure) it may raise or lower the cap and deposit. Dated at or after gate closure the pool
    is frozen and an update may only **trim** it: a cap strictly lower than the certified one and
    no deposit (``pool_frozen`` otherwise, final). A host whose battery failed after the gate says
    so on the ledger; nothing it can sign makes a frozen pool offer more, and since the pool's
    other parameters (fee, losses, reserves but for the trim) are not in the body, none changes.
``swap`` (host's chain, one trader's signed ``SwapRequest`` inside)
    Validators decode and verify the request, check it names this host, pool, zone, slot, side,
    amount and id, that ``updated_ms ≤ at_ms ≤ entry.time_ms``, ``entry.time_ms <`` gate closure
    and ``entry.time_ms < request.expires_ms`` (a trader's request is not used after its
    expiry), and **recompute** the swap with ``amm`` from the certified pool decayed to
    ``at_ms``: BUY exact-out (``swap_exact_out``), SELL exact-in (``swap_exact_in``).
    ``credits_uc`` must equal the recomputed amount and respect the request's limit; a sale may
    not lift energy beyond the cap (``amm.CapacityExceeded``).

    A BUY whose whole ``energy_wh`` has become dearer than ``limit_uc`` (other buyers swapped
    first) is **filled in part**: the body buys the largest amount whose cost is within the limit
    pro rata (``affordable_buy``: never a dearer average than the trader allowed), and only when
    not even 1 Wh is, the swap is refused for slippage. The body's ``energy_wh`` is then below the
    request's; validators recompute that amount too.

    * BUY consumes the trader's certified open lock ``take_id == swap_id`` through
      ``chain.consumable_lock`` (``seller == host``, open, ``entry.time_ms <`` its deadline) with
      ``order_id == pool_id``, buyer ``trader``, ``qty_wh ==`` the request's ``energy_wh`` and
      ``amount ≥ credits_uc``: the host receives ``credits_uc``, the buyer the rest of the lock.
      The lock's fate is decided by the host's chain alone (``chain``: one writer per lock), so
      the buyer's ``release`` — valid only once the host's chain is dated at or past the
      deadline — can never meet this swap. A lock not yet certified here *waits* (``no_lock``).
    * SELL pays the trader ``credits_uc`` from the host's balance (the host's debit, in its own
      chain, within the credit limit; ``overdraft`` waits for credits).

    Every swap also claims the conflict key ``swap/<swap_id>``, and a swap id already recorded is
    rejected, so one request is swapped at most once. (The record key is zone-wide, so a trader
    that signs requests with one id to two hosts can make those two hosts' swaps split the
    validators' votes; honest clients draw random ids. Binding a request id to its host would
    close that, and needs settlement to look swap records up by host too.)
``swap_decline`` (host's chain)
    The host hands the buyer's lock ``swap_id`` (``seller == host``, ``order_id == pool_id``,
    buyer ``trader``) back in full (``chain.return_lock``) instead of letting it sit: a BUY it
    refused, or any lock of its pools it will not consume, expired ones included. Valid at **any
    time** — there is no deadline to straddle — and refused only once the lock is filled; a
    no-op if the lock was returned already (the buyer's release and a decline may both be
    certified, in either order). It moves no money to the host and leaves the pool untouched;
    only the lock's buyer gains, so no account is debited by another's chain. The share
    programmes of ``shares.rules`` decline escrows with it too (the programme as the pool).

What waits and what is final. A lock not yet certified at a validator *waits* (``no_lock``): it
is the trader's chain's. A pool does not: only its host writes a pool's entries, and the host's
pools are created in its own chain, so a validator judging the host's entry at ``seq`` holds every
pool that entry may name; an unknown pool id is final (``unknown_pool``), as is another host's.
Everything else a rule reads is the host's own chain (pool, swap records, its balance — which
other chains only ever credit) or fixed at the lock's creation.

Rejections are ``EntryRejected``; AMM and request problems are ``BAD_BODY`` whose detail starts
with a ``SwapRefuseReason`` value (``pool_frozen: …``, ``amm_mismatch: …``, ``bad_time: …``), the
lock problems use the lock reasons of ``chain.py`` (``no_lock``, ``lock_closed``,
``lock_mismatch``, ``lock_too_small``, ``deadline_passed``), and a host that cannot pay is an
``overdraft``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

from p2pgrid.errors import TradingError, WireError
from p2pgrid.ledger.chain import (
    ChainInconsistent, EntryRejected, KindRules, LedgerRules, LedgerState, LockRecord, LockStatus, RejectReason,
    consumable_lock, known_lock, lock_fate_key, register_kind, return_lock, validate_debit,
)
from p2pgrid.ledger.messages import Entry
from p2pgrid.market.amm import (
    HostLosses, Pool, Quote, deposit_energy, open_pool, set_energy_cap, swap_exact_in, swap_exact_out,
)
from p2pgrid.market.errors import CapacityExceeded, InsufficientLiquidity, PoolError, PoolFrozen, SlippageExceeded
from p2pgrid.pools.messages import ID_SIZE, MAX_AMOUNT, SwapRefuseReason, SwapRequest
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, Signed, decode_signed, struct

__all__ = [
    "POOL_OPEN_KIND", "POOL_UPDATE_KIND", "PoolOpen", "PoolRecord", "PoolUpdate",
    "SWAP_DECLINE_KIND", "SWAP_KIND", "Swap", "SwapDecline", "SwapRecord", "SwapRejected", "affordable_buy",
    "compute_pool_id",
    "compute_swap", "deliverable_energy_wh", "is_cap_trim", "plan_swap", "pools_of_slot", "swap_record",
    "validate_pool_open", "validate_pool_update", "validate_swap", "validate_swap_decline", "with_request",
]

POOL_OPEN_KIND = "pool_open"
POOL_UPDATE_KIND = "pool_update"
SWAP_KIND = "swap"
SWAP_DECLINE_KIND = "swap_decline"
MAX_REQUEST_BYTES = 1024


class SwapRejected(TradingError):
    """A swap cannot happen as asked; ``reason`` is a ``SwapRefuseReason``."""

    def __init__(self, reason: SwapRefuseReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# --- bodies ------------------------------------------------------------------------------------

def _amount(minimum: int = 0) -> Any:
    return field(metadata={"min": minimum, "max": MAX_AMOUNT})


@struct
@dataclass(frozen=True)
class PoolOpen:
    pool_id: bytes = field(metadata={"size": ID_SIZE})
    slot: int = field(metadata={"min": 0})
    energy_wh: int = _amount(1)
    credits_uc: int = _amount(1)
    fee_bps: int = field(metadata={"min": 0, "max": 1000})
    energy_cap_wh: int = _amount()
    self_discharge_ppm_per_h: int = field(metadata={"min": 0, "max": 1_000_000})
    conversion_loss_w: int = _amount()
    at_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class PoolUpdate:
    pool_id: bytes = field(metadata={"size": ID_SIZE})
    energy_cap_wh: int = _amount()
    add_energy_wh: int = _amount()
    at_ms: int = field(metadata={"min": 0})


@struct
@dataclass(frozen=True)
class Swap:
    """The host's record of one swap; ``request`` is the trader's signed ``SwapRequest``."""

    swap_id: bytes = field(metadata={"size": ID_SIZE})
    pool_id: bytes = field(metadata={"size": ID_SIZE})
    trader: bytes = field(metadata={"size": 32})
    side: Side
    energy_wh: int = _amount(1)
    credits_uc: int = _amount(1)
    at_ms: int = field(metadata={"min": 0})
    request: bytes = field(metadata={"max_len": MAX_REQUEST_BYTES})


@struct
@dataclass(frozen=True)
class SwapDecline:
    """The host hands back the open lock of a BUY it refused; ``reason`` is a ``SwapRefuseReason`` value."""

    swap_id: bytes = field(metadata={"size": ID_SIZE})
    pool_id: bytes = field(metadata={"size": ID_SIZE})
    trader: bytes = field(metadata={"size": 32})
    reason: str = field(metadata={"max_len": 32})


# --- derived state -----------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolRecord:
    """A pool in the derived state: ``version`` counts certified pool entries after the opening;
    ``energy_out_wh`` / ``energy_in_wh`` total what buyers took and sellers put in."""

    pool: Pool
    version: int = 0
    swaps: int = 0
    energy_out_wh: int = 0
    energy_in_wh: int = 0


@dataclass(frozen=True)
class SwapRecord:
    """A certified swap, for settlement: ``trader`` bought (BUY) or sold ``energy_wh`` in ``slot``."""

    pool_id: bytes
    host: bytes
    trader: bytes
    side: Side
    slot: int
    energy_wh: int
    credits_uc: int


def compute_pool_id(host: bytes, zone: str, slot: int) -> bytes:
    """The id of ``host``'s pool for (``zone``, ``slot``): one pool per host, zone and slot."""
    return hashlib.sha256(b"p2pgrid/pool/v1" + host + zone.encode() + slot.to_bytes(8, "big")).digest()[:ID_SIZE]


def swap_key(swap_id: bytes) -> str:
    return "swap/" + swap_id.hex()


def swap_record(state: LedgerState, swap_id: bytes) -> SwapRecord | None:
    record = state.extra.get(swap_key(swap_id))
    return record if isinstance(record, SwapRecord) else None


def pools_of_slot(state: LedgerState, slot: int) -> list[PoolRecord]:
    """Every certified pool of ``slot``, ordered by pool id."""
    return sorted((r for r in state.pools.values() if isinstance(r, PoolRecord) and r.pool.slot == slot),
                  key=lambda r: r.pool.pool_id)


def deliverable_energy_wh(available_wh: int, power_limit_w: int, slot_length_s: int) -> int:
    """What a battery can deliver in one slot: its available energy, at most power × slot length."""
    return max(0, min(available_wh, power_limit_w * slot_length_s // 3600))


def _slot_rules(rules: LedgerRules) -> SlotRules:
    slots = getattr(rules, "slots", None)
    return slots if isinstance(slots, SlotRules) else SlotRules()


def _bad(reason: SwapRefuseReason | str, detail: str) -> EntryRejected:
    value = reason.value if isinstance(reason, SwapRefuseReason) else reason
    return EntryRejected(RejectReason.BAD_BODY, f"{value}: {detail}")


def _check_time(entry: Entry, at_ms: int, gate_closure_ms: int, pool: Pool | None = None, *,
                frozen_ok: bool = False) -> None:
    """The time rules of the module docstring (all but the request's expiry), on the entry's own
    signed time: every validator gets the same answer whenever it looks. ``frozen_ok``: the
    entry may be dated at or after gate closure (a cap trim)."""
    if at_ms > entry.time_ms:
        raise _bad("bad_time", f"at_ms {at_ms} is after the entry's own time {entry.time_ms}")
    if entry.time_ms >= gate_closure_ms and not frozen_ok:
        raise _bad(SwapRefuseReason.POOL_FROZEN,
                   f"the entry is dated {entry.time_ms}, at or after the pool's gate closure {gate_closure_ms}")
    if pool is not None and at_ms < pool.updated_ms:
        raise _bad("bad_time", f"at_ms {at_ms} is before the pool's last update {pool.updated_ms}")


def _host_record(state: LedgerState, entry: Entry, pool_id: bytes) -> PoolRecord:
    record = state.pools.get(pool_id)
    if not isinstance(record, PoolRecord):
        raise _bad(SwapRefuseReason.UNKNOWN_POOL, f"no certified pool {pool_id.hex()}")
    if record.pool.host != entry.account:
        raise EntryRejected(RejectReason.WRONG_KIND_FOR_ACCOUNT, "only a pool's host writes its entries")
    return record


def _certified_record(state: LedgerState, pool_id: bytes) -> PoolRecord:
    record = state.pools.get(pool_id)
    if not isinstance(record, PoolRecord):
        raise ChainInconsistent(f"certified pool entry for unknown pool {pool_id.hex()}")
    return record


# --- pool_open ---------------------------------------------------------------------------------

def _opened(entry: Entry, body: PoolOpen, rules: LedgerRules) -> Pool:
    return open_pool(pool_id=body.pool_id, host=entry.account, zone=entry.zone, slot=body.slot,
                     energy_wh=body.energy_wh, credits_uc=body.credits_uc, fee_bps=body.fee_bps,
                     energy_cap_wh=body.energy_cap_wh, gate_closure_ms=_slot_rules(rules).gate_closure_ms(body.slot),
                     now_ms=body.at_ms, losses=HostLosses(body.self_discharge_ppm_per_h, body.conversion_loss_w))


def validate_pool_open(state: LedgerState, entry: Entry, body: PoolOpen, rules: LedgerRules) -> None:
    if body.pool_id != compute_pool_id(entry.account, entry.zone, body.slot):
        raise _bad("bad_pool_id", "a pool's id is compute_pool_id(host, zone, slot)")
    if body.pool_id in state.pools:
        raise _bad("pool_exists", f"pool {body.pool_id.hex()} is open already")
    if not _slot_rules(rules).is_aligned(body.slot):
        raise _bad(SwapRefuseReason.WRONG_SLOT, f"{body.slot} is not a slot start")
    _check_time(entry, body.at_ms, _slot_rules(rules).gate_closure_ms(body.slot))
    try:
        _opened(entry, body, rules)
    except PoolFrozen as exc:
        raise _bad(SwapRefuseReason.POOL_FROZEN, str(exc)) from None
    except PoolError as exc:
        raise _bad("bad_pool", str(exc)) from None
    validate_debit(state, rules, entry.account, body.credits_uc)


def process_pool_open(state: LedgerState, entry: Entry, body: PoolOpen, rules: LedgerRules) -> None:
    if body.pool_id in state.pools:
        raise ChainInconsistent(f"pool {body.pool_id.hex()} opened twice")
    state.pools[body.pool_id] = PoolRecord(_opened(entry, body, rules))


# --- pool_update -------------------------------------------------------------------------------

def _updated(pool: Pool, body: PoolUpdate) -> Pool:
    pool, _ = set_energy_cap(pool, body.energy_cap_wh, body.at_ms)
    if body.add_energy_wh:
        pool, _ = deposit_energy(pool, pool.host, body.add_energy_wh, body.at_ms)
    return pool


def is_cap_trim(pool: Pool, body: PoolUpdate) -> bool:
    """Does ``body`` only lower ``pool``'s energy cap (what a frozen pool still takes)?"""
    return body.energy_cap_wh < pool.energy_cap_wh and body.add_energy_wh == 0


def validate_pool_update(state: LedgerState, entry: Entry, body: PoolUpdate, rules: LedgerRules) -> None:
    record = _host_record(state, entry, body.pool_id)
    frozen = entry.time_ms >= record.pool.gate_closure_ms
    if frozen and not is_cap_trim(record.pool, body):
        raise _bad(SwapRefuseReason.POOL_FROZEN,
                   f"the entry is dated {entry.time_ms}, at or after the pool's gate closure "
                   f"{record.pool.gate_closure_ms}: only a lower cap than {record.pool.energy_cap_wh} Wh "
                   f"and no deposit, not a cap of {body.energy_cap_wh} Wh and {body.add_energy_wh} Wh more")
    _check_time(entry, body.at_ms, record.pool.gate_closure_ms, record.pool, frozen_ok=frozen)
    try:
        _updated(record.pool, body)
    except PoolFrozen as exc:
        raise _bad(SwapRefuseReason.POOL_FROZEN, str(exc)) from None
    except CapacityExceeded as exc:
        raise _bad(SwapRefuseReason.CAPACITY, str(exc)) from None
    except PoolError as exc:
        raise _bad("bad_pool", str(exc)) from None


def process_pool_update(state: LedgerState, entry: Entry, body: PoolUpdate, rules: LedgerRules) -> None:
    record = _certified_record(state, body.pool_id)
    try:
        pool = _updated(record.pool, body)
    except PoolError as exc:
        raise ChainInconsistent(f"certified pool update does not apply: {exc}") from None
    state.pools[body.pool_id] = replace(record, pool=pool, version=record.version + 1)


# --- swap --------------------------------------------------------------------------------------

def compute_swap(pool: Pool, side: Side, energy_wh: int, at_ms: int) -> tuple[Pool, Quote]:
    """The swap of exactly ``energy_wh`` at ``at_ms``: BUY exact-out, SELL exact-in. Raises
    ``SwapRejected`` (frozen, no liquidity, beyond the cap)."""
    try:
        if side is Side.BUY:
            return swap_exact_out(pool, Side.BUY, energy_wh, at_ms)
        return swap_exact_in(pool, Side.SELL, energy_wh, at_ms)
    except PoolFrozen as exc:
        raise SwapRejected(SwapRefuseReason.POOL_FROZEN, str(exc)) from None
    except CapacityExceeded as exc:
        raise SwapRejected(SwapRefuseReason.CAPACITY, str(exc)) from None
    except (InsufficientLiquidity, SlippageExceeded, PoolError) as exc:
        raise SwapRejected(SwapRefuseReason.INSUFFICIENT_LIQUIDITY, str(exc)) from None


def plan_swap(record: PoolRecord | None, request: SwapRequest, host: bytes, zone: str, at_ms: int) -> Swap:
    """The ``swap`` body the host certifies for ``request`` at ``at_ms`` (the request's signed
    bytes are added by ``with_request``). Raises ``SwapRejected`` if the terms cannot be met."""
    if request.host != host:
        raise SwapRejected(SwapRefuseReason.NOT_HOST, "the request names another host")
    if request.zone != zone:
        raise SwapRejected(SwapRefuseReason.WRONG_ZONE, f"this pool trades in {zone}, not {request.zone}")
    if record is None or record.pool.pool_id != request.pool_id:
        raise SwapRejected(SwapRefuseReason.UNKNOWN_POOL, f"no pool {request.pool_id.hex()} of this host")
    pool = record.pool
    if request.slot != pool.slot:
        raise SwapRejected(SwapRefuseReason.WRONG_SLOT, f"the pool is for slot {pool.slot}, not {request.slot}")
    if pool.is_frozen(at_ms):
        raise SwapRejected(SwapRefuseReason.POOL_FROZEN, f"the pool froze at gate closure {pool.gate_closure_ms}")
    if at_ms >= request.expires_ms:
        raise SwapRejected(SwapRefuseReason.EXPIRED, f"the request expired at {request.expires_ms}")
    _, quote = compute_swap(pool, request.side, request.energy_wh, at_ms)
    if request.side is Side.BUY and quote.credits_uc > request.limit_uc:
        partial = affordable_buy(pool, request.energy_wh, request.limit_uc, at_ms)
        if partial is None:
            raise SwapRejected(SwapRefuseReason.SLIPPAGE,
                               f"costs {quote.credits_uc} µc > limit {request.limit_uc} µc")
        quote = partial
    if request.side is Side.SELL and quote.credits_uc < request.limit_uc:
        raise SwapRejected(SwapRefuseReason.SLIPPAGE, f"pays {quote.credits_uc} µc < limit {request.limit_uc} µc")
    return Swap(swap_id=request.request_id, pool_id=pool.pool_id, trader=request.trader, side=request.side,
                energy_wh=quote.energy_wh, credits_uc=quote.credits_uc, at_ms=at_ms, request=b"")


def affordable_buy(pool: Pool, energy_wh: int, limit_uc: int, at_ms: int) -> Quote | None:
    """The largest buy of at most ``energy_wh`` whose cost stays within the limit pro rata
    (``cost · energy_wh ≤ bought · limit_uc``: never a dearer average than the request allows), or
    None. The average cost per Wh rises with the amount, so the affordable amounts are a prefix."""
    def within(energy: int) -> Quote | None:
        try:
            _, quote = compute_swap(pool, Side.BUY, energy, at_ms)
        except SwapRejected:
            return None
        return quote if quote.credits_uc * energy_wh <= energy * limit_uc else None

    low, high = 0, energy_wh
    while low < high:                      # largest affordable amount, by bisection
        middle = (low + high + 1) // 2
        if within(middle) is not None:
            low = middle
        else:
            high = middle - 1
    return within(low) if low > 0 else None


def with_request(body: Swap, signed: Signed[SwapRequest]) -> Swap:
    return replace(body, request=signed.encoded)


def _buy_lock(state: LedgerState, entry: Entry, body: Swap, request: SwapRequest) -> LockRecord:
    """The buyer's lock this BUY consumes: ``consumable_lock`` (named host, open, the swap dated
    before its deadline) plus the swap's own terms, all fixed when the lock was certified."""
    record = consumable_lock(state, entry, body.swap_id)
    lock = record.lock
    if record.buyer != body.trader or lock.order_id != body.pool_id or lock.qty_wh != request.energy_wh:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "the lock names another buyer, host, pool or quantity")
    if lock.amount < body.credits_uc:
        raise EntryRejected(RejectReason.LOCK_TOO_SMALL, f"{lock.amount} µc locked < {body.credits_uc} µc due")
    return record


def validate_swap(state: LedgerState, entry: Entry, body: Swap, rules: LedgerRules) -> None:
    record = _host_record(state, entry, body.pool_id)
    try:
        signed = decode_signed(body.request, SwapRequest)
    except WireError as exc:
        raise _bad(SwapRefuseReason.MALFORMED, f"the trader's request: {exc}") from None
    request = signed.body
    if (request.request_id, request.trader, request.pool_id, request.side) \
            != (body.swap_id, body.trader, body.pool_id, body.side) or body.energy_wh > request.energy_wh \
            or (body.side is Side.SELL and body.energy_wh != request.energy_wh):
        raise _bad(SwapRefuseReason.MALFORMED, "the body differs from the trader's request")
    if body.trader == entry.account:
        raise _bad(SwapRefuseReason.MALFORMED, "a host does not swap with its own pool")
    if swap_key(body.swap_id) in state.extra:
        raise EntryRejected(RejectReason.DUPLICATE_TAKE, f"swap {body.swap_id.hex()} happened already")
    _check_time(entry, body.at_ms, record.pool.gate_closure_ms, record.pool)
    if entry.time_ms >= request.expires_ms:
        raise _bad(SwapRefuseReason.EXPIRED,
                   f"the swap is dated {entry.time_ms}, at or after the request's expiry {request.expires_ms}")
    try:
        planned = plan_swap(record, request, entry.account, entry.zone, body.at_ms)
    except SwapRejected as exc:
        raise _bad(exc.reason, exc.detail) from None
    if (planned.energy_wh, planned.credits_uc) != (body.energy_wh, body.credits_uc):
        raise _bad("amm_mismatch", f"the pool's math gives {planned.energy_wh} Wh for {planned.credits_uc} µc, "
                                   f"the entry says {body.energy_wh} Wh for {body.credits_uc} µc")
    if body.side is Side.BUY:
        _buy_lock(state, entry, body, request)
    else:
        validate_debit(state, rules, entry.account, body.credits_uc)


def process_swap(state: LedgerState, entry: Entry, body: Swap, rules: LedgerRules) -> None:
    record = _certified_record(state, body.pool_id)
    try:
        pool, quote = compute_swap(record.pool, body.side, body.energy_wh, body.at_ms)
    except SwapRejected as exc:
        raise ChainInconsistent(f"certified swap does not apply: {exc}") from None
    if quote.credits_uc != body.credits_uc:
        raise ChainInconsistent(f"certified swap {body.swap_id.hex()} disagrees with the pool's math")
    host = entry.account
    if body.side is Side.BUY:
        lock = state.locks.get(body.swap_id)
        if lock is None or lock.status is not LockStatus.OPEN:
            raise ChainInconsistent(f"certified swap consumes lock {body.swap_id.hex()} which is not open")
        state.balances[host] = state.balance(host) + body.credits_uc
        state.balances[lock.buyer] = state.balance(lock.buyer) + lock.lock.amount - body.credits_uc
        state.locks[body.swap_id] = LockRecord(lock.buyer, lock.lock, LockStatus.FILLED)
        record = replace(record, energy_out_wh=record.energy_out_wh + body.energy_wh)
    else:
        state.balances[host] = state.balance(host) - body.credits_uc
        state.balances[body.trader] = state.balance(body.trader) + body.credits_uc
        record = replace(record, energy_in_wh=record.energy_in_wh + body.energy_wh)
    state.pools[body.pool_id] = replace(record, pool=pool, version=record.version + 1, swaps=record.swaps + 1)
    state.extra[swap_key(body.swap_id)] = SwapRecord(body.pool_id, host, body.trader, body.side, pool.slot,
                                                     body.energy_wh, body.credits_uc)


def _swap_keys(entry: Entry, body: Swap) -> tuple[bytes, ...]:
    # A BUY consumes the buyer's lock: it claims the lock's fate key, as every consumer does, so a
    # validator that promised the lock's expiry (chain.py, "A seller that vanished") refuses it.
    # No chain of the buyer claims that key: its release and refund never race this swap's votes.
    if body.side is Side.BUY:
        return (b"swap/" + body.swap_id, lock_fate_key(body.swap_id))
    return (b"swap/" + body.swap_id,)


def _swap_ready(state: LedgerState, entry: Entry, body: Swap) -> bool:
    return body.side is not Side.BUY or body.swap_id in state.locks


# --- swap_decline --------------------------------------------------------------------------------

def validate_swap_decline(state: LedgerState, entry: Entry, body: SwapDecline, rules: LedgerRules) -> None:
    # No time rule: handing a lock back is safe at any time (it can only return the buyer's own
    # credits), so there is no deadline for validators to straddle; only a filled lock is final.
    record = known_lock(state, body.swap_id)
    if record.lock.seller != entry.account or record.lock.order_id != body.pool_id or record.buyer != body.trader:
        raise EntryRejected(RejectReason.LOCK_MISMATCH, "only the pool host named in the lock declines it")
    if record.status is LockStatus.FILLED:
        raise EntryRejected(RejectReason.LOCK_CLOSED, f"lock {body.swap_id.hex()} is filled")


def process_swap_decline(state: LedgerState, entry: Entry, body: SwapDecline, rules: LedgerRules) -> None:
    if body.swap_id not in state.locks:
        raise ChainInconsistent(f"certified decline of lock {body.swap_id.hex()} which is unknown")
    return_lock(state, body.swap_id)       # a no-op if the buyer's release came first


def _decline_ready(state: LedgerState, entry: Entry, body: SwapDecline) -> bool:
    return body.swap_id in state.locks


register_kind(KindRules(POOL_OPEN_KIND, PoolOpen, validate_pool_open, process_pool_open))
register_kind(KindRules(POOL_UPDATE_KIND, PoolUpdate, validate_pool_update, process_pool_update))
register_kind(KindRules(SWAP_KIND, Swap, validate_swap, process_swap, _swap_keys, _swap_ready))
register_kind(KindRules(SWAP_DECLINE_KIND, SwapDecline, validate_swap_decline, process_swap_decline,
                        is_ready=_decline_ready))
