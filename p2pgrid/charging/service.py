"""The node sells or buys public EV charging: ``ChargingService`` (name ``charging``).

A thin shell around ``p2pgrid.charging.plan``: every ``POLL_S`` real seconds it asks the pure
planners what to write next, given the node's certified ledger state and market time, signs it and
submits it — one entry at a time, so bills of one connector go in counter order. It runs on a node
with a ledger when

* ``[charging] enabled`` (a **station**): it keeps a tariff open (``price_uc_per_kwh``,
  ``connectors``, ``max_power_w``, ``max_session_wh``, ``tariff_days``) and bills every session of
  its tariffs from the connectors' session log, each reading signed by its connector's own key
  (``<data_dir>/chargers/<n>.key``, made 0600 on first start); or
* the node has planned charges (a **driver**): it starts a session when a charge begins and
  takes back an escrow the station did not bill once the station's certified chain has passed its
  deadline (a station declines the sessions it left unbilled at their deadline, which usually
  returns the escrow first).

Where sessions come from. A station's session log and a driver's planned charges are read from
``[charging] sessions_file`` (JSON, written by simnet from the community's EV profiles; times are
Unix seconds)::

    {"log":   [{"connector": 0, "driver": "<hex>", "start_s": …, "end_s": …, "energy_wh": …}, …],
     "plans": [{"station": "<hex>", "start_s": …, "end_s": …, "max_wh": …}, …]}

A driver also starts sessions through the local RPC (``charging_start``, ``p2pgrid charge start``).
A real station would feed the log from its charge controller (OCPP ``StopTransaction`` with the
connector's signed meter values); that feed is not written yet, so a station without a sessions
file bills every session at zero (the driver's escrow goes back after ``no_car_grace_s``).

**Retries.** A refused entry is planned afresh next round; an entry some validator may have voted
for (``LedgerService.is_in_doubt``) is offered again as it is, never replaced, so a session is
never started or billed twice.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.charging.rules import CHARGE_BILL_KIND, ChargeReading, plan_charge_bill
from p2pgrid.charging.plan import (
    Action, ConnectorSession, PlannedCharge, ReadingToSign, StationTerms, driver_actions, station_actions,
)
from p2pgrid.errors import ConfigError, LedgerError, NetError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.service import WithLedger
from p2pgrid.settlement.service import load_or_create_meter_key
from p2pgrid.wire import sign

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig
    from p2pgrid.ledger.service import LedgerService

__all__ = ["ChargingService", "ChargingStats", "charging_services", "connector_keys", "read_sessions_file"]

log = logging.getLogger(__name__)

POLL_S = 0.2
IDLE_REPLAN_S = 2.0     # nothing certified since a round with nothing to do: wait this long (real s)
CHARGERS_DIR = "chargers"


def connector_keys(data_dir: Path, count: int) -> list[NodeKey]:
    """The connectors' metering keys, ``<data_dir>/chargers/<n>.key`` (made 0600 if missing)."""
    (Path(data_dir) / CHARGERS_DIR).mkdir(parents=True, exist_ok=True)
    return [load_or_create_meter_key(data_dir, f"{CHARGERS_DIR}/{n}.key") for n in range(count)]


def read_sessions_file(path: Path) -> tuple[list[ConnectorSession], list[PlannedCharge]]:
    """The session log and the planned charges in ``path`` (module docstring); ``ConfigError`` if bad."""
    try:
        raw = json.loads(Path(path).read_text())
        log_entries = [ConnectorSession(int(e["connector"]), bytes.fromhex(e["driver"]), int(e["start_s"]) * 1000,
                                        int(e["end_s"]) * 1000, int(e["energy_wh"])) for e in raw.get("log", [])]
        plans = [PlannedCharge(bytes.fromhex(p["station"]), int(p["start_s"]) * 1000, int(p["end_s"]) * 1000,
                               int(p["max_wh"])) for p in raw.get("plans", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"charging.sessions_file {path}: {exc}") from None
    return log_entries, plans


@dataclass
class ChargingStats:
    written: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    last_error: str = ""


class ChargingService:
    """See the module docstring."""

    name = "charging"

    def __init__(self, *, poll_s: float = POLL_S, idle_replan_s: float = IDLE_REPLAN_S) -> None:
        self.poll_s = poll_s
        self.idle_replan_s = idle_replan_s
        self._idle: tuple[int, float] | None = None   # (ledger height, trio time) of a round with nothing to do
        self.stats = ChargingStats()
        self._held: Any = None       # an entry in doubt, offered again before anything new

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ledger = node.ledger
        if ledger is None:
            raise RuntimeError("charging starts after the ledger service")
        config = node.config.charging
        data_dir = node.config.node.data_dir
        keys = connector_keys(data_dir, config.connectors) if config.enabled else []
        session_log: list[ConnectorSession] = []
        plans: list[PlannedCharge] = []
        if config.sessions_file:
            session_log, plans = read_sessions_file(data_dir / config.sessions_file)
        terms = StationTerms(node.config.zone.id, config.price_uc_per_kwh, tuple(k.public_key for k in keys),
                             config.max_power_w, config.max_session_wh, config.tariff_days,
                             config.no_car_grace_s * 1000)
        task_status.started()
        while True:
            await self._round(node, ledger, keys, terms, session_log, plans)
            await trio.sleep(self.poll_s)

    async def _round(self, node: WithLedger, ledger: LedgerService, keys: list[NodeKey], terms: StationTerms,
                     session_log: list[ConnectorSession], plans: list[PlannedCharge]) -> None:
        if self._held is not None:
            if not await self._retry_held(ledger):
                return
        height, real_now = ledger.state.height, trio.current_time()
        if self._idle is not None and self._idle[0] == height and real_now - self._idle[1] < self.idle_replan_s:
            return                               # nothing certified since a round with nothing to do
        now = node.clock.now_ms()
        actions: list[Action] = []
        if keys:
            actions += station_actions(ledger.state, ledger.me, terms, session_log, now)
        if plans:
            actions += driver_actions(ledger.state, ledger.me, plans, now)
        self._idle = None if actions else (height, real_now)
        for action in actions:
            body = action.body
            if isinstance(body, ReadingToSign):
                body = plan_charge_bill(ledger.state, sign_reading(keys[body.connector], ledger.me, body))
            if not await self._submit(ledger, ledger.next_entry(action.kind, body)):
                return                               # plan again from the new state next round

    async def _submit(self, ledger: LedgerService, entry: Any) -> bool:
        try:
            await ledger.submit(entry)
        except (LedgerError, NetError) as exc:
            self.stats.refused += 1
            self.stats.last_error = str(exc)
            if ledger.is_in_doubt(entry):
                self._held = entry
            log.info("charging %s not certified (%s)", entry.body.kind, exc)
            return False
        self.stats.written[entry.body.kind] += 1
        if entry.body.kind == CHARGE_BILL_KIND:
            log.debug("charging session billed")
        return True

    async def _retry_held(self, ledger: LedgerService) -> bool:
        """Offer the entry in doubt again; True once it is settled one way or the other."""
        entry, self._held = self._held, None
        if ledger.is_in_doubt(entry):
            return await self._submit(ledger, entry)
        stored = await ledger.store.account_entries(ledger.me, entry.body.seq, 1)
        if stored and entry_hash(stored[0]) == entry_hash(entry):
            self.stats.written[entry.body.kind] += 1     # certified after all
        return True


def sign_reading(key: NodeKey, station: bytes, reading: ReadingToSign) -> Any:
    """The connector's signed meter values for one session."""
    return sign(ChargeReading(charger_key=key.public_key, station=station, session_id=reading.session_id,
                              meter_start_wh=reading.meter_start_wh, meter_stop_wh=reading.meter_stop_wh,
                              started_ms=reading.started_ms, ended_ms=reading.ended_ms), key)


def charging_services(config: NodeConfig) -> list[Any]:
    """The charging service, on a station (``[charging] enabled``) or a node with planned charges."""
    return [ChargingService()] if config.charging.enabled or config.charging.sessions_file else []
