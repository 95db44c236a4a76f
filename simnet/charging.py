"""Public charging at a station, as simnet simulates it: who charges when, and how much.

A station's EV load is ``station.evs`` synPRO e-mobility profiles (``simnet.community``), one per
connector. Each run of consecutive slots with energy in a connector's profile is one **charge**:
from the start of its first slot to the end of its last, with the profile's energy. Each charge is
given to a **driver**, a household or consumer of the community drawn with a seeded generator
(public charging by people without a charger of their own is the use case; the draw does not
look at who has one).

What the nodes get (``[charging] sessions_file``, read by ``p2pgrid.charging.service``):

* the station: its connectors' session **log** (connector, driver, start, end, energy Wh) — what
  a real charge controller would report;
* each driver: its **plans** (station, start, end, most energy: the charge's energy plus 25 %,
  rounded up to whole kWh and at most the tariff's session limit), so it escrows enough.

Only charges that end before metering stops (``community.quiet_from_s``, a few real seconds
before the run ends) are given out, so every session is billed before the run is compared; the
energy of the others is still the station's load, just not sold.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Charge", "SESSIONS_FILE", "charges_of", "community_sessions"]

SESSIONS_FILE = "charging.json"
ESCROW_HEADROOM = 1.25


@dataclass(frozen=True)
class Charge:
    connector: int
    start_s: int
    end_s: int
    energy_wh: int


def charges_of(connector: int, energy_wh: list[int], start_s: int, slot_s: int) -> list[Charge]:
    """The charges in one connector's energy series (Wh per slot from ``start_s``)."""
    charges, run_start = [], None
    for i, wh in enumerate([*energy_wh, 0]):
        if wh > 0 and run_start is None:
            run_start = i
        elif wh <= 0 and run_start is not None:
            charges.append(Charge(connector, start_s + run_start * slot_s, start_s + i * slot_s,
                                  sum(energy_wh[run_start:i])))
            run_start = None
    return charges


def community_sessions(station: str, connectors: list[list[int]], drivers: list[str], start_s: int, slot_s: int,
                       until_s: int, max_session_wh: int, seed: int) -> dict[str, dict[str, list[dict]]]:
    """``{node name: sessions file content}`` for the station (``log``) and its drivers (``plans``).
    ``station`` and ``drivers`` are (name, account hex) joined as ``name/account``."""
    rng = random.Random(f"charging:{seed}")
    station_name, station_account = station.split("/")
    files: dict[str, dict[str, list[dict]]] = {station_name: {"log": []}}
    busy: dict[str, list[Charge]] = {d: [] for d in drivers}     # a driver has one car: no overlapping charges
    charges = [c for i, series in enumerate(connectors) for c in charges_of(i, series, start_s, slot_s)]
    for charge in sorted(charges, key=lambda c: (c.start_s, c.connector)):
        if charge.end_s > until_s:
            continue
        free = [d for d in drivers if not any(c.start_s < charge.end_s and charge.start_s < c.end_s for c in busy[d])]
        if free:
            driver = rng.choice(free)
            busy[driver].append(charge)
            name, account = driver.split("/")
            connector = charge.connector
            files[station_name]["log"].append({"connector": connector, "driver": account, "start_s": charge.start_s,
                                               "end_s": charge.end_s, "energy_wh": charge.energy_wh})
            max_wh = min(max_session_wh, math.ceil(charge.energy_wh * ESCROW_HEADROOM / 1000) * 1000)
            files.setdefault(name, {"plans": []})["plans"].append(
                {"station": station_account, "start_s": charge.start_s, "end_s": charge.end_s, "max_wh": max_wh})
    return files
