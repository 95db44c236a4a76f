"""``LiveNodeApi``: the RPC's ``NodeApi`` over a running ``Node`` (books, trading, ledger, transport).

Every method reads the node's live services; nothing is cached that the node already knows:

* **Market** — ``book`` is the depth of ``node.trading.books``; ``route_quote`` is
  ``TradingService.quote`` (the router over the local book). The node hosts and knows no AMM pools
  yet, so ``pools`` is an empty list and quotes have book legs only.
* **Orders** — ``place_order`` / ``cancel_order`` go through ``TradingService`` (signed with the
  node key, gossiped with the next batch); on a node without a ledger ``place_order`` signs and
  gossips the order all the same (``Node.place_order``: nobody can take it there), and the other
  order methods answer ``NotAvailable``. ``place_order`` is how ``p2pgrid order place`` reaches
  the node. ``list_orders`` lists this node's orders: those placed here and those its trading
  service holds (its strategies'), with ``filled_wh`` from the certified ledger. Status:
  ``cancelled`` when cancelled here; ``filled`` when the ledger has filled it whole; ``expired`` at
  its expiry or its slot's gate closure; else ``open``.
* **Trades** — a trade is a certified ``fill`` entry in which this node is the buyer or the seller
  (``trade_id`` = the take id). The *ledger follower* reads every chain's new certified entries
  from the store as the ledger grows, so trades are found whichever side certified them and
  whatever the node took part in as (maker or taker). ``execute_trade`` runs
  ``TradingService.execute`` and answers once its takes are certified, so its trades are reported
  ``certified: true`` at once (the follower then knows them already). ``at_ms`` is the market
  time at which this node first knew the trade; ``slot`` comes from the order (0 if this node
  never saw the order, e.g. a fill found in history after a restart).
* **Ledger** — ``balance`` is the certified balance; ``locked_uc`` the open locks the account holds
  as buyer; ``ledger_entry`` reads the store (only certified entries are stored).
* **Settlement, certificates** — ``settlement`` / ``certificates`` are
  ``p2pgrid.settlement.api.SettlementApi`` (see there for the views and their signs).
* **Telemetry** — ``p2pgrid.devices.api.telemetry_view`` of ``node.telemetry`` (the node's
  ``DeviceService``). ``NotAvailable`` on a node that runs no device service; ``NoReadingYet``
  (a ``DeviceError``, transient) while it starts or before any device answered.
* **Forecast** — load and PV energy per slot from the current slot on. A node whose agent
  (``agent.agent_trader.AgentTrader``) keeps forecasts answers with the agent's own (what it plans
  on); any other node with devices runs the same gates (``p2pgrid.forecast``) over its device
  service's measured slots, updated at each call. Before any slot was measured, the current
  readings held constant stand in (as the agent does) and ``made_ms`` is now; otherwise
  ``made_ms`` is the end of the last measured slot. Beyond the gate's horizon its last value is
  held. ``NotAvailable`` without a device service.
* Market and ledger methods on a node without a ledger (no trading service) raise
  ``NotAvailable`` (JSON-RPC ``-32007``), ``place_order`` excepted.
* **Shares** — ``share_programmes`` / ``share_buy`` / ``share_exit`` / ``share_positions`` are
  ``p2pgrid.shares.api.ShareApi`` (see there).
* **Charging** — ``charge_tariffs`` / ``charge_start`` / ``charge_sessions`` / ``charge_release``
  are ``p2pgrid.charging.api.ChargingApi`` (see there).
* **Gateway** — ``approve_member`` is ``p2pgrid.onboarding.api.GatewayApi`` (see there).
* **Flex** — ``flex_requests`` / ``flex_offers`` / ``flex_awards`` / ``flex_settlements`` /
  ``flex_request`` are ``p2pgrid.flex.api.FlexApi`` (see there).

Events: ``run()`` drains ``TradingService.book_changes`` (the one consumer of that channel) and
follows the ledger; each book change becomes a ``BookUpdate`` (the new total at the changed price
level), each certified fill of this node a ``TradeView``, each certified ``settle`` entry of a
slot this node has a line in a ``SlotSettlement`` (``settled: true``); all are published to
event feeds (``EventFeed``) so any number of readers (RPC server, metrics) get them, none able to
block the node. Fills and settlements already certified when the node started are history:
listed, not streamed. Book changes by expiry or gate closure are not reported by the books and so do not
appear as updates. Telemetry: once the node has started, if it runs a device service, the
telemetry view is polled every ``devices.sample_period_ms`` and published when its ``at_ms``
moved (the device service has no listener hook).

Time: market time from ``node.clock``; the follower waits on ledger height, never on a timer.

``dashboard_readings(node)`` gives the same telemetry and last settlement synchronously, for the
``p2pgrid run`` dashboard (``cli.dashboard.render_node_dashboard``).

Errors raised here (besides those of the services and of the domain APIs it delegates to)::

    MarketError  └── InvalidOrder └── WrongZone   a zone this node does not trade in
    LedgerError  └── UnknownEntry                 no certified entry at (account, seq)
    DeviceError  └── NoReadingYet                 devices starting, or none answered yet (p2pgrid.devices.api)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Protocol

import trio

import p2pgrid
from p2pgrid.agent.agent_trader import AgentTrader
from p2pgrid.agent.core import PV_GATE_EXPERTS, SeriesForecaster
from p2pgrid.charging.api import ChargingApi
from p2pgrid.onboarding.api import GatewayApi
from p2pgrid.flex.api import FlexApi
from p2pgrid.devices.api import NoReadingYet, telemetry_view
from p2pgrid.devices.base import DeviceKind
from p2pgrid.devices.service import DeviceService, SlotTelemetry, WithDevices
from p2pgrid.errors import LedgerError, TradingError
from p2pgrid.forecast.experts import LOAD_EXPERTS, SeriesContext
from p2pgrid.forecast.gate import GateConfig, new_gate
from p2pgrid.ledger.chain import LedgerState, LockStatus, decode_body
from p2pgrid.ledger.messages import Fill, entry_hash
from p2pgrid.market.errors import InvalidOrder, UnknownOrder
from p2pgrid.market.router import BookLeg, PoolLeg
from p2pgrid.rpc.api import FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestView, FlexSettlementView
from p2pgrid.rpc.api import (
    ApprovalView, Balance, BookLevel, BookSnapshot, BookUpdate, Certificate, ChargeRole, ChargeSessionView, ChargeTariffView,
    Execution, Forecast, ForecastPoint, LedgerEntryView, NodeInfo, OrderRequest, OrderStatus, OrderView, PeerInfo,
    PoolView, RouteLeg, RouteQuote, ShareBuyView, ShareExitView, SharePositionView, ShareProgrammeView,
    SlotSettlement, Telemetry, TradeView, Venue,
)
from p2pgrid.rpc.errors import NotAvailable
from p2pgrid.rpc.feed import EventFeed
from p2pgrid.service import OrderPlacer, WithAgent, WithStats, WithTrading, WithTransport
from p2pgrid.settlement.api import SettlementApi, last_settlement_view, settlement_view
from p2pgrid.settlement.entries import SETTLE_KINDS, SettleBody, settlement_of
from p2pgrid.shares.api import ShareApi
from p2pgrid.trading.local_books import BookChange
from p2pgrid.units import trade_value
from p2pgrid.wire import Order, Side

if TYPE_CHECKING:
    from p2pgrid.ledger.service import LedgerService
    from p2pgrid.trading.service import TradingService

log = logging.getLogger(__name__)

__all__ = ["LiveNodeApi", "NodeApiHost", "TelemetryForecasts", "UnknownEntry", "WrongZone", "dashboard_readings",
           "peer_id_base58"]

MAX_TRADES_KEPT = 100_000       # trade log of this node (oldest forgotten first)
MAX_ORDERS_KEPT = 10_000        # own orders remembered after they left the books
MAX_ORDER_META = 200_000        # (slot, side, price) of orders seen in the books, for book updates
FOLLOW_LINGER_S = 0.02          # let a burst of certified batches land before reading the store
FEED_CAPACITY = 8192


class NodeApiHost(WithTrading, WithTransport, WithStats, WithAgent, WithDevices, OrderPlacer, Protocol):
    """What the node API reads of the node: nearly everything, as the RPC's view of the whole node."""

    @property
    def services(self) -> Sequence[Any]: ...

    async def wait_started(self) -> None: ...


class WrongZone(InvalidOrder):
    """A zone this node does not trade in."""


class UnknownEntry(LedgerError):
    """No certified entry at that (account, seq) in this node's store."""


@dataclass(frozen=True)
class _OrderMeta:
    slot: int
    side: Side
    price: int


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def peer_id_base58(public_key: bytes) -> str:
    """The libp2p peer id of an Ed25519 public key: base58btc of the identity multihash of the
    protobuf ``PublicKey{Type: Ed25519, Data: key}`` (what py-libp2p's ``ID.from_pubkey`` gives)."""
    protobuf = b"\x08\x01\x12\x20" + public_key
    data = b"\x00" + bytes([len(protobuf)]) + protobuf
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = _BASE58[rest] + digits
    return "1" * (len(data) - len(data.lstrip(b"\x00"))) + digits


# --- the node's state as API values ------------------------------------------------------------

class TelemetryForecasts:
    """Load and PV gates over a device service's measured slots, for a node whose agent keeps none:
    the same experts and horizon as ``agent.agent_trader.AgentTrader``, so both forecast alike. A gap in
    the measured slots repeats the previous value (as the agent does)."""

    def __init__(self, slot_s: int, steps: int) -> None:
        self.slot_s = slot_s
        self.steps = steps
        self.load: SeriesForecaster | None = None
        self.pv: SeriesForecaster | None = None
        self.last_slot: int | None = None

    def update(self, measured: Sequence[SlotTelemetry]) -> None:
        """Add the slots measured since the last update (``measured`` oldest first)."""
        for slot in measured:
            if self.last_slot is not None and slot.slot <= self.last_slot:
                continue
            if self.load is None or self.pv is None or self.last_slot is None:
                context = SeriesContext(slot_s=self.slot_s, first_slot_s=slot.slot)
                self.load = SeriesForecaster(new_gate(LOAD_EXPERTS, GateConfig(self.steps)), context)
                self.pv = SeriesForecaster(new_gate(PV_GATE_EXPERTS, GateConfig(self.steps)), context)
            else:
                for _ in range(self.last_slot + self.slot_s, slot.slot, self.slot_s):
                    self.load.add(self.load.history[-1])
                    self.pv.add(self.pv.history[-1])
            self.load.add(slot.load_wh)
            self.pv.add(slot.pv_wh)
            self.last_slot = slot.slot


def _made_ms(forecaster: SeriesForecaster | None) -> int | None:
    """The end of the last slot ``forecaster`` measured (its forecast's cut-off), if it has one."""
    if forecaster is None or forecaster.forecast is None:
        return None
    return forecaster.context.slot_start_s(forecaster.forecast.first_index) * 1000


def dashboard_readings(node: NodeApiHost) -> tuple[Telemetry | None, SlotSettlement | None]:
    """For ``cli.dashboard.render_node_dashboard``: the node's telemetry (None without devices or
    before a reading) and its line of the last settled slot it is in (None before any). Scans the
    settled slots: for a dashboard refresh, not for a hot loop."""
    telemetry = None
    devices = getattr(node, "telemetry", None)
    if isinstance(devices, DeviceService):
        try:
            telemetry = telemetry_view(devices, node.clock.now_ms())
        except NoReadingYet:
            telemetry = None     # nothing to show yet
    settlement = last_settlement_view(node.ledger.state, node.key.public_key) if node.ledger is not None else None
    return telemetry, settlement


class LiveNodeApi:
    """``NodeApi`` over a running ``Node``; ``run()`` must run for the event streams and trade log."""

    def __init__(self, node: NodeApiHost) -> None:
        self.node = node
        self.book_feed: EventFeed[BookUpdate] = EventFeed(FEED_CAPACITY)
        self.fill_feed: EventFeed[TradeView] = EventFeed(FEED_CAPACITY)
        self.telemetry_feed: EventFeed[Telemetry] = EventFeed(16)
        self.settlement_feed: EventFeed[SlotSettlement] = EventFeed(16)
        self._book_seq = 0
        self._order_meta: OrderedDict[bytes, _OrderMeta] = OrderedDict()
        self._own: OrderedDict[bytes, Order] = OrderedDict()
        self._cancelled: set[bytes] = set()
        self._trades: OrderedDict[bytes, TradeView] = OrderedDict()
        self._scanned: dict[bytes, int] = {}          # account → next seq the follower reads
        self._peer_since: dict[bytes, int] = {}
        self._own_forecasts: TelemetryForecasts | None = None
        self._running = False
        # Trades found by the first ledger scan are history: kept for trade_list but not streamed
        # (so metrics do not count them again after a restart); every later trade is streamed.
        self._history_read = False
        self._approvals = trio.Lock()       # one neighbour's approval at a time (p2pgrid.onboarding.api)

    @property
    def zone(self) -> str:
        return self.node.zone

    def _now(self) -> int:
        return self.node.clock.now_ms()

    def _trading(self) -> TradingService:
        if self.node.trading is None:
            raise NotAvailable("trading is not available on this node: it runs no ledger "
                               "(the zone config has no validators or gateway)")
        return self.node.trading

    def _ledger(self) -> LedgerService:
        if self.node.ledger is None:
            raise NotAvailable("the ledger is not available on this node (the zone config has no "
                               "validators or gateway)")
        return self.node.ledger

    def _check_zone(self, zone: str) -> None:
        if zone != self.zone:
            raise WrongZone(f"this node trades in zone {self.zone!r}, not {zone!r}")

    # --- MarketView ---------------------------------------------------------------------------

    async def node_info(self) -> NodeInfo:
        rules = self.node.config.zone.slot_rules
        height = self.node.ledger.state.height if self.node.ledger is not None else 0
        return NodeInfo(self.node.key.public_key, peer_id_base58(self.node.key.public_key), self.zone,
                        self.node.config.node.role, p2pgrid.__version__, self._now(), rules.length_s,
                        rules.horizon_s, rules.gate_s, height)

    async def peers(self) -> list[PeerInfo]:
        now = self._now()
        current = self.node.transport.peers()
        self._peer_since = {p: self._peer_since.get(p, now) for p in current}
        # The transport reports neither a peer's addresses nor when it connected: connected_ms is
        # when this API first saw the peer connected.
        return [PeerInfo(peer_id_base58(p), (), self._peer_since[p]) for p in sorted(current)]

    async def book(self, zone: str, slot: int, depth: int) -> BookSnapshot:
        trading = self._trading()
        if zone != self.zone and trading.locality.trades_with(zone):
            # A neighbour zone's book, at the prices a taker here pays or gets after the grid fee.
            levels = trading.neighbour_depths(slot, depth)[zone]
        else:
            self._check_zone(zone)
            levels = trading.books.depth(slot, depth, now_ms=trading.clock())
        return BookSnapshot(zone, slot, self._book_seq,
                            tuple(BookLevel(lv.price, lv.qty_wh, lv.orders) for lv in levels.bids),
                            tuple(BookLevel(lv.price, lv.qty_wh, lv.orders) for lv in levels.asks))

    async def pools(self, zone: str, slot: int | None) -> list[PoolView]:
        self._check_zone(zone)
        self._trading()
        return []    # no node hosts or tracks AMM pools yet: there are none to show

    async def route_quote(self, zone: str, slot: int, side: Side, qty_wh: int,
                          limit_price: int | None) -> RouteQuote:
        self._check_zone(zone)
        plan = self._trading().quote(side, qty_wh, slot, limit_price)
        legs = []
        for leg in plan.legs:
            if isinstance(leg, BookLeg):
                legs.append(RouteLeg(Venue.BOOK, leg.order_id, leg.qty_wh, leg.value_uc))
            elif isinstance(leg, PoolLeg):
                legs.append(RouteLeg(Venue.POOL, leg.pool_id, leg.energy_wh, leg.credits_uc))
        filled = plan.filled_wh
        return RouteQuote(zone, slot, side, qty_wh, filled, plan.total_uc,
                          plan.total_uc * 1000 // filled if filled else 0, tuple(legs))

    # --- Trading ------------------------------------------------------------------------------

    async def place_order(self, request: OrderRequest) -> OrderView:
        self._check_zone(request.zone)
        trading = self.node.trading
        now = self._now()
        rules = self.node.config.zone.slot_rules
        if not rules.is_tradable(request.slot, now):
            raise InvalidOrder(f"slot {request.slot} is not open for trading")
        if request.green and not request.source.is_green:
            raise InvalidOrder(f"a green order needs a green source, not {request.source.value!r}")
        expiry = request.expiry_ms if request.expiry_ms is not None else rules.gate_closure_ms(request.slot)
        if expiry <= now:
            raise InvalidOrder(f"expiry {expiry} ms is not after now ({now} ms)")
        if trading is None:
            # No ledger, no trading service: the node signs and gossips the order (every book of
            # the zone shows it), as its own strategies' orders; nobody can take it.
            signed = self.node.place_order(request.side, request.qty_wh, request.limit_price, request.slot,
                                           green=request.green, source=request.source, ttl_ms=expiry - now)
        else:
            try:
                signed = trading.place_order(request.side, request.qty_wh, request.limit_price, request.slot,
                                             green=request.green, source=request.source, expiry_ms=expiry)
            except TradingError as exc:
                raise InvalidOrder(str(exc)) from exc
            self.node.stats.orders_published += 1
        self._remember_own(signed.body)
        return self._order_view(signed.body, now)

    async def cancel_order(self, order_id: bytes) -> OrderView:
        trading = self._trading()
        order = self._own_order(order_id)
        now = self._now()
        if order is None:
            raise UnknownOrder(f"no order {order_id.hex()} of this node")
        view = self._order_view(order, now)
        if view.status is not OrderStatus.OPEN or order_id not in trading.own_orders:
            raise UnknownOrder(f"order {order_id.hex()} is already {view.status.value}")
        trading.cancel_order(order_id)
        self._cancelled.add(order_id)
        return self._order_view(order, now)

    async def list_orders(self, open_only: bool) -> list[OrderView]:
        trading = self._trading()
        for signed in trading.own_orders.values():
            self._remember_own(signed.body)
        now = self._now()
        views = [self._order_view(order, now) for order in self._own.values()]
        return [v for v in views if not open_only or v.status is OrderStatus.OPEN]

    async def execute_trade(self, zone: str, slot: int, side: Side, qty_wh: int,
                            limit_price: int | None) -> Execution:
        self._check_zone(zone)
        trading = self._trading()
        if not self.node.config.zone.slot_rules.is_tradable(slot, self._now()):
            raise InvalidOrder(f"slot {slot} is not open for trading")
        report = await trading.execute(side, qty_wh, slot, limit_price)
        if not report.executions and report.problems:
            raise TradingError("nothing was filled: " + "; ".join(report.problems)[:400])
        me = self.node.key.public_key
        trades = []
        for e in report.executions:
            buyer, seller = (me, e.counterparty) if side is Side.BUY else (e.counterparty, me)
            known = self._trades.get(e.take_id)
            trade = known or TradeView(e.take_id, e.order_id, buyer, seller, self.zone, slot, e.qty_wh, e.price,
                                       e.value_uc, Venue.BOOK, True, self._now())
            self._record_trade(trade)
            trades.append(trade)
        return Execution(side, qty_wh, report.filled_wh, report.total_uc, tuple(trades))

    def trade_ids(self) -> list[bytes]:
        """Ids of the trades this node knows, in the order it learnt them."""
        return list(self._trades)

    def recent_trades(self, limit: int) -> list[TradeView]:
        """This node's last ``limit`` known trades, newest first (for the status file)."""
        found = []
        for trade in reversed(self._trades.values()):
            found.append(trade)
            if len(found) >= limit:
                break
        return sorted(found, key=lambda t: t.at_ms, reverse=True)

    async def list_trades(self, since_ms: int, limit: int) -> list[TradeView]:
        found = sorted((t for t in self._trades.values() if t.at_ms >= since_ms), key=lambda t: t.at_ms)
        return found[:limit]

    # --- LedgerView ---------------------------------------------------------------------------

    async def balance(self, account: bytes) -> Balance:
        state = self._ledger().state
        locked = sum(r.lock.amount for r in state.locks.values()
                     if r.buyer == account and r.status is LockStatus.OPEN)
        return Balance(account, state.balance(account), locked, state.head(account).next_seq - 1)

    async def ledger_entry(self, account: bytes, seq: int) -> LedgerEntryView:
        signed = await self._ledger().store.get_entry(account, seq) if seq >= 0 else None
        if signed is None:
            raise UnknownEntry(f"no certified entry {seq} in the chain of {account.hex()}")
        entry = signed.body
        return LedgerEntryView(entry.account, entry.seq, entry.prev_hash, entry_hash(signed), entry.kind,
                               entry.body, True, entry.time_ms)

    # --- Settlement (p2pgrid.settlement.api) ----------------------------------------------------

    async def settlement(self, slot: int) -> SlotSettlement:
        return await SettlementApi(self.node).settlement(slot)

    async def certificates(self, account: bytes) -> list[Certificate]:
        return await SettlementApi(self.node).certificates(account)

    # --- DeviceView ---------------------------------------------------------------------------

    def _devices(self, what: str) -> DeviceService:
        devices = getattr(self.node, "telemetry", None)
        if isinstance(devices, DeviceService):
            return devices
        if any(isinstance(service, DeviceService) for service in self.node.services):
            raise NoReadingYet(f"{what}: the device service of this node is starting")
        raise NotAvailable(f"{what} is not available on this node: it runs no device service (no devices)")

    async def telemetry(self) -> Telemetry:
        return telemetry_view(self._devices("telemetry"), self._now())

    async def forecast(self, slots: int) -> Forecast:
        devices = self._devices("forecasts")
        now = self._now()
        config = self.node.config
        slot_s = config.zone.slots.length_s
        first = config.zone.slot_rules.slot_of(now)
        load_fc, pv_fc = self._forecasters(devices)
        load_now, pv_now = devices.reading(DeviceKind.LOAD), devices.reading(DeviceKind.PV)
        # As the agent plans before any slot was measured: the current power held constant.
        load_fallback = (load_now.power_w if load_now is not None else config.devices.base_load_w) * slot_s / 3600
        pv_fallback = (pv_now.power_w if pv_now is not None else 0.0) * slot_s / 3600
        load = load_fc.values_for(first, slots, load_fallback) if load_fc else [load_fallback] * slots
        pv = pv_fc.values_for(first, slots, pv_fallback) if pv_fc else [pv_fallback] * slots
        made = _made_ms(load_fc)
        points = tuple(ForecastPoint(first + k * slot_s, max(0, round(pv[k])), max(0, round(load[k])))
                       for k in range(slots))
        return Forecast(made if made is not None else now, points)

    def _forecasters(self, devices: DeviceService) -> tuple[SeriesForecaster | None, SeriesForecaster | None]:
        """The agent's gates when it runs (what it plans on); else this API's own over ``devices``."""
        agent = getattr(self.node, "agent", None)
        if isinstance(agent, AgentTrader):
            return agent.load, agent.pv
        if self._own_forecasts is None:
            config = self.node.config
            self._own_forecasts = TelemetryForecasts(config.zone.slots.length_s, config.agent.horizon_slots + 2)
        self._own_forecasts.update(devices.completed_slots())
        return self._own_forecasts.load, self._own_forecasts.pv

    # --- Shares (p2pgrid.shares.api) -------------------------------------------------------

    async def share_programmes(self) -> list[ShareProgrammeView]:
        return await ShareApi(self.node).programmes()

    async def share_buy(self, programme_id: bytes, shares: int, wait_s: int) -> ShareBuyView:
        return await ShareApi(self.node).buy(programme_id, shares, wait_s)

    async def share_exit(self, programme_id: bytes, shares: int) -> ShareExitView:
        return await ShareApi(self.node).exit(programme_id, shares)

    async def share_positions(self) -> list[SharePositionView]:
        return await ShareApi(self.node).positions()

    # --- Charging (p2pgrid.charging.api) --------------------------------------------------

    async def charge_tariffs(self, station: bytes | None) -> list[ChargeTariffView]:
        return await ChargingApi(self.node).tariffs(station)

    async def charge_start(self, tariff_id: bytes, max_wh: int, wait_s: int, hours: int) -> ChargeSessionView:
        return await ChargingApi(self.node).start(tariff_id, max_wh, wait_s, hours)

    async def charge_sessions(self, role: ChargeRole) -> list[ChargeSessionView]:
        return await ChargingApi(self.node).sessions(role)

    async def charge_release(self, session_id: bytes) -> ChargeSessionView:
        return await ChargingApi(self.node).release(session_id)

    # --- Gateway (p2pgrid.onboarding.api) ----------------------------------------------------

    async def approve_member(self, account: bytes, meter_key: bytes, export_w: int,
                             fund_uc: int | None) -> ApprovalView:
        return await GatewayApi(self.node, self._approvals).approve(account, meter_key, export_w, fund_uc)
    # --- Flex (p2pgrid.flex.api) ------------------------------------------------------------

    async def flex_requests(self) -> list[FlexRequestView]:
        return await FlexApi(self.node).requests()

    async def flex_offers(self, request_id: bytes | None) -> list[FlexOfferView]:
        return await FlexApi(self.node).offers(request_id)

    async def flex_awards(self, request_id: bytes | None) -> list[FlexAwardView]:
        return await FlexApi(self.node).awards(request_id)

    async def flex_settlements(self, request_id: bytes | None) -> list[FlexSettlementView]:
        return await FlexApi(self.node).settlements(request_id)

    async def flex_request(self, request: FlexRequestOrder) -> FlexRequestView:
        return await FlexApi(self.node).request(request)

    # --- EventSource --------------------------------------------------------------------------

    def book_events(self) -> AsyncIterator[BookUpdate]:
        return self.book_feed.stream()

    def fill_events(self) -> AsyncIterator[TradeView]:
        return self.fill_feed.stream()

    def telemetry_events(self) -> AsyncIterator[Telemetry]:
        return self.telemetry_feed.stream()

    def settlement_events(self) -> AsyncIterator[SlotSettlement]:
        return self.settlement_feed.stream()

    # --- running ------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Drain the book changes and follow the ledger until cancelled."""
        if self._running:
            raise RuntimeError("LiveNodeApi.run is already running (the book channel has one reader)")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                if self.node.trading is not None:
                    nursery.start_soon(self._pump_book_changes, self.node.trading)
                if self.node.ledger is not None:
                    nursery.start_soon(self._follow_ledger, self.node.ledger)
                nursery.start_soon(self._follow_telemetry)
                task_status.started()
        finally:
            self._running = False

    async def _follow_telemetry(self) -> None:
        """Publish the telemetry view whenever a new reading arrived (polled: see module docstring)."""
        await self.node.wait_started()       # the device service starts after this one
        devices = getattr(self.node, "telemetry", None)
        if not isinstance(devices, DeviceService):
            return
        period_s = max(0.05, self.node.config.devices.sample_period_ms / 1000)
        last_at: int | None = None
        while True:
            try:
                view = telemetry_view(devices, self._now())
            except NoReadingYet:
                view = None
            if view is not None and view.at_ms != last_at:
                last_at = view.at_ms
                self.telemetry_feed.publish(view)
            await trio.sleep(period_s)

    async def _pump_book_changes(self, trading: TradingService) -> None:
        async for change in trading.book_changes:
            self.on_book_change(trading, change)

    def on_book_change(self, trading: TradingService, change: BookChange) -> None:
        """Publish the new total of the price level ``change`` touched."""
        if change.change == "ignored":
            return
        signed = trading.books.signed_order(change.order_id)
        if signed is not None:
            meta = _OrderMeta(signed.body.slot, signed.body.side, signed.body.limit_price)
            self._order_meta[change.order_id] = meta
            if len(self._order_meta) > MAX_ORDER_META:
                self._order_meta.popitem(last=False)
        else:
            found = self._order_meta.get(change.order_id)
            if found is None:
                return
            meta = found
        depth = trading.books.depth(meta.slot, now_ms=trading.clock())
        levels = depth.bids if meta.side is Side.BUY else depth.asks
        level = next((lv for lv in levels if lv.price == meta.price), None)
        self._book_seq += 1
        self.book_feed.publish(BookUpdate(self.zone, meta.slot, self._book_seq, meta.side, meta.price,
                                          level.qty_wh if level else 0, level.orders if level else 0))

    async def _follow_ledger(self, ledger: LedgerService) -> None:
        await self.scan_ledger(ledger)
        self._history_read = True
        while True:
            # Wait from what was *read*: entries applied while the scan awaited the store count.
            await ledger.wait_for_height(sum(self._scanned.values()) + 1)
            await trio.sleep(FOLLOW_LINGER_S)
            await self.scan_ledger(ledger)

    async def scan_ledger(self, ledger: LedgerService) -> int:
        """Read the certified entries applied since the last scan; record this node's fills.
        Returns how many entries were read."""
        read = 0
        for account, head in list(ledger.state.heads.items()):
            start = self._scanned.get(account, 0)
            while start < head.next_seq:
                entries = [s for s in await ledger.store.account_entries(account, start, head.next_seq - start)
                           if s.body.seq < head.next_seq]
                if not entries:
                    break    # stored but not visible yet: read it next time
                for signed in entries:
                    if signed.body.kind == "fill":
                        self._on_fill(signed.body.account, decode_body(signed.body))
                    elif signed.body.kind in SETTLE_KINDS:      # settle, settle_ppa
                        self._on_settle(ledger.state, decode_body(signed.body).settle_body)
                start = entries[-1].body.seq + 1
                read += len(entries)
            self._scanned[account] = start
        return read

    def _on_fill(self, seller: bytes, fill: Fill) -> None:
        me = self.node.key.public_key
        if me not in (seller, fill.buyer) or fill.take_id in self._trades:
            return
        self._record_trade(TradeView(fill.take_id, fill.order_id, fill.buyer, seller, self.zone,
                                     self._slot_of(fill.order_id), fill.qty_wh, fill.price,
                                     trade_value(fill.qty_wh, fill.price), Venue.BOOK, True, self._now()))

    def _on_settle(self, state: LedgerState, body: SettleBody) -> None:
        """Stream this node's line of a newly certified settlement (history is not streamed)."""
        settled = settlement_of(state, body.slot)
        me = self.node.key.public_key
        if not self._history_read or settled is None or all(line.account != me for line in settled.lines):
            return
        self.settlement_feed.publish(settlement_view(settled, me, final=True))

    def _record_trade(self, trade: TradeView) -> None:
        if trade.trade_id in self._trades:
            return
        self._trades[trade.trade_id] = trade
        if len(self._trades) > MAX_TRADES_KEPT:
            self._trades.popitem(last=False)
        if self._history_read:
            self.fill_feed.publish(trade)

    # --- orders -------------------------------------------------------------------------------

    def _remember_own(self, order: Order) -> None:
        if order.order_id not in self._own:
            self._own[order.order_id] = order
            if len(self._own) > MAX_ORDERS_KEPT:
                forgotten, _ = self._own.popitem(last=False)
                self._cancelled.discard(forgotten)

    def _own_order(self, order_id: bytes) -> Order | None:
        order = self._own.get(order_id)
        if order is None and self.node.trading is not None:
            signed = self.node.trading.own_orders.get(order_id)
            if signed is not None:
                order = signed.body
                self._remember_own(order)
        return order

    def _slot_of(self, order_id: bytes) -> int:
        own = self._own_order(order_id)
        if own is not None:
            return own.slot
        meta = self._order_meta.get(order_id)
        return meta.slot if meta is not None else 0

    def _order_view(self, order: Order, now: int) -> OrderView:
        filled = 0
        if self.node.ledger is not None:
            progress = self.node.ledger.state.orders.get((order.owner, order.order_id))
            filled = progress.filled_wh if progress is not None else 0
        rules = self.node.config.zone.slot_rules
        if order.order_id in self._cancelled:
            status = OrderStatus.CANCELLED
        elif filled >= order.qty_wh:
            status = OrderStatus.FILLED
        elif now >= min(order.expiry_ms, rules.gate_closure_ms(order.slot)):
            status = OrderStatus.EXPIRED
        else:
            status = OrderStatus.OPEN
        return OrderView(order.order_id, order.owner, order.zone, order.slot, order.side, order.qty_wh, filled,
                         order.limit_price, order.green, order.source, status, order.created_ms, order.expiry_ms)
