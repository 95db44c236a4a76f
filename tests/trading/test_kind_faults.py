"""Fault tests of the kinds with a time limit that live outside ``chain.py`` — the pools' BUY
``swap`` and ``swap_decline``, the charging ``charge_bill``, the shares' ``share_issue`` and
``share_redeem`` — on real ``LedgerService`` nodes (memory transport, one clock stepped by hand;
``p2pgrid.ledger.cluster_testing``). The ledger-level faults (meter, lock, fill, release, decline,
settle) are in ``tests/ledger/test_ledger_faults.py``.

Each entry is dated on one side of its limit, two of the four validators are held away from the
proposer (no quorum: it stays in doubt), the clock is moved far across the limit, and the
validators are let back: every limit is judged on the entry's signed ``time_ms``, never on when a
validator looks, so the entry is certified (or, dated on the wrong side, refused for good) and the
chain moves on. Each test ends with both honest chains' heads advancing, one state root
everywhere and money conserved."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

import p2pgrid.node.entry_kinds  # noqa: F401  every node validates every kind
from p2pgrid.charging.rules import (
    CHARGE_BILL_KIND, CHARGE_START_KIND, CHARGE_TARIFF_KIND, ChargeReading, ChargeStart, ChargeTariff,
    next_tariff_id, plan_charge_bill, plan_charge_start, session_of, tariff_of,
)
from p2pgrid.ledger.chain import LedgerState, LockStatus
from p2pgrid.ledger.cluster_testing import T0, Cluster, certified, open_fault_cluster, submit, submit_in_doubt
from p2pgrid.ledger.committee import seq_key
from p2pgrid.ledger.messages import Burn, Entry, Lock, Mint, Release, entry_hash
from p2pgrid.ledger.service import BatchRejected, LedgerConfig, LedgerService
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.entries import SettlementLedgerRules
from p2pgrid.pools.entries import (
    POOL_OPEN_KIND, SWAP_DECLINE_KIND, SWAP_KIND, PoolOpen, SwapDecline, compute_pool_id, compute_swap, plan_swap,
    swap_record, with_request,
)
from p2pgrid.pools.messages import SwapRefuseReason, SwapRequest
from p2pgrid.shares.rules import (
    SHARE_BUY_KIND, SHARE_ISSUE_KIND, SHARE_OFFER_KIND, SHARE_REDEEM_KIND, ShareBuy, ShareOffer, buy_of,
    next_programme_id, plan_share_buy, plan_share_issue, plan_share_redeem, programme_of,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Side, Signed, sign

FX = LedgerFixture()
SLOTS = SlotRules()
RULES = SettlementLedgerRules(FX.zone, FX.gateway.public_key, 0, slots=SLOTS)   # the zone's slot calendar
CONFIG = LedgerConfig(RULES, FX.committee, vote_timeout_s=1.0, sync_interval_s=0.5)
HOST, TRADER = seeded_key("kind-faults-host"), seeded_key("kind-faults-trader")   # host/station; trader/driver/LP
CONNECTOR = seeded_key("kind-faults-connector")
FUNDS = 100_000_000
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000

SLOT = SLOTS.tradable_slots(T0)[2]
GATE = SLOTS.gate_closure_ms(SLOT)                  # the pool freezes here
SWAP_ID = b"swap-request-001"
CHARGE_PRICE = 450_000                              # µc/kWh
SHARE_PRICE = 1_000_000                             # µc per share
SALE_UNTIL = T0 + 10 * MINUTE
LOCKUP_SLOT = SLOTS.slot_of(T0) + 4 * SLOTS.length_s
LOCKUP_MS = LOCKUP_SLOT * 1000                      # no redemption dated before this


# --- the cluster and its faults ------------------------------------------------------------------

async def open_cluster(tmp: Path, nursery: trio.Nursery) -> Cluster:
    """Four validators, the gateway, the host and the trader, with FUNDS µc each."""
    cluster = await open_fault_cluster(tmp, nursery, FX, CONFIG, {"host": HOST, "trader": TRADER})
    gateway = cluster["gateway"]
    for who in (HOST, TRADER):
        await submit(gateway, gateway.next_entry("mint", Mint(who.public_key, FUNDS)))
    await everywhere(cluster, lambda s: s.balance(HOST.public_key) == s.balance(TRADER.public_key) == FUNDS)
    return cluster


async def hold(cluster: Cluster, name: str, validators: list[str]) -> None:
    """Cut ``name`` off from ``validators``, the vote streams it opened to them before included."""
    cluster.partition(name, validators)
    await trio.testing.wait_all_tasks_blocked()   # the closed streams' ends have noticed


async def everywhere(cluster: Cluster, check) -> None:
    """Wait until ``check(state)`` holds on every node."""
    with trio.fail_after(60):
        await wait_until(lambda: all(check(m.service.state) for m in cluster.members.values()))


async def voted_by(cluster: Cluster, entry: Signed[Entry], validators: list[str]) -> None:
    """Wait until each of ``validators`` has recorded its vote for ``entry``."""
    key, voted = seq_key(entry.body), entry_hash(entry)
    with trio.fail_after(30):
        await wait_until(lambda: all(cluster[v]._voted.get(key) == voted for v in validators))


async def moves_on(cluster: Cluster, *names: str) -> None:
    """Each named chain certifies one more entry: its head advances."""
    for name in names:
        service = cluster[name]
        before = service.head().next_seq
        entry = service.next_entry("burn", Burn(1))
        assert entry.body.seq == before, "nothing of this chain is left in doubt"
        await submit(service, entry)
        assert service.head().next_seq == before + 1


def lock_status(take_id: bytes, status: LockStatus):
    return lambda s: take_id in s.locks and s.locks[take_id].status is status


async def refused_for_good(service: LedgerService, entry: Signed[Entry], reason: str) -> None:
    """``entry`` is refused (here: on the owner's own certified state, before any validator is bound
    to it) and leaves no gap: the owner's next entry takes its seq."""
    with pytest.raises(BatchRejected, match=reason):
        await service.submit(entry)
    assert not service.is_in_doubt(entry)
    assert service.head().next_seq == entry.body.seq


async def _submit_ignoring_the_kill(service: LedgerService, entry: Signed[Entry]) -> None:
    try:
        await service.submit(entry)
    except BatchRejected:
        pass


# --- pools: BUY swap and swap_decline ------------------------------------------------------------

async def open_pool(cluster: Cluster) -> bytes:
    host = cluster["host"]
    pool_id = compute_pool_id(HOST.public_key, FX.zone, SLOT)
    await submit(host, host.next_entry(POOL_OPEN_KIND, PoolOpen(
        pool_id=pool_id, slot=SLOT, energy_wh=2_000, credits_uc=400_000, fee_bps=30, energy_cap_wh=5_000,
        self_discharge_ppm_per_h=0, conversion_loss_w=0, at_ms=cluster.clock.now)))
    await everywhere(cluster, lambda s: pool_id in s.pools)
    return pool_id


def buy_request(pool_id: bytes, energy_wh: int, limit_uc: int, expires_ms: int) -> Signed[SwapRequest]:
    return sign(SwapRequest(request_id=SWAP_ID, trader=TRADER.public_key, host=HOST.public_key, pool_id=pool_id,
                            zone=FX.zone, slot=SLOT, side=Side.BUY, energy_wh=energy_wh, limit_uc=limit_uc,
                            expires_ms=expires_ms), TRADER)


async def lock_for(cluster: Cluster, request: Signed[SwapRequest], deadline_ms: int) -> None:
    """The trader escrows the request's limit for the host's pool (certified everywhere)."""
    trader, body = cluster["trader"], request.body
    await submit(trader, trader.next_entry("lock", Lock(
        take_id=body.request_id, seller=HOST.public_key, order_id=body.pool_id, order_owner=HOST.public_key,
        order_size_wh=body.energy_wh, qty_wh=body.energy_wh, price=body.limit_uc * 1000 // body.energy_wh,
        amount=body.limit_uc, deadline_ms=deadline_ms, slot=SLOT)))
    await everywhere(cluster, lambda s: body.request_id in s.locks)


async def test_a_buy_swap_dated_before_its_limits_is_certified_when_voted_a_day_after_them(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        host, trader = cluster["host"], cluster["trader"]
        pool_id = await open_pool(cluster)
        at = GATE - 1                  # one ms before the lock's deadline, the request's expiry and gate closure
        _, quote = compute_swap(host.state.pools[pool_id].pool, Side.BUY, 300, at)
        request = buy_request(pool_id, 300, quote.credits_uc + 1_000, expires_ms=GATE)
        await lock_for(cluster, request, deadline_ms=GATE)
        cluster.clock.now = at
        body = with_request(plan_swap(host.state.pools[pool_id], request.body, HOST.public_key, FX.zone, at), request)
        await hold(cluster, "host", ["v2", "v3"])
        swap = host.next_entry(SWAP_KIND, body)
        assert swap.body.time_ms == at
        await submit_in_doubt(host, swap)
        await voted_by(cluster, swap, ["v0", "v1"])          # two votes before the limits…
        cluster.clock.now = GATE + DAY                       # …and the other two a day after them
        await cluster.heal()
        await certified(host, HOST.public_key, swap.body.seq)
        await everywhere(cluster, lock_status(SWAP_ID, LockStatus.FILLED))
        record = swap_record(host.state, SWAP_ID)
        assert (record.energy_wh, record.credits_uc) == (300, quote.credits_uc)
        assert host.balance() == FUNDS + quote.credits_uc
        assert trader.balance() == FUNDS - quote.credits_uc      # the slack came back with the swap
        # the trader can never take the consumed lock back
        await refused_for_good(trader, trader.next_entry("release", Release(SWAP_ID)), "lock_closed")
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_a_swap_decline_after_the_deadline_returns_the_lock_and_a_later_release_is_a_no_op(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        host, trader = cluster["host"], cluster["trader"]
        pool_id = await open_pool(cluster)
        deadline = T0 + MINUTE
        await lock_for(cluster, buy_request(pool_id, 300, 200_000, expires_ms=GATE), deadline_ms=deadline)
        assert trader.balance() == FUNDS - 200_000
        cluster.clock.now = deadline + 10 * MINUTE                # ten minutes after the lock's deadline
        await hold(cluster, "host", ["v2", "v3"])
        decline = host.next_entry(SWAP_DECLINE_KIND, SwapDecline(
            swap_id=SWAP_ID, pool_id=pool_id, trader=TRADER.public_key, reason=SwapRefuseReason.EXPIRED.value))
        await submit_in_doubt(host, decline)
        await voted_by(cluster, decline, ["v0", "v1"])
        cluster.clock.now += DAY
        await cluster.heal()
        await certified(host, HOST.public_key, decline.body.seq)
        await everywhere(cluster, lock_status(SWAP_ID, LockStatus.RELEASED))
        assert trader.balance() == FUNDS                         # the whole lock came back
        assert host.balance() == FUNDS
        record = host.state.pools[pool_id]
        assert (record.version, record.swaps) == (0, 0), "the pool is untouched"
        # the host's chain is dated past the deadline now: the buyer's release is valid, and a no-op
        release = trader.next_entry("release", Release(SWAP_ID))
        await submit(trader, release)
        assert trader.head().next_seq == release.body.seq + 1
        assert trader.balance() == FUNDS
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()


# --- charging: charge_bill -----------------------------------------------------------------------

async def open_session(cluster: Cluster, deadline_ms: int) -> ChargeStart:
    """The station's tariff and the driver's escrow for a session of at most 20 kWh, plugged in now."""
    station, driver = cluster["host"], cluster["trader"]
    tariff_id = next_tariff_id(station.state, HOST.public_key, FX.zone)
    await submit(station, station.next_entry(CHARGE_TARIFF_KIND, ChargeTariff(
        tariff_id=tariff_id, zone=FX.zone, price_uc_per_kwh=CHARGE_PRICE, charger_keys=(CONNECTOR.public_key,),
        max_power_w=11_000, max_session_wh=60_000, until_ms=T0 + 30 * DAY)))
    await everywhere(cluster, lambda s: tariff_of(s, tariff_id) is not None)
    start = plan_charge_start(tariff_of(driver.state, tariff_id), TRADER.public_key, 20_000,
                              driver.head().next_seq, cluster.clock.now, deadline_ms)
    await submit(driver, driver.next_entry(CHARGE_START_KIND, start))
    await everywhere(cluster, lambda s: session_of(s, start.session_id) is not None)
    assert driver.balance() == FUNDS - start.amount_uc
    return start


def bill_for(state: LedgerState, start: ChargeStart, delivered_wh: int, ended_ms: int):
    reading = sign(ChargeReading(charger_key=CONNECTOR.public_key, station=HOST.public_key,
                                 session_id=start.session_id, meter_start_wh=0, meter_stop_wh=delivered_wh,
                                 started_ms=start.plugged_in_ms, ended_ms=ended_ms), CONNECTOR)
    return plan_charge_bill(state, reading)


async def billed_everywhere(cluster: Cluster, start: ChargeStart, delivered_wh: int) -> None:
    amount = trade_value(delivered_wh, CHARGE_PRICE)
    await everywhere(cluster, lambda s: (session := session_of(s, start.session_id)) is not None and session.billed)
    session = session_of(cluster["host"].state, start.session_id)
    assert (session.delivered_wh, session.amount_uc) == (delivered_wh, amount)
    assert cluster["host"].state.locks[start.session_id].status is LockStatus.FILLED
    assert cluster["host"].balance() == FUNDS + amount
    assert cluster["trader"].balance() == FUNDS - amount        # the rest of the escrow came back


async def test_a_charge_bill_dated_before_the_escrow_deadline_is_certified_when_voted_after_it(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        station, driver = cluster["host"], cluster["trader"]
        deadline = T0 + 2 * HOUR
        start = await open_session(cluster, deadline)
        cluster.clock.now = deadline - 1
        await hold(cluster, "host", ["v2", "v3"])
        bill = station.next_entry(CHARGE_BILL_KIND, bill_for(station.state, start, 12_345, deadline - 1_000))
        await submit_in_doubt(station, bill)
        await voted_by(cluster, bill, ["v0", "v1"])
        cluster.clock.now = deadline + DAY
        await cluster.heal()
        await certified(station, HOST.public_key, bill.body.seq)
        await billed_everywhere(cluster, start, 12_345)
        await refused_for_good(driver, driver.next_entry("release", Release(start.session_id)), "lock_closed")
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()


async def test_a_station_killed_after_storing_its_bill_offers_the_same_bill_after_the_deadline(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        member, driver = cluster.members["host"], cluster["trader"]
        station = member.service
        deadline = T0 + 2 * HOUR
        start = await open_session(cluster, deadline)
        stored = trio.Event()
        original = station.store.save_proposals

        async def stored_then_killed(*args, **kwargs):
            result = await original(*args, **kwargs)
            stored.set()
            await trio.sleep_forever()        # the kill lands here: stored, no vote asked for yet
            return result
        station.store.save_proposals = stored_then_killed
        cluster.clock.now = deadline - 1
        bill = station.next_entry(CHARGE_BILL_KIND, bill_for(station.state, start, 9_000, deadline - 1_000))
        nursery.start_soon(_submit_ignoring_the_kill, station, bill)
        with trio.fail_after(30):
            await stored.wait()
        await member.kill()
        cluster.clock.now = deadline + DAY     # back a day after the deadline: every vote comes after it
        station = await member.start()         # same key, same store
        await certified(station, HOST.public_key, bill.body.seq)
        certified_bill = await station.store.get_entry(HOST.public_key, bill.body.seq)
        assert entry_hash(certified_bill) == entry_hash(bill), "a second entry was signed at the bill's seq"
        await billed_everywhere(cluster, start, 9_000)
        await refused_for_good(driver, driver.next_entry("release", Release(start.session_id)), "lock_closed")
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()


# --- shares: share_issue and share_redeem --------------------------------------------------------

async def open_programme(cluster: Cluster) -> bytes:
    host = cluster["host"]
    programme_id = next_programme_id(host.state, HOST.public_key, FX.zone)
    await submit(host, host.next_entry(SHARE_OFFER_KIND, ShareOffer(
        programme_id=programme_id, zone=FX.zone, price_uc=SHARE_PRICE, fee_share_bps=5_000,
        lockup_until_slot=LOCKUP_SLOT, cap_shares=100, sale_until_ms=SALE_UNTIL, residents_only=False)))
    await everywhere(cluster, lambda s: programme_of(s, programme_id) is not None)
    return programme_id


async def buy_shares(cluster: Cluster, programme_id: bytes, shares: int, deadline_ms: int) -> ShareBuy:
    lp = cluster["trader"]
    body = plan_share_buy(programme_of(lp.state, programme_id), TRADER.public_key, shares, lp.head().next_seq,
                          deadline_ms)
    await submit(lp, lp.next_entry(SHARE_BUY_KIND, body))
    await everywhere(cluster, lambda s: buy_of(s, body.buy_id) is not None)
    assert lp.balance() == FUNDS - body.amount_uc
    return body


def holds(programme_id: bytes, shares: int):
    def check(state: LedgerState) -> bool:
        programme = programme_of(state, programme_id)
        held = programme.holding(TRADER.public_key) if programme is not None else None
        return held is not None and held.shares == shares
    return check


async def test_a_share_issue_dated_before_the_buys_deadline_is_certified_when_voted_after_it(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        host, lp = cluster["host"], cluster["trader"]
        programme_id = await open_programme(cluster)
        deadline = T0 + MINUTE
        buy = await buy_shares(cluster, programme_id, 3, deadline)
        cluster.clock.now = deadline - 1
        await hold(cluster, "host", ["v2", "v3"])
        issue = host.next_entry(SHARE_ISSUE_KIND, plan_share_issue(host.state, buy.buy_id))
        await submit_in_doubt(host, issue)
        await voted_by(cluster, issue, ["v0", "v1"])
        cluster.clock.now = deadline + DAY                     # after the deadline and the sale's close
        await cluster.heal()
        await certified(host, HOST.public_key, issue.body.seq)
        await everywhere(cluster, holds(programme_id, 3))
        await everywhere(cluster, lock_status(buy.buy_id, LockStatus.FILLED))
        assert host.balance() == FUNDS + 3 * SHARE_PRICE and lp.balance() == FUNDS - 3 * SHARE_PRICE
        await refused_for_good(lp, lp.next_entry("release", Release(buy.buy_id)), "lock_closed")
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()


def record_rejections(service: LedgerService) -> list[str]:
    """The reasons ``service`` (a validator) gives from now on for not voting."""
    reasons: list[str] = []
    original = service.handle_vote_request

    async def recording(request, peer=None):
        reply = await original(request, peer)
        reasons.extend(r.reason for r in reply.rejections)
        return reply
    service.handle_vote_request = recording
    return reasons


async def test_a_share_redeem_is_judged_on_its_own_date_against_the_lockup(tmp_path):
    async with trio.open_nursery() as nursery:
        cluster = await open_cluster(tmp_path, nursery)
        host, lp = cluster["host"], cluster["trader"]
        programme_id = await open_programme(cluster)
        buy = await buy_shares(cluster, programme_id, 3, T0 + MINUTE)
        await submit(host, host.next_entry(SHARE_ISSUE_KIND, plan_share_issue(host.state, buy.buy_id)))
        await everywhere(cluster, holds(programme_id, 3))
        redeem_body = plan_share_redeem(programme_of(host.state, programme_id), TRADER.public_key, 3)

        # Dated one ms inside the lock-up: refused for good, and still refused when judged a day later.
        cluster.clock.now = LOCKUP_MS - 1
        early = host.next_entry(SHARE_REDEEM_KIND, redeem_body)
        await refused_for_good(host, early, "locked_up")
        cluster.clock.now = LOCKUP_MS + DAY
        await refused_for_good(host, early, "locked_up")

        # Dated at the lock-up's end, voted by validators whose clocks still read inside the lock-up.
        cluster.clock.now = LOCKUP_MS
        redeem = host.next_entry(SHARE_REDEEM_KIND, redeem_body)
        assert (redeem.body.seq, redeem.body.time_ms) == (early.body.seq, LOCKUP_MS)
        cluster.clock.now = LOCKUP_MS - 3_000                 # behind the host, within the skew: judged now
        await hold(cluster, "host", ["v2", "v3"])
        await submit_in_doubt(host, redeem)
        await voted_by(cluster, redeem, ["v0", "v1"])
        # The other two come back with clocks further behind than the skew: they wait, never refuse.
        cluster.clock.now = LOCKUP_MS - 2 * RULES.clock_skew_ms
        waiting = [record_rejections(cluster[v]) for v in ("v2", "v3")]
        await cluster.heal()
        with trio.fail_after(30):
            await wait_until(lambda: all("not_yet" in reasons for reasons in waiting))
        assert host.is_in_doubt(redeem) and host.head().next_seq == redeem.body.seq
        assert all(reason == "not_yet" for reasons in waiting for reason in reasons)
        cluster.clock.now = LOCKUP_MS + DAY
        await certified(host, HOST.public_key, redeem.body.seq)
        await everywhere(cluster, holds(programme_id, 0))
        assert lp.balance() == FUNDS and host.balance() == FUNDS     # principal back at par
        await moves_on(cluster, "host", "trader")
        await cluster.converge()
        nursery.cancel_scope.cancel()
