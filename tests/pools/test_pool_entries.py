"""The pool entry kinds ``pool_open``, ``pool_update``, ``swap`` and ``swap_decline``: worked examples
and invariants. Every time limit is judged on the entry's own signed ``time_ms`` (``now`` below is
the date the test gives an entry), never on a validator's clock."""

import dataclasses
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, LockStatus, RejectReason, conflict_keys, derive_state, process_entry, state_root,
)
from p2pgrid.ledger.messages import Lock, Mint, Release, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.market.amm import accrue, swap_exact_in, swap_exact_out
from p2pgrid.pools.entries import (
    PoolOpen, PoolUpdate, SwapDecline, SwapRejected, compute_pool_id, compute_swap, deliverable_energy_wh,
    plan_swap, swap_record, with_request,
)
from p2pgrid.pools.messages import SwapRefuseReason, SwapRequest
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, sign

RULES = SlotRules()
NOW = 1_800_000_000_000
SLOT = RULES.tradable_slots(NOW)[2]
GATE = RULES.gate_closure_ms(SLOT)
CREDITS = 50_000_000
HOST, BUYER, SELLER = seeded_key("pool-host"), seeded_key("buyer"), seeded_key("seller")


class Zone:
    """A ledger state with a funded host, buyer and seller, and the entries that built it."""

    def __init__(self, *, energy_wh: int = 2_000, credits_uc: int = 400_000, fee_bps: int = 30,
                 cap_wh: int = 5_000, discharge_ppm_per_h: int = 0, loss_w: int = 0) -> None:
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.entries = []
        for key in (HOST, BUYER, SELLER):
            self.apply(self.fx.gateway, "mint", Mint(to=key.public_key, amount=CREDITS))
        self.pool_id = compute_pool_id(HOST.public_key, self.fx.zone, SLOT)
        self.apply(HOST, "pool_open", PoolOpen(
            pool_id=self.pool_id, slot=SLOT, energy_wh=energy_wh, credits_uc=credits_uc, fee_bps=fee_bps,
            energy_cap_wh=cap_wh, self_discharge_ppm_per_h=discharge_ppm_per_h, conversion_loss_w=loss_w, at_ms=NOW))

    @property
    def record(self):
        return self.state.pools[self.pool_id]

    @property
    def pool(self):
        return self.record.pool

    def entry(self, key, kind, body, now=NOW):
        """``key``'s next entry, dated ``now`` (or its predecessor's date, if later)."""
        return self.fx.entry_on(self.state, key, kind, body, now)

    def apply(self, key, kind, body, now=NOW):
        signed = self.entry(key, kind, body, now)
        process_entry(self.state, signed, self.fx.rules)
        self.entries.append(signed)
        return signed

    def rejection(self, key, kind, body, now=NOW) -> EntryRejected:
        before = state_root(self.state)
        with pytest.raises(EntryRejected) as info:
            process_entry(self.state.overlay(), self.entry(key, kind, body, now), self.fx.rules)
        assert state_root(self.state) == before
        return info.value

    def decline(self, request, reason="slippage"):
        body = request.body
        return SwapDecline(swap_id=body.request_id, pool_id=self.pool_id, trader=body.trader, reason=reason)

    def tick(self, key, now):
        """An entry of ``key``'s chain dated ``now`` (its chain time moves on)."""
        return self.apply(key, "mint" if key is self.fx.gateway else "transfer",
                          Mint(to=HOST.public_key, amount=1) if key is self.fx.gateway
                          else Transfer(to=self.fx.gateway.public_key, amount=1), now)

    def request(self, trader, side, energy_wh, limit_uc, expires_ms=GATE, **changes):
        return sign(dataclasses.replace(SwapRequest(
            request_id=os.urandom(16), trader=trader.public_key, host=HOST.public_key, pool_id=self.pool_id,
            zone=self.fx.zone, slot=SLOT, side=side, energy_wh=energy_wh, limit_uc=limit_uc,
            expires_ms=expires_ms), **changes), trader)

    def lock_for(self, request, amount=None, deadline_ms=None, at=NOW, **changes):
        body = request.body
        amount = body.limit_uc if amount is None else amount
        lock = dataclasses.replace(Lock(
            take_id=body.request_id, seller=HOST.public_key, order_id=self.pool_id, order_owner=HOST.public_key,
            order_size_wh=body.energy_wh, qty_wh=body.energy_wh, price=amount * 1000 // body.energy_wh,
            amount=amount, deadline_ms=deadline_ms or min(GATE, at + 30_000)), **changes)
        return self.apply(BUYER if body.trader == BUYER.public_key else SELLER, "lock", lock, at)

    def swap_body(self, request, at=NOW):
        return with_request(plan_swap(self.record, request.body, HOST.public_key, self.fx.zone, at), request)

    def buy(self, energy_wh, at=NOW, slack=1_000):
        _, quote = compute_swap(self.pool, Side.BUY, energy_wh, at)
        request = self.request(BUYER, Side.BUY, energy_wh, quote.credits_uc + slack)
        self.lock_for(request, at=at)
        self.apply(HOST, "swap", self.swap_body(request, at), at)
        return request, quote

    def sell(self, energy_wh, at=NOW):
        _, quote = compute_swap(self.pool, Side.SELL, energy_wh, at)
        request = self.request(SELLER, Side.SELL, energy_wh, quote.credits_uc)
        self.apply(HOST, "swap", self.swap_body(request, at), at)
        return request, quote


# --- worked examples -----------------------------------------------------------------------------

def test_buy_swap_pays_the_host_the_amm_price_and_returns_the_change_to_the_buyer():
    zone = Zone()
    request, quote = zone.buy(300, slack=5_000)
    state = zone.state
    expected_pool, expected_quote = swap_exact_out(accrue(Zone().pool, NOW), Side.BUY, 300, NOW)
    assert quote.credits_uc == expected_quote.credits_uc
    assert state.balance(HOST.public_key) == CREDITS + quote.credits_uc
    assert state.balance(BUYER.public_key) == CREDITS - quote.credits_uc      # the 5 000 µc of slack came back
    assert state.locks[request.body.request_id].status is LockStatus.FILLED
    assert (zone.pool.energy_wh, zone.pool.credits_uc) == (expected_pool.energy_wh, expected_pool.credits_uc)
    assert zone.record.version == 1 and zone.record.energy_out_wh == 300
    assert swap_record(state, request.body.request_id).credits_uc == quote.credits_uc
    assert state.money_total() == 0


def test_sell_swap_pays_the_trader_from_the_hosts_balance():
    zone = Zone()
    _, quote = zone.sell(400)
    assert zone.state.balance(SELLER.public_key) == CREDITS + quote.credits_uc
    assert zone.state.balance(HOST.public_key) == CREDITS - quote.credits_uc
    assert zone.pool.energy_wh == 2_400 and zone.record.energy_in_wh == 400
    assert zone.state.money_total() == 0


def test_swap_decays_the_pool_to_the_entry_time_before_swapping():
    zone = Zone(discharge_ppm_per_h=20_000, loss_w=100)
    later = NOW + 600_000
    _, quote = zone.buy(100, at=later)
    _, fresh = swap_exact_out(accrue(Zone(discharge_ppm_per_h=20_000, loss_w=100).pool, later), Side.BUY, 100, later)
    assert quote == fresh and zone.pool.updated_ms == later
    assert zone.pool.energy_wh < 2_000 - 100       # energy leaked while time passed


def test_battery_limits_bound_the_energy_cap():
    assert deliverable_energy_wh(10_000, 4_000, 900) == 1_000      # power × 15 min
    assert deliverable_energy_wh(600, 4_000, 900) == 600           # what is stored
    assert deliverable_energy_wh(-5, 4_000, 900) == 0


# --- rejections ----------------------------------------------------------------------------------

def test_swap_after_gate_closure_is_rejected():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 1, expires_ms=GATE + 60_000)
    with pytest.raises(SwapRejected) as planned:
        zone.swap_body(request, at=GATE)
    assert planned.value.reason is SwapRefuseReason.POOL_FROZEN
    # A host that writes it anyway, dated at gate closure, is refused by validators.
    before = zone.swap_body(request, at=GATE - 1)
    late = dataclasses.replace(before, at_ms=GATE)
    rejected = zone.rejection(HOST, "swap", late, now=GATE)
    assert rejected.reason is RejectReason.BAD_BODY and rejected.detail.startswith("pool_frozen")


def test_a_swap_dated_at_gate_closure_is_refused_even_with_an_earlier_at_ms():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 1, expires_ms=GATE + 600_000)
    body = zone.swap_body(request, at=GATE - 1)
    assert zone.rejection(HOST, "swap", body, now=GATE).detail.startswith("pool_frozen")
    zone.apply(HOST, "swap", body, now=GATE - 1)          # the same body dated just before it is fine


def test_a_swap_whose_at_ms_is_after_its_own_entry_time_is_rejected():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 1)
    body = zone.swap_body(request, at=NOW + 5_000)
    rejected = zone.rejection(HOST, "swap", body, now=NOW + 4_999)
    assert rejected.reason is RejectReason.BAD_BODY and rejected.detail.startswith("bad_time")
    assert rejected.is_final


def test_an_old_at_ms_is_fine_however_late_the_entry_is_judged():
    # Certification latency no longer matters: the entry's date decides, not when anybody votes.
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 1, expires_ms=GATE)
    zone.apply(HOST, "swap", zone.swap_body(request, at=NOW), now=GATE - 1)


def test_a_swap_dated_at_or_after_the_requests_expiry_is_refused():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 1, expires_ms=NOW + 10_000)
    body = zone.swap_body(request, at=NOW)
    rejected = zone.rejection(HOST, "swap", body, now=NOW + 10_000)
    assert rejected.detail.startswith("expired") and rejected.is_final
    zone.apply(HOST, "swap", body, now=NOW + 9_999)


def test_a_buy_swap_dated_at_the_locks_deadline_is_refused_and_one_ms_before_is_valid():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    body = zone.swap_body(request)
    rejected = zone.rejection(HOST, "swap", body, now=NOW + 1_000)
    assert rejected.reason is RejectReason.DEADLINE_PASSED and rejected.is_final
    zone.apply(HOST, "swap", body, now=NOW + 999)
    assert zone.state.locks[request.body.request_id].status is LockStatus.FILLED


def test_a_buy_swap_claims_no_conflict_key_on_the_lock():
    # One writer per lock: only the host's chain decides it, so no key the buyer's release shares.
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request)
    swap = zone.entry(HOST, "swap", zone.swap_body(request))
    decline = zone.entry(HOST, "swap_decline", zone.decline(request))
    release = zone.entry(BUYER, "release", Release(take_id=request.body.request_id))
    assert not any(key.startswith(b"lock/") for e in (swap, decline, release) for key in conflict_keys(e.body))
    assert set(conflict_keys(swap.body)) & set(conflict_keys(release.body)) == set()


def test_the_buyers_release_waits_until_the_hosts_chain_has_passed_the_deadline():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    release = Release(take_id=request.body.request_id)
    waiting = zone.rejection(BUYER, "release", release, now=NOW + 50_000)      # the buyer's own date is no help
    assert waiting.reason is RejectReason.DEADLINE_NOT_REACHED and not waiting.is_final
    zone.tick(HOST, NOW + 1_000)                      # the host's chain is now dated at the deadline
    zone.apply(BUYER, "release", release, now=NOW + 50_000)
    assert zone.state.locks[request.body.request_id].status is LockStatus.RELEASED
    assert zone.state.balance(BUYER.public_key) == CREDITS
    assert zone.state.money_total() == 0


def test_a_missing_lock_makes_a_buy_swap_wait_not_fail():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    rejected = zone.rejection(HOST, "swap", zone.swap_body(request))
    assert rejected.reason is RejectReason.NO_LOCK and not rejected.is_final
    assert not zone.rejection(HOST, "swap_decline", zone.decline(request)).is_final


# --- swap_decline ----------------------------------------------------------------------------------

def test_a_swap_decline_returns_the_whole_lock_at_once():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request)
    zone.apply(HOST, "swap_decline", zone.decline(request))
    assert zone.state.locks[request.body.request_id].status is LockStatus.RELEASED
    assert zone.state.balance(BUYER.public_key) == CREDITS and zone.state.money_total() == 0


def test_a_swap_decline_is_valid_after_the_locks_deadline():
    # No deadline to straddle: the host may hand a lock back whenever it is still unfilled.
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    zone.apply(HOST, "swap_decline", zone.decline(request, "expired"), now=NOW + 3_600_000)
    assert zone.state.balance(BUYER.public_key) == CREDITS


def test_a_swap_decline_after_the_buyers_release_is_a_no_op():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    zone.tick(HOST, NOW + 1_000)
    zone.apply(BUYER, "release", Release(take_id=request.body.request_id), now=NOW + 1_000)
    zone.apply(HOST, "swap_decline", zone.decline(request), now=NOW + 2_000)
    assert zone.state.balance(BUYER.public_key) == CREDITS          # returned once, not twice
    assert zone.state.money_total() == 0


def test_release_and_decline_give_one_state_in_either_order():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    zone.tick(HOST, NOW + 1_000)
    zone.apply(BUYER, "release", Release(take_id=request.body.request_id), now=NOW + 1_000)
    zone.apply(HOST, "swap_decline", zone.decline(request), now=NOW + 2_000)
    for seed in range(5):
        shuffled = list(zone.entries)
        random.Random(seed).shuffle(shuffled)
        derived, waiting = derive_state(shuffled, zone.fx.rules)
        assert waiting == {} and state_root(derived) == state_root(zone.state)


def test_a_swap_decline_of_a_swapped_lock_is_refused():
    zone = Zone()
    request, _ = zone.buy(100)
    rejected = zone.rejection(HOST, "swap_decline", zone.decline(request))
    assert rejected.reason is RejectReason.LOCK_CLOSED and rejected.is_final


@pytest.mark.parametrize("change", ["pool_id", "trader"])
def test_a_swap_decline_naming_other_terms_is_refused(change):
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request)
    body = dataclasses.replace(zone.decline(request), **{change: bytes(16) if change == "pool_id" else SELLER.public_key})
    assert zone.rejection(HOST, "swap_decline", body).reason is RejectReason.LOCK_MISMATCH


@pytest.mark.parametrize("delta", [-1, 1])
def test_a_swap_that_does_not_match_the_amm_math_is_rejected(delta):
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 250, 0)
    body = zone.swap_body(request)
    rejected = zone.rejection(HOST, "swap", dataclasses.replace(body, credits_uc=body.credits_uc + delta))
    assert rejected.reason is RejectReason.BAD_BODY and rejected.detail.startswith("amm_mismatch")


@pytest.mark.parametrize("change, reason", [
    ({"seller": SELLER.public_key, "order_owner": SELLER.public_key}, RejectReason.LOCK_MISMATCH),
    ({"order_id": bytes(16)}, RejectReason.LOCK_MISMATCH),
    ({"qty_wh": 99}, RejectReason.LOCK_MISMATCH),
])
def test_a_buy_swap_whose_lock_names_other_terms_is_rejected(change, reason):
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, **change)
    assert zone.rejection(HOST, "swap", zone.swap_body(request)).reason is reason


def test_a_buy_swap_costing_more_than_the_lock_is_rejected():
    zone = Zone()
    _, quote = compute_swap(zone.pool, Side.BUY, 100, NOW)
    request = zone.request(BUYER, Side.BUY, 100, quote.credits_uc)
    zone.lock_for(request, amount=quote.credits_uc - 1)
    assert zone.rejection(HOST, "swap", zone.swap_body(request)).reason is RejectReason.LOCK_TOO_SMALL


def test_a_released_lock_cannot_be_swapped_and_a_swapped_lock_cannot_be_released():
    zone = Zone()
    request = zone.request(BUYER, Side.BUY, 100, 100_000)
    zone.lock_for(request, deadline_ms=NOW + 1_000)
    zone.tick(HOST, NOW + 1_000)
    zone.apply(BUYER, "release", Release(take_id=request.body.request_id), now=NOW + 1_000)
    body = zone.swap_body(request, at=NOW + 1_000)
    assert zone.rejection(HOST, "swap", body, now=NOW + 1_000).is_final
    zone2 = Zone()
    request, _ = zone2.buy(100)
    zone2.tick(HOST, GATE)
    rejected = zone2.rejection(BUYER, "release", Release(take_id=request.body.request_id), now=GATE)
    assert rejected.reason is RejectReason.LOCK_CLOSED


def test_a_buy_swap_beyond_the_requests_limit_is_filled_in_part_within_it_or_refused():
    zone = Zone()
    _, quote = compute_swap(zone.pool, Side.BUY, 100, NOW)
    request = zone.request(BUYER, Side.BUY, 100, quote.credits_uc - 1)
    body = zone.swap_body(request)        # the whole 100 Wh is 1 µc too dear: the most Wh within the limit pro rata
    assert 0 < body.energy_wh < 100 and body.credits_uc * 100 <= body.energy_wh * (quote.credits_uc - 1)
    with pytest.raises(SwapRejected) as planned:
        zone.swap_body(zone.request(BUYER, Side.BUY, 100, 1))      # not even 1 Wh is within 1 µc
    assert planned.value.reason is SwapRefuseReason.SLIPPAGE


def test_a_swap_body_that_differs_from_the_signed_request_is_rejected():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 0)
    body = zone.swap_body(request)
    for tampered in (dataclasses.replace(body, energy_wh=101), dataclasses.replace(body, trader=BUYER.public_key),
                     dataclasses.replace(body, request=body.request[:-1] + bytes([body.request[-1] ^ 1]))):
        assert zone.rejection(HOST, "swap", tampered).detail.startswith("malformed")


def test_the_same_request_is_swapped_at_most_once():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 0)
    zone.apply(HOST, "swap", zone.swap_body(request))
    body = with_request(plan_swap(zone.record, request.body, HOST.public_key, zone.fx.zone, NOW), request)
    assert zone.rejection(HOST, "swap", body).reason is RejectReason.DUPLICATE_TAKE


def test_only_the_host_writes_pool_entries():
    zone = Zone()
    request = zone.request(SELLER, Side.SELL, 100, 0)
    body = zone.swap_body(request)
    assert zone.rejection(SELLER, "swap", body).reason is RejectReason.WRONG_KIND_FOR_ACCOUNT
    update = PoolUpdate(pool_id=zone.pool_id, energy_cap_wh=1_000, add_energy_wh=0, at_ms=NOW)
    assert zone.rejection(BUYER, "pool_update", update).reason is RejectReason.WRONG_KIND_FOR_ACCOUNT


def test_a_pool_opens_once_under_its_own_id_and_needs_backing_credits():
    zone = Zone()
    again = PoolOpen(pool_id=zone.pool_id, slot=SLOT, energy_wh=10, credits_uc=10, fee_bps=30, energy_cap_wh=10,
                     self_discharge_ppm_per_h=0, conversion_loss_w=0, at_ms=NOW)
    assert zone.rejection(HOST, "pool_open", again).detail.startswith("pool_exists")
    other_slot = dataclasses.replace(again, slot=SLOT + RULES.length_s)
    assert zone.rejection(HOST, "pool_open", other_slot).detail.startswith("bad_pool_id")
    rich = dataclasses.replace(other_slot, pool_id=compute_pool_id(HOST.public_key, zone.fx.zone, other_slot.slot),
                               credits_uc=CREDITS + 1)
    assert zone.rejection(HOST, "pool_open", rich).reason is RejectReason.OVERDRAFT


def test_a_sale_beyond_the_energy_cap_is_rejected_and_a_lower_cap_trims_the_reserve():
    zone = Zone(cap_wh=2_500)
    request = zone.request(SELLER, Side.SELL, 501, 0)
    with pytest.raises(SwapRejected) as planned:
        zone.swap_body(request)
    assert planned.value.reason is SwapRefuseReason.CAPACITY
    zone.apply(HOST, "pool_update", PoolUpdate(pool_id=zone.pool_id, energy_cap_wh=1_500, add_energy_wh=0, at_ms=NOW))
    assert (zone.pool.energy_wh, zone.pool.energy_cap_wh) == (1_500, 1_500)
    deposit = PoolUpdate(pool_id=zone.pool_id, energy_cap_wh=1_500, add_energy_wh=1, at_ms=NOW)
    assert zone.rejection(HOST, "pool_update", deposit).detail.startswith("capacity")


def test_a_buy_swap_waits_for_its_lock_when_the_state_is_derived():
    zone = Zone()
    zone.buy(200)
    zone.sell(50)
    shuffled = list(zone.entries)
    random.Random(7).shuffle(shuffled)
    derived, waiting = derive_state(shuffled, zone.fx.rules)
    assert waiting == {}
    assert state_root(derived) == state_root(zone.state)


# --- invariants ----------------------------------------------------------------------------------

operations = st.lists(st.tuples(st.sampled_from(["buy", "sell", "cap"]), st.integers(1, 3_000),
                                st.integers(0, 120_000)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(operations, st.integers(0, 50_000), st.integers(0, 200))
def test_swaps_conserve_money_and_never_lift_energy_beyond_the_cap(ops, discharge_ppm, loss_w):
    zone = Zone(cap_wh=3_000, discharge_ppm_per_h=discharge_ppm, loss_w=loss_w)
    at = NOW
    host_gain = 0
    for op, amount, step in ops:
        at = min(at + step, GATE - 1)
        try:
            if op == "buy":
                _, quote = zone.buy(amount, at=at)
                host_gain += quote.credits_uc
            elif op == "sell":
                _, quote = zone.sell(amount, at=at)
                host_gain -= quote.credits_uc
            else:
                zone.apply(HOST, "pool_update", PoolUpdate(pool_id=zone.pool_id, energy_cap_wh=amount,
                                                           add_energy_wh=0, at_ms=at), at)
        except SwapRejected:
            continue          # the pool cannot do it (frozen, no liquidity, beyond the cap)
        except EntryRejected as exc:
            assert exc.reason is RejectReason.OVERDRAFT   # a trader or the host cannot pay that much
            continue
        pool = zone.pool
        assert pool.energy_wh <= pool.energy_cap_wh
        assert zone.state.money_total() == 0
        assert zone.state.balance(HOST.public_key) == CREDITS + host_gain
    total_buyer = zone.state.balance(BUYER.public_key) + zone.state.balance(SELLER.public_key)
    assert total_buyer + zone.state.balance(HOST.public_key) + zone.state.balance(zone.fx.gateway.public_key) == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2_900))
def test_recomputed_swap_matches_the_amm_reference(energy):
    zone = Zone()
    _, quote = zone.sell(energy)
    _, reference = swap_exact_in(accrue(Zone().pool, NOW), Side.SELL, energy, NOW)
    assert quote.credits_uc == reference.credits_uc


def test_battery_limits_keep_the_floor_and_the_pool_reserve_and_share():
    from p2pgrid.pools.host import BatteryLimits, battery_limits
    assert battery_limits(10_000.0, 1_000.0, 5_000.0, max_share=0.5, min_reserve_wh=2_000) == BatteryLimits(4_000, 5_000)
    assert battery_limits(500.0, 1_000.0, 5_000.0) == BatteryLimits(0, 5_000)


# --- pool updates after gate closure: a trim, nothing else ---------------------------------------

def trim(zone, cap_wh, at_ms, add_wh=0):
    return PoolUpdate(pool_id=zone.pool_id, energy_cap_wh=cap_wh, add_energy_wh=add_wh, at_ms=at_ms)


def verdict(state, signed, rules):
    """None if ``signed`` is valid on ``state``, else its rejection's (reason, detail)."""
    try:
        process_entry(state.overlay(), signed, rules)
    except EntryRejected as exc:
        return exc.reason, exc.detail
    return None


@pytest.mark.parametrize("dated", [GATE, GATE + 60_000, RULES.slot_end_ms(SLOT) + 3_600_000])
def test_after_gate_closure_the_host_may_lower_its_pools_cap_which_trims_the_reserve(dated):
    zone = Zone(energy_wh=2_000, cap_wh=5_000)
    zone.buy(300, at=GATE - 1)
    reserve = zone.pool.energy_wh
    zone.apply(HOST, "pool_update", trim(zone, 1_000, dated), dated)
    assert (zone.pool.energy_cap_wh, zone.pool.energy_wh) == (1_000, 1_000) and reserve > 1_000
    assert zone.pool.is_frozen(dated) and zone.record.version == 2
    zone.apply(HOST, "pool_update", trim(zone, 0, dated), dated)       # down to nothing: the battery is gone
    assert (zone.pool.energy_cap_wh, zone.pool.energy_wh) == (0, 0)
    assert zone.state.money_total() == 0


@pytest.mark.parametrize("case, cap_wh, add_wh", [("raise", 6_000, 0), ("same cap", 5_000, 0),
                                                   ("deposit", 5_000, 100), ("trim and deposit", 4_000, 100)])
def test_after_gate_closure_anything_but_a_lower_cap_is_refused_for_good(case, cap_wh, add_wh):
    zone = Zone(energy_wh=2_000, cap_wh=5_000)
    rejected = zone.rejection(HOST, "pool_update", trim(zone, cap_wh, GATE, add_wh), now=GATE)
    assert rejected.reason is RejectReason.BAD_BODY and rejected.detail.startswith("pool_frozen")
    assert rejected.is_final


def test_a_trim_after_gate_closure_keeps_the_time_rules_of_its_at_ms():
    zone = Zone()
    zone.buy(100, at=GATE - 1_000)                   # the pool's last update
    assert zone.rejection(HOST, "pool_update", trim(zone, 1_000, GATE + 1), now=GATE).detail.startswith("bad_time")
    assert zone.rejection(HOST, "pool_update", trim(zone, 1_000, GATE - 2_000), now=GATE).detail.startswith("bad_time")
    zone.apply(HOST, "pool_update", trim(zone, 1_000, GATE - 1_000), GATE)


def test_before_gate_closure_an_update_still_raises_lowers_and_deposits():
    zone = Zone(energy_wh=2_000, cap_wh=3_000)
    zone.apply(HOST, "pool_update", trim(zone, 6_000, GATE - 2, add_wh=500), GATE - 2)
    assert (zone.pool.energy_cap_wh, zone.pool.energy_wh) == (6_000, 2_500)
    zone.apply(HOST, "pool_update", trim(zone, 2_000, GATE - 1), GATE - 1)
    assert (zone.pool.energy_cap_wh, zone.pool.energy_wh) == (2_000, 2_000)


other_chains = st.lists(st.sampled_from(["buyer-pays", "seller-pays", "mint", "buyer-locks"]), max_size=6)


@settings(max_examples=60, deadline=None)
@given(cap_wh=st.integers(0, 8_000), add_wh=st.integers(0, 3_000), dated=st.integers(GATE - 600_000, GATE + 3_600_000),
       at_back=st.integers(0, 900_000), others=other_chains, seed=st.integers(0, 2**16))
def test_a_pool_updates_validity_depends_only_on_the_entry_and_the_hosts_certified_chain(
        cap_wh, add_wh, dated, at_back, others, seed):
    """The verdict on one signed update is the same on any state holding the same host chain —
    whatever other chains did meanwhile, in any apply order — and after gate closure it is
    exactly "a lower cap, no deposit"."""
    zone = Zone(energy_wh=2_000, cap_wh=5_000)
    body = trim(zone, cap_wh, max(NOW, dated - at_back), add_wh)
    signed = zone.entry(HOST, "pool_update", body, dated)
    first = verdict(zone.state, signed, zone.fx.rules)
    for op in others:                          # other accounts' chains move on
        if op == "mint":
            zone.apply(zone.fx.gateway, "mint", Mint(to=BUYER.public_key, amount=1_000), NOW)
        elif op == "buyer-locks":
            zone.lock_for(zone.request(BUYER, Side.BUY, 10, 10_000))
        else:
            zone.apply(BUYER if op == "buyer-pays" else SELLER, "transfer", Transfer(to=HOST.public_key, amount=7), NOW)
    shuffled = list(zone.entries)
    random.Random(seed).shuffle(shuffled)
    derived, _ = derive_state(shuffled, zone.fx.rules)
    assert verdict(zone.state, signed, zone.fx.rules) == first
    assert verdict(derived, signed, zone.fx.rules) == first
    if dated >= GATE:
        assert (first is None) == (cap_wh < 5_000 and add_wh == 0)
        if first is not None:
            assert first[0] is RejectReason.BAD_BODY and first[1].startswith("pool_frozen")
