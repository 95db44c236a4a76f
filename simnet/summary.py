"""The headline of a run in human units, the reconciliation of its per-participant totals, and
what a reader should look at first (pure: kpis dicts in, plain dicts and strings out).

``headline(kpis)`` gives one row per headline KPI: ``label``, ``unit`` (kWh, credits, credits/kWh,
%, s, count), ``value``, ``baseline`` (the same figure without trading, or ``None``),
``difference`` (value − baseline), ``reference`` (the goal or the optimum, or ``None``: the
community optimum of ``simnet.optimum`` where kpis.json has it, with the share of its gain the run
reached in the note; docs/KPIS.md), ``better``
(``"higher"``, ``"lower"`` or ``None``) and ``note``; a KPI that could not be computed has
``value`` ``None`` and its reason as the note. 1 credit = 10⁶ µc; energy in kWh = Wh / 1000;
prices in credits/kWh = µc/kWh / 10⁶.

``reconciliation(kpis)`` checks the per-participant table against the community-wide figures,
which are computed apart (trades, settlement and metering read from the ledger): each row says
what is compared, both sides and whether they agree.

``attention(kpis, checks)`` lists what a reader should know before the tables: failed checks by
name, participants worse off than without trading, KPIs that could not be computed, incomplete
metering.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

UC_PER_CREDIT = 1_000_000
# Null by the scenario's nature, nothing to flag: no public charging; a run without evening slots.
EXPECTED_NULLS = ("charging", "evening_import")


def credits(uc: int | float | None) -> float | None:
    return None if uc is None else round(uc / UC_PER_CREDIT, 6)


def kwh(wh: int | float | None) -> float | None:
    return None if wh is None else round(wh / 1000, 3)


def percent(ratio: float | None) -> float | None:
    return None if ratio is None else round(100 * ratio, 2)


def _row(key: str, label: str, unit: str, value: Any, *, baseline: Any = None, reference: Any = None,
         better: str | None = None, note: str = "") -> dict[str, Any]:
    difference = round(value - baseline, 6) if isinstance(value, (int, float)) and \
        isinstance(baseline, (int, float)) else None
    return {"key": key, "label": label, "unit": unit, "value": value, "baseline": baseline,
            "difference": difference, "reference": reference, "better": better, "note": note}


def _missing(key: str, label: str, unit: str, kpi: dict[str, Any]) -> dict[str, Any]:
    return _row(key, label, unit, None, note=f"not computed: {kpi.get('reason', 'no data')}")


def is_null(kpi: Any) -> bool:
    return isinstance(kpi, dict) and "value" in kpi and kpi["value"] is None and "reason" in kpi


def headline(kpis: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key, label in (("self_sufficiency", "Self-sufficiency (consumption not imported from the grid)"),
                       ("self_consumption", "Self-consumption (PV not exported to the grid)")):
        kpi = kpis.get(key, {})
        if is_null(kpi):
            rows.append(_missing(key, label, "%", kpi))
        elif kpi.get("optimum") is not None:
            rows.append(_row(key, label, "%", percent(kpi["trading"]), baseline=percent(kpi["baseline"]),
                             reference=percent(kpi["optimum"]), better="higher", note=_of_optimum(kpi)))
        else:
            rows.append(_row(key, label, "%", percent(kpi["trading"]), baseline=percent(kpi["baseline"]),
                             reference=100.0, better="higher"))
    series = kpis.get("series_wh") or {}
    best = _optimum_figures(kpis)
    if series:
        rows.append(_row("grid_import", "Community grid import", "kWh", kwh(sum(series["import"])),
                         baseline=kwh(sum(series["import_baseline"])), reference=kwh(best.get("import_wh")),
                         better="lower", note="optimum: the least import any schedule reaches" if best else ""))
        rows.append(_row("grid_export", "Community grid export", "kWh", kwh(sum(series["export"])),
                         baseline=kwh(sum(series["export_baseline"])), better="lower"))
    rows += _compared_rows(kpis)
    people = kpis.get("participants") or []
    if people:
        bill = sum(p["bill_uc"] for p in people)
        base = sum(p["bill_baseline_uc"] for p in people)
        cost = kpis.get("community_cost") or {}
        rows.append(_row("community_bill", "Community energy bill (grid minus feed-in, trades net out)", "credits",
                         credits(bill), baseline=credits(base), reference=credits(cost.get("optimum")),
                         better="lower",
                         note="negative: the community earns more from feed-in than it pays for imports"
                              + (f"; {_of_optimum(cost)}" if cost.get("optimum") is not None else "")))
        losers = [p["name"] for p in people if p["savings_uc"] < 0]
        rows.append(_row("worse_off", "Participants worse off than without trading", "count", len(losers),
                         baseline=0, reference=0, better="lower", note=", ".join(losers)))
    households = kpis.get("savings_per_household", {})
    if households.get("mean") is not None:
        rows.append(_row("savings_per_household", "Mean savings per household", "credits",
                         credits(households["mean"]), baseline=0.0, better="higher",
                         note=f"{len(households['by_node'])} households"))
    share = kpis.get("volume_share", {})
    note = (f"book {percent(share['book'])} %, pools {percent(share['pools'])} %"
            if share.get("book") is not None else share.get("reason", ""))
    rows.append(_row("traded_volume", "Energy traded in the community", "kWh", kwh(kpis.get("traded_volume_wh", 0)),
                     baseline=0.0, better="higher", note=f"{kpis.get('trades', 0)} certified trades; {note}"))
    prices = kpis.get("prices_per_slot", {})
    traded = [r for r in prices.get("slots", []) if r.get("avg") is not None]
    volume = sum(r["volume_wh"] for r in traded)
    if volume:
        avg = sum(r["avg"] * r["volume_wh"] for r in traded) / volume
        rows.append(_row("trade_price", "Average trade price (volume-weighted)", "credits/kWh",
                         round(avg / UC_PER_CREDIT, 4),
                         reference=f"between feed-in {prices['feed_in'] / UC_PER_CREDIT:.3f} and retail "
                                   f"{prices['retail'] / UC_PER_CREDIT:.3f}",
                         note="day-ahead over the run: " + _range(r["day_ahead"] / UC_PER_CREDIT
                                                                  for r in prices["slots"])))
    for kpi_key, key, label, unit, build in SINGLE_KPIS:
        kpi = kpis.get(kpi_key) or {}
        if is_null(kpi):
            rows.append(_missing(key, label, unit, kpi))
        elif kpi:
            rows.append(_row(key, label, unit, **build(kpi)))
    rows += _settlement_rows(kpis)
    return rows


def _of_optimum(kpi: dict[str, Any]) -> str:
    """The note of a KPI compared with the optimum: the share of the optimum's gain the run reached."""
    fraction = kpi.get("fraction_of_optimum_gain")
    if kpi.get("optimum") is None:
        return ""
    if fraction is None:
        return "goal / optimum: the best any schedule reaches (perfect foresight); it gains nothing over no trading"
    return (f"goal / optimum: the best any schedule reaches (perfect foresight); this run reached "
            f"{100 * fraction:.1f} % of its gain over no trading")


def _optimum_figures(kpis: dict[str, Any]) -> dict[str, Any]:
    """The least-import optimum's figures (``community_optimum``), or {} without one."""
    best = kpis.get("community_optimum") or {}
    return {} if is_null(best) else (best.get("objectives") or {}).get("import", {})


def _watts_to_kw(w: float | int | None) -> float | None:
    return None if w is None else round(w / 1000, 3)


# (kpis.json key, headline key, label, unit, scale of the raw figures to the unit)
COMPARED_KPIS: tuple[tuple[str, str, str, str, Callable[[Any], Any]], ...] = (
    ("evening_import", "evening_import", "Evening grid import (slots 17–22 h CET)", "kWh", kwh),
    ("zone_peak_import", "zone_peak_import", "Zone peak grid import (highest slot, mean power)", "kW", _watts_to_kw),
)


def _compared_rows(kpis: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the KPIs compared with no trading and with the optimum (absent in older kpis.json)."""
    rows = []
    for kpi_key, key, label, unit, scale in COMPARED_KPIS:
        kpi = kpis.get(kpi_key)
        if kpi is None:
            continue
        if is_null(kpi):
            rows.append(_missing(key, label, unit, kpi))
        else:
            rows.append(_row(key, label, unit, scale(kpi["trading"]), baseline=scale(kpi["baseline"]),
                             reference=scale(kpi["optimum"]), better="lower", note=_of_optimum(kpi)))
    return rows


# (kpis.json key, headline key, label, unit, the row's value and notes from the KPI)
SINGLE_KPIS: tuple[tuple[str, str, str, str, Callable[[dict[str, Any]], dict[str, Any]]], ...] = (
    ("welfare_with_pools", "welfare_with_pools", "Welfare (book and pool trades) vs a central pay-as-clear auction",
     "%", lambda k: {"value": percent(k["value"]), "reference": 100.0, "better": "higher",
                     "note": f"pools enter the auction as offers at their opening ask; book {credits(k['book_nc'] / 1000)}"
                             f" credits, pools {credits(k['pool_nc'] / 1000)} credits of gains from trade"}),
    ("welfare_vs_central_auction", "welfare", "Welfare of book trades vs a central pay-as-clear auction", "%",
     lambda k: {"value": percent(k["value"]), "reference": 100.0, "better": "higher",
                "note": "book trades only; 100 % is the optimum"}),
    ("certification_latency_s", "latency", "Certification latency, median", "s",
     lambda k: {"value": k["p50"], "better": "lower",
                "note": f"p90 {k['p90']} s, max {k['max']} s over {k['n']} trades (real seconds)"}),
    ("gossip_delivery_ratio", "gossip", "Orders delivered by gossip", "%",
     lambda k: {"value": percent(k["value"]), "reference": 100.0, "better": "higher",
                "note": f"{k['published']} orders published"}),
    ("metering", "metering", "Metering completeness", "%",
     lambda k: {"value": percent(k["completeness"]), "reference": 100.0, "better": "higher",
                "note": f"{k['meter_entries']} of {k['expected']} readings due; an unmetered slot settles as zero "
                        "delivery" if k["expected"] else "not computed: no reading was due before the settlement "
                                                         "cutoff (the run is shorter than the metering grace)"}),
)


def _range(values: Any) -> str:
    values = list(values)
    return f"{min(values):.3f}–{max(values):.3f} credits/kWh" if values else "none"


def _settlement_rows(kpis: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    settled = kpis.get("settlement", {})
    if is_null(settled):
        rows.append(_missing("slots_settled", "Slots settled", "count", settled))
    elif settled:
        rows.append(_row("slots_settled", "Slots settled", "count", settled["slots_settled"],
                         note=f"{settled['meter_entries']} meter entries settled"))
        rows.append(_row("certificates", "Green certificates issued", "kWh", kwh(settled["certificates_issued_wh"]),
                         reference=kwh(settled["green_metered_wh"]),
                         note=f"must equal the green energy metered; {kwh(settled['certificates_retired_wh'])} kWh "
                              "retired against imports"))
        rows.append(_row("imbalance", "Imbalance paid to participants by the grid, net", "credits",
                         credits(settled["imbalance_paid_by_gateway_uc"] - settled["imbalance_paid_to_gateway_uc"]),
                         note="feed-in for surplus exports minus shortfall and extra imports, settled slots"))
    charging = kpis.get("charging", {})
    if charging and not is_null(charging):
        rows.append(_row("charging", "Public EV charging billed", "kWh", kwh(charging["energy_wh"]),
                         note=f"{charging['billed']} of {charging['sessions']} sessions, "
                              f"{credits(charging['revenue_uc']):.2f} credits"))
    return rows


def reconciliation(kpis: dict[str, Any]) -> list[dict[str, Any]]:
    """Totals of the participants' table against the figures computed apart (raw units)."""
    people = kpis.get("participants") or []
    settled = kpis.get("settlement", {})
    metering = kpis.get("metering", {})
    total = {key: sum(p[key] for p in people) for key in people[0] if isinstance(people[0][key], int)
             and not isinstance(people[0][key], bool)} if people else {}
    rows = []

    def add(what: str, unit: str, table: int, figure: int | None, source: str) -> None:
        rows.append({"what": what, "unit": unit, "table": table, "figure": figure, "source": source,
                     "ok": figure is not None and table == figure})

    if not people:
        return rows
    traded = kpis.get("traded_volume_wh", 0)
    add("energy bought (book + pools)", "Wh", total["bought_book_wh"] + total["bought_pool_wh"], traded,
        "certified trades in the ledger")
    add("energy sold (book + pools)", "Wh", total["sold_book_wh"] + total["sold_pool_wh"], traded,
        "certified trades in the ledger")
    add("credits paid for energy = credits received", "µc", total["paid_uc"], total["received_uc"],
        "sellers' side of the same trades")
    add("savings", "µc", total["savings_uc"], kpis.get("savings_per_participant", {}).get("total"),
        "savings per participant KPI")
    if not is_null(settled) and settled:
        add("metered grid import", "Wh", total["metered_import_wh"], settled["metered_import_wh"],
            "meter entries of settled slots")
        add("metered grid export", "Wh", total["metered_export_wh"], settled["metered_export_wh"],
            "meter entries of settled slots")
        add("certificates retired", "Wh", total["certificates_retired_wh"], settled["certificates_retired_wh"],
            "settled slots' certificates")
        add("imbalance money to participants, net", "µc", total["imbalance_net_uc"],
            settled["imbalance_paid_by_gateway_uc"] - settled["imbalance_paid_to_gateway_uc"],
            "the gateway's side of the settlements")
    if not is_null(metering) and metering:
        add("meter entries of due slots", "count", total["meter_entries"], metering["meter_entries"],
            "metering completeness KPI")
    return rows


def attention(kpis: dict[str, Any], checks: list[dict[str, Any]]) -> list[str]:
    """Plain sentences, most serious first."""
    notes = []
    failed = [c["name"] for c in checks if not c["passed"]]
    if failed:
        notes.append(f"{len(failed)} end check(s) failed: {', '.join(failed)}.")
    run = kpis.get("run", {})
    if run.get("interrupted"):
        notes.append("The run was interrupted: the figures cover only what happened before.")
    for error in run.get("errors", [])[:3]:
        notes.append(f"Run error: {error}")
    losers = [p for p in kpis.get("participants") or [] if p["savings_uc"] < 0]
    for p in sorted(losers, key=lambda p: p["savings_uc"]):
        notes.append(f"{p['name']} ({p['role']}) is worse off with trading than without: "
                     f"{credits(p['savings_uc']):+.2f} credits.")
    for key, kpi in kpis.items():
        if is_null(kpi) and key not in EXPECTED_NULLS:
            notes.append(f"{key.replace('_', ' ')} not computed: {kpi['reason']}.")
    metering = kpis.get("metering", {})
    if metering.get("completeness") is not None and metering["completeness"] < 1:
        notes.append(f"Metering incomplete: {percent(metering['completeness'])} % of the readings due were "
                     "certified; unmetered slots settle as zero delivery.")
    return notes
