"""A flexibility request on a live ledger: the zone operator posts it, three homes' flex services
offer from their devices' limits, the operator's awards in merit order, the homes' meters report
the evening, the operator settles (and reconciles a reading certified late) — and every node
derives the same state root, on the memory transport and on real libp2p hosts."""

import time

import pytest
import trio

from p2pgrid.flex.entries import award_of, compute_request_id, offers_of, settlement_of_request
from p2pgrid.flex.plan import DEFAULT_SETTLE_DELAY_MS, OfferPolicy
from p2pgrid.flex.rules import Direction
from p2pgrid.flex.entries import FlexRequest
from p2pgrid.flex.service import FlexService
from p2pgrid.flex.testing import EventCalendar, MeterBook
from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.service import EntryInDoubt
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.net.testing import wait_until
from p2pgrid.settlement.entries import METER_KIND
from p2pgrid.settlement.service import register_meters
from p2pgrid.trading.testing import open_trading_cluster

CAL = EventCalendar(day=int(time.time()) // 86_400 + 1)
HOMES = {1: "ana", 2: "ben", 3: "cai"}     # validators too: a committee of four, nothing more
EVENING_WH = {"ana": 1000, "ben": 800, "cai": 600}
PRICES = {"ana": 200_000, "ben": 150_000, "cai": 250_000}
LIMITS = {"ana": (900, 900), "ben": (700, 500), "cai": (600, 600)}


class SteppedClock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


async def submit_meter(node, book: MeterBook, slot: int, import_wh: int) -> None:
    await submit_all(node, [node.ledger.next_entry(METER_KIND, book.body(slot, import_wh))])


async def submit_all(node, entries) -> None:
    """Submit a chain's entries at once (the ledger batches them) and wait until all are certified."""
    async def submit(entry):
        try:
            await node.ledger.submit(entry)
        except EntryInDoubt:
            pass            # the ledger keeps proposing it: wait below

    async with trio.open_nursery() as nursery:
        for entry in entries:
            nursery.start_soon(submit, entry)
    with trio.fail_after(60):
        await wait_until(lambda: node.ledger.state.head(node.account).next_seq > entries[-1].body.seq)


async def converge(nodes) -> None:
    with trio.fail_after(60):
        await wait_until(lambda: len({n.ledger.state.height for n in nodes}) == 1
                         and len({state_root(n.ledger.state) for n in nodes}) == 1)
    assert all(n.ledger.state.money_total() == 0 for n in nodes)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["memory", "libp2p"])
async def test_a_request_is_offered_awarded_delivered_and_settled_with_equal_state_roots(kind, tmp_path):
    clock = SteppedClock(CAL.request_ms)
    async with open_trading_cluster(kind, 4, tmp_path, clock=clock) as nodes:
        operator = nodes[0]
        homes = {name: nodes[i] for i, name in HOMES.items()}
        books = {name: MeterBook(node.account, seeded_key(f"cluster-{name}-meter"), node.zone)
                 for name, node in homes.items()}
        with trio.fail_after(60):
            await register_meters(operator.ledger, [(books[n].account, books[n].key.public_key) for n in homes],
                                  clock(), export_w={books[n].key.public_key: 4000 for n in homes})
        await converge(nodes)

        async def history(name):
            await submit_all(homes[name], [homes[name].ledger.next_entry(METER_KIND, books[name].body(slot, EVENING_WH[name]))
                                           for _, slot in CAL.history_slots(5)])

        async with trio.open_nursery() as nursery:
            for name in homes:
                nursery.start_soon(history, name)
        await converge(nodes)

        services = {"operator": FlexService(operator.ledger, clock, poll_s=0.05)}
        for name, node in homes.items():
            policy = OfferPolicy(books[name].key.public_key, PRICES[name], lambda request, n=name: LIMITS[n])
            services[name] = FlexService(node.ledger, clock, policy=policy, poll_s=0.05)
        async with trio.open_nursery() as nursery:
            for service in services.values():
                await nursery.start(service.run)
            terms = FlexRequest(request_id=compute_request_id(operator.account, operator.zone, 1), zone=operator.zone,
                                feeder="feeder-1", direction=Direction.DOWN, first_slot=CAL.first_slot,
                                n_slots=CAL.n_slots, qty_wh=1500, price_uc_per_kwh=300_000, penalty_uc_per_kwh=100_000,
                                offer_deadline_ms=CAL.offer_deadline_ms)
            with trio.fail_after(60):
                while not await services["operator"].post_request(terms):
                    await trio.sleep(0.1)    # in doubt on a busy machine: round() offers it again
                # Every home offers from its limits before the deadline.
                await wait_until(lambda: len(offers_of(operator.ledger.state, terms.request_id)) == 3)
            clock.now_ms = CAL.award_ms
            with trio.fail_after(60):
                await wait_until(lambda: all(award_of(n.ledger.state, terms.request_id) for n in nodes))
            lines = {line.account: line.awarded_wh for line in award_of(operator.ledger.state, terms.request_id).award.lines}
            assert lines == {homes["ben"].account: (700, 500), homes["ana"].account: (800, 900),
                             homes["cai"].account: (0, 100)}

            # The evening: ana and ben cut their import; cai's second reading comes late.
            clock.now_ms = (CAL.slots[-1] + 900) * 1000 + 20_000
            for name, readings in {"ana": (200, 100), "ben": (100, 300), "cai": (600,)}.items():
                for slot, wh in zip(CAL.slots, readings):
                    await submit_meter(homes[name], books[name], slot, wh)
            clock.now_ms = CAL.settle_ms + DEFAULT_SETTLE_DELAY_MS
            with trio.fail_after(60):
                await wait_until(lambda: all(settlement_of_request(n.ledger.state, terms.request_id) for n in nodes))
            await converge(nodes)
            first = settlement_of_request(operator.ledger.state, terms.request_id)
            assert [first.line(homes[n].account).net_uc for n in ("ana", "ben", "cai")] == [340_000, 180_000, -10_000]

            # cai's reading, taken in time, certified after the settle: the operator reconciles.
            await submit_meter(homes["cai"], books["cai"], CAL.slots[1], 450)
            with trio.fail_after(60):
                await wait_until(lambda: all(settlement_of_request(n.ledger.state, terms.request_id)
                                             .line(homes["cai"].account).metered_slots == (0, 1) for n in nodes))
            await converge(nodes)
            nursery.cancel_scope.cancel()
        state = operator.ledger.state
        final = settlement_of_request(state, terms.request_id)
        assert final.line(homes["cai"].account).net_uc == 25_000
        # Each entry written once, whatever the retries (an entry in doubt is offered again, never replaced).
        assert await flex_kinds(operator) == {"flex_request": 1, "flex_award": 1, "flex_settle": 2}
        for node in homes.values():
            assert await flex_kinds(node) == {"flex_offer": 1}


async def flex_kinds(node) -> dict[str, int]:
    """How many entries of each flex kind the node's certified chain holds."""
    head = node.ledger.state.head(node.account).next_seq
    entries = await node.ledger.store.account_entries(node.account, 0, head)
    kinds = [e.body.kind for e in entries if e.body.kind.startswith("flex_")]
    return {kind: kinds.count(kind) for kind in sorted(set(kinds))}
