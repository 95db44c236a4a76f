"""The ledger's storage: SQLite (the standard ``sqlite3`` module) on a worker thread, under trio.

All ledger storage lives behind this module: ``open_store(path)`` yields a ``LedgerStore``. Each
public method is one query or one transaction, run whole on a worker thread with
``trio.to_thread`` (one crossing per call), one at a time per store; batches commit once.
(``asyncio_bridge``, the trio-asyncio loop aiosqlite needs, stays here for the telemetry store.)

Tables::

    entries       (account, seq) → hash, batch_root, slot, signed entry bytes   certified only
    certificates  batch_root → certificate bytes, leaves (concatenated entry hashes)
    heads         account → next_seq, last_hash   the contiguous certified prefix of each chain
                  (``ChainHead.last_time_ms`` is not kept here: state derivation gives it)
    ballots       conflict key → entry hash, account, seq, entry bytes
                  this node's own votes (never vote twice); the voted entry's bytes are kept so
                  they can be handed back to an owner that lost them. Pruned once the voted
                  entry's seq is certified here (the certified state then enforces every key).
    proposals     (account, seq) → signed entry bytes
                  this node's own entries, written before any validator is asked to vote for
                  them: after a crash they are proposed again as they were, never replaced by a
                  second entry at the same seq. Pruned once certified.
    meta          the zone's ledger rules and committee, so offline tools (``p2pgrid ledger``)
                  can derive and verify the state without the node's config

Indexes: entries by (account, seq) (primary key), by slot, by batch_root.

Durability. The database runs in WAL mode with ``synchronous=FULL``: a commit returns only after
the WAL is fsynced, so whatever a method has returned survives a process kill *and* a power cut.
(``NORMAL`` with WAL survives a process kill — the WAL is in the OS page cache — but may lose the
last commits on power loss; we acknowledge entries and send votes only after a return from here,
so we pay for FULL, amortised by committing batches.) A crash mid-transaction rolls back on the
next open, so the store is always consistent: an entry row exists only with its certificate row,
and ``heads`` is updated in the same transaction as the entries.

Ordering guarantee for votes: ``record_votes`` commits before it returns; the validator sends a
vote only after that, so after any crash the record of every vote ever sent is on disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
import sqlite3
from typing import Any, Callable

import trio
import trio_asyncio

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import ChainHead, ChainInconsistent, LedgerRules, LedgerState, apply_ready, state_root
from p2pgrid.ledger.committee import CertificateInvalid, Committee, batch_root, verify_certificate
from p2pgrid.ledger.messages import (
    GENESIS_HASH, HASH_SIZE, Certificate, CertifiedEntries, Entry, decode_certified_entry, entry_hash,
)
from p2pgrid.wire import Signed, decode, encode, pack, unpack

LEDGER_DB_FILE = "ledger.sqlite"   # the ledger database's name inside a node's data dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    batch_root BLOB PRIMARY KEY,
    certificate BLOB NOT NULL,
    leaves BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (
    account BLOB NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    batch_root BLOB NOT NULL REFERENCES certificates(batch_root),
    slot INTEGER,
    data BLOB NOT NULL,
    PRIMARY KEY (account, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_slot ON entries(slot) WHERE slot IS NOT NULL;
CREATE INDEX IF NOT EXISTS entries_by_batch ON entries(batch_root);
CREATE TABLE IF NOT EXISTS heads (
    account BLOB PRIMARY KEY,
    next_seq INTEGER NOT NULL,
    last_hash BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ballots (
    conflict_key BLOB PRIMARY KEY,
    entry_hash BLOB NOT NULL,
    account BLOB NOT NULL,
    seq INTEGER NOT NULL,
    entry BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ballots_by_place ON ballots(account, seq);
CREATE TABLE IF NOT EXISTS proposals (
    account BLOB NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (account, seq)
) WITHOUT ROWID;
"""


class StoreCorrupt(LedgerError):
    """``verify`` found the stored ledger inconsistent."""


@dataclass(frozen=True)
class StoredBatch:
    """Certified entries of one certificate, as read back from the store."""

    certificate: Certificate
    leaves: tuple[bytes, ...]
    entries: tuple[bytes, ...]

    def as_message(self, whole: bool = False) -> CertifiedEntries:
        return CertifiedEntries(self.certificate, () if whole else self.leaves, self.entries)


@dataclass(frozen=True)
class VerifyReport:
    entries: int
    certificates: int
    accounts: int
    state_root: bytes
    pending: int


class LedgerStore:
    """The open ledger database. Use ``open_store``; every method is one committed transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        # One connection, one transaction at a time: two tasks' statements must never interleave
        # inside one transaction (one's commit would carry the other's half-done writes).
        self._lock = trio.Lock()

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``fn(connection)`` — one query or one whole transaction — on a worker thread.

        One crossing per call, straight from trio to the thread and back (``trio.to_thread``).
        The store used to reach SQLite through aiosqlite over a trio-asyncio loop: every call
        then waited for the asyncio loop's task to be scheduled by trio, for aiosqlite's thread,
        and for the asyncio callback back, each a full round of every other runnable task; with
        many nodes in one process that was tens to hundreds of ms per call, and the ledger's
        certify → store → answer path makes several calls in a row. The call is never abandoned
        on cancellation: the lock stays held until SQLite is done, so the next call cannot use
        the connection while this one still does, and a commit that started is finished. Calls
        of one store run one at a time (the lock); at most ``SQLITE_THREADS`` stores of the
        process run at once."""
        async with self._lock:
            return await trio.to_thread.run_sync(fn, self._conn, limiter=_sqlite_threads())

    # --- certified entries -----------------------------------------------------------------

    async def add_certified(self, batches: Iterable[tuple[Certificate, Sequence[bytes], Sequence[Signed[Entry]]]],
                            slot_of: Callable[[Signed[Entry]], int | None] | None = None) -> int:
        """Store certified batches (certificate, all leaf hashes, entries) in one transaction and
        advance the heads. Idempotent. Returns how many entries were new. Durable on return."""
        cert_rows, entry_rows, touched = [], [], set()
        for cert, leaves, entries in batches:
            cert_rows.append((cert.batch_root, encode(cert), b"".join(leaves)))
            for signed in entries:
                e = signed.body
                entry_rows.append((e.account, e.seq, entry_hash(signed), cert.batch_root,
                                   slot_of(signed) if slot_of else None, signed.encoded))
                touched.add(e.account)

        def txn(conn: sqlite3.Connection) -> int:
            try:
                conn.executemany("INSERT OR IGNORE INTO certificates VALUES (?, ?, ?)", cert_rows)
                before = conn.total_changes
                conn.executemany("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?)", entry_rows)
                added = conn.total_changes - before
                _advance_heads(conn, sorted(touched))
                conn.execute("DELETE FROM proposals WHERE EXISTS (SELECT 1 FROM heads h WHERE "
                             "h.account = proposals.account AND proposals.seq < h.next_seq)")
                conn.commit()
                return added
            except BaseException:
                conn.rollback()
                raise

        return await self._run(txn)

    async def heads(self) -> dict[bytes, ChainHead]:
        def q(conn: sqlite3.Connection) -> dict[bytes, ChainHead]:
            cur = conn.execute("SELECT account, next_seq, last_hash FROM heads")
            return {a: ChainHead(n, h) for a, n, h in cur.fetchall()}
        return await self._run(q)

    async def entry_count(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            cur = conn.execute("SELECT count(*) FROM entries")
            return cur.fetchone()[0]
        return await self._run(q)

    async def get_entry(self, account: bytes, seq: int) -> Signed[Entry] | None:
        def q(conn: sqlite3.Connection) -> bytes | None:
            cur = conn.execute("SELECT data FROM entries WHERE account = ? AND seq = ?", (account, seq))
            row = cur.fetchone()
            return row[0] if row else None
        data = await self._run(q)
        return decode_certified_entry(data) if data is not None else None

    async def account_entries(self, account: bytes, from_seq: int = 0, limit: int = 1000) -> list[Signed[Entry]]:
        def q(conn: sqlite3.Connection) -> list[bytes]:
            cur = conn.execute("SELECT data FROM entries WHERE account = ? AND seq >= ? ORDER BY seq LIMIT ?",
                               (account, from_seq, limit))
            return [r[0] for r in cur.fetchall()]
        return [decode_certified_entry(d) for d in await self._run(q)]

    async def all_entries(self) -> list[Signed[Entry]]:
        """Every certified entry (account, seq order). For start-up state derivation and verify."""
        def q(conn: sqlite3.Connection) -> list[bytes]:
            cur = conn.execute("SELECT data FROM entries ORDER BY account, seq")
            return [r[0] for r in cur.fetchall()]
        return [decode_certified_entry(d) for d in await self._run(q)]

    async def missing_for(self, their_heads: Mapping[bytes, int], limit: int) -> tuple[list[StoredBatch], bool]:
        """Certified entries a peer with ``their_heads`` (account → next_seq) lacks, grouped by
        certificate, at most ``limit`` entries; the flag says whether more remain."""
        def q(conn: sqlite3.Connection) -> tuple[list[tuple[bytes, bytes]], bool]:
            rows: list[tuple[bytes, bytes]] = []
            more = False
            cur = conn.execute("SELECT account, next_seq FROM heads ORDER BY account")
            ours = cur.fetchall()
            for account, next_seq in ours:
                start = their_heads.get(account, 0)
                if start >= next_seq:
                    continue
                room = limit - len(rows)
                if room <= 0:
                    more = True
                    break
                cur = conn.execute(
                    "SELECT batch_root, data FROM entries WHERE account = ? AND seq >= ? AND seq < ? "
                    "ORDER BY seq LIMIT ?", (account, start, next_seq, room))
                rows += cur.fetchall()
                if start + room < next_seq:
                    more = True
                    break
            return rows, more

        rows, more = await self._run(q)
        return await self._group(rows), more

    async def _group(self, rows: Sequence[tuple[bytes, bytes]]) -> list[StoredBatch]:
        roots = list(dict.fromkeys(r for r, _ in rows))
        certs = await self.certificates(roots)
        grouped: dict[bytes, list[bytes]] = {}
        for root, data in rows:
            grouped.setdefault(root, []).append(data)
        return [StoredBatch(certs[r][0], certs[r][1], tuple(grouped[r])) for r in roots]

    async def certificates(self, roots: Sequence[bytes]) -> dict[bytes, tuple[Certificate, tuple[bytes, ...]]]:
        def q(conn: sqlite3.Connection) -> list[tuple[bytes, bytes, bytes]]:
            out: list[tuple[bytes, bytes, bytes]] = []
            for i in range(0, len(roots), 500):
                chunk = roots[i:i + 500]
                marks = ",".join("?" * len(chunk))
                cur = conn.execute(f"SELECT batch_root, certificate, leaves FROM certificates "
                                   f"WHERE batch_root IN ({marks})", chunk)
                out += cur.fetchall()
            return out
        return {root: (decode(Certificate, cert, 1 << 20), _split_leaves(leaves))
                for root, cert, leaves in await self._run(q)}

    # --- own votes ------------------------------------------------------------------------

    async def record_votes(self, records: Sequence[tuple[bytes, bytes]],
                           entries: Mapping[bytes, Signed[Entry]] | None = None) -> None:
        """Durably record (conflict key → entry hash) before the vote is sent, with the voted
        entry (by hash: its place, and its bytes). A key recorded already with another hash is a
        bug in the caller (it must check first): refuse."""
        entries = entries or {}
        rows = []
        for key, h in records:
            signed = entries.get(h)
            account, seq = (signed.body.account, signed.body.seq) if signed is not None else (b"", -1)
            rows.append((key, h, account, seq, signed.encoded if signed is not None and key.startswith(b"seq/") else None))

        def txn(conn: sqlite3.Connection) -> None:
            try:
                conn.executemany("INSERT OR IGNORE INTO ballots VALUES (?, ?, ?, ?, ?)", rows)
                recorded = _select_in(conn, "SELECT conflict_key, entry_hash FROM ballots WHERE conflict_key IN",
                                      [key for key, *_ in rows])
                if any(recorded.get(key) != h for key, h, *_ in rows):
                    raise LedgerError("refusing to record a second vote at one conflict key")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

        await self._run(txn)

    async def votes(self) -> dict[bytes, tuple[bytes, bytes, int]]:
        """Every live conflict key this node voted on → (entry hash, account, seq) of the entry."""
        def q(conn: sqlite3.Connection) -> dict[bytes, tuple[bytes, bytes, int]]:
            cur = conn.execute("SELECT conflict_key, entry_hash, account, seq FROM ballots")
            return {k: (h, a, n) for k, h, a, n in cur.fetchall()}
        return await self._run(q)

    async def voted_entry(self, conflict_key: bytes) -> bytes | None:
        """The signed entry bytes this node voted for at ``conflict_key`` (if it kept them)."""
        def q(conn: sqlite3.Connection) -> bytes | None:
            cur = conn.execute("SELECT entry FROM ballots WHERE conflict_key = ?", (conflict_key,))
            row = cur.fetchone()
            return row[0] if row else None
        return await self._run(q)

    async def prune_votes(self) -> int:
        """Forget the votes for entries whose seq is certified here; returns how many went."""
        def txn(conn: sqlite3.Connection) -> int:
            try:
                before = conn.total_changes
                conn.execute("DELETE FROM ballots WHERE EXISTS (SELECT 1 FROM heads h WHERE "
                             "h.account = ballots.account AND ballots.seq < h.next_seq)")
                conn.commit()
                return conn.total_changes - before
            except BaseException:
                conn.rollback()
                raise
        return await self._run(txn)

    # --- own proposals ---------------------------------------------------------------------

    async def save_proposals(self, entries: Sequence[Signed[Entry]]) -> None:
        """Durably keep this node's entries before votes are asked for (see the class docstring).
        A different entry at a seq kept already is a bug in the caller: refuse."""
        rows = [(s.body.account, s.body.seq, s.encoded) for s in entries]

        def txn(conn: sqlite3.Connection) -> None:
            try:
                before = conn.total_changes
                conn.executemany("INSERT OR IGNORE INTO proposals VALUES (?, ?, ?)", rows)
                if conn.total_changes - before != len(rows):    # some were kept already: same bytes?
                    for account, seq, data in rows:
                        kept = conn.execute("SELECT data FROM proposals WHERE account = ? AND seq = ?",
                                            (account, seq)).fetchone()
                        if kept is None or kept[0] != data:
                            raise LedgerError(f"refusing a second proposal at seq {seq}")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        await self._run(txn)

    async def drop_proposals(self, account: bytes, from_seq: int) -> None:
        """Forget proposals at or after ``from_seq``: only once a quorum refused the first of them."""
        def txn(conn: sqlite3.Connection) -> None:
            try:
                conn.execute("DELETE FROM proposals WHERE account = ? AND seq >= ?", (account, from_seq))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        await self._run(txn)

    async def proposals(self, account: bytes) -> list[Signed[Entry]]:
        """This node's kept proposals of ``account`` not yet certified here, by seq."""
        def q(conn: sqlite3.Connection) -> list[bytes]:
            cur = conn.execute(
               "SELECT p.data FROM proposals p LEFT JOIN heads h ON h.account = p.account "
               "WHERE p.account = ? AND p.seq >= COALESCE(h.next_seq, 0) ORDER BY p.seq", (account,))
            return [r[0] for r in cur.fetchall()]
        return [decode_certified_entry(d) for d in await self._run(q)]

    # --- zone parameters -------------------------------------------------------------------

    async def save_zone(self, rules: LedgerRules, committee: Committee) -> None:
        value = pack([rules.zone, rules.gateway, rules.credit_limit_uc, committee.epoch, list(committee.validators)])

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('zone', ?)", (value,))
            conn.commit()
        await self._run(txn)

    async def load_zone(self) -> tuple[LedgerRules, Committee] | None:
        """The rules and committee saved by the node that owns this store (None if never saved)."""
        def q(conn: sqlite3.Connection) -> bytes | None:
            cur = conn.execute("SELECT value FROM meta WHERE name = 'zone'")
            row = cur.fetchone()
            return row[0] if row else None
        value = await self._run(q)
        if value is None:
            return None
        zone, gateway, limit, epoch, validators = unpack(value, 1 << 20)
        return (LedgerRules(zone, gateway, limit, committee=tuple(validators), committee_epoch=epoch),
                Committee(zone, epoch, tuple(validators)))

    # --- whole-store checks ----------------------------------------------------------------

    async def load_state(self, rules: LedgerRules) -> tuple[LedgerState, dict[tuple[bytes, int], Signed[Entry]]]:
        """The state derived from every stored certified entry, and those that wait for others."""
        pending = {(s.body.account, s.body.seq): s for s in await self.all_entries()}
        state = LedgerState()
        apply_ready(state, pending, rules)
        return state, pending

    async def verify(self, rules: LedgerRules, committee: Committee | None = None) -> VerifyReport:
        """Check the whole store: every entry is in its certificate's leaves, every certificate's
        leaves hash to its root (and its signatures verify, given the committee), heads match
        the chains, and state derivation succeeds. Raises ``StoreCorrupt``."""
        def q(conn: sqlite3.Connection) -> tuple[list[Any], list[Any], list[Any]]:
            cur = conn.execute("SELECT batch_root, certificate, leaves FROM certificates")
            certs = cur.fetchall()
            cur = conn.execute("SELECT account, seq, hash, batch_root, data FROM entries ORDER BY account, seq")
            entries = cur.fetchall()
            cur = conn.execute("SELECT account, next_seq, last_hash FROM heads")
            heads = cur.fetchall()
            return certs, entries, heads

        cert_rows, entry_rows, head_rows = await self._run(q)
        leaves_of: dict[bytes, set[bytes]] = {}
        for root, cert_bytes, leaves_blob in cert_rows:
            cert = decode(Certificate, cert_bytes, 1 << 20)
            leaves = _split_leaves(leaves_blob)
            if cert.batch_root != root or len(leaves) != cert.batch_size or batch_root(leaves) != root:
                raise StoreCorrupt(f"certificate {root.hex()[:16]} does not match its leaves")
            if committee is not None:
                try:
                    verify_certificate(committee, cert)
                except CertificateInvalid as exc:
                    raise StoreCorrupt(f"certificate {root.hex()[:16]}: {exc}") from None
            leaves_of[root] = set(leaves)
        signed_entries = []
        for account, seq, h, root, data in entry_rows:
            signed = decode_certified_entry(data)
            if (signed.body.account, signed.body.seq) != (account, seq) or entry_hash(signed) != h:
                raise StoreCorrupt(f"entry row {account.hex()[:8]}#{seq} does not match its data")
            if h not in leaves_of.get(root, ()):
                raise StoreCorrupt(f"entry {account.hex()[:8]}#{seq} is not in its certificate")
            signed_entries.append(signed)
        pending = {(s.body.account, s.body.seq): s for s in signed_entries}
        state = LedgerState()
        try:
            apply_ready(state, pending, rules)
        except ChainInconsistent as exc:
            raise StoreCorrupt(str(exc)) from None
        for account, next_seq, last_hash in head_rows:
            head = state.head(account)
            if (head.next_seq, head.last_hash) != (next_seq, last_hash):
                if not pending:
                    raise StoreCorrupt(f"head of {account.hex()[:8]} disagrees with its chain")
        if state.money_total() != 0:
            raise StoreCorrupt(f"money is not conserved: total {state.money_total()}")
        return VerifyReport(len(entry_rows), len(cert_rows), len(head_rows), state_root(state), len(pending))

    async def aclose(self) -> None:
        # Shielded: a cancelled close would leave the database open (and its WAL unmerged).
        with trio.CancelScope(shield=True):
            await self._run(lambda conn: conn.close())


# Worker threads all stores of this process (one trio run) may use at once: their own pool, so
# other thread users (the telemetry store, name resolution) never queue ledger writes behind
# theirs, and bounded, so a process hosting many nodes (simnet) does not start a thread per node.
SQLITE_THREADS = 16
_SQLITE_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("p2pgrid_sqlite_threads")


def _sqlite_threads() -> trio.CapacityLimiter:
    try:
        return _SQLITE_LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(SQLITE_THREADS)
        _SQLITE_LIMITER.set(limiter)
        return limiter


def _advance_heads(conn: sqlite3.Connection, accounts: Sequence[bytes]) -> None:
    """Move each account's head over the contiguous entries stored beyond it."""
    heads: dict[bytes, tuple[int, bytes]] = {
        a: (n, h) for a, (n, h) in _select_in(
            conn, "SELECT account, next_seq, last_hash FROM heads WHERE account IN", accounts, pairs=False).items()}
    for i in range(0, len(accounts), 500):
        chunk = accounts[i:i + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT e.account, e.seq, e.hash FROM entries e LEFT JOIN heads h ON h.account = e.account "
            f"WHERE e.account IN ({marks}) AND e.seq >= COALESCE(h.next_seq, 0) ORDER BY e.account, e.seq",
            chunk).fetchall()
        for account, seq, h in rows:
            next_seq, _ = heads.get(account, (0, GENESIS_HASH))
            if seq == next_seq:
                heads[account] = (seq + 1, h)
    conn.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?)", [(a, n, h) for a, (n, h) in heads.items()])


def _select_in(conn: sqlite3.Connection, query: str, keys: Sequence[bytes], pairs: bool = True) -> dict[bytes, Any]:
    """``query (?, ?, …)`` over ``keys`` in chunks; rows keyed by their first column."""
    out: dict[bytes, Any] = {}
    for i in range(0, len(keys), 500):
        chunk = list(keys[i:i + 500])
        for row in conn.execute(f"{query} ({','.join('?' * len(chunk))})", chunk).fetchall():
            out[row[0]] = row[1] if pairs else tuple(row[1:])
    return out


def _split_leaves(blob: bytes) -> tuple[bytes, ...]:
    return tuple(blob[i:i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE))


@asynccontextmanager
async def asyncio_bridge() -> AsyncIterator[None]:
    """The trio-asyncio loop aiosqlite needs: the caller's if one is running, else a new one for
    the block. Every SQLite store of the node (ledger, telemetry) opens through this."""
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield


@asynccontextmanager
async def open_store(path: str | Path) -> AsyncIterator[LedgerStore]:
    """Open (creating if needed) the ledger database at ``path``; closes it on exit."""
    def connect() -> sqlite3.Connection:
        # Used from trio's worker threads, one call at a time (``LedgerStore._run``).
        conn = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(SCHEMA)
            conn.commit()
        except BaseException:
            conn.close()
            raise
        return conn

    store = LedgerStore(await trio.to_thread.run_sync(connect, limiter=_sqlite_threads()))
    try:
        yield store
    finally:
        await store.aclose()
