"""The ``"agent"`` strategy: trade from the node's own devices through forecasts and the battery plan.

``AgentTrader`` (name ``agent-trader``) runs after the trading service and the node's
``DeviceService`` (``p2pgrid.devices.service``; ``node.telemetry``). Every ``agent.tick_ms`` it:

1. **checks the devices.** If any device is stale (it stopped answering; ``telemetry.
   stale_devices``) the node trades conservatively: it cancels every open sell of its own, places
   no new order, starts no buy, and hands the battery back to its own self-consumption mode
   (``BatterySetpoint(None)``). It never trades on stale data.
2. **updates the forecasts** (``p2pgrid.agent.core.AgentCore``, docs/AGENTS.md). Each slot that
   ended adds its measured load and PV energy and the local price seen in it (the certified trades'
   volume-weighted price) to the histories; one gate each for load, PV and price scores the earlier
   forecasts and issues new ones. Slots missing from the telemetry repeat the previous value. The
   site's earlier history (``agent.history_file``) and the published day-ahead reference
   (``agent.reference_prices_file``) are read once at start, never beyond now.
3. **decides** over ``agent.horizon_slots`` slots from the current one: battery limits from
   ``[devices.battery]`` (one-way efficiency √round-trip), stored energy at the horizon's end valued
   at the expected sell price, SoC from the battery's last reading, tariffs from the zone, the
   expected local price per slot (the price gate's outlook; others' best ask on the book bounds
   the price of buying), and what is already **committed** per slot (bought by this node's
   executions, + ; sold on its offers as certified in the ledger, −). The plan is recomputed only
   when one of these changed; otherwise the cached plan's orders are re-priced.
4. **applies the battery setpoint** of the current slot, held to what was traded for it
   (``control.traded_setpoint_w``: no unsold battery energy exported, no unbought charge imported;
   the plan's W, + charging, becomes
   ``BatterySetpoint(-W)`` in the device's bus convention, + discharging) when it changed, and
   repeats a standing one every third of ``devices.adapter.revert_s`` on real hardware: the
   battery returns to its own control when the setpoints stop (a stale or stopped node).
   Failures are WARNING lines, at most one a minute while they repeat.
5. **keeps its offers in line with the plan.** For the ``agent.offer_lead_slots`` nearest tradable
   slots after the first (an order for the first may reach gate closure in flight), the sell
   intents (green from PV, grey from the battery) are held as resting orders: an order whose
   remaining quantity exceeds the intent (at once: never offer more than planned), falls short of
   it by a tenth and at least ``agent.min_qty_wh``, or whose limit is ``agent.reprice_min_change``
   or more away from the re-priced limit, is cancelled and replaced (the protocol has no
   "reduce": a cancel and a new order);
   offers for slots the plan no longer exports in are cancelled. The quantity of the intents of a
   slot is capped so that **offered + already sold never exceeds the plan's export** for it.
6. **buys** the need of the ``agent.buy_lead_slots`` nearest tradable slots after the first from
   the book, when the book holds energy cheaper than retail: ``trading.execute(BUY, need, slot,
   min(limit, retail − 1))`` in the background, one execution per slot at a time (an arbitrageur,
   ``agent.arbitrage``, never above the slot's expected price). Bids are not rested: nothing in the
   zone takes bids, and a resting bid plus an execution could buy twice.

No slot ending after ``[devices.meter] until_s`` (simnet: just before the run's end) is traded.
A station that hosts pools sizes and prices each new one from the plan (``pool_terms``).

Orders and executions are logged like the profile strategy's (``orders.jsonl``, ``trades.jsonl``,
``agent.json``), so simnet's checks and KPIs read both strategies the same way.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.control import traded_setpoint_w
from p2pgrid.agent.core import AgentCore, ReferencePrices, SeriesForecaster
from p2pgrid.agent.orders import OrderIntent
from p2pgrid.agent.pricing import RepricingRule, SlotMarket, expected_prices
from p2pgrid.agent.profile_trader import TraderHost
from p2pgrid.agent.runlog import AGENT_STATUS, TRADES_LOG, append_jsonl, log_order, real_ms, write_json
from p2pgrid.agent.tick import AgentDecision, AgentSettings
from p2pgrid.devices.base import BatterySetpoint, DeviceKind
from p2pgrid.devices.service import DeviceService, WithDevices, has_devices
from p2pgrid.errors import DeviceError, P2PGridError
from p2pgrid.ledger.chain import LockStatus
from p2pgrid.logs import RateLimitedWarning
from p2pgrid.node.ledger import has_ledger
from p2pgrid.pools.host import PoolTerms
from p2pgrid.wire import Order, Side, Source, sign

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

RECENT_PROBLEMS = 5          # problems kept in agent.json
GROW_TOLERANCE = 10          # an offer smaller than its intent by < 1/10 (and < min_qty_wh) stays
SETPOINT_WARNING_INTERVAL_S = 60.0   # a failing battery setpoint: one WARNING a minute at most


@dataclass
class PlannerCounters:
    ticks: int = 0
    offers: int = 0
    offered_wh: int = 0
    replaced: int = 0
    cancelled: int = 0
    buy_requests: int = 0
    requested_wh: int = 0
    executions: int = 0
    bought_wh: int = 0
    spent_uc: int = 0
    setpoints: int = 0
    plans: int = 0               # battery plans computed (the expensive step)
    plan_reuses: int = 0         # ticks that kept the plan: nothing it depends on changed
    plan_cpu_ms: float = 0.0     # process CPU spent deciding (forecasts, plans, orders), total
    max_plan_cpu_ms: float = 0.0
    problems: int = 0
    suppressed_ticks: int = 0
    recent_problems: list[str] = field(default_factory=list)   # the last few, for diagnosis
    device_stale: bool = False
    soc: float | None = None
    last_price: int = 0


def battery_limits(config: NodeConfig) -> BatteryLimits:
    """The planner's view of ``[devices.battery]``; a node without one gets a battery of no power."""
    b = config.devices.battery
    if b is None:
        return BatteryLimits(capacity_wh=1, max_charge_w=0, max_discharge_w=0)
    one_way = math.sqrt(b.round_trip_efficiency)
    return BatteryLimits(capacity_wh=b.capacity_wh, max_charge_w=b.max_charge_w, max_discharge_w=b.max_discharge_w,
                         min_soc_wh=math.ceil(b.soc_min * b.capacity_wh), max_soc_wh=int(b.soc_max * b.capacity_wh),
                         charge_efficiency=one_way, discharge_efficiency=one_way)


def agent_settings(config: NodeConfig) -> AgentSettings:
    """Energy left stored at the horizon's end is valued at the expected sell price: worth at
    least what it would fetch, so a finite horizon does not dump the battery onto the market."""
    a = config.agent
    tariffs = config.zone.tariffs
    fill = fill_probability(config)
    market = SlotMarket(0, tariffs.retail_price, tariffs.feed_in_price, expected_p2p(config))
    # Valued as a seller who may not find a buyer: an arbitrageur too (stored energy it cannot
    # sell tomorrow goes to the grid), else the horizon's end would hold back every evening sale.
    terminal = expected_prices(market, a.fill_probability).sell
    return AgentSettings(fill_probability=fill, min_qty_wh=a.min_qty_wh, terminal_price=terminal,
                         repricing=RepricingRule(a.reprice_ramp_s))


def fill_probability(config: NodeConfig) -> float:
    """An arbitrageur (a storage station) plans at the expected local price itself: what it buys
    to store is optional, an unfilled bid costs it nothing, and it sells only what it holds."""
    return 1.0 if config.agent.arbitrage else config.agent.fill_probability


def load_reference(config: NodeConfig) -> ReferencePrices | None:
    """The reference market's prices (``agent.reference_prices_file``), if the node has them."""
    name = config.agent.reference_prices_file
    if not name:
        return None
    path = config.node.data_dir / name
    try:
        data = json.loads(path.read_text())
        return ReferencePrices(int(data["start_s"]), int(data["slot_s"]), tuple(int(v) for v in data["prices"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("reference prices %s not read (%s): planning without them", path, exc)
        return None


def load_history(config: NodeConfig, core: AgentCore, now_ms: int) -> int:
    """Seed the forecasts with the site's measured past (``agent.history_file``: the telemetry a
    node installed for a while would hold). Only slots that ended before ``now_ms`` are read."""
    name = config.agent.history_file
    if not name:
        return 0
    path = config.node.data_dir / name
    try:
        data = json.loads(path.read_text())
        start, slot_s = int(data["start_s"]), int(data["slot_s"])
        load, pv = list(data["load"]), list(data["pv"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("site history %s not read (%s): forecasting from scratch", path, exc)
        return 0
    if slot_s != core.slot_s:
        log.warning("site history %s has slots of %s s, the zone %s s: not used", path, slot_s, core.slot_s)
        return 0
    ended = [i for i in range(min(len(load), len(pv))) if start + (i + 1) * slot_s <= now_ms // 1000]
    scored_from = len(ended) - 86400 // slot_s       # the gates score and issue over the last day only
    for i in ended:                                  # never the future, even if the file holds it
        core.observe(start + i * slot_s, float(load[i]), float(pv[i]), None, now_ms, issue=i >= scored_from)
    return len(ended)


def expected_p2p(config: NodeConfig) -> int:
    tariffs = config.zone.tariffs
    return config.agent.expected_p2p_price or (tariffs.retail_price + tariffs.feed_in_price) // 2


class AgentHost(TraderHost, WithDevices, Protocol):
    """What the agent strategy uses of the node: its trading service and its devices."""


class AgentTrader:
    """See the module docstring."""

    name = "agent-trader"

    def __init__(self) -> None:
        self.counters = PlannerCounters()
        self.core: AgentCore | None = None           # forecasts, price outlook, cached plan
        self.decision: AgentDecision | None = None
        self.open_sells: dict[tuple[int, Source], bytes] = {}   # (slot, source) → order id
        self.sell_orders: dict[bytes, Order] = {}    # every offer placed (for what was sold on it)
        self.bought: dict[int, int] = {}             # slot → Wh bought by executions
        self.buying: set[int] = set()                # slots with an execution in flight
        self.setpoint_w: int | None = None           # plan setpoint applied (+ charging), None = device's own mode
        self.slot_s = 900                            # the zone's slot length, set when the trader runs
        self.stale_since_ms: int | None = None       # set by simnet's stale_device fault command
        self._setpoint_at_s = -math.inf              # trio time the standing setpoint was last applied
        self._setpoint_faults = RateLimitedWarning(log, SETPOINT_WARNING_INTERVAL_S)

    async def run(self, node: AgentHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.trading is None:
            raise RuntimeError("the agent strategy needs the ledger and trading services (zone validators)")
        if getattr(node, "telemetry", None) is None:
            raise RuntimeError("the agent strategy starts after the devices service")
        node.agent = self   # fault commands and tests find the trader here
        config = node.config
        self.slot_s = config.zone.slots.length_s
        speed = config.clock.speed if config.clock.mode == "scaled" else 1.0
        # Lock deadlines are in market time; at a fast simulated clock the default minute is a
        # fraction of a real second, shorter than one certification. Give takes ~15 real seconds.
        ttl = max(node.trading.config.lock_ttl_ms, int(15_000 * speed))
        node.trading.config = replace(node.trading.config, lock_ttl_ms=ttl)
        self._core(node)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                await self.tick(node, nursery)
                self._write_status(node)
                await trio.sleep(node.config.agent.tick_ms / 1000)

    # --- one tick ---------------------------------------------------------------------------------

    async def tick(self, node: AgentHost, nursery: trio.Nursery) -> None:
        telemetry: DeviceService = node.telemetry   # type: ignore[assignment]  # set: run() checked it
        now = node.clock.now_ms()
        self.counters.ticks += 1
        stale = telemetry.stale_devices(now)
        if self.stale_since_ms is not None and now - self.stale_since_ms > self.slot_s * 1000:
            stale.add("frozen")      # fault command stale_device (simnet): readings frozen for a slot
        self.counters.device_stale = bool(stale)
        if stale:
            self.counters.suppressed_ticks += 1
            self._cancel_all_sells(node)
            await self._apply_setpoint(node, None)
            return
        started = time.process_time()
        self._update_forecasts(node, telemetry)
        decision = self._decide(node, telemetry, now)
        spent_ms = (time.process_time() - started) * 1000
        self.counters.plan_cpu_ms += spent_ms
        self.counters.max_plan_cpu_ms = max(self.counters.max_plan_cpu_ms, spent_ms)
        if decision is None:
            return
        self.decision = decision
        current = node.config.zone.slot_rules.slot_of(now)
        setpoint = traded_setpoint_w(decision.plan.first, self.committed_wh(node).get(current, 0), self.slot_s)
        await self._apply_setpoint(node, setpoint if node.config.devices.battery else None)
        self._keep_offers(node, decision, now)
        self._start_buys(node, decision, now, nursery)

    def _core(self, node: AgentHost) -> AgentCore:
        """The agent's core, made on first use: reference prices and the site's past read once."""
        if self.core is None:
            config = node.config
            self.core = AgentCore(config.zone.slot_rules, config.zone.tariffs.retail_price,
                                  config.zone.tariffs.feed_in_price, config.agent.horizon_slots,
                                  reference=load_reference(config))
            load_history(config, self.core, node.clock.now_ms())
        return self.core

    @property
    def load(self) -> SeriesForecaster | None:
        return self.core.load if self.core is not None else None

    @property
    def pv(self) -> SeriesForecaster | None:
        return self.core.pv if self.core is not None else None

    def _update_forecasts(self, node: AgentHost, telemetry: DeviceService) -> None:
        self._core(node)
        assert self.core is not None
        now = node.clock.now_ms()
        for measured in telemetry.completed_slots():
            if (self.core.last_slot is not None and measured.slot <= self.core.last_slot
                    or measured.slot + self.slot_s > now // 1000):     # not ended by this clock: later
                continue
            self.core.observe(measured.slot, measured.load_wh, measured.pv_wh, self.local_price(node, measured.slot),
                              now)

    def local_price(self, node: AgentHost, slot: int) -> float | None:
        """Volume-weighted price of the trades certified for ``slot`` (None: nobody traded)."""
        wh = value = 0
        for record in node.trading.ledger.state.locks.values():   # type: ignore[union-attr]
            if record.lock.slot == slot and record.status is LockStatus.FILLED and record.filled_wh:
                wh += record.filled_wh
                value += record.filled_wh * record.lock.price
        return value / wh if wh else None

    def _decide(self, node: AgentHost, telemetry: DeviceService, now: int) -> AgentDecision | None:
        assert self.core is not None
        config = node.config
        slot_s = config.zone.slots.length_s
        load_now = telemetry.reading(DeviceKind.LOAD)
        pv_now = telemetry.reading(DeviceKind.PV)
        load_fallback = (load_now.power_w if load_now is not None else config.devices.base_load_w) * slot_s / 3600
        pv_fallback = (pv_now.power_w if pv_now is not None else 0.0) * slot_s / 3600
        limits = battery_limits(config)
        soc_wh = 0
        battery = telemetry.battery()
        if config.devices.battery is not None:
            if battery is None:
                return None      # no battery reading yet: nothing to plan from
            soc_wh = round(battery.soc_pct * battery.capacity_wh / 100)
            self.counters.soc = battery.soc_pct / 100
        plans = self.core.plans
        try:
            decision = self.core.decide(now, soc_wh, limits, self.committed_wh(node), agent_settings(config),
                                        load_fallback, pv_fallback, asks=self.others_asks(node, now))
        except P2PGridError as exc:
            log.warning("agent could not plan: %s", exc)
            self.counters.problems += 1
            return None
        if self.core.plans == plans:
            self.counters.plan_reuses += 1
        else:
            self.counters.plans += 1
        return decision

    @staticmethod
    def metered(node: AgentHost, slot: int) -> bool:
        """Does ``slot`` end before metering stops? ``[devices.meter] until_s`` (simnet: just before
        the run's end) ends metering: the agent trades no slot that ends after it, so no trade is
        in flight when a simulation stops and compares the nodes' ledgers."""
        meter = getattr(node.config.devices, "meter", None)
        until_s = getattr(meter, "until_s", 0) if meter is not None else 0
        return not until_s or slot + node.config.zone.slots.length_s <= until_s

    def others_asks(self, node: AgentHost, now: int) -> dict[int, int]:
        """The best price other nodes offer per tradable slot of this zone on the book now."""
        tradable = set(node.config.zone.slot_rules.tradable_slots(now))
        me = node.key.public_key
        best: dict[int, int] = {}
        for signed in node.trading.books.live_orders():   # type: ignore[union-attr]
            order = signed.body
            if (order.side is Side.SELL and order.owner != me and order.zone == node.zone
                    and order.slot in tradable and order.limit_price < best.get(order.slot, math.inf)
                    and node.trading.books.remaining(order.order_id) > 0):   # type: ignore[union-attr]
                best[order.slot] = order.limit_price
        return best

    def pool_terms(self, slot: int) -> PoolTerms | None:
        """A new pool for ``slot`` (this node hosts pools): seeded with the energy the plan exports
        there, priced at the expected local price; None before the first plan (the host's defaults)."""
        if self.core is None or self.core.plan is None:
            return None
        price = self.core.expected_price(slot)
        if price is None:
            return None
        return PoolTerms(price=price, seed_wh=self.core.planned_export_wh(slot))

    # --- what is committed ------------------------------------------------------------------------

    def sold_wh(self, node: AgentHost, slot: int) -> int:
        """Energy certified as sold on this node's offers for ``slot`` (cancelled ones included)."""
        orders = node.trading.ledger.state.orders   # type: ignore[union-attr]
        total = 0
        for order in self.sell_orders.values():
            if order.slot == slot:
                progress = orders.get((order.owner, order.order_id))
                total += progress.filled_wh if progress is not None else 0
        return total

    def committed_wh(self, node: AgentHost) -> dict[int, int]:
        slots = {o.slot for o in self.sell_orders.values()} | set(self.bought)
        return {slot: self.bought.get(slot, 0) - self.sold_wh(node, slot) for slot in slots}

    def offered_wh(self, node: AgentHost, slot: int) -> int:
        """What this node has on offer for ``slot`` now plus what it sold there."""
        books = node.trading.books   # type: ignore[union-attr]
        resting = sum(books.remaining(oid) for (s, _), oid in self.open_sells.items() if s == slot)
        return resting + self.sold_wh(node, slot)

    def planned_export_wh(self, slot: int) -> int:
        """The current plan's export for ``slot`` (Wh, >= 0); 0 outside the plan."""
        return self.core.planned_export_wh(slot) if self.core is not None else 0

    # --- device -----------------------------------------------------------------------------------

    async def _apply_setpoint(self, node: AgentHost, plan_w: int | None) -> None:
        adapter = node.config.devices.adapter
        refresh_s = adapter.revert_s / 3 if adapter is not None and node.config.devices.mode == "real" else math.inf
        if plan_w == self.setpoint_w and self.counters.setpoints and (
                plan_w is None or trio.current_time() - self._setpoint_at_s < refresh_s):
            return
        telemetry: DeviceService = node.telemetry   # type: ignore[assignment]  # set: run() checked it
        if node.config.devices.battery is None:
            return
        power = None if plan_w is None else float(-plan_w)
        try:
            with trio.move_on_after(max(1.0, node.config.devices.sample_period_ms / 1000)):
                await telemetry.apply(DeviceKind.BATTERY, BatterySetpoint(power))
                self.setpoint_w = plan_w
                self._setpoint_at_s = trio.current_time()
                self.counters.setpoints += 1
        except DeviceError as exc:
            self._setpoint_faults.warn(trio.current_time(), "battery setpoint not applied: %s", exc)
            self.counters.problems += 1
        else:
            self._setpoint_faults.cleared("battery setpoints applied again")

    # --- offers -----------------------------------------------------------------------------------

    def _cancel(self, node: AgentHost, key: tuple[int, Source]) -> None:
        order_id = self.open_sells.pop(key)
        try:
            node.trading.cancel_order(order_id)   # type: ignore[union-attr]
            self.counters.cancelled += 1
        except P2PGridError as exc:     # already gone (expired, compacted)
            log.debug("cancel of %s: %s", order_id.hex(), exc)

    def _cancel_all_sells(self, node: AgentHost) -> None:
        for key in list(self.open_sells):
            self._cancel(node, key)

    def _keep_offers(self, node: AgentHost, decision: AgentDecision, now: int) -> None:
        config = node.config
        rules = config.zone.slot_rules
        window = [slot for slot in rules.tradable_slots(now)[1:1 + config.agent.offer_lead_slots]
                  if self.metered(node, slot)]
        for key in [k for k in self.open_sells if not rules.is_tradable(k[0], now)]:
            del self.open_sells[key]        # expired at gate closure with the slot
        wanted: dict[tuple[int, Source], OrderIntent] = {}
        for slot in window:
            intents = [i for i in decision.orders if i.slot == slot and i.side is Side.SELL]
            room = self.planned_export_wh(slot) - self.sold_wh(node, slot)
            for intent in intents:      # cap: offered + sold never exceeds the plan's export
                qty = min(intent.qty_wh, room)
                room -= max(qty, 0)
                if qty >= config.agent.min_qty_wh:
                    wanted[(slot, intent.source)] = replace(intent, qty_wh=qty)
        books = node.trading.books   # type: ignore[union-attr]
        for key in list(self.open_sells):
            if key[0] in window and key not in wanted:
                self._cancel(node, key)
        for key, intent in wanted.items():
            order_id = self.open_sells.get(key)
            if order_id is not None:
                order = self.sell_orders[order_id]
                remaining = books.remaining(order_id)
                grow_by = max(config.agent.min_qty_wh, intent.qty_wh // GROW_TOLERANCE)
                if (remaining <= intent.qty_wh < remaining + grow_by
                        and abs(order.limit_price - intent.limit_price) < config.agent.reprice_min_change):
                    continue
                # Cancel first: the new order must not sit next to the old one, or the slot could
                # be offered twice.
                self._cancel(node, key)
                self.counters.replaced += 1
                # What the old order sold meanwhile is counted in sold_wh: shrink to the room left.
                room = self.planned_export_wh(key[0]) - self.sold_wh(node, key[0]) - sum(
                    books.remaining(oid) for (s, _), oid in self.open_sells.items() if s == key[0])
                intent = replace(intent, qty_wh=min(intent.qty_wh, room))
                if intent.qty_wh < config.agent.min_qty_wh:
                    continue
            self._offer(node, key, intent)

    def _offer(self, node: AgentHost, key: tuple[int, Source], intent: OrderIntent) -> None:
        try:
            signed = node.trading.place_order(Side.SELL, intent.qty_wh, intent.limit_price, intent.slot,  # type: ignore[union-attr]
                                              green=intent.green, source=intent.source)
        except P2PGridError as exc:
            log.info("offer for slot %s not placed: %s", intent.slot, exc)
            self.counters.problems += 1
            self._note_problems([f"offer {intent.slot}: {exc}"])
            return
        self.open_sells[key] = signed.body.order_id
        self.sell_orders[signed.body.order_id] = signed.body
        node.stats.orders_published += 1
        log_order(node.config.node.data_dir, signed.encoded, "offer", real_ms())
        self.counters.offers += 1
        self.counters.offered_wh += intent.qty_wh
        self.counters.last_price = intent.limit_price

    # --- buys -------------------------------------------------------------------------------------

    def _start_buys(self, node: AgentHost, decision: AgentDecision, now: int, nursery: trio.Nursery) -> None:
        config = node.config
        window = [slot for slot in config.zone.slot_rules.tradable_slots(now)[1:1 + config.agent.buy_lead_slots]
                  if self.metered(node, slot)]
        retail = config.zone.tariffs.retail_price
        for intent in decision.orders:
            if intent.side is not Side.BUY or intent.slot not in window or intent.slot in self.buying:
                continue
            limit = min(intent.limit_price, retail - 1)
            expected = self.core.expected_price(intent.slot) if self.core is not None else None
            if config.agent.arbitrage and expected is not None:
                limit = min(limit, expected)   # energy to store is optional: never above its worth
            plan = node.trading.quote(Side.BUY, intent.qty_wh, intent.slot, limit)   # type: ignore[union-attr]
            if plan.filled_wh < config.agent.min_qty_wh:
                continue          # nothing on the book cheaper than retail: the grid serves it
            self.buying.add(intent.slot)
            nursery.start_soon(self._buy, node, intent.slot, min(intent.qty_wh, plan.filled_wh), limit)

    async def _buy(self, node: AgentHost, slot: int, qty_wh: int, limit: int) -> None:
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
            try:
                report = await node.trading.execute(Side.BUY, qty_wh, slot, limit)   # type: ignore[union-attr]
            except* P2PGridError as group:
                log.info("buy for slot %s failed: %s", slot, group.exceptions[0])
                self._note_problems([f"buy {slot}: {group.exceptions[0]}"])
        finally:
            self.buying.discard(slot)
        if report is None:
            self.counters.problems += 1
            return
        latency_ms = int((time.monotonic() - started) * 1000)
        for e in report.executions:
            self.bought[slot] = self.bought.get(slot, 0) + e.qty_wh
            append_jsonl(data_dir / TRADES_LOG, {
                "take_id": e.take_id.hex(), "order_id": e.order_id.hex(), "request_id": request.body.order_id.hex(),
                "seller": e.counterparty.hex(), "buyer": node.key.public_key.hex(), "slot": slot,
                "qty_wh": e.qty_wh, "price": e.price, "value_uc": e.value_uc, "latency_ms": latency_ms,
                "real_ms": real_ms()})
            self.counters.executions += 1
            self.counters.bought_wh += e.qty_wh
            self.counters.spent_uc += e.value_uc
        self.counters.problems += len(report.problems)
        self._note_problems(report.problems)

    def _note_problems(self, problems: Sequence[str]) -> None:
        self.counters.recent_problems = (self.counters.recent_problems + list(problems))[-RECENT_PROBLEMS:]

    def _write_status(self, node: AgentHost) -> None:
        try:
            write_json(node.config.node.data_dir / AGENT_STATUS, dict(self.counters.__dict__))
        except OSError as exc:
            log.warning("could not write agent status: %s", exc)


def uses_agent(config: NodeConfig) -> bool:
    """``agent.strategy = "agent"``, or ``"auto"`` on a node with devices behind its meter and a
    ledger to trade on: a node that measures its own site trades from it unless told otherwise."""
    strategy = config.agent.strategy
    if strategy == "auto":
        return has_devices(config) and has_ledger(config)
    return strategy == "agent"


def planner_services(config: NodeConfig) -> list[Any]:
    """The services of this module the node runs, by config (the registry, ``p2pgrid.node.registry``, adds them)."""
    return [AgentTrader()] if uses_agent(config) else []
