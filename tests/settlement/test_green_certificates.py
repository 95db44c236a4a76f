"""Worked examples of granular green certificates: issue, move with delivery, retire on consumption."""

import pytest

from p2pgrid.settlement.certificates import (
    CertificateBatch, CertificateRegistry, DoubleIssue, UnitRange, certify_slot, normalize,
)
from p2pgrid.settlement.rules import settle_slot
from p2pgrid.wire import Source

from settlement_strategies import SLOT, meter, tariffs, trade

P, B, C = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def batch_of(entry):
    return CertificateBatch(entry.slot, entry.zone, entry.account, entry.entry_hash, entry.green_source)


def test_green_trade_delivered_in_full_moves_and_retires_600_units():
    # P generates 1000 green Wh and sells 600 green Wh to B, who imports 600: units [0, 600) go to B
    # and are retired there; P keeps [600, 1000) unretired.
    p_meter = meter(P, export_wh=600, green_wh=1000)
    result = settle_slot(SLOT, [trade(1, P, B, 600, 200_000, green=True)], [p_meter, meter(B, import_wh=600)], tariffs())
    certs = certify_slot(result)
    batch = batch_of(p_meter)
    assert certs.issued == (UnitRange(batch, 0, 1000),)
    assert [t.units for t in certs.transfers] == [UnitRange(batch, 0, 600)]
    assert certs.retired_by(B) == (UnitRange(batch, 0, 600),)
    assert certs.holdings_of(P) == (UnitRange(batch, 600, 1000),)
    assert certs.holdings_of(B) == ()


def test_only_delivered_wh_move_a_seller_short_by_400_moves_600_units():
    # P sold 1000 green, exported 600: 600 delivered, so 600 units move (not 1000).
    p_meter = meter(P, export_wh=600, green_wh=1000)
    certs = certify_slot(settle_slot(SLOT, [trade(1, P, B, 1000, 200_000, green=True)],
                                     [p_meter, meter(B, import_wh=1000)], tariffs()))
    assert sum(t.units.wh for t in certs.transfers) == 600


def test_a_non_green_trade_moves_no_units():
    p_meter = meter(P, export_wh=600, green_wh=1000)
    certs = certify_slot(settle_slot(SLOT, [trade(1, P, B, 600, 200_000)], [p_meter, meter(B, import_wh=600)],
                                     tariffs()))
    assert certs.transfers == () and certs.retirements == ()
    assert certs.holdings_of(P) == (UnitRange(batch_of(p_meter), 0, 1000),)


def test_buyer_retires_only_what_it_consumed_250_of_600_received():
    # B receives 600 units but imports only 250: it retires [0, 250) and holds [250, 600).
    p_meter = meter(P, export_wh=600, green_wh=600)
    certs = certify_slot(settle_slot(SLOT, [trade(1, P, B, 600, 200_000, green=True)],
                                     [p_meter, meter(B, import_wh=250)], tariffs()))
    batch = batch_of(p_meter)
    assert certs.retired_by(B) == (UnitRange(batch, 0, 250),)
    assert certs.holdings_of(B) == (UnitRange(batch, 250, 600),)


def test_green_sold_beyond_generation_moves_only_the_units_generated_in_trade_id_order():
    # P generated 500 green but delivered 800 Wh of green trades (300 to B as trade 1, 500 to C as
    # trade 2): trade 1 takes [0, 300), trade 2 the remaining [300, 500) — 200 units.
    p_meter = meter(P, export_wh=800, green_wh=500)
    trades = [trade(2, P, C, 500, 100_000, green=True), trade(1, P, B, 300, 100_000, green=True)]
    certs = certify_slot(settle_slot(SLOT, trades, [p_meter, meter(B, import_wh=300), meter(C, import_wh=500)],
                                     tariffs()))
    batch = batch_of(p_meter)
    assert [(t.buyer, t.units) for t in certs.transfers] == [(B, UnitRange(batch, 0, 300)),
                                                             (C, UnitRange(batch, 300, 500))]


def test_registry_statement_holdings_and_trace_of_one_green_wh():
    p_meter = meter(P, export_wh=600, green_wh=1000)
    certs = certify_slot(settle_slot(SLOT, [trade(1, P, B, 600, 200_000, green=True)],
                                     [p_meter, meter(B, import_wh=800)], tariffs()))
    registry = CertificateRegistry().add(certs)
    statement = registry.retirement_statement(B)
    assert (statement.consumed_wh, statement.retired_wh) == (800, 600)
    assert statement.retired_by_source() == {Source.PV: 600}
    assert registry.holdings(P) == (UnitRange(batch_of(p_meter), 600, 1000),)
    assert registry.issued_wh == 1000 and registry.retired_wh == 600
    life = registry.trace(batch_of(p_meter), 42)
    assert [t.buyer for t in life.transfers] == [B] and life.retired_by == B and life.holder is None
    unsold = registry.trace(batch_of(p_meter), 700)
    assert unsold.transfers == () and unsold.holder == P and unsold.retired_by is None
    with pytest.raises(KeyError):
        registry.trace(batch_of(p_meter), 1000)


def test_a_batch_is_never_issued_twice_but_adding_the_same_slot_again_is_a_no_op():
    p_meter = meter(P, export_wh=0, green_wh=100)
    certs = certify_slot(settle_slot(SLOT, [], [p_meter], tariffs()))
    registry = CertificateRegistry().add(certs)
    assert registry.add(certs) == registry
    # The same meter entry certified again with a different consumption picture is a double issue.
    again = certify_slot(settle_slot(SLOT, [], [p_meter, meter(B, import_wh=5)], tariffs()))
    with pytest.raises(DoubleIssue):
        registry.add(again)


def test_normalize_merges_touching_ranges_and_refuses_overlap():
    batch = CertificateBatch(SLOT, "north", P, b"h", Source.PV)
    assert normalize([UnitRange(batch, 5, 9), UnitRange(batch, 0, 5)]) == [UnitRange(batch, 0, 9)]
    with pytest.raises(ValueError):
        normalize([UnitRange(batch, 0, 5), UnitRange(batch, 4, 9)])
    with pytest.raises(ValueError):
        UnitRange(batch, 3, 3)
