"""A zone with three metered homes and ten days of evening history, built on a pure ledger state
(entries signed and processed one by one, as a validator would): shared by the flex ledger tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pgrid.flex.entries import (
    FLEX_AWARD_KIND, FLEX_OFFER_KIND, FLEX_REQUEST_KIND, FLEX_SETTLE_KIND, FlexRequest, compute_award,
    compute_flex_settle, compute_request_id, plan_offer,
)
from p2pgrid.flex.rules import Direction
from p2pgrid.flex.testing import EventCalendar, MeterBook, registration_v2
from p2pgrid.ledger.chain import LedgerState, process_entry
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.entries import METER_KIND, METER_REGISTRATION_V2_KIND

FIX = LedgerFixture(zone="flexzone")
CAL = EventCalendar()
HOMES = ("ana", "ben", "cai")
EVENING_WH = {"ana": 1000, "ben": 800, "cai": 600}     # net import per 15-minute slot, every evening
EXPORT_W = {"ana": 4000, "ben": 4000, "cai": 3000}     # 1000, 1000 and 750 Wh per slot
PRICES = {"ana": 200_000, "ben": 150_000, "cai": 250_000}
REQUEST_WH = 1500
CAP_PRICE = 300_000
PENALTY = 100_000
LIMITS = {"ana": (900, 900), "ben": (700, 500), "cai": (600, 600)}   # what each home's devices allow
KEYS = {name: seeded_key(f"flex-{name}") for name in HOMES}
GATEWAY = FIX.gateway


@dataclass
class World:
    state: LedgerState = field(default_factory=LedgerState)
    meters: dict[str, MeterBook] = field(default_factory=dict)
    log: list = field(default_factory=list)          # every entry processed, in order

    def write(self, key, kind, body, time_ms):
        entry = FIX.entry_on(self.state, key, kind, body, time_ms)
        self.state = process_entry(self.state, entry, FIX.rules)
        self.log.append(entry)
        return entry

    def entry(self, key, kind, body, time_ms):
        """A signed entry on the current state, not processed."""
        return FIX.entry_on(self.state, key, kind, body, time_ms)

    def meter(self, name, slot, import_wh, export_wh=0):
        book = self.meters[name]
        return self.write(KEYS[name], METER_KIND, book.body(slot, import_wh, export_wh), book.reading_created_ms(slot))

    @property
    def account(self):
        return {name: KEYS[name].public_key for name in HOMES}


def request_terms(nonce: int = 1, qty_wh: int = REQUEST_WH, **changes) -> FlexRequest:
    terms = dict(request_id=compute_request_id(GATEWAY.public_key, FIX.zone, nonce), zone=FIX.zone, feeder="feeder-1",
                 direction=Direction.DOWN, first_slot=CAL.first_slot, n_slots=CAL.n_slots, qty_wh=qty_wh,
                 price_uc_per_kwh=CAP_PRICE, penalty_uc_per_kwh=PENALTY, offer_deadline_ms=CAL.offer_deadline_ms)
    terms.update(changes)
    return FlexRequest(**terms)


def metered_world(days: int = 10) -> World:
    """Registrations and ``days`` evenings of history for every home."""
    world = World()
    for name in HOMES:
        meter_key = seeded_key(f"flex-{name}-meter")
        world.meters[name] = MeterBook(KEYS[name].public_key, meter_key, FIX.zone)
        world.write(GATEWAY, METER_REGISTRATION_V2_KIND,
                    registration_v2(GATEWAY.public_key, KEYS[name].public_key, meter_key.public_key, FIX.zone,
                                    EXPORT_W[name]), 0)
    for name in HOMES:
        for _, slot in CAL.history_slots(days):
            world.meter(name, slot, EVENING_WH[name])
    return world


def requested_world() -> tuple[World, FlexRequest]:
    world = metered_world()
    terms = request_terms()
    world.write(GATEWAY, FLEX_REQUEST_KIND, terms, CAL.request_ms)
    return world, terms


def offer(world: World, name: str, terms: FlexRequest, limit=(10_000, 10_000), time_ms=None):
    body = plan_offer(world.state, FIX.rules, KEYS[name].public_key, world.meters[name].key.public_key,
                      terms.request_id, PRICES[name], limit)
    return world.write(KEYS[name], FLEX_OFFER_KIND, body, time_ms or CAL.at(14))


def awarded_world() -> tuple[World, FlexRequest]:
    world, terms = requested_world()
    for name in HOMES:
        offer(world, name, terms)
    world.write(GATEWAY, FLEX_AWARD_KIND, compute_award(world.state, terms.request_id), CAL.award_ms)
    return world, terms


def settle(world: World, terms: FlexRequest):
    return world.write(GATEWAY, FLEX_SETTLE_KIND, compute_flex_settle(world.state, FIX.rules, terms.request_id),
                       CAL.settle_ms)


def limited_award_world() -> tuple[World, FlexRequest]:
    """Offers sized by ``LIMITS``: ben (cheapest) fills first, ana next, cai takes the rest."""
    world, terms = requested_world()
    for name in HOMES:
        offer(world, name, terms, LIMITS[name])
    world.write(GATEWAY, FLEX_AWARD_KIND, compute_award(world.state, terms.request_id), CAL.award_ms)
    return world, terms


def delivered_world() -> tuple[World, FlexRequest]:
    """``limited_award_world`` delivered and settled: ana and ben cut their import, cai's second
    reading comes after the settle and is reconciled."""
    world, terms = limited_award_world()
    for name, (first, second) in {"ana": (200, 100), "ben": (100, 300)}.items():
        world.meter(name, CAL.slots[0], first)
        world.meter(name, CAL.slots[1], second)
    world.meter("cai", CAL.slots[0], 600)
    settle(world, terms)
    world.meter("cai", CAL.slots[1], 450)
    settle(world, terms)
    return world, terms
