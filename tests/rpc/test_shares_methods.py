"""The share methods over real HTTP against the fake node, the CLI's calls and renderings."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from p2pgrid.cli.shares import (UnknownProgrammePrefix, render_buy, render_exit, render_positions,
                                render_programmes, resolve_programme, share_calls)
from p2pgrid.rpc import errors as codes
from p2pgrid.rpc.api import ShareBuyStatus
from p2pgrid.rpc.client import AsyncRpcClient, RpcCallError
from p2pgrid.rpc.testing import FakeNode

SHARE_METHODS = {"shares_programmes", "shares_buy", "shares_exit", "shares_positions"}


def text(renderable) -> str:
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


async def test_an_lp_lists_buys_asks_to_exit_and_reads_its_positions(server, node, token):
    programme = node.add_share_programme(price_uc=2_000_000, cap_shares=5, lockup_until_slot=node.next_slot())
    async with AsyncRpcClient(server.url, token=token) as rpc:
        [listed] = await rpc.call(share_calls.shares_programmes())
        assert listed == programme
        buy = await rpc.call(share_calls.shares_buy(programme.programme_id, 3, wait_s=0))
        assert (buy.status, buy.amount_uc, buy.programme_id) == (ShareBuyStatus.ISSUED, 6_000_000,
                                                                 programme.programme_id)
        beyond = await rpc.call(share_calls.shares_buy(programme.programme_id, 3))
        assert beyond.status is ShareBuyStatus.RETURNED
        asked = await rpc.call(share_calls.shares_exit(programme.programme_id, 2))
        assert (asked.requested_shares, asked.pending_shares) == (2, 2)
        [position] = await rpc.call(share_calls.shares_positions())
        assert (position.shares, position.pending_exit_shares, position.locked) == (3, 2, True)
        with pytest.raises(RpcCallError) as beyond_held:
            await rpc.call(share_calls.shares_exit(programme.programme_id, 2))
        assert beyond_held.value.code == codes.LEDGER_ERROR
        with pytest.raises(RpcCallError) as unknown:
            await rpc.call(share_calls.shares_buy(bytes(16), 1))
        assert unknown.value.code == codes.TRADING_ERROR
    assert node.calls["share_buy"] == 3


async def test_share_params_are_checked_before_the_node_is_asked(http, node):
    for params in ({"programme_id": "00" * 15, "shares": 1}, {"programme_id": "00" * 16, "shares": 0},
                   {"programme_id": "00" * 16, "shares": 1, "wait_s": 61}):
        answer = (await http.post("", json={"jsonrpc": "2.0", "method": "shares_buy", "params": params,
                                            "id": 1})).json()
        assert answer["error"]["code"] == -32602
    assert "share_buy" not in node.calls


async def test_shares_renderings_show_each_programme_and_position(node):
    programme = node.add_share_programme(price_uc=2_000_000, cap_shares=5)
    listing = text(render_programmes([programme]))
    assert programme.programme_id.hex()[:12] in listing and "0 / 5" in listing and "open" in listing
    assert "none" in text(render_programmes([]))
    buy = await node.share_buy(programme.programme_id, 2, 0)
    assert "issued" in text(render_buy(buy))
    assert "pending" in text(render_exit(await node.share_exit(programme.programme_id, 1)))
    rows = text(render_positions(await node.share_positions()))
    assert programme.programme_id.hex()[:12] in rows and "(locked)" not in rows


def test_a_programme_is_named_by_a_unique_prefix():
    fake = FakeNode()
    listed = [fake.add_share_programme(), fake.add_share_programme()]
    first = listed[0].programme_id
    assert resolve_programme(first.hex()[:10].upper(), listed) == first
    with pytest.raises(UnknownProgrammePrefix, match="2 programmes match"):
        resolve_programme("", listed)


def test_the_cli_registers_shares_list_buy_exit_positions():
    from p2pgrid.cli.main import build_parser
    args = build_parser().parse_args(["shares", "buy", "ab12", "3", "--data-dir", "/tmp/x", "--wait", "5"])
    assert (args.programme, args.shares, args.wait, args.func.__name__) == ("ab12", 3, 5, "do_buy")
    for action in ("list", "positions"):
        assert build_parser().parse_args(["shares", action, "--data-dir", "/tmp/x"]).func.__name__ == f"do_{action}"
    assert build_parser().parse_args(["shares", "exit", "ab", "1", "--data-dir", "d"]).func.__name__ == "do_exit"
