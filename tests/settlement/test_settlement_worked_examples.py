"""Worked examples of slot settlement, every number computed by hand in the comments.

Tariff throughout: shortfall (retail) 0.30 credits/kWh = 300_000 µc/kWh, feed-in 0.08 = 80_000 µc/kWh,
grid fee north<->south 0.02 = 20_000 µc/kWh. One trade: seller S sells 1000 Wh to buyer B at
0.20 credits/kWh = 200_000 µc/kWh, so the contract is worth 1000 × 200_000 / 1000 = 200_000 µc.
"""

import pytest

from p2pgrid.errors import ConfigError
from p2pgrid.settlement.rules import (
    ConflictingRecords, GridFee, ImbalancePrices, InvalidSettlementInput, Reason, SlotPrices, Transfer,
    UnknownGridFee, ZoneTariffs, allocate_delivery, settle_slot,
)

from settlement_strategies import GATEWAY, SLOT, meter, tariffs, trade

S, B, C = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32
CONTRACT = trade(1, S, B, qty_wh=1000, price=200_000)


def nets(settlement):
    return {line.account: line.net_uc for line in settlement.lines}


def test_exact_delivery_pays_200000_uc_at_the_trade_price_and_nothing_else():
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=1000), meter(B, import_wh=1000)], tariffs())
    assert result.transfers == (Transfer(B, S, 200_000, Reason.TRADE, CONTRACT.trade_id),)
    assert nets(result) == {S: 200_000, B: -200_000, GATEWAY: 0}
    assert result.line(S).delivered_wh == 1000 and result.line(S).shortfall_wh == 0
    assert result.delivery(CONTRACT.trade_id).delivered_wh == 1000


def test_seller_shortfall_of_400_wh_pays_120000_uc_to_the_gateway():
    # S exports 600 of 1000: B drew 400 Wh from the grid; S pays 400 × 300_000 / 1000 = 120_000 µc.
    # The contract is firm: B still pays 200_000 µc. S nets 200_000 − 120_000 = 80_000.
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=600), meter(B, import_wh=1000)], tariffs())
    assert nets(result) == {S: 80_000, B: -200_000, GATEWAY: 120_000}
    assert result.line(S).shortfall_wh == 400
    assert result.line(S).paid_for(Reason.SHORTFALL) == -120_000
    assert result.delivery(CONTRACT.trade_id).delivered_wh == 600


def test_buyer_excess_import_of_500_wh_buys_150000_uc_at_retail():
    # B imports 1500 on a 1000 Wh contract: the extra 500 Wh cost 500 × 300_000 / 1000 = 150_000 µc.
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=1000), meter(B, import_wh=1500)], tariffs())
    assert nets(result) == {S: 200_000, B: -350_000, GATEWAY: 150_000}
    assert result.line(B).extra_import_wh == 500
    assert result.line(B).payments == ((Reason.TRADE, -200_000), (Reason.EXTRA_IMPORT, -150_000))


def test_seller_surplus_export_of_200_wh_is_paid_16000_uc_at_feed_in():
    # S exports 1200 on 1000 sold: 200 × 80_000 / 1000 = 16_000 µc from the gateway.
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=1200), meter(B, import_wh=1000)], tariffs())
    assert nets(result) == {S: 216_000, B: -200_000, GATEWAY: -16_000}


def test_buyer_unused_purchase_of_300_wh_is_sold_back_for_24000_uc_at_feed_in():
    # B imports 700 of 1000 bought: 300 Wh went into the grid, 300 × 80_000 / 1000 = 24_000 µc back.
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=1000), meter(B, import_wh=700)], tariffs())
    assert nets(result) == {S: 200_000, B: -176_000, GATEWAY: -24_000}


def test_missing_seller_meter_entry_is_zero_delivery_and_pays_300000_uc_shortfall():
    # No entry from S: it delivered 0 of 1000 and pays 1000 × 300_000 / 1000 = 300_000 µc.
    # S nets 200_000 − 300_000 = −100_000.
    result = settle_slot(SLOT, [CONTRACT], [meter(B, import_wh=1000)], tariffs())
    assert nets(result) == {S: -100_000, B: -200_000, GATEWAY: 300_000}
    assert result.line(S).metered is False
    assert result.delivery(CONTRACT.trade_id).delivered_wh == 0


def test_missing_buyer_meter_entry_is_zero_consumption_sold_back_at_feed_in():
    # No entry from B: it imported 0 of 1000 bought; 1000 × 80_000 / 1000 = 80_000 µc back.
    result = settle_slot(SLOT, [CONTRACT], [meter(S, export_wh=1000)], tariffs())
    assert nets(result) == {S: 200_000, B: -120_000, GATEWAY: -80_000}


def test_cross_zone_trade_pays_a_grid_fee_of_20000_uc_on_1000_delivered_wh():
    # north -> south at 20_000 µc/kWh: 1000 × 20_000 / 1000 = 20_000 µc, paid by the buyer.
    north_to_south = trade(1, S, B, qty_wh=1000, price=200_000, seller_zone="north", buyer_zone="south")
    result = settle_slot(SLOT, [north_to_south],
                         [meter(S, export_wh=1000), meter(B, import_wh=1000, zone="south")], tariffs())
    assert nets(result) == {S: 200_000, B: -220_000, GATEWAY: 20_000}
    assert Transfer(B, GATEWAY, 20_000, Reason.GRID_FEE, north_to_south.trade_id) in result.transfers


def test_cross_zone_fee_is_on_delivered_wh_only_500_wh_pay_10000_uc():
    # S delivers 500 of 1000: fee 500 × 20_000 / 1000 = 10_000; shortfall 500 × 300_000 / 1000 = 150_000.
    north_to_south = trade(1, S, B, qty_wh=1000, price=200_000, seller_zone="north", buyer_zone="south")
    result = settle_slot(SLOT, [north_to_south],
                         [meter(S, export_wh=500), meter(B, import_wh=1000, zone="south")], tariffs())
    assert nets(result) == {S: 50_000, B: -210_000, GATEWAY: 160_000}


def test_cross_zone_trade_without_a_fee_in_the_matrix_is_an_error():
    east = trade(1, S, B, qty_wh=1000, price=200_000, seller_zone="north", buyer_zone="east")
    with pytest.raises(UnknownGridFee, match="east"):
        settle_slot(SLOT, [east], [], tariffs())


def test_pro_rata_500_300_200_with_333_delivered_gives_166_100_67():
    # The module docstring's example: floors 166, 99, 66 (331); the 2 left over go to the largest
    # remainders, b (900) then c (600).
    shares = allocate_delivery(333, [(b"a", 500), (b"b", 300), (b"c", 200)])
    assert shares == {b"a": 166, b"b": 100, b"c": 67}


def test_pro_rata_ties_go_to_the_lowest_trade_id():
    # 1 Wh over two equal contracts: remainders tie, the lower id gets it.
    assert allocate_delivery(1, [(b"y", 10), (b"x", 10)]) == {b"x": 1, b"y": 0}


def test_seller_short_on_two_buyers_shares_delivery_pro_rata_through_settlement():
    # S sold 600 to B and 400 to C, exported 500: B gets 300, C gets 200; shortfall 500 Wh costs
    # 150_000 µc. Contracts: 600 × 200_000 / 1000 = 120_000 and 400 × 200_000 / 1000 = 80_000.
    trades = [trade(1, S, B, 600, 200_000), trade(2, S, C, 400, 200_000)]
    result = settle_slot(SLOT, trades, [meter(S, export_wh=500), meter(B, import_wh=600), meter(C, import_wh=400)],
                         tariffs())
    assert [d.delivered_wh for d in result.deliveries] == [300, 200]
    assert nets(result) == {S: 50_000, B: -120_000, C: -80_000, GATEWAY: 150_000}


def test_rounding_floors_each_transfer_once_333_wh_at_200001_is_66600_uc():
    # 333 × 200_001 / 1000 = 66_600.333 -> 66_600 µc, paid and received alike.
    odd = trade(1, S, B, qty_wh=333, price=200_001)
    result = settle_slot(SLOT, [odd], [meter(S, export_wh=333), meter(B, import_wh=333)], tariffs())
    assert nets(result) == {S: 66_600, B: -66_600, GATEWAY: 0}


def test_an_account_without_trades_is_settled_on_its_meter_alone():
    # C imports 100 (30_000 µc at retail) and exports 50 (4_000 µc at feed-in).
    result = settle_slot(SLOT, [], [meter(C, import_wh=100, export_wh=50)], tariffs())
    assert nets(result) == {C: -26_000, GATEWAY: 26_000}


def test_per_slot_prices_replace_the_flat_tariff():
    peak = ZoneTariffs(gateway=GATEWAY, shortfall_price=300_000, feed_in_price=0,
                       slot_prices=(SlotPrices(SLOT, ImbalancePrices(500_000, 50_000)),))
    # 100 Wh extra import at 500_000 = 50_000 µc in SLOT; at the flat 300_000 = 30_000 µc in the next.
    assert settle_slot(SLOT, [], [meter(C, import_wh=100)], peak).net(C) == -50_000
    later = SLOT + 900
    assert settle_slot(later, [], [meter(C, import_wh=100, slot=later)], peak).net(C) == -30_000


def test_feed_in_above_retail_is_refused_as_config():
    with pytest.raises(ConfigError):
        ZoneTariffs(gateway=GATEWAY, shortfall_price=10, feed_in_price=11)
    with pytest.raises(ConfigError):
        ZoneTariffs(gateway=GATEWAY, shortfall_price=10, feed_in_price=1,
                    grid_fees=(GridFee("a", "b", 1), GridFee("a", "b", 2)))


def test_two_different_trades_with_one_id_conflict():
    twin = trade(1, S, B, qty_wh=999, price=200_000)
    with pytest.raises(ConflictingRecords):
        settle_slot(SLOT, [CONTRACT, twin], [], tariffs())


def test_two_different_meter_entries_of_one_account_conflict():
    with pytest.raises(ConflictingRecords):
        settle_slot(SLOT, [], [meter(S, export_wh=1), meter(S, export_wh=2)], tariffs())


def test_records_of_another_slot_or_the_gateway_trading_are_rejected():
    with pytest.raises(InvalidSettlementInput, match="slot"):
        settle_slot(SLOT, [trade(1, S, B, 1, 1, slot=SLOT + 900)], [], tariffs())
    with pytest.raises(InvalidSettlementInput, match="slot"):
        settle_slot(SLOT, [], [meter(S, slot=SLOT + 900)], tariffs())
    with pytest.raises(InvalidSettlementInput, match="gateway"):
        settle_slot(SLOT, [trade(1, GATEWAY, B, 1, 1)], [], tariffs())


def test_malformed_trades_are_rejected_on_construction():
    with pytest.raises(InvalidSettlementInput):
        trade(1, S, S, 1, 1)
    with pytest.raises(InvalidSettlementInput):
        trade(1, S, B, 0, 1)
    with pytest.raises(InvalidSettlementInput):
        trade(1, S, B, 1, -1)
