"""The station study's PPA case: NPV and IRR with and without selling a share of its output on a
long-term PPA to the community's consumers (pure).

The study's runs are simulated without an agreement; this case values one on the same certified
ledger, by **revenue substitution**: for the agreement's years, a share ``share_ppm`` of every kWh
the station's own certified meter entries show it exported is sold at the PPA price instead of at
what the station realised for its exported energy in those runs (its ``energy_sold_book``,
``energy_sold_pool`` and ``feed_in`` streams over its metered export). That is what a
pay-as-produced agreement with priority over spot does to a station that sells the rest of its
output as before; it does not re-simulate how the agents would have traded around it.

    annual delta = share × annual export × (PPA price − realised price per kWh)

is added, degraded like the operating net, to years 1 … ``years`` of the station's project cash
flows (``invest.statement.project_cashflows``); NPV and IRR are computed on both series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pgrid.errors import WireError
from p2pgrid.invest.statement import Figures, InvestTerms, figures
from p2pgrid.ledger.chain import decode_body
from p2pgrid.ledger.messages import Entry
from p2pgrid.ppa.terms import PPM
from p2pgrid.settlement.metering import decode_meter_reading
from p2pgrid.units import WH_PER_KWH
from p2pgrid.wire import Signed

__all__ = ["ENERGY_SALE_STREAMS", "PpaCase", "PpaComparison", "compare_ppa", "metered_export_wh"]

ENERGY_SALE_STREAMS = ("energy_sold_book", "energy_sold_pool", "feed_in")


@dataclass(frozen=True)
class PpaCase:
    share_ppm: int = 300_000                # 30 % of the station's metered export
    price_uc_per_kwh: int = 120_000         # 0.12 credits/kWh, fixed
    years: int = 10


@dataclass(frozen=True)
class PpaComparison:
    case: PpaCase
    annual_export_wh: float
    annual_energy_revenue_uc: float
    realised_uc_per_kwh: float | None       # what the station got per exported kWh without the PPA
    annual_delta_uc: float                  # the PPA's annual effect on the operating net (year 1)
    without: Figures
    with_ppa: Figures


def metered_export_wh(entries: Iterable[Signed[Entry]], account: bytes) -> int:
    """Wh the account's own certified ``meter`` entries show it exported."""
    total = 0
    for signed in entries:
        entry = signed.body
        if entry.kind != "meter" or entry.account != account:
            continue
        try:
            total += decode_meter_reading(decode_body(entry).reading).body.export_wh
        except WireError:
            continue
    return total


def compare_ppa(terms: InvestTerms, base_cashflows: Sequence[float], annual_export_wh: float,
                annual_streams: Mapping[str, float], case: PpaCase) -> PpaComparison:
    """NPV / IRR without and with the agreement (module docstring)."""
    revenue = sum(annual_streams.get(key, 0.0) for key in ENERGY_SALE_STREAMS)
    share = case.share_ppm / PPM
    realised = revenue * WH_PER_KWH / annual_export_wh if annual_export_wh > 0 else None
    # Without metered export there is nothing to sell on a pay-as-produced agreement, and no
    # realised price to substitute: the case is then the same as without.
    delta = share * (annual_export_wh * case.price_uc_per_kwh / WH_PER_KWH - revenue) if annual_export_wh > 0 else 0.0
    decay = 1.0 - terms.degradation_per_year
    with_ppa = list(base_cashflows)
    for year in range(1, min(case.years, len(with_ppa) - 1) + 1):
        with_ppa[year] += delta * decay ** (year - 1)
    return PpaComparison(case, annual_export_wh, revenue, realised, delta, figures(terms, base_cashflows),
                         figures(terms, with_ppa))
