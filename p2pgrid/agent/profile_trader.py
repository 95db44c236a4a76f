"""The ``"profile"`` strategy: a node service that trades from an energy profile (simnet).

``ProfileTrader`` (``agent.strategy = "profile"``)
    Reads ``<data_dir>/<agent.profile_file>`` (``TradingProfile``: the node's expected net energy
    per slot — load − PV after its battery's self-consumption, + = need — and its offer/bid limit
    prices per slot, written by simnet from real published profiles). Every ``agent.tick_ms``:

    * for each of the next ``offer_lead_slots`` tradable slots (the first tradable slot is skipped:
      it may reach gate closure while an order is in flight) with an expected **surplus** it has
      not offered yet: one sell offer for the surplus at the slot's ask price (green, PV), resting
      in the book until gate closure;
    * for the nearest of those slots with an expected **need** it has not bought yet: one
      ``node.trading.execute(BUY, need, slot, bid_limit)`` (routed over the book, certified takes),
      in the background; what is not bought is left to the grid.

    Every order and execution is appended to ``orders.jsonl`` / ``trades.jsonl`` in the data dir
    (signed order bytes, execution with its real-time latency; ``agent.runlog``) so a restarted
    node does not offer or buy a slot twice and simnet can check and score the run. ``agent.json``
    holds counters. A **stale device** (fault command ``stale_device``, ``p2pgrid.testing.faults``)
    freezes the device's last reading: once it is older than ``STALE_AFTER_SLOTS`` slots the trader
    stops offering energy it cannot vouch for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.agent.runlog import (AGENT_STATUS, ORDERS_LOG, TRADES_LOG, append_jsonl, log_order, read_jsonl, real_ms,
                                  write_json)
from p2pgrid.errors import P2PGridError, WireError
from p2pgrid.service import WithAgent, WithStats, WithTrading
from p2pgrid.trading.admission import Refusal
from p2pgrid.wire import Order, Side, Source, decode_signed, sign

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

STALE_AFTER_SLOTS = 1
PROFILE_VERSION = 1


class ProfileError(P2PGridError):
    """The trading profile file is missing or does not fit the zone."""


# --- the profile ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TradingProfile:
    """What a node expects per slot, from ``start_s`` on, one entry per slot of ``slot_s``.

    ``net_wh``: expected load − generation after own storage (+ = need, − = surplus), Wh.
    ``ask_price`` / ``bid_price``: limit prices for offers / buys, µc/kWh. ``soc``: expected
    battery state of charge after the slot (0..1; empty when the node has no battery).
    """

    slot_s: int
    start_s: int
    net_wh: tuple[int, ...]
    ask_price: tuple[int, ...]
    bid_price: tuple[int, ...]
    soc: tuple[float, ...] = ()
    min_qty_wh: int = 50
    offer_lead_slots: int = 3

    def index(self, slot: int) -> int | None:
        i, rest = divmod(slot - self.start_s, self.slot_s)
        return i if rest == 0 and 0 <= i < len(self.net_wh) else None

    def to_json(self) -> str:
        data = {"version": PROFILE_VERSION, **{k: list(v) if isinstance(v, tuple) else v
                                               for k, v in self.__dict__.items()}}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> TradingProfile:
        data = json.loads(text)
        if data.pop("version", None) != PROFILE_VERSION:
            raise ProfileError("unknown trading profile version")
        for key in ("net_wh", "ask_price", "bid_price", "soc"):
            data[key] = tuple(data.get(key, ()))
        profile = cls(**data)
        if not len(profile.net_wh) == len(profile.ask_price) == len(profile.bid_price):
            raise ProfileError("net_wh, ask_price and bid_price must have one value per slot")
        return profile


def load_profile(config: NodeConfig) -> TradingProfile:
    path = config.node.data_dir / config.agent.profile_file
    try:
        profile = TradingProfile.from_json(path.read_text())
    except OSError as exc:
        raise ProfileError(f"cannot read trading profile {path}: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise ProfileError(f"trading profile {path} is malformed: {exc}") from exc
    if profile.slot_s != config.zone.slots.length_s:
        raise ProfileError(f"profile slots of {profile.slot_s} s, zone slots of {config.zone.slots.length_s} s")
    return profile


# --- the trader ---------------------------------------------------------------------------------

class TraderHost(WithTrading, WithStats, WithAgent, Protocol):
    """What a trading strategy uses of the node: its trading service, counters and the agent slot."""


@dataclass
class AgentCounters:
    offers: int = 0
    offered_wh: int = 0
    buy_requests: int = 0
    requested_wh: int = 0
    executions: int = 0
    bought_wh: int = 0
    spent_uc: int = 0
    suppressed_offers: int = 0
    problems: int = 0
    last_price: int = 0
    soc: float | None = None
    device_stale: bool = False


class ProfileTrader:
    name = "profile-trader"

    def __init__(self) -> None:
        self.counters = AgentCounters()
        self.offered: set[int] = set()
        self.bought: set[int] = set()
        self.stale_since_ms: int | None = None   # market time the device's readings froze

    async def run(self, node: TraderHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.trading is None:
            raise RuntimeError("the profile strategy needs the ledger and trading services (zone validators)")
        profile = load_profile(node.config)
        speed = node.config.clock.speed if node.config.clock.mode == "scaled" else 1.0
        # Lock deadlines are in market time; at a fast simulated clock the default minute is a
        # fraction of a real second, shorter than one certification. Give takes ~15 real seconds.
        ttl = max(node.trading.config.lock_ttl_ms, int(15_000 * speed))
        node.trading.config = replace(node.trading.config, lock_ttl_ms=ttl)
        self._restore(node.config.node.data_dir)
        node.agent = self   # fault commands find the trader here
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                self._tick(node, profile, nursery)
                self._write_status(node)
                await trio.sleep(node.config.agent.tick_ms / 1000)

    def _restore(self, data_dir: Path) -> None:
        for record in read_jsonl(data_dir / ORDERS_LOG):
            try:
                order = decode_signed(bytes.fromhex(record["signed"]), Order).body
            except (KeyError, ValueError, WireError):
                continue
            (self.offered if order.side is Side.SELL else self.bought).add(order.slot)

    def device_stale(self, node: TraderHost, profile: TradingProfile) -> bool:
        if self.stale_since_ms is None:
            return False
        return node.clock.now_ms() - self.stale_since_ms > STALE_AFTER_SLOTS * profile.slot_s * 1000

    def _tick(self, node: TraderHost, profile: TradingProfile, nursery: trio.Nursery) -> None:
        now = node.clock.now_ms()
        slots = node.config.zone.slot_rules.tradable_slots(now)[1:1 + profile.offer_lead_slots]
        self.counters.device_stale = self.device_stale(node, profile)
        current = profile.index(node.config.zone.slot_rules.slot_of(now))
        if current is not None and profile.soc:
            self.counters.soc = profile.soc[current]
        for n, slot in enumerate(slots):
            i = profile.index(slot)
            if i is None:
                continue
            net = profile.net_wh[i]
            if -net >= profile.min_qty_wh and slot not in self.offered:
                self.offered.add(slot)
                if self.counters.device_stale:
                    self.counters.suppressed_offers += 1
                    continue
                self._offer(node, slot, -net, profile.ask_price[i])
            elif net >= profile.min_qty_wh and n == 0 and slot not in self.bought:
                self.bought.add(slot)
                nursery.start_soon(self._buy, node, slot, net, profile.bid_price[i])

    def _offer(self, node: TraderHost, slot: int, qty_wh: int, price: int) -> None:
        try:
            signed = node.trading.place_order(Side.SELL, qty_wh, price, slot, green=True,  # type: ignore[union-attr]
                                              source=Source.PV)
        except P2PGridError as exc:
            log.info("offer for slot %s not placed: %s", slot, exc)
            self.counters.problems += 1
            if getattr(exc, "reason", None) is Refusal.UNREGISTERED_OWNER:
                # Our meter's registration has not reached our ledger yet (a node just started):
                # offer again on a later tick rather than never.
                self.offered.discard(slot)
            return
        node.stats.orders_published += 1
        log_order(node.config.node.data_dir, signed.encoded, "offer", real_ms())
        self.counters.offers += 1
        self.counters.offered_wh += qty_wh

    async def _buy(self, node: TraderHost, slot: int, qty_wh: int, limit: int) -> None:
        """Buy ``qty_wh`` for ``slot`` over the book; the request is logged as an (unpublished)
        signed bid so the welfare reference can put it into a central auction."""
        data_dir = node.config.node.data_dir
        now = node.clock.now_ms()
        request = sign(Order(order_id=os.urandom(16), owner=node.key.public_key, side=Side.BUY, zone=node.zone,
                             slot=slot, qty_wh=qty_wh, limit_price=limit, green=False, source=Source.NONE,
                             created_ms=now, expiry_ms=node.config.zone.slot_rules.gate_closure_ms(slot),
                             nonce=0), node.key)
        log_order(data_dir, request.encoded, "buy_request", real_ms())
        self.counters.buy_requests += 1
        self.counters.requested_wh += qty_wh
        started = time.monotonic()
        report = None
        try:
            report = await node.trading.execute(Side.BUY, qty_wh, slot, limit)  # type: ignore[union-attr]
        except* P2PGridError as group:   # a peer's fault, reported by a leg of the routed take
            log.info("buy for slot %s failed: %s", slot, group.exceptions[0])
        if report is None:
            self.counters.problems += 1
            return
        latency_ms = int((time.monotonic() - started) * 1000)
        for e in report.executions:
            append_jsonl(data_dir / TRADES_LOG, {
                "take_id": e.take_id.hex(), "order_id": e.order_id.hex(), "request_id": request.body.order_id.hex(),
                "seller": e.counterparty.hex(), "buyer": node.key.public_key.hex(), "slot": slot,
                "qty_wh": e.qty_wh, "price": e.price, "value_uc": e.value_uc, "latency_ms": latency_ms,
                "real_ms": real_ms()})
            self.counters.executions += 1
            self.counters.bought_wh += e.qty_wh
            self.counters.spent_uc += e.value_uc
            self.counters.last_price = e.price
        self.counters.problems += len(report.problems)
        for problem in report.problems:
            log.info("buy for slot %s: %s", slot, problem)

    def _write_status(self, node: TraderHost) -> None:
        try:
            write_json(node.config.node.data_dir / AGENT_STATUS, dict(self.counters.__dict__))
        except OSError as exc:
            log.warning("could not write agent status: %s", exc)


def profile_services(config: NodeConfig) -> list[Any]:
    """The profile strategy's service, when ``agent.strategy = "profile"``."""
    return [ProfileTrader()] if config.agent.strategy == "profile" else []
