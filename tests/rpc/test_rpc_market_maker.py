"""The example market-maker bot: its pure quoting rules, and real runs against the RPC server."""

from __future__ import annotations

import sys

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.rpc.api import BookLevel, BookSnapshot, OrderStatus, PoolView, TradeView, Venue
from p2pgrid.rpc.client import RpcClient
from p2pgrid.rpc.testing import FAKE_ACCOUNT, OTHER_ACCOUNT
from p2pgrid.wire import Side
from simnet.bots.market_maker import (MakerParams, Quote, inventory_wh, plan_quotes, reference_price,
                                      run)


def book(bids=(), asks=()):
    return BookSnapshot("z1", 900, 1, tuple(BookLevel(p, 100, 1) for p in bids),
                        tuple(BookLevel(p, 100, 1) for p in asks))


def pool(energy_wh, price, frozen=False):
    return PoolView(b"\x01" * 16, OTHER_ACCOUNT, "z1", 900, energy_wh, energy_wh * price // 1000, 3000, price, frozen)


def test_reference_prefers_pools_weighted_by_energy():
    assert reference_price(book([100], [300]), [pool(1000, 200_000), pool(3000, 240_000)]) == 230_000


def test_reference_falls_back_to_book_mid_then_one_side_then_none():
    assert reference_price(book([200_000], [260_000]), [pool(1000, 1, frozen=True)]) == 230_000
    assert reference_price(book([], [260_000]), []) == 260_000
    assert reference_price(book(), []) is None


def test_flat_inventory_quotes_symmetrically():
    assert plan_quotes(250_000, 0, MakerParams(spread_ppm=20_000, quote_wh=500)) == [
        Quote(Side.BUY, 500, 247_500), Quote(Side.SELL, 500, 252_500)]


def test_long_inventory_lowers_both_quotes_and_shrinks_the_bid():
    params = MakerParams(spread_ppm=20_000, quote_wh=500, max_inventory_wh=1000, skew_ppm=10_000)
    bid, ask = plan_quotes(250_000, 800, params)
    assert (bid.qty_wh, ask.qty_wh) == (200, 500)
    assert (bid.price, ask.price) == (247_500 - 2_000, 252_500 - 2_000)


def test_at_the_inventory_limit_only_the_reducing_side_is_quoted():
    params = MakerParams(quote_wh=500, max_inventory_wh=1000)
    assert [q.side for q in plan_quotes(250_000, 1000, params)] == [Side.SELL]
    assert [q.side for q in plan_quotes(250_000, -1000, params)] == [Side.BUY]


@settings(max_examples=200, deadline=None)
@given(reference=st.integers(1, 10**9), inventory=st.integers(-20_000, 20_000),
       quote_wh=st.integers(1, 5_000), limit=st.integers(1, 10_000), spread=st.integers(0, 500_000))
def test_a_full_fill_never_takes_inventory_past_the_limit(reference, inventory, quote_wh, limit, spread):
    params = MakerParams(spread_ppm=spread, quote_wh=quote_wh, max_inventory_wh=limit)
    for q in plan_quotes(reference, inventory, params):
        after = inventory + (q.qty_wh if q.side is Side.BUY else -q.qty_wh)
        if abs(inventory) <= limit:
            assert abs(after) <= limit
        else:                           # beyond the limit: only quotes that reduce it
            assert abs(after) < abs(inventory)
        assert q.price > 0 and q.qty_wh > 0
    quotes = {q.side: q.price for q in plan_quotes(reference, inventory, params)}
    if len(quotes) == 2:
        assert quotes[Side.BUY] <= quotes[Side.SELL]


def test_inventory_counts_only_this_account_zone_and_slot():
    def trade(buyer, seller, qty, slot=900):
        return TradeView(b"t", b"o", buyer, seller, "z1", slot, qty, 1, 1, Venue.BOOK, True, 0)
    trades = [trade(FAKE_ACCOUNT, OTHER_ACCOUNT, 700), trade(OTHER_ACCOUNT, FAKE_ACCOUNT, 200),
              trade(FAKE_ACCOUNT, OTHER_ACCOUNT, 999, slot=1800), trade(OTHER_ACCOUNT, OTHER_ACCOUNT, 50)]
    assert inventory_wh(trades, FAKE_ACCOUNT, "z1", 900) == 500


async def test_two_rounds_against_the_server_replace_quotes_around_the_pool_price(server, node, token):
    said = []

    def two_rounds():
        with RpcClient(server.url, token=token) as client:
            return run(client, zone=None, slot=None, params=MakerParams(), rounds=2, interval_s=0,
                       say=said.append, sleep=lambda _s: None)

    live = await trio.to_thread.run_sync(two_rounds)
    mine = [o for o in node.orders.values() if o.owner == FAKE_ACCOUNT]
    assert len(mine) == 4 and len(live) == 2
    assert [o.status for o in mine] == [OrderStatus.CANCELLED] * 2 + [OrderStatus.OPEN] * 2
    assert {(o.side, o.limit_price) for o in mine[2:]} == {(Side.BUY, 247_500), (Side.SELL, 252_500)}
    assert "ref 250000" in said[-1]


async def test_bot_runs_as_a_module_from_the_command_line(server, node, token, tmp_path):
    token_file = tmp_path / "rpc.token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "simnet.bots.market_maker", "--rpc", server.url, "--token-file",
             str(token_file), "--rounds", "1"], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr
    assert b"buy 500 Wh @ 247500" in done.stdout
    assert sum(o.owner == FAKE_ACCOUNT for o in node.orders.values()) == 2


async def test_bot_with_a_wrong_token_fails_with_one_line(server, tmp_path):
    token_file = tmp_path / "rpc.token"
    token_file.write_text("not-the-token-not-the-token")
    token_file.chmod(0o600)
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "simnet.bots.market_maker", "--rpc", server.url, "--token-file",
             str(token_file), "--rounds", "1"], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == [
        "market_maker: missing or wrong bearer token (code -32001)"]


@pytest.mark.parametrize("bad", [dict(quote_wh=0), dict(max_inventory_wh=0), dict(spread_ppm=-1)])
def test_params_reject_nonsense(bad):
    with pytest.raises(ValueError):
        MakerParams(**bad)
