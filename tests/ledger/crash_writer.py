"""Child process for the crash-safety test: a validator that votes and acknowledges forever.

    python crash_writer.py DB RUN

Each round it proposes new gateway entries whose content depends on RUN (so a new run proposes
*different* entries at the seqs a killed run may have voted on), asks the voting rule, records
the votes durably, prints ``VOTE <seq> <hash>`` for each vote it sends, certifies the batch with
the fixture's keys, stores it, and prints ``ACK <seq> <hash>`` for each entry once committed.
The parent kills it with SIGKILL at random points.
"""

import sys

import trio

from p2pgrid.ledger.chain import RejectReason, apply_entry, conflict_keys
from p2pgrid.ledger.committee import decide_vote
from p2pgrid.ledger.messages import Mint, entry_hash
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.wire import decode_signed

FX = LedgerFixture()
RECEIVER = seeded_key("receiver").public_key


def say(line: str) -> None:
    """One line, in one write, flushed: what the parent reads is exactly what was sent."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(db: str, run: int) -> None:
    async with open_store(db) as store:
        state, _ = await store.load_state(FX.rules)
        voted = {key: h for key, (h, _, _) in (await store.votes()).items()}
        round_no = 0
        while True:
            round_no += 1
            head = state.head(FX.gateway.public_key)
            batch = []
            for i in range(1 + round_no % 4):
                entry = FX.entry(FX.gateway, head, "mint", Mint(RECEIVER, 1 + run * 1000 + round_no * 10 + i))
                head = type(head)(head.next_seq + 1, entry_hash(entry))
                batch.append(entry)
            decision = decide_vote(state, voted, [e.encoded for e in batch], FX.rules, 0)
            if decision.rejections:
                first = decision.rejections[0]
                if first.reason != RejectReason.ALREADY_VOTED.value or first.index != 0:
                    raise SystemExit(f"unexpected rejection {first}")
                # A vote from before the crash binds us: continue with the entry we voted for.
                key = conflict_keys(batch[0].body)[0]
                batch = [decode_signed(await store.voted_entry(key))]
                decision = decide_vote(state, voted, [batch[0].encoded], FX.rules, 0)
            await store.record_votes(decision.new_records, {entry_hash(e): e for e in batch})
            voted.update(decision.new_records)
            for e in batch:
                say(f"VOTE {e.body.seq} {entry_hash(e).hex()}")
            certified = FX.certify(batch)
            await store.add_certified([(certified.certificate, [entry_hash(e) for e in batch], batch)])
            for e in batch:
                apply_entry(state, e, FX.rules)
                say(f"ACK {e.body.seq} {entry_hash(e).hex()}")


if __name__ == "__main__":
    trio.run(main, sys.argv[1], int(sys.argv[2]))
