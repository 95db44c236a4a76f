"""``p2pgrid ledger head|show|balance|verify`` on a ledger database, rendered to plain text."""

import argparse
import dataclasses
import enum
import io
import typing

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from p2pgrid.cli import ledger as cli
from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import KINDS, ChainHead
from p2pgrid.ledger.messages import Lock, Mint, entry_hash
from p2pgrid.ledger.store import open_store
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.node.entry_kinds import registered_kinds
from p2pgrid.settlement.entries import MeterEntryBody
from p2pgrid.settlement.metering import MeterReading
from p2pgrid.wire import Source, sign

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
    assert code == 0 and out.count("mint") == 3 and "amount=2.000000 cr" in out
    assert f"to={ALICE.public_key.hex()[:8]} " in out          # accounts as short ids, not bytes


def test_bodies_read_in_units_with_a_carried_meter_reading_decoded():
    lock = Lock(b"\x01" * 16, ALICE.public_key, b"\x02" * 16, ALICE.public_key, 1000, 250, 220_000, 55_000,
                1_800_000_000_000, slot=1_800_000_900)
    text = cli.describe_body(lock)
    assert f"seller={ALICE.public_key.hex()[:8]}" in text and "take_id=01010101" in text
    assert "qty_wh=250 Wh" in text and "price=0.220000 cr/kWh" in text and "amount=0.055000 cr" in text
    assert "deadline_ms=2027-01-15 08:00:00 UTC" in text and "slot=2027-01-15 08:15 UTC" in text
    reading = MeterReading(ALICE.public_key, FX.gateway.public_key, "local", 1_800_000_900, 1200, 0, 0, Source.NONE,
                           5000, 0, 1_800_000_000_000)
    meter = cli.describe_body(MeterEntryBody(sign(reading, FX.gateway).encoded))
    assert meter.startswith("reading={account=") and "import_wh=1,200 Wh" in meter and "green_source=none" in meter
    assert meter.endswith(", signed}")
    assert cli.describe_body(MeterEntryBody(b"garbage")) == "reading=<7 bytes>"


def unchecked(kind_type, values):
    """An instance built past the wire checks (describing must not rely on them)."""
    instance = object.__new__(kind_type)
    for name, value in values.items():
        object.__setattr__(instance, name, value)
    return instance


def values_of(kind_type):
    """Any value of a body field type (ranges ignored: describing must not depend on them)."""
    origin = typing.get_origin(kind_type)
    if origin is tuple:
        return st.lists(values_of(typing.get_args(kind_type)[0]), max_size=8).map(tuple)
    if dataclasses.is_dataclass(kind_type):
        hints = typing.get_type_hints(kind_type)
        return st.fixed_dictionaries({f.name: values_of(hints[f.name]) for f in dataclasses.fields(kind_type)}
                                     ).map(lambda kwargs: unchecked(kind_type, kwargs))
    if isinstance(kind_type, type) and issubclass(kind_type, enum.Enum):
        return st.sampled_from(list(kind_type))
    return {bool: st.booleans(), int: st.integers(-2**40, 2**62), str: st.text(max_size=12),
            bytes: st.sampled_from([0, 7, 16, 32, 64]).flatmap(lambda n: st.binary(min_size=n, max_size=n))}[kind_type]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_registered_kind_is_described_field_by_field_without_raw_bytes(data):
    kind = data.draw(st.sampled_from(registered_kinds()))
    body = data.draw(values_of(KINDS[kind].body_type))
    text = cli.describe_body(body)
    assert "b'" not in text and 'b"' not in text
    assert all(f"{f.name}=" in text for f in dataclasses.fields(body))


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
