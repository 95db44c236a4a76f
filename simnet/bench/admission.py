"""``python -m simnet.bench admission``: what order admission adds to validating an order.

Order admission (``p2pgrid.trading.admission``) runs inside the order-gossip validator, on the
gossip hot path. This measures, on ``--orders`` signed orders of ``--owners`` registered and funded
owners spread over the tradable slots (half offers, half bids), packed ``--per-batch`` to a batch:

* validate: CPU time per order of ``OrderBatchValidator.validate`` without a gate and with one
  (decoding, signatures, time rules, replay cache, and admission);
* judge: CPU time per order of ``AdmissionGate.judge`` alone, on decoded orders (the part
  admission adds), with as many orders tracked as were admitted before it.

Every figure is the best of ``--repeats`` runs in CPU time of this process (the machine is
shared). Benchmarks measure; nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import time

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LedgerRules, LedgerState
from p2pgrid.net.testing import make_order
from p2pgrid.net.validation import OrderBatchValidator, OrderRules
from p2pgrid.settlement.metering import MeterRegistrationV2
from p2pgrid.trading.admission import AdmissionGate, LedgerFacts
from p2pgrid.units import SlotRules
from p2pgrid.wire import MAX_BATCH_BYTES, OrderBatch, Side, Signed, Source, decode, decode_signed, encode, sign

ZONE = "bench"
NOW = 1_700_000_000_000
_clock = time.process_time


def _ledger(owners: list[NodeKey]) -> tuple[LedgerState, LedgerRules]:
    gateway = NodeKey(b"\x01" * 32)
    state = LedgerState()
    for key in owners:
        state.extra[f"meter_account/{key.public_key.hex()}"] = MeterRegistrationV2(
            gateway.public_key, key.public_key, os.urandom(32), ZONE, NOW, 10**8)
        state.balances[key.public_key] = 10**15
    return state, LedgerRules(ZONE, gateway.public_key)


def _batches(owners: list[NodeKey], rules: OrderRules, orders: int, per_batch: int) -> list[tuple[bytes, bytes]]:
    slots = rules.slot_rules.tradable_slots(NOW)
    out = []
    number = 0
    for b in range(orders // per_batch):
        key = owners[b % len(owners)]
        items = []
        for _ in range(per_batch):
            number += 1
            side = Side.SELL if number % 2 else Side.BUY
            order = make_order(key, rules, NOW, number, slot=slots[number % len(slots)], side=side,
                               source=Source.PV if side is Side.SELL else Source.NONE, green=side is Side.SELL,
                               qty_wh=100, limit_price=200_000)
            items.append(sign(order, key).encoded)
        out.append((encode(OrderBatch(ZONE, NOW, tuple(items))), key.public_key))
    return out


def _best(repeats: int, run: object) -> float:
    return min(run() for _ in range(repeats))  # type: ignore[operator]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet.bench admission", description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--owners", type=int, default=200)
    parser.add_argument("--per-batch", type=int, default=1, help="orders per gossip batch (1 … 256)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    owners = [NodeKey(os.urandom(32)) for _ in range(args.owners)]
    rules = OrderRules(ZONE, SlotRules())
    state, ledger_rules = _ledger(owners)
    batches = _batches(owners, rules, args.orders, args.per_batch)
    count = len(batches) * args.per_batch

    def gate() -> AdmissionGate:
        return AdmissionGate(LedgerFacts(lambda: state, lambda: ledger_rules), rules.slot_rules)

    def validate(with_gate: bool) -> float:
        validator = OrderBatchValidator(rules, admission=gate() if with_gate else None)
        start = _clock()
        for data, sender in batches:
            validator.validate(data, sender, NOW)
        return (_clock() - start) / count * 1e6

    decoded: list[Signed] = [decode_signed(item) for data, _ in batches
                             for item in decode(OrderBatch, data, MAX_BATCH_BYTES).items]

    def judge() -> float:
        admission = gate()
        start = _clock()
        for signed in decoded:
            admission.judge(signed, NOW)
        return (_clock() - start) / count * 1e6

    without = _best(args.repeats, lambda: validate(False))
    with_gate = _best(args.repeats, lambda: validate(True))
    alone = _best(args.repeats, judge)
    print(f"{count} orders of {args.owners} owners, {args.per_batch} per batch (CPU µs per order, best of "
          f"{args.repeats}):")
    print(f"  validate without admission  {without:8.1f}")
    print(f"  validate with admission     {with_gate:8.1f}   (+{with_gate - without:.1f}, "
          f"{(with_gate - without) / without * 100:+.1f} %)")
    print(f"  AdmissionGate.judge alone   {alone:8.1f}")
    return 0
