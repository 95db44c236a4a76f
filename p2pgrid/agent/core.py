"""The agent's memory and judgement between ticks: forecasts, the price outlook and the cached plan (pure).

``AgentCore`` is what the ``agent`` strategy's node service (``agent_trader``) keeps from tick to
tick. The service feeds it what the node has *measured* and asks it for a decision; nothing here
reads a clock, a file or the network:

* ``observe(slot, load_wh, pv_wh, price)`` — one ended slot: the site's metered load and PV and
  the local price seen in it (volume-weighted price of the trades certified for that slot, or
  None when nobody traded: the price the agent expected then stands in). Slots must come in order;
  a gap repeats the last values. A slot that has not ended by ``now`` is refused: the agent never
  learns from the future.
* ``outlook(first_slot, count, now_ms)`` — the expected local price per slot (µc/kWh, within the
  tariff band): the price gate's forecast (``p2pgrid.forecast.price``), before any price was seen
  the prior ``midway + β·(reference − its mean)`` over the published day-ahead prices.
* the **nowcast**: what others offer on the book now bounds the price of *buying* in that slot —
  a Wh there can be bought at the best ask (``SlotMarket.best_ask``). Midday, when every roof
  offers its surplus and asks fall toward feed-in, this is what tells a battery that energy is
  cheap now (``decide(asks=...)``, in steps of 1/``ASK_STEPS`` of the tariff band).
* ``decide(now_ms, soc_wh, committed_wh, ...)`` — the plan, orders and setpoints
  (``tick.decide``), **re-planned only when something it depends on changed**: a new first slot,
  new forecasts, a different committed energy, or a state of charge off the plan's path by more
  than ``replan_soc_share`` of the battery. Otherwise the cached plan is kept and only the orders
  (whose limit prices move toward gate closure) are derived again — the plan is the expensive part
  (``plan.py``), the orders are not. ``plans`` and ``reuses`` count what it did (the
  service adds the CPU time).

The reference market (``ReferencePrices``): the wholesale day-ahead price per slot, of which only
what has been published by ``now`` (``price.published_reference_slots``) may be used. Every read of
it goes through ``ReferencePrices.known(slot, now_ms)``, which refuses a later slot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.agent.plan import BatteryPlan, default_soc_step
from p2pgrid.agent.pricing import SlotMarket
from p2pgrid.agent.tick import AgentDecision, AgentSettings, decide, decide_orders
from p2pgrid.errors import ConfigError
from p2pgrid.forecast.experts import LOAD_EXPERTS, SeriesContext
from p2pgrid.forecast.gate import Forecast, GateConfig, GateState, new_gate, step
from p2pgrid.forecast.price import PRICE_EXPERTS, REFERENCE_BETA_PRIOR, published_reference_slots
from p2pgrid.units import SlotRules

PV_GATE_EXPERTS = ("persistence", "yesterday", "smoothing")   # clear-sky experts need a PvSite
HISTORY_DAYS = 28            # the weekly expert looks four weeks back
REPLAN_SOC_SHARE = 0.05      # SoC this far (share of capacity) off the plan's path: plan again
PLAN_LEVELS = 40             # SoC levels of a live plan: a 10 kWh battery in 250 Wh steps, 4x cheaper than 100
ASK_STEPS = 20               # the book's asks are seen in steps of 1/20 of the tariff band


class FutureDataError(ConfigError):
    """Something asked for data of a slot that has not happened (or been published) yet."""


@dataclass(frozen=True)
class ReferencePrices:
    """The reference market's price per slot from ``start_s`` (µc/kWh), as published."""

    start_s: int
    slot_s: int
    prices: tuple[int, ...]

    def published(self, now_ms: int) -> int:
        """How many of ``prices`` are public at ``now_ms``."""
        return min(len(self.prices), published_reference_slots(now_ms // 1000, self.start_s, self.slot_s))

    def known(self, slot: int, now_ms: int) -> int | None:
        """The price of ``slot`` if it is published at ``now_ms``; None before ``start_s``."""
        i = (slot - self.start_s) // self.slot_s
        if i >= self.published(now_ms):
            raise FutureDataError(f"the reference price of slot {slot} is not published at {now_ms}")
        return self.prices[i] if i >= 0 else None


@dataclass
class SeriesForecaster:
    """One gate over one measured series (one value per slot)."""

    gate: GateState
    context: SeriesContext
    history: list[float] = field(default_factory=list)
    forecast: Forecast | None = None

    def add(self, value: float, context: SeriesContext | None = None, *, issue: bool = True) -> None:
        """Append one value; with ``issue`` the gate scores its forecasts and issues new ones (a
        long history is seeded without, but for its last day: the experts read it all the same)."""
        if context is not None:
            self.context = context
        self.history.append(value)
        per_day = self.context.slots_per_day
        if len(self.history) > HISTORY_DAYS * per_day:
            # Experts index history by slot of day: drop whole days only, and move the origin along.
            drop = per_day * ((len(self.history) - HISTORY_DAYS * per_day) // per_day + 1)
            self.history = self.history[drop:]
            self.context = replace(self.context, first_slot_s=self.context.first_slot_s + drop * self.context.slot_s,
                                   reference=self.context.reference[drop:],
                                   reference_known=max(0, self.context.reference_known - drop))
            self.gate = new_gate(self.gate.experts, self.gate.config)
        if issue:
            self.gate, self.forecast = step(self.gate, self.history, self.context)

    def values_for(self, first_slot: int, count: int, fallback: float | Sequence[float]) -> list[float]:
        """Forecast for ``count`` slots from ``first_slot`` (UTC s); ``fallback`` (one value, or
        one per slot) where there is none."""
        if isinstance(fallback, (int, float)):
            fallback = [float(fallback)] * count
        if self.forecast is None:
            return list(fallback)
        origin = self.context.slot_start_s(self.forecast.first_index)
        values = self.forecast.values
        out = []
        for k in range(count):
            h = (first_slot + k * self.context.slot_s - origin) // self.context.slot_s
            out.append(values[h] if 0 <= h < len(values) else (values[-1] if h >= len(values) else fallback[k]))
        return out


@dataclass(frozen=True)
class PlanKey:
    """What a plan depends on besides the SoC (checked against its path separately)."""

    first_slot: int
    forecasts: int
    committed: tuple[tuple[int, int], ...]
    asks: tuple[tuple[int, int], ...] = ()


@dataclass
class AgentCore:
    """See the module docstring."""

    rules: SlotRules
    retail: int
    feed_in: int
    steps: int                                    # forecast horizon, slots
    reference: ReferencePrices | None = None
    replan_soc_share: float = REPLAN_SOC_SHARE
    load: SeriesForecaster | None = None
    pv: SeriesForecaster | None = None
    price: SeriesForecaster | None = None
    last_slot: int | None = None
    forecasts: int = 0                            # version: +1 per observed slot
    expected: dict[int, int] = field(default_factory=dict)   # slot → price the agent expected there
    plan: BatteryPlan | None = None
    plan_key: PlanKey | None = None
    plan_markets: tuple[SlotMarket, ...] = ()
    plan_pv: tuple[float, ...] = ()
    plans: int = 0
    reuses: int = 0

    @property
    def slot_s(self) -> int:
        return self.rules.length_s

    @property
    def midway(self) -> int:
        return (self.retail + self.feed_in) // 2

    # --- what happened ------------------------------------------------------------------------

    def _price_context(self, first_slot_s: int, length: int, now_ms: int) -> SeriesContext:
        """The price series' context: the reference aligned with it, as far as published."""
        context = SeriesContext(slot_s=self.slot_s, first_slot_s=first_slot_s)
        if self.reference is None:
            return context
        known = (self.reference.start_s + self.reference.published(now_ms) * self.reference.slot_s
                 - first_slot_s) // self.slot_s
        count = max(0, min(known, length + self.steps))
        values = []
        for i in range(count):
            value = self.reference.known(first_slot_s + i * self.slot_s, now_ms)
            values.append(float(value) if value is not None else 0.0)
        return replace(context, reference=tuple(values), reference_known=count)

    def observe(self, slot: int, load_wh: float, pv_wh: float, price: float | None, now_ms: int, *,
                issue: bool = True) -> None:
        """One ended slot (see the module docstring); ``issue=False`` only records it (seeding)."""
        if slot + self.slot_s > now_ms // 1000:
            raise FutureDataError(f"slot {slot} has not ended at {now_ms}")
        if self.last_slot is not None and slot <= self.last_slot:
            return
        if self.load is None or self.pv is None or self.price is None or self.last_slot is None:
            gate_steps = self.steps + 2
            context = SeriesContext(slot_s=self.slot_s, first_slot_s=slot)
            self.load = SeriesForecaster(new_gate(LOAD_EXPERTS, GateConfig(gate_steps)), context)
            self.pv = SeriesForecaster(new_gate(PV_GATE_EXPERTS, GateConfig(gate_steps)), context)
            self.price = SeriesForecaster(new_gate(PRICE_EXPERTS, GateConfig(gate_steps)), context)
        else:
            for gap in range(self.last_slot + self.slot_s, slot, self.slot_s):   # a gap: repeat the last
                self._add(gap, self.load.history[-1], self.pv.history[-1], self.price.history[-1], now_ms, issue)
        seen = price if price is not None else self.expected.get(slot, self.prior(slot, now_ms))
        self._add(slot, load_wh, pv_wh, seen, now_ms, issue)

    def _add(self, slot: int, load_wh: float, pv_wh: float, price: float, now_ms: int, issue: bool = True) -> None:
        assert self.load is not None and self.pv is not None and self.price is not None
        self.load.add(load_wh, issue=issue)
        self.pv.add(pv_wh, issue=issue)
        context = (self._price_context(self.price.context.first_slot_s, len(self.price.history) + 1, now_ms)
                   if issue else None)
        self.price.add(price, context, issue=issue)
        self.last_slot = slot
        self.forecasts += 1
        for old in [s for s in self.expected if s <= slot]:
            del self.expected[old]

    # --- what is expected -----------------------------------------------------------------------

    def prior(self, slot: int, now_ms: int) -> int:
        """The expected local price before any was seen: midway, leaning with the published
        reference's deviation from its mean over the day around ``slot`` (β = the prior)."""
        if self.reference is None:
            return self.midway
        half_day = 86400 // self.slot_s // 2
        day = [slot + k * self.slot_s for k in range(-half_day, half_day)]
        published = self.reference.start_s + self.reference.published(now_ms) * self.reference.slot_s
        known = [v for s in day if s < published and (v := self.reference.known(s, now_ms)) is not None]
        here = self.reference.known(slot, now_ms) if slot < published else None
        if here is None or not known:
            return self.midway
        return self._clamp(self.midway + REFERENCE_BETA_PRIOR * (here - sum(known) / len(known)))

    def _clamp(self, price: float) -> int:
        low, high = min(self.feed_in, self.retail), max(self.feed_in, self.retail)
        return int(min(high, max(low, round(price))))

    def outlook(self, first_slot: int, count: int, now_ms: int) -> list[int]:
        """Expected local price per slot from ``first_slot`` (see the module docstring)."""
        priors = [self.prior(first_slot + k * self.slot_s, now_ms) for k in range(count)]
        if self.price is None or self.price.forecast is None:
            return priors
        return [self._clamp(v) for v in self.price.values_for(first_slot, count, priors)]

    def energy_outlook(self, first_slot: int, count: int, load_now_wh: float,
                       pv_now_wh: float) -> tuple[list[float], list[float]]:
        """Expected load and PV (Wh) per slot; the current readings held constant before any
        slot was observed."""
        load = self.load.values_for(first_slot, count, [load_now_wh] * count) if self.load else [load_now_wh] * count
        pv = self.pv.values_for(first_slot, count, [pv_now_wh] * count) if self.pv else [pv_now_wh] * count
        return [max(0.0, v) for v in load], [max(0.0, v) for v in pv]

    # --- what to do -----------------------------------------------------------------------------

    def decide(self, now_ms: int, soc_wh: int, limits: BatteryLimits, committed_wh: Mapping[int, int],
               settings: AgentSettings, load_now_wh: float, pv_now_wh: float,
               asks: Mapping[int, int] | None = None) -> AgentDecision:
        """Plan (or keep the plan) and derive orders and setpoints (see the module docstring).
        ``asks``: the best price others offer per slot on the book now (the nowcast)."""
        first = self.rules.slot_of(now_ms)
        seen = {slot: self._ask_step(price) for slot, price in (asks or {}).items() if slot >= first}
        key = PlanKey(first, self.forecasts, tuple(sorted((s, wh) for s, wh in committed_wh.items()
                                                         if s >= first and wh)), tuple(sorted(seen.items())))
        if self.plan is not None and key == self.plan_key and self._on_path(now_ms, soc_wh, limits):
            self.reuses += 1
            orders = decide_orders(self.plan, self.plan_pv, self.plan_markets, now_ms, self.rules,
                                   committed_wh=committed_wh, settings=settings)
            return AgentDecision(self.plan, orders, tuple(s.setpoint_w for s in self.plan.slots))
        load, pv = self.energy_outlook(first, self.steps, load_now_wh, pv_now_wh)
        prices = self.outlook(first, self.steps, now_ms)
        markets = tuple(SlotMarket(first + k * self.slot_s, self.retail, self.feed_in, prices[k],
                                   seen.get(first + k * self.slot_s)) for k in range(self.steps))
        if settings.soc_step_wh is None:
            settings = replace(settings, soc_step_wh=default_soc_step(limits, self.slot_s, PLAN_LEVELS))
        decision = decide(soc_wh, limits, load, pv, markets, now_ms, self.rules, committed_wh=committed_wh,
                          settings=settings)
        for market in markets:
            self.expected[market.slot] = market.anchor
        self.plan, self.plan_key, self.plan_markets, self.plan_pv = decision.plan, key, markets, tuple(pv)
        self.plans += 1
        return decision

    def _ask_step(self, price: int) -> int:
        """An ask rounded down to a step of the tariff band, so small moves do not re-plan."""
        step = max(1, abs(self.retail - self.feed_in) // ASK_STEPS)
        return max(self.feed_in, price // step * step)

    def _on_path(self, now_ms: int, soc_wh: int, limits: BatteryLimits) -> bool:
        """Is the SoC where the plan expects it now (linear through the first slot)?"""
        assert self.plan is not None
        first = self.plan.first
        share = (now_ms - self.rules.slot_of(now_ms) * 1000) / (self.slot_s * 1000)
        expected = first.soc_start_wh + share * (first.soc_end_wh - first.soc_start_wh)
        return abs(soc_wh - expected) <= self.replan_soc_share * limits.capacity_wh

    def expected_price(self, slot: int) -> int | None:
        """The price the current plan expects in ``slot`` (None outside it)."""
        for market in self.plan_markets:
            if market.slot == slot:
                return market.anchor
        return None

    def planned_export_wh(self, slot: int) -> int:
        """The current plan's export in ``slot`` (Wh, >= 0); 0 outside the plan."""
        if self.plan is None:
            return 0
        for market, planned in zip(self.plan_markets, self.plan.slots):
            if market.slot == slot:
                return max(0, -round(planned.grid_wh))
        return 0
