"""The RPC's flex views and ``flex_request`` over a node's certified state (p2pgrid.flex.api)."""

import pytest

from p2pgrid.flex.api import FlexApi
from p2pgrid.ledger.chain import EntryRejected, process_entry
from p2pgrid.rpc.api import FlexRequestOrder, FlexRequestStatus

from flex_world import CAL, FIX, GATEWAY, HOMES, KEYS, PENALTY, awarded_world, settle


class StubLedger:
    """What ``FlexApi`` uses of a ``LedgerService``: the certified state and a submit that certifies."""

    def __init__(self, world, key, clock):
        self.world, self.key, self.clock = world, key, clock
        self.rules, self.me = FIX.rules, key.public_key

    @property
    def state(self):
        return self.world.state

    def next_entry(self, kind, body):
        return FIX.entry_on(self.world.state, self.key, kind, body, self.clock.now_ms())

    async def submit(self, entry):
        process_entry(self.world.state, entry, FIX.rules)


class StubClock:
    def __init__(self, now_ms):
        self.now = now_ms

    def now_ms(self):
        return self.now


class StubNode:
    def __init__(self, world, key, now_ms):
        self.clock = StubClock(now_ms)
        self.ledger = StubLedger(world, key, self.clock)


async def test_views_follow_a_request_from_open_to_settled():
    world, terms = awarded_world()
    ben = StubNode(world, KEYS["ben"], CAL.award_ms)
    [request] = await FlexApi(ben).requests()
    assert (request.status, request.offers, request.awarded_wh) == (FlexRequestStatus.AWARDED, 3, 3000)
    [own] = await FlexApi(ben).offers(None)
    assert own.awarded_wh == (1500, 1500) and own.baseline_wh == (800, 800)
    assert len(await FlexApi(ben).offers(terms.request_id)) == 3
    assert [a.account for a in await FlexApi(ben).awards(terms.request_id)] == [KEYS["ben"].public_key]
    assert await FlexApi(StubNode(world, KEYS["ana"], CAL.award_ms)).awards(None) == []
    for name in HOMES:
        for slot in CAL.slots:
            world.meter(name, slot, 0)
    settle(world, terms)
    [line] = await FlexApi(ben).settlements(None)
    assert (line.paid_wh, line.short_wh, line.net_uc) == (1600, 1400, 1600 * 150_000 // 1000 - 1400 * PENALTY // 1000)
    assert (await FlexApi(ben).requests())[0].status is FlexRequestStatus.SETTLED


async def test_a_request_is_checked_with_the_ledger_rule_before_it_is_signed():
    world, _ = awarded_world()
    order = FlexRequestOrder("feeder-2", "up", CAL.first_slot + 86_400, 4, 800, 250_000, 50_000,
                             CAL.offer_deadline_ms + 86_400_000)
    with pytest.raises(EntryRejected) as refused:
        await FlexApi(StubNode(world, KEYS["ana"], CAL.settle_ms)).request(order)
    assert "not_operator" in str(refused.value)
    view = await FlexApi(StubNode(world, GATEWAY, CAL.settle_ms)).request(order)
    assert (view.direction, view.n_slots, view.status) == ("up", 4, FlexRequestStatus.OPEN)
    late = FlexRequestOrder("feeder-2", "down", CAL.first_slot, 1, 800, 250_000, 0, CAL.offer_deadline_ms)
    with pytest.raises(EntryRejected, match="bad_terms"):
        await FlexApi(StubNode(world, GATEWAY, CAL.settle_ms)).request(late)
