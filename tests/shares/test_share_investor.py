"""An LP's standing instruction to invest (``plan_investor_actions``), pure: the investor's and
the host's planners take turns on one ledger, and everything they plan is applied as a validator
would, dated the zone's ``now`` (an invalid planned entry raises)."""

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import EntryRejected, LedgerState, derive_state, process_entry, state_root
from p2pgrid.ledger.messages import Mint, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.shares.rules import (
    compute_buy_id, compute_programme_id, exit_of, lockup_ends_ms, pending_exit, plan_share_buy, plan_share_exit,
    programme_of, programmes,
)
from p2pgrid.shares.planning import (
    HostPolicy, InvestorPolicy, lp_escrows, plan_host_actions, plan_investor_actions,
)

NOW = 1_800_000_000_000                      # a slot start
PRICE = 1_000_000
HOST, OTHER_HOST = seeded_key("invest-host"), seeded_key("invest-other-host")
INVESTOR, RIVAL = seeded_key("invest-lp"), seeded_key("invest-rival")
TERMS = HostPolicy(price_uc=PRICE, fee_share_bps=5_000, cap_shares=10, lockup_s=1_700, sale_s=3_600,
                   payout_every_ms=600_000)


class InvestZone:
    """A host (with its planner), the investor (with its planner) and a rival LP buying by hand."""

    def __init__(self, policy, terms=TERMS, investor_funds=50 * PRICE):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.entries = []
        self.now = NOW
        self.policy = policy
        self.terms = terms
        self.last_payout = {}
        self.investor_plans = []
        self.host_offered = False
        for key, amount in ((HOST, 10 * PRICE), (OTHER_HOST, 10 * PRICE), (INVESTOR, investor_funds),
                            (RIVAL, 50 * PRICE)):
            self.add(self.fx.gateway, "mint", Mint(to=key.public_key, amount=amount))

    def add(self, key, kind, body):
        """``key``'s next entry dated the zone's ``now``, validated and applied."""
        signed = self.fx.entry_on(self.state, key, kind, body, self.now)
        process_entry(self.state, signed, self.fx.rules)
        self.entries.append(signed)
        return signed

    def programme(self, host=HOST, number=0):
        return programme_of(self.state, compute_programme_id(host.public_key, self.fx.zone, number))

    def host_round(self, host=HOST):
        actions = plan_host_actions(self.state, host.public_key, self.now, self.fx.rules, self.terms,
                                    self.last_payout, may_offer=not self.host_offered)
        for action in actions:
            self.add(host, action.kind, action.body)
            if action.kind == "share_offer":
                self.host_offered = True
            if action.kind == "share_payout":
                self.last_payout[action.body.programme_id] = self.now
        return actions

    def plan(self):
        return plan_investor_actions(self.state, INVESTOR.public_key, self.now, self.fx.rules, self.policy)

    def invest_round(self):
        """As ``ShareInvestorService`` writes it: every planned entry, in order."""
        actions = self.plan()
        for action in actions:
            self.add(INVESTOR, action.kind, action.body)      # raises if the planner planned a bad entry
        self.investor_plans.append((self.now, actions))
        return actions

    def rival_buys(self, shares, nonce=None):
        programme = self.programme()
        nonce = self.state.head(RIVAL.public_key).next_seq if nonce is None else nonce
        body = plan_share_buy(programme, RIVAL.public_key, shares, nonce,
                              min(self.now + 120_000, programme.terms.sale_until_ms))
        self.add(RIVAL, "share_buy", body)

    def held(self, host=HOST, number=0):
        holding = self.programme(host, number).holding(INVESTOR.public_key)
        return holding.shares if holding else 0


def opened(policy, **kwargs):
    zone = InvestZone(policy, **kwargs)
    assert [a.kind for a in zone.host_round()] == ["share_offer"]
    return zone


def kinds(actions):
    return [a.kind for a in actions]


# --- worked examples --------------------------------------------------------------------------------

def test_the_investor_buys_its_target_once_and_then_holds():
    zone = opened(InvestorPolicy(target_shares=4))
    [buy] = zone.invest_round()
    assert buy.kind == "share_buy" and (buy.body.shares, buy.body.amount_uc) == (4, 4 * PRICE)
    assert buy.body.deadline_ms == NOW + 600_000 and buy.body.host == HOST.public_key
    assert zone.plan() == []                              # escrowed, waiting for the host
    assert "share_issue" in kinds(zone.host_round())
    assert zone.held() == 4 and zone.plan() == []
    zone.now += 2_000_000
    assert zone.plan() == []                              # held, no exit asked for: nothing more


def test_nothing_to_buy_without_an_open_programme_or_as_the_zone_gateway_or_a_non_investor():
    zone = InvestZone(InvestorPolicy(target_shares=4))
    assert zone.plan() == []                              # no programme yet
    zone.host_round()
    zone.now = zone.programme().terms.sale_until_ms - 5_000
    assert zone.plan() == []                              # too late for the host to issue
    zone.now = NOW
    assert plan_investor_actions(zone.state, INVESTOR.public_key, NOW, zone.fx.rules,
                                 InvestorPolicy(target_shares=0)) == []
    assert plan_investor_actions(zone.state, zone.fx.gateway.public_key, NOW, zone.fx.rules,
                                 InvestorPolicy(target_shares=4)) == []      # no balance above zero
    assert plan_investor_actions(zone.state, HOST.public_key, NOW, zone.fx.rules,
                                 InvestorPolicy(target_shares=4)) == []      # never its own programme


def test_the_balance_above_the_reserve_and_the_cap_limit_the_purchase():
    zone = opened(InvestorPolicy(target_shares=8, reserve_uc=PRICE // 2), investor_funds=3 * PRICE)
    [buy] = zone.invest_round()
    assert buy.body.shares == 2                           # 3 M µc − 0.5 M kept: two shares
    zone.host_round()
    assert zone.plan() == []                              # nothing left to pay with
    zone.add(zone.fx.gateway, "mint", Mint(to=INVESTOR.public_key, amount=40 * PRICE))
    zone.rival_buys(5)
    zone.host_round()
    [buy] = zone.invest_round()
    assert buy.body.shares == 3                           # 10 − 2 − 5 left under the cap
    zone.host_round()
    assert zone.programme().outstanding == 10 and zone.plan() == []


def test_an_escrow_the_host_leaves_unissued_is_released_once_the_hosts_chain_passed_its_deadline_and_bought_again():
    zone = opened(InvestorPolicy(target_shares=3))
    [first] = zone.invest_round()
    zone.now = first.body.deadline_ms - 1
    assert zone.plan() == []                              # the host may still issue: no second purchase
    zone.now = first.body.deadline_ms
    assert zone.plan() == []            # the host's chain has not passed the deadline: it may still issue
    zone.add(HOST, "transfer", Transfer(to=OTHER_HOST.public_key, amount=1))   # now it has (dated the deadline)
    release, again = zone.invest_round()
    assert (release.kind, release.body.take_id) == ("release", first.body.buy_id)
    assert again.kind == "share_buy" and again.body.shares == 3 and again.body.buy_id != first.body.buy_id
    assert [b for b, *_ in lp_escrows(zone.state, INVESTOR.public_key)] == [again.body.buy_id]
    assert zone.state.money_total() == 0


def test_a_purchase_declined_beyond_the_cap_is_bought_again_for_what_is_left():
    zone = opened(InvestorPolicy(target_shares=6))
    [planned] = zone.plan()
    pid = zone.programme().programme_id
    nonce = next(n for n in range(1000) if compute_buy_id(RIVAL.public_key, pid, n) < planned.body.buy_id)
    zone.rival_buys(7, nonce)                             # escrowed: the ledger's cap check does not see it
    [buy] = zone.invest_round()
    assert buy.body.shares == 6
    assert kinds(zone.host_round()) == ["share_issue", "swap_decline"]     # the rival's id comes first
    assert zone.held() == 0 and not lp_escrows(zone.state, INVESTOR.public_key)
    [buy] = zone.invest_round()
    assert buy.body.shares == 3                           # what is left under the cap
    zone.host_round()
    assert zone.held() == 3 and zone.programme().outstanding == 10 and zone.plan() == []


def test_with_exit_after_lockup_it_asks_for_every_share_back_at_the_lockup_and_never_buys_back_in():
    zone = opened(InvestorPolicy(target_shares=5, exit_after_lockup=True))
    zone.invest_round()
    zone.host_round()
    lockup = lockup_ends_ms(zone.programme().terms)
    zone.now = lockup - 1
    assert zone.plan() == []                              # locked up: no exit yet
    zone.now = lockup
    assert lockup < zone.programme().terms.sale_until_ms  # the sale is still open
    [ask] = zone.invest_round()
    assert (ask.kind, ask.body.shares, ask.body.host) == ("share_exit", 5, HOST.public_key)
    assert zone.plan() == []                              # asked already; no buying back in
    before = zone.state.balance(INVESTOR.public_key)
    assert "share_redeem" in kinds(zone.host_round())
    assert zone.state.balance(INVESTOR.public_key) == before + 5 * PRICE and zone.held() == 0
    assert zone.plan() == []                              # redeemed; the programme is left for good


def test_without_exit_after_lockup_it_keeps_its_shares_and_an_exit_by_hand_is_not_bought_back():
    zone = opened(InvestorPolicy(target_shares=5))
    zone.invest_round()
    zone.host_round()
    zone.now = lockup_ends_ms(zone.programme().terms)
    assert zone.plan() == []
    zone.add(INVESTOR, "share_exit", plan_share_exit(zone.programme(), 2))   # the human asked by RPC
    assert zone.plan() == []                              # no buying back into a programme it is leaving


def test_the_investment_rolls_over_to_the_next_open_programme_and_follows_invest_host():
    policy = InvestorPolicy(target_shares=2, host=OTHER_HOST.public_key, exit_after_lockup=True)
    zone = opened(policy)                                 # HOST's programme: not the chosen host
    assert zone.plan() == []
    zone.host_offered = False
    zone.host_round(OTHER_HOST)
    [buy] = zone.invest_round()
    assert buy.body.host == OTHER_HOST.public_key
    zone.host_round(OTHER_HOST)
    zone.now = lockup_ends_ms(zone.programme(OTHER_HOST).terms)
    [ask] = zone.invest_round()
    assert ask.kind == "share_exit"
    zone.host_round(OTHER_HOST)                           # redeems
    zone.now = zone.programme(OTHER_HOST).terms.sale_until_ms
    zone.host_offered = False
    zone.host_round(OTHER_HOST)                           # the host's next programme
    [buy] = zone.invest_round()
    assert buy.body.programme_id == zone.programme(OTHER_HOST, 1).programme_id and buy.body.shares == 2


def test_a_residents_only_programme_is_not_bought_by_an_unmetered_account():
    zone = opened(InvestorPolicy(target_shares=2), terms=HostPolicy(**{**TERMS.__dict__, "residents_only": True}))
    assert zone.programme().terms.residents_only and zone.plan() == []


# --- under random ledgers ---------------------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["invest", "invest", "host", "host", "rival", "wait", "spend", "fund"]),
                         st.integers(1, 6)),
               max_size=30)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, target=st.integers(1, 12), cap=st.integers(1, 12), exit_after_lockup=st.booleans(),
       reserve=st.sampled_from([0, PRICE // 2, 3 * PRICE]), funds=st.sampled_from([1, 2 * PRICE, 50 * PRICE]),
       seed=st.integers(0, 2**32 - 1))
def test_every_planned_entry_is_valid_and_keeps_the_instruction(ops, target, cap, exit_after_lockup, reserve, funds,
                                                                 seed):
    policy = InvestorPolicy(target_shares=target, reserve_uc=reserve, exit_after_lockup=exit_after_lockup)
    zone = opened(policy, terms=HostPolicy(**{**TERMS.__dict__, "cap_shares": cap}), investor_funds=funds)
    me = INVESTOR.public_key
    lockup = lockup_ends_ms(zone.programme().terms)
    for op, n in ops:
        if op == "invest":
            pending_before = lp_escrows(zone.state, me)
            actions = zone.invest_round()                 # raises if any planned entry is refused
            buys = [a for a in actions if a.kind == "share_buy"]
            assert len(buys) <= 1
            if buys:
                assert all(e[2].lock.deadline_ms <= zone.now for e in pending_before)   # none still issuable
                assert zone.state.balance(me) >= reserve
            for action in actions:
                if action.kind == "share_exit":
                    assert exit_after_lockup and zone.now >= lockup
                if action.kind == "release":
                    assert zone.state.locks[action.body.take_id].lock.deadline_ms <= zone.now
        elif op == "host":
            zone.host_round()
        elif op == "wait":
            zone.now += n * 200_000
        elif op == "fund":
            zone.add(zone.fx.gateway, "mint", Mint(to=me, amount=n * PRICE))
        else:
            try:
                if op == "rival":
                    zone.rival_buys(n)
                else:
                    zone.add(INVESTOR, "transfer", Transfer(to=RIVAL.public_key, amount=n * PRICE // 2))
            except EntryRejected:
                pass                                      # over the cap, sale closed, no money: not written
        programme = zone.programme()
        held = zone.held()
        escrowed = sum(b.shares for _, b, _ in lp_escrows(zone.state, me))
        kept = held - pending_exit(zone.state, programme, me)
        assert kept + escrowed <= target                  # never beyond the target
        assert len(lp_escrows(zone.state, me)) <= 1       # never two purchases in flight
        if exit_of(zone.state, programme.programme_id, me) is not None:
            assert exit_after_lockup                      # only the instruction asks for shares back here
        assert programme.outstanding <= cap and zone.state.money_total() == 0
    asked = [t for t, actions in zone.investor_plans for a in actions if a.kind == "share_exit"]
    assert all(t >= lockup for t in asked)
    if exit_after_lockup and zone.now >= lockup:          # one more round asks for whatever is left
        zone.invest_round()
        assert pending_exit(zone.state, zone.programme(), me) == zone.held()
    assert len(programmes(zone.state)) == 1
    entries = list(zone.entries)
    random.Random(seed).shuffle(entries)
    derived, waiting = derive_state(entries, zone.fx.rules)
    assert not waiting and state_root(derived) == state_root(zone.state)
