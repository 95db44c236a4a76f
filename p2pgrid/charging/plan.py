"""What a station and a driver write next about charging, given the certified state and now (pure).

``p2pgrid.charging.service`` runs these on a node and only signs and submits what they return; the
entry kinds and their rules are in ``p2pgrid.charging.rules``.

A **station** (``station_actions``) keeps one tariff open with its configured terms
(``StationTerms``), opening the next one a day before the current one closes, and bills every
certified session of its tariffs once the car has gone: the energy comes from the connector's
session log (``ConnectorSession``: which connector, which driver, when, how much — in a real
station the charge controller's log; in simnet the station's simulated public charging), matched
to the driver's ``charge_start`` by driver and plug-in time. A session without a matching log entry
(a driver who started where no car of theirs is plugged in) is billed at zero once
``StationTerms.no_car_grace_ms`` has passed since the plug-in (a controller may report a car a
little late): its escrow goes back. Each bill needs the connector's signature, so the station returns a
``ReadingToSign`` and signs it with the connector's key.

A session the station left unbilled until its escrow's deadline (it can no longer bill it: a bill
must be dated before the deadline) is handed back with the chain's ``decline``, so the driver's
credits come back at once and the station's chain is dated past the deadline.

A **driver** (``driver_actions``) starts a session when one of its planned charges begins
(``PlannedCharge``: station, time window, most energy), under the station's open tariff, with an
escrow deadline ``BILL_MARGIN_MS`` after the planned end, and takes back the escrow of a session
the station did not bill (``release``) once the station's certified chain is dated at or past the
deadline (``chain.seller_passed_deadline``: only then can validators accept a release, since the
station may bill until then).

Times: ``now_ms`` is the node's market time; the entries these actions become are dated by the
ledger when built (``LedgerService.next_entry``), and the rules judge them on that date.

Matching is deterministic (sessions by plug-in time, each log entry used once), so a station that
restarts bills the same sessions the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from p2pgrid.charging.rules import (
    CHARGE_START_KIND, CHARGE_TARIFF_KIND, MAX_SESSION_MS, ChargeTariff, SessionRecord, TariffRecord, charger_counter,
    next_tariff_id, open_tariffs, plan_charge_start, sessions,
)
from p2pgrid.ledger.chain import LedgerState, LockStatus, seller_passed_deadline
from p2pgrid.ledger.messages import Decline, Release

__all__ = ["BILL_MARGIN_MS", "Action", "ConnectorSession", "PlannedCharge", "ReadingToSign", "StationTerms",
           "billable_wh", "driver_actions", "match_sessions", "station_actions"]

BILL_MARGIN_MS = 2 * 3600 * 1000     # the escrow's deadline after the planned end: time to bill
RENEW_BEFORE_MS = 24 * 3600 * 1000   # open the next tariff this long before the current one closes
DAY_MS = 24 * 3600 * 1000
MS_PER_HOUR = 3_600_000


@dataclass(frozen=True)
class StationTerms:
    zone: str
    price_uc_per_kwh: int
    connector_keys: tuple[bytes, ...]
    max_power_w: int
    max_session_wh: int
    tariff_days: int
    no_car_grace_ms: int = 15 * 60 * 1000   # a session with no car in the log is billed zero after this


@dataclass(frozen=True)
class ConnectorSession:
    """One charge a connector delivered (the station's log): ``energy_wh`` from ``start_ms`` to ``end_ms``."""

    connector: int
    driver: bytes
    start_ms: int
    end_ms: int
    energy_wh: int


@dataclass(frozen=True)
class PlannedCharge:
    """A charge the driver means to take: at ``station`` from ``start_ms`` to ``end_ms``, at most ``max_wh``."""

    station: bytes
    start_ms: int
    end_ms: int
    max_wh: int


@dataclass(frozen=True)
class ReadingToSign:
    """The meter values one connector must sign for a session (``ChargeReading`` without the key)."""

    connector: int
    session_id: bytes
    meter_start_wh: int
    meter_stop_wh: int
    started_ms: int
    ended_ms: int


@dataclass(frozen=True)
class Action:
    """One entry to write: ``kind`` with ``body``, or for a bill the reading to sign first."""

    kind: str
    body: object


# --- the station ---------------------------------------------------------------------------------

def _wanted_tariff(state: LedgerState, station: bytes, terms: StationTerms, now_ms: int) -> ChargeTariff | None:
    current = [t for t in open_tariffs(state, now_ms, station) if _same_terms(t, terms)]
    if any(t.terms.until_ms - now_ms > RENEW_BEFORE_MS for t in current):
        return None
    return ChargeTariff(tariff_id=next_tariff_id(state, station, terms.zone), zone=terms.zone,
                        price_uc_per_kwh=terms.price_uc_per_kwh, charger_keys=terms.connector_keys,
                        max_power_w=terms.max_power_w, max_session_wh=terms.max_session_wh,
                        until_ms=now_ms + terms.tariff_days * DAY_MS)


def _same_terms(tariff: TariffRecord, terms: StationTerms) -> bool:
    t = tariff.terms
    return (t.zone, t.price_uc_per_kwh, t.charger_keys, t.max_power_w, t.max_session_wh) == (
        terms.zone, terms.price_uc_per_kwh, terms.connector_keys, terms.max_power_w, terms.max_session_wh)


def match_sessions(certified: Sequence[SessionRecord], log: Sequence[ConnectorSession]
                   ) -> dict[bytes, ConnectorSession | None]:
    """Each certified session's log entry: the first unused one of the same driver whose time window
    holds the plug-in time (sessions in plug-in order); None when there is none."""
    used: set[int] = set()
    matched: dict[bytes, ConnectorSession | None] = {}
    for session in sorted(certified, key=lambda s: (s.plugged_in_ms, s.session_id)):
        found = None
        for index, charge in enumerate(log):
            if (index not in used and charge.driver == session.driver
                    and charge.start_ms <= session.plugged_in_ms < charge.end_ms):
                used.add(index)
                found = charge
                break
        matched[session.session_id] = found
    return matched


def billable_wh(charge: ConnectorSession, session: SessionRecord, max_power_w: int) -> int:
    """The energy of a logged charge the session pays for: the part after the driver plugged in
    (the log's energy spread evenly over its window), within the escrow and the connector's power."""
    started = max(session.plugged_in_ms, charge.start_ms)
    if started >= charge.end_ms:
        return 0
    window = charge.end_ms - charge.start_ms
    after_plug_in = charge.energy_wh * (charge.end_ms - started) // window
    return min(after_plug_in, session.max_wh, max_power_w * (charge.end_ms - started) // MS_PER_HOUR)


def station_actions(state: LedgerState, station: bytes, terms: StationTerms, log: Sequence[ConnectorSession],
                    now_ms: int) -> list[Action]:
    """What the station writes next, in order (module docstring). Bills of one connector come in
    counter order; the caller writes one action at a time and asks again once it is certified."""
    actions: list[Action] = []
    tariff = _wanted_tariff(state, station, terms, now_ms)
    if tariff is not None:
        actions.append(Action(CHARGE_TARIFF_KIND, tariff))
    mine = sessions(state, station=station)
    matched = match_sessions(mine, log)
    counters = {i: charger_counter(state, key, station) for i, key in enumerate(terms.connector_keys)}
    for session in mine:
        lock = state.locks.get(session.session_id)
        if session.billed or lock is None or lock.status is not LockStatus.OPEN:
            continue
        if now_ms >= session.deadline_ms:
            # Too late to bill (validators judge the bill on its own date): hand the escrow back.
            actions.append(Action("decline", Decline(take_id=session.session_id)))
            continue
        charge = matched[session.session_id]
        if charge is None or charge.connector not in counters:
            if now_ms < session.plugged_in_ms + terms.no_car_grace_ms:
                continue                                 # the controller may not have logged the car yet
            reading = ReadingToSign(0, session.session_id, counters.get(0, 0), counters.get(0, 0),
                                    session.plugged_in_ms, session.plugged_in_ms)
        elif now_ms >= charge.end_ms:
            start = counters[charge.connector]
            delivered = billable_wh(charge, session, terms.max_power_w)
            counters[charge.connector] = start + delivered
            reading = ReadingToSign(charge.connector, session.session_id, start, start + delivered,
                                    max(session.plugged_in_ms, charge.start_ms), charge.end_ms)
        else:
            continue                                     # still charging
        actions.append(Action("charge_bill", reading))
    return actions


# --- the driver ----------------------------------------------------------------------------------

def driver_actions(state: LedgerState, driver: bytes, plans: Sequence[PlannedCharge], now_ms: int) -> list[Action]:
    """What the driver writes next: a ``charge_start`` for each planned charge under way that has no
    session yet, and a ``release`` for each unbilled escrow once the station's certified chain has
    passed its deadline (before that validators would not accept it). A session's id comes from
    the plan's start (its nonce), so a plan never gets two sessions, even across restarts."""
    actions: list[Action] = []
    mine = sessions(state, driver=driver)
    starting: set[bytes] = set()          # stations this call starts a session at (one per plug-in)
    for plan in plans:
        if not plan.start_ms <= now_ms < plan.end_ms or plan.station in starting:
            continue
        if any(s.station == plan.station and plan.start_ms <= s.plugged_in_ms < plan.end_ms for s in mine):
            continue
        tariffs = open_tariffs(state, now_ms, plan.station)
        if not tariffs:
            continue                                     # the station sells no charging (yet)
        tariff = min(tariffs, key=lambda t: (t.terms.price_uc_per_kwh, t.tariff_id))
        deadline = min(plan.end_ms + BILL_MARGIN_MS, now_ms + MAX_SESSION_MS)
        max_wh = min(plan.max_wh, tariff.terms.max_session_wh)
        body = plan_charge_start(tariff, driver, max_wh, plan.start_ms, now_ms, deadline)
        actions.append(Action(CHARGE_START_KIND, body))
        starting.add(plan.station)
    for session in mine:
        lock = state.locks.get(session.session_id)
        if lock is not None and lock.status is LockStatus.OPEN and seller_passed_deadline(state, lock):
            actions.append(Action("release", Release(take_id=session.session_id)))
    return actions

