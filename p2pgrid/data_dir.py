"""One node per data dir: an exclusive lock held while a node runs, and who owns what in it.

A node's data dir holds its key, its ledger database and the files other programs read
(``status.json``, ``rpc.json``, ``metrics.json``). Two nodes on one dir would sign with the same key,
write the same database and overwrite each other's endpoint files, so ``hold_data_dir`` takes an
exclusive ``flock`` on ``<data_dir>/node.lock`` for the node's lifetime; a second node gets
``DataDirInUse`` (one line, naming the holder's pid). The kernel drops the lock when its holder
exits, even on SIGKILL, so a crashed node never leaves the dir locked. The lock file itself stays:
removing it would let a third node lock a fresh file while the second still holds the old one.

Files that name a running process (``rpc.json`` …) carry its ``pid``; ``pid_alive`` tells a reader
whether that process still exists (a SIGKILLed node cannot remove its files).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from p2pgrid.errors import ConfigError

LOCK_FILE = "node.lock"


class DataDirInUse(ConfigError):
    """Another running node holds this data dir."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True      # exists, owned by someone else
    return True


@contextmanager
def hold_data_dir(data_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``data_dir`` while the block runs (creating the dir if needed)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise DataDirInUse(f"data dir {data_dir} is in use by another node (pid {holder}); "
                               "stop that node or give this one its own data dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)     # closing the descriptor releases the lock


def check_data_dir_free(data_dir: Path) -> None:
    """Raise ``DataDirInUse`` now if another node holds ``data_dir`` (to fail before opening ports)."""
    with hold_data_dir(data_dir):
        pass


__all__ = ["DataDirInUse", "LOCK_FILE", "check_data_dir_free", "hold_data_dir", "pid_alive"]
