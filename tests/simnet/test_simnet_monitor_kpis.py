"""The live view and the KPI helpers, on hand-made node files (fast: no nodes run)."""

import io
import json
import os
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from p2pgrid.node.status import NodeStatus, write_status
from simnet.community import SOC_MAX, SOC_MIN, self_consumption
from simnet.kpis import PoolOffer, Trade, latency, welfare, welfare_with_pools
from simnet.monitor import render_live, take_snapshot


def status(name, height, root, now_ms):
    return NodeStatus(name=name, role="household", zone="sim", account="00" * 32, pid=os.getpid(), state="running",
                      listen_addrs=(), peers=3, orders_seen=4, orders_by_slot={}, rejects={}, ignored={},
                      orders_published=2, batches_received=1, market_now_ms=now_ms,
                      updated_wall_ms=time.time_ns() // 1_000_000, ledger_height=height, state_root=root)


def test_snapshot_sums_the_traders_and_counts_nodes_on_one_root(tmp_path):
    dirs = {}
    for i, (height, root) in enumerate([(5, "aa"), (5, "aa"), (4, "bb")]):
        d = tmp_path / f"n{i}"
        d.mkdir()
        write_status(d, status(f"n{i}", height, root, 1_700_000_000_000))
        (d / "agent.json").write_text(json.dumps({"executions": 2, "bought_wh": 1000, "spent_uc": 150_000,
                                                  "offers": 1, "offered_wh": 500, "soc": 0.5 + i / 10}))
        dirs[f"n{i}"] = d
    snap = take_snapshot(dirs, alive={"n0", "n1", "n2"})
    assert (snap.nodes_up, snap.trades, snap.bought_wh, snap.roots_agreeing, snap.heights) == (3, 6, 3000, 2, (4, 5))
    assert snap.avg_price == 150_000 and abs(snap.mean_soc - 0.6) < 1e-9
    assert take_snapshot(dirs, alive={"n0"}).nodes_up == 1
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render_live(snap, start_ms=1_699_999_000_000, end_ms=1_700_001_000_000, title="t", note="hi"))
    text = console.file.getvalue()
    assert "6 certified, 3.0 kWh" in text and "2/3 on one state root" in text and "avg 150 µc/Wh" in text


def trade(qty, price, request, order):
    return Trade("t" * 8, "b", "s", 0, qty, price, qty * price // 1000, 1200, request, order)


def test_welfare_is_measured_against_a_central_auction_over_the_same_orders():
    from p2pgrid.wire import Order, Side, Source

    def order(oid, side, qty, price):
        return Order(order_id=oid * 16, owner=b"\x01" * 32, side=side, zone="sim", slot=3600, qty_wh=qty,
                     limit_price=price, green=False, source=Source.NONE, created_ms=1, expiry_ms=10, nonce=1)

    orders = {(b"a" * 16).hex(): ("offer", order(b"a", Side.SELL, 1000, 100_000)),
              (b"b" * 16).hex(): ("offer", order(b"b", Side.SELL, 1000, 200_000)),
              (b"c" * 16).hex(): ("buy_request", order(b"c", Side.BUY, 1000, 250_000))}
    # The buyer took the dearer offer: half the welfare the auction finds (it matches the cheap one).
    result = welfare([trade(1000, 200_000, (b"c" * 16).hex(), (b"b" * 16).hex())], orders)
    assert result["central_nc"] == 1000 * 150_000 and result["value"] == round(50_000 / 150_000, 4)
    assert welfare([], {})["value"] is None and welfare([], {})["reason"]


def test_welfare_with_pools_counts_the_pools_on_both_sides():
    from p2pgrid.wire import Order, Side, Source

    def order(oid, side, qty, price):
        return Order(order_id=oid * 16, owner=b"\x01" * 32, side=side, zone="sim", slot=3600, qty_wh=qty,
                     limit_price=price, green=False, source=Source.NONE, created_ms=1, expiry_ms=10, nonce=1)

    offer, pool, rich, poor = ((b * 16).hex() for b in (b"a", b"p", b"c", b"d"))
    orders = {offer: ("offer", order(b"a", Side.SELL, 1000, 100_000)),
              rich: ("buy_request", order(b"c", Side.BUY, 1000, 250_000)),
              poor: ("buy_request", order(b"d", Side.BUY, 1000, 140_000))}
    pools = {pool: PoolOffer(pool, b"\x02" * 32, 3600, ask=150_000, supply_wh=1000)}
    # The rich buyer took the pool (ask 150,000), the poor one the cheap offer: 100,000 + 40,000 per kWh.
    # The auction gives the rich buyer the cheap offer (150,000) and the poor one nothing: the
    # pool's ask is above its limit.
    trades = [trade(1000, 160_000, rich, pool), trade(1000, 120_000, poor, offer)]
    result = welfare_with_pools(trades, orders, pools)
    assert (result["pool_nc"], result["book_nc"], result["central_nc"]) == (1000 * 100_000, 1000 * 40_000,
                                                                          1000 * 150_000)
    assert result["value"] == round(140 / 150, 4)
    # Book trades only, the pool out of both sides: 40,000 of the auction's 150,000.
    assert welfare(trades, orders, set(pools))["value"] == round(40 / 150, 4)
    assert welfare_with_pools([trade(1000, 1, rich, "ff" * 16)], orders, pools)["value"] is None


def test_latency_is_null_with_a_reason_when_nothing_traded():
    assert latency([])["value"] is None
    assert latency([trade(1, 1, "", "")])["p50"] == 1.2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 9000)), min_size=1, max_size=48),
       st.integers(1000, 50_000), st.sampled_from([900, 3600]))
def test_battery_never_leaves_its_band_and_only_shifts_energy(slots, capacity, slot_s):
    load = [a for a, _ in slots]
    pv = [b for _, b in slots]
    net, soc = self_consumption(load, pv, capacity, slot_s)
    assert all(SOC_MIN - 1e-4 <= s <= SOC_MAX + 1e-4 for s in soc)
    for n, l_wh, p_wh in zip(net, load, pv):
        raw = l_wh - p_wh
        assert (n >= 0) == (raw >= 0) or n == 0          # storage never turns import into export
        assert abs(n) <= abs(raw) + 1                      # nor makes the grid exchange larger
