"""Dissipation-aware constant-product pools for one (zone, slot), hosted by a storage node (pure).

A storage node hosts one pool per (zone, slot). Its reserves are **energy** ``energy_wh`` (Wh the
host will deliver in the slot) and **credits** ``credits_uc`` (µc). Every function takes a ``Pool``
and returns a new one; nothing here does I/O or reads a clock (time is ``now_ms``, Unix ms).

Swaps (Uniswap v2 arithmetic, fee ``fee_bps`` basis points, γ = (10000 − fee_bps) / 10000)
---------------------------------------------------------------------------------------------
A trader of side BUY pays credits for energy; a trader of side SELL pays energy for credits.
With input reserve ``R_in`` and output reserve ``R_out``:

* exact-in:   ``out = floor(in·(10000−fee_bps)·R_out / (R_in·10000 + in·(10000−fee_bps)))``
  — for fee_bps = 30 this is exactly Uniswap v2's ``getAmountOut`` (in·997·R_out / (R_in·1000 +
  in·997), numerator and denominator scaled by 10).
* exact-out:  ``in = ceil(out·R_in·10000 / ((R_out − out)·(10000−fee_bps)))``, requires
  ``0 < out < R_out``. This is the *least* integer input whose exact-in output reaches ``out``
  (Uniswap's ``getAmountIn`` adds 1 instead of rounding up, paying one unit too much when the
  division is exact), so ``out <= amount_out(amount_in(out)) `` and ``amount_out(amount_in(out) − 1)
  < out``: exact-in and exact-out agree within one unit.

Rounding always favours the pool (output down, input up), so ``k = energy_wh · credits_uc`` never
decreases on a swap, and the whole input enters the reserve: the fee stays in the pool and accrues
to the liquidity providers through their shares. Reserves change only by the exact amounts paid in
and out, so no money or energy is ever created.

Energy bound
------------
The energy reserve never exceeds ``energy_cap_wh``: what the host can deliver in the slot,
``min(stored energy, power limit × slot length)``, supplied by the host (``set_energy_cap``).
A SELL swap or energy deposit that would exceed it is refused (``CapacityExceeded``); a smaller cap
trims the reserve to it.

Dissipation (decay)
-------------------
Stored energy leaks. The host's config gives ``self_discharge_ppm_per_h`` (share of stored energy
lost per hour, in millionths) and ``conversion_loss_w`` (standing conversion losses of inverter and
battery management, watts drawn from the store). Before any operation at ``now_ms`` the pool
accrues decay over ``Δ = min(now_ms, gate_closure_ms) − updated_ms`` milliseconds::

    total    = decay_residue + E·self_discharge_ppm_per_h·Δ + conversion_loss_w·10^6·Δ
    loss     = min(E, total // 3.6·10^12)          # 10^6 ppm × 3.6·10^6 ms per hour
    residue' = total mod 3.6·10^12   (0 if the whole reserve was lost)
    E'       = E − loss

Integer and deterministic; the remainder is carried, so the constant part is exact however time is
split, and the proportional part is an Euler step (a second-order difference from continuous
exponential decay at battery-like rates). Decay only ever removes energy; the credits reserve and
the shares are untouched, so the providers bear the dissipation (the energy price rises as E
shrinks). Decay stops at gate closure, when the pool **freezes**: from ``gate_closure_ms`` on,
swaps and deposits raise ``PoolFrozen``; withdrawals stay open.

Liquidity
---------
The host seeds the pool (``open_pool``) with both assets and receives ``isqrt(E·M)`` shares. Anyone
may deposit credits; only the host may deposit energy (it must be backed by the host's battery).
A one-sided deposit ``d`` is priced as what it is, a swap followed by a balanced join (a "zap"):
part ``x`` of it is swapped at the pool's own swap arithmetic (fee included, rounded for the pool),
giving ``y`` of the other asset; then ``d − x`` and ``y`` join the post-swap reserves ``(R_in + x,
R_out − y)`` and mint::

    minted = min(S·(d − x) // (R_in + x),  S·y // (R_out − y))

with ``x`` the balancing amount (Uniswap's zap formula, integer square root). The full ``d`` enters
the reserve. A deposit that would mint 0 shares is refused (``DepositTooSmall``) rather than
given to the other providers. Burning ``s`` of ``S`` shares pays ``floor(s·E/S)`` Wh and
``floor(s·M/S)`` µc (the last holder gets everything). Withdrawn energy is a claim on the host's
delivery in the slot, like energy bought in a swap.

**A deposit and withdrawal never beat a swap.** The shares minted are worth at most ``d − x`` and
``y`` (both divisions floor), so withdrawing them at once returns at most ``y`` of the other asset
for at least ``x`` spent: no more than a swap of what was spent would pay
(``test_a_deposit_and_withdrawal_never_beat_a_swap``).

**Caps after gate closure.** A frozen pool takes no swaps or deposits, but its host may still
*lower* its energy cap (a failed battery cannot deliver what the pool promised); raising it stays
refused.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import isqrt

from p2pgrid.market.errors import (
    CapacityExceeded, DepositTooSmall, InsufficientLiquidity, NotPoolHost, PoolError, PoolFrozen,
    SlippageExceeded,
)
from p2pgrid.market.orders import Side

__all__ = [
    "BPS", "DECAY_DENOMINATOR", "HostLosses", "Pool", "Quote", "Withdrawal", "accrue", "amount_in_for_out",
    "amount_out_for_in", "buy_marginal_price", "decay_step", "deposit_credits", "deposit_energy", "mid_price",
    "open_pool", "out_exact_in", "quote_exact_in", "quote_exact_out", "sell_marginal_price", "set_energy_cap",
    "swap_exact_in", "swap_exact_out", "withdraw",
]

BPS = 10_000
MAX_FEE_BPS = 1_000          # 10 %: beyond that nobody would trade; also keeps γ well away from 0
DECAY_DENOMINATOR = 1_000_000 * 3_600_000   # ppm × ms per hour
WH_PER_KWH = 1000
PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class HostLosses:
    """Dissipation parameters from the host's battery config (see the module docstring)."""

    self_discharge_ppm_per_h: int = 0
    conversion_loss_w: int = 0

    def __post_init__(self) -> None:
        if not (type(self.self_discharge_ppm_per_h) is int and 0 <= self.self_discharge_ppm_per_h <= PPM):
            raise PoolError("self_discharge_ppm_per_h must be an int in [0, 10^6]")
        if not (type(self.conversion_loss_w) is int and self.conversion_loss_w >= 0):
            raise PoolError("conversion_loss_w must be a non-negative int")


NO_LOSSES = HostLosses()


@dataclass(frozen=True, slots=True)
class Pool:
    """The state of one pool. ``shares`` holds (provider, shares) sorted by provider."""

    pool_id: bytes
    host: bytes
    zone: str
    slot: int
    energy_wh: int
    credits_uc: int
    fee_bps: int
    energy_cap_wh: int
    gate_closure_ms: int
    losses: HostLosses
    updated_ms: int
    decay_residue: int
    total_shares: int
    shares: tuple[tuple[bytes, int], ...]

    @property
    def k(self) -> int:
        return self.energy_wh * self.credits_uc

    def shares_of(self, provider: bytes) -> int:
        for owner, amount in self.shares:
            if owner == provider:
                return amount
        return 0

    def is_frozen(self, now_ms: int) -> bool:
        return now_ms >= self.gate_closure_ms


@dataclass(frozen=True, slots=True)
class Quote:
    """One swap. Prices in µc/kWh; ``fee`` (floor of in·fee_bps/10000) is in input units."""

    side: Side
    amount_in: int
    amount_out: int
    energy_wh: int
    credits_uc: int
    fee: int
    mid_before: int
    mid_after: int
    average_price: int
    price_impact_ppm: int


@dataclass(frozen=True, slots=True)
class Withdrawal:
    provider: bytes
    shares: int
    energy_wh: int
    credits_uc: int


# --- swap arithmetic ----------------------------------------------------------------------------

def amount_out_for_in(amount_in: int, reserve_in: int, reserve_out: int, fee_bps: int) -> int:
    """Exact-in output, rounded down (Uniswap v2 ``getAmountOut`` generalised to any fee)."""
    net = amount_in * (BPS - fee_bps)
    return net * reserve_out // (reserve_in * BPS + net)


def amount_in_for_out(amount_out: int, reserve_in: int, reserve_out: int, fee_bps: int) -> int:
    """The least input whose exact-in output is at least ``amount_out`` (needs out < reserve)."""
    if not 0 < amount_out < reserve_out:
        raise InsufficientLiquidity(f"cannot take {amount_out} of a reserve of {reserve_out}")
    numerator = amount_out * reserve_in * BPS
    denominator = (reserve_out - amount_out) * (BPS - fee_bps)
    return -(-numerator // denominator)


def mid_price(energy_wh: int, credits_uc: int) -> int:
    """The pool's marginal price without fee, µc/kWh (floor); 0 for an empty pool."""
    return credits_uc * WH_PER_KWH // energy_wh if energy_wh > 0 else 0


def buy_marginal_price(pool: Pool) -> int:
    """What the next Wh costs a buyer, fee included, µc/kWh (ceil). An empty pool has no price."""
    _require_reserves(pool)
    return -(-pool.credits_uc * WH_PER_KWH * BPS // (pool.energy_wh * (BPS - pool.fee_bps)))


def sell_marginal_price(pool: Pool) -> int:
    """What the next Wh earns a seller, fee included, µc/kWh (floor). An empty pool has no price."""
    _require_reserves(pool)
    return pool.credits_uc * WH_PER_KWH * (BPS - pool.fee_bps) // (pool.energy_wh * BPS)


def _require_reserves(pool: Pool) -> None:
    if pool.energy_wh <= 0 or pool.credits_uc <= 0:
        raise InsufficientLiquidity(f"pool {pool.pool_id.hex()} is empty: it has no price")


def _reserves(pool: Pool, side: Side) -> tuple[int, int]:
    """(reserve_in, reserve_out) for a trader of ``side``."""
    return (pool.credits_uc, pool.energy_wh) if side is Side.BUY else (pool.energy_wh, pool.credits_uc)


def _quote(pool: Pool, side: Side, amount_in: int, amount_out: int) -> Quote:
    if side is Side.BUY:
        energy, money = amount_out, amount_in
        after_e, after_m = pool.energy_wh - energy, pool.credits_uc + money
    else:
        energy, money = amount_in, amount_out
        after_e, after_m = pool.energy_wh + energy, pool.credits_uc - money
    before = mid_price(pool.energy_wh, pool.credits_uc)
    after = mid_price(after_e, after_m)
    impact = abs(after - before) * PPM // before if before else 0
    return Quote(side=side, amount_in=amount_in, amount_out=amount_out, energy_wh=energy, credits_uc=money,
                 fee=amount_in * pool.fee_bps // BPS, mid_before=before, mid_after=after,
                 average_price=money * WH_PER_KWH // energy if energy else 0, price_impact_ppm=impact)


def _check_amount(name: str, value: int) -> None:
    if not (type(value) is int and value > 0):
        raise PoolError(f"{name} must be a positive int, got {value!r}")


def out_exact_in(pool: Pool, side: Side, amount_in: int) -> int:
    """``quote_exact_in(pool, side, amount_in).amount_out`` without building the ``Quote`` (same
    checks, same errors): the lean path for code that only needs the amount (routing, a
    strategy probing sizes); a full quote costs ~10× more, most of it the display fields."""
    if type(amount_in) is not int or amount_in <= 0:
        _check_amount("amount_in", amount_in)
    if side is Side.BUY:
        reserve_in, reserve_out = pool.credits_uc, pool.energy_wh
    else:
        reserve_in, reserve_out = pool.energy_wh, pool.credits_uc
    if reserve_in <= 0 or reserve_out <= 0:
        raise InsufficientLiquidity(f"pool {pool.pool_id.hex()} is empty")
    net = amount_in * (BPS - pool.fee_bps)
    out: int = net * reserve_out // (reserve_in * BPS + net)      # amount_out_for_in, inlined
    if out <= 0:
        raise InsufficientLiquidity(f"{amount_in} in buys nothing from pool {pool.pool_id.hex()}")
    return out


def quote_exact_in(pool: Pool, side: Side, amount_in: int) -> Quote:
    """Quote paying exactly ``amount_in`` (µc for BUY, Wh for SELL) at the pool's current state
    (every display field; ``out_exact_in`` gives just the amount)."""
    return _quote(pool, side, amount_in, out_exact_in(pool, side, amount_in))


def quote_exact_out(pool: Pool, side: Side, amount_out: int) -> Quote:
    """Quote receiving exactly ``amount_out`` (Wh for BUY, µc for SELL) at the current state."""
    _check_amount("amount_out", amount_out)
    reserve_in, reserve_out = _reserves(pool, side)
    if reserve_in <= 0:
        raise InsufficientLiquidity(f"pool {pool.pool_id.hex()} is empty")
    return _quote(pool, side, amount_in_for_out(amount_out, reserve_in, reserve_out, pool.fee_bps), amount_out)


# --- time ---------------------------------------------------------------------------------------

def decay_step(energy_wh: int, residue: int, losses: HostLosses, elapsed_ms: int) -> tuple[int, int]:
    """(energy, residue) after ``elapsed_ms`` of dissipation: the formula of the module docstring."""
    if elapsed_ms <= 0 or energy_wh <= 0:
        return energy_wh, residue
    total = residue + energy_wh * losses.self_discharge_ppm_per_h * elapsed_ms \
        + losses.conversion_loss_w * PPM * elapsed_ms
    loss, residue = divmod(total, DECAY_DENOMINATOR)
    if loss >= energy_wh:
        return 0, 0
    return energy_wh - loss, residue


def accrue(pool: Pool, now_ms: int) -> Pool:
    """The pool at ``now_ms``: decay applied up to ``min(now_ms, gate_closure_ms)``."""
    until = min(now_ms, pool.gate_closure_ms)
    if until <= pool.updated_ms:
        return pool
    energy, residue = decay_step(pool.energy_wh, pool.decay_residue, pool.losses, until - pool.updated_ms)
    return replace(pool, energy_wh=energy, decay_residue=residue, updated_ms=until)


def _live(pool: Pool, now_ms: int, action: str) -> Pool:
    if pool.is_frozen(now_ms):
        raise PoolFrozen(f"pool {pool.pool_id.hex()} froze at gate closure {pool.gate_closure_ms}; "
                         f"cannot {action} at {now_ms}")
    return accrue(pool, now_ms)


# --- swaps --------------------------------------------------------------------------------------

def _apply_swap(pool: Pool, quote: Quote) -> Pool:
    if quote.side is Side.BUY:
        energy, money = pool.energy_wh - quote.energy_wh, pool.credits_uc + quote.credits_uc
    else:
        energy, money = pool.energy_wh + quote.energy_wh, pool.credits_uc - quote.credits_uc
        if energy > pool.energy_cap_wh:
            raise CapacityExceeded(f"pool {pool.pool_id.hex()} can hold {pool.energy_cap_wh} Wh; "
                                   f"selling {quote.energy_wh} Wh would make {energy}")
    return replace(pool, energy_wh=energy, credits_uc=money)


def swap_exact_in(pool: Pool, side: Side, amount_in: int, now_ms: int, min_out: int = 0) -> tuple[Pool, Quote]:
    """Pay exactly ``amount_in``; refuse if the output would be below ``min_out``."""
    pool = _live(pool, now_ms, "swap")
    quote = quote_exact_in(pool, side, amount_in)
    if quote.amount_out < min_out:
        raise SlippageExceeded(f"swap pays out {quote.amount_out} < min_out {min_out}")
    return _apply_swap(pool, quote), quote


def swap_exact_out(pool: Pool, side: Side, amount_out: int, now_ms: int,
                   max_in: int | None = None) -> tuple[Pool, Quote]:
    """Receive exactly ``amount_out``; refuse if the input would exceed ``max_in``."""
    pool = _live(pool, now_ms, "swap")
    quote = quote_exact_out(pool, side, amount_out)
    if max_in is not None and quote.amount_in > max_in:
        raise SlippageExceeded(f"swap costs {quote.amount_in} > max_in {max_in}")
    return _apply_swap(pool, quote), quote


# --- liquidity ----------------------------------------------------------------------------------

def open_pool(*, pool_id: bytes, host: bytes, zone: str, slot: int, energy_wh: int, credits_uc: int,
              fee_bps: int, energy_cap_wh: int, gate_closure_ms: int, now_ms: int,
              losses: HostLosses = NO_LOSSES) -> Pool:
    """A new pool seeded by its host, who receives ``isqrt(energy_wh · credits_uc)`` shares."""
    _check_amount("energy_wh", energy_wh)
    _check_amount("credits_uc", credits_uc)
    if not (type(fee_bps) is int and 0 <= fee_bps <= MAX_FEE_BPS):
        raise PoolError(f"fee_bps must be an int in [0, {MAX_FEE_BPS}], got {fee_bps!r}")
    if energy_wh > energy_cap_wh:
        raise CapacityExceeded(f"seed of {energy_wh} Wh exceeds the host's cap of {energy_cap_wh} Wh")
    if now_ms >= gate_closure_ms:
        raise PoolFrozen(f"cannot open a pool at {now_ms}, at or after gate closure {gate_closure_ms}")
    shares = isqrt(energy_wh * credits_uc)
    return Pool(pool_id=pool_id, host=host, zone=zone, slot=slot, energy_wh=energy_wh, credits_uc=credits_uc,
                fee_bps=fee_bps, energy_cap_wh=energy_cap_wh, gate_closure_ms=gate_closure_ms, losses=losses,
                updated_ms=now_ms, decay_residue=0, total_shares=shares, shares=((host, shares),))


def _with_shares(pool: Pool, provider: bytes, delta: int) -> tuple[tuple[bytes, int], ...]:
    holdings = dict(pool.shares)
    left = holdings.get(provider, 0) + delta
    if left:
        holdings[provider] = left
    else:
        holdings.pop(provider, None)
    return tuple(sorted(holdings.items()))


def _zap_minted(pool: Pool, amount: int, reserve_in: int, reserve_out: int) -> int:
    """Shares for depositing ``amount`` of the asset held as ``reserve_in``: swap the balancing
    part, join with the rest (module docstring). Raises when the pool is empty or nothing is minted."""
    if reserve_in <= 0 or reserve_out <= 0 or pool.total_shares <= 0:
        raise InsufficientLiquidity(f"pool {pool.pool_id.hex()} is empty; its host must open it anew")
    gamma = BPS - pool.fee_bps
    # Uniswap's zap: x = (√(R²(1+γ)² + 4γ·R·d) − R(1+γ)) / 2γ, in basis points.
    balanced = (isqrt(reserve_in * reserve_in * (BPS + gamma) ** 2 + 4 * gamma * BPS * reserve_in * amount)
                - reserve_in * (BPS + gamma)) // (2 * gamma)
    best = 0
    for swapped in {max(0, min(amount, balanced + step)) for step in (-1, 0, 1)}:
        received = amount_out_for_in(swapped, reserve_in, reserve_out, pool.fee_bps)
        if received <= 0 or received >= reserve_out:
            continue
        minted = min(pool.total_shares * (amount - swapped) // (reserve_in + swapped),
                     pool.total_shares * received // (reserve_out - received))
        best = max(best, minted)
    if best <= 0:
        raise DepositTooSmall(f"a deposit of {amount} into pool {pool.pool_id.hex()} mints no share")
    return best


def deposit_credits(pool: Pool, provider: bytes, amount_uc: int, now_ms: int) -> tuple[Pool, int]:
    """Add ``amount_uc`` µc for shares (anyone). Returns the new pool and the shares minted."""
    _check_amount("amount_uc", amount_uc)
    pool = _live(pool, now_ms, "deposit")
    minted = _zap_minted(pool, amount_uc, pool.credits_uc, pool.energy_wh)
    return replace(pool, credits_uc=pool.credits_uc + amount_uc, total_shares=pool.total_shares + minted,
                   shares=_with_shares(pool, provider, minted)), minted


def deposit_energy(pool: Pool, provider: bytes, amount_wh: int, now_ms: int) -> tuple[Pool, int]:
    """Add ``amount_wh`` Wh for shares: only the host, whose battery backs it, within the cap."""
    _check_amount("amount_wh", amount_wh)
    if provider != pool.host:
        raise NotPoolHost(f"only the host of pool {pool.pool_id.hex()} may deposit energy")
    pool = _live(pool, now_ms, "deposit")
    if pool.energy_wh + amount_wh > pool.energy_cap_wh:
        raise CapacityExceeded(f"pool {pool.pool_id.hex()} can hold {pool.energy_cap_wh} Wh; "
                               f"it has {pool.energy_wh} Wh")
    minted = _zap_minted(pool, amount_wh, pool.energy_wh, pool.credits_uc)
    return replace(pool, energy_wh=pool.energy_wh + amount_wh, total_shares=pool.total_shares + minted,
                   shares=_with_shares(pool, provider, minted)), minted


def withdraw(pool: Pool, provider: bytes, shares: int, now_ms: int) -> tuple[Pool, Withdrawal]:
    """Burn ``shares`` of ``provider`` for their pro-rata part of both reserves (floor)."""
    _check_amount("shares", shares)
    held = pool.shares_of(provider)
    if shares > held:
        raise PoolError(f"{provider.hex()} holds {held} shares of pool {pool.pool_id.hex()}, not {shares}")
    pool = accrue(pool, now_ms)
    energy = shares * pool.energy_wh // pool.total_shares
    money = shares * pool.credits_uc // pool.total_shares
    after = replace(pool, energy_wh=pool.energy_wh - energy, credits_uc=pool.credits_uc - money,
                    total_shares=pool.total_shares - shares, shares=_with_shares(pool, provider, -shares))
    return after, Withdrawal(provider, shares, energy, money)


def set_energy_cap(pool: Pool, energy_cap_wh: int, now_ms: int) -> tuple[Pool, int]:
    """The host's deliverable energy changed: new cap, reserve trimmed to it. Returns Wh trimmed."""
    if not (type(energy_cap_wh) is int and energy_cap_wh >= 0):
        raise PoolError(f"energy_cap_wh must be a non-negative int, got {energy_cap_wh!r}")
    # Lowering is allowed after gate closure: a host whose battery failed must be able to say so.
    pool = accrue(pool, now_ms) if energy_cap_wh <= pool.energy_cap_wh else _live(pool, now_ms, "raise its cap")
    trimmed = max(0, pool.energy_wh - energy_cap_wh)
    return replace(pool, energy_cap_wh=energy_cap_wh, energy_wh=pool.energy_wh - trimmed), trimmed
