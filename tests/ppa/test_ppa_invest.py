"""PPA money in the invest statement: the seller's positions are its own revenue stream, the
buyer's its own cost, a termination penalty its own line — and the streams still sum to the balance."""

from __future__ import annotations

import pytest

from p2pgrid.invest.statement import account_flows
from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.ppa.entries import PpaAccept, PpaOffer, PpaTerminate
from p2pgrid.ppa.terms import Shape, terms_hash
from p2pgrid.ppa.testing import make_terms
import p2pgrid.node.entry_kinds  # noqa: F401  settle_ppa
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, MeterEntryBody, SettlementLedgerRules, plan_settlement,
)
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices
from p2pgrid.units import SlotRules
from p2pgrid.wire import Source, sign

SLOTS = SlotRules()
START = 1_798_761_600
SLOT = START + 12 * 3600
FIX = LedgerFixture(zone="ppa-invest")
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(300_000, 80_000))
STATION, HOUSE = seeded_key("ppa-invest-station"), seeded_key("ppa-invest-house")
METERS = {STATION.public_key: seeded_key("ppa-invest-meter-0"), HOUSE.public_key: seeded_key("ppa-invest-meter-1")}


def test_ppa_revenue_is_its_own_stream_and_the_streams_sum_to_the_balance():
    state, entries = LedgerState(), []

    def add(key, kind, body, time_ms):
        signed = FIX.entry_on(state, key, kind, body, time_ms)
        process_entry(state, signed, FIX.rules)
        entries.append(signed)
        return signed

    sign_ms = (START - 86_400) * 1000
    for key in (STATION, HOUSE):
        add(FIX.gateway, "mint", Mint(key.public_key, 100_000_000), sign_ms)
        add(FIX.gateway, METER_REGISTRATION_KIND, MeterRegistration(
            FIX.gateway.public_key, key.public_key, METERS[key.public_key].public_key, FIX.zone, 0), sign_ms)
    terms = make_terms(STATION.public_key, HOUSE.public_key, zone=FIX.zone, start_slot=START, days=3,
                       shape=Shape.PAY_AS_PRODUCED)                        # 25 % at 0.12, 5 credits to terminate
    offer = add(STATION, "ppa_offer", PpaOffer(terms, terms_hash(terms), START * 1000), sign_ms)
    add(HOUSE, "ppa_accept", PpaAccept(terms_hash(terms), STATION.public_key, offer.body.seq), sign_ms)
    created = SLOTS.slot_end_ms(SLOT) + 10_000
    for key, imp, exp in ((STATION, 0, 8_000), (HOUSE, 2_000, 0)):
        meter = METERS[key.public_key]
        add(key, METER_KIND, MeterEntryBody(sign(MeterReading(
            account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=SLOT, import_wh=imp,
            export_wh=exp, green_wh=exp, green_source=Source.PV if exp else Source.NONE, import_total_wh=imp,
            export_total_wh=exp, created_ms=created), meter).encoded), created)
    kind, body = plan_settlement(state, FIX.rules, SLOT)
    add(FIX.gateway, kind, body, SLOTS.metering_due_ms(SLOT) + 30_000)
    add(HOUSE, "ppa_terminate", PpaTerminate(terms_hash(terms), START + 2 * 86_400),
        SLOTS.metering_due_ms(SLOT) + 60_000)

    def streams(key):
        flows = account_flows(entries, FIX.rules, key.public_key)
        totals: dict[str, int] = {}
        for flow in flows.flows:
            totals[flow.stream] = totals.get(flow.stream, 0) + flow.amount_uc
        assert sum(totals.values()) == flows.balance_uc == state.balance(key.public_key)
        return totals

    from p2pgrid.ppa.study import metered_export_wh
    assert metered_export_wh(entries, STATION.public_key) == 8_000
    station, house = streams(STATION), streams(HOUSE)
    assert station["ppa_sales"] == 240_000                      # 2000 Wh (25 % of 8000) at 0.12
    assert house["ppa_purchases"] == -240_000
    assert station["ppa_termination"] == 5_000_000 and house["ppa_termination"] == -5_000_000
    assert "other" not in station and "other" not in house
    gateway = streams(FIX.gateway)
    assert "ppa_sales" not in gateway and "ppa_purchases" not in gateway


def test_the_study_case_substitutes_the_ppa_price_for_the_realised_price_for_its_years():
    from p2pgrid.invest.statement import InvestTerms, project_cashflows
    from p2pgrid.ppa.study import PpaCase, compare_ppa

    terms = InvestTerms(capex_uc=400_000_000_000, opex_uc_per_year=5_000_000_000, lifetime_years=25,
                        degradation_per_year=0.0, discount_rate=0.05)
    base = project_cashflows(terms, 40_000_000_000)
    # 300 MWh exported a year for 24 000 credits: 0.08 credits/kWh realised (all fed in).
    streams = {"feed_in": 24_000_000_000.0, "pool_fees": 1_000_000_000.0}
    result = compare_ppa(terms, base, 300_000_000, streams, PpaCase(share_ppm=300_000, price_uc_per_kwh=120_000))
    assert result.realised_uc_per_kwh == pytest.approx(80_000)
    assert result.annual_delta_uc == pytest.approx(0.3 * 300_000 * (120_000 - 80_000))   # 3 600 credits a year
    assert result.with_ppa.cashflows[1] - base[1] == pytest.approx(result.annual_delta_uc)
    assert result.with_ppa.cashflows[10] > base[10] and result.with_ppa.cashflows[11] == base[11]
    assert result.with_ppa.npv_uc > result.without.npv_uc and result.with_ppa.irr > result.without.irr
    cheap = compare_ppa(terms, base, 300_000_000, streams, PpaCase(price_uc_per_kwh=60_000))
    assert cheap.with_ppa.npv_uc < cheap.without.npv_uc                      # a PPA below market costs value


def test_without_metered_export_the_ppa_case_changes_nothing():
    from p2pgrid.invest.statement import InvestTerms, project_cashflows
    from p2pgrid.ppa.study import PpaCase, compare_ppa

    terms = InvestTerms(capex_uc=1_000_000, opex_uc_per_year=0, lifetime_years=5, degradation_per_year=0.0,
                        discount_rate=0.05)
    base = project_cashflows(terms, 300_000)
    result = compare_ppa(terms, base, 0, {"energy_sold_book": 50_000.0}, PpaCase())
    assert result.realised_uc_per_kwh is None and result.annual_delta_uc == 0
    assert result.with_ppa.cashflows == result.without.cashflows
