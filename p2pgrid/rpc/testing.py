"""An in-process fake node implementing ``NodeApi``, for RPC tests, bots and benchmarks.

It keeps just enough state to be coherent from a client's point of view: orders (this node's and
"external" ones seeded by a test) forming per-(zone, slot) books, pools at a fixed marginal price,
trades and balances that move when ``execute_trade`` takes liquidity, telemetry, forecasts,
settlements, certificates and ledger entries set by the test. It is **not** the market: routing
here is "book levels best-first, then pools at their marginal price", enough to exercise the API.

Events go out through ``EventFeed``\\ s, which never block the publisher: each stream reader gets a
bounded channel fed with ``send_nowait``; a reader that falls behind loses events (counted in
``feed.dropped``). ``EventFeed`` lives in ``p2pgrid.rpc.feed``; the real node uses it too.

Run a fake node with an RPC server by hand (for the example bot, curl, or the benchmark)::

    python -m p2pgrid.rpc.testing --data-dir /tmp/fake-node --port 8645
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AsyncIterator

import trio

from p2pgrid.errors import LedgerError, TradingError
from p2pgrid.market.errors import InvalidOrder, UnknownOrder
from p2pgrid.rpc.api import (Balance, BookLevel, BookSnapshot, BookUpdate, Certificate,
                             Execution, Forecast, ForecastPoint, LedgerEntryView, NodeInfo,
                             OrderRequest, OrderStatus, OrderView, PeerInfo, PoolView, RouteLeg,
                             RouteQuote, SlotSettlement, Telemetry, TradeView, Venue)
from p2pgrid.rpc.api import (ShareBuyStatus, ShareBuyView, ShareExitView, SharePositionView,
                             ShareProgrammeView)
from p2pgrid.rpc.api import ChargeRole, ChargeSessionStatus, ChargeSessionView, ChargeTariffView
from p2pgrid.rpc.api import ApprovalView
from p2pgrid.rpc.api import (FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestStatus, FlexRequestView,
                             FlexSettlementView)
from p2pgrid.rpc.feed import EventFeed
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Side, Source

FAKE_ACCOUNT = bytes(range(32))
OTHER_ACCOUNT = bytes(range(32, 64))
FAKE_EPOCH_MS = 1_767_225_600_000          # 2026-01-01T00:00:00Z


class UnknownEntry(LedgerError):
    pass


class UnknownFakeProgramme(TradingError):
    pass


class FakeShareRefused(LedgerError):
    pass


class UnknownFakeTariff(TradingError):
    pass


class UnknownFakeChargeSession(TradingError):
    pass


class FakeChargeRefused(LedgerError):
    pass


class FakeAlreadyApproved(LedgerError):
    pass


@dataclass
class FakeNode:
    """A ``NodeApi`` with in-memory state. ``now_ms`` is the market clock; tests set it."""

    zone: str = "z1"
    account: bytes = FAKE_ACCOUNT
    now_ms: int = FAKE_EPOCH_MS
    rules: SlotRules = field(default_factory=SlotRules)
    orders: dict[bytes, OrderView] = field(default_factory=dict)
    pools_by_id: dict[bytes, PoolView] = field(default_factory=dict)
    trades: list[TradeView] = field(default_factory=list)
    balances: dict[bytes, int] = field(default_factory=dict)
    entries: dict[tuple[bytes, int], LedgerEntryView] = field(default_factory=dict)
    settlements: dict[int, SlotSettlement] = field(default_factory=dict)
    certs: list[Certificate] = field(default_factory=list)
    current_telemetry: Telemetry = field(default_factory=lambda: Telemetry(FAKE_EPOCH_MS, 0, 0, 0, 0, 5000, 10000))
    peer_list: list[PeerInfo] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)   # method name → raise this
    calls: dict[str, int] = field(default_factory=dict)
    book_feed: EventFeed[BookUpdate] = field(default_factory=EventFeed)
    fill_feed: EventFeed[TradeView] = field(default_factory=EventFeed)
    telemetry_feed: EventFeed[Telemetry] = field(default_factory=EventFeed)
    settlement_feed: EventFeed[SlotSettlement] = field(default_factory=EventFeed)
    share_programme_list: list[ShareProgrammeView] = field(default_factory=list)
    share_holdings: dict[bytes, int] = field(default_factory=dict)      # programme id → shares held
    share_exits: dict[bytes, int] = field(default_factory=dict)         # programme id → shares asked back
    charge_tariff_list: list[ChargeTariffView] = field(default_factory=list)
    charge_session_list: dict[bytes, ChargeSessionView] = field(default_factory=dict)   # session id → session
    approvals: dict[bytes, ApprovalView] = field(default_factory=dict)   # meter key → approval
    fund_uc: int = 0                                                     # the fake zone's [gateway] fund_uc
    flex_request_list: list[FlexRequestView] = field(default_factory=list)
    flex_offer_list: list[FlexOfferView] = field(default_factory=list)
    flex_award_list: list[FlexAwardView] = field(default_factory=list)
    flex_settlement_list: list[FlexSettlementView] = field(default_factory=list)
    _seq: int = 0
    _counter: int = 0

    # --- test controls ------------------------------------------------------------------------

    def next_slot(self) -> int:
        return self.rules.tradable_slots(self.now_ms)[0]

    def add_external_order(self, side: Side, slot: int, qty_wh: int, price: int,
                           owner: bytes = OTHER_ACCOUNT) -> OrderView:
        """An order from another node, as gossip would bring it."""
        order = OrderView(self._new_id(), owner, self.zone, slot, side, qty_wh, 0, price, False,
                          Source.NONE if side is Side.BUY else Source.GRID, OrderStatus.OPEN,
                          self.now_ms, self.rules.gate_closure_ms(slot))
        self.orders[order.order_id] = order
        self._publish_level(order)
        return order

    def add_pool(self, slot: int, energy_wh: int, money_uc: int, fee_ppm: int = 3000) -> PoolView:
        price = money_uc * 1000 // energy_wh if energy_wh else 0
        pool = PoolView(self._new_id(), OTHER_ACCOUNT, self.zone, slot, energy_wh, money_uc, fee_ppm, price, False)
        self.pools_by_id[pool.pool_id] = pool
        return pool

    def push_telemetry(self, telemetry: Telemetry) -> None:
        self.current_telemetry = telemetry
        self.telemetry_feed.publish(telemetry)

    def push_settlement(self, settlement: SlotSettlement) -> None:
        self.settlements[settlement.slot] = settlement
        self.settlement_feed.publish(settlement)

    # --- MarketView ---------------------------------------------------------------------------

    async def node_info(self) -> NodeInfo:
        self._enter("node_info")
        return NodeInfo(self.account, "12D3KooWFakeNodeForRpcTests", self.zone, "household", "0.1.0",
                        self.now_ms, self.rules.length_s, self.rules.horizon_s, self.rules.gate_s,
                        len(self.entries))

    async def peers(self) -> list[PeerInfo]:
        self._enter("peers")
        return list(self.peer_list)

    async def book(self, zone: str, slot: int, depth: int) -> BookSnapshot:
        self._enter("book")
        return BookSnapshot(zone, slot, self._seq, self._levels(zone, slot, Side.BUY)[:depth],
                            self._levels(zone, slot, Side.SELL)[:depth])

    async def pools(self, zone: str, slot: int | None) -> list[PoolView]:
        self._enter("pools")
        return [p for p in self.pools_by_id.values() if p.zone == zone and slot in (None, p.slot)]

    async def route_quote(self, zone: str, slot: int, side: Side, qty_wh: int,
                          limit_price: int | None) -> RouteQuote:
        self._enter("route_quote")
        legs = self._route(zone, slot, side, qty_wh, limit_price)
        filled = sum(leg.qty_wh for leg in legs)
        value = sum(leg.value_uc for leg in legs)
        return RouteQuote(zone, slot, side, qty_wh, filled, value, value * 1000 // filled if filled else 0,
                          tuple(legs))

    # --- Trading ------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderView:
        self._enter("place_order")
        if request.zone != self.zone:
            raise InvalidOrder(f"this node trades in zone {self.zone!r}, not {request.zone!r}")
        if not self.rules.is_tradable(request.slot, self.now_ms):
            raise InvalidOrder(f"slot {request.slot} is not open for trading")
        if request.green and not request.source.is_green:
            raise InvalidOrder("a green order needs a green source")
        expiry = request.expiry_ms if request.expiry_ms is not None else self.rules.gate_closure_ms(request.slot)
        if expiry <= self.now_ms:
            raise InvalidOrder("order already expired")
        order = OrderView(self._new_id(), self.account, request.zone, request.slot, request.side,
                          request.qty_wh, 0, request.limit_price, request.green, request.source,
                          OrderStatus.OPEN, self.now_ms, expiry)
        self.orders[order.order_id] = order
        self._publish_level(order)
        return order

    async def cancel_order(self, order_id: bytes) -> OrderView:
        self._enter("cancel_order")
        order = self.orders.get(order_id)
        if order is None or order.owner != self.account:
            raise UnknownOrder(f"no order {order_id.hex()} of this node")
        if order.status is not OrderStatus.OPEN:
            raise UnknownOrder(f"order {order_id.hex()} is already {order.status.value}")
        order = replace(order, status=OrderStatus.CANCELLED)
        self.orders[order_id] = order
        self._publish_level(order)
        return order

    async def list_orders(self, open_only: bool) -> list[OrderView]:
        self._enter("list_orders")
        return [o for o in self.orders.values()
                if o.owner == self.account and (not open_only or o.status is OrderStatus.OPEN)]

    async def execute_trade(self, zone: str, slot: int, side: Side, qty_wh: int,
                            limit_price: int | None) -> Execution:
        self._enter("execute_trade")
        trades = []
        for leg in self._route(zone, slot, side, qty_wh, limit_price):
            maker = self.orders.get(leg.venue_id)
            counterparty = maker.owner if maker is not None else self.pools_by_id[leg.venue_id].host
            buyer, seller = (self.account, counterparty) if side is Side.BUY else (counterparty, self.account)
            trade = TradeView(self._new_id(), leg.venue_id, buyer, seller, zone, slot, leg.qty_wh,
                              leg.value_uc * 1000 // leg.qty_wh, leg.value_uc, leg.venue, False, self.now_ms)
            if maker is not None:
                filled = maker.filled_wh + leg.qty_wh
                self.orders[maker.order_id] = replace(
                    maker, filled_wh=filled,
                    status=OrderStatus.FILLED if filled == maker.qty_wh else OrderStatus.OPEN)
                self._publish_level(maker)
            self.balances[buyer] = self.balances.get(buyer, 0) - leg.value_uc
            self.balances[seller] = self.balances.get(seller, 0) + leg.value_uc
            self.trades.append(trade)
            self.fill_feed.publish(trade)
            trades.append(trade)
        return Execution(side, qty_wh, sum(t.qty_wh for t in trades), sum(t.value_uc for t in trades),
                         tuple(trades))

    async def list_trades(self, since_ms: int, limit: int) -> list[TradeView]:
        self._enter("list_trades")
        return [t for t in self.trades if t.at_ms >= since_ms][:limit]

    # --- LedgerView ---------------------------------------------------------------------------

    async def balance(self, account: bytes) -> Balance:
        self._enter("balance")
        head = max((seq for (acc, seq) in self.entries if acc == account), default=-1)
        return Balance(account, self.balances.get(account, 0), 0, head)

    async def ledger_entry(self, account: bytes, seq: int) -> LedgerEntryView:
        self._enter("ledger_entry")
        entry = self.entries.get((account, seq))
        if entry is None:
            raise UnknownEntry(f"no entry {seq} in the chain of {account.hex()}")
        return entry

    async def settlement(self, slot: int) -> SlotSettlement:
        self._enter("settlement")
        return self.settlements.get(slot, SlotSettlement(slot, self.account, 0, 0, 0, 0, 0, False))

    async def certificates(self, account: bytes) -> list[Certificate]:
        self._enter("certificates")
        return [c for c in self.certs if c.owner == account]

    # --- DeviceView ---------------------------------------------------------------------------

    async def telemetry(self) -> Telemetry:
        self._enter("telemetry")
        return self.current_telemetry

    async def forecast(self, slots: int) -> Forecast:
        self._enter("forecast")
        first = self.rules.slot_of(self.now_ms)
        return Forecast(self.now_ms, tuple(ForecastPoint(first + i * self.rules.length_s, 100 * (i % 5), 250)
                                           for i in range(slots)))

    # --- Shares -------------------------------------------------------------------------------
    # A programme's host issues at once, within the cap; the price is taken from the balance.

    def add_share_programme(self, price_uc: int = 1_000_000, cap_shares: int = 10,
                            lockup_until_slot: int = 0) -> ShareProgrammeView:
        programme = ShareProgrammeView(self._new_id(), OTHER_ACCOUNT, self.zone, price_uc, 5_000, cap_shares, 0,
                                       cap_shares, 0, self.now_ms + 3_600_000, True, lockup_until_slot, False, 0, 0)
        self.share_programme_list.append(programme)
        return programme

    def _share_programme(self, programme_id: bytes) -> ShareProgrammeView:
        for programme in self.share_programme_list:
            if programme.programme_id == programme_id:
                return programme
        raise UnknownFakeProgramme(f"no certified share programme {programme_id.hex()}")

    async def share_programmes(self) -> list[ShareProgrammeView]:
        self._enter("share_programmes")
        return list(self.share_programme_list)

    async def share_buy(self, programme_id: bytes, shares: int, wait_s: int) -> ShareBuyView:
        self._enter("share_buy")
        programme = self._share_programme(programme_id)
        amount = shares * programme.price_uc
        status = ShareBuyStatus.RETURNED
        if shares <= programme.available_shares:
            status = ShareBuyStatus.ISSUED
            index = self.share_programme_list.index(programme)
            self.share_programme_list[index] = replace(
                programme, outstanding_shares=programme.outstanding_shares + shares,
                available_shares=programme.available_shares - shares)
            self.share_holdings[programme_id] = self.share_holdings.get(programme_id, 0) + shares
            self.balances[self.account] = self.balances.get(self.account, 0) - amount
        return ShareBuyView(self._new_id(), programme_id, programme.host, shares, amount, self.now_ms + 600_000,
                            status)

    async def share_exit(self, programme_id: bytes, shares: int) -> ShareExitView:
        self._enter("share_exit")
        programme = self._share_programme(programme_id)
        held = self.share_holdings.get(programme_id, 0)
        if self.share_exits.get(programme_id, 0) + shares > held:
            raise FakeShareRefused(f"bad_body: not_held: the LP holds {held} shares")
        self.share_exits[programme_id] = self.share_exits.get(programme_id, 0) + shares
        pending = self.share_exits[programme_id]
        return ShareExitView(programme_id, programme.host, pending, 0, pending, programme.lockup_until_slot * 1000)

    async def share_positions(self) -> list[SharePositionView]:
        self._enter("share_positions")
        views = []
        for programme in self.share_programme_list:
            held = self.share_holdings.get(programme.programme_id, 0)
            if held:
                views.append(SharePositionView(
                    programme.programme_id, programme.host, programme.zone, held, 0, programme.price_uc,
                    programme.lockup_until_slot, self.now_ms < programme.lockup_until_slot * 1000,
                    held * programme.price_uc, 0, 0, programme.fee_share_bps, 0,
                    self.share_exits.get(programme.programme_id, 0)))
        return views

    # --- Charging -----------------------------------------------------------------------------
    # Tariffs are another station's; a session is escrowed from the balance and stays charging
    # until the test bills it (``bill_charge_session``) or the driver releases it past its deadline.

    def add_charge_tariff(self, price_uc_per_kwh: int = 450_000, max_session_wh: int = 60_000,
                          open_for_ms: int = 86_400_000) -> ChargeTariffView:
        tariff = ChargeTariffView(self._new_id(), OTHER_ACCOUNT, self.zone, price_uc_per_kwh, 2, 22_000,
                                  max_session_wh, self.now_ms + open_for_ms, 0, 0, 0)
        self.charge_tariff_list.append(tariff)
        return tariff

    def bill_charge_session(self, session_id: bytes, delivered_wh: int) -> ChargeSessionView:
        """The station bills ``delivered_wh`` (≤ the session's max_wh); the rest goes back to the driver."""
        session = self.charge_session_list[session_id]
        tariff = next(t for t in self.charge_tariff_list if t.tariff_id == session.tariff_id)
        amount = trade_value(delivered_wh, tariff.price_uc_per_kwh)
        self.balances[session.driver] = self.balances.get(session.driver, 0) + session.escrow_uc - amount
        self.balances[session.station] = self.balances.get(session.station, 0) + amount
        billed = replace(session, billed=True, delivered_wh=delivered_wh, amount_uc=amount, ended_ms=self.now_ms,
                         status=ChargeSessionStatus.BILLED)
        self.charge_session_list[session_id] = billed
        return billed

    def _charge_session(self, session_id: bytes) -> ChargeSessionView:
        session = self.charge_session_list.get(session_id)
        if session is None or session.driver != self.account:
            raise UnknownFakeChargeSession(f"no certified charging session {session_id.hex()} of this node")
        return self._charge_now(session)

    def _charge_now(self, session: ChargeSessionView) -> ChargeSessionView:
        if session.status is ChargeSessionStatus.CHARGING and self.now_ms >= session.deadline_ms:
            return replace(session, status=ChargeSessionStatus.EXPIRED)
        return session

    async def charge_tariffs(self, station: bytes | None) -> list[ChargeTariffView]:
        self._enter("charge_tariffs")
        return [t for t in self.charge_tariff_list if self.now_ms < t.until_ms and station in (None, t.station)]

    async def charge_start(self, tariff_id: bytes, max_wh: int, wait_s: int, hours: int) -> ChargeSessionView:
        self._enter("charge_start")
        tariff = next((t for t in self.charge_tariff_list if t.tariff_id == tariff_id), None)
        if tariff is None:
            raise UnknownFakeTariff(f"no certified charging tariff {tariff_id.hex()}")
        if max_wh > tariff.max_session_wh:
            raise FakeChargeRefused(f"bad_body: too_much: a session takes at most {tariff.max_session_wh} Wh")
        escrow = trade_value(max_wh, tariff.price_uc_per_kwh)
        self.balances[self.account] = self.balances.get(self.account, 0) - escrow
        session = ChargeSessionView(self._new_id(), tariff_id, tariff.station, self.account, max_wh, escrow,
                                    self.now_ms, self.now_ms + hours * 3_600_000, False, 0, 0, 0,
                                    ChargeSessionStatus.CHARGING)
        self.charge_session_list[session.session_id] = session
        return session

    async def charge_sessions(self, role: ChargeRole) -> list[ChargeSessionView]:
        self._enter("charge_sessions")
        mine = [s for s in self.charge_session_list.values()
                if (s.driver if role is ChargeRole.DRIVER else s.station) == self.account]
        return [self._charge_now(s) for s in sorted(mine, key=lambda s: (s.plugged_in_ms, s.session_id))]

    async def charge_release(self, session_id: bytes) -> ChargeSessionView:
        self._enter("charge_release")
        session = self._charge_session(session_id)
        if session.status is ChargeSessionStatus.CHARGING:
            raise FakeChargeRefused(f"deadline_not_reached: the station may bill it until {session.deadline_ms}")
        if session.status is not ChargeSessionStatus.EXPIRED:
            raise FakeChargeRefused(f"lock_closed: session {session_id.hex()} is {session.status.value}")
        self.balances[self.account] = self.balances.get(self.account, 0) + session.escrow_uc
        released = replace(session, status=ChargeSessionStatus.RELEASED)
        self.charge_session_list[session_id] = released
        return released

    # --- Gateway ------------------------------------------------------------------------------

    async def approve_member(self, account: bytes, meter_key: bytes, export_w: int,
                             fund_uc: int | None) -> ApprovalView:
        self._enter("approve_member")
        if meter_key in self.approvals or any(a.account == account for a in self.approvals.values()):
            raise FakeAlreadyApproved(f"account {account.hex()[:16]}… or meter key {meter_key.hex()[:16]}… "
                                      "is registered already")
        amount = self.fund_uc if fund_uc is None else fund_uc
        self.balances[account] = self.balances.get(account, 0) + amount
        approval = ApprovalView(account, meter_key, export_w, amount)
        self.approvals[meter_key] = approval
        return approval

    # --- EventSource --------------------------------------------------------------------------

    def book_events(self) -> AsyncIterator[BookUpdate]:
        return self.book_feed.stream()

    def fill_events(self) -> AsyncIterator[TradeView]:
        return self.fill_feed.stream()

    def telemetry_events(self) -> AsyncIterator[Telemetry]:
        return self.telemetry_feed.stream()

    def settlement_events(self) -> AsyncIterator[SlotSettlement]:
        return self.settlement_feed.stream()

    # --- internals ----------------------------------------------------------------------------

    async def flex_requests(self) -> list[FlexRequestView]:
        self._enter("flex_requests")
        return list(self.flex_request_list)

    async def flex_offers(self, request_id: bytes | None) -> list[FlexOfferView]:
        self._enter("flex_offers")
        return [o for o in self.flex_offer_list
                if (o.request_id == request_id if request_id is not None else o.account == self.account)]

    async def flex_awards(self, request_id: bytes | None) -> list[FlexAwardView]:
        self._enter("flex_awards")
        return [a for a in self.flex_award_list
                if (a.request_id == request_id if request_id is not None else a.account == self.account)]

    async def flex_settlements(self, request_id: bytes | None) -> list[FlexSettlementView]:
        self._enter("flex_settlements")
        return [v for v in self.flex_settlement_list
                if (v.request_id == request_id if request_id is not None else v.account == self.account)]

    async def flex_request(self, request: FlexRequestOrder) -> FlexRequestView:
        """Certified at once (the fake has no rules but the deadline's order)."""
        self._enter("flex_request")
        view = FlexRequestView(self._new_id(), self.account, self.zone, request.feeder, request.direction,
                               request.first_slot, request.n_slots, request.qty_wh, request.price_uc_per_kwh,
                               request.penalty_uc_per_kwh, request.offer_deadline_ms, 0, 0,
                               FlexRequestStatus.OPEN if self.now_ms < request.offer_deadline_ms
                               else FlexRequestStatus.CLOSED)
        self.flex_request_list.append(view)
        return view

    def _enter(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        failure = self.failures.get(name)
        if failure is not None:
            raise failure

    def _new_id(self) -> bytes:
        self._counter += 1
        return hashlib.sha256(b"fake-node-id:%d" % self._counter).digest()[:16]

    def _open(self, zone: str, slot: int, side: Side) -> list[OrderView]:
        live = [o for o in self.orders.values() if o.zone == zone and o.slot == slot and o.side is side
                and o.status is OrderStatus.OPEN and o.expiry_ms > self.now_ms]
        best_first = sorted(live, key=lambda o: (o.limit_price, o.created_ms))
        return best_first[::-1] if side is Side.BUY else best_first

    def _levels(self, zone: str, slot: int, side: Side) -> tuple[BookLevel, ...]:
        levels: dict[int, tuple[int, int]] = {}
        for o in self._open(zone, slot, side):
            qty, count = levels.get(o.limit_price, (0, 0))
            levels[o.limit_price] = (qty + o.qty_wh - o.filled_wh, count + 1)
        return tuple(BookLevel(p, q, n) for p, (q, n) in levels.items())

    def _publish_level(self, order: OrderView) -> None:
        self._seq += 1
        level = next((lv for lv in self._levels(order.zone, order.slot, order.side)
                      if lv.price == order.limit_price), BookLevel(order.limit_price, 0, 0))
        self.book_feed.publish(BookUpdate(order.zone, order.slot, self._seq, order.side, level.price,
                                          level.qty_wh, level.orders))

    def _route(self, zone: str, slot: int, side: Side, qty_wh: int, limit: int | None) -> list[RouteLeg]:
        def acceptable(price: int) -> bool:
            return limit is None or (price <= limit if side is Side.BUY else price >= limit)

        legs, left = [], qty_wh
        for maker in self._open(zone, slot, side.opposite):
            if left == 0 or not acceptable(maker.limit_price) or maker.owner == self.account:
                continue
            take = min(left, maker.qty_wh - maker.filled_wh)
            legs.append(RouteLeg(Venue.BOOK, maker.order_id, take, trade_value(take, maker.limit_price)))
            left -= take
        for pool in sorted(self.pools_by_id.values(), key=lambda p: p.price, reverse=side is Side.SELL):
            if left == 0 or pool.zone != zone or pool.slot != slot or not acceptable(pool.price):
                continue
            take = min(left, pool.energy_wh) if side is Side.BUY else left
            if take > 0:
                legs.append(RouteLeg(Venue.POOL, pool.pool_id, take, trade_value(take, pool.price)))
                left -= take
        return legs


def seeded_fake_node(levels: int = 5) -> FakeNode:
    """A fake node with a two-sided book and one pool in its next tradable slot."""
    node = FakeNode()
    slot = node.next_slot()
    for i in range(levels):
        node.add_external_order(Side.BUY, slot, 1000 + 100 * i, 240_000 - 2_000 * i)
        node.add_external_order(Side.SELL, slot, 1000 + 100 * i, 260_000 + 2_000 * i)
    node.add_pool(slot, energy_wh=50_000, money_uc=12_500_000)
    return node


def main(argv: list[str] | None = None) -> int:
    """Serve a seeded fake node on loopback until interrupted (prints the URL and token file)."""
    from p2pgrid.rpc.auth import load_or_create_token, token_path
    from p2pgrid.rpc.server import RpcLimits, serve_rpc

    parser = argparse.ArgumentParser(prog="python -m p2pgrid.rpc.testing", description=main.__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="where rpc.token lives")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--rate-per-s", type=float, default=RpcLimits.rate_per_s,
                        help="per-connection call rate limit (benchmarks raise it)")
    args = parser.parse_args(argv)
    limits = RpcLimits(rate_per_s=args.rate_per_s, burst=max(RpcLimits.burst, int(args.rate_per_s)))

    async def serve() -> None:
        token = load_or_create_token(args.data_dir)
        async with serve_rpc(seeded_fake_node(), token=token, port=args.port, limits=limits) as server:
            print(f"fake node RPC on {server.url} (token file {token_path(args.data_dir)})", flush=True)
            if args.port_file:
                args.port_file.write_text(str(server.port))
            await trio.sleep_forever()

    try:
        trio.run(serve)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
