"""What a running node tells the world: its counters and its status file.

``<data_dir>/status.json`` is replaced atomically twice a second by ``StatusWriter``; it holds
``NodeStatus`` (``state`` is ``running`` while the node runs and ``stopped`` after a clean
shutdown). The CLI ``status`` command and the simnet launcher read it (``read_status``); nothing
else is needed to watch a node. ``NodeStats`` are the counters the node's services update.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from p2pgrid.service import NodeBasics
from p2pgrid.wire import Order

STATUS_FILE = "status.json"
STATUS_PERIOD_S = 0.5
MAX_SLOTS_TRACKED = 512


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
    items_reconciled: int = 0       # orders and cancels gossip missed and book reconciliation pulled

    def to_json(self) -> str:
        data = asdict(self)
        data["orders_by_slot"] = {str(k): v for k, v in self.orders_by_slot.items()}
        data["listen_addrs"] = list(self.listen_addrs)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeStatus:
        data = json.loads(text)
        data["orders_by_slot"] = {int(k): int(v) for k, v in data["orders_by_slot"].items()}
        data["listen_addrs"] = tuple(data["listen_addrs"])
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
    """The status writer: every node runs it."""
    return [StatusWriter()]
