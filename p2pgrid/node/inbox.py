"""The control inbox: order requests the CLI drops in ``<data_dir>/inbox/``.

``p2pgrid order place`` writes ``<data_dir>/inbox/<id>.request.json`` (an order request,
unsigned) and waits for ``<id>.reply.json``. The running node signs the order with its own key and
publishes it. The inbox directory is mode 0700 like the keystore: whoever can write it can trade
for the node, exactly as whoever can read the keystore can.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from p2pgrid.errors import P2PGridError
from p2pgrid.service import OrderPlacer
from p2pgrid.wire import Side, Source

INBOX_DIR = "inbox"
INBOX_POLL_S = 0.1

@dataclass(frozen=True)
class OrderRequest:
    """An order asked for through the control inbox (unsigned; the node signs it)."""

    side: str
    qty_wh: int
    price: int
    slot: int
    green: bool = False
    source: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def inbox_dir(data_dir: Path) -> Path:
    return Path(data_dir) / INBOX_DIR


class ControlInbox:
    """Executes order requests the CLI drops in ``<data_dir>/inbox/`` and answers each one."""

    name = "control-inbox"

    async def run(self, node: OrderPlacer, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        inbox = inbox_dir(node.config.node.data_dir)
        inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(inbox, 0o700)
        task_status.started()
        while True:
            for request_path in sorted(inbox.glob("*.request.json")):
                self._handle(node, request_path)
            await trio.sleep(INBOX_POLL_S)

    def _handle(self, node: OrderPlacer, request_path: Path) -> None:
        reply_path = request_path.with_name(request_path.name.replace(".request.json", ".reply.json"))
        try:
            request = OrderRequest(**json.loads(request_path.read_text()))
            side = Side(request.side)
            source = Source(request.source) if request.source else None
            signed = node.place_order(side, request.qty_wh, request.price, request.slot,
                                      green=request.green, source=source)
            reply: dict[str, Any] = {"ok": True, "order_id": signed.body.order_id.hex()}
        except (ValueError, TypeError, KeyError, P2PGridError) as exc:
            reply = {"ok": False, "error": str(exc)}
        tmp = reply_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(reply))
        os.replace(tmp, reply_path)
        request_path.unlink(missing_ok=True)


def inbox_services(config: Any) -> list[Any]:
    return [ControlInbox()]
