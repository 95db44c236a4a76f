"""Dashboards render to plain text at 80 columns."""

import io

from rich.console import Console

from p2pgrid.cli.dashboard import render_cluster, render_config_summary, render_node_dashboard
from p2pgrid.node.status import NodeStatus

SLOT = 1_800_000_900   # 2027-01-15 08:15 UTC


def render(renderable) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
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


def test_node_dashboard_shows_peers_orders_per_slot_and_rejects_by_reason():
    text = render(render_node_dashboard(status()))
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "n0-station" in text and "station, zone local" in text
    assert "peers" in text and " 4 " in text
    assert "08:15" in text and "12" in text and "08:30" in text
    assert "bad_signature" in text and "3" in text and "expired" in text
    assert "not_yet_valid (ignored)" in text
    assert "orders seen 17" in text and "published 9" in text
    assert "2027-01-15 07:15:00 UTC" in text


def test_node_dashboard_with_no_orders_and_no_rejects():
    text = render(render_node_dashboard(status(orders_by_slot={}, rejects={}, ignored={}, orders_seen=0)))
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
    assert all(len(line) <= 80 for line in render(render_node_dashboard(original)).splitlines())
