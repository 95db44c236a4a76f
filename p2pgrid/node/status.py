"""What a running node tells the world: its counters and its status file.

``<data_dir>/status.json`` is replaced atomically twice a second by ``StatusWriter``; it holds
``NodeStatus`` (``state`` is ``running`` while the node runs and ``stopped`` after a clean
shutdown). The CLI ``status`` command and the simnet launcher read it (``read_status``); nothing
else is needed to watch a node. ``NodeStats`` are the counters the node's services update.

**What a person needs** (``p2pgrid run``'s dashboard and ``p2pgrid status``, ``cli.dashboard``) is in
the status too, filled by ``people_fields(node)`` from the node's services, each empty when the
service is absent:

* ``peer_id`` (libp2p, base58) and ``ledger`` (whether the node runs the zone's ledger);
* ``notices``: what the node does not do and why (``p2pgrid.node.startup.startup_notices``);
* ``own_orders``: this node's open orders (``OwnOrderLine``, filled Wh from the certified ledger);
* ``best_prices``: best bid and ask of the next ``PRICE_SLOTS`` tradable slots (``SlotPrices``;
  ``None`` = no order on that side);
* ``recent_trades``: the last ``RECENT_TRADES`` certified trades of this node (``TradeLine``:
  ``side`` is what this node did, ``bought`` or ``sold``), known to the node API (``[rpc]`` or
  ``[metrics]`` enabled: it follows the ledger);
* ``devices``: each device's last GOOD reading (``DeviceLine``: ``power_w`` in the device bus's
  signs, ``at_ms`` its market time, ``stale`` when the device stopped answering: shown as "—"
  with its age, never as 0 W).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import trio

from p2pgrid.service import NodeBasics
from p2pgrid.wire import Order

STATUS_FILE = "status.json"
STATUS_PERIOD_S = 0.5
MAX_SLOTS_TRACKED = 512
PRICE_SLOTS = 4          # next tradable slots whose best bid and ask the status carries
RECENT_TRADES = 8
OWN_ORDERS_SHOWN = 12


@dataclass
class NodeStats:
    """Counters the node's services update; ``NodeStatus`` is their frozen, serialisable view."""

    orders_by_slot: dict[int, set[bytes]] = field(default_factory=dict)
    orders_published: int = 0

    def record_order(self, order: Order) -> None:
        seen = self.orders_by_slot.setdefault(order.slot, set())
        seen.add(order.order_id)
        if len(self.orders_by_slot) > MAX_SLOTS_TRACKED:
            del self.orders_by_slot[min(self.orders_by_slot)]

    @property
    def orders_seen(self) -> int:
        return sum(len(ids) for ids in self.orders_by_slot.values())


@dataclass(frozen=True)
class OwnOrderLine:
    """One open order of this node (price µc/kWh)."""

    order_id: str
    slot: int
    side: str
    qty_wh: int
    filled_wh: int
    price: int


@dataclass(frozen=True)
class SlotPrices:
    """Best bid and ask of one slot (µc/kWh and Wh at that price); None: no order on that side."""

    slot: int
    bid: int | None
    bid_wh: int
    ask: int | None
    ask_wh: int


@dataclass(frozen=True)
class TradeLine:
    """One certified trade of this node: ``side`` is ``bought`` or ``sold``; ``value_uc`` is what it
    paid (bought) or received (sold), always ≥ 0; ``counterparty`` hex."""

    at_ms: int
    slot: int
    side: str
    qty_wh: int
    price: int
    value_uc: int
    counterparty: str


@dataclass(frozen=True)
class DeviceLine:
    """One device's last good reading (``power_w`` in the device bus's signs: grid + import,
    battery + discharging, PV and load +); ``power_w`` None: no good reading yet."""

    name: str
    kind: str
    power_w: int | None
    at_ms: int
    stale: bool
    soc_pct: float | None = None
    capacity_wh: int = 0


_NESTED = {"own_orders": OwnOrderLine, "best_prices": SlotPrices, "recent_trades": TradeLine,
           "devices": DeviceLine}


@dataclass(frozen=True)
class NodeStatus:
    """What a running node tells the world through its status file."""

    name: str
    role: str
    zone: str
    account: str
    pid: int
    state: str
    listen_addrs: tuple[str, ...]
    peers: int
    orders_seen: int
    orders_by_slot: dict[int, int]
    rejects: dict[str, int]
    ignored: dict[str, int]
    orders_published: int
    batches_received: int
    market_now_ms: int
    updated_wall_ms: int
    ledger_height: int = 0
    state_root: str = ""
    balance_uc: int = 0
    money_total_uc: int = 0
    trades_taken: int = 0
    takes_served: int = 0
    peer_id: str = ""
    ledger: bool = False
    notices: tuple[str, ...] = ()
    own_orders: tuple[OwnOrderLine, ...] = ()
    best_prices: tuple[SlotPrices, ...] = ()
    recent_trades: tuple[TradeLine, ...] = ()
    devices: tuple[DeviceLine, ...] = ()
    items_reconciled: int = 0       # orders and cancels gossip missed and book reconciliation pulled

    def to_json(self) -> str:
        data = asdict(self)
        data["orders_by_slot"] = {str(k): v for k, v in self.orders_by_slot.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeStatus:
        data = json.loads(text)
        data["orders_by_slot"] = {int(k): int(v) for k, v in data["orders_by_slot"].items()}
        data["listen_addrs"] = tuple(data["listen_addrs"])
        data["notices"] = tuple(data.get("notices", ()))
        for name, kind in _NESTED.items():
            known = {f.name for f in fields(kind)}
            data[name] = tuple(kind(**{k: v for k, v in item.items() if k in known}) for item in data.get(name, ()))
        return cls(**data)


def read_status(data_dir: Path) -> NodeStatus | None:
    """The last status a node wrote in ``data_dir``, or None if there is none (yet)."""
    try:
        return NodeStatus.from_json((Path(data_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError, KeyError, TypeError):   # missing, or written by another version
        return None


def write_status(data_dir: Path, status: NodeStatus) -> None:
    path = Path(data_dir) / STATUS_FILE
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(status.to_json())
    os.replace(tmp, path)


# --- what a person needs, from the node's services -------------------------------------------

def people_fields(node: Any) -> dict[str, Any]:
    """The status fields of the module docstring's "what a person needs", from ``node``'s services
    (a ``p2pgrid.node.app.Node``; every service optional)."""
    from p2pgrid.node.api import peer_id_base58
    from p2pgrid.node.startup import startup_notices

    now = node.clock.now_ms()
    return {"peer_id": peer_id_base58(node.key.public_key), "ledger": node.ledger is not None,
            "notices": tuple(startup_notices(node.config, node.key.account)),
            "own_orders": _own_orders(node, now), "best_prices": _best_prices(node, now),
            "recent_trades": _recent_trades(node), "devices": device_lines(getattr(node, "telemetry", None), now)}


def _own_orders(node: Any, now: int) -> tuple[OwnOrderLine, ...]:
    trading = node.trading
    if trading is None:
        return ()
    rules = node.config.zone.slot_rules
    lines = []
    for signed in list(trading.own_orders.values()):
        order = signed.body
        progress = node.ledger.state.orders.get((order.owner, order.order_id)) if node.ledger is not None else None
        filled = progress.filled_wh if progress is not None else 0
        if filled >= order.qty_wh or now >= min(order.expiry_ms, rules.gate_closure_ms(order.slot)):
            continue
        lines.append(OwnOrderLine(order.order_id.hex(), order.slot, order.side.value, order.qty_wh, filled,
                                  order.limit_price))
    lines.sort(key=lambda line: (line.slot, line.side, line.price))
    return tuple(lines[:OWN_ORDERS_SHOWN])


def _best_prices(node: Any, now: int) -> tuple[SlotPrices, ...]:
    trading = node.trading
    if trading is None:
        return ()
    lines = []
    for slot in node.config.zone.slot_rules.tradable_slots(now)[:PRICE_SLOTS]:
        depth = trading.books.depth(slot, 1, now_ms=now)
        bid = depth.bids[0] if depth.bids else None
        ask = depth.asks[0] if depth.asks else None
        lines.append(SlotPrices(int(slot), bid.price if bid else None, bid.qty_wh if bid else 0,
                                ask.price if ask else None, ask.qty_wh if ask else 0))
    return tuple(lines)


def _recent_trades(node: Any) -> tuple[TradeLine, ...]:
    from p2pgrid.node.rpc import NodeApiService

    api = next((s.api for s in node.services if isinstance(s, NodeApiService) and s.api is not None), None)
    if api is None:
        return ()
    me = node.key.public_key
    lines = []
    for trade in api.recent_trades(RECENT_TRADES):
        bought = trade.buyer == me
        lines.append(TradeLine(trade.at_ms, trade.slot, "bought" if bought else "sold", trade.qty_wh, trade.price,
                               trade.value_uc, (trade.seller if bought else trade.buyer).hex()))
    return tuple(lines)


def device_lines(devices: Any, now: int) -> tuple[DeviceLine, ...]:
    """Each device of a ``DeviceService`` (None: no devices) with its last good reading at ``now``."""
    if devices is None or devices.device_set is None:
        return ()
    stale = devices.stale_devices(now)
    lines = []
    for name, device in devices.device_set.devices.items():
        reading = devices.last_good.get(name)
        sample = devices.last.get(name)
        soc = getattr(reading, "soc_pct", None)
        lines.append(DeviceLine(name, device.kind.value,
                                round(reading.power_w) if reading is not None else None,
                                reading.t_ms if reading is not None else (sample.t_ms if sample else 0),
                                name in stale or reading is None, soc,
                                int(getattr(reading, "capacity_wh", 0) or 0)))
    return tuple(lines)


class StatusHost(NodeBasics, Protocol):
    def status(self) -> NodeStatus: ...


class StatusWriter:
    """Keeps ``<data_dir>/status.json`` current."""

    name = "status-writer"

    async def run(self, node: StatusHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        node.config.node.data_dir.mkdir(parents=True, exist_ok=True)
        task_status.started()
        while True:
            write_status(node.config.node.data_dir, node.status())
            await trio.sleep(STATUS_PERIOD_S)


def status_services(config: Any) -> list[Any]:
    """The status writer and the start-up report (``p2pgrid.node.startup``): every node runs them."""
    from p2pgrid.node.startup import StartupReport

    return [StatusWriter(), StartupReport()]
