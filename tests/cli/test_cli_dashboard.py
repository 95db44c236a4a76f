"""Dashboards render to plain text at 80 columns: nothing cut, signs in words, stale values as "—"."""

import io

from rich.console import Console

from p2pgrid.cli.dashboard import render_cluster, render_config_summary, render_node_dashboard
from p2pgrid.cli.node_commands import dashboard_rows, full_identity_lines, order_outcome_lines
from p2pgrid.identity import NodeKey
from p2pgrid.node.api import peer_id_base58
from p2pgrid.node.status import DeviceLine, NodeStatus, OwnOrderLine, SlotPrices, TradeLine

SLOT = 1_800_000_900   # 2027-01-15 08:15 UTC


def render(renderable, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def status(**changes) -> NodeStatus:
    fields = dict(
        name="n0-station", role="station", zone="local", account="ab" * 32, pid=4242, state="running",
        listen_addrs=("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc",), peers=4, orders_seen=17,
        orders_by_slot={SLOT: 12, SLOT + 900: 5}, rejects={"bad_signature": 3, "expired": 1}, ignored={"not_yet_valid": 2},
        orders_published=9, batches_received=6, market_now_ms=SLOT * 1000 - 3_600_000, updated_wall_ms=0,
    )
    fields.update(changes)
    return NodeStatus(**fields)


def test_node_dashboard_shows_peers_orders_per_slot_and_rejects_by_reason_with_the_developer_flag():
    assert "rejects by reason" not in render(render_node_dashboard(status()))
    text = render(render_node_dashboard(status(), developer=True))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "n0-station" in text and "station, zone local" in text
    assert "4 connected" in text
    assert "08:15" in text and "12" in text and "08:30" in text
    assert "bad_signature" in text and "3" in text and "expired" in text
    assert "not_yet_valid (ignored)" in text
    assert "orders seen 17" in text and "published 9" in text
    assert "2027-01-15 07:15:00 UTC" in text


def test_node_dashboard_with_no_orders_and_no_rejects():
    text = render(render_node_dashboard(status(orders_by_slot={}, rejects={}, ignored={}, orders_seen=0),
                                        developer=True))
    assert "none" in text and "orders seen 0" in text


def test_cluster_table_has_a_row_per_node_including_ones_not_started():
    text = render(render_cluster([status(), None], ["n0-station", "n1-household"], caption="5 s left"))
    assert "n0-station" in text and "n1-household" in text and "starting" in text
    assert "4" in text and "17" in text and "5 s left" in text
    row = next(line for line in text.splitlines() if "n0-station" in line)
    assert row.split("│")[4].strip() == "4" and row.split("│")[7].strip() == "4"   # peers, rejects (3 + 1)


def test_status_round_trips_through_its_json_file_form():
    original = status()
    assert NodeStatus.from_json(original.to_json()) == original


def test_config_summary_for_a_stopped_node():
    text = render(render_config_summary("home", "household", "local", "/data/home", None))
    assert "not running" in text and "sealed keystore" in text


from hypothesis import given, settings
from hypothesis import strategies as st

counters = st.dictionaries(st.from_regex(r"[a-z_]{1,16}", fullmatch=True), st.integers(0, 10**9), max_size=5)


@settings(max_examples=30, deadline=None)
@given(by_slot=st.dictionaries(st.integers(0, 2**40).map(lambda n: n * 900), st.integers(0, 10**6), max_size=20),
       rejects=counters, ignored=counters, peers=st.integers(0, 10**4))
def test_any_status_round_trips_and_renders_within_80_columns(by_slot, rejects, ignored, peers):
    original = status(orders_by_slot=by_slot, rejects=rejects, ignored=ignored, peers=peers)
    assert NodeStatus.from_json(original.to_json()) == original
    assert all(len(line) <= 80 for line in render(render_node_dashboard(original, developer=True)).splitlines())


# --- what a person needs ----------------------------------------------------------------------

KEY = NodeKey(bytes(range(32)))
PEER_ID = peer_id_base58(KEY.public_key)
NOW_MS = SLOT * 1000 - 3_600_000
BUYER = "cd" * 32


def person_status(**changes) -> NodeStatus:
    fields = dict(
        account=KEY.account, peer_id=PEER_ID, ledger=True, ledger_height=152, balance_uc=12_345_600,
        listen_addrs=(f"/ip4/127.0.0.1/tcp/40123/p2p/{PEER_ID}",),
        own_orders=(OwnOrderLine("a1b2c3d4" * 4, SLOT, "sell", 500, 100, 230_000),),
        best_prices=(SlotPrices(SLOT, 210_000, 500, 230_000, 1_000), SlotPrices(SLOT + 900, None, 0, 240_000, 200)),
        recent_trades=(TradeLine(NOW_MS - 60_000, SLOT, "sold", 250, 220_000, 55_000, BUYER),
                       TradeLine(NOW_MS - 120_000, SLOT, "bought", 100, 200_000, 20_000, "ef" * 32)),
        devices=(DeviceLine("meter", "meter", -262, NOW_MS - 240_000, True),
                 DeviceLine("pv", "pv", 1200, NOW_MS, False),
                 DeviceLine("battery", "battery", -338, NOW_MS, False, 46.6, 10_000),
                 DeviceLine("load", "load", None, 0, True)),
        notices=("RPC off ([rpc] enabled = false): `p2pgrid order place`, `book`, `trade` and `trades` cannot "
                 "reach this node",),
    )
    fields.update(changes)
    return status(**fields)


def test_the_dashboard_at_80_columns_shows_money_orders_prices_trades_and_devices_in_words():
    text = render(render_node_dashboard(person_status()))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in text                                   # nothing cut by the terminal width
    assert any(KEY.account in line for line in lines)        # ids whole, on one line each
    assert any(PEER_ID in line for line in lines)
    assert "/ip4/127.0.0.1/tcp/40123" in text
    assert "balance" in text and "12.345600 cr" in text and "152 entries" in text and "4 connected" in text
    assert "sell 500 Wh at 0.2300 cr/kWh, 100 Wh filled" in text
    assert "0.2100 cr/kWh · 500 Wh" in text and "0.2400 cr/kWh · 200 Wh" in text
    assert "sold 250 Wh at 0.2200 cr/kWh, received 0.055000 cr, to cdcdcdcd" in text
    assert "bought 100 Wh at 0.2000 cr/kWh, paid 0.020000 cr, from efefefef" in text
    assert "-0.0" not in text                                # a sale is words, not a negative number
    assert "grid: + import, − export" in text and "battery: − charging, + discharging" in text
    assert "— (stale: last -262 W 4 min ago)" in text       # a stale meter is not 0 W
    assert "1,200 W generating" in text and "338 W charging, SoC 47 % of 10.0 kWh" in text
    assert "— (stale: no good reading yet)" in text
    assert "! RPC off" in text
    assert "orders seen" not in text                         # developer counters need --dev


def test_the_dashboard_of_a_node_without_a_ledger_says_so_and_shows_no_market():
    text = render(render_node_dashboard(person_status(ledger=False, ledger_height=0)))
    assert "none (no validators in [zone])" in text
    assert "balance" not in text and "next slot" not in text


def test_status_with_every_field_round_trips_through_its_json_file_form():
    original = person_status()
    assert NodeStatus.from_json(original.to_json()) == original


def test_status_full_prints_every_id_and_address_whole():
    lines = full_identity_lines(person_status())
    assert f"account {KEY.account}" in lines and f"peer_id {PEER_ID}" in lines
    assert f"listen /ip4/127.0.0.1/tcp/40123/p2p/{PEER_ID}" in lines


def test_a_placed_order_says_where_it_went():
    alone = order_outcome_lines(peers=0, ledger=False, zone="local")
    assert "(0 peers connected)" in alone[0]
    assert any("nobody sees this order" in line for line in alone)
    assert any("nobody can take it" in line for line in alone)
    assert order_outcome_lines(peers=3, ledger=True, zone="local") == [
        "signed and queued for the next gossip batch of zone local (3 peers connected)"]


@settings(max_examples=30, deadline=None)
@given(width=st.integers(80, 160), trades=st.integers(0, 8), stale=st.booleans())
def test_any_person_status_renders_without_cutting_ids(width, trades, stale):
    base = person_status()
    shown = person_status(recent_trades=base.recent_trades[:1] * trades,
                          devices=tuple(DeviceLine(d.name, d.kind, d.power_w, d.at_ms, stale) for d in base.devices))
    text = render(render_node_dashboard(shown), width)
    assert all(len(line) <= width for line in text.splitlines())
    assert "…" not in text and KEY.account in text and PEER_ID in text


def test_the_live_dashboard_fits_its_lists_to_the_terminal_height():
    assert dashboard_rows(24) == 1 and dashboard_rows(30) == 4 and dashboard_rows(40) == 8 and dashboard_rows(10) == 1
