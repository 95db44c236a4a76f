"""The boundary between the RPC server and the node: what RPC handlers may ask of a node.

The node implements ``NodeApi`` (a ``typing.Protocol``: no base class, structural typing); the
RPC layer never imports the node, the market, the ledger or libp2p. Every value crossing this
boundary is a frozen dataclass below, built only from ``int``, ``bool``, ``str``, ``bytes``, the
wire enums (``Side``, ``Source``), ``tuple``\\ s and ``None`` — so ``p2pgrid.rpc.codec`` can turn
each into JSON mechanically (bytes as lowercase hex, everything else as is).

Units, as everywhere in p2pgrid: energy in integer **Wh**, money in integer **µc**, prices in
integer **µc per kWh**, instants in **Unix milliseconds (UTC)**, slots named by their start in
**Unix seconds**. Power readings are integer watts (W). Ids and accounts are ``bytes`` (order ids
16 bytes, accounts = Ed25519 public keys, 32 bytes).

The protocol is split into small capability protocols so each handler is typed against only what
it needs (``book_get`` sees a ``MarketView``; ``order_place`` a ``Trading``), and a test double
can implement just one part. ``NodeApi`` is their union.

Errors: a method raises a ``P2PGridError`` subclass when the *caller* asked for something the
node refuses (unknown order, slot not tradable, nothing found): the server maps the category to
a JSON-RPC application error code (see ``p2pgrid.rpc.errors``). Anything else is a bug and is
reported to the client as ``-32603 internal error``.

Event streams: each ``*_events()`` method returns an async iterator that the server drains with
**one** task for the node's whole lifetime, fanning events out to subscribers without ever
waiting on a client. The node should feed it from a bounded channel with ``send_nowait`` (so a
stuck RPC server can't block the node either) — ``p2pgrid.rpc.feed.EventFeed`` does exactly
that (``p2pgrid.node.api`` uses it).
"""

from __future__ import annotations

import enum
import inspect
from dataclasses import dataclass
from typing import AsyncIterator, Protocol

from p2pgrid.wire import Side, Source

__all__ = [
    "Balance", "BookLevel", "BookSnapshot", "BookUpdate", "Certificate", "CertificateStatus",
    "DeviceView", "EventSource", "Execution", "Forecast", "ForecastPoint", "LedgerEntryView",
    "LedgerView", "MarketView", "NodeApi", "NodeInfo", "OrderRequest", "OrderStatus", "OrderView",
    "PeerInfo", "PoolView", "RouteLeg", "RouteQuote", "Side", "SlotSettlement", "Source",
    "Telemetry", "TradeView", "Trading", "Venue", "node_api_mismatches",
    "ShareBuyStatus", "ShareBuyView", "ShareExitView", "SharePositionView", "ShareProgrammeView", "Shares",
    "ChargeRole", "ChargeSessionStatus", "ChargeSessionView", "ChargeTariffView", "Charging",
    "ApprovalView", "Gateway",
    "Flex", "FlexAwardView", "FlexOfferView", "FlexRequestOrder", "FlexRequestStatus", "FlexRequestView",
    "FlexSettlementView",
]


# --- values -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeInfo:
    account: bytes            # the node's Ed25519 public key (32 bytes)
    peer_id: str              # libp2p peer id (base58)
    zone: str
    role: str                 # household | consumer | station
    version: str
    now_ms: int               # the node's market clock
    slot_length_s: int
    horizon_s: int
    gate_s: int
    ledger_height: int        # certified entries known to this node


@dataclass(frozen=True)
class PeerInfo:
    peer_id: str
    addrs: tuple[str, ...]
    connected_ms: int


@dataclass(frozen=True)
class BookLevel:
    price: int                # µc/kWh
    qty_wh: int               # total remaining at this price
    orders: int


@dataclass(frozen=True)
class BookSnapshot:
    """Aggregated depth of one (zone, slot) book: bids best (highest) first, asks best (lowest) first."""

    zone: str
    slot: int
    seq: int                  # increases with every change; matches ``BookUpdate.seq``
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]


@dataclass(frozen=True)
class BookUpdate:
    """One price level changed: ``qty_wh`` is the new total at ``price`` (0 = level gone)."""

    zone: str
    slot: int
    seq: int
    side: Side                # side of the resting orders at this level
    price: int
    qty_wh: int
    orders: int


@dataclass(frozen=True)
class PoolView:
    pool_id: bytes
    host: bytes               # the storage node's account
    zone: str
    slot: int
    energy_wh: int            # reserve E
    money_uc: int             # reserve M
    fee_ppm: int              # swap fee, parts per million (γ = 1 - fee_ppm/1e6)
    price: int                # marginal price M·1000/E, µc/kWh (0 for an empty pool)
    frozen: bool              # past gate closure


class Venue(str, enum.Enum):
    BOOK = "book"
    POOL = "pool"


@dataclass(frozen=True)
class RouteLeg:
    venue: Venue
    venue_id: bytes           # maker order id (book) or pool id (pool)
    qty_wh: int
    value_uc: int             # money paid (buy) or received (sell) on this leg


@dataclass(frozen=True)
class RouteQuote:
    """The router's best split for a taker; nothing is executed."""

    zone: str
    slot: int
    side: Side                # the taker's side
    requested_wh: int
    filled_wh: int            # ≤ requested; less when liquidity within the limit runs out
    value_uc: int
    average_price: int        # value·1000/filled, floored; 0 when nothing fills
    legs: tuple[RouteLeg, ...]


@dataclass(frozen=True)
class OrderRequest:
    """What a bot asks for; the node fills in id, owner, nonce, created time and signs it."""

    zone: str
    slot: int
    side: Side
    qty_wh: int
    limit_price: int
    green: bool = False
    source: Source = Source.NONE
    expiry_ms: int | None = None     # None: the slot's gate closure


class OrderStatus(str, enum.Enum):
    OPEN = "open"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(frozen=True)
class OrderView:
    order_id: bytes
    owner: bytes
    zone: str
    slot: int
    side: Side
    qty_wh: int
    filled_wh: int
    limit_price: int
    green: bool
    source: Source
    status: OrderStatus
    created_ms: int
    expiry_ms: int


@dataclass(frozen=True)
class TradeView:
    """A fill in which this node took part (as maker or taker)."""

    trade_id: bytes
    order_id: bytes           # the maker's order, or the pool id for a swap
    buyer: bytes
    seller: bytes
    zone: str
    slot: int
    qty_wh: int
    price: int                # µc/kWh
    value_uc: int             # units.trade_value(qty_wh, price) for book fills
    venue: Venue
    certified: bool           # final in the ledger
    at_ms: int


@dataclass(frozen=True)
class Execution:
    """Result of ``execute_trade``: what was taken now (certification may follow)."""

    side: Side
    requested_wh: int
    filled_wh: int
    value_uc: int
    trades: tuple[TradeView, ...]


@dataclass(frozen=True)
class Balance:
    account: bytes
    balance_uc: int           # certified balance (may be negative only for the zone gateway)
    locked_uc: int            # certified locks not yet consumed or released
    head_seq: int             # certified head of the account chain (-1: empty chain)


@dataclass(frozen=True)
class LedgerEntryView:
    account: bytes
    seq: int
    prev_hash: bytes
    entry_hash: bytes
    kind: str                 # fill, swap, lock, meter, transfer, mint, cert_issue, …
    body: bytes               # canonical msgpack of the entry body
    certified: bool
    time_ms: int = 0          # the owner's signed date of the entry (market Unix ms)


@dataclass(frozen=True)
class Telemetry:
    """The last good reading of each of the node's devices (``at_ms``: the newest of them)."""

    at_ms: int
    pv_w: int
    load_w: int
    battery_w: int            # + charging, − discharging
    grid_w: int               # + import, − export
    soc_wh: int
    capacity_wh: int          # 0: no battery
    stale: tuple[str, ...] = ()   # devices that stopped answering (their last values are shown)


@dataclass(frozen=True)
class ForecastPoint:
    slot: int
    pv_wh: int
    load_wh: int


@dataclass(frozen=True)
class Forecast:
    made_ms: int              # the end of the last measured slot the forecast is based on
    points: tuple[ForecastPoint, ...]


@dataclass(frozen=True)
class SlotSettlement:
    """This node's settlement of one slot (signs: + bought/imported, − sold/exported)."""

    slot: int
    account: bytes
    contracted_wh: int
    metered_wh: int
    imbalance_wh: int         # metered − contracted
    trade_value_uc: int       # paid (+) or received (−) at trade prices
    imbalance_value_uc: int   # paid (+) or received (−) beyond the trades: imbalance prices, grid fees
    settled: bool             # False: provisional, from the certified trades and meter entries so far


class CertificateStatus(str, enum.Enum):
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True)
class Certificate:
    """A range of green certificate units (1 unit = 1 Wh) that ``owner`` holds or retired."""

    cert_id: bytes
    owner: bytes
    slot: int
    qty_wh: int
    source: Source
    status: CertificateStatus
    meter_entry: bytes        # message id of the signed meter reading that issued it


# --- pool shares (p2pgrid.shares.rules) ----------------------------------------------------

@dataclass(frozen=True)
class ShareProgrammeView:
    """A certified share programme: its terms and what is left to buy."""

    programme_id: bytes
    host: bytes
    zone: str
    price_uc: int             # per share, paid back at par
    fee_share_bps: int        # part of the host's pool fees paid to holders
    cap_shares: int
    outstanding_shares: int
    available_shares: int     # cap − outstanding while the sale is open, else 0
    holders: int
    sale_until_ms: int
    sale_open: bool
    lockup_until_slot: int    # no redemption before this slot start (Unix s)
    residents_only: bool
    payouts: int
    paid_uc: int              # fee income paid to holders so far


class ShareBuyStatus(str, enum.Enum):
    ESCROWED = "escrowed"     # credits held in the buyer's escrow, the host has not answered yet
    ISSUED = "issued"         # the host issued the shares
    RETURNED = "returned"     # declined by the host or released by the buyer: credits back


@dataclass(frozen=True)
class ShareBuyView:
    buy_id: bytes
    programme_id: bytes
    host: bytes
    shares: int
    amount_uc: int
    deadline_ms: int          # the escrow comes back to the buyer (release) from then on if not issued
    status: ShareBuyStatus


@dataclass(frozen=True)
class ShareExitView:
    """This node's exit requests in one programme (shares it asked the host to redeem)."""

    programme_id: bytes
    host: bytes
    requested_shares: int     # all exit requests so far
    answered_shares: int      # redeemed in answer so far
    pending_shares: int       # still to redeem (and still held)
    redeemable_from_ms: int   # the lock-up's end


@dataclass(frozen=True)
class SharePositionView:
    programme_id: bytes
    host: bytes
    zone: str
    shares: int
    earning_shares: int       # shares that share the current period's fees
    price_uc: int
    lockup_until_slot: int
    locked: bool              # the lock-up is not over
    invested_uc: int
    redeemed_uc: int
    income_uc: int            # fee income received
    fee_share_bps: int
    payouts: int
    pending_exit_shares: int


# --- public EV charging (p2pgrid.charging.rules) -------------------------------------------------------

@dataclass(frozen=True)
class ChargeTariffView:
    """A certified charging tariff of a station, with its running totals."""

    tariff_id: bytes          # 16 bytes
    station: bytes
    zone: str
    price_uc_per_kwh: int
    connectors: int           # connector metering keys the tariff names
    max_power_w: int          # power of one connector
    max_session_wh: int       # most energy one session may escrow for
    until_ms: int             # no new session from then on
    sessions_billed: int
    sold_wh: int
    revenue_uc: int


class ChargeSessionStatus(str, enum.Enum):
    CHARGING = "charging"     # escrowed, the station may still bill it (until deadline_ms)
    BILLED = "billed"         # the station billed the metered energy; the rest of the escrow came back
    EXPIRED = "expired"       # unbilled past its deadline: the driver may take the escrow back (release)
    RELEASED = "released"     # the driver took the escrow back


class ChargeRole(str, enum.Enum):
    DRIVER = "driver"
    STATION = "station"


@dataclass(frozen=True)
class ChargeSessionView:
    session_id: bytes         # 16 bytes
    tariff_id: bytes
    station: bytes
    driver: bytes
    max_wh: int
    escrow_uc: int            # the price of max_wh, held from the driver's balance
    plugged_in_ms: int
    deadline_ms: int          # the station bills before this; the driver may release from then on
    billed: bool
    delivered_wh: int         # 0 until billed
    amount_uc: int            # paid to the station; 0 until billed
    ended_ms: int             # the connector's end of the session; 0 until billed
    status: ChargeSessionStatus


@dataclass(frozen=True)
class ApprovalView:
    """A neighbour admitted to the zone by its gateway: both entries certified."""

    account: bytes
    meter_key: bytes
    export_w: int             # the registered export capacity, W (meter_registration v2)
    funded_uc: int            # credits minted to the account now (0: none, or funded before)
# --- flexibility: the virtual power plant (p2pgrid.flex) -------------------------------------------

class FlexRequestStatus(str, enum.Enum):
    OPEN = "open"             # offers may still be signed (before the offer deadline)
    CLOSED = "closed"         # the deadline passed, not awarded yet
    AWARDED = "awarded"       # awarded; not settled yet
    SETTLED = "settled"       # settled (later readings may still reconcile it)
    LAPSED = "lapsed"         # its first slot started with no award


@dataclass(frozen=True)
class FlexRequestView:
    """A certified flexibility request of the zone operator (or a granted DSO)."""

    request_id: bytes         # 16 bytes
    requester: bytes
    zone: str
    feeder: str
    direction: str            # "down": less import / more export; "up": more import / less export
    first_slot: int           # Unix s
    n_slots: int
    qty_wh: int               # per slot
    price_uc_per_kwh: int     # cap on offers; each awarded offer is paid its own price
    penalty_uc_per_kwh: int   # per awarded Wh not delivered
    offer_deadline_ms: int
    offers: int               # certified offers
    awarded_wh: int           # over all slots (0 until awarded)
    status: FlexRequestStatus


@dataclass(frozen=True)
class FlexOfferView:
    request_id: bytes
    account: bytes
    price_uc_per_kwh: int
    qty_wh: tuple[int, ...]        # per slot
    baseline_wh: tuple[int, ...]   # committed baseline (net import) per slot
    time_ms: int                   # the offer's signed time
    awarded_wh: tuple[int, ...]    # per slot; zeros until awarded (or not awarded)


@dataclass(frozen=True)
class FlexAwardView:
    """One awarded offer of a request (one row per account in the award)."""

    request_id: bytes
    account: bytes
    price_uc_per_kwh: int
    awarded_wh: tuple[int, ...]    # per slot
    awarded_ms: int                # the award's signed time


@dataclass(frozen=True)
class FlexSettlementView:
    """One awarded node's settlement of a request (the latest, after any reconciliation)."""

    request_id: bytes
    account: bytes
    metered_slots: tuple[int, ...]  # slot indexes with a certified reading counted
    awarded_wh: int
    delivered_wh: int              # baseline − metered (direction-aware), summed, uncapped
    paid_wh: int                   # min(delivered, awarded) per slot, summed
    short_wh: int
    payment_uc: int
    penalty_uc: int
    net_uc: int                    # paid to the node (< 0: it paid)


@dataclass(frozen=True)
class FlexRequestOrder:
    """What ``flex_request`` posts (see ``p2pgrid.flex.entries.FlexRequest``)."""

    feeder: str
    direction: str
    first_slot: int
    n_slots: int
    qty_wh: int
    price_uc_per_kwh: int
    penalty_uc_per_kwh: int
    offer_deadline_ms: int
    excluded_days: tuple[int, ...] = ()
    grant_seq: int = -1


# --- capabilities -------------------------------------------------------------------------------

class MarketView(Protocol):
    """Read-only market state as this node sees it."""

    async def node_info(self) -> NodeInfo: ...

    async def peers(self) -> list[PeerInfo]: ...

    async def book(self, zone: str, slot: int, depth: int) -> BookSnapshot:
        """Up to ``depth`` levels per side. Raises a ``MarketError`` for an unknown zone."""
        ...

    async def pools(self, zone: str, slot: int | None) -> list[PoolView]:
        """Pools of ``zone`` (all slots when ``slot`` is None)."""
        ...

    async def route_quote(self, zone: str, slot: int, side: Side, qty_wh: int,
                          limit_price: int | None) -> RouteQuote: ...


class Trading(Protocol):
    """Acting on the market in this node's name."""

    async def place_order(self, request: OrderRequest) -> OrderView: ...

    async def cancel_order(self, order_id: bytes) -> OrderView:
        """Raises a ``MarketError`` (e.g. ``UnknownOrder``) for an order this node does not own."""
        ...

    async def list_orders(self, open_only: bool) -> list[OrderView]: ...

    async def execute_trade(self, zone: str, slot: int, side: Side, qty_wh: int,
                            limit_price: int | None) -> Execution:
        """Take liquidity now along the router's best split (book and pools)."""
        ...

    async def list_trades(self, since_ms: int, limit: int) -> list[TradeView]:
        """This node's trades at or after ``since_ms``, oldest first, at most ``limit``."""
        ...


class LedgerView(Protocol):
    async def balance(self, account: bytes) -> Balance: ...

    async def ledger_entry(self, account: bytes, seq: int) -> LedgerEntryView:
        """Raises a ``LedgerError`` when the entry is unknown."""
        ...

    async def settlement(self, slot: int) -> SlotSettlement:
        """This node's settlement of ``slot`` (provisional until certified)."""
        ...

    async def certificates(self, account: bytes) -> list[Certificate]:
        """Certificate units ``account`` holds (active) or retired."""
        ...


class DeviceView(Protocol):
    async def telemetry(self) -> Telemetry: ...

    async def forecast(self, slots: int) -> Forecast:
        """The next ``slots`` delivery slots."""
        ...


class EventSource(Protocol):
    """Long-lived event streams; each is drained by one server task (see module docstring)."""

    def book_events(self) -> AsyncIterator[BookUpdate]: ...

    def fill_events(self) -> AsyncIterator[TradeView]: ...

    def telemetry_events(self) -> AsyncIterator[Telemetry]: ...

    def settlement_events(self) -> AsyncIterator[SlotSettlement]: ...


class Shares(Protocol):
    """Liquidity providers' shares in pool hosts' fee income, bought and redeemed by this node."""

    async def share_programmes(self) -> list[ShareProgrammeView]: ...

    async def share_buy(self, programme_id: bytes, shares: int, wait_s: int) -> ShareBuyView:
        """Escrow the price of ``shares`` (certified), then wait up to ``wait_s`` real seconds for
        the host to issue or decline them. Raises a ``TradingError`` for an unknown programme and a
        ``LedgerError`` (``EntryRejected``) when the ledger rules refuse the purchase."""
        ...

    async def share_exit(self, programme_id: bytes, shares: int) -> ShareExitView:
        """Ask the host (certified ``share_exit``) to redeem ``shares`` once the lock-up is over."""
        ...

    async def share_positions(self) -> list[SharePositionView]: ...


class Charging(Protocol):
    """Public EV charging bought by this node's account (as a driver) or sold by it (as a station)."""

    async def charge_tariffs(self, station: bytes | None) -> list[ChargeTariffView]:
        """Tariffs of the zone open now (of ``station``, if given)."""
        ...

    async def charge_start(self, tariff_id: bytes, max_wh: int, wait_s: int, hours: int) -> ChargeSessionView:
        """Escrow the price of ``max_wh`` for a session plugged in now (certified ``charge_start``,
        deadline ``hours`` ahead), then wait up to ``wait_s`` real seconds for a bill (a station
        with no car of this driver bills zero after its no-car grace). Raises a ``TradingError`` for an unknown
        tariff and a ``LedgerError`` (``EntryRejected``) when the ledger rules refuse the start."""
        ...

    async def charge_sessions(self, role: ChargeRole) -> list[ChargeSessionView]:
        """This node's sessions as driver or as station, in plug-in order."""
        ...

    async def charge_release(self, session_id: bytes) -> ChargeSessionView:
        """Take back the escrow of an unbilled session past its deadline (certified ``release``).
        Raises a ``TradingError`` for a session of another driver or none, a ``LedgerError``
        before the deadline or once billed."""
        ...


class Gateway(Protocol):
    """The zone operator's node admitting neighbours (``p2pgrid zone approve``)."""

    async def approve_member(self, account: bytes, meter_key: bytes, export_w: int,
                             fund_uc: int | None) -> ApprovalView:
        """As the zone's gateway: certify the registration of ``meter_key`` for ``account`` with
        ``export_w``, then mint ``fund_uc`` (None: ``[gateway] fund_uc``) to an account never
        funded before. Raises a ``LedgerError`` (``NotTheGateway``, ``AlreadyApproved``) and
        writes nothing if this node is not the gateway or the meter or account is registered."""
        ...


class Flex(Protocol):
    """The zone's flexibility market as this node's ledger holds it, and requests posted by it."""

    async def flex_requests(self) -> list[FlexRequestView]:
        """Every certified request, by first slot."""
        ...

    async def flex_offers(self, request_id: bytes | None) -> list[FlexOfferView]:
        """The offers of one request (None: this node's own offers)."""
        ...

    async def flex_awards(self, request_id: bytes | None) -> list[FlexAwardView]:
        """The awarded offers of one request (None: this node's own awards)."""
        ...

    async def flex_settlements(self, request_id: bytes | None) -> list[FlexSettlementView]:
        """The settlement lines of one request (None: this node's own)."""
        ...

    async def flex_request(self, request: FlexRequestOrder) -> FlexRequestView:
        """Post a request from this node's chain (the zone operator, or a DSO naming its grant).
        Raises a ``LedgerError`` (``EntryRejected``) when the ledger rules refuse it."""
        ...


class NodeApi(MarketView, Trading, LedgerView, DeviceView, EventSource, Shares, Charging, Gateway, Flex, Protocol):
    """Everything the RPC server needs from a node."""


def node_api_mismatches(node: object) -> list[str]:
    """What keeps ``node`` from implementing ``NodeApi``: one line per missing or different method.

    Checks names, parameter names in order, and async-ness (streams are plain methods returning
    async iterators). Meant for one test in the node's suite: ``assert node_api_mismatches(node) == []``.
    """
    problems = []
    for name, expected in inspect.getmembers(NodeApi, inspect.isfunction):
        if name.startswith("_"):
            continue
        actual = getattr(node, name, None)
        if actual is None or not callable(actual):
            problems.append(f"{name}: missing")
            continue
        want = [p for p in inspect.signature(expected).parameters if p != "self"]
        have = list(inspect.signature(actual).parameters)
        if want != have:
            problems.append(f"{name}: parameters {have}, expected {want}")
        if inspect.iscoroutinefunction(expected) != inspect.iscoroutinefunction(actual):
            problems.append(f"{name}: must {'' if inspect.iscoroutinefunction(expected) else 'not '}be async")
    return problems
