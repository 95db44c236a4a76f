"""A PPA end to end on an in-memory cluster of four nodes: the station drafts a pay-as-produced
agreement from the TOML template and offers it, the household accepts it, both store its text, the
meters read a whole day of slots (one of them cloudy) and the operator's settlement service
settles every slot with the agreement before spot — every node ends with the same state root."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone

import pytest
import trio

import p2pgrid.node.entry_kinds  # noqa: F401  every kind a node validates, settle_ppa included
from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.ppa.entries import agreement_of, expired_key, offers_of
from p2pgrid.ppa.execution import ppa_trade_id
from p2pgrid.ppa.service import PpaService
from p2pgrid.ppa.terms import TEMPLATE_TOML, parse_terms_toml
from p2pgrid.settlement.entries import settled_inputs, settlement_of
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.settlement.service import MeterService, SettlementService, register_meters
from p2pgrid.trading.testing import ZONE, fund, open_trading_cluster
from p2pgrid.units import trade_value
from p2pgrid.wire import Source

STATION, HOUSE = 1, 2
RETAIL, FEED_IN = 300_000, 80_000
SLOTS_PER_DAY = 96
HOUSE_WH = 400                                    # the household imports this much every slot
PRICE = 120_000                                   # the template's 0.12 credits/kWh


class SteppedClock:
    """Market time that only moves when the test says so (Unix ms)."""

    def __init__(self) -> None:
        self.now_ms = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        return self.now_ms


def station_export_wh(index: int) -> int:
    """PV export in the day's ``index``-th slot: a bell from 06:00 to 18:00, one cloudy slot at noon."""
    if not 24 <= index < 72:
        return 0
    export = 4_000 - abs(index - 48) * 160
    return export // 10 if index == 48 else export


def drafted(station: bytes, house: bytes, start_s: int) -> str:
    start = datetime.fromtimestamp(start_s, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = datetime.fromtimestamp(start_s + 86_400, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (TEMPLATE_TOML.replace("<seller account, 64 hex digits>", station.hex())
            .replace("<buyer account, 64 hex digits>", house.hex()).replace("<seller account>", station.hex())
            .replace("<zone>", ZONE).replace("2027-01-01T00:00:00Z", start).replace("2037-01-01T00:00:00Z", end)
            .replace('share_percent = "25"', 'share_percent = "50"').replace("notice_days = 90", "notice_days = 1"))


async def converge(nodes) -> None:
    with trio.fail_after(60):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({n.ledger.state_root() for n in nodes}) == 1)
    assert all(n.ledger.state_root() == state_root(n.ledger.state) for n in nodes)


@pytest.mark.slow
async def test_a_ppa_is_drafted_accepted_delivered_for_a_day_and_settled_with_equal_roots(tmp_path):
    clock = SteppedClock()
    async with open_trading_cluster("memory", 4, tmp_path, clock=clock,
                                    settlement_prices=ImbalancePrices(RETAIL, FEED_IN)) as nodes:
        operator, station, house = nodes[0], nodes[STATION], nodes[HOUSE]
        rules = operator.trading.config.slot_rules
        await fund(nodes, 50_000_000)
        meter_keys = {n.account: seeded_key(f"ppa-cluster-meter-{i}") for i, n in enumerate(nodes) if i > 0}
        with trio.fail_after(30):
            await register_meters(operator.ledger, ((a, k.public_key) for a, k in meter_keys.items()), clock())

        # Drafted from the template, offered by the station, accepted by the household.
        start = rules.slot_of(clock()) + 2 * rules.length_s
        terms = parse_terms_toml(drafted(station.account, house.account, start))
        sellers, buyers = PpaService(station.ledger, tmp_path / "station"), PpaService(house.ledger, tmp_path / "house")
        with trio.fail_after(30):
            ppa_id = await sellers.offer(terms)
            await wait_until(lambda: bool(offers_of(house.ledger.state, ppa_id)))
            await buyers.accept(ppa_id)
            await wait_until(lambda: all(agreement_of(n.ledger.state, ppa_id) is not None for n in nodes))
        texts = [(tmp_path / who / "ppa" / f"{ppa_id.hex()}.md").read_bytes() for who in ("station", "house")]
        assert texts[0] == texts[1] and hashlib.sha256(texts[0]).digest() == ppa_id

        # A day of metered delivery: one clock step per slot reads that slot and settles the one before.
        slots = [start + i * rules.length_s for i in range(SLOTS_PER_DAY)]
        energy = {station.account: lambda s: (0, station_export_wh((s - start) // rules.length_s), 0, Source.PV),
                  house.account: lambda s: (HOUSE_WH, 0, 0, Source.NONE)}
        meters = [MeterService(n.ledger, meter_keys[n.account], rules,
                               lambda s, a=n.account: energy[a](s) if s in slots else None, clock, poll_s=0.01)
                  for n in (station, house)]
        settler = SettlementService(operator.ledger, clock, poll_s=0.01)
        async with trio.open_nursery() as nursery:
            for service in (*meters, settler):
                await nursery.start(service.run)
            for i, slot in enumerate([*slots, slots[-1] + rules.length_s]):
                clock.now_ms = rules.slot_end_ms(slot) + 10_000        # past the previous slot's due + W
                with trio.fail_after(60):
                    await wait_until(lambda: all(m.submitted[-1:] == [slot] for m in meters) or slot not in slots)
                    if i:
                        await wait_until(lambda: settlement_of(operator.ledger.state, slots[i - 1]) is not None)
            # A reading that reached the operator after its slot was settled is reconciled.
            metered = {station.account, house.account}
            with trio.fail_after(60):
                await wait_until(lambda: all({m.account for m in settlement_of(operator.ledger.state, s).meter_entries}
                                             == metered for s in slots))
            nursery.cancel_scope.cancel()
        await converge(nodes)

        assert all(ppa_id in settled_inputs(house.ledger.state, s).contracts for s in slots)   # settle_ppa
        assert station_export_wh(48) // 2 == 200                       # the cloudy noon slot: 200 Wh only
        paid = 0
        for index, slot in enumerate(slots):
            settled = settlement_of(house.ledger.state, slot)
            position = station_export_wh(index) // 2                  # 50 % of the export
            if position:
                assert settled.delivery(ppa_trade_id(ppa_id)).delivered_wh == position
            paid -= settled.line(house.account).paid_for(Reason.PPA)
        assert paid == sum(trade_value(station_export_wh(i) // 2, PRICE) for i in range(SLOTS_PER_DAY))
        assert all(n.ledger.state.money_total() == 0 for n in nodes)

        # The term is over: each party's service closes the agreement by itself (the seller's share
        # claim of its generator is released), once, and every node holds both closings.
        assert clock() >= terms.end_slot * 1000
        with trio.fail_after(60):
            assert await sellers.close_ended() == 1 and await buyers.close_ended() == 1
        await converge(nodes)
        assert all(expired_key(ppa_id, party) in n.ledger.state.extra
                   for n in nodes for party in (station.account, house.account))
        assert sellers.due_expiries(clock()) == [] and buyers.due_expiries(clock()) == []
