"""The RPC methods: names, typed params, and the one ``NodeApi`` call each makes.

Each handler is typed against the narrow capability it uses (``MarketView``, ``Trading``,
``LedgerView``, ``DeviceView``), takes already-checked params (see ``p2pgrid.rpc.codec``) and
returns an api value that the server turns into JSON. ``API.md`` documents every method; the
table at the bottom (``METHODS``) is the single list the server serves.
"""

from __future__ import annotations

from typing import Any, Mapping

from p2pgrid.rpc import codec as c
from p2pgrid.rpc.api import (Balance, BookSnapshot, Certificate, DeviceView, Execution, Forecast,
                             LedgerEntryView, LedgerView, MarketView, NodeInfo, OrderRequest,
                             OrderView, PeerInfo, PoolView, RouteQuote, SlotSettlement, Telemetry,
                             TradeView, Trading)
from p2pgrid.rpc.api import ShareBuyView, ShareExitView, SharePositionView, ShareProgrammeView, Shares
from p2pgrid.rpc.api import ChargeRole, ChargeSessionView, ChargeTariffView, Charging
from p2pgrid.rpc.api import ApprovalView, Gateway
from p2pgrid.rpc.api import (Flex, FlexAwardView, FlexOfferView, FlexRequestOrder, FlexRequestView,
                             FlexSettlementView)
from p2pgrid.rpc.jsonrpc import Method
from p2pgrid.rpc.subscriptions import Session, Topic
from p2pgrid.wire import MAX_PRICE, MAX_QTY_WH, PUBLIC_KEY_SIZE, ZONE_PATTERN, Side, Source

ORDER_ID_SIZE = 16
MAX_DEPTH = 500
MAX_LIST = 10_000

P = Mapping[str, Any]

zone = c.Param("zone", c.text(ZONE_PATTERN), doc="zone id")
slot = c.Param("slot", c.integer(), doc="slot start, Unix seconds")
side = c.Param("side", c.choice(Side), doc='"buy" or "sell" (the caller\'s side)')
qty_wh = c.Param("qty_wh", c.integer(1, MAX_QTY_WH), doc="energy, Wh")
limit_price = c.Param("limit_price", c.optional(c.integer(0, MAX_PRICE)), None,
                      doc="worst acceptable price, µc/kWh (null: no limit)")
account = c.Param("account", c.hex_bytes(PUBLIC_KEY_SIZE), doc="account public key, hex")


async def node_info(node: MarketView, p: P, s: Session) -> NodeInfo:
    return await node.node_info()


async def peers_list(node: MarketView, p: P, s: Session) -> list[PeerInfo]:
    return await node.peers()


async def book_get(node: MarketView, p: P, s: Session) -> BookSnapshot:
    return await node.book(p["zone"], p["slot"], p["depth"])


async def pool_list(node: MarketView, p: P, s: Session) -> list[PoolView]:
    return await node.pools(p["zone"], p["slot"])


async def route_quote(node: MarketView, p: P, s: Session) -> RouteQuote:
    return await node.route_quote(p["zone"], p["slot"], p["side"], p["qty_wh"], p["limit_price"])


async def order_place(node: Trading, p: P, s: Session) -> OrderView:
    return await node.place_order(OrderRequest(**p))


async def order_cancel(node: Trading, p: P, s: Session) -> OrderView:
    return await node.cancel_order(p["order_id"])


async def order_list(node: Trading, p: P, s: Session) -> list[OrderView]:
    return await node.list_orders(p["open_only"])


async def trade_execute(node: Trading, p: P, s: Session) -> Execution:
    return await node.execute_trade(p["zone"], p["slot"], p["side"], p["qty_wh"], p["limit_price"])


async def trade_list(node: Trading, p: P, s: Session) -> list[TradeView]:
    return await node.list_trades(p["since_ms"], p["limit"])


async def ledger_balance(node: LedgerView, p: P, s: Session) -> Balance:
    return await node.balance(p["account"])


async def ledger_entry(node: LedgerView, p: P, s: Session) -> LedgerEntryView:
    return await node.ledger_entry(p["account"], p["seq"])


async def settlement_get(node: LedgerView, p: P, s: Session) -> SlotSettlement:
    return await node.settlement(p["slot"])


async def certs_list(node: LedgerView, p: P, s: Session) -> list[Certificate]:
    return await node.certificates(p["account"])


async def telemetry_get(node: DeviceView, p: P, s: Session) -> Telemetry:
    return await node.telemetry()


async def forecast_get(node: DeviceView, p: P, s: Session) -> Forecast:
    return await node.forecast(p["slots"])


async def subscribe(node: object, p: P, s: Session) -> str:
    topic: Topic = p["topic"]
    if topic is not Topic.BOOK and (p["zone"] is not None or p["slot"] is not None):
        raise c.InvalidParams("zone and slot filters apply to the book topic only")
    return s.hub.subscribe(topic, s.require_outbox(), p["zone"], p["slot"]).sub_id


async def unsubscribe(node: object, p: P, s: Session) -> bool:
    s.hub.unsubscribe(p["subscription"], s.require_outbox())
    return True


# --- pool shares --------------------------------------------------------------------------------

PROGRAMME_ID_SIZE = 16
MAX_SHARES = 10**12
MAX_SHARE_WAIT_S = 60


async def shares_programmes(node: Shares, p: P, s: Session) -> list[ShareProgrammeView]:
    return await node.share_programmes()


async def shares_buy(node: Shares, p: P, s: Session) -> ShareBuyView:
    return await node.share_buy(p["programme_id"], p["shares"], p["wait_s"])


async def shares_exit(node: Shares, p: P, s: Session) -> ShareExitView:
    return await node.share_exit(p["programme_id"], p["shares"])


async def shares_positions(node: Shares, p: P, s: Session) -> list[SharePositionView]:
    return await node.share_positions()


programme_id = c.Param("programme_id", c.hex_bytes(PROGRAMME_ID_SIZE), doc="share programme id, 32 hex digits")
share_count = c.Param("shares", c.integer(1, MAX_SHARES), doc="number of shares")


# --- public EV charging ---------------------------------------------------------------------------

CHARGE_ID_SIZE = 16
MAX_CHARGE_WAIT_S = 60
MAX_CHARGE_HOURS = 48          # p2pgrid.charging.rules.MAX_SESSION_MS


async def charging_tariffs(node: Charging, p: P, s: Session) -> list[ChargeTariffView]:
    return await node.charge_tariffs(p["station"])


async def charging_start(node: Charging, p: P, s: Session) -> ChargeSessionView:
    return await node.charge_start(p["tariff_id"], p["max_wh"], p["wait_s"], p["hours"])


async def charging_sessions(node: Charging, p: P, s: Session) -> list[ChargeSessionView]:
    return await node.charge_sessions(p["role"])


async def charging_release(node: Charging, p: P, s: Session) -> ChargeSessionView:
    return await node.charge_release(p["session_id"])


# --- the zone gateway admitting neighbours -----------------------------------------------------------

MAX_EXPORT_W = 10**9
MAX_FUND_UC = 10**15


async def gateway_approve(node: Gateway, p: P, s: Session) -> ApprovalView:
    return await node.approve_member(p["account"], p["meter_key"], p["export_w"], p["fund_uc"])
# --- flexibility (virtual power plant) -----------------------------------------------------------

FLEX_ID_SIZE = 16
MAX_FLEX_SLOTS = 96            # p2pgrid.flex.entries.MAX_FLEX_SLOTS
flex_request_id = c.Param("request_id", c.optional(c.hex_bytes(FLEX_ID_SIZE)), None,
                          doc="request id, 32 hex digits (null: this node's own)")


async def flex_requests(node: Flex, p: P, s: Session) -> list[FlexRequestView]:
    return await node.flex_requests()


async def flex_offers(node: Flex, p: P, s: Session) -> list[FlexOfferView]:
    return await node.flex_offers(p["request_id"])


async def flex_awards(node: Flex, p: P, s: Session) -> list[FlexAwardView]:
    return await node.flex_awards(p["request_id"])


async def flex_settlements(node: Flex, p: P, s: Session) -> list[FlexSettlementView]:
    return await node.flex_settlements(p["request_id"])


async def flex_request(node: Flex, p: P, s: Session) -> FlexRequestView:
    return await node.flex_request(FlexRequestOrder(**p))


def _method(name: str, call: Any, summary: str, *params: c.Param[Any]) -> Method:
    return Method(name, tuple(params), call, summary)


METHODS: dict[str, Method] = {m.name: m for m in [
    _method("node_info", node_info, "identity, zone, clock and slot calendar of the node"),
    _method("peers_list", peers_list, "connected peers"),
    _method("book_get", book_get, "aggregated depth of one (zone, slot) book", zone, slot,
            c.Param("depth", c.integer(1, MAX_DEPTH), 20, doc="levels per side")),
    _method("pool_list", pool_list, "AMM pools of a zone", zone,
            c.Param("slot", c.optional(c.integer()), None, doc="slot start (null: all slots)")),
    _method("route_quote", route_quote, "best split of a take between book and pools; executes nothing",
            zone, slot, side, qty_wh, limit_price),
    _method("order_place", order_place, "place a limit order signed by this node",
            zone, slot, side, qty_wh,
            c.Param("limit_price", c.integer(0, MAX_PRICE), doc="limit price, µc/kWh"),
            c.Param("green", c.boolean, False, doc="offer green energy (needs a green source)"),
            c.Param("source", c.choice(Source), Source.NONE, doc="energy source of an offer"),
            c.Param("expiry_ms", c.optional(c.integer()), None, doc="expiry, Unix ms (null: gate closure)")),
    _method("order_cancel", order_cancel, "cancel what is left of one of this node's orders",
            c.Param("order_id", c.hex_bytes(ORDER_ID_SIZE), doc="order id, 32 hex digits")),
    _method("order_list", order_list, "this node's orders",
            c.Param("open_only", c.boolean, True, doc="only orders still open")),
    _method("trade_execute", trade_execute, "take liquidity now along the best route",
            zone, slot, side, qty_wh, limit_price),
    _method("trade_list", trade_list, "this node's trades, oldest first",
            c.Param("since_ms", c.integer(), 0, doc="only trades at or after this instant"),
            c.Param("limit", c.integer(1, MAX_LIST), 100, doc="at most this many")),
    _method("ledger_balance", ledger_balance, "certified balance of an account", account),
    _method("ledger_entry", ledger_entry, "one entry of an account chain", account,
            c.Param("seq", c.integer(), doc="position in the account chain, from 0")),
    _method("telemetry_get", telemetry_get, "latest device readings"),
    _method("forecast_get", forecast_get, "PV and load forecast for the next slots",
            c.Param("slots", c.integer(1, 96 * 7), 8, doc="number of slots")),
    _method("settlement_get", settlement_get, "this node's settlement of one slot", slot),
    _method("certs_list", certs_list, "green certificates held by an account", account),
    _method("subscribe", subscribe, "WebSocket only: stream a topic as notifications",
            c.Param("topic", c.choice(Topic), doc='"book", "fills", "telemetry" or "settlements"'),
            c.Param("zone", c.optional(c.text(ZONE_PATTERN)), None, doc="book only: one zone"),
            c.Param("slot", c.optional(c.integer()), None, doc="book only: one slot")),
    _method("unsubscribe", unsubscribe, "WebSocket only: stop a subscription",
            c.Param("subscription", c.text(r"[0-9a-f]{1,32}"), doc="id returned by subscribe")),
    # pool shares
    _method("shares_programmes", shares_programmes, "certified share programmes: terms and shares left"),
    _method("shares_buy", shares_buy, "buy shares of a programme (escrow, then the host issues them)",
            programme_id, share_count,
            c.Param("wait_s", c.integer(0, MAX_SHARE_WAIT_S), 10, doc="seconds to wait for the host's issue")),
    _method("shares_exit", shares_exit, "ask the host to redeem shares at par after the lock-up",
            programme_id, share_count),
    _method("shares_positions", shares_positions, "this node's share positions"),
    # public EV charging
    _method("charging_tariffs", charging_tariffs, "charging tariffs of the zone open now",
            c.Param("station", c.optional(c.hex_bytes(PUBLIC_KEY_SIZE)), None, doc="one station's only (null: all)")),
    _method("charging_start", charging_start, "plug in now: escrow the price of at most max_wh under a tariff",
            c.Param("tariff_id", c.hex_bytes(CHARGE_ID_SIZE), doc="tariff id, 32 hex digits"),
            c.Param("max_wh", c.integer(1, MAX_QTY_WH), doc="most energy to take, Wh"),
            c.Param("wait_s", c.integer(0, MAX_CHARGE_WAIT_S), 10, doc="seconds to wait for a bill (no car: zero)"),
            c.Param("hours", c.integer(1, MAX_CHARGE_HOURS), 12, doc="the station bills within this many hours")),
    _method("charging_sessions", charging_sessions, "this node's charging sessions",
            c.Param("role", c.choice(ChargeRole), ChargeRole.DRIVER, doc='"driver" or "station"')),
    _method("charging_release", charging_release, "take back an unbilled session's escrow after its deadline",
            c.Param("session_id", c.hex_bytes(CHARGE_ID_SIZE), doc="session id, 32 hex digits")),
    # the zone gateway
    _method("gateway_approve", gateway_approve,
            "as the zone gateway: register a neighbour's meter (with its export capacity) and fund it", account,
            c.Param("meter_key", c.hex_bytes(PUBLIC_KEY_SIZE), doc="the neighbour's meter public key, hex"),
            c.Param("export_w", c.integer(0, MAX_EXPORT_W), doc="what the connection can export, W"),
            c.Param("fund_uc", c.optional(c.integer(0, MAX_FUND_UC)), None,
                    doc="credits to mint to a new account, µc (null: the gateway's [gateway] fund_uc)")),
    # flexibility
    _method("flex_requests", flex_requests, "certified flexibility requests of the zone, with their status"),
    _method("flex_offers", flex_offers, "offers of one request (null: this node's offers)", flex_request_id),
    _method("flex_awards", flex_awards, "awarded offers of one request (null: this node's awards)", flex_request_id),
    _method("flex_settlements", flex_settlements, "settlement lines of one request (null: this node's)",
            flex_request_id),
    _method("flex_request", flex_request, "zone operator or granted DSO: post a flexibility request",
            c.Param("feeder", c.text(r".{0,32}"), doc="feeder or area the request is for (a label)"),
            c.Param("direction", c.text(r"down|up"), doc='"down": less import / more export; "up": the opposite'),
            c.Param("first_slot", c.integer(0), doc="first slot start, Unix seconds"),
            c.Param("n_slots", c.integer(1, MAX_FLEX_SLOTS), doc="consecutive slots"),
            c.Param("qty_wh", c.integer(1, MAX_QTY_WH), doc="flexibility wanted per slot, Wh"),
            c.Param("price_uc_per_kwh", c.integer(1, MAX_PRICE), doc="most paid per delivered kWh, µc"),
            c.Param("penalty_uc_per_kwh", c.integer(0, MAX_PRICE), doc="charged per awarded kWh not delivered, µc"),
            c.Param("offer_deadline_ms", c.integer(0), doc="offers signed before this, Unix ms"),
            c.Param("excluded_days", c.array(c.integer(0), 31), (), doc="holidays the baselines skip, Unix days"),
            c.Param("grant_seq", c.integer(-1), -1, doc="a DSO: seq of its flex_grant in the gateway's chain")),
]}

# Power purchase agreements: their methods live with their package (p2pgrid.ppa.api).
from p2pgrid.ppa.api import register_methods as _register_ppa_methods  # noqa: E402

_register_ppa_methods(METHODS)
