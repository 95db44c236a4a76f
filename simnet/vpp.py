"""A virtual power plant on a winter feeder: ``python -m simnet.vpp --out DIR``.

A feeder of ``homes`` households (Fraunhofer ISE synPRO load profiles; a share with a home
battery, a share with an EV charging at home from the synPRO e-mobility profiles) has an import
limit that their winter evening peak exceeds. The zone operator forecasts the feeder's evening
load from the last days' certified readings, posts a ``flex_request`` for the slots above the
limit, the homes' agents offer what their batteries and EVs can give (``flex.agent``), the
operator awards in merit order, the awarded homes act on the event evening (pause the EV, then
discharge the battery), their meters report and the operator settles — every step a signed
ledger entry judged by the real rules (``p2pgrid.flex.entries``) on a ``LedgerState``, as a
validator would. At the end the certified entries are replayed in a shuffled order and must derive
the same state root, with money conserved.

What is simulated and what is not:

* Energy: profile day ``event_day`` (a January weekday) and ``history_days`` days before it, 15-minute
  slots, local standard time taken as UTC. No PV (a winter evening). Without the VPP a battery
  stays idle in the evening (held as backup, charged overnight) and an EV charges as its profile
  says. On the event evening an awarded home sheds its award: first the EV's charge of the slot
  (moved to the first slots after the event window: the rebound is shown), then the battery's
  discharge, within its power and its charge above the backup reserve. Its real load on the event
  day is the profile's, not its baseline: delivered flexibility differs from the award by exactly
  that deviation.
* Ledger: one pure ``LedgerState`` (no network, no committee): the distributed path is what
  ``tests/flex/test_flex_cluster.py`` runs on four nodes over libp2p.

Output in ``--out``: ``kpis.json`` (key ``flexibility``: request, offers, awards, delivery,
payments per node, feeder peak with and without), ``report.html`` and ``plots/vpp_feeder.png``.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pgrid.agent.battery import BatteryLimits
from p2pgrid.flex.agent import EvSession, deliverable_wh, home_limits
from p2pgrid.flex.baseline import DAY_S
from p2pgrid.flex.entries import (
    FLEX_AWARD_KIND, FLEX_OFFER_KIND, FLEX_REQUEST_KIND, FLEX_SETTLE_KIND, FlexRequest, award_of, compute_award,
    compute_flex_settle, compute_request_id, offer_baselines, offers_of, plan_offer, request_of, requests,
    settlement_of_request,
)
from p2pgrid.flex.rules import Direction
from p2pgrid.flex.testing import MeterBook, registration_v2
from p2pgrid.ledger.chain import LedgerState, derive_state, process_entry, state_root
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.entries import METER_KIND, METER_REGISTRATION_V2_KIND
from p2pgrid.units import SlotRules

__all__ = ["VppScenario", "ledger_flexibility", "main", "run_vpp"]

SLOT_S = 900
SLOTS_PER_DAY = DAY_S // SLOT_S
CALENDAR_DAY0 = 20_000            # Unix day of profile day 0 (the calendar only needs to be consistent)


@dataclass(frozen=True)
class VppScenario:
    seed: int = 7
    homes: int = 40                   # one low-voltage feeder
    battery_share: float = 0.3        # a high-adoption future: 3 in 10 homes with a battery
    ev_share: float = 0.3
    battery_wh: int = 10_000
    battery_w: int = 5_000
    reserve_share: float = 0.2        # of capacity, kept for backup: never offered
    soc_share: float = 0.8            # state of charge at the start of the evening
    export_w: int = 5_000             # each connection (registered with the meter)
    event_day: int = 16               # profile day: 17 January, a Wednesday
    history_days: int = 10
    window_hours: tuple[int, int] = (16, 24)
    limit_share: float = 0.85         # the feeder's import limit, as a share of its forecast evening peak
    price_cap_uc: int = 400_000
    penalty_uc: int = 100_000
    asks_uc: tuple[int, int] = (120_000, 300_000)


@dataclass
class Home:
    name: str
    key: Any
    meter: MeterBook
    load: list[int]                   # Wh per slot over history + event day
    ev: list[int]
    battery: BatteryLimits | None
    ask_uc: int


def _window_slots(s: VppScenario) -> list[int]:
    """Slot indexes within a day of the evening window."""
    return list(range(s.window_hours[0] * 4, s.window_hours[1] * 4))


def _slot_start(s: VppScenario, day_offset: int, index: int) -> int:
    return (CALENDAR_DAY0 + s.event_day - s.history_days + day_offset) * DAY_S + index * SLOT_S


def _homes(s: VppScenario) -> list[Home]:
    from simnet.profiles import ev_charging, household_load

    rng = random.Random(f"vpp:{s.seed}")
    n_days = s.history_days + 2          # history, the event day, the next morning (EV departures)
    start = s.event_day - s.history_days
    homes = []
    for i in range(s.homes):
        key = seeded_key(f"vpp-home-{s.seed}-{i}")
        battery = (BatteryLimits(capacity_wh=s.battery_wh, max_charge_w=s.battery_w, max_discharge_w=s.battery_w,
                                 reserve_wh=int(s.reserve_share * s.battery_wh))
                   if rng.random() < s.battery_share else None)
        ev = ev_charging(s.seed * 1000 + i, n_days, start) if rng.random() < s.ev_share else [0] * (n_days * 96)
        homes.append(Home(f"home-{i:02d}", key, MeterBook(key.public_key, seeded_key(f"vpp-meter-{s.seed}-{i}"),
                                                           "vppzone", SlotRules()),
                          household_load(s.seed * 1000 + i, n_days, start), ev, battery,
                          rng.randrange(s.asks_uc[0], s.asks_uc[1] + 1, 1000)))
    return homes


class Ledger:
    """The zone's ledger as one validator sees it: every entry judged by the rules and applied."""

    def __init__(self) -> None:
        self.fix = LedgerFixture(zone="vppzone")
        self.state = LedgerState()
        self.log: list[Any] = []

    def write(self, key: Any, kind: str, body: Any, time_ms: int) -> None:
        entry = self.fix.entry_on(self.state, key, kind, body, time_ms)
        process_entry(self.state, entry, self.fix.rules)
        self.log.append(entry)


def _ev_session(home: Home, s: VppScenario, event_slots: list[int], day_index: int) -> EvSession | None:
    """The EV's charge from the event on, as its agent knows it at noon (its charge plan: the
    profile): plugged in through the window, the energy it charges from the event start to 07:00
    next morning, and what it draws in each event slot."""
    first = day_index * SLOTS_PER_DAY + event_slots[0]
    until = (day_index + 1) * SLOTS_PER_DAY + 7 * 4
    need = sum(home.ev[first:until])
    if need == 0:
        return None
    start_ms = _slot_start(s, day_index, event_slots[0]) * 1000
    planned = tuple(home.ev[day_index * SLOTS_PER_DAY + i] for i in event_slots)
    return EvSession(start_ms, _slot_start(s, day_index + 1, 7 * 4) * 1000, need, 3_700, planned)


def run_vpp(s: VppScenario, out_dir: Path) -> dict[str, Any]:
    homes = _homes(s)
    ledger = Ledger()
    gateway = ledger.fix.gateway
    window = _window_slots(s)
    day = s.history_days                      # index of the event day in the series
    for home in homes:
        ledger.write(gateway, METER_REGISTRATION_V2_KIND, registration_v2(
            gateway.public_key, home.key.public_key, home.meter.key.public_key, "vppzone", s.export_w), 0)
    # The evening history, certified reading by reading.
    for d in range(s.history_days):
        for home in homes:
            for i in window:
                k = d * SLOTS_PER_DAY + i
                slot = _slot_start(s, d, i)
                ledger.write(home.key, METER_KIND, home.meter.body(slot, home.load[k] + home.ev[k]),
                             home.meter.reading_created_ms(slot))
    # The operator's forecast of the event evening: each slot's mean over the last five days.
    feeder_history = [[sum(h.load[d * SLOTS_PER_DAY + i] + h.ev[d * SLOTS_PER_DAY + i] for h in homes)
                       for i in window] for d in range(s.history_days)]
    forecast = [statistics.mean(day_values[j] for day_values in feeder_history[-5:]) for j in range(len(window))]
    limit_wh = int(s.limit_share * max(forecast))
    over = [j for j, f in enumerate(forecast) if f > limit_wh]
    first_j, last_j = over[0], over[-1]
    event_slots = window[first_j:last_j + 1]
    qty = int(max(forecast[j] - limit_wh for j in over)) + 1
    noon_ms = _slot_start(s, day, 12 * 4) * 1000
    terms = FlexRequest(request_id=compute_request_id(gateway.public_key, "vppzone", s.seed), zone="vppzone",
                        feeder="feeder-1", direction=Direction.DOWN, first_slot=_slot_start(s, day, event_slots[0]),
                        n_slots=len(event_slots), qty_wh=qty, price_uc_per_kwh=s.price_cap_uc,
                        penalty_uc_per_kwh=s.penalty_uc, offer_deadline_ms=noon_ms + 3 * 3_600_000)
    ledger.write(gateway, FLEX_REQUEST_KIND, terms, noon_ms)
    record = request_of(ledger.state, terms.request_id)
    # The homes' agents offer at 13:00 from their devices' limits.
    sessions = {}
    for home in homes:
        ev = _ev_session(home, s, event_slots, day)
        sessions[home.name] = ev
        shed = home_limits(Direction.DOWN, record.slots, SLOT_S, home.battery,
                           int(s.soc_share * s.battery_wh) if home.battery else 0, ev)
        if shed is None:
            continue
        # What the agent expects without acting: its load's mean over the last five days plus
        # the car's planned charge; the offer is what shedding delivers against the baseline.
        baselines = offer_baselines(ledger.state, home.key.public_key, record)
        expected = [round(statistics.mean(home.load[d * SLOTS_PER_DAY + i] for d in range(day - 5, day)))
                    + (ev.planned_wh[n] if ev and ev.planned_wh else 0) for n, i in enumerate(event_slots)]
        limits = deliverable_wh(shed, [b.wh if b else 0 for b in baselines], expected)
        body = plan_offer(ledger.state, ledger.fix.rules, home.key.public_key, home.meter.key.public_key,
                          terms.request_id, home.ask_uc, limits)
        if body is not None:
            ledger.write(home.key, FLEX_OFFER_KIND, body, noon_ms + 3_600_000)
    ledger.write(gateway, FLEX_AWARD_KIND, compute_award(ledger.state, terms.request_id), terms.offer_deadline_ms)
    award = {line.account: line.awarded_wh for line in award_of(ledger.state, terms.request_id).award.lines}

    # The event evening: awarded homes shed their award (EV first, then the battery).
    n_window = len(window)
    with_vpp = {h.name: [h.load[day * SLOTS_PER_DAY + i] + h.ev[day * SLOTS_PER_DAY + i] for i in window] for h in homes}
    without = {name: list(values) for name, values in with_vpp.items()}
    acted: dict[str, dict[str, int]] = {}
    for home in homes:
        awarded = award.get(home.key.public_key)
        if awarded is None:
            continue
        soc = int(s.soc_share * s.battery_wh) if home.battery else 0
        moved_ev = discharged = 0
        for n, i in enumerate(event_slots):
            j = window.index(i)
            want = awarded[n]
            ev_now = home.ev[day * SLOTS_PER_DAY + i] if sessions[home.name] else 0
            paused = min(ev_now, want)
            battery = 0
            if home.battery is not None:
                floor = max(home.battery.min_soc_wh, home.battery.reserve_wh)
                battery = min(want - paused, home.battery.max_discharge_w * SLOT_S // 3600,
                              int(max(0, soc - floor) * home.battery.discharge_efficiency))
                soc -= int(battery / home.battery.discharge_efficiency) if battery else 0
            with_vpp[home.name][j] -= paused + battery
            moved_ev += paused
            discharged += battery
        # The paused EV energy is charged in the first slots after the event, at most 3.7 kW.
        j = window.index(event_slots[-1]) + 1
        left = moved_ev
        while left > 0 and j < n_window:
            add = min(left, 3_700 * SLOT_S // 3600)
            with_vpp[home.name][j] += add
            left -= add
            j += 1
        acted[home.name] = {"ev_paused_wh": moved_ev, "battery_wh": discharged, "ev_after_window_wh": left}
    for home in homes:
        for i in window:
            slot = _slot_start(s, day, i)
            net = with_vpp[home.name][window.index(i)]
            ledger.write(home.key, METER_KIND, home.meter.body(slot, max(net, 0), max(-net, 0)),
                         home.meter.reading_created_ms(slot))
    ledger.write(gateway, FLEX_SETTLE_KIND, compute_flex_settle(ledger.state, ledger.fix.rules, terms.request_id),
                 SlotRules().metering_due_ms(record.slots[-1]))

    # Every validator derives the same state from the certified entries, in any order.
    shuffled = list(ledger.log)
    random.Random(s.seed).shuffle(shuffled)
    replayed, pending = derive_state(shuffled, ledger.fix.rules)
    if pending or state_root(replayed) != state_root(ledger.state) or ledger.state.money_total() != 0:
        raise RuntimeError("the replayed ledger differs, or money is not conserved")

    feeder_with = [sum(values[j] for values in with_vpp.values()) for j in range(n_window)]
    feeder_without = [sum(values[j] for values in without.values()) for j in range(n_window)]
    settlement = settlement_of_request(ledger.state, terms.request_id)
    name_of = {h.key.public_key: h.name for h in homes}
    offers = {name_of[o.account]: o for o in offers_of(ledger.state, terms.request_id)}
    by_node = {}
    for line in settlement.lines:
        name = name_of[line.account]
        offer = offers[name].offer
        by_node[name] = {"ask_uc_per_kwh": offer.price_uc_per_kwh, "offered_wh": sum(offer.qty_wh),
                         "baseline_wh": sum(offer.baseline_wh), "awarded_wh": line.result.awarded_wh,
                         "delivered_wh": line.result.delivered_wh, "paid_wh": line.result.paid_wh,
                         "short_wh": line.result.short_wh, "payment_uc": line.result.payment_uc,
                         "penalty_uc": line.result.penalty_uc, "net_uc": line.net_uc, **acted.get(name, {})}
    event_js = [window.index(i) for i in event_slots]
    peak_without = max(feeder_without[j] for j in event_js) * 3600 // SLOT_S
    peak_with = max(feeder_with[j] for j in event_js) * 3600 // SLOT_S
    awarded_wh = sum(v["awarded_wh"] for v in by_node.values())
    flexibility = {
        "scenario": {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(s).items()}},
        "homes": {"total": len(homes), "with_battery": sum(1 for h in homes if h.battery),
                  "with_ev": sum(1 for h in homes if any(h.ev))},
        "limit_w": limit_wh * 3600 // SLOT_S,
        "request": {"slots": len(event_slots), "first_slot": terms.first_slot, "qty_wh_per_slot": qty,
                    "requested_wh": qty * len(event_slots), "price_cap_uc_per_kwh": s.price_cap_uc,
                    "penalty_uc_per_kwh": s.penalty_uc},
        "offers": len(offers), "offered_wh": sum(sum(o.offer.qty_wh) for o in offers.values()),
        "awarded_wh": awarded_wh,
        "delivered_wh": sum(v["delivered_wh"] for v in by_node.values()),
        "paid_wh": sum(v["paid_wh"] for v in by_node.values()),
        "delivered_over_awarded": round(sum(v["delivered_wh"] for v in by_node.values()) / awarded_wh, 4)
        if awarded_wh else None,
        "paid_over_awarded": round(sum(v["paid_wh"] for v in by_node.values()) / awarded_wh, 4) if awarded_wh else None,
        "payments_uc": sum(v["payment_uc"] for v in by_node.values()),
        "penalties_uc": sum(v["penalty_uc"] for v in by_node.values()),
        "peak_without_w": peak_without, "peak_with_w": peak_with, "peak_reduction_w": peak_without - peak_with,
        "peak_reduction_share": round((peak_without - peak_with) / peak_without, 4) if peak_without else None,
        "slots_over_limit": {"without": sum(1 for v in feeder_without if v > limit_wh),
                             "with": sum(1 for v in feeder_with if v > limit_wh)},
        "rebound_peak_w": max(feeder_with[j] for j in range(event_js[-1] + 1, n_window)) * 3600 // SLOT_S
        if event_js[-1] + 1 < n_window else None,
        "by_node": by_node,
        "feeder_wh": {"slots": [_slot_start(s, day, i) for i in window], "without": feeder_without,
                      "with": feeder_with, "limit": limit_wh},
        "ledger": {"entries": len(ledger.log), "state_root": state_root(ledger.state).hex(),
                   "replayed_equal": True, "money_total": ledger.state.money_total()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    kpis = {"flexibility": flexibility}
    (out_dir / "kpis.json").write_text(json.dumps(kpis, indent=1, sort_keys=True))
    _write_report(out_dir, flexibility)
    return kpis


def ledger_flexibility(state: LedgerState | None) -> dict[str, Any]:
    """The ``flexibility`` KPI of any run, from its certified ledger: requests, offers, awarded,
    delivered and paid Wh, payments and penalties (µc), per account."""
    if state is None or not requests(state):
        return {"value": None, "reason": "no flexibility requests"}
    out: dict[str, Any] = {"requests": 0, "offers": 0, "awarded_wh": 0, "delivered_wh": 0, "paid_wh": 0,
                           "payments_uc": 0, "penalties_uc": 0, "by_account": {}}
    for record in requests(state):
        rid = record.terms.request_id
        out["requests"] += 1
        out["offers"] += len(offers_of(state, rid))
        settled = settlement_of_request(state, rid)
        for line in settled.lines if settled else ():
            r = line.result
            for key, value in (("awarded_wh", r.awarded_wh), ("delivered_wh", r.delivered_wh),
                               ("paid_wh", r.paid_wh), ("payments_uc", r.payment_uc), ("penalties_uc", r.penalty_uc)):
                out[key] += value
            out["by_account"][line.account.hex()] = out["by_account"].get(line.account.hex(), 0) + line.net_uc
    out["delivered_over_awarded"] = round(out["delivered_wh"] / out["awarded_wh"], 4) if out["awarded_wh"] else None
    return out


def _plot(out_dir: Path, f: dict[str, Any]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    series = f["feeder_wh"]
    hours = [(slot % DAY_S) / 3600 for slot in series["slots"]]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step(hours, [v * 4 / 1000 for v in series["without"]], where="post", label="without VPP")
    ax.step(hours, [v * 4 / 1000 for v in series["with"]], where="post", label="with VPP")
    ax.axhline(series["limit"] * 4 / 1000, color="red", linestyle="--", label="import limit")
    ax.set_xlabel("hour of the event day")
    ax.set_ylabel("feeder import, kW (15-min mean)")
    ax.legend()
    fig.tight_layout()
    (out_dir / "plots").mkdir(exist_ok=True)
    fig.savefig(out_dir / "plots" / "vpp_feeder.png", dpi=100)
    plt.close(fig)
    return "plots/vpp_feeder.png"


def _write_report(out_dir: Path, f: dict[str, Any]) -> None:
    plot = _plot(out_dir, f)
    series = f["feeder_wh"]
    rows = "".join(f"<tr><td>{(slot % DAY_S) // 3600:02d}:{(slot % 3600) // 60:02d}</td><td>{w * 4:,}</td>"
                   f"<td>{v * 4:,}</td><td>{series['limit'] * 4:,}</td></tr>"
                   for slot, w, v in zip(series["slots"], series["without"], series["with"]))
    nodes = "".join(f"<tr><td>{html.escape(n)}</td><td>{v['ask_uc_per_kwh'] / 1e6:.4f}</td><td>{v['awarded_wh']:,}</td>"
                    f"<td>{v['delivered_wh']:,}</td><td>{v['paid_wh']:,}</td><td>{v['short_wh']:,}</td>"
                    f"<td>{v['net_uc'] / 1e6:.4f}</td></tr>" for n, v in sorted(f["by_node"].items()))
    figure = f'<img src="{plot}" alt="feeder load with and without the VPP">' if plot else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>p2pgrid simnet: VPP</title>
<style>body{{font-family:sans-serif;max-width:60em}}td,th{{padding:2px 8px;text-align:right}}</style></head><body>
<h1>Virtual power plant on a winter feeder</h1>
<p>{f['homes']['total']} homes ({f['homes']['with_battery']} with a battery, {f['homes']['with_ev']} with an EV),
import limit {f['limit_w']:,} W. The operator requested {f['request']['qty_wh_per_slot']:,} Wh less import in
each of {f['request']['slots']} slots; {f['offers']} homes offered {f['offered_wh']:,} Wh; {f['awarded_wh']:,} Wh were
awarded, {f['delivered_wh']:,} Wh delivered against the committed baselines ({f['delivered_over_awarded']} of the
award; {f['paid_wh']:,} Wh paid). Feeder peak in the event: {f['peak_without_w']:,} W without the VPP,
{f['peak_with_w']:,} W with it (−{f['peak_reduction_w']:,} W); slots over the limit in the window:
{f['slots_over_limit']['without']} without, {f['slots_over_limit']['with']} with. Rebound peak after the event:
{f['rebound_peak_w']} W. Payments {f['payments_uc'] / 1e6:.4f} credits, penalties {f['penalties_uc'] / 1e6:.4f}.
Every step was a ledger entry judged by the rules; the {f['ledger']['entries']} entries replayed in a shuffled order
derive the same state root ({f['ledger']['state_root'][:16]}…).</p>
{figure}
<h2>Awarded vs delivered, payments per node</h2>
<table><tr><th>node</th><th>ask c/kWh</th><th>awarded Wh</th><th>delivered Wh</th><th>paid Wh</th><th>short Wh</th>
<th>net credits</th></tr>{nodes}</table>
<h2>Feeder load (W, 15-minute means)</h2>
<table><tr><th>time</th><th>without VPP</th><th>with VPP</th><th>limit</th></tr>{rows}</table>
</body></html>"""
    (out_dir / "report.html").write_text(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.vpp", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--homes", type=int, default=VppScenario.homes)
    parser.add_argument("--seed", type=int, default=VppScenario.seed)
    parser.add_argument("--event-day", type=int, default=VppScenario.event_day, help="profile day of the event (0-364)")
    args = parser.parse_args(argv)
    kpis = run_vpp(VppScenario(seed=args.seed, homes=args.homes, event_day=args.event_day), args.out)
    f = kpis["flexibility"]
    print(f"feeder peak {f['peak_without_w']:,} W without, {f['peak_with_w']:,} W with the VPP "
          f"(−{f['peak_reduction_w']:,} W, {f['peak_reduction_share']:.1%}); awarded {f['awarded_wh']:,} Wh, "
          f"delivered {f['delivered_wh']:,} Wh ({f['delivered_over_awarded']} of the award), paid "
          f"{f['paid_wh']:,} Wh; report: {args.out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
