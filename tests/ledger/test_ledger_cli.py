"""``p2pgrid ledger head|show|balance|verify`` on a ledger database, rendered to plain text."""

import argparse
import io

import pytest
import trio
from rich.console import Console

from p2pgrid.cli import ledger as cli
from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import ChainHead
from p2pgrid.ledger.messages import Mint, entry_hash
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key

FX = LedgerFixture()
ALICE = seeded_key("alice")


def parse(argv):
    parser = argparse.ArgumentParser(prog="p2pgrid")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(argv):
    console = Console(file=io.StringIO(), width=120, color_system=None)
    args = parse(argv)
    code = args.func(args, console)
    return code, console.file.getvalue()


@pytest.fixture
def db(tmp_path):
    async def build():
        head, entries = ChainHead(), []
        for i in range(3):
            signed = FX.entry(FX.gateway, head, "mint", Mint(ALICE.public_key, 1_000_000 * (i + 1)))
            head = ChainHead(head.next_seq + 1, entry_hash(signed))
            entries.append(signed)
        async with open_store(tmp_path / "ledger.sqlite") as store:
            await store.save_zone(FX.rules, FX.committee)
            batch = FX.certify(entries)
            await store.add_certified([(batch.certificate, [entry_hash(e) for e in entries], entries)])
    trio.run(build)
    return tmp_path / "ledger.sqlite"


def test_head_shows_height_and_state_root(db):
    code, out = run(["ledger", "head", "--db", str(db)])
    assert code == 0 and "3 entries" in out and "state root" in out


def test_show_lists_an_accounts_entries_by_prefix(db):
    code, out = run(["ledger", "show", FX.gateway.public_key.hex()[:10], "--data-dir", str(db.parent)])
    assert code == 0 and out.count("mint") == 3 and "amount=2000000" in out


def test_balance_of_one_account_in_credits(db):
    code, out = run(["ledger", "balance", ALICE.public_key.hex(), "--db", str(db)])
    assert code == 0 and "6.000000" in out


def test_verify_reports_ok(db):
    code, out = run(["ledger", "verify", "--db", str(db)])
    assert code == 0 and out.startswith("ok: 3 entries in 1 certificates")


def test_a_missing_database_is_one_clear_error(tmp_path):
    with pytest.raises(LedgerError, match="no ledger database"):
        run(["ledger", "verify", "--db", str(tmp_path / "nope.sqlite")])


def test_an_unknown_or_ambiguous_account_prefix_is_refused(db):
    with pytest.raises(LedgerError, match="0 accounts match"):
        run(["ledger", "show", "zz", "--db", str(db)])
    with pytest.raises(LedgerError, match="accounts match"):
        cli.resolve_account("a", [b"\xaa" * 32, b"\xab" * 32])
