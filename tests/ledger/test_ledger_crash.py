"""Crash safety: SIGKILL a validator at random points; nothing acknowledged is lost, the store
verifies, and no (account, seq) ever got two different votes, across any number of crashes."""

import os
import random
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import trio

from p2pgrid.ledger.messages import entry_hash
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture

WRITER = Path(__file__).with_name("crash_writer.py")
RUNS = 20
FX = LedgerFixture()


async def check_store(db, acked):
    async with open_store(db) as store:
        report = await store.verify(FX.rules, FX.committee)
        for seq, h in acked.items():
            entry = await store.get_entry(FX.gateway.public_key, seq)
            assert entry is not None, f"acknowledged entry {seq} is missing after the crash"
            assert entry_hash(entry).hex() == h
        return report, await store.votes()


def record(line, acked, votes_sent):
    """Note one complete ``ACK|VOTE seq hash`` line; a line cut short by the kill was never sent."""
    parts = line.split()
    if not line.endswith("\n") or len(parts) != 3 or len(parts[2]) != 64:
        return
    kind, seq, h = parts
    if kind == "ACK":
        acked[int(seq)] = h
    else:
        votes_sent[int(seq)].add(h)


def test_sigkill_at_random_points_loses_no_acknowledged_entry_and_never_votes_twice(tmp_path):
    rng = random.Random(20261122)
    db = str(tmp_path / "ledger.sqlite")
    acked: dict[int, str] = {}
    votes_sent: defaultdict[int, set[str]] = defaultdict(set)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    for run in range(RUNS):
        child = subprocess.Popen([sys.executable, str(WRITER), db, str(run)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=env)
        lines_before_kill = rng.randrange(0, 25)
        for _ in range(lines_before_kill):
            line = child.stdout.readline()
            if not line:
                break
            record(line, acked, votes_sent)
        child.send_signal(signal.SIGKILL)
        out, err = child.communicate()
        assert child.returncode == -signal.SIGKILL, err
        for line in out.splitlines(keepends=True):     # what it sent between our last read and the kill
            record(line, acked, votes_sent)
        report, votes = trio.run(check_store, db, acked)
        assert report.pending == 0
    assert len(acked) > RUNS, "the writer should have acknowledged entries in most runs"
    twice = {seq: hs for seq, hs in votes_sent.items() if len(hs) > 1}
    assert not twice, f"voted twice at seqs {sorted(twice)}"
    for seq, h in acked.items():
        assert votes_sent[seq] == {h}
