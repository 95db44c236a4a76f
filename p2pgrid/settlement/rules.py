"""Slot settlement: certified trades against metered delivery, with imbalance prices (pure).

After a slot's metering deadline (``SlotRules.metering_due_ms``) the slot settles: every trade of
the slot is compared with the meter entries of the accounts that made it, and money moves. This
module is the whole rule; it reads no clock and does no I/O. All quantities are integer Wh, all
prices integer µc/kWh, all money integer µc.

Inputs
------
* ``TradeRecord`` (alias ``Contract``): one certified trade — id, slot, seller, buyer, both
  parties' zones, ``qty_wh``, ``price`` and the green flag, and optionally ``value_uc``. The
  trading layer's certified fills and pool swaps convert to it (``settlement.entries``), and so
  do the slot positions of power purchase agreements (``p2pgrid.ppa.execution``). A fill's
  value is ``trade_value(qty_wh, price)``; a swap's is the credits the pool's curve charged, which
  no integer price need reproduce, so a swap states it in ``value_uc`` and its ``price`` is the
  average (floor of ``value_uc × 1000 / qty_wh``, for display). Settlement uses the value only in
  the ``trade`` transfer; every other rule reads the Wh.
* ``MeterEntry``: one account's metered ``import_wh`` / ``export_wh`` for the slot (and its metered
  green generation, used by ``p2pgrid.settlement.certificates``). ``p2pgrid.settlement.metering.to_meter_entry`` builds
  it from a validated signed meter reading.
* ``ZoneTariffs``: the settlement area's **gateway** account (the grid connection: every imbalance
  is bought from or sold to it), the **shortfall price** (e.g. grid retail: what drawing one kWh
  from the grid costs), the **feed-in price** (what the gateway pays for one kWh pushed into the
  grid), both flat or overridden per slot, and the **grid-fee matrix** (µc/kWh for energy moved
  from a seller's zone to a buyer's zone; a missing cross-zone pair is an error, a missing
  same-zone pair is free). One run settles one area with one gateway; its zones differ only in fees.

The rules
---------
Contracts are **firm**: the buyer pays the seller the full contract (its value: ``value_uc`` when
given, else ``trade_value(qty_wh, price)``), whatever was delivered. Then each account's metered
position is compared with its contracted position, on each side separately (no netting of an
account's sales against its purchases):

* **Seller side.** An account that sold ``sold`` Wh and exported ``export`` Wh *delivered*
  ``min(export, sold)``.
  - Shortfall ``sold − delivered``: the buyers drew it from the grid instead, so the seller pays
    the gateway for it at the shortfall price (reason ``shortfall``).
  - Surplus ``export − delivered`` (export beyond its sales): the gateway pays it at the feed-in
    price (reason ``surplus_export``).
* **Buyer side.** An account that bought ``bought`` Wh and imported ``import`` Wh:
  - Extra import ``import − bought`` (consumed more than contracted): bought from the gateway at
    the shortfall price (reason ``extra_import``).
  - Unused purchase ``bought − import`` (consumed less than contracted): that energy went into the
    grid, and the gateway pays it at the feed-in price (reason ``unused_purchase``).
* **Grid fee.** A trade between two zones pays the matrix fee on its *delivered* Wh (what actually
  crossed between the zones; a shortfall was drawn locally and priced at the shortfall price). The
  buyer pays it to the gateway (reason ``grid_fee``).
* **Missing meter entry.** An account with trades but no meter entry is settled as if its meter
  read zero import and zero export: a seller delivered nothing, a buyer consumed nothing.
  (Caution: that is a penalty for a seller but a gain for a buyer that imported beyond its
  contract, so meter entries must not depend on the metered node's goodwill to be posted.)
  On the ledger a reading taken in time but certified after its slot was settled is not lost:
  the slot is settled again over the union of its inputs and only the difference is posted
  (``settlement.entries``: reconciliation), so "missing" means missing from every settle so far.

With a sane tariff (``feed_in_price <= shortfall_price``, enforced) no account gains by being out
of balance in either direction.

Contracts settled at settlement (PPA positions)
------------------------------------------------
A trade with ``prepaid=False`` is a contract whose value has not moved yet (a power purchase
agreement's position of the slot): settlement moves it, buyer to seller (reason ``ppa``), instead of
leaving it to the certified trade. A trade's ``priority`` orders a seller's contracts: its metered
export covers every contract of priority 0 (PPA positions with priority over spot) before any of
priority 1 (spot trades, and PPA positions without priority), each group shared pro rata (below),
and green certificates move in that order too (``SlotSettlement.deliveries`` lists them so). A trade with ``penalty_price`` > 0 also has its
seller pay its buyer that price per contracted Wh not delivered (reason ``ppa_penalty``), on top
of the shortfall the seller pays the gateway.

Allocating a partial delivery (the pro-rata rule)
-------------------------------------------------
Money does not depend on *which* contract a shortfall hits (the imbalance price is the same for all
of a seller's contracts), but the grid fee and the green certificates do: only delivered Wh move a
certificate, and only delivered Wh pay a cross-zone fee. A seller's ``delivered`` Wh are shared
among its contracts (within one priority group, the lower group first) **in proportion to their quantities, with largest-remainder rounding**: each
contract ``i`` first gets ``floor(q_i × delivered / sold)``; the Wh left over go one each to the
contracts with the largest remainders ``(q_i × delivered) mod sold``, ties broken by ascending trade
id. Worked through: a seller sold 500 Wh (trade ``a``), 300 Wh (``b``) and 200 Wh (``c``), 1000 Wh in
all, and exported 333 Wh.

    exact shares   a: 500×333/1000 = 166.5   b: 99.9   c: 66.6
    floors         a: 166  b: 99  c: 66       sum 331, so 2 Wh are left over
    remainders     a: 500   b: 900   c: 600   (the numerators mod 1000)
    left-overs     to b (900), then c (600)
    delivered      a: 166  b: 100  c: 67      sum 333 = delivered

Every contract gets its fair share to within 1 Wh, the shares sum exactly to what was delivered,
and the result depends only on the set of trades, not on the order they are given in.

Rounding and conservation
-------------------------
Every payment is one ``Transfer(payer, payee, amount_uc, reason, ref)``, its amount computed once
with ``units.trade_value`` (floor of ``Wh × price / 1000``; a swap's trade transfer is its stated
``value_uc``): trade and grid-fee transfers once per trade, imbalance transfers once per account
and reason. The payer loses exactly what the payee gains, so the nets of all accounts, gateway
included, sum to exactly zero. Zero-µc transfers are left out.

Determinism and idempotence
---------------------------
``settle_slot`` is a pure function of the *sets* of trades and meter entries: inputs are sorted
(trades by id, accounts by key), an identical record given twice counts once, and two different
records with one trade id (or two different meter entries of one account) are rejected with
``ConflictingRecords``. Settling the same inputs again gives an equal ``SlotSettlement``. Transfers
are listed trade by trade (ascending id: ``trade`` or ``ppa``, then ``grid_fee``, then
``ppa_penalty``), then account by account
(ascending key: ``shortfall``, ``surplus_export``, ``extra_import``, ``unused_purchase``); lines are
sorted by account and include the gateway; deliveries are sorted by priority, then trade id.

Errors::

    SettlementError                  (p2pgrid.errors)
    ├── InvalidSettlementInput       a malformed record, a record for another slot, the gateway trading
    ├── ConflictingRecords           two different trades with one id / meter entries of one account
    └── UnknownGridFee               a cross-zone trade whose zone pair has no fee in the matrix
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from p2pgrid.errors import ConfigError, SettlementError
from p2pgrid.units import trade_value
from p2pgrid.wire import Source

__all__ = [
    "AccountLine", "ConflictingRecords", "Contract", "Delivery", "GridFee", "ImbalancePrices",
    "InvalidSettlementInput", "MeterEntry", "Reason", "SlotPrices", "SlotSettlement", "TradeRecord",
    "Transfer", "UnknownGridFee", "ZoneTariffs", "allocate_delivery", "settle_slot",
]


class InvalidSettlementInput(SettlementError):
    pass


class ConflictingRecords(SettlementError):
    pass


class UnknownGridFee(SettlementError):
    pass


def _is_int(value: object) -> bool:
    return type(value) is int


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidSettlementInput(message)


# --- inputs -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TradeRecord:
    """One certified trade: ``seller`` delivers ``qty_wh`` to ``buyer`` in ``slot`` at ``price``.

    ``value_uc`` is the contract's value when its venue fixed it in µc (a pool swap's credits);
    None means ``trade_value(qty_wh, price)`` (a book fill)."""

    trade_id: bytes
    slot: int
    seller: bytes
    buyer: bytes
    seller_zone: str
    buyer_zone: str
    qty_wh: int
    price: int
    green: bool = False
    value_uc: int | None = None
    priority: int = 1            # 0 settles before 1 (module docstring: PPA positions)
    prepaid: bool = True         # False: settlement moves the value (reason PPA)
    penalty_price: int = 0       # µc/kWh the seller pays the buyer per contracted Wh not delivered

    def __post_init__(self) -> None:
        _require(type(self.trade_id) is bytes and len(self.trade_id) > 0, "trade_id must be non-empty bytes")
        _require(type(self.seller) is bytes and type(self.buyer) is bytes, "seller and buyer are account bytes")
        _require(self.seller != self.buyer, "a trade needs two different accounts")
        _require(type(self.seller_zone) is str and type(self.buyer_zone) is str, "zones are str")
        _require(_is_int(self.slot) and self.slot >= 0, "slot must be a non-negative int")
        _require(_is_int(self.qty_wh) and self.qty_wh > 0, f"trade qty_wh must be a positive int, got {self.qty_wh!r}")
        _require(_is_int(self.price) and self.price >= 0, f"trade price must be a non-negative int, got {self.price!r}")
        _require(type(self.green) is bool, "green must be a bool")
        _require(self.value_uc is None or (_is_int(self.value_uc) and self.value_uc >= 0),
                 f"trade value_uc must be None or a non-negative int, got {self.value_uc!r}")
        _require(self.priority in (0, 1), f"trade priority must be 0 or 1, got {self.priority!r}")
        _require(type(self.prepaid) is bool, "prepaid must be a bool")
        _require(_is_int(self.penalty_price) and self.penalty_price >= 0, "penalty_price must be a non-negative int")

    @property
    def value(self) -> int:
        """µc the buyer pays the seller for the whole contract."""
        return trade_value(self.qty_wh, self.price) if self.value_uc is None else self.value_uc


Contract = TradeRecord


@dataclass(frozen=True, slots=True)
class MeterEntry:
    """One account's metered energy for one slot, as settlement and certificates need it.

    ``entry_hash`` names the signed meter reading it came from (its message id); green
    certificates carry it so that every green Wh is traceable to the reading that measured it.
    """

    account: bytes
    zone: str
    slot: int
    import_wh: int
    export_wh: int
    green_wh: int = 0
    green_source: Source = Source.NONE
    entry_hash: bytes = b""

    def __post_init__(self) -> None:
        _require(type(self.account) is bytes and len(self.account) > 0, "account must be non-empty bytes")
        _require(type(self.zone) is str, "zone must be a str")
        _require(_is_int(self.slot) and self.slot >= 0, "slot must be a non-negative int")
        for name in ("import_wh", "export_wh", "green_wh"):
            value = getattr(self, name)
            _require(_is_int(value) and value >= 0, f"meter {name} must be a non-negative int, got {value!r}")
        _require(isinstance(self.green_source, Source), "green_source must be a Source")
        _require(self.green_wh == 0 or self.green_source.is_green,
                 f"green generation needs a green source, got {self.green_source.value}")
        _require(type(self.entry_hash) is bytes, "entry_hash must be bytes")


@dataclass(frozen=True, slots=True)
class ImbalancePrices:
    """µc/kWh: what drawing from the grid costs, and what feeding into it pays."""

    shortfall_price: int
    feed_in_price: int

    def __post_init__(self) -> None:
        if not (_is_int(self.shortfall_price) and _is_int(self.feed_in_price)
                and 0 <= self.feed_in_price <= self.shortfall_price):
            raise ConfigError("tariff prices must be ints with 0 <= feed_in_price <= shortfall_price, got "
                              f"shortfall {self.shortfall_price!r}, feed-in {self.feed_in_price!r}")


@dataclass(frozen=True, slots=True)
class SlotPrices:
    """Imbalance prices that replace the flat ones for one slot (time-of-use tariffs)."""

    slot: int
    prices: ImbalancePrices


@dataclass(frozen=True, slots=True)
class GridFee:
    """µc/kWh for energy a seller in ``from_zone`` delivers to a buyer in ``to_zone``."""

    from_zone: str
    to_zone: str
    price: int

    def __post_init__(self) -> None:
        if not (_is_int(self.price) and self.price >= 0):
            raise ConfigError(f"grid fee {self.from_zone}->{self.to_zone} must be a non-negative int")


@dataclass(frozen=True)
class ZoneTariffs:
    """The prices of one settlement area, served by one ``gateway`` account."""

    gateway: bytes
    shortfall_price: int
    feed_in_price: int
    grid_fees: tuple[GridFee, ...] = ()
    slot_prices: tuple[SlotPrices, ...] = ()
    _fees: Mapping[tuple[str, str], int] = field(init=False, repr=False, compare=False)
    _by_slot: Mapping[int, ImbalancePrices] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.gateway) is not bytes or not self.gateway:
            raise ConfigError("tariff gateway must be an account (non-empty bytes)")
        ImbalancePrices(self.shortfall_price, self.feed_in_price)
        fees: dict[tuple[str, str], int] = {}
        for fee in self.grid_fees:
            if (fee.from_zone, fee.to_zone) in fees:
                raise ConfigError(f"grid fee {fee.from_zone}->{fee.to_zone} given twice")
            fees[(fee.from_zone, fee.to_zone)] = fee.price
        by_slot: dict[int, ImbalancePrices] = {}
        for override in self.slot_prices:
            if override.slot in by_slot:
                raise ConfigError(f"prices for slot {override.slot} given twice")
            by_slot[override.slot] = override.prices
        object.__setattr__(self, "_fees", fees)
        object.__setattr__(self, "_by_slot", by_slot)

    def prices_for(self, slot: int) -> ImbalancePrices:
        return self._by_slot.get(slot) or ImbalancePrices(self.shortfall_price, self.feed_in_price)

    def grid_fee(self, from_zone: str, to_zone: str) -> int:
        fee = self._fees.get((from_zone, to_zone))
        if fee is not None:
            return fee
        if from_zone == to_zone:
            return 0
        raise UnknownGridFee(f"no grid fee from zone {from_zone!r} to zone {to_zone!r} in the tariff")


# --- outputs ----------------------------------------------------------------------------------

class Reason(str, enum.Enum):
    """Why money moves. The comment says who pays whom."""

    TRADE = "trade"                      # buyer -> seller: contracted Wh at the trade price
    GRID_FEE = "grid_fee"                # buyer -> gateway: delivered Wh of a cross-zone trade at the fee
    SHORTFALL = "shortfall"              # seller -> gateway: sold but not delivered, at the shortfall price
    SURPLUS_EXPORT = "surplus_export"    # gateway -> account: exported beyond its sales, at feed-in
    EXTRA_IMPORT = "extra_import"        # account -> gateway: imported beyond its purchases, at shortfall
    UNUSED_PURCHASE = "unused_purchase"  # gateway -> buyer: bought but not imported, at feed-in
    PPA = "ppa"                          # buyer -> seller: a PPA position's value (moved by settlement)
    PPA_PENALTY = "ppa_penalty"          # seller -> buyer: a PPA position's undelivered Wh at its penalty


@dataclass(frozen=True, slots=True)
class Transfer:
    """``payer`` pays ``payee`` ``amount_uc`` µc (> 0). ``ref`` is the trade id, or b"" for imbalance."""

    payer: bytes
    payee: bytes
    amount_uc: int
    reason: Reason
    ref: bytes = b""


@dataclass(frozen=True, slots=True)
class Delivery:
    """How much of one trade was delivered (see the pro-rata rule)."""

    trade_id: bytes
    seller: bytes
    buyer: bytes
    contracted_wh: int
    delivered_wh: int
    green: bool


@dataclass(frozen=True, slots=True)
class AccountLine:
    """One account's slot: energy contracted and metered, and money by reason (+ received, − paid).

    The four quantities are the inputs; the rest of the energy columns follow from them by the
    rules of the module docstring.
    """

    account: bytes
    metered: bool
    import_wh: int
    export_wh: int
    sold_wh: int
    bought_wh: int
    payments: tuple[tuple[Reason, int], ...] = ()
    net_uc: int = 0

    @property
    def delivered_wh(self) -> int:
        """Of the Wh sold, those the meter shows were delivered."""
        return min(self.export_wh, self.sold_wh)

    @property
    def shortfall_wh(self) -> int:
        return self.sold_wh - self.delivered_wh

    @property
    def surplus_export_wh(self) -> int:
        return self.export_wh - self.delivered_wh

    @property
    def extra_import_wh(self) -> int:
        return max(0, self.import_wh - self.bought_wh)

    @property
    def unused_purchase_wh(self) -> int:
        return max(0, self.bought_wh - self.import_wh)

    def paid_for(self, reason: Reason) -> int:
        """Signed µc of this account for ``reason`` (0 if none)."""
        return dict(self.payments).get(reason, 0)


@dataclass(frozen=True)
class SlotSettlement:
    """The settled slot: per-account lines (gateway included), transfers, deliveries, evidence."""

    slot: int
    gateway: bytes
    prices: ImbalancePrices
    lines: tuple[AccountLine, ...]
    transfers: tuple[Transfer, ...]
    deliveries: tuple[Delivery, ...]
    meter_entries: tuple[MeterEntry, ...]

    def line(self, account: bytes) -> AccountLine:
        for line in self.lines:
            if line.account == account:
                return line
        raise KeyError(account.hex())

    def net(self, account: bytes) -> int:
        """µc the account gains (+) or pays (−) in this slot; 0 for an account not involved."""
        return sum(t.amount_uc for t in self.transfers if t.payee == account) - \
            sum(t.amount_uc for t in self.transfers if t.payer == account)

    def delivery(self, trade_id: bytes) -> Delivery:
        for delivery in self.deliveries:
            if delivery.trade_id == trade_id:
                return delivery
        raise KeyError(trade_id.hex())

    @property
    def total_uc(self) -> int:
        """Sum of every account's net, gateway included: always exactly 0."""
        return sum(line.net_uc for line in self.lines)


# --- the rules --------------------------------------------------------------------------------

def allocate_delivery(delivered_wh: int, contracts: Iterable[tuple[bytes, int]]) -> dict[bytes, int]:
    """Share ``delivered_wh`` among ``(trade_id, qty_wh)`` contracts pro rata, largest remainder.

    ``delivered_wh`` must not exceed the contracts' total. See the module docstring, worked through.
    """
    ordered = sorted(contracts)
    sold = sum(qty for _, qty in ordered)
    if not 0 <= delivered_wh <= sold:
        raise InvalidSettlementInput(f"cannot deliver {delivered_wh} Wh against {sold} Wh of contracts")
    if sold == 0:
        return {trade_id: 0 for trade_id, _ in ordered}
    shares = {trade_id: qty * delivered_wh // sold for trade_id, qty in ordered}
    left_over = delivered_wh - sum(shares.values())
    by_remainder = sorted(ordered, key=lambda c: (-(c[1] * delivered_wh % sold), c[0]))
    for trade_id, _ in by_remainder[:left_over]:
        shares[trade_id] += 1
    return shares


def settle_slot(slot: int, trades: Iterable[TradeRecord], meter_entries: Iterable[MeterEntry],
                tariffs: ZoneTariffs) -> SlotSettlement:
    """Settle ``slot``: the rules of the module docstring, applied to these sets of records."""
    gateway = tariffs.gateway
    prices = tariffs.prices_for(slot)
    trade_list = _unique_trades(slot, trades, gateway)
    meters = _unique_meters(slot, meter_entries, gateway)

    sales: dict[bytes, list[TradeRecord]] = defaultdict(list)
    bought: dict[bytes, int] = defaultdict(int)
    for trade in trade_list:
        sales[trade.seller].append(trade)
        bought[trade.buyer] += trade.qty_wh

    delivered_by_trade: dict[bytes, int] = {}
    for seller, contracts in sales.items():
        export = meters[seller].export_wh if seller in meters else 0
        for priority in (0, 1):
            group = [t for t in contracts if t.priority == priority]
            delivered = min(export, sum(t.qty_wh for t in group))
            delivered_by_trade.update(allocate_delivery(delivered, ((t.trade_id, t.qty_wh) for t in group)))
            export -= delivered

    transfers: list[Transfer] = []

    def pay_uc(payer: bytes, payee: bytes, amount: int, reason: Reason, ref: bytes = b"") -> None:
        if amount > 0 and payer != payee:
            transfers.append(Transfer(payer, payee, amount, reason, ref))

    def pay(payer: bytes, payee: bytes, wh: int, price: int, reason: Reason, ref: bytes = b"") -> None:
        pay_uc(payer, payee, trade_value(wh, price), reason, ref)

    for trade in trade_list:
        pay_uc(trade.buyer, trade.seller, trade.value, Reason.TRADE if trade.prepaid else Reason.PPA, trade.trade_id)
        delivered = delivered_by_trade[trade.trade_id]
        fee = tariffs.grid_fee(trade.seller_zone, trade.buyer_zone)
        pay(trade.buyer, gateway, delivered, fee, Reason.GRID_FEE, trade.trade_id)
        pay(trade.seller, trade.buyer, trade.qty_wh - delivered, trade.penalty_price, Reason.PPA_PENALTY, trade.trade_id)

    positions: dict[bytes, AccountLine] = {}
    for account in sorted(set(sales) | set(bought) | set(meters)):
        meter = meters.get(account)
        line = AccountLine(account=account, metered=meter is not None,
                           import_wh=meter.import_wh if meter else 0, export_wh=meter.export_wh if meter else 0,
                           sold_wh=sum(t.qty_wh for t in sales.get(account, ())), bought_wh=bought.get(account, 0))
        positions[account] = line
        pay(account, gateway, line.shortfall_wh, prices.shortfall_price, Reason.SHORTFALL)
        pay(gateway, account, line.surplus_export_wh, prices.feed_in_price, Reason.SURPLUS_EXPORT)
        pay(account, gateway, line.extra_import_wh, prices.shortfall_price, Reason.EXTRA_IMPORT)
        pay(gateway, account, line.unused_purchase_wh, prices.feed_in_price, Reason.UNUSED_PURCHASE)
    positions.setdefault(gateway, AccountLine(gateway, False, 0, 0, 0, 0))

    by_account: dict[bytes, dict[Reason, int]] = defaultdict(lambda: defaultdict(int))
    for t in transfers:
        by_account[t.payee][t.reason] += t.amount_uc
        by_account[t.payer][t.reason] -= t.amount_uc
    lines = tuple(_with_payments(positions[account], by_account[account]) for account in sorted(positions))
    # Listed in the order a seller's export covers them (priority, then trade id): certificates
    # move in this order.
    deliveries = tuple(Delivery(t.trade_id, t.seller, t.buyer, t.qty_wh, delivered_by_trade[t.trade_id], t.green)
                       for t in sorted(trade_list, key=lambda t: (t.priority, t.trade_id)))
    return SlotSettlement(slot=slot, gateway=gateway, prices=prices, lines=lines,
                          transfers=tuple(transfers), deliveries=deliveries,
                          meter_entries=tuple(meters[a] for a in sorted(meters)))


def _with_payments(line: AccountLine, by_reason: Mapping[Reason, int]) -> AccountLine:
    payments = tuple((reason, by_reason[reason]) for reason in Reason if by_reason.get(reason))
    return replace(line, payments=payments, net_uc=sum(amount for _, amount in payments))


def _unique_trades(slot: int, trades: Iterable[TradeRecord], gateway: bytes) -> list[TradeRecord]:
    by_id: dict[bytes, TradeRecord] = {}
    for trade in trades:
        if not isinstance(trade, TradeRecord):
            raise InvalidSettlementInput(f"expected a TradeRecord, got {type(trade).__name__}")
        if trade.slot != slot:
            raise InvalidSettlementInput(f"trade {trade.trade_id.hex()} is for slot {trade.slot}, not {slot}")
        if gateway in (trade.seller, trade.buyer):
            raise InvalidSettlementInput(f"trade {trade.trade_id.hex()}: the gateway does not trade in the market")
        known = by_id.setdefault(trade.trade_id, trade)
        if known != trade:
            raise ConflictingRecords(f"two different trades with id {trade.trade_id.hex()}")
    return [by_id[trade_id] for trade_id in sorted(by_id)]


def _unique_meters(slot: int, entries: Iterable[MeterEntry], gateway: bytes) -> dict[bytes, MeterEntry]:
    by_account: dict[bytes, MeterEntry] = {}
    for entry in entries:
        if not isinstance(entry, MeterEntry):
            raise InvalidSettlementInput(f"expected a MeterEntry, got {type(entry).__name__}")
        if entry.slot != slot:
            raise InvalidSettlementInput(f"meter entry of {entry.account.hex()} is for slot {entry.slot}, not {slot}")
        if entry.account == gateway:
            raise InvalidSettlementInput("the gateway's own meter is not settled against itself")
        known = by_account.setdefault(entry.account, entry)
        if known != entry:
            raise ConflictingRecords(f"two different meter entries of {entry.account.hex()} for slot {slot}")
    return by_account
