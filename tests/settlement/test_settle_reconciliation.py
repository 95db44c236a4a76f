"""Settling a slot over the certified inputs a ``settle`` names, and reconciling it when inputs are
certified later (``p2pgrid.settlement.entries``): worked examples, then properties — money is
conserved and every green Wh certified once in whatever order entries arrive, and whether a
``meter`` or ``settle`` entry is valid never depends on extra certified entries of other chains."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pgrid.settlement.certificates import total_wh
from p2pgrid.ledger.chain import (
    EntryRejected, LedgerState, RejectReason, decode_body, derive_state, process_entry, state_root, validate_entry,
)
from p2pgrid.ledger.messages import MAX_BODY_BYTES, Fill, Lock, Mint, Transfer
from p2pgrid.ledger.testing import LedgerFixture, seeded_key
from p2pgrid.settlement.metering import MeterReading, MeterRegistration
from p2pgrid.settlement.rules import ImbalancePrices, Reason
from p2pgrid.settlement.entries import (
    METER_KIND, METER_REGISTRATION_KIND, SETTLE_KIND, MeterEntryBody, Posting, PostingBody, SettlementLedgerRules,
    SettleBody, SlotInputs, certificate_registry, certificates_of, compute_settlement, imbalance_postings, posted_by_reason,
    reconciliation_postings, settlement_of, slots_to_settle,
)
from p2pgrid.units import SlotRules, trade_value
from p2pgrid.wire import Source, sign

SLOT = 1_800_000_000 - 1_800_000_000 % 900
SLOTS = SlotRules()
TRADE_MS = (SLOT - 3_600) * 1000
METER_MS = SLOTS.slot_end_ms(SLOT) + 10_000
DUE_MS = SLOTS.metering_due_ms(SLOT)
SETTLE_MS = DUE_MS + 30_000                 # due + W
LATE_MS = DUE_MS + 600_000                  # a reading taken in time, certified ten minutes after the due
RETAIL, FEED_IN = 300_000, 80_000
CREDITS = 10_000_000

FIX = LedgerFixture(zone="reconzone")
FIX.rules = SettlementLedgerRules(FIX.zone, FIX.gateway.public_key, 0, slots=SLOTS,
                                  prices=ImbalancePrices(RETAIL, FEED_IN))
GATEWAY = FIX.gateway
PEOPLE = A, B, C, D = tuple(seeded_key(f"recon-{name}") for name in "abcd")
METERS = {key.public_key: seeded_key(f"recon-meter-{i}") for i, key in enumerate(PEOPLE)}


class Zone:
    """A settling zone: every entry is judged and applied as it is added, and logged."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.entries: list = []
        for key in PEOPLE:
            self.add(GATEWAY, "mint", Mint(key.public_key, CREDITS), TRADE_MS)
        for account, meter in METERS.items():
            self.add(GATEWAY, METER_REGISTRATION_KIND,
                     MeterRegistration(GATEWAY.public_key, account, meter.public_key, FIX.zone, 0), TRADE_MS)

    def signed(self, key, kind, body, time_ms):
        return FIX.entry_on(self.state, key, kind, body, time_ms)

    def add(self, key, kind, body, time_ms):
        signed = self.signed(key, kind, body, time_ms)
        process_entry(self.state, signed, FIX.rules)
        self.entries.append(signed)
        return signed

    def trade(self, take: bytes, seller, buyer, qty: int, price: int = 200_000, *, green: bool = True):
        self.add(buyer, "lock", Lock(take, seller.public_key, b"o" * 16, seller.public_key, 50_000, qty, price,
                                     trade_value(qty, price), (SLOT - 300) * 1000, slot=SLOT, green=green),
                 TRADE_MS)
        self.add(seller, "fill", Fill(take, buyer.public_key, b"o" * 16, qty, price), TRADE_MS)

    def meter(self, key, import_wh=0, export_wh=0, green_wh=0, *, time_ms=METER_MS, created_ms=METER_MS):
        return self.add(key, METER_KIND, reading(key, import_wh, export_wh, green_wh, created_ms), time_ms)

    def settle(self, inputs: SlotInputs | None = None, time_ms: int = SETTLE_MS):
        body, _ = compute_settlement(self.state, FIX.rules, SLOT, inputs)
        self.add(GATEWAY, SETTLE_KIND, body, time_ms)
        return body

    def balance(self, key) -> int:
        return self.state.balance(key.public_key)


def reading(key, import_wh=0, export_wh=0, green_wh=0, created_ms=METER_MS) -> MeterEntryBody:
    meter = METERS[key.public_key]
    return MeterEntryBody(sign(MeterReading(
        account=key.public_key, meter_key=meter.public_key, zone=FIX.zone, slot=SLOT, import_wh=import_wh,
        export_wh=export_wh, green_wh=green_wh, green_source=Source.PV if green_wh else Source.NONE,
        import_total_wh=import_wh, export_total_wh=export_wh, created_ms=created_ms), meter).encoded)


# --- worked examples -----------------------------------------------------------------------------

def test_a_late_reading_is_reconciled_and_the_seller_gets_back_its_shortfall_charge():
    """A sold 1000 Wh of green energy to B and delivered it, but A's reading (taken in time) was
    certified only after the gateway settled the slot at due + W:

        first settle (B's reading only)   A: shortfall 1000 Wh × 0.30 = −300 000 µc (an obligation)
                                          B: imported 1000 Wh = bought: 0
        A's reading certified late        export 1000 Wh, green 1000 Wh
        reconciliation (A and B named)    union: A delivered all, 0 µc; B 0 µc
                                          postings = union − posted = A: 0 − (−300 000) = +300 000
    """
    zone = Zone()
    zone.trade(b"\x01" * 16, A, B, 1_000)
    zone.meter(B, import_wh=1_000)
    before = {key: zone.balance(key) for key in (A, B)}
    first = zone.settle()
    assert first.meters == (B.public_key,) and first.postings == (PostingBody(A.public_key, -300_000),)
    assert zone.balance(A) - before[A] == -300_000
    assert zone.state.obligations(A.public_key) == 300_000          # owed, not taken from what A may spend
    assert zone.state.spendable(A.public_key) == before[A]
    assert total_wh(certificates_of(zone.state, SLOT).issued) == 0   # nothing metered green yet

    zone.meter(A, export_wh=1_000, green_wh=1_000, time_ms=LATE_MS, created_ms=DUE_MS - 1)
    assert slots_to_settle(zone.state, FIX.rules, LATE_MS) == [SLOT]
    second = zone.settle(time_ms=LATE_MS + 1)
    assert second.meters == tuple(sorted((A.public_key, B.public_key))) and second.trades == (b"\x01" * 16,)
    assert second.postings == (PostingBody(A.public_key, 300_000),)
    assert {key: zone.balance(key) - before[key] for key in (A, B)} == {A: 0, B: 0}
    assert zone.state.obligations(A.public_key) == 0, "the refund paid the charge back"
    assert zone.state.spendable(A.public_key) == before[A], "spending power never rises with a refund"
    assert zone.state.money_total() == 0
    certs = certificates_of(zone.state, SLOT)
    assert total_wh(certs.issued) == 1_000 and total_wh(certs.retired_by(B.public_key)) == 1_000
    assert certificate_registry(zone.state).issued_wh == 1_000      # the slot's certificates replaced, once
    assert slots_to_settle(zone.state, FIX.rules, LATE_MS + 1) == []


def test_reconciliation_postings_are_the_union_result_less_what_was_posted():
    """C bought 600 Wh from D. First settle: D unmetered (shortfall 600 × 0.30 = −180 000), C
    imported 900 (extra 300 × 0.30 = −90 000). Then D's reading (export 400) arrives:
    union: D shortfall 200 → −60 000, C extra import 300 → −90 000. Postings: D +120 000, C 0."""
    zone = Zone()
    zone.trade(b"\x02" * 16, D, C, 600, green=False)
    zone.meter(C, import_wh=900)
    first = zone.settle()
    assert {p.account: p.amount_uc for p in first.postings} == {D.public_key: -180_000, C.public_key: -90_000}
    previous = settlement_of(zone.state, SLOT)
    zone.meter(D, export_wh=400, time_ms=LATE_MS)
    body, union = compute_settlement(zone.state, FIX.rules, SLOT)
    assert {p.account: p.amount_uc for p in imbalance_postings(union)} == {D.public_key: -60_000,
                                                                           C.public_key: -90_000}
    assert reconciliation_postings(previous, union) == (Posting(D.public_key, 120_000),)
    assert body.postings == (PostingBody(D.public_key, 120_000),)
    assert posted_by_reason(previous, union, D.public_key) == {Reason.SHORTFALL: 120_000}
    zone.add(GATEWAY, SETTLE_KIND, body, LATE_MS)
    # Over both settles each account was posted exactly what one settle of the union posts.
    assert zone.state.balance(D.public_key) - CREDITS == trade_value(600, 200_000) - 60_000
    assert zone.state.balance(C.public_key) - CREDITS == -trade_value(600, 200_000) - 90_000
    assert zone.state.money_total() == 0


def test_certificates_are_not_issued_twice_across_reconciliation():
    zone = Zone()
    zone.trade(b"\x03" * 16, A, B, 500)
    zone.meter(A, export_wh=500, green_wh=700)
    zone.settle()
    zone.meter(B, import_wh=500, time_ms=LATE_MS)
    zone.settle(time_ms=LATE_MS)
    zone.meter(C, export_wh=100, green_wh=100, time_ms=LATE_MS + 1)
    zone.settle(time_ms=LATE_MS + 1)
    certs = certificates_of(zone.state, SLOT)
    assert total_wh(certs.issued) == 800                              # 700 + 100 green metered, once each
    assert len({r.batch for r in certs.issued}) == len(certs.issued) == 2
    assert total_wh(certs.retired_by(B.public_key)) == 500
    registry = certificate_registry(zone.state)
    assert registry.issued_wh == 800 and registry.retired_wh == 500


def test_invalid_reconciliations_leaving_out_a_settled_input_naming_nothing_new_or_posting_twice():
    zone = Zone()
    zone.trade(b"\x04" * 16, A, B, 300)
    zone.meter(A, export_wh=300)
    zone.meter(B, import_wh=400)                                     # 100 Wh extra: −30 000 µc
    body = zone.settle()
    assert body.postings == (PostingBody(B.public_key, -30_000),)
    zone.meter(C, import_wh=50, time_ms=LATE_MS)
    full, union = compute_settlement(zone.state, FIX.rules, SLOT)
    assert full.postings == (PostingBody(C.public_key, -15_000),)    # B's −30 000 is posted already
    dropped = replace(full, meters=tuple(m for m in full.meters if m != B.public_key))
    posting_twice = replace(full, postings=tuple(PostingBody(p.account, p.amount_uc)
                                                 for p in imbalance_postings(union)))
    for bad, match in ((body, "settled already over exactly these inputs"), (dropped, "leaves out 1"),
                       (posting_twice, "differs from the result over its named inputs")):
        with pytest.raises(EntryRejected, match=match) as info:
            process_entry(zone.state.overlay(), zone.signed(GATEWAY, SETTLE_KIND, bad, LATE_MS), FIX.rules)
        assert info.value.reason is RejectReason.BAD_BODY and info.value.is_final
    zone.add(GATEWAY, SETTLE_KIND, full, LATE_MS)
    assert zone.balance(C) == CREDITS - 15_000 and zone.balance(B) == CREDITS - trade_value(300, 200_000) - 30_000
    assert zone.state.obligations(B.public_key) == 30_000 and zone.state.obligations(C.public_key) == 15_000


def test_a_reconciliation_naming_an_input_not_certified_here_waits_then_applies_in_any_order():
    zone = Zone()
    zone.trade(b"\x05" * 16, A, B, 400)
    zone.meter(A, export_wh=400, green_wh=400)
    zone.settle()
    behind = zone.state.copy()                                       # a validator that lacks B's reading
    zone.meter(B, import_wh=300, time_ms=LATE_MS)
    body, _ = compute_settlement(zone.state, FIX.rules, SLOT)
    settle = FIX.entry_on(behind, GATEWAY, SETTLE_KIND, body, LATE_MS)
    with pytest.raises(EntryRejected) as info:
        validate_entry(behind, settle, FIX.rules)
    assert info.value.reason is RejectReason.MISSING_DEPENDENCY and not info.value.is_final
    validate_entry(zone.state, settle, FIX.rules)                    # the same entry, with B's reading: valid
    process_entry(zone.state, settle, FIX.rules)
    zone.entries.append(settle)
    for seed in range(5):
        entries = list(zone.entries)
        random.Random(seed).shuffle(entries)
        derived, pending = derive_state(entries, FIX.rules)
        assert pending == {} and state_root(derived) == state_root(zone.state)


def test_invalid_settle_or_reconciliation_by_anyone_but_the_gateway():
    zone = Zone()
    zone.trade(b"\x06" * 16, A, B, 100)
    zone.meter(A, export_wh=100)
    body, _ = compute_settlement(zone.state, FIX.rules, SLOT)
    for key in (A, C):                   # a party to the slot, or a bystander: the body is exact, still refused
        with pytest.raises(EntryRejected) as info:
            process_entry(zone.state.overlay(), zone.signed(key, SETTLE_KIND, body, SETTLE_MS), FIX.rules)
        assert info.value.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT and info.value.is_final
    zone.settle()
    zone.meter(B, import_wh=100, time_ms=LATE_MS)
    reconcile, _ = compute_settlement(zone.state, FIX.rules, SLOT)
    with pytest.raises(EntryRejected) as info:
        process_entry(zone.state.overlay(), zone.signed(B, SETTLE_KIND, reconcile, LATE_MS), FIX.rules)
    assert info.value.reason is RejectReason.WRONG_KIND_FOR_ACCOUNT


# --- properties ----------------------------------------------------------------------------------

METERED = st.tuples(st.integers(0, 3_000), st.integers(0, 3_000), st.integers(0, 3_000))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trades=st.lists(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE), st.integers(1, 2_000),
                                 st.booleans()), max_size=4),
       meters=st.lists(st.one_of(st.none(), METERED), min_size=4, max_size=4),
       rounds=st.lists(st.integers(0, 3), min_size=8, max_size=8), seed=st.integers(0, 2**16))
def test_money_is_conserved_and_certificates_issued_once_across_settle_and_reconciliation_in_any_order(
        trades, meters, rounds, seed):
    """Every input is signed in time, but reaches the gateway in one of four rounds: round r is
    certified there after the r-th settle of the slot (an account's entries arrive in chain order,
    so an entry arrives no earlier than the ones before it in its chain). The gateway settles,
    then reconciles after each round. Every account ends exactly where one settle of everything
    puts it, money sums to zero, each green Wh is certified once, and the entries applied in any
    order derive the same state."""
    world = Zone()
    base = len(world.entries)
    arrival: list[int] = []
    last: dict[bytes, int] = {}
    for i, (seller, buyer, qty, green) in enumerate(trades):
        if seller == buyer:
            continue
        r = max(rounds[i], last.get(seller.public_key, 0), last.get(buyer.public_key, 0))
        last[seller.public_key] = last[buyer.public_key] = r
        world.trade((100 + i).to_bytes(16, "big"), seller, buyer, qty, green=green)
        arrival += [r, r]                                         # the lock and the fill
    for j, (key, metered) in enumerate(zip(PEOPLE, meters)):
        if metered is not None:
            world.meter(key, *metered)
            arrival.append(max(rounds[4 + j], last.get(key.public_key, 0)))
    entries = world.entries[base:]

    one_shot = Zone()
    for signed in entries:
        process_entry(one_shot.state, signed, FIX.rules)
    one_shot.settle()
    zone = Zone()
    for r in range(4):
        arrived = [signed for signed, when in zip(entries, arrival) if when == r]
        if r and not arrived:
            continue
        for signed in arrived:
            process_entry(zone.state, signed, FIX.rules)
            zone.entries.append(signed)
        zone.settle(time_ms=SETTLE_MS + r * 60_000)

    assert zone.state.money_total() == 0
    for key in (*PEOPLE, GATEWAY):
        assert zone.balance(key) == one_shot.balance(key)
    assert settlement_of(zone.state, SLOT) == settlement_of(one_shot.state, SLOT)
    certs = certificates_of(zone.state, SLOT)
    assert certs == certificates_of(one_shot.state, SLOT)
    assert total_wh(certs.issued) == sum(m[2] for m in meters if m is not None)
    assert len({r.batch for r in certs.issued}) == len(certs.issued)
    shuffled = list(zone.entries)
    random.Random(seed).shuffle(shuffled)
    derived, pending = derive_state(shuffled, FIX.rules)
    assert pending == {} and state_root(derived) == state_root(zone.state)
    assert derived.money_total() == 0


def _verdict(state: LedgerState, signed) -> str:
    """``vote``, ``wait`` or ``refuse`` — what a validator holding ``state`` does with ``signed``."""
    try:
        validate_entry(state, signed, FIX.rules)
    except EntryRejected as exc:
        return "refuse" if exc.is_final else "wait"
    return "vote"


def _with_extras(zone: Zone, extras: list) -> LedgerState:
    """``zone``'s state plus the chosen extra entries of other chains (a fill only after its lock)."""
    state = zone.state.copy()
    for signed in extras:
        try:
            process_entry(state, signed, FIX.rules)
        except EntryRejected:
            pass          # a dependency not chosen: this validator simply lacks it
    return state


EXTRA = st.lists(st.integers(0, 5), unique=True, max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settled_first=st.booleans(), named=st.sets(st.sampled_from(("t1", "t2", "a", "b", "c", "d")), max_size=6),
       tamper=st.sampled_from(("none", "posting", "price", "unsorted")), few=EXTRA, more=EXTRA,
       created=st.sampled_from((METER_MS, DUE_MS - 1, DUE_MS, SLOTS.slot_end_ms(SLOT) - 1)),
       entry_late=st.booleans())
def test_validity_of_meter_and_settle_does_not_depend_on_extra_entries_of_other_chains(
        settled_first, named, tamper, few, more, created, entry_late):
    """A validator holding more certified entries of other chains never refuses what one holding
    fewer votes for, and never votes for what it refuses (verdicts only go wait → vote/refuse)."""
    zone = Zone()
    zone.trade(b"\x11" * 16, A, B, 700)
    zone.meter(A, export_wh=500, green_wh=500)
    if settled_first:
        zone.settle(SlotInputs(trades=frozenset({b"\x11" * 16}), meters=frozenset({A.public_key})))
    # Entries of other chains a validator may or may not hold (none of the gateway's, none of the
    # candidate meter entry's account D).
    pool = Zone()
    pool.state, pool.entries = zone.state.copy(), []
    pool.trade(b"\x12" * 16, C, B, 200, green=False)
    pool.meter(B, import_wh=900, time_ms=LATE_MS)
    pool.meter(C, import_wh=100, time_ms=LATE_MS)
    extras = pool.entries                                    # lock, fill, B's and C's readings
    extras = extras + [FIX.entry(A, zone.state.head(A.public_key), "transfer", Transfer(C.public_key, 5), LATE_MS)]
    fewer = [extras[i] for i in sorted(few) if i < len(extras)]
    more_set = [extras[i] for i in sorted(set(few) | set(more)) if i < len(extras)]
    small, large = _with_extras(zone, fewer), _with_extras(zone, more_set)

    # The candidate settle names a subset of every input that can exist, with exact postings
    # computed where all of them are certified (then maybe tampered with).
    everything = pool.state
    ids = {"t1": ("trades", b"\x11" * 16), "t2": ("trades", b"\x12" * 16), "a": ("meters", A.public_key),
           "b": ("meters", B.public_key), "c": ("meters", C.public_key), "d": ("meters", D.public_key)}
    chosen = {"trades": set(), "meters": set()}
    for name in named:
        kind, value = ids[name]
        if kind == "meters" and f"meter/{value.hex()}/{SLOT:015d}" not in everything.extra:
            continue      # D never metered: naming it could never become valid, tested elsewhere
        chosen[kind].add(value)
    inputs = SlotInputs(frozenset(chosen["trades"]), frozenset(), frozenset(chosen["meters"]))
    try:
        body, _ = compute_settlement(everything, FIX.rules, SLOT, inputs)
    except EntryRejected:
        return
    if tamper == "posting" and body.postings:
        body = replace(body, postings=(PostingBody(body.postings[0].account, body.postings[0].amount_uc + 1),)
                       + body.postings[1:])
    elif tamper == "price":
        body = replace(body, feed_in_price=FEED_IN + 1)
    elif tamper == "unsorted" and len(body.meters) > 1:
        body = replace(body, meters=tuple(reversed(body.meters)))
    settle = FIX.entry(GATEWAY, zone.state.head(GATEWAY.public_key), SETTLE_KIND, body, SETTLE_MS)
    meter = FIX.entry(D, zone.state.head(D.public_key), METER_KIND, reading(D, import_wh=10, created_ms=created),
                      LATE_MS if entry_late else max(created, METER_MS))
    for candidate in (settle, meter):
        before, after = _verdict(small, candidate), _verdict(large, candidate)
        if before != "wait":
            assert after == before, (candidate.body.kind, before, after)


def test_an_investment_statement_counts_a_reconciled_slot_once_and_explains_every_uc():
    """The reconciliation posts only the difference: statements read it as such (no stream counted
    twice, nothing left unexplained), for the account and for the gateway."""
    from p2pgrid.invest.statement import account_flows

    zone = Zone()
    zone.trade(b"\x01" * 16, A, B, 1_000)
    zone.meter(B, import_wh=1_000)
    zone.settle()
    zone.meter(A, export_wh=1_000, green_wh=1_000, time_ms=LATE_MS, created_ms=DUE_MS - 1)
    zone.settle(time_ms=LATE_MS + 1)
    for key in (A, GATEWAY):
        flows = account_flows(zone.entries, FIX.rules, key.public_key)
        settles = [f for f in flows.flows if f.kind == SETTLE_KIND]
        assert all(f.stream != "other" for f in settles), settles
        assert sum(f.amount_uc for f in flows.flows) == flows.balance_uc == zone.balance(key)
    a_settles = [f.amount_uc for f in account_flows(zone.entries, FIX.rules, A.public_key).flows
                 if f.kind == SETTLE_KIND]
    assert a_settles == [-300_000, 300_000]      # charged, then given back: once each


def test_a_settle_of_80_metered_accounts_fits_its_entry_and_is_not_refused_as_a_bad_body():
    # An entry body may take MAX_BODY_BYTES; decoding it with a stand-alone message's 4 KiB limit
    # refused every settle of more than ~50 postings for good.
    accounts = sorted(seeded_key(f"big-zone-{i}").public_key for i in range(80))
    body = SettleBody(SLOT, 1, 1, (), tuple(accounts), tuple(PostingBody(a, -1) for a in accounts))
    signed = FIX.entry_on(LedgerState(), GATEWAY, SETTLE_KIND, body, SETTLE_MS)
    assert 4096 < len(signed.body.body) <= MAX_BODY_BYTES
    assert decode_body(signed.body) == body
