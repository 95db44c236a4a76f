"""The node's settlement services: it meters its own slots, and the zone gateway settles them.

``SettlementNodeService`` (name ``settlement``) runs on every node with a ledger and does something
only on the zone gateway's: there it runs ``p2pgrid.settlement.service.SettlementService``, the
single writer of the zone's ``settle`` entries (see the class).

``MeterNodeService`` (name ``metering``): the node's devices' closed slots become signed ``meter``
ledger entries. It runs on every node with a ledger and devices (``p2pgrid.devices.service.
has_devices``), except the zone gateway (the gateway *is* the grid: it is the counterparty of every
imbalance and is never settled against itself). It joins two parts:

* ``node.telemetry`` — the ``DeviceService``, whose ``completed_slots()`` hold the slot's metered
  grid import/export (integer Wh, from the meter's counters) and PV generation;
* ``p2pgrid.settlement.service.MeterService`` — signs one ``MeterReading`` per ended slot with the
  node's **meter key** (``[devices.meter] key_file`` in the data dir, made on first start; never
  the trading key) and submits it as a ``meter`` entry in the node's own chain.

What a slot's reading says (``metered_of``):

* ``import_wh`` / ``export_wh`` — the meter's energy over the slot, as measured;
* ``green_wh`` — the PV energy generated behind the meter in the slot (rounded to whole Wh), source
  ``pv``; 0 (source ``none``) without PV. Settlement issues one certificate per green Wh.

A slot is reported only once the device service has closed it (a meter sample past its end has
arrived) and only if it is **complete** (the meter's samples bracket both of its edges): a slot
the node saw only part of — it started or restarted inside it — is not reported, and settles as
zero delivery for this node, as with any meter that was offline.

**Waiting for the registration.** Validators hold a meter entry until the gateway's registration
of its key is certified, and an entry held up would hold up the node's own chain (its trades). So
the service starts submitting only once the registration is in the node's certified state, but
from the slot in progress when the node started: slots that ended while the registration was on
its way are read then, if their metering due has not passed (their energy is in the telemetry).

**Spread, and no deadline margin.** Each node waits a fixed share of the first quarter of the
grace after a slot's end, drawn from its account (``spread_delay_ms``), so a zone's readings do
not all ask the committee for votes at once. There is no margin before the slot's metering due:
validators judge a reading on its meter-signed ``created_ms`` (before the due, whenever it
arrives), not on their clocks, so a node reads every slot it can before the due and submits the
reading however late it gets to; one certified after the slot was settled is reconciled by the
gateway (``p2pgrid.settlement.service``). ``[devices.meter] until_s`` ends metering (slots due
after it are not metered).

**Counters across restarts.** ``MeterService`` continues the counters from the account's last
certified reading with the same meter key (``meter_last/<account>`` in the ledger state), so
after a restart the readings chain on from what the ledger holds: counters never run backwards.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.devices.service import WithDevices, has_devices
from p2pgrid.devices.telemetry_store import SlotTelemetry
from p2pgrid.identity import NodeKey
from p2pgrid.service import WithLedger
from p2pgrid.settlement.entries import meter_registration_of
from p2pgrid.settlement.service import Metered, MeterService, SettlementService, load_or_create_meter_key
from p2pgrid.wire import Source

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

__all__ = ["MeterNodeService", "SettlementNodeService", "meter_key_of", "metered_of", "metering_services",
           "settlement_services", "spread_delay_ms"]

log = logging.getLogger(__name__)

POLL_S = 0.2            # real seconds between looks at ended slots (market deadlines are short in simnet)
REGISTRATION_POLL_S = 0.2


def metered_of(slot: SlotTelemetry | None) -> Metered | None:
    """The reading content of a closed slot, or None when it must not be reported (incomplete)."""
    if slot is None or not slot.complete:
        return None
    green_wh = max(0, round(slot.pv_wh))
    return slot.import_wh, slot.export_wh, green_wh, Source.PV if green_wh else Source.NONE


def spread_delay_ms(account: bytes, grace_s: int) -> int:
    """This account's wait after a slot's end before it sends the reading: a share, fixed by the
    account's hash, of the first quarter of the grace."""
    share = int.from_bytes(hashlib.sha256(account).digest()[:4], "big") / 2**32
    return int(share * grace_s * 1000 / 4)


def meter_key_of(config: NodeConfig) -> NodeKey:
    """The node's meter key (``[devices.meter] key_file`` in data_dir; created 0600 if missing)."""
    config.node.data_dir.mkdir(parents=True, exist_ok=True)
    return load_or_create_meter_key(config.node.data_dir, config.devices.meter.key_file)


class MeteringHost(WithLedger, WithDevices, Protocol):
    """What the metering service uses of the node."""


class MeterNodeService:
    """See the module docstring. ``meter`` is the running ``MeterService`` once metering started."""

    name = "metering"

    def __init__(self, *, poll_s: float = POLL_S) -> None:
        self.poll_s = poll_s
        self.meter: MeterService | None = None
        self.started = trio.Event()

    async def run(self, node: MeteringHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        ledger, telemetry = node.ledger, node.telemetry
        if ledger is None or telemetry is None:
            raise RuntimeError("metering starts after the ledger and device services")
        key = meter_key_of(node.config)
        rules = node.config.zone.slot_rules
        first_slot = rules.slot_of(node.clock.now_ms())
        task_status.started()
        if ledger.rules.gateway == node.key.public_key:
            await trio.sleep_forever()    # the gateway is the grid: nothing to meter against it
        logged = False
        while meter_registration_of(ledger.state, key.public_key) is None:
            if not logged:
                log.info("meter key %s… not registered by the zone gateway yet; metering waits",
                         key.public_key.hex()[:16])
                logged = True
            await trio.sleep(REGISTRATION_POLL_S)

        def is_closed(slot: int) -> bool:
            closed_until = telemetry.closed_until_ms
            return closed_until is not None and rules.slot_end_ms(slot) <= closed_until

        until_s = node.config.devices.meter.until_s
        self.meter = MeterService(ledger, key, rules, lambda slot: metered_of(telemetry.slots.get(slot)),
                                  node.clock.now_ms, poll_s=self.poll_s, is_closed=is_closed,
                                  until_ms=until_s * 1000 if until_s else None,
                                  delay_ms=spread_delay_ms(node.key.public_key, rules.grace_s),
                                  first_slot=first_slot)
        log.info("meter key %s… registered by the zone gateway: metering from slot %s",
                 key.public_key.hex()[:16], _slot_text(self.meter.next_slot))
        self.started.set()
        await self.meter.run()


def _slot_text(slot: int) -> str:
    """A slot for a log line: its start in UTC and as Unix seconds (as `settle show --slot` takes it)."""
    start = dt.datetime.fromtimestamp(slot, dt.timezone.utc)
    return f"{start:%Y-%m-%d %H:%M:%S} UTC ({slot})"


def metering_services(config: NodeConfig) -> list[Any]:
    """The services of this module the node runs, by config (the registry, ``p2pgrid.node.registry``, adds them)."""
    return [MeterNodeService()] if has_devices(config) else []


class SettlementNodeService:
    """On the zone gateway's node: propose the ``settle`` entry of each slot once it is due, and
    its reconciliations (``p2pgrid.settlement.service``; ``[gateway] settle_delay_ms`` after the
    metering deadline), up to ``[gateway] settle_until_s`` if set. Other nodes run nothing here."""

    name = "settlement"

    def __init__(self) -> None:
        self.settlement: SettlementService | None = None    # the gateway's, once it runs

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        if node.ledger is None:
            raise RuntimeError("settlement starts after the ledger service")
        if node.ledger.rules.gateway != node.key.public_key:
            task_status.started()
            await trio.sleep_forever()
        until_s = node.config.gateway.settle_until_s
        self.settlement = SettlementService(node.ledger, node.clock.now_ms,
                                            until_ms=until_s * 1000 if until_s else None,
                                            settle_delay_ms=node.config.gateway.settle_delay_ms)
        await self.settlement.run(task_status=task_status)


def settlement_services(config: NodeConfig) -> list[Any]:
    """The settlement service (the registry runs it on nodes with a ledger only; it acts on the gateway's)."""
    return [SettlementNodeService()]
