"""Cash-flow statements from certified entries: every stream explained, always reconciled to the µc."""

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.charging.rules import (
    ChargeReading, ChargeTariff, charger_counter, next_tariff_id, plan_charge_bill, plan_charge_start, session_of, tariff_of,
)
from p2pgrid.invest.statement import STREAM_KEYS, account_flows, share_statement, statement, statement_for
from p2pgrid.ledger.chain import (
    KINDS, EntryRejected, KindRules, LedgerState, derive_state, process_entry, register_kind,
)
from p2pgrid.ledger.messages import Burn, Decline, Fill, Lock, Mint, Release, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.pools.entries import PoolOpen, SwapDecline, compute_pool_id, compute_swap, plan_swap, with_request
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.shares.rules import (
    ShareBuy, ShareIssue, ShareOffer, ShareRedeem, compute_buy_id, compute_payout, next_programme_id, programme_of,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Side, sign, struct

FX = LedgerFixture(credit_limit_uc=0)
GATEWAY = FX.gateway
PEOPLE = [seeded_key(f"invest-{i}") for i in range(3)]
KEYS = [GATEWAY, *PEOPLE]
NOW = 1_800_000_000_000
SLOT = 1_800_000_000 // 3600 * 3600


# A kind this module does not know: the account gets a bonus from the gateway. Its money must land
# in the "other" stream, so the statement still reconciles.
PROBE_KIND = "zz_invest_probe"


@struct
@dataclass(frozen=True)
class Probe:
    to: bytes
    amount: int


def _probe_apply(state, entry, body, rules):
    state.balances[entry.account] = state.balance(entry.account) - body.amount
    state.balances[body.to] = state.balance(body.to) + body.amount


if PROBE_KIND not in KINDS:
    register_kind(KindRules(PROBE_KIND, Probe, lambda *a: None, _probe_apply))


class Ledger:
    def __init__(self):
        self.state = LedgerState()
        self.entries = []

    def add(self, key, kind, body, now=NOW):
        signed = FX.entry_on(self.state, key, kind, body, now)
        process_entry(self.state, signed, FX.rules)
        self.entries.append(signed)
        return signed


def take(n: int) -> bytes:
    return n.to_bytes(16, "big")


# --- worked examples -----------------------------------------------------------------------------

def trade(ledger, buyer, seller, qty, price, take_no, fill_qty, slot=SLOT, seller_owns=True):
    owner = seller if seller_owns else buyer
    ledger.add(buyer, "lock", Lock(take_id=take(take_no), seller=seller.public_key, order_id=take(1000 + take_no),
                                   order_owner=owner.public_key, order_size_wh=qty, qty_wh=qty, price=price,
                                   amount=trade_value(qty, price) + 7, deadline_ms=NOW + 60_000, slot=slot))
    if fill_qty:
        ledger.add(seller, "fill", Fill(take_id=take(take_no), buyer=buyer.public_key, order_id=take(1000 + take_no),
                                        qty_wh=fill_qty, price=price))


def test_a_book_sale_is_revenue_for_the_seller_and_a_cost_for_the_buyer():
    ledger = Ledger()
    a, b = PEOPLE[0], PEOPLE[1]
    ledger.add(GATEWAY, "mint", Mint(to=b.public_key, amount=10_000_000))
    trade(ledger, b, a, 2_000, 200_000, 1, 1_500)
    sold = statement_for(ledger.entries, FX.rules, a.public_key)
    bought = statement_for(ledger.entries, FX.rules, b.public_key)
    value = trade_value(1_500, 200_000)
    assert sold.streams["energy_sold_book"] == value and sold.energy_wh["energy_sold_book"] == 1_500
    assert bought.streams["energy_bought_book"] == -value and bought.streams["escrow"] == 0
    assert bought.streams["deposits"] == 10_000_000
    assert sold.operating_net_uc == value and bought.operating_net_uc == -value
    assert sold.reconciled and bought.closing_uc == ledger.state.balance(b.public_key)


def test_a_sale_to_the_gateway_is_feed_in_and_a_purchase_from_it_is_grid_energy():
    ledger = Ledger()
    a = PEOPLE[0]
    ledger.add(GATEWAY, "mint", Mint(to=a.public_key, amount=10_000_000))
    trade(ledger, GATEWAY, a, 1_000, 80_000, 1, 1_000)
    trade(ledger, a, GATEWAY, 500, 300_000, 2, 500)
    s = statement_for(ledger.entries, FX.rules, a.public_key)
    assert s.streams["feed_in"] == trade_value(1_000, 80_000)
    assert s.streams["energy_bought_grid"] == -trade_value(500, 300_000)
    assert s.streams["energy_sold_book"] == 0 and s.streams["energy_bought_book"] == 0
    assert s.closing_uc == ledger.state.balance(a.public_key)


def test_an_open_lock_is_escrow_and_a_returned_lock_comes_back_once():
    # The seller's decline returns it; the buyer's release after it is a no-op and counts nothing.
    ledger = Ledger()
    a, b = PEOPLE[0], PEOPLE[1]
    ledger.add(GATEWAY, "mint", Mint(to=b.public_key, amount=10_000_000))
    trade(ledger, b, a, 1_000, 100_000, 1, 0)
    held = statement_for(ledger.entries, FX.rules, b.public_key)
    assert held.streams["escrow"] == -(trade_value(1_000, 100_000) + 7)
    ledger.add(a, "decline", Decline(take_id=take(1)), now=NOW + 60_000)
    ledger.add(b, "release", Release(take_id=take(1)), now=NOW + 60_000)
    back = statement_for(ledger.entries, FX.rules, b.public_key)
    assert back.streams["escrow"] == 0 and back.net_uc == 10_000_000
    assert back.closing_uc == ledger.state.balance(b.public_key) == 10_000_000


def test_transfers_and_burns_are_financing_not_earnings():
    ledger = Ledger()
    a, b = PEOPLE[0], PEOPLE[1]
    ledger.add(GATEWAY, "mint", Mint(to=a.public_key, amount=5_000_000))
    ledger.add(a, "transfer", Transfer(to=b.public_key, amount=1_000_000))
    ledger.add(a, "burn", Burn(amount=500_000))
    s = statement_for(ledger.entries, FX.rules, a.public_key)
    assert s.streams["deposits"] == 5_000_000 and s.streams["withdrawals"] == -1_500_000
    assert s.operating_net_uc == 0 and s.revenue_uc == 0
    gateway = statement_for(ledger.entries, FX.rules, GATEWAY.public_key)
    assert gateway.streams["withdrawals"] == -5_000_000 and gateway.streams["deposits"] == 500_000
    assert gateway.streams["other"] == 0


def test_an_unknown_kind_lands_in_other_so_the_statement_still_reconciles():
    ledger = Ledger()
    a = PEOPLE[0]
    ledger.add(GATEWAY, PROBE_KIND, Probe(to=a.public_key, amount=123_456))
    s = statement_for(ledger.entries, FX.rules, a.public_key)
    assert s.streams["other"] == 123_456 and s.closing_uc == ledger.state.balance(a.public_key) == 123_456


def test_streams_without_entries_are_zero_with_a_note():
    ledger = Ledger()
    ledger.add(GATEWAY, "mint", Mint(to=PEOPLE[0].public_key, amount=1))
    s = statement_for(ledger.entries, FX.rules, PEOPLE[0].public_key)
    assert set(s.streams) == set(STREAM_KEYS)
    assert all(s.streams[k] == 0 and s.notes[k] for k in STREAM_KEYS if k != "deposits")
    assert s.notes["charging_sales"] == "no certified entries in this period" and "deposits" not in s.notes


def test_a_period_holds_the_entries_of_its_slots_and_opening_plus_net_is_closing():
    ledger = Ledger()
    a, b = PEOPLE[0], PEOPLE[1]
    ledger.add(GATEWAY, "mint", Mint(to=b.public_key, amount=10_000_000))
    trade(ledger, b, a, 1_000, 100_000, 1, 1_000, slot=SLOT)
    trade(ledger, b, a, 1_000, 150_000, 2, 1_000, slot=SLOT + 3600)
    flows = account_flows(ledger.entries, FX.rules, a.public_key)
    first = statement(flows, None, SLOT + 3600)
    second = statement(flows, SLOT + 3600, None)
    assert first.streams["energy_sold_book"] == trade_value(1_000, 100_000)
    assert second.streams["energy_sold_book"] == trade_value(1_000, 150_000)
    assert second.opening_uc == first.closing_uc and second.opening_uc + second.net_uc == second.closing_uc


# --- property: random ledgers --------------------------------------------------------------------

OPS = st.lists(st.tuples(st.sampled_from(["mint", "transfer", "burn", "trade", "open", "release", "probe",
                                          "swap", "share_buy", "share_issue", "share_payout", "share_redeem",
                                          "charge_start", "charge_bill"]),
                         st.integers(0, 3), st.integers(0, 3), st.integers(1, 5_000_000),
                         st.integers(1, 3_000), st.integers(0, 400_000), st.integers(0, 4)),
               max_size=30)


POOL_SLOT = SlotRules().tradable_slots(NOW)[2]
LOCKUP_SLOT = POOL_SLOT + 3600
SHARE_PRICE = 100_000


class SharedPool:
    """PEOPLE[0] hosts a pool and sells shares in its fees; the others swap and buy shares."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.host = PEOPLE[0]
        self.pool_id = compute_pool_id(self.host.public_key, FX.zone, POOL_SLOT)
        ledger.add(self.host, "pool_open", PoolOpen(pool_id=self.pool_id, slot=POOL_SLOT, energy_wh=20_000,
                                                    credits_uc=1_000_000, fee_bps=300, energy_cap_wh=40_000,
                                                    self_discharge_ppm_per_h=0, conversion_loss_w=0, at_ms=NOW))
        self.programme_id = next_programme_id(ledger.state, self.host.public_key, FX.zone)
        ledger.add(self.host, "share_offer", ShareOffer(
            programme_id=self.programme_id, zone=FX.zone, price_uc=SHARE_PRICE, fee_share_bps=4_000,
            lockup_until_slot=LOCKUP_SLOT, cap_shares=40, sale_until_ms=NOW + 600_000))
        self.escrows = []
        self.swaps = 0

    def swap(self, trader, energy_wh):
        _, quote = compute_swap(self.ledger.state.pools[self.pool_id].pool, Side.BUY, energy_wh, NOW)
        self.swaps += 1
        request = sign(SwapRequest(request_id=(10**6 + self.swaps).to_bytes(16, "big"), trader=trader.public_key,
                                   host=self.host.public_key, pool_id=self.pool_id, zone=FX.zone, slot=POOL_SLOT,
                                   side=Side.BUY, energy_wh=energy_wh, limit_uc=quote.credits_uc,
                                   expires_ms=NOW + 60_000), trader)
        self.ledger.add(trader, "lock", Lock(take_id=request.body.request_id, seller=self.host.public_key,
                                             order_id=self.pool_id, order_owner=self.host.public_key,
                                             order_size_wh=energy_wh, qty_wh=energy_wh,
                                             price=quote.credits_uc * 1000 // energy_wh, amount=quote.credits_uc,
                                             deadline_ms=NOW + 30_000, slot=POOL_SLOT))
        record = self.ledger.state.pools[self.pool_id]
        self.ledger.add(self.host, "swap", with_request(
            plan_swap(record, request.body, self.host.public_key, FX.zone, NOW), request))

    def buy(self, lp, shares):
        buy_id = compute_buy_id(lp.public_key, self.programme_id, self.ledger.state.head(lp.public_key).next_seq)
        body = ShareBuy(buy_id=buy_id, programme_id=self.programme_id, host=self.host.public_key, zone=FX.zone,
                        shares=shares, amount_uc=shares * SHARE_PRICE, deadline_ms=NOW + 60_000)
        self.ledger.add(lp, "share_buy", body)
        self.escrows.append((lp, body))

    def issue(self):
        lp, body = self.escrows.pop(0)
        self.ledger.add(self.host, "share_issue", ShareIssue(buy_id=body.buy_id, programme_id=self.programme_id,
                                                             lp=lp.public_key, shares=body.shares))

    def payout(self):
        self.ledger.add(self.host, "share_payout", compute_payout(self.ledger.state,
                                                                  programme_of(self.ledger.state, self.programme_id)))

    def redeem(self, lp, shares):
        self.ledger.add(self.host, "share_redeem", ShareRedeem(programme_id=self.programme_id, lp=lp.public_key,
                                                               shares=shares, amount_uc=shares * SHARE_PRICE),
                        now=LOCKUP_SLOT * 1000)


CONNECTOR = seeded_key("invest-connector")
CHARGE_PRICE = 450_000


class Charger:
    """PEOPLE[0] also sells charging at one connector; the others charge there."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.station = PEOPLE[0]
        self.tariff_id = next_tariff_id(ledger.state, self.station.public_key, FX.zone)
        ledger.add(self.station, "charge_tariff", ChargeTariff(
            tariff_id=self.tariff_id, zone=FX.zone, price_uc_per_kwh=CHARGE_PRICE,
            charger_keys=(CONNECTOR.public_key,), max_power_w=22_000, max_session_wh=10_000,
            until_ms=NOW + 3_600_000))
        self.open = []

    def start(self, driver, max_wh):
        tariff = tariff_of(self.ledger.state, self.tariff_id)
        body = plan_charge_start(tariff, driver.public_key, max_wh, self.ledger.state.head(driver.public_key).next_seq,
                                 NOW, NOW + 3_600_000)
        self.ledger.add(driver, "charge_start", body)
        self.open.append(body)

    def bill(self, delivered_wh):
        session = self.open.pop(0)
        counter = charger_counter(self.ledger.state, CONNECTOR.public_key)
        reading = sign(ChargeReading(charger_key=CONNECTOR.public_key, station=self.station.public_key,
                                     session_id=session.session_id, meter_start_wh=counter,
                                     meter_stop_wh=counter + min(delivered_wh, session.max_wh), started_ms=NOW,
                                     ended_ms=NOW + 3_600_000), CONNECTOR)
        self.ledger.add(self.station, "charge_bill", plan_charge_bill(self.ledger.state, reading))


def test_a_charging_session_is_a_sale_for_the_station_and_a_cost_for_the_driver():
    ledger = Ledger()
    ledger.add(GATEWAY, "mint", Mint(to=PEOPLE[1].public_key, amount=10_000_000))
    charger = Charger(ledger)
    charger.start(PEOPLE[1], 10_000)
    driver = statement_for(ledger.entries, FX.rules, PEOPLE[1].public_key)
    assert driver.streams["escrow"] == -4_500_000 and driver.closing_uc == 5_500_000
    charger.bill(7_777)
    price = trade_value(7_777, CHARGE_PRICE)
    station = statement_for(ledger.entries, FX.rules, PEOPLE[0].public_key)
    driver = statement_for(ledger.entries, FX.rules, PEOPLE[1].public_key)
    assert station.streams["charging_sales"] == price == -driver.streams["charging_bought"]
    assert station.energy_wh["charging_sales"] == driver.energy_wh["charging_bought"] == 7_777
    assert driver.streams["escrow"] == 0 and driver.closing_uc == 10_000_000 - price
    assert station.reconciled and driver.reconciled and station.operating_net_uc == price


def build_random_ledger(ops) -> Ledger:
    ledger = Ledger()
    for person in PEOPLE:
        ledger.add(GATEWAY, "mint", Mint(to=person.public_key, amount=3_000_000))
    pool = SharedPool(ledger)
    charger = Charger(ledger)
    open_takes = []
    for n, (op, i, j, amount, qty, price, slot_no) in enumerate(ops):
        src, dst = KEYS[i], KEYS[j]
        try:
            if op == "mint":
                ledger.add(GATEWAY, "mint", Mint(to=PEOPLE[i % 3].public_key, amount=amount))
            elif op == "transfer" and src != dst:
                ledger.add(src, "transfer", Transfer(to=dst.public_key, amount=amount))
            elif op == "burn" and src != GATEWAY:
                ledger.add(src, "burn", Burn(amount=amount))
            elif op == "probe":
                ledger.add(src, PROBE_KIND, Probe(to=dst.public_key, amount=amount))
            elif op in ("trade", "open") and src != dst:
                fill = qty - qty // 3 if op == "trade" else 0
                trade(ledger, src, dst, qty, price, n, fill, slot=SLOT + 3600 * slot_no, seller_owns=bool(j % 2))
                if op == "open":
                    open_takes.append((src, n))
            elif op == "release" and open_takes:
                buyer, take_no = open_takes.pop(0)
                # The seller hands it back, then the buyer's release (valid now that the seller's
                # chain is dated at the deadline) is a no-op: the escrow comes back once.
                seller = next(k for k in KEYS if k.public_key == ledger.state.locks[take(take_no)].lock.seller)
                ledger.add(seller, "decline", Decline(take_id=take(take_no)), now=NOW + 60_000)
                ledger.add(buyer, "release", Release(take_id=take(take_no)), now=NOW + 60_000)
            elif op == "release" and pool.escrows:
                lp, body = pool.escrows.pop(0)                 # an escrow the host never issued
                ledger.add(pool.host, "swap_decline", SwapDecline(swap_id=body.buy_id, pool_id=pool.programme_id,
                                                                  trader=lp.public_key, reason="expired"),
                           now=body.deadline_ms)
                ledger.add(lp, "release", Release(take_id=body.buy_id), now=body.deadline_ms)
            elif op == "swap" and src != pool.host:
                pool.swap(src, qty)
            elif op == "share_buy":
                pool.buy(PEOPLE[1 + i % 2], 1 + j)
                if amount % 2:
                    pool.issue()
            elif op == "share_issue" and pool.escrows:
                pool.issue()
            elif op == "share_payout":
                pool.payout()
            elif op == "share_redeem":
                pool.redeem(PEOPLE[1 + i % 2], 1 + j % 2)
            elif op == "charge_start":
                charger.start(PEOPLE[1 + i % 2], qty)
            elif op == "charge_bill" and charger.open:
                charger.bill(qty * j // 3)
            elif op == "release" and charger.open:
                session = charger.open.pop(0)
                driver = next(p for p in PEOPLE if p.public_key == session_of(ledger.state, session.session_id).driver)
                ledger.add(charger.station, "decline", Decline(take_id=session.session_id), now=session.deadline_ms)
                ledger.add(driver, "release", Release(take_id=session.session_id), now=session.deadline_ms)
        except EntryRejected:
            pass            # an overdraft etc.: the op just does not happen
    return ledger


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 5))
def test_statements_reconcile_with_ledger_balances_on_random_ledgers(ops, seed, cut):
    ledger = build_random_ledger(ops)
    entries = list(ledger.entries)
    random.Random(seed).shuffle(entries)                 # the store's order is not the chain order
    derived, waiting = derive_state(entries, FX.rules)
    assert not waiting
    cut_s = SLOT + 3600 * cut
    for key in KEYS:
        flows = account_flows(entries, FX.rules, key.public_key)
        whole = statement(flows)
        assert whole.closing_uc == whole.net_uc == derived.balance(key.public_key) == flows.balance_uc
        probes = sum(1 for s in ledger.entries if s.body.kind == PROBE_KIND
                     and key.public_key in (s.body.account, _probe_target(s)))
        if not probes:
            assert whole.streams["other"] == 0
        before, after = statement(flows, None, cut_s), statement(flows, cut_s, None)
        assert before.net_uc + after.net_uc == whole.net_uc
        assert after.opening_uc == before.closing_uc and after.reconciled and before.reconciled
        assert whole.revenue_uc >= 0 >= whole.costs_uc
        shares = share_statement(entries, FX.rules, key.public_key)
        assert shares.reconciled and shares.income_uc == whole.streams["share_income"]


def _probe_target(signed):
    from p2pgrid.ledger.chain import decode_body
    return decode_body(signed.body).to
