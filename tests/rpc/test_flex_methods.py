"""The flexibility methods over real HTTP against the fake node, the CLI's calls and renderings."""

from __future__ import annotations

import io

from rich.console import Console

from p2pgrid.cli.flex import flex_calls, render_awards, render_offers, render_requests, render_settlements
from p2pgrid.rpc.api import (FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestStatus, FlexRequestView,
                             FlexSettlementView)
from p2pgrid.rpc.client import AsyncRpcClient
from p2pgrid.rpc.testing import FAKE_ACCOUNT, OTHER_ACCOUNT

ORDER = FlexRequestOrder(feeder="feeder-1", direction="down", first_slot=1_767_290_400, n_slots=2, qty_wh=1500,
                         price_uc_per_kwh=300_000, penalty_uc_per_kwh=100_000, offer_deadline_ms=1_767_286_800_000,
                         excluded_days=(20_453,))


def text(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


async def test_an_operator_posts_a_request_and_anyone_reads_offers_awards_and_settlements(server, node, token):
    async with AsyncRpcClient(server.url, token=token) as rpc:
        posted = await rpc.call(flex_calls.flex_request(ORDER))
        assert (posted.requester, posted.qty_wh, posted.status) == (FAKE_ACCOUNT, 1500, FlexRequestStatus.OPEN)
        assert await rpc.call(flex_calls.flex_requests()) == [posted]
        rid = posted.request_id
        mine = FlexOfferView(rid, FAKE_ACCOUNT, 150_000, (700, 500), (800, 800), 5, (700, 500))
        theirs = FlexOfferView(rid, OTHER_ACCOUNT, 200_000, (900, 900), (1000, 1000), 6, (800, 900))
        node.flex_offer_list += [mine, theirs]
        node.flex_award_list += [FlexAwardView(rid, FAKE_ACCOUNT, 150_000, (700, 500), 9),
                                 FlexAwardView(rid, OTHER_ACCOUNT, 200_000, (800, 900), 9)]
        node.flex_settlement_list.append(FlexSettlementView(rid, FAKE_ACCOUNT, (0, 1), 1200, 1200, 1200, 0, 180_000,
                                                            0, 180_000))
        assert await rpc.call(flex_calls.flex_offers(rid)) == [mine, theirs]
        assert await rpc.call(flex_calls.flex_offers()) == [mine]
        assert [a.account for a in await rpc.call(flex_calls.flex_awards())] == [FAKE_ACCOUNT]
        assert len(await rpc.call(flex_calls.flex_awards(rid))) == 2
        assert (await rpc.call(flex_calls.flex_settlements()))[0].net_uc == 180_000
        assert await rpc.call(flex_calls.flex_settlements(bytes(16))) == []
    assert node.calls["flex_request"] == 1


async def test_flex_params_are_checked_before_the_node_is_asked(http, node):
    good = {"feeder": "f", "direction": "down", "first_slot": 900, "n_slots": 1, "qty_wh": 1,
            "price_uc_per_kwh": 1, "penalty_uc_per_kwh": 0, "offer_deadline_ms": 0}
    for method, params in (("flex_request", {**good, "direction": "sideways"}),
                           ("flex_request", {**good, "n_slots": 97}),
                           ("flex_request", {**good, "qty_wh": 0}),
                           ("flex_request", {**good, "excluded_days": 5}),
                           ("flex_request", {**good, "excluded_days": [-1]}),
                           ("flex_request", {**good, "grant_seq": -2}),
                           ("flex_offers", {"request_id": "00" * 15})):
        response = await http.post("", json={"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
        assert response.json()["error"]["code"] == -32602, (method, params)
    assert "flex_request" not in node.calls and "flex_offers" not in node.calls


def test_renderings_fit_80_columns_and_say_none_when_empty():
    rid = bytes.fromhex("ab" * 16)
    request = text(render_requests([
        FlexRequestView(
            rid, FAKE_ACCOUNT, "z1", "feeder-1", "down", 1_767_290_400, 2, 1500, 300_000, 100_000,
            1_767_286_800_000, 3, 2400, FlexRequestStatus.AWARDED)]))
    assert "abababab" in request and "down 1,500×2" in request and request.rstrip().endswith("awarded")
    offers = text(render_offers([FlexOfferView(rid, FAKE_ACCOUNT, 150_000, (700, 500), (800, 800), 5, (700, 500))]))
    assert "700/500" in offers and "800/800" in offers
    awards = text(render_awards([FlexAwardView(rid, FAKE_ACCOUNT, 150_000, (700, 500), 9)]))
    assert "1,200" in awards
    settled = text(render_settlements([FlexSettlementView(rid, FAKE_ACCOUNT, (0,), 100, 0, 0, 100, 0, 10_000,
                                                          -10_000)]))
    assert "-0.010000" in settled
    for rendered in (request, offers, awards, settled):
        assert max(len(line) for line in rendered.splitlines()) <= 80
    for empty in (render_requests([]), render_offers([]), render_awards([]), render_settlements([])):
        assert "none" in text(empty)


def test_the_cli_registers_flex_requests_offers_awards_settlements_and_request():
    from p2pgrid.cli.main import build_parser
    for action in ("requests", "offers", "awards", "settlements"):
        args = build_parser().parse_args(["flex", action, "--data-dir", "d"])
        assert args.func.__name__ == f"do_{action}"
    assert build_parser().parse_args(["flex", "awards", "--data-dir", "d", "--request", "ab"]).request == "ab"
    args = build_parser().parse_args(["flex", "request", "1767290400", "2", "1500", "--price", "300000",
                                      "--deadline-ms", "1767286800000", "--data-dir", "d", "--exclude-day", "20453",
                                      "--exclude-day", "20454"])
    assert (args.first_slot, args.n_slots, args.qty_wh, args.direction, args.exclude_day, args.grant_seq) == (
        1_767_290_400, 2, 1500, "down", [20453, 20454], -1)
