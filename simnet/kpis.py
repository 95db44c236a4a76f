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
  same offers and buy requests, slot by slot.
* certification latency: real seconds from a buy's start to its certified trades.
* gossip delivery ratio: orders seen per node / orders published, over the nodes that ran to the end.
* settlement (from the certified ledger): slots settled, meter entries settled, imbalance µc
  paid to and by the gateway, metered grid import/export, green Wh metered vs certificate units
  issued (equal by rule) and retired.

Trades are the buyers' logged executions that the reference ledger holds as filled locks.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pgrid.certificates import total_wh
from p2pgrid.charging import sessions, tariffs
from p2pgrid.errors import WireError
from p2pgrid.ledger.chain import LedgerState, LockStatus
from p2pgrid.market.auction import clear
from p2pgrid.market.orders import BookOrder
from p2pgrid.node import read_status
from p2pgrid.node_agent import ORDERS_LOG, TRADES_LOG, read_jsonl
from p2pgrid.settlement_entries import certificates_of, meter_entries_for_slot, settled_slots, settlement_of
from p2pgrid.trading.pool_entries import PoolRecord
from p2pgrid.wire import Order, decode_signed
from simnet.community import ENERGY_FILE, Energy

KPI_KEYS = ("self_sufficiency", "self_consumption", "savings_per_household", "savings_per_participant",
            "traded_volume_wh", "prices_per_slot", "volume_share", "welfare_vs_central_auction",
            "certification_latency_s", "gossip_delivery_ratio", "settlement", "trades", "run")


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
                                t.get("request_id", ""), t["order_id"]))
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

    bought: dict[tuple[str, int], int] = defaultdict(int)
    sold: dict[tuple[str, int], int] = defaultdict(int)
    money: dict[str, int] = defaultdict(int)
    for t in trades:
        i = (t.slot - start_s) // slot_s
        bought[(t.buyer, i)] += t.qty_wh
        sold[(t.seller, i)] += t.qty_wh
        money[t.buyer] -= t.value_uc
        money[t.seller] += t.value_uc

    totals: defaultdict[str, float] = defaultdict(float)
    savings: dict[str, int] = {}
    n_slots = len(community["day_ahead"])
    series = {k: [0] * n_slots for k in ("load", "pv", "import", "import_baseline", "export", "export_baseline",
                                         "traded")}
    for p in people:
        energy = Energy.from_json((nodes_dir / p["name"] / ENERGY_FILE).read_text())
        cost = base = 0.0
        for i, net in enumerate(energy.net):
            r = net - bought[(p["account"], i)] + sold[(p["account"], i)]
            imp, exp = max(0, r), max(0, -r)
            imp0, exp0 = max(0, net), max(0, -net)
            for key, value in (("load", energy.load[i]), ("pv", energy.pv[i]), ("import", imp),
                               ("import_baseline", imp0), ("export", exp), ("export_baseline", exp0),
                               ("traded", bought[(p["account"], i)])):
                series[key][i] += value
            totals["import"] += imp
            totals["export"] += exp
            totals["import0"] += imp0
            totals["export0"] += exp0
            cost += (imp * retail - exp * feed_in) / 1000
            base += (imp0 * retail - exp0 * feed_in) / 1000
        totals["consumption"] += sum(energy.load)
        totals["pv"] += sum(energy.pv)
        savings[p["name"]] = round(base - (cost - money[p["account"]]))

    def share(one_minus: float, of: float) -> float | None:
        return round(1 - one_minus / of, 4) if of else None

    households = {n: v for n, v in savings.items() if n.startswith("household")}
    kpis: dict[str, Any] = {
        "self_sufficiency": {"trading": share(totals["import"], totals["consumption"]),
                             "baseline": share(totals["import0"], totals["consumption"])},
        "self_consumption": ({"trading": share(totals["export"], totals["pv"]),
                              "baseline": share(totals["export0"], totals["pv"])} if totals["pv"]
                             else null("no PV in the community")),
        "savings_per_household": {"unit": "µc", "by_node": households,
                                  "mean": round(statistics.mean(households.values())) if households else None},
        "savings_per_participant": {"unit": "µc", "by_node": savings, "total": sum(savings.values())},
        "traded_volume_wh": sum(t.qty_wh for t in trades),
        "prices_per_slot": prices_per_slot(trades, community, start_s, slot_s),
        "volume_share": volume_share(trades, state),
        "welfare_vs_central_auction": welfare(trades, orders, _pool_ids(state)),
        "certification_latency_s": latency(trades),
        "gossip_delivery_ratio": delivery(nodes_dir, names, run),
        "settlement": settlement(state, bytes.fromhex(community["gateway"])),
        "metering": metering(state, community),
        "charging": charging(state),
        "trades": len(trades),
        "run": run,
        "series_wh": series,
    }
    return kpis


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
    start_s, slot_s, grace_s = community["profile_start_ms"] // 1000, community["slot_s"], community["grace_s"]
    cutoff_s = community.get("settle_until_ms", community["end_ms"]) // 1000
    due = [start_s + i * slot_s for i in range(len(community["day_ahead"]))
           if start_s + (i + 1) * slot_s + grace_s <= cutoff_s]
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


def prices_per_slot(trades: list[Trade], community: dict[str, Any], start_s: int, slot_s: int) -> dict[str, Any]:
    by_slot: dict[int, list[Trade]] = defaultdict(list)
    for t in trades:
        by_slot[(t.slot - start_s) // slot_s].append(t)
    rows = []
    for i, da in enumerate(community["day_ahead"]):
        ts = by_slot.get(i, [])
        volume = sum(t.qty_wh for t in ts)
        rows.append({"slot": i, "start_s": start_s + i * slot_s, "volume_wh": volume,
                     "min": min((t.price for t in ts), default=None), "max": max((t.price for t in ts), default=None),
                     "avg": round(sum(t.price * t.qty_wh for t in ts) / volume) if volume else None,
                     "day_ahead": da})
    return {"unit": "µc/kWh", "retail": community["retail_price"], "feed_in": community["feed_in_price"],
            "slots": rows}


def welfare(trades: list[Trade], orders: dict[str, tuple[str, Order]],
            pool_ids: set[str] | None = None) -> dict[str, Any]:
    """Gains from trade of the certified book trades / those of a central pay-as-clear auction over
    the same logged orders. Trades with a pool are left out of both sides (the auction has no
    pools); the buyers' surplus on them (Wh × (bid limit − average price)) is reported next to it."""
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
    by_slot: dict[int, list[BookOrder]] = defaultdict(list)
    for kind, order in orders.values():
        if kind in ("offer", "buy_request"):
            by_slot[order.slot].append(BookOrder(order.order_id, order.owner, order.side, order.qty_wh,
                                                 order.limit_price, order.created_ms, order.expiry_ms))
    central = 0
    for book in by_slot.values():
        result = clear(book)
        prices = {o.order_id: o.price for o in book}
        central += sum(f.qty_wh * (prices[f.buy_order_id] - prices[f.sell_order_id]) for f in result.fills)
    if central <= 0:
        return {**null("the central auction finds no gains from trade over these orders"),
                "decentralised_nc": decentral, "central_nc": central, "pool_buyers_surplus_nc": pool_surplus}
    return {"value": round(decentral / central, 4), "decentralised_nc": decentral, "central_nc": central,
            "pool_buyers_surplus_nc": pool_surplus,
            "unit": "fraction of the central pay-as-clear welfare (nanocredits = Wh × µc/kWh); "
                    "book trades only, pool trades' buyer surplus reported apart"}


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
