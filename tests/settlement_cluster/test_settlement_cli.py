"""``p2pgrid settle show``, ``statement`` and ``certs``: rendering and the commands on a real database."""

import io

import pytest
import trio
from rich.console import Console

from p2pgrid.cli.main import main
from p2pgrid.cli.settlement import (
    NotSettled, parse_day, parse_slot, render_certificates, render_settlement, render_statement,
)
from p2pgrid.ledger.messages import entry_hash
from p2pgrid.ledger.store import open_store
from p2pgrid.settlement.entries import SETTLE_KIND, certificate_registry, compute_settlement

from test_settle_entries_ledger import BUYER, DUE_MS, FIX, GATEWAY, LOG, NO_METER, SELLER, SLOT, run, traded_and_metered


def table_rows(text: str) -> dict[str, list[str]]:
    """Rows of the rendered tables, keyed by their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells:
            rows[cells[0]] = cells
    return rows


def rendered(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


@pytest.fixture
def settled_state():
    LOG.clear()   # LOG collects the entries this state is built from (written to a database below)
    state = traded_and_metered()
    run(state, GATEWAY, SETTLE_KIND, compute_settlement(state, FIX.rules, SLOT)[0], DUE_MS)
    return state


def test_slot_and_day_arguments_parse_as_utc():
    assert parse_slot(str(SLOT)) == SLOT
    assert parse_slot("2027-01-15T08:00") == SLOT
    assert parse_day("2027-01-15") == 1_799_971_200


def test_settle_show_renders_each_account_with_its_net_and_the_certificates(settled_state):
    text = rendered(render_settlement(settled_state, SLOT))
    rows = table_rows(text)
    assert rows[NO_METER.public_key.hex()[:8]][1] == "none=0"     # no meter entry: zero delivery
    assert rows[SELLER.public_key.hex()[:8]][2:5] == ["1500", "0", "1200"]
    assert GATEWAY.public_key.hex()[:8] + " gw" in rows
    assert "1200 Wh issued" in text and "800 Wh retired" in text


def test_settle_show_of_an_unsettled_slot_is_one_clear_error(settled_state):
    with pytest.raises(NotSettled, match="not settled"):
        render_settlement(settled_state, SLOT + 900)


def test_statement_of_one_account_and_of_all(settled_state):
    day = SLOT - SLOT % 86_400
    one = rendered(render_statement(settled_state, day, BUYER.public_key))
    assert table_rows(one)["unused_purchase"] == ["unused_purchase", "0.016000"]   # 200 Wh at 0.08/kWh
    assert "net for the day" in one
    everyone = rendered(render_statement(settled_state, day))
    assert NO_METER.public_key.hex()[:8] in table_rows(everyone) and "1 settled slots" in everyone
    assert "0 settled slots" in rendered(render_statement(settled_state, day + 86_400))


def test_certs_lists_issued_held_and_retired_units(settled_state):
    text = rendered(render_certificates(certificate_registry(settled_state)))
    assert "1200 issued, 800 retired" in text
    rows = table_rows(text)
    assert rows[SELLER.public_key.hex()[:8]][1:4] == ["1200", "0", "0"]
    assert rows[BUYER.public_key.hex()[:8]][1:5] == ["0", "0", "800", "800"]
    assert rows[NO_METER.public_key.hex()[:8]][1:4] == ["0", "400", "0"]   # received, never consumed: held


async def _write_database(path, entries):
    async with open_store(path) as store:
        await store.save_zone(FIX.rules, FIX.committee)
        batch = FIX.certify(entries)
        await store.add_certified([(batch.certificate, [entry_hash(s) for s in entries], entries)])


def test_commands_read_a_node_database(settled_state, tmp_path, capsys):
    db = tmp_path / "ledger.sqlite"
    trio.run(_write_database, db, list(LOG))
    assert main(["settle", "show", "--slot", str(SLOT), "--db", str(db)]) == 0
    assert "none=0" in capsys.readouterr().out
    assert main(["certs", "--db", str(db), "--account", BUYER.public_key.hex()[:10]]) == 0
    assert BUYER.public_key.hex()[:8] in capsys.readouterr().out
    assert main(["statement", "--day", "2027-01-15", "--db", str(db)]) == 0
    assert main(["settle", "show", "--slot", str(SLOT + 900), "--db", str(db)]) == 1
    assert "not settled" in capsys.readouterr().err
