"""What a node running the ``agent`` strategy knows at start in a simulation: its past, and the market.

A real node that has run for a while holds its site's measured load and PV in its telemetry, and
anyone can read the wholesale day-ahead prices as the auction publishes them. A simulated node
starts with neither, so simnet writes both into its data dir:

* ``history.json`` — the site's load (+ EV) and PV of the ``HISTORY_DAYS`` days before the run up to
  the profile's first slot, from the same published profiles as the run itself (``agent.
  history_file``). Only the past: the agent reads no slot that has not ended (``p2pgrid.agent.core``).
* ``reference_prices.json`` — the SMARD day-ahead price per slot from the history's start to a day
  past the run's end (``agent.reference_prices_file``). The file holds the run's future prices, as
  a price feed would once published: the agent reads a slot's price only once the auction has
  published it (noon of the day before, ``p2pgrid.forecast.price.published_reference_slots``).

Stations trade as arbitrageurs (``agent.arbitrage``): they plan at the expected local price and
never bid above it (docs/AGENTS.md).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simnet import profiles
from simnet.scenario import Scenario

HISTORY_DAYS = 7
HISTORY_FILE = "history.json"
REFERENCE_FILE = "reference_prices.json"

SiteSeries = Callable[[Scenario, Any, int, int, random.Random], tuple[list[int], list[int], list[list[int]]]]


def agent_config(p: Any) -> dict[str, object]:
    """The ``[agent]`` keys of a participant beyond its strategy."""
    if p.operator:
        return {}
    return {"history_file": HISTORY_FILE, "reference_prices_file": REFERENCE_FILE, "arbitrage": p.role == "station"}


def history_days(s: Scenario) -> int:
    return min(HISTORY_DAYS, s.start_day)


def write_agent_inputs(s: Scenario, p: Any, data_dir: Path, profile_start_s: int, series: SiteSeries) -> None:
    """Write ``history.json`` and ``reference_prices.json`` for participant ``p`` (not the operator)."""
    days = history_days(s)
    history_start_s = profiles.profile_slot_utc_s(s.year, s.start_day - days, 0, s.slot_s)
    if days:
        slots = (profile_start_s - history_start_s) // s.slot_s
        load, pv, _ = series(s, p, days + 1, s.start_day - days, random.Random(f"prices:{p.seed}"))
        (data_dir / HISTORY_FILE).write_text(json.dumps({"start_s": history_start_s, "slot_s": s.slot_s,
                                                          "load": load[:slots], "pv": pv[:slots]}))
    run_days = math.ceil((s.start_hour * 3600 + s.hours * 3600) / 86400) + 1
    span = min(days + run_days, 365 - (s.start_day - days))
    prices = profiles.day_ahead_prices(s.year, span, s.start_day - days, s.slot_s)
    (data_dir / REFERENCE_FILE).write_text(json.dumps({"start_s": history_start_s, "slot_s": s.slot_s,
                                                        "prices": prices}))
