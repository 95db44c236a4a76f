"""AMM pools: Uniswap v2 arithmetic, invariants, dissipation, liquidity."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import assume, given, settings, strategies as st

from p2pgrid.market import amm
from p2pgrid.market.amm import HostLosses
from p2pgrid.market.errors import (
    CapacityExceeded, DepositTooSmall, InsufficientLiquidity, NotPoolHost, PoolError, PoolFrozen,
    SlippageExceeded,
)
from p2pgrid.market.orders import Side

HOST, LP, TRADER = b"H" * 32, b"L" * 32, b"T" * 32
GATE = 10**9
HOUR_MS = 3_600_000


def make_pool(energy: int = 10_000, credits: int = 3_000_000, fee_bps: int = 30, cap: int | None = None,
              losses: HostLosses = amm.NO_LOSSES, now: int = 0) -> amm.Pool:
    return amm.open_pool(pool_id=b"P" * 16, host=HOST, zone="z", slot=0, energy_wh=energy, credits_uc=credits,
                         fee_bps=fee_bps, energy_cap_wh=cap if cap is not None else energy * 4,
                         gate_closure_ms=GATE, now_ms=now, losses=losses)


def uniswap_v2_get_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """Verbatim UniswapV2Library.getAmountOut (0.30 % fee)."""
    amount_in_with_fee = amount_in * 997
    numerator = amount_in_with_fee * reserve_out
    denominator = reserve_in * 1000 + amount_in_with_fee
    return numerator // denominator


reserves = st.integers(2, 10**12)
sides = st.sampled_from([Side.BUY, Side.SELL])
fees = st.integers(0, amm.MAX_FEE_BPS)


# --- Uniswap v2 equality and swap invariants ---------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(reserves, reserves, st.integers(1, 10**12), sides)
def test_exact_in_equals_uniswap_v2_get_amount_out_to_the_unit(energy, credits, amount_in, side):
    pool = make_pool(energy, credits, fee_bps=30, cap=max(energy, 10**13))
    reserve_in, reserve_out = (credits, energy) if side is Side.BUY else (energy, credits)
    expected = uniswap_v2_get_amount_out(amount_in, reserve_in, reserve_out)
    if expected == 0:
        with pytest.raises(InsufficientLiquidity):
            amm.quote_exact_in(pool, side, amount_in)
    else:
        assert amm.quote_exact_in(pool, side, amount_in).amount_out == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**12), st.integers(0, 10**12), fees, st.integers(-5, 10**12), sides)
def test_the_lean_amount_equals_the_full_quotes_and_fails_alike(energy, credits, fee, amount_in, side):
    # Reserves may be 0 (an emptied pool): built with replace, as decay and withdrawals leave them.
    pool = replace(make_pool(fee_bps=fee), energy_wh=energy, credits_uc=credits, energy_cap_wh=max(energy, 1))
    try:
        expected = amm.quote_exact_in(pool, side, amount_in).amount_out
    except PoolError as exc:          # whatever the full quote refuses with, the lean path must too
        with pytest.raises(type(exc)):
            amm.out_exact_in(pool, side, amount_in)
    else:
        assert amm.out_exact_in(pool, side, amount_in) == expected


def test_uniswap_worked_example():
    # 1 kWh pool at 0.30 credits/kWh; buying with 0.01 credits.
    pool = make_pool(1000, 300_000)
    quote = amm.quote_exact_in(pool, Side.BUY, 10_000)
    assert quote.amount_out == 10_000 * 997 * 1000 // (300_000 * 1000 + 10_000 * 997) == 32
    assert quote.mid_before == 300_000 and quote.mid_after == 310_000 * 1000 // 968


@settings(max_examples=400, deadline=None)
@given(reserves, reserves, fees, sides, st.integers(1, 10**12), st.booleans())
def test_k_never_decreases_and_reserves_move_by_exactly_what_was_paid(energy, credits, fee, side, amount, exact_in):
    pool = make_pool(energy, credits, fee_bps=fee, cap=10**13)
    try:
        if exact_in:
            after, quote = amm.swap_exact_in(pool, side, amount, now_ms=1)
        else:
            after, quote = amm.swap_exact_out(pool, side, amount, now_ms=1)
    except InsufficientLiquidity:
        return
    assert after.k >= pool.k
    assert quote.amount_in > 0 and quote.amount_out > 0
    if side is Side.BUY:
        assert after.credits_uc == pool.credits_uc + quote.amount_in
        assert after.energy_wh == pool.energy_wh - quote.amount_out
    else:
        assert after.energy_wh == pool.energy_wh + quote.amount_in
        assert after.credits_uc == pool.credits_uc - quote.amount_out
    assert after.energy_wh > 0 and after.credits_uc > 0


@settings(max_examples=400, deadline=None)
@given(reserves, reserves, fees, sides, st.integers(1, 10**12))
def test_exact_in_and_exact_out_agree_within_one_unit(energy, credits, fee, side, amount_out):
    reserve_in, reserve_out = (credits, energy) if side is Side.BUY else (energy, credits)
    assume(amount_out < reserve_out)
    needed = amm.amount_in_for_out(amount_out, reserve_in, reserve_out, fee)
    assert amm.amount_out_for_in(needed, reserve_in, reserve_out, fee) >= amount_out
    if needed > 1:
        assert amm.amount_out_for_in(needed - 1, reserve_in, reserve_out, fee) < amount_out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(sides, st.integers(1, 50_000), st.booleans()), max_size=30), fees)
def test_money_and_energy_are_conserved_over_a_run_of_swaps(trades, fee):
    pool = make_pool(100_000, 30_000_000, fee_bps=fee, cap=10**7)
    start = pool
    paid_credits = got_credits = paid_energy = got_energy = 0
    for side, amount, exact_in in trades:
        try:
            pool, q = (amm.swap_exact_in if exact_in else amm.swap_exact_out)(pool, side, amount, now_ms=1)
        except InsufficientLiquidity:
            continue
        paid_credits += q.credits_uc if side is Side.BUY else 0
        got_credits += q.credits_uc if side is Side.SELL else 0
        paid_energy += q.energy_wh if side is Side.SELL else 0
        got_energy += q.energy_wh if side is Side.BUY else 0
    assert pool.credits_uc == start.credits_uc + paid_credits - got_credits
    assert pool.energy_wh == start.energy_wh + paid_energy - got_energy
    assert pool.k >= start.k


def test_marginal_prices_include_the_fee_and_quotes_report_impact():
    pool = make_pool(10_000, 3_000_000, fee_bps=30)
    assert amm.buy_marginal_price(pool) == 300_903       # ceil(300_000 / 0.997)
    assert amm.sell_marginal_price(pool) == 299_100      # floor(300_000 · 0.997)
    quote = amm.quote_exact_out(pool, Side.BUY, 1_000)
    assert quote.mid_before == 300_000 and quote.mid_after == (3_000_000 + quote.amount_in) * 1000 // 9_000
    assert quote.price_impact_ppm == (quote.mid_after - 300_000) * 1_000_000 // 300_000
    assert quote.mid_before < quote.average_price < quote.mid_after


def test_fee_is_charged_on_input():
    pool = make_pool(1_000_000, 300_000_000, fee_bps=30)
    quote = amm.quote_exact_in(pool, Side.BUY, 1_000_000)
    assert quote.fee == 3_000
    free = make_pool(1_000_000, 300_000_000, fee_bps=0)
    assert amm.quote_exact_in(free, Side.BUY, 1_000_000).amount_out > quote.amount_out


def test_slippage_bounds_refuse_worse_swaps():
    pool = make_pool()
    quote = amm.quote_exact_in(pool, Side.BUY, 100_000)
    with pytest.raises(SlippageExceeded):
        amm.swap_exact_in(pool, Side.BUY, 100_000, now_ms=1, min_out=quote.amount_out + 1)
    amm.swap_exact_in(pool, Side.BUY, 100_000, now_ms=1, min_out=quote.amount_out)
    with pytest.raises(SlippageExceeded):
        amm.swap_exact_out(pool, Side.BUY, 100, now_ms=1, max_in=amm.quote_exact_out(pool, Side.BUY, 100).amount_in - 1)


def test_cannot_drain_a_reserve():
    pool = make_pool(1000, 300_000)
    with pytest.raises(InsufficientLiquidity):
        amm.swap_exact_out(pool, Side.BUY, 1000, now_ms=1)


# --- energy cap and freezing ------------------------------------------------------------------

def test_selling_energy_beyond_the_hosts_cap_is_refused():
    pool = make_pool(10_000, 3_000_000, cap=10_500)
    amm.swap_exact_in(pool, Side.SELL, 500, now_ms=1)
    with pytest.raises(CapacityExceeded):
        amm.swap_exact_in(pool, Side.SELL, 501, now_ms=1)


def test_a_smaller_cap_trims_the_reserve():
    pool, trimmed = amm.set_energy_cap(make_pool(10_000, 3_000_000), 8_000, now_ms=1)
    assert trimmed == 2_000 and pool.energy_wh == 8_000 and pool.energy_cap_wh == 8_000


def test_frozen_pool_refuses_swaps_and_deposits_with_a_clear_error():
    pool = make_pool()
    with pytest.raises(PoolFrozen, match="froze at gate closure"):
        amm.swap_exact_in(pool, Side.BUY, 1000, now_ms=GATE)
    with pytest.raises(PoolFrozen):
        amm.swap_exact_out(pool, Side.SELL, 1000, now_ms=GATE + 5)
    with pytest.raises(PoolFrozen):
        amm.deposit_credits(pool, LP, 1000, now_ms=GATE)
    amm.swap_exact_in(pool, Side.BUY, 1000, now_ms=GATE - 1)
    after, paid = amm.withdraw(pool, HOST, pool.total_shares, now_ms=GATE + 1)   # withdrawals stay open
    assert (paid.energy_wh, paid.credits_uc) == (pool.energy_wh, pool.credits_uc)


# --- dissipation ------------------------------------------------------------------------------

def test_decay_worked_example():
    # 100 kWh stored, 1000 ppm/h self-discharge (100 Wh/h) and 50 W standing conversion losses.
    pool = make_pool(100_000, 30_000_000, losses=HostLosses(self_discharge_ppm_per_h=1000, conversion_loss_w=50))
    after = amm.accrue(pool, HOUR_MS)
    assert after.energy_wh == 100_000 - 100 - 50
    assert after.credits_uc == pool.credits_uc and after.total_shares == pool.total_shares
    assert after.decay_residue == 0


def test_decay_stops_at_gate_closure():
    losses = HostLosses(self_discharge_ppm_per_h=0, conversion_loss_w=1)
    pool = make_pool(100_000, 30_000_000, losses=losses, now=GATE - HOUR_MS)
    assert amm.accrue(pool, GATE + 10 * HOUR_MS).energy_wh == 100_000 - 1


def test_decay_can_empty_a_pool_and_an_empty_pool_refuses_swaps():
    pool = make_pool(10, 3_000, losses=HostLosses(0, 1000))
    after = amm.accrue(pool, HOUR_MS)
    assert after.energy_wh == 0
    with pytest.raises(InsufficientLiquidity):
        amm.swap_exact_in(after, Side.BUY, 100, now_ms=HOUR_MS)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10**9), st.integers(0, 10**6), st.integers(0, 10**5),
       st.lists(st.integers(0, 10 * HOUR_MS), max_size=10))
def test_decay_only_ever_removes_energy(energy, ppm, standby, steps):
    pool = make_pool(energy, 10**9, losses=HostLosses(ppm, standby), cap=10**10)
    now = 0
    for step in steps:
        now += step
        after = amm.accrue(pool, now)
        assert 0 <= after.energy_wh <= pool.energy_wh
        assert after.credits_uc == pool.credits_uc
        pool = after


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**9), st.integers(0, 10**5), st.lists(st.integers(0, 2 * HOUR_MS), min_size=1, max_size=10))
def test_constant_losses_do_not_depend_on_how_time_is_split(energy, standby, steps):
    losses = HostLosses(0, standby)
    pool = make_pool(energy, 10**9, losses=losses, cap=10**10)
    stepped, now = pool, 0
    for step in steps:
        now += step
        stepped = amm.accrue(stepped, now)
    assert stepped.energy_wh == amm.accrue(pool, now).energy_wh


@settings(max_examples=200, deadline=None)
@given(st.integers(1000, 10**9), st.integers(1, 10**4), st.integers(1, 24 * HOUR_MS), st.integers(2, 20))
def test_self_discharge_in_steps_differs_from_one_step_by_a_second_order_term(energy, ppm, span, pieces):
    pool = make_pool(energy, 10**9, losses=HostLosses(ppm, 0), cap=10**10)
    stepped = pool
    for i in range(1, pieces + 1):
        stepped = amm.accrue(stepped, span * i // pieces)
    once = amm.accrue(pool, span)
    assert once.energy_wh <= stepped.energy_wh   # compounding loses less, never more
    loss = pool.energy_wh - once.energy_wh
    assert stepped.energy_wh - once.energy_wh <= loss * loss // pool.energy_wh + 1


# --- liquidity ---------------------------------------------------------------------------------

def test_only_the_host_deposits_energy_within_its_cap():
    pool = make_pool(10_000, 3_000_000, cap=12_000)
    with pytest.raises(NotPoolHost):
        amm.deposit_energy(pool, LP, 100, now_ms=1)
    with pytest.raises(CapacityExceeded):
        amm.deposit_energy(pool, HOST, 2_001, now_ms=1)
    after, minted = amm.deposit_energy(pool, HOST, 2_000, now_ms=1)
    assert minted > 0 and after.shares_of(HOST) == pool.shares_of(HOST) + minted


def test_first_shares_are_the_geometric_mean():
    pool = make_pool(10_000, 4_000_000)
    assert pool.total_shares == 200_000 and pool.shares == ((HOST, 200_000),)


def test_fees_accrue_to_liquidity_providers():
    pool, minted = amm.deposit_credits(make_pool(100_000, 30_000_000), LP, 10_000_000, now_ms=1)
    _, early = amm.withdraw(pool, LP, minted, now_ms=1)
    for _ in range(20):   # a trader buys and sells back: each round trip leaves fees behind
        pool, bought = amm.swap_exact_in(pool, Side.BUY, 2_000_000, now_ms=1)
        pool, _ = amm.swap_exact_in(pool, Side.SELL, bought.amount_out, now_ms=1)
    _, late = amm.withdraw(pool, LP, minted, now_ms=1)
    assert late.credits_uc * late.energy_wh > early.credits_uc * early.energy_wh
    assert late.credits_uc > early.credits_uc and late.energy_wh >= early.energy_wh


@settings(max_examples=300, deadline=None)
@given(reserves, reserves, fees, st.integers(1, 10**12))
def test_deposit_then_withdraw_never_returns_more_than_was_put_in(energy, credits, fee, deposit):
    pool = make_pool(energy, credits, fee_bps=fee, cap=10**13)
    try:
        joined, minted = amm.deposit_credits(pool, LP, deposit, now_ms=1)
    except DepositTooSmall:
        return
    left, paid = amm.withdraw(joined, LP, minted, now_ms=1)
    value = paid.credits_uc
    if paid.energy_wh:
        value += amm.amount_out_for_in(paid.energy_wh, left.energy_wh, left.credits_uc, fee)
    assert value <= deposit
    assert left.k >= pool.k


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["credits", "energy", "withdraw", "swap"]), st.integers(1, 10**6),
                          st.sampled_from([HOST, LP, TRADER])), max_size=30), fees)
def test_liquidity_accounting_is_exact(ops, fee):
    pool = make_pool(100_000, 30_000_000, fee_bps=fee, cap=10**7)
    credits_in = pool.credits_uc
    energy_in = pool.energy_wh
    for kind, amount, who in ops:
        try:
            if kind == "credits":
                pool, _ = amm.deposit_credits(pool, who, amount, now_ms=1)
                credits_in += amount
            elif kind == "energy":
                pool, _ = amm.deposit_energy(pool, who, amount, now_ms=1)
                energy_in += amount
            elif kind == "withdraw":
                held = pool.shares_of(who)
                if held == 0:
                    continue
                pool, paid = amm.withdraw(pool, who, min(amount, held), now_ms=1)
                credits_in -= paid.credits_uc
                energy_in -= paid.energy_wh
            else:
                pool, q = amm.swap_exact_in(pool, Side.BUY, amount, now_ms=1)
                credits_in += q.credits_uc
                energy_in -= q.energy_wh
        except (NotPoolHost, CapacityExceeded, InsufficientLiquidity, DepositTooSmall):
            continue
        assert pool.credits_uc == credits_in and pool.energy_wh == energy_in
        assert pool.total_shares == sum(s for _, s in pool.shares)
        assert all(s > 0 for _, s in pool.shares)


def test_last_holder_takes_everything_and_overdrawing_shares_is_refused():
    pool, minted = amm.deposit_credits(make_pool(), LP, 1_000_000, now_ms=1)
    with pytest.raises(PoolError):
        amm.withdraw(pool, LP, minted + 1, now_ms=1)
    pool, _ = amm.withdraw(pool, LP, minted, now_ms=1)
    pool, _ = amm.withdraw(pool, HOST, pool.shares_of(HOST), now_ms=1)
    assert (pool.energy_wh, pool.credits_uc, pool.total_shares, pool.shares) == (0, 0, 0, ())
    with pytest.raises(InsufficientLiquidity):
        amm.deposit_credits(pool, LP, 1000, now_ms=1)


def test_bad_parameters_are_refused():
    with pytest.raises(PoolError):
        make_pool(fee_bps=10_000)
    with pytest.raises(CapacityExceeded):
        make_pool(10_000, 1_000, cap=9_999)
    with pytest.raises(PoolError):
        HostLosses(self_discharge_ppm_per_h=-1)
    with pytest.raises(PoolError):
        amm.quote_exact_in(make_pool(), Side.BUY, 0)


# --- edge cases: empty pools, tiny deposits, round trips, caps after gate closure ------------------

@settings(max_examples=300, deadline=None)
@given(reserves, reserves, fees, st.integers(1, 10**12), st.sampled_from(["credits", "energy"]))
def test_a_deposit_and_withdrawal_never_beat_a_swap(energy, credits, fee, deposit, asset):
    """Deposit one asset, withdraw the shares at once: what came back of the other asset is no
    more than a swap of what was spent would have paid, from the same pool."""
    pool = make_pool(energy, credits, fee_bps=fee, cap=10**13)
    depositing_credits = asset == "credits"
    join, who = (amm.deposit_credits, LP) if depositing_credits else (amm.deposit_energy, HOST)
    try:
        joined, minted = join(pool, who, deposit, now_ms=1)
    except DepositTooSmall:
        return
    _, paid = amm.withdraw(joined, who, minted, now_ms=1)
    spent = deposit - (paid.credits_uc if depositing_credits else paid.energy_wh)
    gained = paid.energy_wh if depositing_credits else paid.credits_uc
    assert spent >= 0
    if gained == 0:
        return
    side = Side.BUY if depositing_credits else Side.SELL
    reserve_in, reserve_out = (credits, energy) if depositing_credits else (energy, credits)
    assert gained <= amm.amount_out_for_in(spent, reserve_in, reserve_out, fee)


def test_the_issue_round_trip_now_costs_at_least_the_swap():
    """Fee on half the deposit, returned pro rata, used to make deposit + withdraw cheaper."""
    pool = make_pool(100_000, 30_000_000, fee_bps=1000, cap=10**9)
    joined, minted = amm.deposit_credits(pool, LP, 30_000_000, now_ms=1)
    _, paid = amm.withdraw(joined, LP, minted, now_ms=1)
    spent = 30_000_000 - paid.credits_uc
    assert paid.energy_wh <= amm.amount_out_for_in(spent, 30_000_000, 100_000, 1000)


def test_a_deposit_that_would_mint_no_share_is_refused_and_keeps_nothing():
    pool = make_pool(10**9, 10**12)
    with pytest.raises(DepositTooSmall):
        amm.deposit_credits(pool, LP, 1, now_ms=1)
    with pytest.raises(DepositTooSmall):
        amm.deposit_energy(pool, HOST, 1, now_ms=1)


def test_marginal_prices_of_an_empty_pool_are_refused_not_divided_by_zero():
    pool = make_pool()
    pool, _ = amm.withdraw(pool, HOST, pool.total_shares, now_ms=1)
    assert (pool.energy_wh, pool.credits_uc) == (0, 0)
    for price in (amm.buy_marginal_price, amm.sell_marginal_price):
        with pytest.raises(InsufficientLiquidity):
            price(pool)
    assert amm.mid_price(0, 0) == 0


def test_the_host_can_lower_but_not_raise_the_cap_after_gate_closure():
    pool = make_pool(10_000, 3_000_000, cap=20_000)
    trimmed_pool, trimmed = amm.set_energy_cap(pool, 4_000, now_ms=GATE + 1)
    assert (trimmed_pool.energy_cap_wh, trimmed_pool.energy_wh, trimmed) == (4_000, 4_000, 6_000)
    with pytest.raises(PoolFrozen):
        amm.set_energy_cap(trimmed_pool, 5_000, now_ms=GATE + 2)
