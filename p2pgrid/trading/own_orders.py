"""A node's own open orders, kept on disk so that a restarted maker can still answer takes.

What a maker has *sold* always comes from its certified chain; what it has *offered* is only in
its signed orders, which the rest of the zone holds in their books. This journal is the maker's
own copy: an append-only file of frames ``[kind, bytes]`` (``order`` with a signed order,
``cancel`` with an order id), each length-prefixed and fsynced before the order is gossiped.
A torn last frame (a crash mid-write) is ignored and cut off on the next open.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from p2pgrid.errors import WireError
from p2pgrid.wire import Order, Signed, decode_signed

_LENGTH_BYTES = 4


class OwnOrderJournal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[bytes, Signed[Order]]:
        """The orders recorded and not cancelled, and repair a torn tail."""
        orders: dict[bytes, Signed[Order]] = {}
        if not self.path.exists():
            return orders
        data = self.path.read_bytes()
        offset = 0
        while offset + _LENGTH_BYTES <= len(data):
            size = int.from_bytes(data[offset:offset + _LENGTH_BYTES], "big")
            frame = data[offset + _LENGTH_BYTES:offset + _LENGTH_BYTES + size]
            if len(frame) < size:
                break
            try:
                kind, payload = msgpack.unpackb(frame)
                if kind == "order":
                    signed = decode_signed(payload, Order)
                    orders[signed.body.order_id] = signed
                elif kind == "cancel":
                    orders.pop(payload, None)
            except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, WireError):
                break
            offset += _LENGTH_BYTES + size
        if offset < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)
                handle.flush()
                os.fsync(handle.fileno())
        return orders

    def record_order(self, signed: Signed[Order]) -> None:
        self._append(["order", signed.encoded])

    def record_cancel(self, order_id: bytes) -> None:
        self._append(["cancel", order_id])

    def compact(self, live: dict[bytes, Signed[Order]]) -> None:
        """Rewrite the journal with only ``live`` orders (atomically)."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            for signed in live.values():
                handle.write(_frame(["order", signed.encoded]))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _append(self, record: list[object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(_frame(record))
            handle.flush()
            os.fsync(handle.fileno())


def _frame(record: list[object]) -> bytes:
    body = msgpack.packb(record, use_bin_type=True)
    return len(body).to_bytes(_LENGTH_BYTES, "big") + body
