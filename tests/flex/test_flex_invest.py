"""Flexibility in the investment statement: a node's payments and penalties, the requester's cost."""

from p2pgrid.invest.statement import account_flows, statement_for

from flex_world import CAL, FIX, GATEWAY, KEYS, PENALTY, PRICES, delivered_world


def test_flexibility_is_a_revenue_stream_and_a_reconciliation_moves_only_the_difference():
    world, _ = delivered_world()
    ana = statement_for(world.log, FIX.rules, KEYS["ana"].public_key)
    assert ana.streams["flexibility"] == 1700 * PRICES["ana"] // 1000 and ana.energy_wh["flexibility"] == 1700
    # cai: charged 100 Wh of penalty at the first settle, refunded and paid 100 Wh by the reconciliation.
    cai = statement_for(world.log, FIX.rules, KEYS["cai"].public_key)
    assert (cai.streams["flexibility"], cai.streams["flexibility_penalties"]) == (100 * PRICES["cai"] // 1000, 0)
    settles = [(f.stream, f.amount_uc) for f in account_flows(world.log, FIX.rules, KEYS["cai"].public_key).flows
               if f.kind == "flex_settle"]
    assert settles == [("flexibility_penalties", -100 * PENALTY // 1000),
                       ("flexibility", 100 * PRICES["cai"] // 1000), ("flexibility_penalties", 100 * PENALTY // 1000)]
    gateway = statement_for(world.log, FIX.rules, GATEWAY.public_key)
    assert gateway.streams["flexibility_bought"] == -(340_000 + 180_000 + 25_000)
    for statement in (ana, cai, gateway):
        assert statement.streams["other"] == 0
        assert statement.closing_uc == world.state.balance(statement.account)
    # The flows are dated at the event (the request's first slot).
    window = statement_for(world.log, FIX.rules, KEYS["ana"].public_key, start_s=CAL.first_slot,
                           end_s=CAL.first_slot + 1)
    assert window.streams["flexibility"] == ana.streams["flexibility"]


def test_the_simnet_flexibility_kpi_reads_the_certified_settlements():
    from simnet.vpp import ledger_flexibility

    world, _ = delivered_world()
    kpi = ledger_flexibility(world.state)
    assert (kpi["requests"], kpi["offers"], kpi["awarded_wh"], kpi["paid_wh"], kpi["delivered_wh"]) == (1, 3, 3000, 3000,
                                                                                                      3050)
    assert (kpi["payments_uc"], kpi["penalties_uc"]) == (340_000 + 180_000 + 25_000, 0)
    assert kpi["by_account"][KEYS["cai"].public_key.hex()] == 25_000
