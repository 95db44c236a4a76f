"""Pool swaps settle like book trades: the host delivers (or takes) the pool's energy, each trader's
meter is compared with what it swapped, certificates move as far as the seller's metered green
generation covers them. Built on real ``pool_open`` / ``lock`` / ``swap`` / ``meter`` / ``settle``
entries, so validators' recomputation is what is tested."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.invest.statement import account_flows, statement
from p2pgrid.ledger.chain import EntryRejected, LedgerState, LockStatus, derive_state, process_entry, state_root
from p2pgrid.ledger.messages import Fill, Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices, Reason, settle_slot
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, SettlementLedgerRules, certificates_of,
    compute_settlement, settlement_of, swap_trade_id, trades_for_slot, unsettled_slots,
)
from p2pgrid.pools.entries import PoolOpen, compute_pool_id, compute_swap, plan_swap, with_request
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Side, Source, sign

from settlement_strategies import ACCOUNTS, GATEWAY as PURE_GATEWAY, swap, tariffs

SLOT = 1_800_000_000 - 1_800_000_000 % 900
SLOTS = SlotRules()
TRADE_MS = (SLOT - 3_600) * 1000
METER_MS = SLOTS.slot_end_ms(SLOT) + 10_000
DUE_MS = SLOTS.metering_due_ms(SLOT)
RETAIL, FEED_IN = 300_000, 80_000
CREDITS = 20_000_000

FIX = LedgerFixture()
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(RETAIL, FEED_IN))
GATEWAY = FIX.gateway
STATION, HOUSE, NEIGHBOUR = (seeded_key(n) for n in ("swap-station", "swap-house", "swap-neighbour"))
PEOPLE = (STATION, HOUSE, NEIGHBOUR)
METERS = {key.public_key: seeded_key(f"swap-meter-{i}") for i, key in enumerate(PEOPLE)}


class Zone:
    """A settling zone where STATION hosts one pool for SLOT; HOUSE and NEIGHBOUR trade with it."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.entries: list = []
        self.swaps = 0
        for key in PEOPLE:
            self.add(GATEWAY, "mint", Mint(to=key.public_key, amount=CREDITS))
        for account, meter in METERS.items():
            self.add(GATEWAY, METER_REGISTRATION_KIND,
                     MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0))
        self.pool_id = compute_pool_id(STATION.public_key, FIX.zone, SLOT)
        self.add(STATION, "pool_open", PoolOpen(
            pool_id=self.pool_id, slot=SLOT, energy_wh=20_000, credits_uc=4_000_000, fee_bps=30,
            energy_cap_wh=40_000, self_discharge_ppm_per_h=0, conversion_loss_w=0, at_ms=TRADE_MS))

    def add(self, key, kind, body, now=TRADE_MS):
        signed = FIX.entry_on(self.state, key, kind, body, now)
        process_entry(self.state, signed, FIX.rules)
        self.entries.append(signed)
        return signed

    def swap(self, trader, side: Side, energy_wh: int) -> tuple[bytes, int]:
        """``trader`` swaps ``energy_wh`` with the pool; the swap id and the credits it moved."""
        _, quote = compute_swap(self.state.pools[self.pool_id].pool, side, energy_wh, TRADE_MS)
        self.swaps += 1
        swap_id = (7_000 + self.swaps).to_bytes(16, "big")
        limit = quote.credits_uc + 500 if side is Side.BUY else quote.credits_uc
        request = sign(SwapRequest(request_id=swap_id, trader=trader.public_key, host=STATION.public_key,
                                   pool_id=self.pool_id, zone=FIX.zone, slot=SLOT, side=side, energy_wh=energy_wh,
                                   limit_uc=limit, expires_ms=TRADE_MS + 60_000), trader)
        if side is Side.BUY:     # the lock exactly as PoolClient builds it: it carries the pool's slot
            self.add(trader, "lock", Lock(take_id=swap_id, seller=STATION.public_key, order_id=self.pool_id,
                                          order_owner=STATION.public_key, order_size_wh=energy_wh,
                                          qty_wh=energy_wh, price=limit * 1000 // energy_wh, amount=limit,
                                          deadline_ms=TRADE_MS + 30_000, slot=SLOT))
        record = self.state.pools[self.pool_id]
        self.add(STATION, "swap", with_request(plan_swap(record, request.body, STATION.public_key, FIX.zone,
                                                         TRADE_MS), request))
        return swap_id, quote.credits_uc

    def book_sale(self, take_id: bytes, seller, buyer, qty: int, price: int, *, green: bool = False) -> None:
        self.add(buyer, "lock", Lock(take_id, seller.public_key, b"o" * 16, seller.public_key, 50_000, qty, price,
                                     trade_value(qty, price), TRADE_MS + 30_000, slot=SLOT, green=green))
        self.add(seller, "fill", Fill(take_id, buyer.public_key, b"o" * 16, qty, price))

    def meter(self, key, import_wh: int = 0, export_wh: int = 0, green_wh: int = 0) -> None:
        meter = METERS[key.public_key]
        reading = MeterReading(account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=SLOT,
                               import_wh=import_wh, export_wh=export_wh, green_wh=green_wh,
                               green_source=Source.PV if green_wh else Source.NONE, import_total_wh=import_wh,
                               export_total_wh=export_wh, created_ms=METER_MS)
        self.add(key, METER_KIND, MeterEntryBody(sign(reading, meter).encoded), METER_MS)

    def settle(self):
        body, _ = compute_settlement(self.state, FIX.rules, SLOT)
        self.add(GATEWAY, SETTLE_KIND, body, DUE_MS)
        return body, settlement_of(self.state, SLOT)

    def balances(self) -> dict[bytes, int]:
        return {key.public_key: self.state.balance(key.public_key) for key in PEOPLE}


def change(before: dict[bytes, int], zone: Zone) -> dict[bytes, int]:
    return {account: balance - before[account] for account, balance in zone.balances().items()}


# --- worked examples -----------------------------------------------------------------------------

def test_a_household_buying_300_wh_from_the_stations_pool_and_metering_it_has_no_imbalance():
    zone = Zone()
    swap_id, credits = zone.swap(HOUSE, Side.BUY, 300)
    zone.meter(HOUSE, import_wh=300)
    zone.meter(STATION, export_wh=300)
    before = zone.balances()

    body, settled = zone.settle()

    assert body.swaps == (swap_id,) and body.trades == () and body.postings == ()
    assert change(before, zone) == {key.public_key: 0 for key in PEOPLE}
    delivery = settled.delivery(swap_trade_id(swap_id))
    assert (delivery.seller, delivery.buyer) == (STATION.public_key, HOUSE.public_key)
    assert (delivery.contracted_wh, delivery.delivered_wh) == (300, 300)
    # The trade line is the credits the curve charged, exactly: what the swap already moved.
    assert [t for t in settled.transfers if t.reason is Reason.TRADE] == [
        settled.transfers[0]] and settled.transfers[0].amount_uc == credits
    assert settled.line(STATION.public_key).sold_wh == 300 and settled.line(HOUSE.public_key).bought_wh == 300
    assert settled.line(HOUSE.public_key).net_uc == -credits and settled.total_uc == 0
    assert zone.state.money_total() == 0


def test_a_station_delivering_only_200_of_300_wh_pays_the_shortfall_at_retail():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)
    zone.meter(HOUSE, import_wh=300)
    zone.meter(STATION, export_wh=200)
    before = zone.balances()

    body, settled = zone.settle()

    assert change(before, zone) == {STATION.public_key: -trade_value(100, RETAIL), HOUSE.public_key: 0,
                                    NEIGHBOUR.public_key: 0}
    assert settled.line(STATION.public_key).shortfall_wh == 100
    assert settled.line(HOUSE.public_key).extra_import_wh == 0     # the missing 100 Wh are the host's to pay
    assert zone.state.money_total() == 0


def test_a_trader_selling_into_the_pool_is_the_seller_and_the_host_the_buyer():
    zone = Zone()
    swap_id, credits = zone.swap(NEIGHBOUR, Side.SELL, 400)
    zone.meter(NEIGHBOUR, export_wh=250, green_wh=300)   # delivered 250 of the 400 Wh it sold
    zone.meter(STATION, import_wh=400)                   # the battery took the 400 Wh it bought
    before = zone.balances()

    _, settled = zone.settle()

    delivery = settled.delivery(swap_trade_id(swap_id))
    assert (delivery.seller, delivery.buyer, delivery.delivered_wh) == (NEIGHBOUR.public_key, STATION.public_key, 250)
    assert settled.line(STATION.public_key).paid_for(Reason.TRADE) == -credits
    assert change(before, zone) == {NEIGHBOUR.public_key: -trade_value(150, RETAIL), STATION.public_key: 0,
                                    HOUSE.public_key: 0}
    certs = certificates_of(zone.state, SLOT)       # the trader's green Wh went with what it delivered
    assert total_wh(certs.retired_by(STATION.public_key)) == 250
    assert total_wh(certs.holdings_of(NEIGHBOUR.public_key)) == 50


def test_a_hosts_pool_sales_and_book_sales_share_its_delivery_pro_rata():
    zone = Zone()
    swap_id, _ = zone.swap(HOUSE, Side.BUY, 300)
    zone.book_sale(b"\x01" * 16, STATION, NEIGHBOUR, 600, 200_000)
    zone.meter(STATION, export_wh=600)                # sold 900 Wh in all, delivered two thirds
    zone.meter(HOUSE, import_wh=300)
    zone.meter(NEIGHBOUR, import_wh=600)

    body, settled = zone.settle()

    assert body.trades == (b"\x01" * 16,) and body.swaps == (swap_id,)
    assert settled.delivery(swap_trade_id(swap_id)).delivered_wh == 200
    assert settled.delivery(b"\x01" * 16).delivered_wh == 400
    assert settled.line(STATION.public_key).paid_for(Reason.SHORTFALL) == -trade_value(300, RETAIL)


@pytest.mark.parametrize("station_green_wh, retired_wh", [(300, 300), (120, 120), (0, 0)])
def test_pool_energy_is_green_only_as_far_as_the_hosts_metered_generation_covers_it(station_green_wh, retired_wh):
    zone = Zone()
    swap_id, _ = zone.swap(HOUSE, Side.BUY, 300)
    zone.meter(STATION, export_wh=300, green_wh=station_green_wh)
    zone.meter(HOUSE, import_wh=300)

    zone.settle()

    certs = certificates_of(zone.state, SLOT)
    assert total_wh(certs.issued) == station_green_wh
    assert total_wh(certs.retired_by(HOUSE.public_key)) == retired_wh
    assert all(t.trade_id == swap_trade_id(swap_id) and t.seller == STATION.public_key for t in certs.transfers)


def test_the_pool_clients_lock_carries_the_pool_slot_and_is_not_settled_a_second_time():
    zone = Zone()
    swap_id, _ = zone.swap(HOUSE, Side.BUY, 300)
    record = zone.state.locks[swap_id]
    assert record.lock.slot == SLOT and record.status is LockStatus.FILLED and record.filled_wh == 0
    assert [t.trade_id for t in trades_for_slot(zone.state, FIX.rules, SLOT)] == [swap_trade_id(swap_id)]
    assert unsettled_slots(zone.state) == [SLOT]      # a slot with swaps only still settles


def test_a_lock_reusing_a_sell_swaps_id_cannot_collide_with_the_swap_in_settlement():
    zone = Zone()
    swap_id, _ = zone.swap(NEIGHBOUR, Side.SELL, 400)
    zone.book_sale(swap_id, HOUSE, NEIGHBOUR, 100, 200_000)   # a take id chosen equal to the swap id
    zone.meter(NEIGHBOUR, export_wh=400, import_wh=100)
    zone.meter(HOUSE, export_wh=100)
    zone.meter(STATION, import_wh=400)

    body, settled = zone.settle()

    assert body.trades == (swap_id,) and body.swaps == (swap_id,)
    assert settled.delivery(swap_id).contracted_wh == 100
    assert settled.delivery(swap_trade_id(swap_id)).contracted_wh == 400


def test_invalid_settle_that_leaves_out_a_swap():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)
    zone.meter(HOUSE, import_wh=300)
    zone.meter(STATION, export_wh=200)
    body, _ = compute_settlement(zone.state, FIX.rules, SLOT)
    without = replace(body, swaps=(), postings=())
    with pytest.raises(EntryRejected, match=r"differs from the result over its named inputs \(postings"):
        zone.add(GATEWAY, SETTLE_KIND, without, DUE_MS)


def test_settled_swaps_give_one_state_root_in_any_order_and_offline():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)
    zone.swap(NEIGHBOUR, Side.SELL, 500)
    zone.meter(HOUSE, import_wh=250)
    zone.meter(NEIGHBOUR, export_wh=500)
    zone.meter(STATION, export_wh=300, import_wh=450, green_wh=300)
    zone.settle()
    entries = list(zone.entries)
    random.Random(3).shuffle(entries)
    derived, pending = derive_state(entries, FIX.rules)
    assert pending == {} and state_root(derived) == state_root(zone.state)
    offline, pending = derive_state(entries, LedgerFixture().rules)     # applying needs no zone terms
    assert pending == {} and state_root(offline) == state_root(zone.state)


def test_investment_statements_of_host_and_traders_reconcile_with_the_settled_swaps():
    zone = Zone()
    zone.swap(HOUSE, Side.BUY, 300)
    zone.swap(NEIGHBOUR, Side.SELL, 200)
    zone.meter(HOUSE, import_wh=300)
    zone.meter(NEIGHBOUR, export_wh=200)
    zone.meter(STATION, export_wh=200, import_wh=200)
    zone.settle()
    for key in PEOPLE:
        flows = account_flows(zone.entries, FIX.rules, key.public_key)
        whole = statement(flows)
        assert whole.reconciled and whole.closing_uc == zone.state.balance(key.public_key)
        assert whole.streams["other"] == 0
    station = statement(account_flows(zone.entries, FIX.rules, STATION.public_key))
    assert station.streams["shortfall_charges"] == -trade_value(100, RETAIL)


# --- invariants ------------------------------------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACCOUNTS), st.sampled_from(ACCOUNTS), st.sampled_from(Side),
                          st.integers(1, 5_000), st.integers(1, 5_000_000)), max_size=8))
def test_a_swaps_trade_transfer_is_exactly_the_credits_it_moved(swaps):
    trades = [swap(i, host, trader, side, wh, uc) for i, (host, trader, side, wh, uc) in enumerate(swaps)
              if host != trader]
    settled = settle_slot(trades[0].slot if trades else SLOT, trades, [], tariffs())
    paid = {t.ref: t.amount_uc for t in settled.transfers if t.reason is Reason.TRADE}
    assert paid == {t.trade_id: t.value_uc for t in trades}
    assert settled.total_uc == 0 and PURE_GATEWAY in {line.account for line in settled.lines}


SWAPS = st.lists(st.tuples(st.sampled_from((HOUSE, NEIGHBOUR)), st.sampled_from(Side), st.integers(1, 3_000)),
                 max_size=5)
METERED = st.tuples(st.integers(0, 6_000), st.integers(0, 6_000), st.integers(0, 6_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(swaps=SWAPS, book=st.integers(0, 2_000), meters=st.lists(st.one_of(st.none(), METERED), min_size=3,
                                                                   max_size=3), seed=st.integers(0, 2**16))
def test_with_swaps_in_the_mix_money_is_conserved_certificates_hold_and_order_does_not_matter(swaps, book, meters,
                                                                                            seed):
    zone = Zone()
    swapped = [zone.swap(trader, side, wh) for trader, side, wh in swaps]
    if book:
        zone.book_sale(b"\x02" * 16, STATION, HOUSE, book, 150_000, green=True)
    for key, metered in zip(PEOPLE, meters):
        if metered is not None:
            imported, exported, green = metered
            zone.meter(key, import_wh=imported, export_wh=exported, green_wh=green)
    before_total = zone.state.money_total()
    body, settled = zone.settle()

    assert zone.state.money_total() == before_total == 0                 # gateway included
    assert settled.total_uc == 0
    assert sorted(body.swaps) == sorted(swap_id for swap_id, _ in swapped)
    for swap_id, credits in swapped:
        delivery = settled.delivery(swap_trade_id(swap_id))
        assert 0 <= delivery.delivered_wh <= delivery.contracted_wh
        assert dict((t.ref, t.amount_uc) for t in settled.transfers if t.reason is Reason.TRADE)[
            swap_trade_id(swap_id)] == credits
    certs = certificates_of(zone.state, SLOT)
    assert total_wh(certs.issued) == sum(m[2] for m in meters if m is not None)
    assert len({r.batch for r in certs.issued}) == len(certs.issued)
    for key, metered in zip(PEOPLE, meters):
        consumed = metered[0] if metered is not None else 0
        assert total_wh(certs.retired_by(key.public_key)) <= consumed
    entries = list(zone.entries)
    random.Random(seed).shuffle(entries)
    derived, pending = derive_state(entries, FIX.rules)
    assert pending == {} and state_root(derived) == state_root(zone.state)
    for key in PEOPLE:
        flows = account_flows(entries, FIX.rules, key.public_key)
        assert statement(flows).closing_uc == zone.state.balance(key.public_key) == flows.balance_uc
