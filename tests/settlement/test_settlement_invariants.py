"""Invariants of settlement and certificates, as hypothesis properties over random slots."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.settlement.certificates import certify_slot, normalize, total_wh
from p2pgrid.settlement.rules import allocate_delivery, settle_slot

from settlement_strategies import GATEWAY, SLOT, meter_sets, tariffs, trade_sets

PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(trade_sets(), meter_sets())
def test_money_is_conserved_exactly_gateway_included(trades, meters):
    result = settle_slot(SLOT, trades, meters, tariffs())
    assert result.total_uc == 0
    assert sum(line.net_uc for line in result.lines) == 0
    assert any(line.account == GATEWAY for line in result.lines)
    for line in result.lines:
        assert line.net_uc == result.net(line.account) == sum(amount for _, amount in line.payments)
    assert all(t.amount_uc > 0 and t.payer != t.payee for t in result.transfers)


@PROPERTY
@given(trade_sets(), meter_sets(), st.randoms(use_true_random=False))
def test_settlement_is_idempotent_and_independent_of_arrival_order(trades, meters, rng):
    first = settle_slot(SLOT, trades, meters, tariffs())
    assert settle_slot(SLOT, trades, meters, tariffs()) == first
    shuffled_trades = trades + rng.sample(trades, len(trades) // 2)     # some arrive twice
    shuffled_meters = meters + rng.sample(meters, len(meters) // 2)
    rng.shuffle(shuffled_trades)
    rng.shuffle(shuffled_meters)
    assert settle_slot(SLOT, shuffled_trades, shuffled_meters, tariffs()) == first
    assert certify_slot(settle_slot(SLOT, shuffled_trades, shuffled_meters, tariffs())) == certify_slot(first)


@PROPERTY
@given(trade_sets(), meter_sets())
def test_delivery_never_exceeds_a_contract_and_sums_to_what_the_seller_delivered(trades, meters):
    result = settle_slot(SLOT, trades, meters, tariffs())
    delivered_by_seller = defaultdict(int)
    for d in result.deliveries:
        assert 0 <= d.delivered_wh <= d.contracted_wh
        delivered_by_seller[d.seller] += d.delivered_wh
    for line in result.lines:
        assert delivered_by_seller.get(line.account, 0) == line.delivered_wh == min(line.export_wh, line.sold_wh)
        assert line.delivered_wh + line.shortfall_wh == line.sold_wh
        assert line.delivered_wh + line.surplus_export_wh == line.export_wh


@PROPERTY
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=8), st.data())
def test_pro_rata_shares_sum_exactly_and_are_each_within_one_wh_of_fair(quantities, data):
    contracts = [(i.to_bytes(2, "big"), q) for i, q in enumerate(quantities)]
    sold = sum(quantities)
    delivered = data.draw(st.integers(0, sold))
    shares = allocate_delivery(delivered, contracts)
    assert sum(shares.values()) == delivered
    for trade_id, q in contracts:
        assert q * delivered // sold <= shares[trade_id] <= -(-q * delivered // sold)


@PROPERTY
@given(trade_sets(), meter_sets())
def test_certificate_units_issued_equal_green_generation_metered(trades, meters):
    certs = certify_slot(settle_slot(SLOT, trades, meters, tariffs()))
    assert total_wh(certs.issued) == sum(m.green_wh for m in meters)
    assert len({r.batch for r in certs.issued}) == len(certs.issued)   # one batch per meter entry


@PROPERTY
@given(trade_sets(), meter_sets())
def test_no_unit_is_in_two_places_and_every_unit_is_somewhere(trades, meters):
    certs = certify_slot(settle_slot(SLOT, trades, meters, tariffs()))
    held = [r for _, units in certs.holdings for r in units]
    retired = [r.units for r in certs.retirements]
    places = normalize(held + retired)         # raises ValueError on any overlap
    assert places == normalize(certs.issued)   # and together they cover exactly what was issued


@PROPERTY
@given(trade_sets(), meter_sets())
def test_retired_never_exceeds_consumption_nor_what_green_trades_delivered(trades, meters):
    result = settle_slot(SLOT, trades, meters, tariffs())
    certs = certify_slot(result)
    imports = {m.account: m.import_wh for m in meters}
    green_delivered_to = defaultdict(int)
    for d in result.deliveries:
        if d.green:
            green_delivered_to[d.buyer] += d.delivered_wh
    retired_by = defaultdict(int)
    for r in certs.retirements:
        retired_by[r.account] += r.units.wh
        assert r.units.batch.producer != r.account        # nobody retires units it did not receive
    for account, wh in retired_by.items():
        assert wh <= imports.get(account, 0)
        assert wh <= green_delivered_to[account]
    moved = defaultdict(int)
    for t in certs.transfers:
        moved[t.trade_id] += t.units.wh
        assert t.units.batch.producer == t.seller
    for d in result.deliveries:
        assert moved.get(d.trade_id, 0) <= (d.delivered_wh if d.green else 0)
