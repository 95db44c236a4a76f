"""What a station and a driver write next about charging (pure planners), replayed against the
ledger rules: whatever they plan is valid, bills nothing twice, and ends with every session settled."""

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.charging.rules import ChargeReading, plan_charge_bill, session_of, sessions, tariffs
from p2pgrid.charging.plan import (
    BILL_MARGIN_MS, ConnectorSession, billable_wh, PlannedCharge, ReadingToSign, StationTerms, driver_actions, match_sessions,
    station_actions,
)
from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.units import trade_value
from p2pgrid.wire import sign

NOW = 1_800_000_000_000
MIN = 60_000
STATION = seeded_key("plan-station")
CONNECTORS = [seeded_key(f"plan-connector-{i}") for i in range(2)]
DRIVERS = [seeded_key(f"plan-driver-{i}") for i in range(3)]
PRICE = 400_000


class World:
    def __init__(self):
        self.fx = LedgerFixture()
        self.state = LedgerState()
        self.terms = StationTerms(self.fx.zone, PRICE, tuple(k.public_key for k in CONNECTORS), 22_000, 40_000, 30)
        for key in (STATION, *DRIVERS):
            self.write(self.fx.gateway, "mint", Mint(to=key.public_key, amount=100_000_000), NOW)

    def write(self, key, kind, body, now):
        if isinstance(body, ReadingToSign):
            connector = CONNECTORS[body.connector]
            reading = sign(ChargeReading(charger_key=connector.public_key, station=STATION.public_key,
                                         session_id=body.session_id, meter_start_wh=body.meter_start_wh,
                                         meter_stop_wh=body.meter_stop_wh, started_ms=body.started_ms,
                                         ended_ms=body.ended_ms), connector)
            body = plan_charge_bill(self.state, reading)
        process_entry(self.state, self.fx.entry_on(self.state, key, kind, body, now), self.fx.rules)

    def step(self, log, plans, now):
        """Every node writes what its planner says (each action must be valid)."""
        for action in station_actions(self.state, STATION.public_key, self.terms, log, now):
            self.write(STATION, action.kind, action.body, now)
        for key in DRIVERS:
            mine = [p for p in plans if p[0] == key]
            for action in driver_actions(self.state, key.public_key, [p[1] for p in mine], now):
                self.write(key, action.kind, action.body, now)


def test_the_station_opens_one_tariff_and_renews_it_a_day_before_it_closes():
    world = World()
    world.step([], [], NOW)
    world.step([], [], NOW + 1000)
    assert len(tariffs(world.state, STATION.public_key)) == 1
    until = tariffs(world.state)[0].terms.until_ms
    world.step([], [], until - 25 * 3600 * 1000)
    assert len(tariffs(world.state)) == 1
    world.step([], [], until - 23 * 3600 * 1000)
    assert len(tariffs(world.state)) == 2


def test_a_planned_charge_is_started_billed_from_the_log_and_never_started_twice():
    world = World()
    world.step([], [], NOW)
    driver = DRIVERS[0]
    plan = PlannedCharge(STATION.public_key, NOW + 10 * MIN, NOW + 70 * MIN, 8_000)
    log = [ConnectorSession(1, driver.public_key, NOW + 10 * MIN, NOW + 70 * MIN, 6_500)]
    world.step(log, [(driver, plan)], NOW + 5 * MIN)            # not yet
    assert not sessions(world.state)
    world.step(log, [(driver, plan)], NOW + 11 * MIN)           # plugged in
    world.step(log, [(driver, plan)], NOW + 40 * MIN)           # still charging: no second start, no bill
    (session,) = sessions(world.state)
    assert not session.billed and session.deadline_ms == NOW + 70 * MIN + BILL_MARGIN_MS
    world.step(log, [(driver, plan)], NOW + 71 * MIN)
    session = session_of(world.state, session.session_id)
    billed = 6_500 * 59 // 60                    # plugged in a minute into the charge: that minute is not billed
    assert session.billed and session.delivered_wh == billed and session.amount_uc == trade_value(billed, PRICE)


def _started(driver, plan):
    world = World()
    world.step([], [], NOW)
    for action in driver_actions(world.state, driver.public_key, [plan], NOW + MIN):
        world.write(driver, action.kind, action.body, NOW + MIN)
    return world


def test_the_station_declines_a_session_it_left_unbilled_at_its_deadline():
    driver = DRIVERS[1]
    plan = PlannedCharge(STATION.public_key, NOW, NOW + 60 * MIN, 5_000)
    world = _started(driver, plan)
    (session,) = sessions(world.state)
    late = session.deadline_ms
    kinds = [a.kind for a in station_actions(world.state, STATION.public_key, world.terms, [], late - 1)]
    assert "decline" not in kinds                             # it may still bill (here: zero, no car)
    actions = [a for a in station_actions(world.state, STATION.public_key, world.terms, [], late) if a.kind == "decline"]
    assert len(actions) == 1
    world.write(STATION, "decline", actions[0].body, late)
    assert world.state.balance(driver.public_key) == 100_000_000
    assert driver_actions(world.state, driver.public_key, [plan], late) == []       # nothing left to release


def test_the_driver_releases_only_once_the_stations_chain_has_passed_the_deadline():
    from p2pgrid.ledger.messages import Transfer
    driver = DRIVERS[1]
    plan = PlannedCharge(STATION.public_key, NOW, NOW + 60 * MIN, 5_000)
    world = _started(driver, plan)
    late = NOW + 60 * MIN + BILL_MARGIN_MS
    assert driver_actions(world.state, driver.public_key, [plan], late + 3_600_000) == []   # the station may bill
    world.write(STATION, "transfer", Transfer(to=world.fx.gateway.public_key, amount=1), late)
    actions = driver_actions(world.state, driver.public_key, [plan], late)
    assert [a.kind for a in actions] == ["release"]
    world.write(driver, "release", actions[0].body, late)
    assert world.state.balance(driver.public_key) == 100_000_000


def test_a_session_with_no_car_in_the_log_is_billed_zero_after_the_grace():
    world = World()
    world.step([], [], NOW)
    driver = DRIVERS[2]
    plan = PlannedCharge(STATION.public_key, NOW, NOW + 60 * MIN, 5_000)
    world.step([], [(driver, plan)], NOW + MIN)                 # started; the log has no car of this driver
    world.step([], [(driver, plan)], NOW + 15 * MIN)            # within the grace: the log may still report it
    (session,) = sessions(world.state)
    assert not session.billed
    world.step([], [(driver, plan)], NOW + 16 * MIN)
    session = session_of(world.state, session.session_id)
    assert session.billed and session.delivered_wh == 0 and world.state.balance(driver.public_key) == 100_000_000


def test_sessions_match_log_entries_by_driver_and_time_each_entry_once():
    world = World()
    world.step([], [], NOW)
    a, b = DRIVERS[0].public_key, DRIVERS[1].public_key
    log = [ConnectorSession(0, a, NOW, NOW + 60 * MIN, 1_000), ConnectorSession(1, a, NOW, NOW + 60 * MIN, 2_000)]
    tariff = tariffs(world.state)[0]
    from p2pgrid.charging.rules import plan_charge_start
    for key, nonce in ((DRIVERS[0], 1), (DRIVERS[0], 2), (DRIVERS[1], 3), (DRIVERS[0], 4)):
        world.write(key, "charge_start", plan_charge_start(tariff, key.public_key, 5_000, nonce, NOW + nonce * MIN,
                                                          NOW + 5 * 3600_000), NOW + nonce * MIN)
    matched = match_sessions(sessions(world.state), log)
    got = sorted((s.plugged_in_ms, s.driver, matched[s.session_id]) for s in sessions(world.state))
    assert [m.connector if m else None for _, _, m in got] == [0, 1, None, None]
    assert got[2][1] == b


STEPS = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1), st.integers(0, 600), st.integers(5, 240),
                           st.integers(0, 30_000), st.integers(1, 40_000)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(charges=STEPS, stride=st.integers(1, 90))
def test_planned_community_charging_is_always_valid_and_settles_every_session(charges, stride):
    """Random charges (driver, connector, start, minutes, energy, escrow): every action the planners
    take is accepted by the rules (process_entry raises otherwise), and after the last deadline every
    session is billed at min(energy, escrow) or, without a car, at zero."""
    world = World()
    log, plans = [], []
    for driver, connector, start, minutes, energy, escrow in charges:
        begin, end = NOW + start * MIN, NOW + (start + minutes) * MIN
        energy = min(energy, 22_000 * minutes // 60)             # what the connector can deliver
        if not any(c.connector == connector and c.start_ms < end and begin < c.end_ms for c in log):
            log.append(ConnectorSession(connector, DRIVERS[driver].public_key, begin, end, energy))
        plans.append((DRIVERS[driver], PlannedCharge(STATION.public_key, begin, end, escrow)))
    now = NOW
    last = max(p.end_ms for _, p in plans) + BILL_MARGIN_MS
    while now <= last + stride * MIN:
        world.step(log, plans, now)
        assert world.state.money_total() == 0
        now += stride * MIN
    state = world.state
    matched = match_sessions(sessions(state), log)
    for session in sessions(state):
        charge = matched[session.session_id]
        if session.billed:
            expected = billable_wh(charge, session, 22_000) if charge else 0
            assert session.delivered_wh == expected <= session.max_wh
            if charge and session.plugged_in_ms == charge.start_ms:
                assert expected == min(charge.energy_wh, session.max_wh)
        else:                                                    # declined: the station missed it
            assert state.locks[session.session_id].status.value != "open"
    assert state.balance(STATION.public_key) == 100_000_000 + sum(s.amount_uc for s in sessions(state))
    counters = {}
    for session in sorted(sessions(state), key=lambda s: s.ended_ms):
        if session.billed and session.delivered_wh:
            counters[session.charger_key] = counters.get(session.charger_key, 0) + session.delivered_wh
    assert all(replace(s) == s for s in sessions(state))
    for key, sold in counters.items():
        from p2pgrid.charging.rules import charger_counter
        assert charger_counter(state, key, STATION.public_key) == charger_counter(state, key) == sold
