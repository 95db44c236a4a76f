"""``TradingService``: a node's trading, run under trio (the imperative shell around
``local_books``, ``maker`` and ``market.router``).

* **Books.** Order gossip deliveries feed ``LocalBooks``; a tick expires orders, closes slots at
  gate closure, and, when the ledger has grown, brings the remainder of each order whose certified
  consumption changed in line with the ledger (fills are learned from the replicated ledger, so
  every node converges; an order arriving after its trades is brought in line on arrival).
* **Maker.** Serves ``/p2pgrid/take/2`` on persistent streams; the maker acts first, so a taker
  locks nothing before the maker has answered. A take on one of its offers is checked
  (``maker.decide_take``) and *held* in the ``MakerDesk`` for ``hold_s`` of real time: the answer is
  ``reserved``, and nothing is certified. The buyer then certifies its lock and sends a
  ``TakeConfirm``; the maker claims the hold, finds the buyer's certified lock (pulling the buyer's
  chain if gossip has not brought it yet), certifies a fill consuming it and answers ``filled``. A
  confirm it refuses (hold lapsed, order gone, bad lock, fill not certified) has its lock
  **declined before the answer is sent** (``_refuse_and_decline``, as a pool host does), so the
  buyer's credits come back at once. A take on one of its bids: it certifies a lock for the taker
  and answers ``locked`` (one round trip; the maker is the buyer there). A fill or lock that
  missed a quorum but may have votes is retried as the *same* entry, so a take is never answered
  ``refused`` for a trade that got certified (``_certify``); if the ledger certified it on its own
  meanwhile, the answer's ``certificate`` is empty. ``decide_take`` and ``MakerDesk`` make sure
  certified + held + being certified never exceeds an order, even when several takers race; a
  buyer that reserves and never confirms blocks the quantity until its hold lapses, and is then
  refused (``lapsed_holds``) for a back-off (``squatters``, the same rule as for silent makers),
  so squatting on an order by reserving again and again does not pay.
* **Taker.** ``execute(side, qty, slot, limit)`` quotes with the router over the local book, runs
  every leg's take concurrently, and re-routes what was refused, a bounded number of rounds. A buy
  take is reserve (``reserve_timeout_s``) → lock → confirm; a sell take is one round trip. A round
  trip the maker does not answer validly in time is a *silence* (``trading.standing``): nothing
  was locked for it (a silence at the confirm leaves the lock to the deadline rules below), the
  maker's score drops, and ``quote`` skips its orders for an exponential, bounded back-off (real
  seconds, not market time); ``take`` refuses a backed-off maker without asking it.
* **One writer per lock.** A lock's fate is decided by its seller's chain: a fill must be dated
  before the deadline, a ``decline`` hands it back at any time, and the buyer's ``release`` is
  valid only once the seller's certified chain is dated at or past the deadline
  (``chain.seller_passed_deadline``). So a maker that refuses a confirmed take **declines** its
  lock before answering, a seller-taker whose fill did not happen declines the maker's lock
  (queued, written by the housekeeping tick, as is a maker's decline that failed), and every lock
  naming this node as seller still open at its deadline is declined too: the buyer's credits
  come back at once, and this chain is dated past the deadline.
* **Housekeeping.** Locks this node holds that nobody consumed are released once the seller's
  chain (in this node's certified state) has passed their deadline — usually the seller has
  declined them first — so credits of a failed take come back (from an index of this node's own
  open locks, not a scan of every lock in the zone). A lock whose seller vanished (its chain
  never passes the deadline) is **refunded**: once the deadline is ``lock_expiry_grace_ms`` of
  market time behind, the node asks the validators for ``LockExpiry`` promises (in the
  background, at most one round per lock per ``REFUND_RETRY_S``) and certifies a ``refund`` with
  a quorum of them (``ledger.chain``, "A seller that vanished").
* **Neighbour zones** (``market.locality``, ``TradingConfig.grid_fees``). The books also hold the
  orders of the zones this node has a grid fee for, fed by their order gossip (read-only: this
  node publishes only on its home topic). Quotes compare effective prices (``ask + fee`` for a
  buyer, ``bid − fee`` for a seller). A take names the taker's zone and ledger domain; a maker
  refuses a zone it does not trade with (``zone_not_traded``) or another ledger domain
  (``wrong_ledger``) before anything is certified on its side. A take on an order of a zone this
  node does not trade with is refused locally (``zone_not_traded``) before any lock.
  Locks name both parties' zones (``seller_zone``, ``buyer_zone``): settlement charges the grid
  fee from them, and a maker fills only a lock whose zones match the take. ``trade_zones`` also
  remembers them for every trade this node took part in.

Time: ``clock()`` returns Unix ms (market time). Real waiting (stream answers, certification) is
bounded by trio timeouts in seconds; holds and back-off are in seconds of ``real_clock`` (trio's
clock), because market time may run faster than the real time a take needs (simnet).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from p2pgrid.errors import LedgerError, NetError, TradingError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LockRecord, LockStatus, RejectReason, WriteLog, decode_body, seller_passed_deadline
from p2pgrid.ledger.messages import Certificate, Decline, Entry, Fill, Lock, Refund, Release, entry_hash
from p2pgrid.ledger.service import BatchRejected, LedgerService
from p2pgrid.market.book import Depth
from p2pgrid.market.locality import Locality, ZoneNotTraded, fee_inclusive_depth, route_zones, taker_price
from p2pgrid.market.router import BookLeg, PoolLeg, RoutePlan
from p2pgrid.net.orders import OrderDelivery, OrderGossip
from p2pgrid.net.requests import RequestStreams, StreamServer
from p2pgrid.net.transport import Transport
from p2pgrid.trading.local_books import BookChange, LocalBooks
from p2pgrid.trading.maker import Accept, MakerDesk, decide_take
from p2pgrid.trading.own_orders import OwnOrderJournal
from p2pgrid.trading.messages import (
    LOCK_RELEASED, MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, RefuseReason, Take, TakeAnswer, TakeConfirm,
)
from p2pgrid.trading.standing import BackoffRule, PeerStanding
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Cancel, Order, Side, Signed, Source, decode_signed, encode, sign

if TYPE_CHECKING:
    from p2pgrid.pools.client import PoolClient

Clock = Callable[[], int]
BOOK_CHANGES_BUFFER = 4096
# Refusals after which the same order may be taken again at once, for what the maker says is left.
RE_ROUTABLE = frozenset({RefuseReason.INSUFFICIENT_REMAINING.value, RefuseReason.NOT_RESERVED.value})
log = logging.getLogger(__name__)

REFUND_RETRY_S = 5.0                     # real seconds between two rounds of expiry promises for one lock
DECLINE_WAIT_TICKS = 20                  # housekeeping ticks a refused take's lock is looked for
TRADE_ZONES_KEPT_MS = 24 * 3600 * 1000   # after a slot's metering deadline: it has settled by then


class TakeRefused(TradingError):
    """The maker refused a take; ``reason`` is a ``RefuseReason`` value."""

    def __init__(self, reason: str, detail: str, available_wh: int = 0) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.available_wh = available_wh


class TakeFailed(TradingError):
    """A take could not complete (maker unreachable, timeout, certification refused)."""


@dataclass(frozen=True)
class TradingConfig:
    zone: str
    slot_rules: SlotRules
    lock_ttl_ms: int = 60_000          # market time a taker's lock waits for the maker's fill
    take_timeout_s: float = 20.0       # real time a take may take end to end
    reserve_timeout_s: float = 5.0     # real time a buy take's first round trip (the reservation) may take
    hold_s: float = 10.0               # real time a maker holds a reservation for the buyer's lock and confirm
    lock_wait_s: float = 5.0           # real time a maker waits to see the taker's lock
    tick_s: float = 0.5                # real time between housekeeping ticks
    reroute_rounds: int = 3
    grid_fees: Mapping[str, int] = field(default_factory=dict)   # neighbour zone → µc/kWh (locality)
    backoff: BackoffRule = field(default_factory=BackoffRule)    # skipping makers that do not answer

    @property
    def locality(self) -> Locality:
        return Locality(self.zone, self.grid_fees)


@dataclass(frozen=True)
class Execution:
    """One certified trade this node took part in as a taker."""

    take_id: bytes
    order_id: bytes
    counterparty: bytes
    side: Side
    qty_wh: int
    price: int
    value_uc: int
    zone: str = ""          # the order's zone (``grid_fee`` applies when it is not the taker's)
    grid_fee: int = 0       # µc/kWh; a buyer pays it on delivered Wh at settlement


@dataclass(frozen=True)
class ExecutionReport:
    side: Side
    slot: int
    requested_wh: int
    executions: tuple[Execution, ...]
    problems: tuple[str, ...]

    @property
    def filled_wh(self) -> int:
        return sum(e.qty_wh for e in self.executions)

    @property
    def total_uc(self) -> int:
        return sum(e.value_uc for e in self.executions)


@dataclass
class TradingStats:
    takes_served: int = 0
    takes_reserved: int = 0          # buy takes answered ``reserved``
    maker_silences: int = 0          # round trips to makers that went unanswered (``standing``)
    takes_refused: dict[str, int] = field(default_factory=dict)
    executions: int = 0
    releases: int = 0
    refunds: int = 0
    declines: int = 0
    quorum_retries: int = 0
    book_changes_dropped: int = 0


class TradingService:
    """See the module docstring. Build with ``open_trading_service``."""

    def __init__(self, key: NodeKey, config: TradingConfig, transport: Transport, ledger: LedgerService,
                 gossip: OrderGossip, clock: Clock, journal: OwnOrderJournal | None = None,
                 neighbour_gossip: Sequence[OrderGossip] = ()) -> None:
        self.key = key
        self.config = config
        self.locality = config.locality
        self.neighbour_gossip = tuple(neighbour_gossip)
        self.trade_zones: dict[bytes, tuple[str, str]] = {}   # take id → (seller zone, buyer zone)
        self._takes_by_slot: dict[int, list[bytes]] = {}       # slot → take ids, to forget trade_zones
        self._slots_to_forget: list[int] = []                  # those slots, a min-heap
        self.transport = transport
        self.ledger = ledger
        self.gossip = gossip
        self.clock = clock
        self.books = LocalBooks(config.zone, config.slot_rules, self.locality.neighbours)
        self.desk = MakerDesk()
        self.standing = PeerStanding(config.backoff)          # makers that did not answer our takes
        self.squatters = PeerStanding(config.backoff)         # takers that let our holds lapse
        self.real_clock: Callable[[], float] = trio.current_time   # seconds: holds and back-off
        self.stats = TradingStats()
        self.journal = journal
        self.pool_client: PoolClient | None = None      # set when this node trades with AMM pools
        self.own_orders: dict[bytes, Signed[Order]] = journal.load() if journal is not None else {}
        admission = getattr(gossip, "admission", None)
        if admission is not None:
            # Orders published before a restart still commit this node's export and credits.
            for signed in self.own_orders.values():
                admission.count_own(signed, clock())
        self._own_takes: dict[bytes, dict[bytes, int]] = {}   # order id → take id → Wh
        self._floor: dict[bytes, int] = {}                     # order id → Wh a maker said is gone
        # What the last sync with the ledger saw (see ``_sync_books_with_ledger``).
        self._synced_orders: object = None                     # the ledger's orders mapping last read
        self._synced_writes = 0                                # how many of its writes were read
        # This node's locks that may still need a release (see ``_release_expired_locks``).
        self._lock_scan: tuple[object, int] = (None, 0)        # (locks mapping, how many entries read)
        self._own_open_locks: dict[bytes, None] = {}           # take id → (ordered set)
        self._sold_open_locks: dict[bytes, None] = {}          # open locks naming this node as seller
        self._to_decline: dict[bytes, int] = {}                # takes refused or failed → ticks left to see the lock
        self._refund_tried: dict[bytes, float] = {}            # take id → real time of its last expiry round
        self._nursery: trio.Nursery | None = None              # set by run(): background refunds
        self._requests = RequestStreams(transport, TAKE_PROTOCOL, MAX_TAKE_BYTES)
        self._server = StreamServer(self._answer_frame)
        # Book changes for whoever follows them (RPC subscriptions); bounded, and dropped rather
        # than queued without end when nobody reads.
        self._book_send, self.book_changes = trio.open_memory_channel[BookChange](BOOK_CHANGES_BUFFER)
        self._nonce = 0

    @property
    def me(self) -> bytes:
        return self.key.public_key

    # --- orders -------------------------------------------------------------------------------

    def place_order(self, side: Side, qty_wh: int, limit_price: int, slot: int, *, green: bool = False,
                    source: Source | None = None, expiry_ms: int | None = None) -> Signed[Order]:
        """Sign an order, rest it in the local book and gossip it with the next batch. Raises
        ``admission.OrderNotAdmitted`` (a ``TradingError``) for an order other nodes would not
        admit (unregistered, beyond the export capacity, beyond the budget)."""
        now = self.clock()
        if not self.config.slot_rules.is_tradable(slot, now):
            raise TradingError(f"slot {slot} is not open for trading now")
        self._nonce += 1
        order = Order(order_id=os.urandom(16), owner=self.me, side=side, zone=self.config.zone, slot=slot,
                      qty_wh=qty_wh, limit_price=limit_price, green=green,
                      source=source or (Source.NONE if side is Side.BUY else Source.GRID), created_ms=now,
                      expiry_ms=expiry_ms or self.config.slot_rules.gate_closure_ms(slot), nonce=self._nonce)
        signed = sign(order, self.key)
        # Admission first (raises OrderNotAdmitted if other nodes would not admit it); queued
        # orders are published only after this call returns, so the journal still comes first.
        self.gossip.submit(signed)
        if self.journal is not None:
            self.journal.record_order(signed)   # durable before anyone can take it
        self.own_orders[order.order_id] = signed
        self._publish_change(self.books.on_order(signed, now))
        return signed

    def cancel_order(self, order_id: bytes) -> Signed[Cancel]:
        signed_order = self.own_orders.get(order_id)
        if signed_order is None:
            raise TradingError(f"no order {order_id.hex()} of this node")
        order = signed_order.body
        cancel = sign(Cancel(order_id=order_id, owner=self.me, zone=order.zone, slot=order.slot,
                             created_ms=self.clock()), self.key)
        del self.own_orders[order_id]
        if self.journal is not None:
            self.journal.record_cancel(order_id)
        self._publish_change(self.books.on_cancel(cancel))
        self.gossip.submit(cancel)
        return cancel

    def quote(self, side: Side, qty_wh: int, slot: int, limit_price: int | None = None) -> RoutePlan:
        now = self.clock()
        pools = self.pool_client.pools(slot, now) if self.pool_client is not None else []
        books = self.books.resting_by_zone(slot, side, self.me, now)
        skipped = self.standing.backing_off(self.real_clock())
        if skipped:      # makers that did not answer lately: their orders are not routed to
            books = {zone: [r for r in resting if self._owner_of(r.order_id) not in skipped]
                     for zone, resting in books.items()}
        return route_zones(side, qty_wh, books, pools, now, self.locality, limit_price)

    def _owner_of(self, order_id: bytes) -> bytes | None:
        signed = self.books.signed_order(order_id)
        return None if signed is None else signed.body.owner

    def maker_scores(self) -> dict[bytes, float]:
        """This node's score of each maker that did not answer a take lately (``standing``)."""
        return self.standing.scores(self.real_clock())

    def neighbour_depths(self, slot: int, max_levels: int | None = None) -> dict[str, Depth]:
        """Each neighbour zone's depth for ``slot`` at fee-inclusive prices (for ``book_get``)."""
        now = self.clock()
        return {zone: fee_inclusive_depth(self.books.depth(slot, max_levels, zone, now), fee)
                for zone, fee in self.locality.grid_fees.items()}

    # --- taking -------------------------------------------------------------------------------

    async def execute(self, side: Side, qty_wh: int, slot: int, limit_price: int | None = None) -> ExecutionReport:
        """Buy or sell ``qty_wh`` for ``slot`` at the best prices the router finds, within the limit."""
        executions: list[Execution] = []
        problems: list[str] = []
        avoid: set[bytes] = set()
        for _ in range(self.config.reroute_rounds):
            need = qty_wh - sum(e.qty_wh for e in executions)
            if need <= 0:
                break
            plan = self.quote(side, need, slot, limit_price)
            legs = [leg for leg in plan.legs
                    if (leg.order_id if isinstance(leg, BookLeg) else leg.pool_id) not in avoid]
            if not legs:
                break
            async with trio.open_nursery() as nursery:
                for leg in legs:
                    nursery.start_soon(self._run_leg, side, slot, leg, executions, problems, avoid, limit_price)
        self.stats.executions += len(executions)
        return ExecutionReport(side, slot, qty_wh, tuple(executions), tuple(problems))

    async def _run_leg(self, side: Side, slot: int, leg: BookLeg | PoolLeg, executions: list[Execution],
                       problems: list[str], avoid: set[bytes], limit_price: int | None = None) -> None:
        if isinstance(leg, PoolLeg):
            if self.pool_client is None:
                raise RuntimeError("a pool leg is only planned when a pool client is set")
            try:
                swap = await self.pool_client.swap_leg(leg, limit_price)
            except (TradingError, LedgerError) as exc:
                problems.append(f"pool {leg.pool_id.hex()[:8]}: {exc}")
                if getattr(exc, "reason", None) != "slippage":
                    avoid.add(leg.pool_id)   # a pool that moved is quoted again; any other refusal is final
                return
            executions.append(Execution(swap.request_id, swap.pool_id, swap.host, side, swap.energy_wh,
                                        swap.average_price, swap.credits_uc))
            return
        try:
            executions.append(await self.take(side, leg.order_id, leg.qty_wh))
        except TakeRefused as exc:
            problems.append(f"{leg.order_id.hex()[:8]}: {exc}")
            if exc.reason not in RE_ROUTABLE or exc.available_wh == 0:
                avoid.add(leg.order_id)
            self._reduce_to(leg.order_id, exc.available_wh)
        except (TakeFailed, LedgerError) as exc:
            problems.append(f"{leg.order_id.hex()[:8]}: {exc}")
            avoid.add(leg.order_id)

    async def take(self, side: Side, order_id: bytes, qty_wh: int) -> Execution:
        """Take ``qty_wh`` of a resting order; returns the certified trade or raises."""
        signed = self.books.signed_order(order_id)
        if signed is None:
            raise TakeRefused(RefuseReason.UNKNOWN_ORDER.value, "not in the local book")
        order = signed.body
        try:
            fee = self.locality.fee(order.zone)
        except ZoneNotTraded as exc:
            raise TakeRefused(RefuseReason.ZONE_NOT_TRADED.value, str(exc)) from None
        price = taker_price(side, order.limit_price, fee)
        if price < 0:
            raise TakeRefused(RefuseReason.PRICE_MISMATCH.value, f"bid {order.limit_price} is below the grid fee {fee}")
        if self.standing.is_backing_off(order.owner, self.real_clock()):
            raise TakeFailed(f"maker {order.owner.hex()[:8]} is skipped for a while: it did not answer lately")
        take = Take(take_id=os.urandom(16), taker=self.me, maker=order.owner, order_id=order_id, side=side,
                    zone=order.zone, slot=order.slot, qty_wh=qty_wh, price=price, sent_ms=self.clock(),
                    taker_zone=self.config.zone, ledger=self.ledger.rules.zone)
        value = trade_value(qty_wh, price)
        deadline = trio.current_time() + self.config.take_timeout_s
        with trio.move_on_after(self.config.take_timeout_s) as scope:
            if side is Side.BUY:
                await self._buy(take, order, value, deadline)
            else:
                try:
                    answer = await self._ask(order.owner, take.take_id, sign(take, self.key), deadline)
                except TakeFailed:
                    self._to_decline[take.take_id] = DECLINE_WAIT_TICKS     # it may have locked before falling silent
                    raise
                self._raise_if_refused(answer)
                if answer.status is not AnswerStatus.LOCKED:
                    raise TakeFailed(f"maker answered {answer.status.value} to a sell take")
                await self._wait_for_lock(take.take_id, order.owner)
                try:
                    await self._certify(self.ledger.next_entry("fill", Fill(
                        take_id=take.take_id, buyer=order.owner, order_id=order_id, qty_wh=qty_wh, price=price)))
                except LedgerError:
                    self._to_decline[take.take_id] = DECLINE_WAIT_TICKS     # hand the maker's lock back at once
                    raise
        if scope.cancelled_caught:
            if side is Side.SELL:
                self._to_decline[take.take_id] = DECLINE_WAIT_TICKS         # a lock the maker made for us, if any
            raise TakeFailed(f"take of {order_id.hex()[:8]} timed out after {self.config.take_timeout_s} s")
        self._record_take(order_id, take.take_id, qty_wh)
        self._remember_zones(take.take_id, order.slot, (order.zone, self.config.zone) if side is Side.BUY
                             else (self.config.zone, order.zone))
        return Execution(take.take_id, order_id, order.owner, side, qty_wh, price, value,
                         zone=order.zone, grid_fee=fee)

    async def _buy(self, take: Take, order: Order, value: int, deadline: float) -> None:
        """A buy take, maker first: reserve (nothing locked yet), certify our lock, confirm."""
        # Reach the maker first (a maker never connected to is dialled now, which takes seconds
        # on a busy machine): the reserve timeout is the maker's time to answer, not our dial's.
        with trio.move_on_at(deadline):
            try:
                await self._requests.connect(order.owner)
            except NetError:
                pass      # the reservation below finds it unreachable and says so
        reserve_by = min(deadline, trio.current_time() + self.config.reserve_timeout_s)
        answer = await self._ask(order.owner, take.take_id, sign(take, self.key), reserve_by)
        self._raise_if_refused(answer)
        if answer.status is not AnswerStatus.RESERVED or answer.qty_wh != take.qty_wh:
            raise TakeFailed(f"maker answered {answer.status.value} ({answer.qty_wh} Wh) to a buy take")
        # Only now are credits locked. If this fails the maker's hold simply lapses.
        await self._certify(self.ledger.next_entry("lock", Lock(
            take_id=take.take_id, seller=order.owner, order_id=order.order_id, order_owner=order.owner,
            order_size_wh=order.qty_wh, qty_wh=take.qty_wh, price=order.limit_price, amount=value,
            deadline_ms=self._lock_deadline(order.slot), slot=order.slot, green=order.green,
            seller_zone=order.zone, buyer_zone=self.config.zone)))
        confirm = TakeConfirm(take_id=take.take_id, taker=self.me, maker=order.owner, order_id=order.order_id,
                              sent_ms=self.clock())
        answer = await self._ask(order.owner, take.take_id, sign(confirm, self.key), deadline)
        self._raise_if_refused(answer)     # a maker that refuses now declines our lock (``LOCK_RELEASED``)
        if answer.status is not AnswerStatus.FILLED:
            raise TakeFailed(f"maker answered {answer.status.value} to a take confirm")

    @staticmethod
    def _raise_if_refused(answer: TakeAnswer) -> None:
        if answer.status is AnswerStatus.REFUSED:
            raise TakeRefused(answer.reason.split(":")[0], answer.reason, answer.available_wh)

    async def _ask(self, maker: bytes, take_id: bytes, request: Signed[Take] | Signed[TakeConfirm],
                   deadline: float) -> TakeAnswer:
        """One round trip to ``maker``, answered by ``deadline`` (trio's clock, seconds). No
        answer — unreachable, no handler, silent, or an answer that is not the maker's signed
        answer to this take — is a silence (``standing``): the router skips the maker a while."""
        problem = ""
        skipped_for: float | None = None        # the back-off, once this silence is noted
        asked_at = trio.current_time()
        with trio.move_on_at(deadline) as scope:
            try:
                reply = await self._requests.request(maker, request.encoded)
            except NetError as exc:
                problem = f"unreachable: {exc}"
            except trio.Cancelled:
                if trio.current_time() >= deadline:
                    # Our deadline passed: noted here, since the take's own timeout (the same instant)
                    # may be the scope that catches this.
                    skipped_for = self._silent(maker)
                raise
        if scope.cancelled_caught:
            problem = f"did not answer within {deadline - asked_at:.1f} s"
        answer = None
        if not problem:
            try:
                answer = decode_signed(reply, TakeAnswer).body
            except WireError as exc:
                problem = f"sent a bad answer: {exc}"
        if answer is not None and (answer.take_id != take_id or answer.maker != maker):
            problem = "sent an answer that does not match the take"
        if answer is None or problem:
            if skipped_for is None:
                skipped_for = self._silent(maker)
            raise TakeFailed(f"maker {maker.hex()[:8]} {problem} (skipped for {skipped_for:.0f} s)")
        return answer

    def _silent(self, maker: bytes) -> float:
        """Note that ``maker`` did not answer; returns how long its orders are skipped (s)."""
        self.stats.maker_silences += 1
        return self.standing.on_silence(maker, self.real_clock())

    # --- making -------------------------------------------------------------------------------

    async def _answer_frame(self, data: bytes, peer: bytes) -> bytes:
        return sign(await self._answer(data, peer), self.key).encoded

    async def _answer(self, data: bytes, peer: bytes) -> TakeAnswer:
        try:
            signed: Signed[object] = decode_signed(data)
        except WireError as exc:
            return self._refusal(os.urandom(16), RefuseReason.MALFORMED, str(exc))
        if isinstance(signed.body, TakeConfirm):
            return await self._answer_confirm(signed.body, peer)
        if not isinstance(signed.body, Take):
            return self._refusal(os.urandom(16), RefuseReason.MALFORMED, "neither a take nor a take confirm")
        take = signed.body
        if take.maker != self.me:
            return self._refusal(take.take_id, RefuseReason.NOT_OWNER, "this node is not the maker")
        if take.taker != peer:
            return self._refusal(take.take_id, RefuseReason.MALFORMED, "take signed by another peer than the sender")
        if take.ledger and take.ledger != self.ledger.rules.zone:
            return self._refusal(take.take_id, RefuseReason.WRONG_LEDGER,
                                 f"taker's ledger domain is {take.ledger}, this maker's is {self.ledger.rules.zone}")
        taker_zone = take.taker_zone or take.zone
        try:
            grid_fee = self.locality.fee(taker_zone)
        except ZoneNotTraded as exc:
            return self._refusal(take.take_id, RefuseReason.ZONE_NOT_TRADED, str(exc))
        now_s = self.real_clock()
        self._note_lapsed_holds(now_s)
        if self.squatters.is_backing_off(take.taker, now_s):
            return self._refusal(take.take_id, RefuseReason.LAPSED_HOLDS,
                                 "reservations of this taker lapsed unconfirmed lately; try later")
        signed_order = self.own_orders.get(take.order_id)
        order = signed_order.body if signed_order else None
        verdict = decide_take(take, order, self._committed(take.order_id, order),
                              self.desk.reserved(take.order_id, now_s), self.config.slot_rules, self.clock(), grid_fee)
        if not isinstance(verdict, Accept) or order is None:
            return self._refusal(take.take_id, verdict.reason, verdict.detail, verdict.available_wh)
        if self.desk.is_reserved(take.take_id, now_s) or take.take_id in self.ledger.state.locks:
            return self._refusal(take.take_id, RefuseReason.DUPLICATE, "this take id is taken already")
        if order.side is Side.SELL:
            # Maker first: hold the quantity; the buyer locks only after this answer.
            self.desk.hold(take, now_s + self.config.hold_s)
            self.stats.takes_reserved += 1
            return TakeAnswer(take_id=take.take_id, maker=self.me, status=AnswerStatus.RESERVED, qty_wh=take.qty_wh,
                              available_wh=0, reason="", certificate=b"", hold_ms=int(self.config.hold_s * 1000))
        # A bid: this maker (the buyer) locks its own credits for the taker.
        self.desk.reserve(take.take_id, take.order_id, take.qty_wh)
        self.stats.takes_served += 1
        try:
            certificate = await self._certify(self.ledger.next_entry("lock", Lock(
                take_id=take.take_id, seller=take.taker, order_id=take.order_id, order_owner=self.me,
                order_size_wh=order.qty_wh, qty_wh=take.qty_wh, price=take.price,
                amount=trade_value(take.qty_wh, take.price),
                deadline_ms=self._lock_deadline(order.slot), slot=order.slot, green=order.green,
                seller_zone=taker_zone, buyer_zone=order.zone)))
        except LedgerError as exc:
            return self._refusal(take.take_id, RefuseReason.NOT_CERTIFIED, str(exc)[:150])
        finally:
            self.desk.finish(take.take_id)
        return self._traded(take, order, AnswerStatus.LOCKED, certificate)

    def _note_lapsed_holds(self, now_s: float) -> None:
        """A taker that reserves and never confirms blocks the quantity for ``hold_s`` each time
        at no cost to itself: each lapse is a silence of that taker, which is refused
        (``lapsed_holds``) for the same exponential, bounded back-off a silent maker gets."""
        for take in self.desk.drain_lapsed(now_s):
            self.squatters.on_silence(take.taker, now_s)

    def _committed(self, order_id: bytes, order: Order | None) -> int:
        """What this maker's certified chain consumed of its order: fills of an offer, locks of a bid."""
        progress = self.ledger.state.orders.get((self.me, order_id))
        if progress is None:
            return 0
        return progress.filled_wh if order is None or order.side is Side.SELL else progress.locked_wh

    async def _answer_confirm(self, confirm: TakeConfirm, peer: bytes) -> TakeAnswer:
        """The buyer of a held take locked its credits: fill the lock, or refuse and decline it."""
        if confirm.maker != self.me:
            return self._refusal(confirm.take_id, RefuseReason.NOT_OWNER, "this node is not the maker")
        if confirm.taker != peer:
            return self._refusal(confirm.take_id, RefuseReason.MALFORMED,
                                 "confirm signed by another peer than the sender")
        take = self.desk.claim(confirm.take_id, peer, self.real_clock())
        signed_order = self.own_orders.get(confirm.order_id)
        order = signed_order.body if signed_order else None
        if take is None or take.order_id != confirm.order_id or order is None:
            if take is not None:
                self.desk.finish(take.take_id)
            if order is None:
                return await self._refuse_and_decline(confirm.take_id, peer, RefuseReason.UNKNOWN_ORDER,
                                                      "the order was cancelled or has closed")
            available = max(order.qty_wh - self._committed(order.order_id, order)
                            - self.desk.reserved(order.order_id, self.real_clock()), 0)
            return await self._refuse_and_decline(confirm.take_id, peer, RefuseReason.NOT_RESERVED,
                                                  "no live reservation of this take (lapsed, or never made)",
                                                  available)
        self.stats.takes_served += 1
        try:
            await self._wait_for_lock(take.take_id, take.taker)
            lock = self.ledger.state.locks.get(take.take_id)
            taker_zone = take.taker_zone or take.zone
            if lock is None:
                return self._refusal(take.take_id, RefuseReason.BAD_LOCK, "no certified lock of this take")
            if lock.buyer != take.taker or lock.lock.seller != self.me \
                    or lock.lock.order_id != take.order_id or lock.lock.qty_wh < take.qty_wh \
                    or lock.lock.price != order.limit_price \
                    or (lock.lock.seller_zone or order.zone) != order.zone \
                    or (lock.lock.buyer_zone or order.zone) != taker_zone:
                return await self._refuse_and_decline(take.take_id, peer, RefuseReason.BAD_LOCK,
                                                      "no matching certified lock")
            try:
                certificate = await self._certify(self.ledger.next_entry("fill", Fill(
                    take_id=take.take_id, buyer=take.taker, order_id=take.order_id, qty_wh=take.qty_wh,
                    price=order.limit_price)))
            except LedgerError as exc:
                return await self._refuse_and_decline(take.take_id, peer, RefuseReason.NOT_CERTIFIED, str(exc)[:150])
        finally:
            self.desk.finish(take.take_id)
        return self._traded(take, order, AnswerStatus.FILLED, certificate)

    def _traded(self, take: Take, order: Order, status: AnswerStatus, certificate: Certificate | None) -> TakeAnswer:
        taker_zone = take.taker_zone or take.zone
        self._record_take(take.order_id, take.take_id, take.qty_wh)
        self._remember_zones(take.take_id, order.slot, (order.zone, taker_zone) if order.side is Side.SELL
                             else (taker_zone, order.zone))
        return TakeAnswer(take_id=take.take_id, maker=self.me, status=status, qty_wh=take.qty_wh,
                          available_wh=0, reason="", certificate=b"" if certificate is None else encode(certificate))

    async def _refuse_and_decline(self, take_id: bytes, buyer: bytes, reason: RefuseReason, detail: str,
                                  available_wh: int = 0) -> TakeAnswer:
        """Refuse a confirmed take and hand its lock back at once (``decline``), as a pool host
        does: the buyer's credits do not wait for the lock's deadline. The refusal says whether
        the decline is certified (``LOCK_RELEASED``); if not, housekeeping tries again."""
        released = await self._decline_now(take_id, buyer)
        return self._refusal(take_id, reason, detail, available_wh, note=LOCK_RELEASED if released else "")

    async def _decline_now(self, take_id: bytes, buyer: bytes) -> bool:
        """Certify a decline of ``buyer``'s open lock ``take_id`` naming this node as seller; True
        once certified. The buyer certified the lock before confirming, so it is in our state or
        one pull of the buyer's chain away (waited for, bounded)."""
        await self.ledger.wait_for_lock(take_id, buyer, self.config.lock_wait_s)
        record = self.ledger.state.locks.get(take_id)
        if record is None or record.status is not LockStatus.OPEN or record.lock.seller != self.me \
                or record.buyer != buyer:
            return False      # nothing of ours to hand back
        entry = self.ledger.next_entry("decline", Decline(take_id=take_id))
        try:
            await self.ledger.submit(entry)
        except LedgerError:
            if not self.ledger.is_in_doubt(entry):        # (one in doubt the ledger offers again itself)
                self._to_decline[take_id] = DECLINE_WAIT_TICKS
            return False
        self.stats.declines += 1
        self._sold_open_locks.pop(take_id, None)
        return True

    def _refusal(self, take_id: bytes, reason: RefuseReason, detail: str, available_wh: int = 0,
                 note: str = "") -> TakeAnswer:
        self.stats.takes_refused[reason.value] = self.stats.takes_refused.get(reason.value, 0) + 1
        text = f"{reason.value}: {detail}"[:200 - len(note)] + note
        return TakeAnswer(take_id=take_id, maker=self.me, status=AnswerStatus.REFUSED, qty_wh=0,
                          available_wh=available_wh, reason=text, certificate=b"")

    # --- ledger helpers -----------------------------------------------------------------------

    def _lock_deadline(self, slot: int) -> int:
        return min(self.config.slot_rules.gate_closure_ms(slot), self.clock() + self.config.lock_ttl_ms)

    async def _certify(self, entry: Signed[Entry]) -> Certificate | None:
        """Certify one of our entries, riding out two transient refusals:

        * a fill may reach a validator before the lock it consumes (the lock's confirm and the
          fill's vote request travel on different streams): retried a few times;
        * no quorum reachable (a partition): offered again until a quorum answers or the caller's
          deadline (``take_timeout_s``) cancels us.

        What a retry offers: while some validator may have voted for the entry (the ledger holds
        it *in doubt* and offers it again before anything else of our chain), the *same* entry,
        since only it can ever be certified at its seq — a second fill for the same take would be
        refused once the first is certified, and the take would report a failure for a trade
        that happened. Otherwise nobody is bound to it and the ledger's tip fell back below it:
        the entry is built afresh on that tip. Before giving up, and before each retry, we check
        whether the entry got certified meanwhile (the ledger re-offers entries in doubt on its
        own); then it is a success, whose certificate is in the store rather than at hand
        (``None``).
        """
        lock_retries = 0
        delay = 0.05
        while True:
            try:
                return await self.ledger.submit(entry)
            except LedgerError as exc:
                if await self._is_certified(entry):
                    return None
                if not isinstance(exc, BatchRejected):
                    raise
                reasons = {r.reason for rs in exc.reasons.values() for r in rs}
                if not reasons:                       # nobody refused: no quorum answered
                    self.stats.quorum_retries += 1
                elif RejectReason.NO_LOCK.value in reasons and lock_retries < 3:
                    lock_retries += 1
                else:
                    raise
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)
            if await self._is_certified(entry):
                return None
            if not self.ledger.is_in_doubt(entry):
                entry = self.ledger.next_entry(entry.body.kind, decode_body(entry.body))

    async def _is_certified(self, entry: Signed[Entry]) -> bool:
        """Whether this very entry is certified (compared by hash: another entry may hold its seq)."""
        account, seq = entry.body.account, entry.body.seq
        head = self.ledger.state.head(account)
        if head.next_seq <= seq:
            return False
        if head.next_seq == seq + 1:
            return head.last_hash == entry_hash(entry)
        stored = await self.ledger.store.get_entry(account, seq)
        return stored is not None and entry_hash(stored) == entry_hash(entry)

    async def _wait_for_lock(self, take_id: bytes, owner: bytes) -> None:
        """Until the certified lock ``take_id`` is in our state: pull ``owner``'s chain, then wait."""
        await self.ledger.wait_for_lock(take_id, owner, self.config.lock_wait_s)

    def _note_new_locks(self) -> None:
        """Add the locks certified since the last call that this node holds (``_own_open_locks``)
        or is the seller of (``_sold_open_locks``). Lock records are only ever added to the state
        or replaced in place (filled, released), and a dict keeps insertion order: the records
        past the count already read are new."""
        locks = self.ledger.state.locks
        seen_in, read = self._lock_scan
        if seen_in is not locks or read > len(locks):    # another state object: read it whole
            read = 0
        if read < len(locks):
            for take_id, record in itertools.islice(locks.items(), read, None):
                if record.status is not LockStatus.OPEN:
                    continue
                if record.buyer == self.me:
                    self._own_open_locks[take_id] = None
                elif record.lock.seller == self.me and self._is_book_lock(record):
                    self._sold_open_locks[take_id] = None
        self._lock_scan = (locks, len(locks))

    def _is_book_lock(self, record: LockRecord) -> bool:
        """A lock on an order book trade, not a pool's or an escrow of a share purchase or a
        charging session (their own services hand those back). Only saves duplicate work:
        declining any lock at or past its deadline is harmless, as nothing can consume it."""
        lock = record.lock
        nominal_escrow = (lock.price, lock.qty_wh, lock.order_size_wh) == (0, 1, 1)
        return lock.order_id not in self.ledger.state.pools and not nominal_escrow

    async def _release_expired_locks(self) -> None:
        """Release this node's locks nobody consumed, once the seller's chain in our certified
        state has passed the deadline (validators accept a release only then: the seller may
        fill until then). Only this node's own open locks are looked at (``_own_open_locks``),
        not every lock of the zone."""
        self._note_new_locks()
        state = self.ledger.state
        for take_id in list(self._own_open_locks):
            record = state.locks.get(take_id)
            if record is None or record.status is not LockStatus.OPEN:
                del self._own_open_locks[take_id]     # filled, released or declined: nothing left to do
            elif seller_passed_deadline(state, record):
                try:
                    await self.ledger.submit(self.ledger.next_entry("release", Release(take_id=take_id)))
                    self.stats.releases += 1
                except LedgerError:
                    continue   # the state tells next tick (a decline may have returned it meanwhile)
            elif self.clock() >= record.lock.deadline_ms + self.ledger.rules.lock_expiry_grace_ms:
                self._start_refund(take_id)

    def _start_refund(self, take_id: bytes) -> None:
        """Start a round of expiry promises for a lock whose seller vanished, unless one ran lately."""
        now = self.real_clock()
        if self._nursery is None or now < self._refund_tried.get(take_id, -math.inf) + REFUND_RETRY_S:
            return
        self._refund_tried[take_id] = now
        self._nursery.start_soon(self._refund, take_id)

    async def _refund(self, take_id: bytes) -> None:
        promises, reasons = await self.ledger.collect_expiries(take_id)
        if len(promises) < self.ledger.rules.quorum:
            log.info("lock %s: %d of %d expiry promises (%s); asking again later", take_id.hex()[:8], len(promises),
                     self.ledger.rules.quorum, "; ".join(sorted(set(reasons.values())))[:200])
            return
        try:
            await self.ledger.submit(self.ledger.next_entry("refund", Refund(take_id=take_id, expiries=tuple(promises))))
            self.stats.refunds += 1
            self._refund_tried.pop(take_id, None)
        except LedgerError as exc:
            log.info("refund of lock %s not certified (%s); asking again later", take_id.hex()[:8], exc)

    async def _decline_locks(self) -> None:
        """Hand back the locks naming this node as seller that it will not fill: those of takes it
        refused or whose fill failed (``_to_decline``), and every one still open at its deadline
        (no fill can be dated before it any more). A decline is valid at any time; it returns the
        buyer's credits at once and dates this chain past the deadline, which the buyer's release
        would otherwise wait for."""
        self._note_new_locks()
        state = self.ledger.state
        now = self.clock()
        expired = [t for t in self._sold_open_locks
                   if (r := state.locks.get(t)) is not None and r.lock.deadline_ms <= now]
        for take_id in list(dict.fromkeys([*self._to_decline, *expired])):
            record = state.locks.get(take_id)
            if record is None:
                # Not certified here yet (the taker's lock may still be on its way): look again
                # for a few ticks; a lock that turns up later is declined at its deadline anyway.
                left = self._to_decline.pop(take_id, 0) - 1
                if left > 0:
                    self._to_decline[take_id] = left
                continue
            self._to_decline.pop(take_id, None)
            if record.status is not LockStatus.OPEN or record.lock.seller != self.me:
                self._sold_open_locks.pop(take_id, None)
                continue      # consumed or returned, or not ours: nothing to hand back
            if self.desk.is_reserved(take_id, self.real_clock()):
                continue      # a fill of it is being certified right now
            entry = self.ledger.next_entry("decline", Decline(take_id=take_id))
            try:
                await self.ledger.submit(entry)
                self.stats.declines += 1
                self._sold_open_locks.pop(take_id, None)
            except LedgerError:
                if not self.ledger.is_in_doubt(entry):     # (one in doubt the ledger offers again itself)
                    self._to_decline[take_id] = DECLINE_WAIT_TICKS   # try again; the state tells if filled

    # --- books --------------------------------------------------------------------------------

    # What this node knows is consumed of an order: the certified ledger total, or the sum of the
    # takes this node itself took part in, when its copy of the ledger has not received them yet.
    # Both count only real trades, so the larger of the two never counts a trade twice, and the
    # ledger total catches up with everything else.

    def _certified_consumed(self, order: Order) -> int:
        progress = self.ledger.state.orders.get((order.owner, order.order_id))
        if progress is None:
            return 0
        return progress.filled_wh if order.side is Side.SELL else progress.locked_wh

    def _refresh(self, order_id: bytes) -> None:
        signed = self.books.signed_order(order_id)
        if signed is not None:
            own = sum(self._own_takes.get(order_id, {}).values())
            consumed = max(self._certified_consumed(signed.body), own, self._floor.get(order_id, 0))
            self._publish_change(self.books.on_consumed(order_id, consumed))

    def _record_take(self, order_id: bytes, take_id: bytes, qty_wh: int) -> None:
        self._own_takes.setdefault(order_id, {})[take_id] = qty_wh
        self._refresh(order_id)

    def _reduce_to(self, order_id: bytes, available_wh: int) -> None:
        """A maker said only ``available_wh`` is left: a lower bound on what is consumed."""
        signed = self.books.signed_order(order_id)
        if signed is not None:
            self._floor[order_id] = max(self._floor.get(order_id, 0), signed.body.qty_wh - available_wh)
            self._refresh(order_id)

    def _sync_books_with_ledger(self) -> None:
        """Bring the books in line with trades certified since the last sync: only the orders
        whose certified progress was written since are refreshed (the ledger state's ``orders``
        is a ``WriteLog``), so a tick costs what changed, not every live order. A state read
        for the first time (or too far behind) refreshes every live order. An order added
        meanwhile is refreshed when it arrives (``_catch_up_new_order``). What this node itself
        learned (its takes, makers' floors) refreshes an order at once, in ``_record_take`` and
        ``_reduce_to``."""
        orders = self.ledger.state.orders
        if orders is self._synced_orders and isinstance(orders, WriteLog):
            if orders.writes == self._synced_writes:
                return
            written = orders.written_since(self._synced_writes)
        else:
            written = None
        if written is None:
            refresh = [signed.body.order_id for signed in self.books.live_orders()]
        else:
            refresh = list(dict.fromkeys(order_id for _, order_id in written))
        self._synced_orders = orders
        self._synced_writes = orders.writes if isinstance(orders, WriteLog) else 0
        for order_id in refresh:
            self._refresh(order_id)        # a no-op for an order not (or no longer) in the books
        if self._own_takes or self._floor:
            live = self.books.signed_order
            self._own_takes = {oid: takes for oid, takes in self._own_takes.items() if live(oid) is not None}
            self._floor = {oid: wh for oid, wh in self._floor.items() if live(oid) is not None}

    def _catch_up_new_order(self, change: BookChange) -> None:
        """An order that just entered the books may have trades certified already (its gossip
        came late, or the ledger's was early): apply them now, not at the next height change."""
        if change.change == "added":
            signed = self.books.signed_order(change.order_id)
            if signed is not None and self._certified_consumed(signed.body) > 0:
                self._refresh(change.order_id)

    def _remember_zones(self, take_id: bytes, slot: int, zones: tuple[str, str]) -> None:
        self.trade_zones[take_id] = zones
        takes = self._takes_by_slot.get(slot)
        if takes is None:
            takes = self._takes_by_slot[slot] = []
            heapq.heappush(self._slots_to_forget, slot)
        takes.append(take_id)

    def _forget_settled_zones(self, now_ms: int) -> None:
        """Forget the zones of trades whose slot settled long ago: only the slots now due are
        looked at (oldest first), never every trade remembered."""
        rules, heap = self.config.slot_rules, self._slots_to_forget
        while heap and now_ms >= rules.metering_due_ms(heap[0]) + TRADE_ZONES_KEPT_MS:
            for take_id in self._takes_by_slot.pop(heapq.heappop(heap)):
                self.trade_zones.pop(take_id, None)

    def _publish_change(self, change: BookChange) -> None:
        # Subscribers (RPC book feed) follow the home zone's books; neighbour books are read here.
        if change.change != "ignored" and change.zone == self.config.zone:
            try:
                self._book_send.send_nowait(change)
            except trio.WouldBlock:
                self.stats.book_changes_dropped += 1

    def on_delivery(self, delivery: OrderDelivery) -> None:
        """Apply one accepted gossip batch to the books."""
        now = self.clock()
        for item in delivery.items:
            if isinstance(item.body, Order):
                change = self.books.on_order(item, now)
                self._publish_change(change)
                self._catch_up_new_order(change)
            else:
                self._publish_change(self.books.on_cancel(item))

    async def _consume_orders(self, gossip: OrderGossip) -> None:
        async for delivery in gossip.deliveries:
            self.on_delivery(delivery)

    async def _housekeeping(self) -> None:
        while True:
            await trio.sleep(self.config.tick_s)
            now = self.clock()
            self.books.tick(now)
            now_s = self.real_clock()
            self._note_lapsed_holds(now_s)
            self.standing.forget_recovered(now_s)
            self.squatters.forget_recovered(now_s)
            closed = [order_id for order_id, signed in self.own_orders.items()
                      if now >= min(signed.body.expiry_ms, self.config.slot_rules.gate_closure_ms(signed.body.slot))]
            for order_id in closed:
                del self.own_orders[order_id]
            if closed and self.journal is not None:
                self.journal.compact(self.own_orders)
            self._sync_books_with_ledger()
            self._forget_settled_zones(now)
            await self._decline_locks()
            await self._release_expired_locks()

    async def run(self, *, consume_gossip: bool = True,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve takes and keep the books. With ``consume_gossip=False`` someone else reads the
        gossip deliveries and calls ``on_delivery`` (the node does, to share them)."""
        self.transport.set_stream_handler(TAKE_PROTOCOL, self._server.serve, max_frame_bytes=MAX_TAKE_BYTES)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if consume_gossip:
                    nursery.start_soon(self._consume_orders, self.gossip)
                for neighbour in self.neighbour_gossip:      # read-only books of neighbour zones
                    nursery.start_soon(self._consume_orders, neighbour)
                nursery.start_soon(self._housekeeping)
                task_status.started()
        finally:
            # The transport outlives this service: end our streams with it (see net.requests).
            await self._server.aclose()
            await self._requests.aclose()


@asynccontextmanager
async def open_trading_service(key: NodeKey, config: TradingConfig, transport: Transport, ledger: LedgerService,
                               gossip: OrderGossip, clock: Clock, journal: OwnOrderJournal | None = None,
                               neighbour_gossip: Sequence[OrderGossip] = ()) -> AsyncIterator[TradingService]:
    service = TradingService(key, config, transport, ledger, gossip, clock, journal, neighbour_gossip)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        yield service
        nursery.cancel_scope.cancel()
