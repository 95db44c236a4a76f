"""The node's telemetry history on disk: per-slot energies and downsampled power, in SQLite.

``DeviceService`` (``p2pgrid.devices.service``) keeps its telemetry in memory and writes it here every
few seconds, so a restarted node still shows (and forecasts from) what it measured before. The
database is its own file, ``<data_dir>/telemetry.sqlite``, apart from the ledger: it holds
measurements, not acknowledged entries, so it runs with ``synchronous=NORMAL`` (a power cut may
lose the last few seconds of history; nothing else depends on them).

It goes through the same asyncio bridge as the ledger's store (aiosqlite under trio via
trio-asyncio; ``p2pgrid.ledger.store``): ``open_telemetry_store(path)`` yields a
``TelemetryStore``; every public method is one transaction.

Tables::

    slots    slot (UTC s) → import_wh, export_wh (metered, integer Wh), load_wh, pv_wh (sampled
             means × slot length, float Wh), complete (the meter bracketed both slot edges)
    buckets  (device, start_ms) → count, mean, min, max, last (W) of one history bucket

Writes replace rows with the same key (a bucket still filling is written again as it grows).
``prune(keep_from_slot, keep_from_ms)`` bounds the file: older slots and buckets are deleted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import aiosqlite
import trio
import trio_asyncio

from p2pgrid.devices.telemetry import Bucket
from p2pgrid.ledger.store import asyncio_bridge

__all__ = ["TELEMETRY_DB", "SlotTelemetry", "TelemetryStore", "open_telemetry_store", "regroup"]

TELEMETRY_DB = "telemetry.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    slot INTEGER PRIMARY KEY,
    import_wh INTEGER NOT NULL,
    export_wh INTEGER NOT NULL,
    load_wh REAL NOT NULL,
    pv_wh REAL NOT NULL,
    complete INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets (
    device TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    count INTEGER NOT NULL,
    mean REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last REAL NOT NULL,
    PRIMARY KEY (device, start_ms)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class SlotTelemetry:
    """What was measured in one ended slot (Wh)."""

    slot: int
    import_wh: int
    export_wh: int
    load_wh: float
    pv_wh: float
    complete: bool


def regroup(buckets: Iterable[Bucket], bucket_ms: int) -> list[Bucket]:
    """Merge finer buckets into buckets of ``bucket_ms`` (means weighted by sample counts)."""
    groups: dict[int, list[Bucket]] = {}
    for b in buckets:
        groups.setdefault(b.start_ms // bucket_ms * bucket_ms, []).append(b)
    out = []
    for start in sorted(groups):
        members = sorted(groups[start], key=lambda b: b.start_ms)
        count = sum(b.count for b in members)
        mean = sum(b.mean * b.count for b in members) / count if count else 0.0
        out.append(Bucket(start, count, mean, min(b.min for b in members), max(b.max for b in members),
                          members[-1].last))
    return out


class TelemetryStore:
    """The open telemetry database. Use ``open_telemetry_store``."""

    def __init__(self, conn: aiosqlite.Connection, loop: Any) -> None:
        self._conn = conn
        self._loop = loop
        self._lock = trio.Lock()   # one transaction at a time on the one connection

    async def _run(self, fn: Callable[[aiosqlite.Connection], Any]) -> Any:
        async with self._lock:
            return await trio_asyncio.aio_as_trio(fn, loop=self._loop)(self._conn)

    async def save(self, slots: Iterable[SlotTelemetry], buckets: Mapping[str, Iterable[Bucket]]) -> None:
        """Write (replace) these slots and history buckets in one transaction."""
        slot_rows = [(s.slot, s.import_wh, s.export_wh, s.load_wh, s.pv_wh, int(s.complete)) for s in slots]
        bucket_rows = [(device, b.start_ms, b.count, b.mean, b.min, b.max, b.last)
                       for device, items in buckets.items() for b in items]
        if not slot_rows and not bucket_rows:
            return

        async def write(conn: aiosqlite.Connection) -> None:
            await conn.executemany("INSERT OR REPLACE INTO slots VALUES (?, ?, ?, ?, ?, ?)", slot_rows)
            await conn.executemany("INSERT OR REPLACE INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?)", bucket_rows)
            await conn.commit()

        await self._run(write)

    async def slots(self, since_slot: int = 0) -> list[SlotTelemetry]:
        """Stored slots from ``since_slot`` on, oldest first."""
        async def read(conn: aiosqlite.Connection) -> list[Any]:
            async with conn.execute("SELECT * FROM slots WHERE slot >= ? ORDER BY slot", (since_slot,)) as cur:
                return list(await cur.fetchall())

        return [SlotTelemetry(int(r[0]), int(r[1]), int(r[2]), float(r[3]), float(r[4]), bool(r[5]))
                for r in await self._run(read)]

    async def buckets(self, since_ms: int = 0) -> dict[str, list[Bucket]]:
        """Stored history buckets starting at or after ``since_ms``, per device, oldest first."""
        async def read(conn: aiosqlite.Connection) -> list[Any]:
            async with conn.execute("SELECT * FROM buckets WHERE start_ms >= ? ORDER BY device, start_ms",
                                    (since_ms,)) as cur:
                return list(await cur.fetchall())

        out: dict[str, list[Bucket]] = {}
        for device, start, count, mean, low, high, last in await self._run(read):
            out.setdefault(device, []).append(Bucket(int(start), int(count), mean, low, high, last))
        return out

    async def prune(self, keep_from_slot: int, keep_from_ms: int) -> None:
        """Delete slots before ``keep_from_slot`` and buckets starting before ``keep_from_ms``."""
        async def delete(conn: aiosqlite.Connection) -> None:
            await conn.execute("DELETE FROM slots WHERE slot < ?", (keep_from_slot,))
            await conn.execute("DELETE FROM buckets WHERE start_ms < ?", (keep_from_ms,))
            await conn.commit()

        await self._run(delete)

    async def aclose(self) -> None:
        # Shielded, as the ledger store's: aiosqlite's worker thread would keep the process alive.
        with trio.CancelScope(shield=True):
            await self._run(lambda conn: conn.close())


@asynccontextmanager
async def open_telemetry_store(path: str | Path) -> AsyncIterator[TelemetryStore]:
    """Open (creating if needed) the telemetry database at ``path``; closes it on exit."""
    async with asyncio_bridge():
        async def connect() -> aiosqlite.Connection:
            conn = await aiosqlite.connect(str(path), isolation_level="DEFERRED")
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.executescript(SCHEMA)
            await conn.commit()
            return conn

        loop = trio_asyncio.current_loop.get()
        conn = await trio_asyncio.aio_as_trio(connect, loop=loop)()
        store = TelemetryStore(conn, loop)
        try:
            yield store
        finally:
            await store.aclose()
