"""Validity of the trading kinds that create, consume and return locks is a deterministic, monotone
function of the entry and its certified causal past (issue #22, ``chain`` module docstring).

A random world of chains — a pool and share-programme host, a charging station, traders — is
built by writing random entries (each dated by its own chain's clock, kept only if valid). Then,
for random candidate entries of every kind here (``swap``, ``swap_decline``, ``fill``,
``decline``, ``release``, ``share_buy``, ``share_issue``, ``charge_start``, ``charge_bill``,
``lock``), two validators are compared that hold the candidate's own chain in full and a
*prefix* of every other chain, the second at least as much as the first:

* a candidate the first votes for, the second votes for too (more certified entries of other
  chains never turn a valid entry invalid);
* a candidate the first refuses for good (``is_final``), the second never votes for.

And for every lock, whatever consumes it in the seller's chain (a fill, a swap, a share issue, a
charging bill) and the buyer's release can never both be valid: one writer per lock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import p2pgrid.node.entry_kinds  # noqa: F401  every kind registered
from p2pgrid.charging.rules import (
    ChargeBill, ChargeReading, ChargeTariff, charger_counter, next_tariff_id, plan_charge_start, session_of, tariff_of,
)
from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, LockStatus, RejectReason, derive_state, process_entry, validate_entry,
)
from p2pgrid.ledger.messages import Decline, Entry, Fill, Lock, Mint, Release, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.pools.entries import (
    PoolOpen, SwapDecline, SwapRejected, compute_pool_id, plan_swap, with_request,
)
from p2pgrid.pools.messages import SwapRequest
from p2pgrid.shares.rules import (
    ShareIssue, ShareOffer, compute_buy_id, next_programme_id, plan_share_buy, programme_of,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Side, Signed, sign

SLOTS = SlotRules()
NOW = 1_800_000_000_000
SLOT = SLOTS.tradable_slots(NOW)[2]
GATE = SLOTS.gate_closure_ms(SLOT)             # NOW + 40 min
HOST, STATION = seeded_key("mono-host"), seeded_key("mono-station")
TRADERS = [seeded_key(f"mono-trader-{i}") for i in range(3)]
CONNECTOR = seeded_key("mono-connector")
FUNDS = 1_000_000_000
PRICE = 300_000                                # µc/kWh, book locks
ORDER_ID = b"\x07" * 16


@dataclass
class World:
    """Every chain's certified entries, and what the locks in them are for."""

    fx: LedgerFixture = field(default_factory=LedgerFixture)
    state: LedgerState = field(default_factory=LedgerState)
    entries: list[Signed[Entry]] = field(default_factory=list)
    clocks: dict[bytes, int] = field(default_factory=dict)
    locks: dict[bytes, tuple[str, Any]] = field(default_factory=dict)   # take id → (what, detail)
    nonce: int = 0

    def __post_init__(self) -> None:
        for key in (HOST, STATION, *TRADERS):
            self.write(self.fx.gateway, "mint", Mint(to=key.public_key, amount=FUNDS), 0)
        self.pool_id = compute_pool_id(HOST.public_key, self.fx.zone, SLOT)
        self.write(HOST, "pool_open", PoolOpen(pool_id=self.pool_id, slot=SLOT, energy_wh=20_000,
                                               credits_uc=4_000_000, fee_bps=50, energy_cap_wh=40_000,
                                               self_discharge_ppm_per_h=1_000, conversion_loss_w=10, at_ms=NOW), 0)
        self.programme_id = next_programme_id(self.state, HOST.public_key, self.fx.zone)
        self.write(HOST, "share_offer", ShareOffer(programme_id=self.programme_id, zone=self.fx.zone,
                                                   price_uc=1_000_000, fee_share_bps=5_000,
                                                   lockup_until_slot=SLOT + 3 * 900, cap_shares=6,
                                                   sale_until_ms=NOW + 3_600_000), 0)
        self.tariff_id = next_tariff_id(self.state, STATION.public_key, self.fx.zone)
        self.write(STATION, "charge_tariff", ChargeTariff(
            tariff_id=self.tariff_id, zone=self.fx.zone, price_uc_per_kwh=400_000,
            charger_keys=(CONNECTOR.public_key,), max_power_w=22_000, max_session_wh=30_000,
            until_ms=NOW + 3_600_000), 0)

    def clock(self, key) -> int:
        return self.clocks.get(key.public_key, NOW)

    def entry(self, key, kind, body, dt) -> Signed[Entry]:
        """``key``'s next entry, dated its clock moved on by ``dt`` (the clock is not moved)."""
        return self.fx.entry_on(self.state, key, kind, body, self.clock(key) + dt)

    def write(self, key, kind, body, dt) -> bool:
        """Write the entry if it is valid now (what a quorum would certify); its chain's clock
        moves on either way."""
        signed = self.entry(key, kind, body, dt)
        self.clocks[key.public_key] = signed.body.time_ms
        try:
            process_entry(self.state, signed, self.fx.rules)
        except EntryRejected:
            return False
        self.entries.append(signed)
        return True

    # --- bodies of every kind, for the lock number ``pick`` where one is needed --------------------

    def lock_ids(self, what: str | None = None) -> list[bytes]:
        return [t for t, (w, _) in self.locks.items() if what is None or w == what]

    def pick(self, what: str | None, pick: int) -> bytes | None:
        ids = self.lock_ids(what)
        return ids[pick % len(ids)] if ids else None

    def new_pool_lock(self, trader, amount: int, deadline_ms: int):
        self.nonce += 1
        energy = 1 + amount % 400
        request = sign(SwapRequest(request_id=self.nonce.to_bytes(16, "big"), trader=trader.public_key,
                                   host=HOST.public_key, pool_id=self.pool_id, zone=self.fx.zone, slot=SLOT,
                                   side=Side.BUY, energy_wh=energy, limit_uc=energy * 1_000, expires_ms=deadline_ms),
                       trader)
        lock = Lock(take_id=request.body.request_id, seller=HOST.public_key, order_id=self.pool_id,
                    order_owner=HOST.public_key, order_size_wh=energy, qty_wh=energy, price=1_000_000,
                    amount=energy * 1_000, deadline_ms=deadline_ms, slot=SLOT)
        return lock, ("pool", request)

    def new_book_lock(self, trader, amount: int, deadline_ms: int):
        self.nonce += 1
        qty = 1 + amount % 900
        lock = Lock(take_id=self.nonce.to_bytes(16, "big"), seller=HOST.public_key, order_id=ORDER_ID,
                    order_owner=HOST.public_key, order_size_wh=1_000_000, qty_wh=qty, price=PRICE,
                    amount=trade_value(qty, PRICE), deadline_ms=deadline_ms, slot=SLOT)
        return lock, ("book", lock)

    def swap(self, take_id: bytes, at_ms: int):
        request = self.locks[take_id][1]
        record = self.state.pools[self.pool_id]
        try:
            body = plan_swap(record, request.body, HOST.public_key, self.fx.zone, max(at_ms, record.pool.updated_ms))
        except SwapRejected:
            return None
        return with_request(body, request)

    def consumer(self, take_id: bytes, amount: int, at_ms: int) -> tuple[Any, str, Any] | None:
        """(key, kind, body) of the seller's entry consuming lock ``take_id``."""
        what, detail = self.locks[take_id]
        if what == "pool":
            body = self.swap(take_id, at_ms)
            return None if body is None else (HOST, "swap", body)
        if what == "book":
            return HOST, "fill", Fill(take_id=take_id, buyer=self.state.locks[take_id].buyer, order_id=ORDER_ID,
                                      qty_wh=1 + amount % detail.qty_wh, price=PRICE)
        if what == "share":
            return HOST, "share_issue", ShareIssue(buy_id=take_id, programme_id=self.programme_id, lp=detail.lp,
                                                   shares=detail.shares)
        session = session_of(self.state, take_id)
        if session is None:
            return None
        delivered = amount % (session.max_wh + 1)
        start = charger_counter(self.state, CONNECTOR.public_key, STATION.public_key)
        reading = sign(ChargeReading(charger_key=CONNECTOR.public_key, station=STATION.public_key,
                                     session_id=take_id, meter_start_wh=start, meter_stop_wh=start + delivered,
                                     started_ms=session.plugged_in_ms,
                                     ended_ms=session.plugged_in_ms + delivered * 3_600_000 // 22_000 + 1), CONNECTOR)
        price = tariff_of(self.state, self.tariff_id).terms.price_uc_per_kwh
        return STATION, "charge_bill", ChargeBill(session_id=take_id, delivered_wh=delivered,
                                                  amount_uc=trade_value(delivered, price), reading=reading.encoded)

    def returner(self, take_id: bytes) -> tuple[Any, str, Any]:
        """(key, kind, body) of the seller's entry handing lock ``take_id`` back."""
        what, _ = self.locks[take_id]
        record = self.state.locks[take_id]
        seller = STATION if record.lock.seller == STATION.public_key else HOST
        if what in ("pool", "share"):
            return seller, "swap_decline", SwapDecline(swap_id=take_id, pool_id=record.lock.order_id,
                                                       trader=record.buyer, reason="expired")
        return seller, "decline", Decline(take_id=take_id)

    def buyer_key(self, take_id: bytes):
        buyer = self.state.locks[take_id].buyer
        return next(k for k in TRADERS if k.public_key == buyer)

    def candidate(self, op: str, who: int, amount: int, dt: int, span: int) -> tuple[Any, str, Any] | None:
        """The (key, kind, body) of one random entry (not written)."""
        made = self._candidate(op, who, amount, dt, span)
        return None if made is None else made[:3]

    def _candidate(self, op: str, who: int, amount: int, dt: int, span: int):
        """(key, kind, body, what the lock it creates is for, or None)."""
        trader = TRADERS[who % len(TRADERS)]
        deadline = self.clock(trader) + dt + span
        if op == "pool_lock":
            return (trader, "lock", *self.new_pool_lock(trader, amount, deadline))
        if op == "book_lock":
            return (trader, "lock", *self.new_book_lock(trader, amount, deadline))
        if op == "share_buy":
            programme = programme_of(self.state, self.programme_id)
            self.nonce += 1
            body = plan_share_buy(programme, trader.public_key, 1 + amount % 4, self.nonce,
                                  min(deadline, programme.terms.sale_until_ms))
            return trader, "share_buy", body, ("share", _Buy(trader.public_key, body.shares))
        if op == "charge_start":
            self.nonce += 1
            body = plan_charge_start(tariff_of(self.state, self.tariff_id), trader.public_key, 1 + amount % 20_000,
                                     self.nonce, self.clock(trader) + dt, deadline)
            return trader, "charge_start", body, ("charge", None)
        take_id = self.pick(None, who)
        if op in ("consume", "return", "release") and take_id is None:
            return None
        if op == "consume":
            made = self.consumer(take_id, amount, self.clock(HOST) + dt)
            return None if made is None else (*made, None)
        if op == "return":
            return (*self.returner(take_id), None)
        if op == "release":
            return self.buyer_key(take_id), "release", Release(take_id=take_id), None
        key = (HOST, STATION, *TRADERS)[who % 5]
        return key, "transfer", Transfer(to=self.fx.gateway.public_key, amount=1), None   # "tick": time moves on

    def act(self, op: str, who: int, amount: int, dt: int, span: int) -> None:
        made = self._candidate(op, who, amount, dt, span)
        if made is None:
            return
        key, kind, body, what = made
        if self.write(key, kind, body, dt) and what is not None:
            self.locks[getattr(body, "take_id", None) or getattr(body, "buy_id", None) or body.session_id] = what


@dataclass(frozen=True)
class _Buy:
    lp: bytes
    shares: int


OPS = ["pool_lock", "book_lock", "share_buy", "share_buy", "charge_start", "consume", "consume", "consume", "return",
       "release", "tick"]
ACTIONS = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10), st.integers(0, 50_000),
                             st.integers(0, 400_000), st.integers(1, 600_000)), min_size=5, max_size=40)


def build_world(actions) -> World:
    world = World()
    for action in actions:
        world.act(*action)
    return world


# --- judging at validators that hold more or less of the other chains -------------------------------

def verdict(state: LedgerState, signed: Signed[Entry], world: World) -> str:
    try:
        validate_entry(state, signed, world.fx.rules)
    except EntryRejected as exc:
        return "final" if exc.is_final else "wait"
    return "valid"


def chains(entries) -> dict[bytes, list[Signed[Entry]]]:
    by_account: dict[bytes, list[Signed[Entry]]] = {}
    for signed in entries:
        by_account.setdefault(signed.body.account, []).append(signed)
    return {a: sorted(es, key=lambda s: s.body.seq) for a, es in by_account.items()}


def holding(by_chain, own: bytes, lengths: dict[bytes, int], world: World) -> LedgerState:
    """The state of a validator holding ``own``'s chain in full and a prefix of every other one."""
    held = [s for a, es in by_chain.items() for s in (es if a == own else es[:lengths[a]])]
    state, _ = derive_state(held, world.fx.rules)
    return state


def prefix_pair(by_chain, rng: random.Random) -> tuple[dict[bytes, int], dict[bytes, int]]:
    """Two validators' holdings of every chain, the second at least the first's; half of the time
    the second holds everything (the case that matters most: the later, fuller validator)."""
    first, second = {}, {}
    everything = rng.random() < 0.5
    for account, entries in by_chain.items():
        a, b = sorted(rng.randint(0, len(entries)) for _ in range(2))
        first[account], second[account] = a, (len(entries) if everything else b)
    return first, second


CANDIDATES = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 10), st.integers(0, 50_000),
                                st.integers(0, 400_000), st.integers(1, 600_000)), min_size=1, max_size=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(actions=ACTIONS, candidates=CANDIDATES, seed=st.integers(0, 2**32 - 1))
def test_no_validator_holding_more_of_the_other_chains_refuses_what_one_holding_less_voted_for(
        actions, candidates, seed):
    world = build_world(actions)
    by_chain = chains(world.entries)
    rng = random.Random(seed)
    for op, who, amount, dt, span in candidates:
        made = world.candidate(op, who, amount, dt, span)
        if made is None:
            continue
        key, kind, body = made
        signed = world.entry(key, kind, body, dt)
        own = key.public_key
        for _ in range(5):
            less, more = prefix_pair(by_chain, rng)
            before = verdict(holding(by_chain, own, less, world), signed, world)
            after = verdict(holding(by_chain, own, more, world), signed, world)
            if before == "valid":
                assert after == "valid", (kind, "refused by a validator holding more of the other chains")
            if before == "final":
                assert after != "valid", (kind, "a final refusal turned valid")
        full = verdict(world.state, signed, world)
        assert full == verdict(world.state.copy(), signed, world)      # deterministic: nothing else is read


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(actions=ACTIONS, amount=st.integers(0, 50_000), dt=st.integers(0, 900_000), seed=st.integers(0, 2**32 - 1))
def test_a_lock_is_never_both_consumed_by_its_seller_and_released_by_its_buyer(actions, amount, dt, seed):
    world = build_world(actions)
    rng = random.Random(seed)
    for take_id in world.lock_ids():
        if world.state.locks[take_id].status is not LockStatus.OPEN:
            continue
        made = world.consumer(take_id, amount, world.clock(HOST) + dt)
        buyer = world.buyer_key(take_id)
        release = world.entry(buyer, "release", Release(take_id=take_id), dt)
        released = verdict(world.state, release, world) == "valid"
        if made is None:
            continue
        key, kind, body = made
        consume = world.entry(key, kind, body, dt)
        consumed = verdict(world.state, consume, world) == "valid"
        assert not (consumed and released), kind
        if consumed:
            # Certify the consumer; then no validator, whatever it holds, takes the release.
            after = world.entries + [consume]
            by_chain = chains(after)
            for _ in range(4):
                lengths, _ = prefix_pair(by_chain, rng)
                state = holding(by_chain, buyer.public_key, lengths, world)
                assert verdict(state, release, world) != "valid", kind
        if released:
            # Certify the release; the seller's next entry of any date cannot consume the lock.
            state = world.state.copy()
            process_entry(state, release, world.fx.rules)
            later = world.fx.entry_on(state, key, kind, body, world.clock(key) + dt + rng.randint(0, 10**7))
            assert verdict(state, later, world) != "valid", kind


def test_the_world_builder_exercises_every_lock_kind():
    """The random worlds above are worth something: a fixed one holds every kind of lock, consumed,
    returned and released."""
    world = build_world([
        ("pool_lock", 0, 100, 0, 300_000), ("book_lock", 1, 50, 0, 300_000), ("share_buy", 2, 1, 0, 300_000),
        ("charge_start", 0, 5_000, 0, 300_000), ("consume", 0, 10, 1_000, 1), ("consume", 1, 10, 1_000, 1),
        ("consume", 2, 0, 1_000, 1), ("consume", 3, 2_000, 1_000, 1),
        ("book_lock", 1, 10, 0, 60_000), ("return", 4, 0, 0, 1),
        ("pool_lock", 2, 10, 0, 60_000), ("tick", 0, 0, 120_000, 1), ("release", 5, 0, 0, 1),
    ])
    kinds = {e.body.kind for e in world.entries}
    assert {"lock", "swap", "fill", "share_buy", "share_issue", "charge_start", "charge_bill", "decline",
            "release"} <= kinds, kinds
    assert world.state.money_total() == 0
    statuses = {world.state.locks[t].status for t in world.lock_ids()}
    assert statuses == {LockStatus.FILLED, LockStatus.RELEASED}


def test_release_waits_and_a_consumer_dated_at_the_deadline_is_refused_for_good():
    """The two halves of one writer per lock, for one book lock: the buyer's release waits
    (not final) while the seller's chain is dated before the deadline; the seller's fill dated at
    the deadline is refused for good."""
    world = World()
    lock, detail = world.new_book_lock(TRADERS[0], 10, NOW + 60_000)
    assert world.write(TRADERS[0], "lock", lock, 0)
    world.locks[lock.take_id] = detail
    release = world.entry(TRADERS[0], "release", Release(take_id=lock.take_id), 120_000)
    assert verdict(world.state, release, world) == "wait"
    _, kind, body = world.consumer(lock.take_id, 5, NOW + 60_000)
    late = world.fx.entry_on(world.state, HOST, kind, body, NOW + 60_000)
    try:
        validate_entry(world.state, late, world.fx.rules)
    except EntryRejected as exc:
        assert exc.reason is RejectReason.DEADLINE_PASSED and exc.is_final
    else:
        raise AssertionError("a fill dated at the deadline was accepted")
