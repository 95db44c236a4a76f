"""Packing a node's signed order changes into gossip batches (pure).

py-libp2p's cost is per gossip message, not per byte (docs/ARCHITECTURE.md §8), so a node sends all its order
changes of one tick as few ``OrderBatch`` messages as possible: greedily, in submission order,
each at most ``max_bytes`` (16 KiB) and ``MAX_BATCH_ITEMS`` items. Splitting keeps order: item
i is never published after item j > i.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from p2pgrid.wire import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, OrderBatch, Signed, encode


def _bin_header_size(length: int) -> int:
    return 2 if length < 2**8 else 3 if length < 2**16 else 5


def pack_order_batches(zone: str, sent_ms: int, items: Sequence[bytes],
                       max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Encoded ``OrderBatch`` messages carrying ``items`` in order, each within ``max_bytes``."""
    return [encode(OrderBatch(zone, sent_ms, tuple(items[start:end])))
            for start, end in batch_bounds(zone, sent_ms, [len(i) for i in items], max_bytes)]


def pack_signed_batches(zone: str, sent_ms: int, items: Sequence[Signed[Any]],
                        max_bytes: int = MAX_BATCH_BYTES) -> list[tuple[bytes, tuple[Signed[Any], ...]]]:
    """Like ``pack_order_batches`` for signed messages: each batch's bytes with the items it carries."""
    out = []
    for start, end in batch_bounds(zone, sent_ms, [len(s.encoded) for s in items], max_bytes):
        chunk = tuple(items[start:end])
        out.append((encode(OrderBatch(zone, sent_ms, tuple(s.encoded for s in chunk))), chunk))
    return out


def batch_bounds(zone: str, sent_ms: int, item_sizes: Sequence[int], max_bytes: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive items, greedily filling batches of ``max_bytes``."""
    # Array headers: the items array grows from fixarray (1 byte) to array16 (3 bytes) past 15
    # items; counting 3 always errs on the safe side.
    overhead = len(encode(OrderBatch(zone, sent_ms, ()))) - 1 + 3
    bounds: list[tuple[int, int]] = []
    start, size = 0, overhead
    for index, length in enumerate(item_sizes):
        item_size = _bin_header_size(length) + length
        if overhead + item_size > max_bytes:
            raise ValueError(f"an item of {length} bytes cannot fit in a {max_bytes}-byte batch")
        if index > start and (size + item_size > max_bytes or index - start >= MAX_BATCH_ITEMS):
            bounds.append((start, index))
            start, size = index, overhead
        size += item_size
    if start < len(item_sizes):
        bounds.append((start, len(item_sizes)))
    return bounds
