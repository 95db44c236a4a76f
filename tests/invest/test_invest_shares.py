"""Pool shares in statements: LP fee income is revenue, principal is capital, the host's payouts a cost."""

import argparse
import io
from types import SimpleNamespace

from rich.console import Console

from p2pgrid.invest.statement import share_statement, statement_for
from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.messages import Lock, Mint, Release
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.pools.entries import PoolOpen, SwapDecline, compute_pool_id, compute_swap, plan_swap, with_request
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.shares.rules import (
    ShareBuy, ShareIssue, ShareOffer, ShareRedeem, compute_buy_id, compute_payout, next_programme_id, programme_of,
)
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, sign

NOW = 1_800_000_000_000
SLOT = SlotRules().tradable_slots(NOW)[2]
LOCKUP = SLOT + 900
PRICE = 2_000_000
HOST, LP1, LP2, BUYER = (seeded_key(f"invest-shares-{n}") for n in ("host", "lp1", "lp2", "buyer"))


class Zone:
    def __init__(self):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.entries = []
        for key in (HOST, LP1, LP2, BUYER):
            self.add(self.fx.gateway, "mint", Mint(to=key.public_key, amount=100_000_000))
        self.pool_id = compute_pool_id(HOST.public_key, self.fx.zone, SLOT)
        self.add(HOST, "pool_open", PoolOpen(pool_id=self.pool_id, slot=SLOT, energy_wh=20_000, credits_uc=4_000_000,
                                             fee_bps=200, energy_cap_wh=40_000, self_discharge_ppm_per_h=0,
                                             conversion_loss_w=0, at_ms=NOW))
        self.programme_id = next_programme_id(self.state, HOST.public_key, self.fx.zone)
        self.add(HOST, "share_offer", ShareOffer(programme_id=self.programme_id, zone=self.fx.zone, price_uc=PRICE,
                                                 fee_share_bps=6_000, lockup_until_slot=LOCKUP, cap_shares=10,
                                                 sale_until_ms=NOW + 300_000))
        self.swaps = 0

    def add(self, key, kind, body, now=NOW):
        signed = self.fx.entry_on(self.state, key, kind, body, now)
        process_entry(self.state, signed, self.fx.rules)
        self.entries.append(signed)

    def buy(self, lp, shares, issue=True):
        buy_id = compute_buy_id(lp.public_key, self.programme_id, self.state.head(lp.public_key).next_seq)
        body = ShareBuy(buy_id=buy_id, programme_id=self.programme_id, host=HOST.public_key, zone=self.fx.zone,
                        shares=shares, amount_uc=shares * PRICE, deadline_ms=NOW + 60_000)
        self.add(lp, "share_buy", body)
        if issue:
            self.add(HOST, "share_issue", ShareIssue(buy_id=buy_id, programme_id=self.programme_id, lp=lp.public_key,
                                                     shares=shares))
        return body

    def swap_buy(self, energy_wh):
        _, quote = compute_swap(self.state.pools[self.pool_id].pool, Side.BUY, energy_wh, NOW)
        self.swaps += 1
        request = sign(SwapRequest(request_id=self.swaps.to_bytes(16, "big"), trader=BUYER.public_key,
                                   host=HOST.public_key, pool_id=self.pool_id, zone=self.fx.zone, slot=SLOT,
                                   side=Side.BUY, energy_wh=energy_wh, limit_uc=quote.credits_uc,
                                   expires_ms=NOW + 60_000), BUYER)
        self.add(BUYER, "lock", Lock(take_id=request.body.request_id, seller=HOST.public_key, order_id=self.pool_id,
                                     order_owner=HOST.public_key, order_size_wh=energy_wh, qty_wh=energy_wh,
                                     price=quote.credits_uc * 1000 // energy_wh, amount=quote.credits_uc,
                                     deadline_ms=NOW + 30_000, slot=SLOT))
        self.add(HOST, "swap", with_request(plan_swap(self.state.pools[self.pool_id], request.body, HOST.public_key,
                                                      self.fx.zone, NOW), request))
        return quote

    def payout(self):
        body = compute_payout(self.state, programme_of(self.state, self.programme_id))
        self.add(HOST, "share_payout", body)
        return body


def test_an_lps_fee_income_is_revenue_and_its_principal_is_capital():
    zone = Zone()
    zone.buy(LP1, 3)
    zone.buy(LP2, 1)
    zone.payout()
    fee = zone.swap_buy(1_500).fee + zone.swap_buy(700).fee
    body = zone.payout()
    zone.add(HOST, "share_redeem", ShareRedeem(programme_id=zone.programme_id, lp=LP1.public_key, shares=2,
                                               amount_uc=2 * PRICE), now=LOCKUP * 1000)
    income = {p.lp: p.amount_uc for p in body.payments}
    assert body.amount_uc == fee * 6_000 // 10_000 == sum(income.values())

    lp = statement_for(zone.entries, zone.fx.rules, LP1.public_key)
    assert lp.streams["share_income"] == income[LP1.public_key] == lp.revenue_uc
    assert lp.streams["share_capital"] == -3 * PRICE + 2 * PRICE and lp.streams["escrow"] == 0
    assert lp.operating_net_uc == income[LP1.public_key] and lp.streams["other"] == 0
    assert lp.closing_uc == zone.state.balance(LP1.public_key)

    host = statement_for(zone.entries, zone.fx.rules, HOST.public_key)
    assert host.streams["pool_fees"] == fee
    assert host.streams["share_payouts"] == -body.amount_uc
    assert host.streams["share_capital"] == 4 * PRICE - 2 * PRICE
    assert host.streams["other"] == 0 and host.closing_uc == zone.state.balance(HOST.public_key)


def test_the_lp_statement_shows_shares_lockup_and_income_per_share():
    zone = Zone()
    zone.buy(LP1, 3)
    zone.buy(LP2, 1)
    zone.payout()
    zone.swap_buy(2_000)
    body = zone.payout()
    mine = share_statement(zone.entries, zone.fx.rules, LP1.public_key)
    [position] = mine.positions
    assert (position.shares, position.earning_shares, position.lockup_until_slot) == (3, 3, LOCKUP)
    assert position.is_locked(NOW) and not position.is_locked(LOCKUP * 1000)
    assert position.income_per_share_uc == body.amount_uc / 4
    assert position.income_uc == mine.income_uc > 0 and mine.principal_uc == 3 * PRICE
    assert mine.reconciled and mine.hosted == ()
    hosted = share_statement(zone.entries, zone.fx.rules, HOST.public_key)
    [programme] = hosted.hosted
    assert (programme.outstanding_shares, programme.holders, programme.paid_uc) == (4, 2, body.amount_uc)
    assert hosted.payouts_uc == -body.amount_uc and hosted.capital_uc == 4 * PRICE and hosted.reconciled


def test_a_released_purchase_is_escrow_that_came_back():
    zone = Zone()
    body = zone.buy(LP1, 2, issue=False)
    held = statement_for(zone.entries, zone.fx.rules, LP1.public_key)
    assert held.streams["escrow"] == -2 * PRICE and held.streams["share_capital"] == 0
    zone.add(HOST, "swap_decline", SwapDecline(swap_id=body.buy_id, pool_id=zone.programme_id,
                                               trader=LP1.public_key, reason="expired"), now=body.deadline_ms)
    zone.add(LP1, "release", Release(take_id=body.buy_id), now=body.deadline_ms)     # a no-op after the decline
    back = statement_for(zone.entries, zone.fx.rules, LP1.public_key)
    assert back.streams["escrow"] == 0 and back.net_uc == 100_000_000
    assert share_statement(zone.entries, zone.fx.rules, LP1.public_key).positions == ()


def render(statement, at_ms):
    from p2pgrid.cli.shares import render_shares
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(render_shares(statement, at_ms))
    return out.getvalue()


def test_the_shares_command_renders_positions_lockup_and_reconciliation():
    zone = Zone()
    zone.buy(LP1, 3)
    zone.payout()
    zone.swap_buy(2_000)
    zone.payout()
    text = render(share_statement(zone.entries, zone.fx.rules, LP1.public_key), NOW)
    assert zone.programme_id.hex()[:12] in text and "(locked)" in text and "yes, to the µc" in text
    assert "(free)" in render(share_statement(zone.entries, zone.fx.rules, LP1.public_key), LOCKUP * 1000)
    host_text = render(share_statement(zone.entries, zone.fx.rules, HOST.public_key), NOW)
    assert "programmes hosted" in host_text and "3 / 10" in host_text and "60.00 %" in host_text


def test_the_shares_command_reads_the_run_and_prints_one_statement(monkeypatch, capsys):
    from p2pgrid.cli import shares
    zone = Zone()
    zone.buy(LP2, 2)
    run = SimpleNamespace(entries=tuple(zone.entries), rules=zone.fx.rules, account=LP2.public_key, end_ms=NOW)
    monkeypatch.setattr("p2pgrid.invest.report.read_run", lambda path, account, node=None: run)
    parser = argparse.ArgumentParser()
    shares.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shares", "--account", "lp2", "--from", "out"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "pool shares held" in printed and "4.000000" in printed     # 2 shares × 2 credits of principal
