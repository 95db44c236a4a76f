"""Order admission: each rule with its edge cases, the gate inside the batch validator, and the
incremental per-owner per-slot totals against a recomputation from scratch."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import ChainHead, LedgerRules, LedgerState, OrderProgress
from p2pgrid.net.testing import make_order
from p2pgrid.net.transport import ValidationResult
from p2pgrid.net.validation import OrderBatchValidator, OrderRules, Reason
from p2pgrid.settlement.metering import MeterRegistration, MeterRegistrationV2
from p2pgrid.trading.admission import (
    AdmissionGate, LedgerFacts, OpenOrderTotals, OrderNotAdmitted, OwnerFacts, Refusal, judge_order, sell_capacity_wh,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Cancel, OrderBatch, Side, Source, encode, sign

ACCEPT, IGNORE, REJECT = ValidationResult.ACCEPT, ValidationResult.IGNORE, ValidationResult.REJECT
NOW = 1_700_000_000_000
SLOTS = SlotRules()                                   # 900 s slots
ZONE = "zone-a"
RULES = OrderRules(zone=ZONE, slot_rules=SLOTS)
GATEWAY, ALICE, BOB, MALLORY = (NodeKey(bytes([i]) * 32) for i in (1, 7, 8, 9))
METER = {ALICE: NodeKey(bytes([17]) * 32), BOB: NodeKey(bytes([18]) * 32), MALLORY: NodeKey(bytes([19]) * 32)}
EXPORT_W = 4000                                       # 4 kW × 900 s = 1000 Wh per slot
CAPACITY_WH = 1000
PRICE = 200_000                                       # µc/kWh


def sell(owner=ALICE, number=1, qty=400, **changes):
    return sign(make_order(owner, RULES, NOW, number, qty_wh=qty, limit_price=PRICE, **changes), owner)


def bid(owner=BOB, number=101, qty=1000, price=PRICE, **changes):
    return sign(make_order(owner, RULES, NOW, number, side=Side.BUY, source=Source.NONE, green=False, qty_wh=qty,
                           limit_price=price, **changes), owner)


def cancel(signed, created_ms=NOW):
    o = signed.body
    key = next(k for k in (ALICE, BOB, MALLORY) if k.public_key == o.owner)
    return sign(Cancel(order_id=o.order_id, owner=o.owner, zone=o.zone, slot=o.slot, created_ms=created_ms), key)


class Ledger:
    """A ledger state with registrations and balances, as the gate reads it."""

    def __init__(self, credit_limit_uc=0):
        self.state = LedgerState()
        self.rules = LedgerRules(ZONE, GATEWAY.public_key, credit_limit_uc)

    def register(self, who, export_w=EXPORT_W):
        registration = (MeterRegistrationV2(GATEWAY.public_key, who.public_key, METER[who].public_key, ZONE, NOW,
                                            export_w) if export_w is not None else
                        MeterRegistration(GATEWAY.public_key, who.public_key, METER[who].public_key, ZONE, NOW))
        self.state.extra[f"meter_account/{who.public_key.hex()}"] = registration
        return self

    def fund(self, who, amount_uc):
        self.state.balances[who.public_key] = self.state.balance(who.public_key) + amount_uc
        return self

    def progress(self, signed, filled=0, locked=0):
        """A fill (seller's chain) or a lock on a bid (bidder's chain): an entry of the owner's chain."""
        owner = signed.body.owner
        self.state.orders[(owner, signed.body.order_id)] = OrderProgress(signed.body.qty_wh, filled, locked)
        self.state.heads[owner] = ChainHead(self.state.head(owner).next_seq + 1)

    def gate(self):
        return AdmissionGate(LedgerFacts(lambda: self.state, lambda: self.rules), SLOTS)


def funded_ledger():
    return Ledger().register(ALICE).register(BOB).fund(BOB, trade_value(1000, PRICE))


# --- the rules, as a pure function ----------------------------------------------------------

def test_capacity_per_slot_is_export_power_times_slot_length():
    assert sell_capacity_wh(EXPORT_W, SLOTS) == CAPACITY_WH
    assert sell_capacity_wh(4001, SLOTS) == 1000          # rounded down
    assert sell_capacity_wh(0, SLOTS) == 0


@pytest.mark.parametrize("committed, qty, admitted", [(0, 1000, True), (600, 400, True), (600, 401, False),
                                                      (1000, 1, False)])
def test_a_sell_is_admitted_up_to_exactly_the_capacity(committed, qty, admitted):
    verdict = judge_order(sell(qty=qty).body, OwnerFacts(True, EXPORT_W, 0), committed, 0, SLOTS)
    assert verdict.admitted is admitted
    assert verdict.refusal is (None if admitted else Refusal.OVER_CAPACITY)


def test_a_bid_is_admitted_up_to_exactly_the_budget():
    value = trade_value(1000, PRICE)
    assert judge_order(bid().body, OwnerFacts(True, 0, value), 0, 0, SLOTS).admitted
    assert judge_order(bid().body, OwnerFacts(True, 0, value + 5), 0, 5, SLOTS).admitted
    assert judge_order(bid().body, OwnerFacts(True, 0, value + 4), 0, 5, SLOTS).refusal is Refusal.UNFUNDED_BID


def test_an_unregistered_owner_is_refused_whatever_it_orders_but_the_gateway_is_exempt():
    for order in (sell().body, bid().body):
        assert judge_order(order, OwnerFacts(False), 0, 0, SLOTS).refusal is Refusal.UNREGISTERED_OWNER
        assert judge_order(order, OwnerFacts(True, exempt=True), 10**9, 10**9, SLOTS).admitted


# --- the gate over a ledger state -----------------------------------------------------------

def test_unbacked_sell_of_a_household_without_export_is_refused():
    ledger = Ledger().register(ALICE, export_w=0)
    verdict = ledger.gate().judge(sell(qty=10**9), NOW)
    assert verdict.refusal is Refusal.OVER_CAPACITY


def test_a_v1_registration_records_no_export_so_its_account_buys_but_cannot_sell():
    ledger = Ledger().register(ALICE, export_w=None).fund(ALICE, 10**9)
    gate = ledger.gate()
    assert gate.judge(sell(qty=1), NOW).refusal is Refusal.OVER_CAPACITY
    assert gate.judge(bid(owner=ALICE, qty=1000), NOW).admitted


def test_unfunded_bid_is_refused_and_credit_limit_counts():
    gate = Ledger().register(BOB).fund(BOB, 98).gate()
    assert gate.judge(bid(qty=10**9, price=10**9), NOW).refusal is Refusal.UNFUNDED_BID
    generous = Ledger(credit_limit_uc=trade_value(1000, PRICE)).register(BOB)
    assert generous.gate().judge(bid(qty=1000), NOW).admitted


def test_unregistered_owner_is_refused_and_the_gateway_is_not():
    gate = funded_ledger().gate()
    assert gate.judge(sell(owner=MALLORY), NOW).refusal is Refusal.UNREGISTERED_OWNER
    no_ledger = AdmissionGate(LedgerFacts(lambda: None, lambda: None), SLOTS)
    assert no_ledger.judge(sell(), NOW).refusal is Refusal.UNREGISTERED_OWNER
    gateway_order = sign(make_order(GATEWAY, RULES, NOW, 5, qty_wh=10**6), GATEWAY)
    assert gate.judge(gateway_order, NOW).admitted


def test_open_sells_add_up_to_the_capacity_and_a_cancel_frees_what_was_not_sold():
    ledger = funded_ledger()
    gate = ledger.gate()
    a, b, c = sell(number=1, qty=600), sell(number=2, qty=400), sell(number=3, qty=1)
    assert gate.judge(a, NOW).admitted and gate.judge(b, NOW).admitted       # exactly 1000 Wh
    assert gate.judge(c, NOW).refusal is Refusal.OVER_CAPACITY
    ledger.progress(a, filled=250)                                          # a fill does not free anything
    assert gate.judge(c, NOW).refusal is Refusal.OVER_CAPACITY
    gate.judge(cancel(a), NOW)                                              # 350 Wh of a never sold: freed
    assert gate.totals.sell_wh(ALICE.public_key, a.body.slot) == 650
    assert gate.judge(sell(number=4, qty=350), NOW).admitted
    assert gate.judge(sell(number=5, qty=1), NOW).refusal is Refusal.OVER_CAPACITY


def test_a_fill_certified_after_the_cancel_still_counts_as_sold():
    ledger = funded_ledger()
    gate = ledger.gate()
    a = sell(number=1, qty=1000)
    gate.judge(a, NOW)
    gate.judge(cancel(a), NOW)
    ledger.progress(a, filled=700)                  # the fill of a take in flight, certified later
    assert gate.judge(sell(number=2, qty=301), NOW).refusal is Refusal.OVER_CAPACITY
    assert gate.judge(sell(number=3, qty=300), NOW).admitted


def test_the_locked_part_of_a_bid_no_longer_counts_against_the_budget():
    budget = trade_value(1000, PRICE)
    ledger = Ledger().register(BOB).fund(BOB, budget)
    gate = ledger.gate()
    first = bid(number=101, qty=1000)
    assert gate.judge(first, NOW).admitted
    assert gate.judge(bid(number=102, qty=1), NOW).refusal is Refusal.UNFUNDED_BID
    # A seller takes 600 Wh of the bid: bob's chain locks their value (it leaves his balance).
    ledger.fund(BOB, -trade_value(600, PRICE))
    ledger.progress(first, locked=600)
    assert gate.judge(bid(number=103, qty=1), NOW).refusal is Refusal.UNFUNDED_BID
    gate.judge(cancel(first), NOW)                  # the 400 Wh left are withdrawn: budget frees up
    assert gate.judge(bid(number=104, qty=400), NOW).admitted


def test_expiry_and_gate_closure_free_the_budget():
    gate = funded_ledger().gate()
    short = bid(number=101, qty=1000, expiry_ms=NOW + 1000)
    assert gate.judge(short, NOW).admitted
    assert gate.judge(bid(number=102, qty=1000), NOW + 999).refusal is Refusal.UNFUNDED_BID
    assert gate.judge(bid(number=103, qty=1000), NOW + 1000).admitted
    closure = SLOTS.gate_closure_ms(short.body.slot)
    gate.judge(sell(number=1), closure)
    assert len(gate.totals) == 1 and gate.totals.bid_uc(BOB.public_key) == 0   # the slot's orders forgotten


def test_a_cancel_that_overtakes_its_order_keeps_the_order_from_counting():
    gate = funded_ledger().gate()
    a = sell(number=1, qty=1000)
    assert gate.judge(cancel(a), NOW).admitted
    assert gate.judge(a, NOW).admitted
    assert gate.judge(sell(number=2, qty=1000), NOW).admitted


def test_own_orders_fail_at_place_time_with_the_reason():
    gate = funded_ledger().gate()
    with pytest.raises(OrderNotAdmitted, match="over_capacity") as caught:
        gate.admit_own(sell(qty=CAPACITY_WH + 1), NOW)
    assert caught.value.reason is Refusal.OVER_CAPACITY


# --- inside the batch validator ------------------------------------------------------------

def batch_of(*items, zone=ZONE):
    return encode(OrderBatch(zone, NOW, tuple(s.encoded for s in items)))


def test_the_validator_ignores_unbacked_items_and_delivers_the_rest():
    validator = OrderBatchValidator(RULES, admission=funded_ledger().gate())
    honest, unbacked = sell(number=1, qty=1000), sell(number=2, qty=1)
    verdict = validator.validate(batch_of(honest, unbacked), ALICE.public_key, NOW)
    assert verdict.result is ACCEPT
    assert verdict.accepted == (honest,)
    assert (verdict.items[1].result, verdict.items[1].reason) == (IGNORE, Reason.OVER_CAPACITY)
    only_unbacked = validator.validate(batch_of(sell(number=3, qty=5)), ALICE.public_key, NOW)
    assert (only_unbacked.result, only_unbacked.reason) == (IGNORE, Reason.OVER_CAPACITY)
    mallory = validator.validate(batch_of(sell(owner=MALLORY)), MALLORY.public_key, NOW)
    assert (mallory.result, mallory.reason) == (IGNORE, Reason.UNREGISTERED_OWNER)
    bob = validator.validate(batch_of(bid(qty=10**6)), BOB.public_key, NOW)
    assert (bob.result, bob.reason) == (IGNORE, Reason.UNFUNDED_BID)


def test_a_refused_item_is_not_remembered_so_it_is_judged_again_when_it_comes_again():
    ledger = Ledger().register(ALICE)
    validator = OrderBatchValidator(RULES, admission=ledger.gate())
    early = bid(owner=ALICE, qty=1000)
    assert validator.validate(batch_of(early), ALICE.public_key, NOW).result is IGNORE
    ledger.fund(ALICE, trade_value(1000, PRICE))          # the mint reaches this validator
    again = encode(OrderBatch(ZONE, NOW + 1, (early.encoded,)))    # another batch, same signed order
    assert validator.validate(again, ALICE.public_key, NOW).result is ACCEPT


def test_within_a_batch_a_cancel_frees_what_the_next_order_needs():
    gate = funded_ledger().gate()
    validator = OrderBatchValidator(RULES, admission=gate)
    old = sell(number=1, qty=1000)
    assert validator.validate(batch_of(old), ALICE.public_key, NOW).result is ACCEPT
    replacement = sell(number=2, qty=1000)
    verdict = validator.validate(batch_of(cancel(old), replacement), ALICE.public_key, NOW)
    assert verdict.accepted == (cancel(old), replacement)
    backwards = OrderBatchValidator(RULES, admission=funded_ledger().gate())
    backwards.validate(batch_of(old), ALICE.public_key, NOW)
    verdict = backwards.validate(batch_of(replacement, cancel(old)), ALICE.public_key, NOW)
    assert [v.result for v in verdict.items] == [IGNORE, ACCEPT]


def test_a_rejected_batch_counts_nothing():
    gate = funded_ledger().gate()
    validator = OrderBatchValidator(RULES, admission=gate)
    late = sell(number=2, created_ms=NOW - 120_000, expiry_ms=NOW - 60_000)
    verdict = validator.validate(batch_of(sell(number=1, qty=1000), late), ALICE.public_key, NOW)
    assert verdict.result is REJECT
    assert len(gate.totals) == 0


# --- the incremental totals against a recomputation from scratch ------------------------------

OWNERS = (ALICE, BOB)
SLOT_STARTS = SLOTS.tradable_slots(NOW)[:3]


@st.composite
def orders(draw):
    owner = draw(st.sampled_from(OWNERS))
    side = draw(st.sampled_from([Side.SELL, Side.BUY]))
    return make_order(owner, RULES, NOW, draw(st.integers(1, 12)), slot=draw(st.sampled_from(SLOT_STARTS)),
                      side=side, source=Source.PV if side is Side.SELL else Source.NONE, green=side is Side.SELL,
                      qty_wh=draw(st.integers(1, 2000)), limit_price=draw(st.integers(0, 400_000)),
                      expiry_ms=NOW + draw(st.integers(1, 3)) * 600_000)


EVENTS = st.one_of(
    st.tuples(st.just("order"), orders()),
    st.tuples(st.just("cancel"), st.sampled_from(OWNERS), st.integers(1, 12), st.sampled_from(SLOT_STARTS)),
    st.tuples(st.just("consume"), st.integers(1, 12), st.integers(0, 2500)),
    st.tuples(st.just("time"), st.integers(0, 3 * 3_600_000)),
)


def from_scratch(events):
    """What the totals must be after ``events``: each order's final state replayed naively."""
    seen, state, cancelled_first, now = {}, {}, {}, NOW
    for event in events:
        if event[0] == "time":
            now = max(now, NOW + event[1])
        for oid, (order, consumed, is_open) in list(state.items()):
            if is_open and order.expiry_ms <= now:
                state[oid] = (order, consumed, False)
            if SLOTS.gate_closure_ms(order.slot) <= now:
                del state[oid]
        cancelled_first = {k: v for k, v in cancelled_first.items() if SLOTS.gate_closure_ms(v[1]) > now}
        if event[0] == "order":
            order = event[1]
            if order.order_id in state or order.order_id in seen and seen[order.order_id] > now:
                continue
            if SLOTS.gate_closure_ms(order.slot) <= now:
                continue
            first = cancelled_first.pop(order.order_id, None)
            is_open = first != (order.owner, order.slot) and order.expiry_ms > now
            state[order.order_id] = (order, 0, is_open)
            seen[order.order_id] = SLOTS.gate_closure_ms(order.slot)
        elif event[0] == "cancel":
            _, who, number, slot = event
            oid = number.to_bytes(16, "big")
            if oid in state:
                order, consumed, is_open = state[oid]
                if order.owner == who.public_key:
                    state[oid] = (order, consumed, False)
            else:
                cancelled_first[oid] = (who.public_key, slot)
        elif event[0] == "consume":
            oid = event[1].to_bytes(16, "big")
            if oid in state:
                order, consumed, is_open = state[oid]
                state[oid] = (order, max(consumed, event[2]), is_open)
    sells, bids_slot, bids = {}, {}, {}
    for order, consumed, is_open in state.values():
        key = (order.owner, order.slot)
        if order.side is Side.SELL:
            wh = order.qty_wh if is_open else min(consumed, order.qty_wh)
            if wh:
                sells[key] = sells.get(key, 0) + wh
        elif is_open:
            uc = trade_value(max(order.qty_wh - consumed, 0), order.limit_price)
            if uc:
                bids_slot[key] = bids_slot.get(key, 0) + uc
                bids[order.owner] = bids.get(order.owner, 0) + uc
    return sells, bids_slot, bids


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=60))
def test_incremental_totals_equal_a_recomputation_from_scratch(events):
    totals = OpenOrderTotals(SLOTS)
    now = NOW
    for event in events:
        if event[0] == "time":
            now = max(now, NOW + event[1])
        totals.expire(now)
        if event[0] == "order":
            order = event[1]
            if SLOTS.gate_closure_ms(order.slot) > now:
                totals.add(order)
        elif event[0] == "cancel":
            _, who, number, slot = event
            totals.cancel(who.public_key, number.to_bytes(16, "big"), slot)
        elif event[0] == "consume":
            totals.consume(event[1].to_bytes(16, "big"), event[2])
        assert totals.totals() == totals.recompute()
    totals.expire(now)
    assert totals.totals() == from_scratch(events)


def test_orders_published_before_a_restart_count_without_being_judged_again():
    gate = funded_ledger().gate()
    gate.count_own(sell(number=1, qty=1000), NOW)
    assert gate.judge(sell(number=2, qty=1), NOW).refusal is Refusal.OVER_CAPACITY


def test_a_cancel_naming_another_slot_does_not_make_the_order_forgotten_at_that_slot_s_closure():
    totals = OpenOrderTotals(SLOTS)
    early, late = SLOT_STARTS[0], SLOT_STARTS[2]
    order = make_order(ALICE, RULES, NOW, 1, slot=late, qty_wh=500, expiry_ms=SLOTS.gate_closure_ms(late))
    totals.cancel(ALICE.public_key, order.order_id, early)     # a cancel for the id, naming another slot
    totals.add(order)                                           # not that cancel's order: stays open
    totals.expire(SLOTS.gate_closure_ms(early))
    assert totals.sell_wh(ALICE.public_key, late) == 500
