"""The automated share flow, pure parts: ``share_exit`` requests and the host's planner
(``plan_host_actions``), applied as a validator would, dated the zone's ``now``."""

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import EntryRejected, LedgerState, RejectReason, derive_state, process_entry, state_root
from p2pgrid.ledger.messages import Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.pools.entries import PoolOpen, SwapRejected, compute_pool_id, compute_swap, plan_swap, with_request
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.shares.rules import (
    MAX_HOLDERS, ShareExit, compute_buy_id, compute_programme_id, compute_payout, exit_of, lockup_ends_ms,
    pending_exit, plan_share_buy, plan_share_exit, plan_share_redeem, programme_of, programmes,
)
from p2pgrid.shares.planning import HostPolicy, plan_share_offer, open_escrows, plan_host_actions
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, sign

SLOTS = SlotRules()
NOW = 1_800_000_000_000                      # a slot start
SLOT = SLOTS.tradable_slots(NOW)[2]
GATE = SLOTS.gate_closure_ms(SLOT)
PRICE = 1_000_000
HOST, BUYER = seeded_key("flow-host"), seeded_key("flow-buyer")
LPS = [seeded_key(f"flow-lp-{i}") for i in range(3)]
POLICY = HostPolicy(price_uc=PRICE, fee_share_bps=5_000, cap_shares=10, lockup_s=1_700, sale_s=3_600,
                    payout_every_ms=600_000)


class FlowZone:
    """A host with a pool, LPs and a buyer on one ledger; ``host_round`` runs the planner and
    applies everything it plans, as the host's service would write it."""

    def __init__(self, policy=POLICY, host_funds=500_000_000):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.entries = []
        self.now = NOW
        self.next_id = 0
        self.policy = policy
        self.last_payout = {}
        self.planned = []
        self.may_offer = True
        for key, amount in ((HOST, 4_000_000 + host_funds), (BUYER, 500_000_000), *((lp, 50 * PRICE) for lp in LPS)):
            self.add(self.fx.gateway, "mint", Mint(to=key.public_key, amount=amount))
        self.pool_id = compute_pool_id(HOST.public_key, self.fx.zone, SLOT)
        self.add(HOST, "pool_open", PoolOpen(pool_id=self.pool_id, slot=SLOT, energy_wh=20_000, credits_uc=4_000_000,
                                             fee_bps=100, energy_cap_wh=50_000, self_discharge_ppm_per_h=0,
                                             conversion_loss_w=0, at_ms=NOW))

    def add(self, key, kind, body):
        """``key``'s next entry dated the zone's ``now``, validated and applied."""
        signed = self.fx.entry_on(self.state, key, kind, body, self.now)
        process_entry(self.state, signed, self.fx.rules)
        self.entries.append(signed)
        return signed

    @property
    def programme(self):
        """The host's first programme."""
        return programme_of(self.state, compute_programme_id(HOST.public_key, self.fx.zone, 0))

    def host_round(self, may_offer=None):
        """As ``shares.service`` runs it: an offer only until the first one is certified."""
        may_offer = self.may_offer if may_offer is None else may_offer
        actions = plan_host_actions(self.state, HOST.public_key, self.now, self.fx.rules, self.policy,
                                    self.last_payout, may_offer=may_offer)
        for action in actions:
            self.add(HOST, action.kind, action.body)          # raises if the planner planned a bad entry
            if action.kind == "share_payout":
                self.last_payout[action.body.programme_id] = self.now
            if action.kind == "share_offer":
                self.may_offer = False
        self.planned += [(self.now, a) for a in actions]
        return actions

    def escrow(self, lp, shares):
        body = plan_share_buy(self.programme, lp.public_key, shares, self.state.head(lp.public_key).next_seq,
                              min(self.now + 120_000, self.programme.terms.sale_until_ms))
        self.add(lp, "share_buy", body)
        return body

    def swap_buy(self, energy_wh):
        _, quote = compute_swap(self.state.pools[self.pool_id].pool, Side.BUY, energy_wh, self.now)
        self.next_id += 1
        request = sign(SwapRequest(request_id=self.next_id.to_bytes(16, "big"), trader=BUYER.public_key,
                                   host=HOST.public_key, pool_id=self.pool_id, zone=self.fx.zone, slot=SLOT,
                                   side=Side.BUY, energy_wh=energy_wh, limit_uc=quote.credits_uc, expires_ms=GATE),
                       BUYER)
        self.add(BUYER, "lock", Lock(take_id=request.body.request_id, seller=HOST.public_key, order_id=self.pool_id,
                                     order_owner=HOST.public_key, order_size_wh=energy_wh, qty_wh=energy_wh,
                                     price=quote.credits_uc * 1000 // energy_wh, amount=quote.credits_uc,
                                     deadline_ms=self.now + 30_000, slot=SLOT))
        self.add(HOST, "swap", with_request(plan_swap(self.state.pools[self.pool_id], request.body, HOST.public_key,
                                                      self.fx.zone, self.now), request))

    def ask_exit(self, lp, shares):
        return self.add(lp, "share_exit", plan_share_exit(self.programme, shares))


def rejected(reason, detail=""):
    return pytest.raises(EntryRejected, match=f"^{reason.value}: {detail}" if detail else f"^{reason.value}")


def opened_zone(**kwargs):
    zone = FlowZone(**kwargs)
    [action] = zone.host_round()
    assert action.kind == "share_offer"
    return zone


# --- the offer -------------------------------------------------------------------------------------

def test_the_host_offers_once_on_its_terms_with_the_lockup_rounded_up_to_a_slot_start():
    zone = opened_zone()
    terms = zone.programme.terms
    assert (terms.price_uc, terms.fee_share_bps, terms.cap_shares) == (PRICE, 5_000, 10)
    assert terms.lockup_until_slot == NOW // 1000 + 1_800 and SLOTS.is_aligned(terms.lockup_until_slot)
    assert terms.sale_until_ms == NOW + 3_600_000
    assert zone.host_round() == []                         # an active programme: no second offer
    assert plan_host_actions(zone.state, HOST.public_key, NOW, zone.fx.rules, POLICY, {}, may_offer=False) == []


def test_no_offer_when_the_active_programmes_leave_no_room_in_the_fees():
    policy = HostPolicy(**{**POLICY.__dict__, "fee_share_bps": 6_000})
    zone = opened_zone(policy=policy)
    assert plan_share_offer(zone.state, HOST.public_key, zone.fx.zone, NOW, SLOTS, policy) is None
    assert plan_share_offer(zone.state, HOST.public_key, zone.fx.zone, NOW, SLOTS,
                            HostPolicy(**{**POLICY.__dict__, "fee_share_bps": 4_000})) is not None
    zone.now = zone.programme.terms.sale_until_ms            # sale over, no share outstanding: inactive
    assert zone.host_round() == []                           # the service offers once
    [again] = zone.host_round(may_offer=True)
    assert again.kind == "share_offer" and len(programmes(zone.state, HOST.public_key)) == 2


# --- issue, decline ----------------------------------------------------------------------------------

def test_escrows_are_issued_in_buy_id_order_and_beyond_the_cap_handed_back():
    zone = opened_zone()
    bodies = [zone.escrow(LPS[0], 6), zone.escrow(LPS[1], 4), zone.escrow(LPS[2], 3)]   # 13 > cap 10
    actions = zone.host_round()
    kinds = {a.body.buy_id if a.kind == "share_issue" else a.body.swap_id: a.kind for a in actions}
    assert sorted(kinds.values()).count("share_issue") >= 1
    assert zone.programme.outstanding <= 10 and not open_escrows(zone.state, HOST.public_key)
    declined = [b for b in bodies if kinds[b.buy_id] == "swap_decline"]
    assert declined and all(zone.state.locks[b.buy_id].status.value == "released" for b in declined)
    assert zone.state.money_total() == 0


def test_an_escrow_about_to_expire_is_declined_at_once_not_left_to_the_lps_release():
    zone = opened_zone()
    before = zone.state.balance(LPS[0].public_key)
    body = zone.escrow(LPS[0], 1)
    zone.now = body.deadline_ms - POLICY.min_time_left_ms
    actions = zone.host_round()
    assert [(a.kind, a.body.reason) for a in actions] == [("swap_decline", "expired")]
    assert zone.state.balance(LPS[0].public_key) == before


def test_an_escrow_past_its_deadline_is_still_declined():
    # A decline is valid at any time: nothing for validators to straddle.
    zone = opened_zone()
    before = zone.state.balance(LPS[0].public_key)
    body = zone.escrow(LPS[0], 1)
    zone.now = body.deadline_ms + 3_600_000
    assert [a.kind for a in zone.host_round()] == ["swap_decline"]
    assert zone.state.balance(LPS[0].public_key) == before and zone.state.money_total() == 0


def test_a_new_holder_beyond_max_holders_is_declined():
    policy = HostPolicy(**{**POLICY.__dict__, "cap_shares": 1_000})
    zone = opened_zone(policy=policy)
    lps = [seeded_key(f"flow-many-{i}") for i in range(MAX_HOLDERS + 1)]
    for lp in lps:
        zone.add(zone.fx.gateway, "mint", Mint(to=lp.public_key, amount=PRICE))
    for lp in lps[:-1]:
        zone.escrow(lp, 1)
    zone.host_round()
    assert zone.programme.holders == MAX_HOLDERS
    zone.escrow(lps[-1], 1)             # the buy is valid: the holders are the host's chain's to count
    declines = [a.body.reason for a in zone.host_round() if a.kind == "swap_decline"]
    assert declines == ["too_many_holders"]
    assert zone.programme.holders == MAX_HOLDERS and zone.state.balance(lps[-1].public_key) == PRICE


# --- payouts ---------------------------------------------------------------------------------------

def test_payouts_follow_the_timer_and_turn_new_shares_into_earning_ones():
    zone = opened_zone()
    zone.escrow(LPS[0], 2)
    actions = zone.host_round()
    assert [a.kind for a in actions] == ["share_issue"]
    [first] = zone.host_round()                             # never paid out: due at once, makes shares earn
    assert first.kind == "share_payout" and first.body.amount_uc == 0 and zone.programme.earning == 2
    zone.swap_buy(1_000)
    assert zone.host_round() == []                          # fees accrued, but the period is not over
    zone.now += POLICY.payout_every_ms
    [second] = zone.host_round()
    assert second.body == compute_payout(zone.state, zone.programme) or zone.programme.payouts == 2
    assert second.body.amount_uc > 0 and [p.lp for p in second.body.payments] == [LPS[0].public_key]
    zone.now += POLICY.payout_every_ms
    assert zone.host_round() == []                          # nothing to pay: no empty payouts


def test_a_payout_the_host_cannot_afford_waits():
    zone = opened_zone(host_funds=1)
    zone.escrow(LPS[0], 1)
    zone.host_round()
    zone.host_round()
    zone.swap_buy(2_000)
    zone.add(HOST, "burn", _burn(zone.state.balance(HOST.public_key)))
    zone.now += POLICY.payout_every_ms
    assert zone.host_round() == []


def _burn(amount):
    from p2pgrid.ledger.messages import Burn
    return Burn(amount=amount)


# --- exits -----------------------------------------------------------------------------------------

def test_an_exit_is_redeemed_at_the_end_of_the_lockup_and_cleared():
    zone = opened_zone()
    zone.escrow(LPS[0], 3)
    zone.host_round()
    zone.ask_exit(LPS[0], 2)
    assert pending_exit(zone.state, zone.programme, LPS[0].public_key) == 2
    assert [a.kind for a in zone.host_round()] == ["share_payout"]      # locked up: no redemption yet
    before = zone.state.balance(LPS[0].public_key)
    zone.now = lockup_ends_ms(zone.programme.terms)
    [redeem] = [a for a in zone.host_round() if a.kind == "share_redeem"]
    assert (redeem.body.shares, redeem.body.exit_shares, redeem.body.amount_uc) == (2, 2, 2 * PRICE)
    assert zone.state.balance(LPS[0].public_key) == before + 2 * PRICE
    record = exit_of(zone.state, zone.programme.programme_id, LPS[0].public_key)
    assert (record.requested, record.answered) == (2, 2)
    assert pending_exit(zone.state, zone.programme, LPS[0].public_key) == 0
    assert zone.programme.holding(LPS[0].public_key).shares == 1


def test_an_exit_beyond_the_shares_held_is_certified_but_redeems_only_what_is_held():
    # The holdings are the host's chain's (issues add, redemptions take away): an exit judged on
    # them could be voted by one validator and refused by another, so the rule does not look.
    zone = opened_zone()
    zone.escrow(LPS[0], 2)
    zone.host_round()
    zone.ask_exit(LPS[0], 3)
    zone.ask_exit(LPS[1], 1)                               # holds nothing
    assert pending_exit(zone.state, zone.programme, LPS[0].public_key) == 2
    assert pending_exit(zone.state, zone.programme, LPS[1].public_key) == 0
    zone.now = lockup_ends_ms(zone.programme.terms)
    redeemed = [a.body for a in zone.host_round() if a.kind == "share_redeem"]
    assert [(r.lp, r.shares) for r in redeemed] == [(LPS[0].public_key, 2)]
    assert zone.programme.outstanding == 0 and zone.state.money_total() == 0


def test_an_exit_by_the_host_or_naming_another_host_is_refused():
    zone = opened_zone()
    zone.escrow(LPS[0], 2)
    zone.host_round()
    with rejected(RejectReason.WRONG_KIND_FOR_ACCOUNT):
        zone.add(HOST, "share_exit", plan_share_exit(zone.programme, 1))
    with rejected(RejectReason.BAD_BODY, "wrong_host"):
        zone.add(LPS[0], "share_exit", ShareExit(programme_id=zone.programme.programme_id,
                                                 host=LPS[1].public_key, shares=1))
    with rejected(RejectReason.MISSING_DEPENDENCY) as info:   # waits: the programme may be on its way
        zone.add(LPS[0], "share_exit", ShareExit(programme_id=bytes(16), host=HOST.public_key, shares=1))
    assert not info.value.is_final


def test_a_redemption_may_answer_only_pending_exits_but_a_buy_back_needs_none():
    zone = opened_zone()
    zone.escrow(LPS[0], 3)
    zone.host_round()
    zone.now = lockup_ends_ms(zone.programme.terms)
    # Answering requests this validator has not seen waits: the LP's chain may still bring them.
    with rejected(RejectReason.MISSING_DEPENDENCY, "no_exit_pending") as info:
        zone.add(HOST, "share_redeem", plan_share_redeem(zone.programme, LPS[0].public_key, 1, exit_shares=1))
    assert not info.value.is_final
    zone.add(HOST, "share_redeem", plan_share_redeem(zone.programme, LPS[0].public_key, 1))       # buy-back
    zone.ask_exit(LPS[0], 1)
    with rejected(RejectReason.MISSING_DEPENDENCY, "no_exit_pending"):
        zone.add(HOST, "share_redeem", plan_share_redeem(zone.programme, LPS[0].public_key, 2, exit_shares=2))
    with rejected(RejectReason.BAD_BODY, "no_exit_pending") as info:   # more answers than shares: final
        zone.add(HOST, "share_redeem", plan_share_redeem(zone.programme, LPS[0].public_key, 1, exit_shares=2))
    assert info.value.is_final
    zone.add(HOST, "share_redeem", plan_share_redeem(zone.programme, LPS[0].public_key, 2, exit_shares=1))
    assert pending_exit(zone.state, zone.programme, LPS[0].public_key) == 0
    assert zone.programme.outstanding == 0 and zone.state.money_total() == 0


def test_exits_and_redemptions_derive_the_same_state_in_any_order():
    zone = opened_zone()
    zone.escrow(LPS[0], 4)
    zone.escrow(LPS[1], 2)
    zone.host_round()
    zone.ask_exit(LPS[0], 1)
    zone.ask_exit(LPS[1], 2)
    zone.now = lockup_ends_ms(zone.programme.terms)
    zone.host_round()
    zone.ask_exit(LPS[0], 2)
    zone.host_round()
    for seed in range(20):
        entries = list(zone.entries)
        random.Random(seed).shuffle(entries)
        derived, waiting = derive_state(entries, zone.fx.rules)
        assert not waiting and state_root(derived) == state_root(zone.state)
    assert zone.programme.holding(LPS[0].public_key).shares == 1


# --- the planner, under random ledgers --------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["escrow", "escrow", "swap", "exit", "wait", "host", "host"]),
                         st.integers(0, 2), st.integers(1, 6), st.integers(100, 2_000)),
               max_size=30)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, cap=st.integers(1, 12), host_funds=st.sampled_from([1, 3 * PRICE, 500_000_000]),
       seed=st.integers(0, 2**32 - 1))
def test_every_planned_entry_is_valid_and_keeps_the_share_rules(ops, cap, host_funds, seed):
    policy = HostPolicy(**{**POLICY.__dict__, "cap_shares": cap})
    zone = opened_zone(policy=policy, host_funds=host_funds)
    pid = zone.programme.programme_id
    lockup_ms = lockup_ends_ms(zone.programme.terms)
    for op, who, shares, energy in ops:
        lp = LPS[who]
        try:
            if op == "escrow":
                zone.escrow(lp, shares)
            elif op == "swap":
                zone.swap_buy(energy)
            elif op == "exit":
                zone.ask_exit(lp, shares)
            elif op == "wait":
                zone.now += shares * 200_000
        except (EntryRejected, SwapRejected):
            pass                                   # the LP's or buyer's op breaks a rule: not written
        if op == "host":
            before = zone.state.copy()
            actions = zone.host_round()            # raises if any planned entry is refused
            for action in actions:
                if action.kind == "share_redeem":
                    assert zone.now >= lockup_ms and action.body.exit_shares == action.body.shares
                if action.kind == "share_payout":
                    assert action.body == compute_payout(before, programme_of(before, pid))
                    assert action.body.amount_uc > 0 or programme_of(before, pid).outstanding > 0
            if zone.now >= lockup_ms and host_funds == 500_000_000:
                assert all(pending_exit(zone.state, zone.programme, k.public_key) == 0 for k in LPS)
            assert not [e for e in open_escrows(zone.state, HOST.public_key)
                        if e[2].lock.deadline_ms - zone.now > policy.min_time_left_ms]
        assert zone.programme.outstanding <= cap
        assert zone.state.money_total() == 0
    zone.now = max(zone.now, lockup_ms)                # every holder asks for the rest back
    for lp in LPS:
        held = zone.programme.holding(lp.public_key)
        more = held.shares - pending_exit(zone.state, zone.programme, lp.public_key) if held else 0
        if more:
            zone.ask_exit(lp, more)
    zone.host_round()
    if host_funds == 500_000_000:
        assert zone.programme.outstanding == 0 and zone.state.money_total() == 0
    kinds = [a.kind for _, a in zone.planned]
    assert kinds.count("share_offer") == 1
    payout_times = [t for t, a in zone.planned if a.kind == "share_payout"]
    assert all(b - a >= policy.payout_every_ms for a, b in zip(payout_times, payout_times[1:]))
    entries = list(zone.entries)
    random.Random(seed).shuffle(entries)
    derived, waiting = derive_state(entries, zone.fx.rules)
    assert not waiting and state_root(derived) == state_root(zone.state)


def test_buy_ids_differ_per_nonce():
    assert compute_buy_id(LPS[0].public_key, bytes(16), 1) != compute_buy_id(LPS[0].public_key, bytes(16), 2)
