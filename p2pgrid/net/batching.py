"""Packing a node's signed order changes into gossip batches (pure).

py-libp2p's cost is per gossip message, not per byte (DESIGN.md §3), so a node sends all its order
changes of one tick as few ``OrderBatch`` messages as possible: greedily, in submission order,
each at most ``max_bytes`` (16 KiB) and ``MAX_BATCH_ITEMS`` items. Splitting keeps order: item
i is never published after item j > i.
"""

from __future__ import annotations

from collections.abc import Sequence

from p2pgrid.wire import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, OrderBatch, encode


def _bin_header_size(length: int) -> int:
    return 2 if length < 2**8 else 3 if length < 2**16 else 5


def pack_order_batches(zone: str, sent_ms: int, items: Sequence[bytes],
                       max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Encoded ``OrderBatch`` messages carrying ``items`` in order, each within ``max_bytes``."""
    # Array headers: the items array grows from fixarray (1 byte) to array16 (3 bytes) past 15
    # items; counting 3 always errs on the safe side.
    overhead = len(encode(OrderBatch(zone, sent_ms, ()))) - 1 + 3
    batches: list[bytes] = []
    current: list[bytes] = []
    size = overhead
    for item in items:
        item_size = _bin_header_size(len(item)) + len(item)
        if overhead + item_size > max_bytes:
            raise ValueError(f"an item of {len(item)} bytes cannot fit in a {max_bytes}-byte batch")
        if current and (size + item_size > max_bytes or len(current) >= MAX_BATCH_ITEMS):
            batches.append(encode(OrderBatch(zone, sent_ms, tuple(current))))
            current, size = [], overhead
        current.append(item)
        size += item_size
    if current:
        batches.append(encode(OrderBatch(zone, sent_ms, tuple(current))))
    return batches
