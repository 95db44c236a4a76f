"""A node's run logs: append-only JSON lines and small JSON status files in its data dir.

The trading strategies (``agent.profile_trader``, ``agent.agent_trader``) and the test-only fault
controls (``p2pgrid.testing.faults``) write them; simnet reads them back to check and score a run:

* ``orders.jsonl`` (``ORDERS_LOG``) — every signed order placed (and every buy request, as an
  unpublished signed bid), with the real time it was placed (``log_order``);
* ``trades.jsonl`` (``TRADES_LOG``) — every execution of a buy, with its real-time latency;
* ``faults.jsonl`` (``FAULTS_LOG``) — every fault command executed, and its outcome;
* ``agent.json`` (``AGENT_STATUS``) — the strategy's counters, replaced atomically.

Each line is written and fsynced whole; a line cut short by a crash is skipped when read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ORDERS_LOG = "orders.jsonl"
TRADES_LOG = "trades.jsonl"
AGENT_STATUS = "agent.json"
FAULTS_LOG = "faults.jsonl"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``path`` (a line cut short by a crash is skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def log_order(data_dir: Path, signed_encoded: bytes, kind: str, real_ms: int) -> None:
    append_jsonl(Path(data_dir) / ORDERS_LOG, {"kind": kind, "signed": signed_encoded.hex(), "real_ms": real_ms})


def real_ms() -> int:
    """The wall clock in Unix ms: when a run-log record was written (market time is another matter)."""
    return time.time_ns() // 1_000_000
