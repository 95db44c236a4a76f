"""Pool swaps in a statement: the host's sales split into energy and fee, traders' sides, reconciled."""


from p2pgrid.invest.statement import statement_for
from p2pgrid.ledger.chain import LedgerState, derive_state, process_entry
from p2pgrid.ledger.messages import Lock, Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.pools.entries import PoolOpen, compute_pool_id, compute_swap, plan_swap, with_request
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.units import SlotRules
from p2pgrid.wire import Side, sign

RULES = SlotRules()
NOW = 1_800_000_000_000
SLOT = RULES.tradable_slots(NOW)[2]
GATE = RULES.gate_closure_ms(SLOT)
HOST, BUYER, SELLER = seeded_key("invest-host"), seeded_key("invest-buyer"), seeded_key("invest-seller")


class PoolZone:
    def __init__(self):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.entries = []
        for key in (HOST, BUYER, SELLER):
            self.add(self.fx.gateway, "mint", Mint(to=key.public_key, amount=50_000_000))
        self.pool_id = compute_pool_id(HOST.public_key, self.fx.zone, SLOT)
        self.add(HOST, "pool_open", PoolOpen(pool_id=self.pool_id, slot=SLOT, energy_wh=2_000, credits_uc=400_000,
                                             fee_bps=100, energy_cap_wh=5_000, self_discharge_ppm_per_h=0,
                                             conversion_loss_w=0, at_ms=NOW))
        self.next_id = 0

    def add(self, key, kind, body, now=NOW):
        signed = self.fx.entry_on(self.state, key, kind, body, now)
        process_entry(self.state, signed, self.fx.rules)
        self.entries.append(signed)

    def request(self, trader, side, energy_wh, limit_uc):
        self.next_id += 1
        return sign(SwapRequest(request_id=self.next_id.to_bytes(16, "big"), trader=trader.public_key,
                                host=HOST.public_key, pool_id=self.pool_id, zone=self.fx.zone, slot=SLOT, side=side,
                                energy_wh=energy_wh, limit_uc=limit_uc, expires_ms=GATE), trader)

    def swap(self, request):
        record = self.state.pools[self.pool_id]
        body = with_request(plan_swap(record, request.body, HOST.public_key, self.fx.zone, NOW), request)
        self.add(HOST, "swap", body)

    def buy(self, energy_wh):
        _, quote = compute_swap(self.state.pools[self.pool_id].pool, Side.BUY, energy_wh, NOW)
        request = self.request(BUYER, Side.BUY, energy_wh, quote.credits_uc + 1_000)
        body = request.body
        self.add(BUYER, "lock", Lock(take_id=body.request_id, seller=HOST.public_key, order_id=self.pool_id,
                                     order_owner=HOST.public_key, order_size_wh=energy_wh, qty_wh=energy_wh,
                                     price=body.limit_uc * 1000 // energy_wh, amount=body.limit_uc,
                                     deadline_ms=NOW + 30_000, slot=SLOT))
        self.swap(request)
        return quote

    def sell(self, energy_wh):
        _, quote = compute_swap(self.state.pools[self.pool_id].pool, Side.SELL, energy_wh, NOW)
        self.swap(self.request(SELLER, Side.SELL, energy_wh, quote.credits_uc))
        return quote


def test_a_buy_swap_is_pool_revenue_and_fee_for_the_host_and_a_pool_purchase_for_the_buyer():
    zone = PoolZone()
    quote = zone.buy(500)
    host = statement_for(zone.entries, zone.fx.rules, HOST.public_key)
    buyer = statement_for(zone.entries, zone.fx.rules, BUYER.public_key)
    assert quote.fee > 0
    assert host.streams["pool_fees"] == quote.fee
    assert host.streams["energy_sold_pool"] == quote.credits_uc - quote.fee
    assert host.energy_wh["energy_sold_pool"] == 500
    assert buyer.streams["energy_bought_pool"] == -quote.credits_uc and buyer.streams["escrow"] == 0
    for s, key in ((host, HOST), (buyer, BUYER)):
        assert s.streams["other"] == 0 and s.closing_uc == zone.state.balance(key.public_key)


def test_a_sell_swap_is_a_pool_purchase_for_the_host_and_a_pool_sale_for_the_trader():
    zone = PoolZone()
    zone.buy(300)
    quote = zone.sell(400)
    host = statement_for(zone.entries, zone.fx.rules, HOST.public_key)
    seller = statement_for(zone.entries, zone.fx.rules, SELLER.public_key)
    assert host.streams["energy_bought_pool"] == -quote.credits_uc
    assert seller.streams["energy_sold_pool"] == quote.credits_uc
    derived, _ = derive_state(reversed(zone.entries), zone.fx.rules)
    for s, key in ((host, HOST), (seller, SELLER)):
        assert s.streams["other"] == 0 and s.closing_uc == derived.balance(key.public_key)


def test_the_pool_fees_lps_are_paid_from_are_the_hosts_certified_pool_fees_stream():
    from p2pgrid.shares.rules import host_pool_fees_uc
    zone = PoolZone()
    zone.buy(200)
    zone.sell(300)                                  # a SELL pays its fee in energy: no µc fee
    zone.buy(300)
    host = statement_for(zone.entries, zone.fx.rules, HOST.public_key)
    assert host_pool_fees_uc(zone.state, HOST.public_key) == host.streams["pool_fees"] > 0


def test_a_declined_pool_buy_gives_the_escrow_back_and_explains_every_uc():
    from p2pgrid.pools.entries import SwapDecline
    zone = PoolZone()
    zone.add(BUYER, "lock", Lock(take_id=b"d" * 16, seller=HOST.public_key, order_id=zone.pool_id,
                                 order_owner=HOST.public_key, order_size_wh=100, qty_wh=100, price=200_000,
                                 amount=25_000, deadline_ms=NOW + 30_000, slot=SLOT))
    zone.add(HOST, "swap_decline", SwapDecline(swap_id=b"d" * 16, pool_id=zone.pool_id, trader=BUYER.public_key,
                                               reason="slippage"))
    buyer = statement_for(zone.entries, zone.fx.rules, BUYER.public_key)
    assert buyer.streams["escrow"] == 0 and buyer.streams["other"] == 0
    assert buyer.closing_uc == zone.state.balance(BUYER.public_key) == 50_000_000
