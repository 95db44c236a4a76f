"""Order admission: which orders may enter a book (pure: orders, ledger facts and ``now_ms`` in,
a verdict out).

Gossip validation (``net.validation``) checks that an order is well formed, signed, on time and
new. Admission checks that it is **backed**: that its owner could honour it, on facts every node
holds in its replicated ledger. Every node's order validator applies these rules to every order
it receives (and to its own orders when they are placed), so an unbacked order reaches no book.

Rules, checked in this order for an ``Order`` (a ``Cancel`` is always admitted: it only frees):

====================  ==================================================================================
reason                rule
====================  ==================================================================================
unregistered_owner    the owner's account has no certified meter registration in the ledger
                      (``meter_registration`` or ``meter_registration_v2``, in the gateway's chain)
over_capacity         a sell: ``committed_sell_wh(owner, slot) + qty_wh > capacity_wh``, where
                      ``capacity_wh = export_w × slot_length_s // 3600`` from the account's latest
                      registration (a v1 registration records no export: capacity 0), and
                      ``committed_sell_wh`` = the sizes of the owner's **open** sells of the slot
                      this node admitted, plus the certified fills (``OrderProgress.filled_wh``) of
                      its sells of the slot that are no longer open (cancelled or expired)
unfunded_bid          a bid: ``open_bid_uc(owner) + value(qty_wh, limit_price) > budget_uc``, where
                      ``budget_uc = spendable(owner) + credit_limit_uc`` (what the owner's chain may
                      still lock: ``chain.validate_debit``) and ``open_bid_uc`` = the value of the
                      part of each of its open bids (all slots) not locked yet
                      (``size − OrderProgress.locked_wh``) — a locked part already left the balance
====================  ==================================================================================

Exactly at the limit is admitted (``≤``). The zone gateway is exempt: it is the grid, with no
meter and no credit limit (as in ``chain.validate_debit``).

**IGNORE, never REJECT.** Every fact above is replicated ledger state that a validator may not
hold yet (the gateway's registration, a mint or a fill paying the owner, a cancel overtaken in
gossip), and the honest owner judged its order on its own, possibly newer, state. A refusal is
therefore "cannot tell yet" (gossipsub IGNORE: dropped, not relayed, the sender's score kept), not
"provably invalid" (REJECT: the sender is scored down). The item is not remembered as seen, so the
same signed order is judged afresh when it comes again (book reconciliation, a re-publish) — by
then the facts may admit it.

**Order of arrival.** Open totals depend on what a node admitted before, so two orders of one
owner that together exceed its limit may be admitted in different order at different nodes: node
X keeps A and refuses B, node Y the other way round. Each book then holds an admissible subset of
that owner's orders, never more than the owner can back; the difference lasts only while both
stay open (a fill, cancel or expiry of either one lets the other in when it is offered again). An
honest owner never causes this: its own node judges its orders with the same rules at place time
(``AdmissionGate.admit_own``) against its own book, which always holds all of its own orders, and
within one gossip batch items are judged in order (a cancel first frees what the next order
needs), so a replace (cancel A, place B) is admitted everywhere once the cancel is seen. If the
cancel travels in an earlier batch and gossip delivers B's batch first, a node ignores B and keeps
it out of its book until B is offered to it again — by book reconciliation, which must bring
fetched orders through the same validator (B was not remembered as seen, so it is then admitted).

``OpenOrderTotals`` keeps the per-owner, per-slot totals incrementally: each event (admit, cancel,
certified consumption, expiry, gate closure) changes only the orders it names, in O(log n);
``recompute`` derives the same totals from scratch (the property tests compare both). The gate
learns certified consumption (fills of a sell, locks on a bid) when it judges an order of the same
owner, and only if the owner's chain grew since it last looked: both are entries of the owner's
own chain, so nothing else can change them.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from dataclasses import dataclass

from p2pgrid.errors import TradingError
from p2pgrid.ledger.chain import LedgerRules, LedgerState
from p2pgrid.settlement.entries import account_registration_of
from p2pgrid.settlement.metering import export_w_of
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Cancel, Order, Side, Signed

__all__ = [
    "AdmissionGate", "Admitted", "LedgerFacts", "OpenOrderTotals", "OrderNotAdmitted", "OwnerFacts", "Refusal",
    "judge_order", "sell_capacity_wh",
]

SECONDS_PER_HOUR = 3600


class Refusal(str, enum.Enum):
    """Why an order was not admitted (values are also ``net.validation.Reason`` values)."""

    UNREGISTERED_OWNER = "unregistered_owner"
    OVER_CAPACITY = "over_capacity"
    UNFUNDED_BID = "unfunded_bid"


class OrderNotAdmitted(TradingError):
    """One of this node's own orders that other nodes would not admit; ``reason`` says why."""

    def __init__(self, reason: Refusal, detail: str) -> None:
        super().__init__(f"order not admitted ({reason.value}): {detail}")
        self.reason = reason


@dataclass(frozen=True)
class OwnerFacts:
    """What the ledger says of an order's owner."""

    registered: bool          # a certified meter registration names the account
    export_w: int = 0         # the latest registration's export capacity, W
    budget_uc: int = 0        # spendable + credit limit: what the owner's chain may still lock
    exempt: bool = False      # the zone gateway: no meter, no credit limit


@dataclass(frozen=True)
class Admitted:
    """A verdict: ``refusal`` None means admitted."""

    refusal: Refusal | None = None
    detail: str = ""

    @property
    def admitted(self) -> bool:
        return self.refusal is None


ADMITTED = Admitted()


def sell_capacity_wh(export_w: int, slot_rules: SlotRules) -> int:
    """What a connection exporting ``export_w`` W can deliver in one slot, Wh (rounded down)."""
    return export_w * slot_rules.length_s // SECONDS_PER_HOUR


def judge_order(order: Order, owner: OwnerFacts, committed_sell_wh: int, open_bid_uc: int,
                slot_rules: SlotRules) -> Admitted:
    """The admission rules (module docstring) for one order, given its owner's facts and totals."""
    if owner.exempt:
        return ADMITTED
    if not owner.registered:
        return Admitted(Refusal.UNREGISTERED_OWNER,
                        f"account {order.owner.hex()[:16]}… has no certified meter registration here (yet)")
    if order.side is Side.SELL:
        capacity = sell_capacity_wh(owner.export_w, slot_rules)
        if committed_sell_wh + order.qty_wh > capacity:
            return Admitted(Refusal.OVER_CAPACITY,
                            f"{committed_sell_wh} Wh committed + {order.qty_wh} Wh > {capacity} Wh the account "
                            f"can export in slot {order.slot} ({owner.export_w} W registered)")
        return ADMITTED
    value = trade_value(order.qty_wh, order.limit_price)
    if open_bid_uc + value > owner.budget_uc:
        return Admitted(Refusal.UNFUNDED_BID,
                        f"{open_bid_uc} µc in open bids + {value} µc > {owner.budget_uc} µc the account may lock")
    return ADMITTED


# --- per-owner, per-slot totals, kept incrementally -----------------------------------------------

@dataclass(frozen=True)
class _Tracked:
    order: Order
    consumed_wh: int = 0      # certified: filled Wh (sell) or locked Wh (bid)
    open: bool = True

    @property
    def sell_wh(self) -> int:
        """What this order commits of its owner's export in its slot."""
        if self.order.side is not Side.SELL:
            return 0
        return self.order.qty_wh if self.open else min(self.consumed_wh, self.order.qty_wh)

    @property
    def bid_uc(self) -> int:
        """What this order commits of its owner's credits (its unlocked part, while open)."""
        if self.order.side is not Side.BUY or not self.open:
            return 0
        return trade_value(max(self.order.qty_wh - self.consumed_wh, 0), self.order.limit_price)


class OpenOrderTotals:
    """Admitted orders and their owners' totals: ``sell_wh(owner, slot)``, ``bid_uc(owner)``.

    Every change goes through ``_set`` (old contribution out, new one in), so the totals always
    equal ``recompute()``. Orders are forgotten when their slot reaches gate closure (no order of
    it can be admitted after that)."""

    def __init__(self, slot_rules: SlotRules) -> None:
        self.slot_rules = slot_rules
        self._orders: dict[bytes, _Tracked] = {}
        self._by_owner: dict[bytes, set[bytes]] = {}
        self._sell_wh: dict[tuple[bytes, int], int] = {}
        self._bid_uc_slot: dict[tuple[bytes, int], int] = {}
        self._bid_uc: dict[bytes, int] = {}
        self._tombstones: dict[bytes, tuple[bytes, int]] = {}     # cancelled before seen → (owner, slot)
        self._slot_ids: dict[int, set[bytes]] = {}                # slot → order ids and tombstones
        self._expiries: list[tuple[int, bytes]] = []               # (expiry_ms, order id), lazily pruned
        self._closures: list[int] = []                              # slots, by gate closure

    # --- queries ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def sell_wh(self, owner: bytes, slot: int) -> int:
        return self._sell_wh.get((owner, slot), 0)

    def bid_uc(self, owner: bytes, slot: int | None = None) -> int:
        if slot is None:
            return self._bid_uc.get(owner, 0)
        return self._bid_uc_slot.get((owner, slot), 0)

    def tracked(self, order_id: bytes) -> Order | None:
        tracked = self._orders.get(order_id)
        return tracked.order if tracked is not None else None

    def is_open(self, order_id: bytes) -> bool:
        tracked = self._orders.get(order_id)
        return tracked is not None and tracked.open

    def orders_of(self, owner: bytes) -> list[Order]:
        """Every tracked order of ``owner`` (open or not)."""
        return [self._orders[oid].order for oid in self._by_owner.get(owner, ())]

    def totals(self) -> tuple[dict[tuple[bytes, int], int], dict[tuple[bytes, int], int], dict[bytes, int]]:
        """(sell Wh per (owner, slot), bid µc per (owner, slot), bid µc per owner), zeros left out."""
        return ({k: v for k, v in self._sell_wh.items() if v}, {k: v for k, v in self._bid_uc_slot.items() if v},
                {k: v for k, v in self._bid_uc.items() if v})

    def recompute(self) -> tuple[dict[tuple[bytes, int], int], dict[tuple[bytes, int], int], dict[bytes, int]]:
        """``totals()`` derived from scratch from the tracked orders."""
        sells: dict[tuple[bytes, int], int] = {}
        bids_slot: dict[tuple[bytes, int], int] = {}
        bids: dict[bytes, int] = {}
        for tracked in self._orders.values():
            key = (tracked.order.owner, tracked.order.slot)
            if tracked.sell_wh:
                sells[key] = sells.get(key, 0) + tracked.sell_wh
            if tracked.bid_uc:
                bids_slot[key] = bids_slot.get(key, 0) + tracked.bid_uc
                bids[key[0]] = bids.get(key[0], 0) + tracked.bid_uc
        return sells, bids_slot, bids

    # --- events -----------------------------------------------------------------------------

    def add(self, order: Order, consumed_wh: int = 0) -> bool:
        """Count an admitted order (open unless a cancel of it came first). False if known."""
        if order.order_id in self._orders:
            return False
        tombstone = self._tombstones.pop(order.order_id, None)
        cancelled = tombstone is not None and tombstone == (order.owner, order.slot)
        self._set(order.order_id, _Tracked(order, consumed_wh, open=not cancelled))
        heapq.heappush(self._expiries, (order.expiry_ms, order.order_id))
        return True

    def cancel(self, owner: bytes, order_id: bytes, slot: int) -> None:
        """The owner withdrew ``order_id``: it stops committing (but what was sold of it stays)."""
        tracked = self._orders.get(order_id)
        if tracked is None:
            self._tombstones[order_id] = (owner, slot)
            self._index_slot(slot, order_id)
            return
        if tracked.order.owner == owner and tracked.open:
            self._set(order_id, _Tracked(tracked.order, tracked.consumed_wh, open=False))

    def consume(self, order_id: bytes, consumed_wh: int) -> None:
        """At least ``consumed_wh`` of the order is certified (filled, or locked for a bid);
        monotone and idempotent."""
        tracked = self._orders.get(order_id)
        if tracked is not None and consumed_wh > tracked.consumed_wh:
            self._set(order_id, _Tracked(tracked.order, consumed_wh, tracked.open))

    def expire(self, now_ms: int) -> None:
        """Close orders whose ``expiry_ms <= now_ms``; forget every slot past gate closure."""
        while self._expiries and self._expiries[0][0] <= now_ms:
            _, order_id = heapq.heappop(self._expiries)
            tracked = self._orders.get(order_id)
            if tracked is not None and tracked.open and tracked.order.expiry_ms <= now_ms:
                self._set(order_id, _Tracked(tracked.order, tracked.consumed_wh, open=False))
        while self._closures and self.slot_rules.gate_closure_ms(self._closures[0]) <= now_ms:
            slot = heapq.heappop(self._closures)
            for order_id in self._slot_ids.pop(slot, ()):
                # An id may have been indexed under another slot too (a cancel naming another slot).
                tombstone = self._tombstones.get(order_id)
                if tombstone is not None and tombstone[1] == slot:
                    del self._tombstones[order_id]
                tracked = self._orders.get(order_id)
                if tracked is not None and tracked.order.slot == slot:
                    self._set(order_id, None)

    # --- internals --------------------------------------------------------------------------

    def _index_slot(self, slot: int, order_id: bytes) -> None:
        ids = self._slot_ids.get(slot)
        if ids is None:
            ids = self._slot_ids[slot] = set()
            heapq.heappush(self._closures, slot)
        ids.add(order_id)

    def _set(self, order_id: bytes, new: _Tracked | None) -> None:
        old = self._orders.get(order_id)
        if old is not None:
            self._account(old, -1)
        if new is None:
            del self._orders[order_id]
            self._unindex(old)
            return
        self._orders[order_id] = new
        self._account(new, +1)
        if old is None:
            self._by_owner.setdefault(new.order.owner, set()).add(order_id)
            self._index_slot(new.order.slot, order_id)

    def _unindex(self, old: _Tracked | None) -> None:
        if old is None:
            return
        ids = self._by_owner.get(old.order.owner)
        if ids is not None:
            ids.discard(old.order.order_id)
            if not ids:
                del self._by_owner[old.order.owner]

    def _account(self, tracked: _Tracked, sign: int) -> None:
        key = (tracked.order.owner, tracked.order.slot)
        if tracked.sell_wh:
            _bump(self._sell_wh, key, sign * tracked.sell_wh)
        if tracked.bid_uc:
            _bump(self._bid_uc_slot, key, sign * tracked.bid_uc)
            _bump(self._bid_uc, key[0], sign * tracked.bid_uc)


def _bump(totals: dict, key: object, delta: int) -> None:
    value = totals.get(key, 0) + delta
    if value:
        totals[key] = value
    else:
        totals.pop(key, None)


# --- the facts, read from a ledger state ------------------------------------------------------

class LedgerFacts:
    """Owner facts and certified consumption read from a node's ledger state (as it is now).

    ``state`` and ``rules`` are callables so that the node's live ledger is read at each check;
    while they return None (no ledger yet) every owner counts as unregistered."""

    def __init__(self, state: Callable[[], LedgerState | None], rules: Callable[[], LedgerRules | None]) -> None:
        self._state = state
        self._rules = rules

    def owner(self, account: bytes) -> OwnerFacts:
        state, rules = self._state(), self._rules()
        if state is None or rules is None:
            return OwnerFacts(registered=False)
        if account == rules.gateway:
            return OwnerFacts(registered=True, exempt=True)
        registration = account_registration_of(state, account)
        if registration is None:
            return OwnerFacts(registered=False)
        return OwnerFacts(True, export_w_of(registration), state.spendable(account) + rules.credit_limit_uc)

    def chain_length(self, account: bytes) -> int:
        """How many certified entries ``account``'s chain has here (its fills and locks are there)."""
        state = self._state()
        return state.head(account).next_seq if state is not None else 0

    def consumed_wh(self, order: Order) -> int:
        state = self._state()
        progress = state.orders.get((order.owner, order.order_id)) if state is not None else None
        if progress is None:
            return 0
        return progress.filled_wh if order.side is Side.SELL else progress.locked_wh


class AdmissionGate:
    """The admission rules over one node's totals and ledger facts: the single entry point the
    order validator (and any other path that brings orders into a book) calls.

    ``judge`` admits and counts an order or cancel, or says why not; ``admit_own`` is the same
    for this node's own items, raising ``OrderNotAdmitted`` instead. One gate may serve several
    zones' gossip (an owner's limits are per account, whatever book its orders rest in)."""

    def __init__(self, facts: LedgerFacts, slot_rules: SlotRules) -> None:
        self.facts = facts
        self.slot_rules = slot_rules
        self.totals = OpenOrderTotals(slot_rules)
        self.refused: dict[str, int] = {}
        self._chain_seen: dict[bytes, int] = {}      # owner → its chain length at the last refresh

    def judge(self, signed: Signed[Order] | Signed[Cancel], now_ms: int) -> Admitted:
        body = signed.body
        self.totals.expire(now_ms)
        if isinstance(body, Cancel):
            self.totals.cancel(body.owner, body.order_id, body.slot)
            return ADMITTED
        if self.totals.tracked(body.order_id) == body:
            return ADMITTED          # seen before (the book ignores a duplicate): nothing to count
        owner = self.facts.owner(body.owner)
        if owner.registered and not owner.exempt:
            self._refresh(body.owner)
        verdict = judge_order(body, owner, self.totals.sell_wh(body.owner, body.slot),
                              self.totals.bid_uc(body.owner), self.slot_rules)
        if verdict.refusal is not None:
            self.refused[verdict.refusal.value] = self.refused.get(verdict.refusal.value, 0) + 1
            return verdict
        self.totals.add(body, self.facts.consumed_wh(body))
        return verdict

    def admit_own(self, signed: Signed[Order] | Signed[Cancel], now_ms: int) -> None:
        verdict = self.judge(signed, now_ms)
        if verdict.refusal is not None:
            raise OrderNotAdmitted(verdict.refusal, verdict.detail)

    def count_own(self, signed: Signed[Order], now_ms: int) -> None:
        """Count one of this node's orders published before (a restarted node's journal) without
        judging it again: it is in other nodes' books already, and must not be offered twice."""
        self.totals.expire(now_ms)
        self.totals.add(signed.body, self.facts.consumed_wh(signed.body))

    def _refresh(self, owner: bytes) -> None:
        """Bring ``owner``'s counted orders in line with what the ledger certified of them, if its
        chain grew since the last look: a sell's fills are entries of the seller's chain, the locks
        on a bid entries of the bidder's, so nothing else can change them. Work: the orders of
        owners whose chain changed, never the whole book."""
        seq = self.facts.chain_length(owner)
        if self._chain_seen.get(owner) == seq:
            return
        self._chain_seen[owner] = seq
        for order in self.totals.orders_of(owner):
            self.totals.consume(order.order_id, self.facts.consumed_wh(order))
