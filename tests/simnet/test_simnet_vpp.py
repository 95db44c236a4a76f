"""The VPP study on a small winter feeder: every step on the ledger rules, the replay agrees, and
the figures add up (``simnet.vpp``)."""

import json

from simnet.vpp import VppScenario, ledger_flexibility, run_vpp


def test_a_small_feeder_is_requested_offered_awarded_delivered_and_settled(tmp_path):
    kpis = run_vpp(VppScenario(homes=12, battery_share=0.5, history_days=6), tmp_path)
    f = kpis["flexibility"]
    assert json.loads((tmp_path / "kpis.json").read_text()) == kpis
    assert (tmp_path / "report.html").read_text().count("<tr>") == 1 + len(f["by_node"]) + 1 + len(f["feeder_wh"]["slots"])
    assert f["ledger"]["replayed_equal"] and f["ledger"]["money_total"] == 0
    request = f["request"]
    assert 0 < f["awarded_wh"] <= request["requested_wh"] and f["offers"] >= len(f["by_node"])
    lines = f["by_node"].values()
    assert f["paid_wh"] == sum(v["paid_wh"] for v in lines) <= f["awarded_wh"]
    assert all(v["paid_wh"] <= min(v["awarded_wh"], v["delivered_wh"]) for v in lines)
    assert all(v["net_uc"] == v["payment_uc"] - v["penalty_uc"] for v in lines)
    # The series: the VPP only ever lowers the event slots' feeder load (the EV's rebound comes after).
    series = f["feeder_wh"]
    first = series["slots"].index(request["first_slot"])
    event = range(first, first + request["slots"])
    assert all(series["with"][j] <= series["without"][j] for j in event)
    assert f["peak_without_w"] - f["peak_with_w"] == f["peak_reduction_w"] >= 0
    assert sum(series["without"]) - sum(series["with"]) == sum(v.get("battery_wh", 0) + v.get("ev_after_window_wh", 0)
                                                              for v in lines)


def test_a_run_without_requests_has_a_null_flexibility_kpi():
    assert ledger_flexibility(None) == {"value": None, "reason": "no flexibility requests"}
