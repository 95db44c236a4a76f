"""Protocol test vectors: p2pgrid's wire messages built from fixed keys and times, with verdicts.

    python tools/protocol_vectors.py             print the vectors (JSON) on stdout
    python tools/protocol_vectors.py --write     rewrite docs/protocol-vectors.json
    python tools/protocol_vectors.py --check     exit 1 if docs/protocol-vectors.json is stale

Run it with the project's Python from anywhere: it imports the ``p2pgrid`` of the repository it
lives in. Everything is deterministic — keys from fixed seeds, fixed times, ids written out, no
clock and no randomness (Ed25519 signatures are deterministic) — so the output is a function of
the code alone, and ``tests/test_protocol_vectors.py`` fails when the code and the checked-in file
disagree. A change to that file is a change of the wire protocol: review its diff as one.

Every encoding, signature, hash and verdict below is computed by the production functions
(``wire.sign``, ``net.validation.validate_order_batch``, ``ledger.committee.decide_vote``, …);
this script only chooses the inputs. ``docs/PROTOCOL.md`` ("Test vectors") explains the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # this repository's p2pgrid, not another installed copy

# Imported after the path is set (hence E402). entry_kinds registers every ledger entry kind.
import p2pgrid.node.entry_kinds  # noqa: E402,F401
from p2pgrid.charging.rules import (  # noqa: E402
    ChargeReading, ChargeTariff, next_tariff_id, plan_charge_bill, plan_charge_start, tariff_of,
)
from p2pgrid.errors import WireError  # noqa: E402
from p2pgrid.ledger.chain import (  # noqa: E402
    KINDS, ChainHead, LedgerState, apply_entry, build_entry, decode_body, state_root,
)
from p2pgrid.ledger.committee import (  # noqa: E402
    CertificateInvalid, Committee, assemble_certificate, decide_vote, make_refusal, make_vote, seq_key,
)
from p2pgrid.ledger.messages import (  # noqa: E402
    FRAME_TAGS, MAX_BODY_BYTES, MAX_FRAME_BYTES, AccountHead, Burn, CertifiedEntries, Confirm, Confirmed, Decline, Fill, Lock,
    LockExpiry, Mint, Refund, Release, SyncReply, SyncRequest, Transfer, VoteReply, VoteRequest, decode_certified, encode_certified,
    encode_frame, entry_hash,
)
from p2pgrid.ledger.protocol import verify_batch  # noqa: E402
from p2pgrid.ledger.service import SYNC_PROTOCOL, VOTE_PROTOCOL, ledger_topic  # noqa: E402
from p2pgrid.ledger.testing import seeded_key  # noqa: E402
from p2pgrid.settlement.metering import MeterReading, MeterRegistration, MeterRegistrationV2  # noqa: E402
from p2pgrid.net.framing import encode_frame as frame_bytes  # noqa: E402
from p2pgrid.config import Validator, ZoneSection  # noqa: E402
from p2pgrid.node.api import peer_id_base58  # noqa: E402
from p2pgrid.onboarding.invite import Invite, JoinRequest, render_preset  # noqa: E402
from p2pgrid.net.orders import orders_topic, pools_topic  # noqa: E402
from p2pgrid.net.reconcile import OpenItems, compute_digest, differing_slots, item_key  # noqa: E402
from p2pgrid.net.reconcile_messages import (  # noqa: E402
    BOOKS_FRAME_TAGS, BOOKS_PROTOCOL, MAX_BOOKS_FRAME_BYTES, MAX_IDS_PER_PAGE, DigestReply, DigestRequest, FetchReply,
    FetchRequest, IdsReply, IdsRequest, encode_books_frame,
)
from p2pgrid.net.testing import bad_order_batches  # noqa: E402
from p2pgrid.net.validation import OrderBatchValidator, OrderRules, ReplayCache, validate_order_batch  # noqa: E402
from p2pgrid.settlement.rules import ImbalancePrices  # noqa: E402
from p2pgrid.settlement.entries import (  # noqa: E402
    MeterEntryBody, SettlementLedgerRules, compute_settlement, plan_settlement,
)
from p2pgrid.trading.maker import Accept, decide_take  # noqa: E402
from p2pgrid.trading.messages import (  # noqa: E402
    MAX_TAKE_BYTES, TAKE_PROTOCOL, AnswerStatus, Take, TakeAnswer, TakeConfirm,
)
from p2pgrid.pools.entries import (  # noqa: E402
    PoolOpen, PoolUpdate, SwapDecline, compute_pool_id, plan_swap, with_request,
)
from p2pgrid.pools.messages import (  # noqa: E402
    MAX_SWAP_BYTES, SWAP_PROTOCOL, PoolAnnouncement, PoolQuery, SwapAnswer, SwapRequest, SwapStatus, pool_state_of,
)
from p2pgrid.shares.rules import (  # noqa: E402
    ShareOffer, compute_payout, next_programme_id, plan_share_buy, plan_share_exit, plan_share_issue,
    plan_share_redeem, programme_of,
)
from p2pgrid.flex.entries import (  # noqa: E402
    FlexAward, FlexAwardLine, FlexGrant, FlexRequest, compute_award, compute_flex_settle, plan_offer,
)
from p2pgrid.flex.rules import Direction  # noqa: E402
from p2pgrid.ppa.entries import PpaAccept, PpaExpire, PpaIndex, PpaOffer, PpaTerminate  # noqa: E402
from p2pgrid.ppa.terms import Shape, terms_hash  # noqa: E402
from p2pgrid.ppa.testing import make_terms  # noqa: E402
from p2pgrid.units import SlotRules, trade_value  # noqa: E402
from p2pgrid.wire import (  # noqa: E402
    INT_MAX, INT_MIN, Cancel, Order, OrderBatch, Side, Signed, Source, encode, pack,
    registered_kinds, sign, signing_bytes, to_plain,
)

VECTORS_FILE = ROOT / "docs" / "protocol-vectors.json"
REGENERATE = "python tools/protocol_vectors.py --write"

ZONE = "zone-a"
SLOT_RULES = SlotRules()                       # 900 s slots, 24 h horizon, 5 min gate, 5 min grace
SLOT = 1_700_001_000                           # a slot start (Unix s): 2023-11-14 22:30 UTC
NOW = (SLOT - 3600) * 1000                     # one hour before the slot (Unix ms)
SLOT_END = SLOT_RULES.slot_end_ms(SLOT)
DUE = SLOT_RULES.metering_due_ms(SLOT)
PRICES = ImbalancePrices(shortfall_price=300_000, feed_in_price=80_000)

KEY_LABELS = {
    "alice": "household with PV: seller, maker of an offer, liquidity provider",
    "bob": "household: buyer, taker, pool trader, EV driver",
    "station": "solar+storage station: AMM pool host, share programme host, EV charging station",
    "gateway": "zone operator: gateway account (mints, registers meters, settles)",
    "alice-meter": "alice's grid meter (meter key, registered by the gateway)",
    "bob-meter": "bob's grid meter",
    "charger": "the station's connector metering module (signs charge readings)",
    "carol": "household with a home battery: offers flexibility to the zone operator's request",
    "carol-meter": "carol's grid meter",
    "mallory": "a stranger (for invalid messages)",
    "validator-0": "committee member", "validator-1": "committee member",
    "validator-2": "committee member", "validator-3": "committee member",
}
KEYS = {name: seeded_key(name) for name in KEY_LABELS}
PUB = {name: key.public_key for name, key in KEYS.items()}
NAME_OF = {key: name for name, key in PUB.items()}
VALIDATORS = [KEYS[f"validator-{i}"] for i in range(4)]
COMMITTEE = Committee(ZONE, 0, tuple(v.public_key for v in VALIDATORS))
RULES = SettlementLedgerRules(ZONE, PUB["gateway"], 0, slots=SLOT_RULES, prices=PRICES,
                              committee=COMMITTEE.validators, committee_epoch=COMMITTEE.epoch)
ORDER_RULES = OrderRules(ZONE, SLOT_RULES)


def ident(text: str) -> bytes:
    """A readable 16-byte id: the text, zero-padded (ids are chosen freely by their creator)."""
    return text.encode().ljust(16, b"\x00")


# --- JSON forms ----------------------------------------------------------------------------------

def as_json(value: Any) -> Any:
    """A wire value as JSON: structures as objects in field order, bytes as lowercase hex."""
    if hasattr(value, "__wire_fields__"):
        return {f.name: as_json(getattr(value, f.name)) for f, _ in value.__wire_fields__}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple):
        return [as_json(v) for v in value]
    return value


def type_schema(hint: Any, meta: typing.Mapping[str, Any]) -> dict[str, Any]:
    """One field's type and limits, as ``wire`` checks them."""
    limits = {k: meta[k] for k in ("size", "max_len", "pattern") if k in meta}
    if typing.get_origin(hint) is tuple:
        return {"type": "array", "items": type_schema(typing.get_args(hint)[0], {}), **limits}
    if hint is int:
        return {"type": "int", "min": max(meta.get("min", INT_MIN), INT_MIN), "max": min(meta.get("max", INT_MAX), INT_MAX)}
    if hint in (bool, str, bytes):
        return {"type": hint.__name__, **limits}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "enum", "name": hint.__name__, "values": [m.value for m in hint]}
    return {"type": "struct", "name": hint.__name__}


def struct_schema(cls: type) -> list[dict[str, Any]]:
    return [{"name": f.name, **type_schema(hint, f.metadata)} for f, hint in cls.__wire_fields__]  # type: ignore[attr-defined]


def _ours(cls: type) -> bool:
    """Defined by p2pgrid itself (tests register kinds of their own in the same registries)."""
    return cls.__module__.startswith("p2pgrid.")


def protocol_message_kinds() -> dict[tuple[str, int], type]:
    """The signed message kinds of the protocol: those p2pgrid registers."""
    return {key: cls for key, cls in registered_kinds().items() if _ours(cls)}


def protocol_entry_kinds() -> dict[str, Any]:
    """The ledger entry kinds of the protocol: those whose body p2pgrid defines."""
    return {kind: rules for kind, rules in KINDS.items() if _ours(rules.body_type)}


def schema() -> dict[str, Any]:
    """Every message kind, entry kind, stream frame and nested structure the code registers."""
    messages = []
    entry_kinds = protocol_entry_kinds()
    for (kind, version), cls in sorted(protocol_message_kinds().items()):
        spec = cls.WIRE
        messages.append({"kind": kind, "version": version, "domain": spec.domain, "class": cls.__name__,
                         "max_bytes": spec.max_bytes, "signer_field": spec.signer_field, "fields": struct_schema(cls)})
    roots = list(protocol_message_kinds().values()) + [rules.body_type for rules in entry_kinds.values()]
    roots += list(FRAME_TAGS.values()) + list(BOOKS_FRAME_TAGS.values()) + [OrderBatch]
    structs: dict[str, list[dict[str, Any]]] = {}

    def walk(cls: type) -> None:
        for _, hint in cls.__wire_fields__:  # type: ignore[attr-defined]
            while typing.get_origin(hint) is tuple:
                hint = typing.get_args(hint)[0]
            if hasattr(hint, "__wire_fields__") and hint.__name__ not in structs:
                structs[hint.__name__] = struct_schema(hint)
                walk(hint)

    for cls in roots:
        if not hasattr(cls, "WIRE") and cls.__name__ not in structs:
            structs[cls.__name__] = struct_schema(cls)
        walk(cls)
    return {"messages": messages,
            "entry_kinds": {kind: {"body": entry_kinds[kind].body_type.__name__,
                                   "body_max_bytes": body_limit(entry_kinds[kind].body_type)}
                            for kind in sorted(entry_kinds)},
            "frame_tags": {tag: cls.__name__ for tag, cls in FRAME_TAGS.items()},
            "books_frame_tags": {tag: cls.__name__ for tag, cls in BOOKS_FRAME_TAGS.items()},
            "structs": dict(sorted(structs.items()))}


def body_limit(cls: type) -> int:
    """The size limit applied to an entry body of type ``cls``: the entry's body field limit."""
    return MAX_BODY_BYTES


def from_json(cls: type, obj: dict[str, Any]) -> Any:
    """The inverse of ``as_json`` for a wire structure (its field types say what is hex)."""
    return cls(**{f.name: _from_json(hint, obj[f.name]) for f, hint in cls.__wire_fields__})  # type: ignore[attr-defined]


def _from_json(hint: Any, raw: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        return tuple(_from_json(typing.get_args(hint)[0], item) for item in raw)
    if hint is bytes:
        return bytes.fromhex(raw)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(raw)
    if hasattr(hint, "__wire_fields__"):
        return from_json(hint, raw)
    return raw


# --- recording -----------------------------------------------------------------------------------

def signed_vector(name: str, signed: Signed[Any], note: str = "") -> dict[str, Any]:
    spec = signed.spec
    plain = to_plain(signed.body)
    out = {"name": name, "kind": spec.kind, "version": spec.version, "domain": spec.domain,
           "signer": NAME_OF[signed.signer], "fields": as_json(signed.body), "body_hex": pack(plain).hex(),
           "signing_bytes_hex": signing_bytes(spec.domain, signed.signer, plain).hex(),
           "signature_hex": signed.signature.hex(), "encoded_hex": signed.encoded.hex(),
           "message_id_hex": signed.message_id.hex()}
    if note:
        out["note"] = note
    return out


def rejection_json(decision: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"voted_prefix": len(decision.entry_hashes)}
    if decision.rejections:
        r = decision.rejections[0]
        out["rejected_index"], out["reason"], out["final"] = r.index, r.reason, r.final
    return out


class Ledger:
    """The scenario's ledger: entries built on each account's tip, certified batch by batch by the
    committee's own rule (``decide_vote``) and applied in order."""

    def __init__(self) -> None:
        self.state = LedgerState()
        self.tips: dict[bytes, ChainHead] = {}
        self.entries: list[dict[str, Any]] = []
        self.batches: list[dict[str, Any]] = []
        self.certified: dict[str, CertifiedEntries] = {}

    def entry(self, who: str, kind: str, body: Any, time_ms: int) -> Signed[Any]:
        account = PUB[who]
        tip = self.tips.get(account) or self.state.head(account)
        signed = sign(build_entry(RULES, account, tip, kind, body, time_ms), KEYS[who])
        self.tips[account] = ChainHead(tip.next_seq + 1, entry_hash(signed), signed.body.time_ms)
        return signed

    def certify(self, name: str, items: list[tuple[str, Signed[Any]]], note: str = "") -> CertifiedEntries:
        entries = [signed for _, signed in items]
        now = max(s.body.time_ms for s in entries)
        decision = decide_vote(self.state, {}, [s.encoded for s in entries], RULES, now)
        if decision.rejections:
            raise RuntimeError(f"batch {name} not accepted: {decision.rejections}")
        votes = [make_vote(COMMITTEE, key, decision.entry_hashes) for key in VALIDATORS[:COMMITTEE.quorum]]
        certificate = assemble_certificate(COMMITTEE, votes)
        batch = CertifiedEntries(certificate, (), tuple(s.encoded for s in entries))
        for entry_name, signed in items:
            apply_entry(self.state, signed, RULES)
            record = signed_vector(entry_name, signed)
            del record["signing_bytes_hex"]          # pack([domain, signer, body]), as for every kind
            record["entry_hash_hex"] = entry_hash(signed).hex()
            record["body_kind"] = signed.body.kind
            record["body_fields"] = as_json(decode_body(signed.body))
            record["batch"] = name
            self.entries.append(record)
        self.batches.append({"name": name, "entries": [n for n, _ in items], "validator_now_ms": now,
                             "decision": rejection_json(decision), "batch_root_hex": certificate.batch_root.hex(),
                             "certificate_hex": encode(certificate).hex(),
                             "balances_after": {NAME_OF[a]: b for a, b in sorted(self.state.balances.items())}})
        if note:
            self.batches[-1]["note"] = note
        self.certified[name] = batch
        return batch


# --- the scenario --------------------------------------------------------------------------------

def build() -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    ledger = Ledger()
    alice, bob, station = PUB["alice"], PUB["bob"], PUB["station"]

    offer = sign(Order(order_id=ident("offer-1"), owner=alice, side=Side.SELL, zone=ZONE, slot=SLOT, qty_wh=1500,
                       limit_price=250_000, green=True, source=Source.PV, created_ms=NOW,
                       expiry_ms=SLOT_RULES.gate_closure_ms(SLOT), nonce=1), KEYS["alice"])
    bid = sign(Order(order_id=ident("bid-1"), owner=bob, side=Side.BUY, zone=ZONE, slot=SLOT, qty_wh=2000,
                     limit_price=300_000, green=False, source=Source.NONE, created_ms=NOW + 100,
                     expiry_ms=NOW + 600_000, nonce=1), KEYS["bob"])
    cancel = sign(Cancel(order_id=ident("bid-1"), owner=bob, zone=ZONE, slot=SLOT, created_ms=NOW + 500), KEYS["bob"])
    messages += [signed_vector("order-offer", offer, "alice offers 1.5 kWh of PV for the slot at 0.25 credits/kWh"),
                 signed_vector("order-bid", bid, "bob bids for 2 kWh at 0.30 credits/kWh, expiring in 10 min"),
                 signed_vector("cancel", cancel, "bob withdraws what is left of his bid")]

    # The take: bob buys 1000 Wh of alice's offer. Alice reserves first; then bob certifies his
    # lock and confirms; alice fills it.
    take = sign(Take(take_id=ident("take-1"), taker=bob, maker=alice, order_id=ident("offer-1"), side=Side.BUY,
                     zone=ZONE, slot=SLOT, qty_wh=1000, price=250_000, sent_ms=NOW + 1500, taker_zone=ZONE,
                     ledger=ZONE), KEYS["bob"])
    messages.append(signed_vector("take", take, "bob asks alice to reserve 1000 Wh of her offer at its price"))
    reserved = sign(TakeAnswer(take_id=ident("take-1"), maker=alice, status=AnswerStatus.RESERVED, qty_wh=1000,
                               available_wh=0, reason="", certificate=b"", hold_ms=10_000), KEYS["alice"])
    confirm = sign(TakeConfirm(take_id=ident("take-1"), taker=bob, maker=alice, order_id=ident("offer-1"),
                               sent_ms=NOW + 2500), KEYS["bob"])
    messages += [signed_vector("take-answer-reserved", reserved, "alice holds 1000 Wh for bob for 10 s"),
                 signed_vector("take-confirm", confirm, "bob's lock take-1 is certified: alice, fill it")]
    take_decisions = [take_decision("accepted", take.body, offer.body, 0, 0, NOW + 1500),
                      take_decision("too-much-left-after-a-fill", take.body, offer.body, 1000, 0, NOW + 1500),
                      take_decision("after-gate-closure", take.body, offer.body, 0, 0, SLOT_RULES.gate_closure_ms(SLOT)),
                      take_decision("wrong-price", dataclasses.replace(take.body, price=240_000), offer.body, 0, 0,
                                    NOW + 1500)]

    g, t = ledger.entry, NOW
    ledger.certify("funding", [("mint-bob", g("gateway", "mint", Mint(bob, 10_000_000), t)),
                               ("mint-alice", g("gateway", "mint", Mint(alice, 5_000_000), t)),
                               ("mint-station", g("gateway", "mint", Mint(station, 5_000_000), t))],
                   "three entries of one chain in one batch: one vote per validator covers them all")
    # alice's connection can export 6 kW (order admission: 1500 Wh per 15-minute slot); bob's
    # registration (v1) records no export: he may buy, not sell.
    registrations = [("alice", "meter_registration_v2",
                      MeterRegistrationV2(PUB["gateway"], PUB["alice"], PUB["alice-meter"], ZONE, t, 6000)),
                     ("bob", "meter_registration", MeterRegistration(PUB["gateway"], PUB["bob"], PUB["bob-meter"], ZONE, t))]
    ledger.certify("meters", [(f"register-{who}-meter", g("gateway", kind, body, t))
                              for who, kind, body in registrations])
    lock_1 = Lock(take_id=ident("take-1"), seller=alice, order_id=ident("offer-1"), order_owner=alice,
                  order_size_wh=1500, qty_wh=1000, price=250_000, amount=trade_value(1000, 250_000),
                  deadline_ms=NOW + 61_000, slot=SLOT, green=True, seller_zone=ZONE, buyer_zone=ZONE)
    ledger.certify("lock", [("lock-take-1", g("bob", "lock", lock_1, t + 1000))])
    fill_batch = ledger.certify("fill", [("fill-take-1", g("alice", "fill", Fill(ident("take-1"), bob, ident("offer-1"),
                                                                                1000, 250_000), t + 2000))])
    ledger.certify("transfer", [("transfer", g("bob", "transfer", Transfer(alice, 100_000), t + 3000))])
    filled = sign(TakeAnswer(take_id=ident("take-1"), maker=alice, status=AnswerStatus.FILLED, qty_wh=1000,
                             available_wh=0, reason="", certificate=encode(fill_batch.certificate)), KEYS["alice"])
    refused = sign(TakeAnswer(take_id=ident("take-1"), maker=alice, status=AnswerStatus.REFUSED, qty_wh=0,
                              available_wh=500, reason="insufficient_remaining: asked 1000 Wh, 500 Wh available",
                              certificate=b""), KEYS["alice"])
    messages += [signed_vector("take-answer-filled", filled, "certificate: the Certificate of alice's fill entry"),
                 signed_vector("take-answer-refused", refused)]

    # The station's pool for the slot, its share programme, a swap, a decline.
    pool_id = compute_pool_id(station, ZONE, SLOT)
    ledger.certify("pool-open", [("pool-open", g("station", "pool_open", PoolOpen(
        pool_id=pool_id, slot=SLOT, energy_wh=20_000, credits_uc=2_000_000, fee_bps=30, energy_cap_wh=50_000,
        self_discharge_ppm_per_h=100, conversion_loss_w=50, at_ms=t + 4000), t + 4000))])
    offer_terms = ShareOffer(programme_id=next_programme_id(ledger.state, station, ZONE), zone=ZONE,
                             price_uc=1_000_000, fee_share_bps=5000, lockup_until_slot=SLOT, cap_shares=100,
                             sale_until_ms=NOW + 86_400_000, residents_only=False)
    ledger.certify("share-offer", [("share-offer", g("station", "share_offer", offer_terms, t + 5000))])
    programme = programme_of(ledger.state, offer_terms.programme_id)
    buy = plan_share_buy(programme, alice, 2, nonce=2, deadline_ms=t + 66_000)
    ledger.certify("share-buy", [("share-buy", g("alice", "share_buy", buy, t + 6000))])
    ledger.certify("share-issue", [("share-issue", g("station", "share_issue",
                                                     plan_share_issue(ledger.state, buy.buy_id), t + 7000))])
    ledger.certify("share-payout-0", [("share-payout-0", g("station", "share_payout",
                                                           compute_payout(ledger.state, programme_of(
                                                               ledger.state, offer_terms.programme_id)), t + 8000))],
                   "the first payout pays nothing (no share was earning yet) and makes the issued shares earn")

    pool = ledger.state.pools[pool_id]
    request = SwapRequest(request_id=ident("swap-1"), trader=bob, host=station, pool_id=pool_id, zone=ZONE, slot=SLOT,
                          side=Side.BUY, energy_wh=500, limit_uc=80_000, expires_ms=t + 69_000)
    signed_request = sign(request, KEYS["bob"])
    swap_lock = Lock(take_id=request.request_id, seller=station, order_id=pool_id, order_owner=station,
                     order_size_wh=500, qty_wh=500, price=request.limit_uc * 1000 // 500, amount=request.limit_uc,
                     deadline_ms=request.expires_ms, slot=SLOT)
    query = sign(PoolQuery(query_id=ident("query-1"), trader=bob, host=station, pool_id=pool_id), KEYS["bob"])
    state_answer = sign(SwapAnswer(request_id=ident("query-1"), host=station, status=SwapStatus.STATE, energy_wh=0,
                                   credits_uc=0, reason="", certificate=b"",
                                   pools=(pool_state_of(pool.pool, pool.version),)), KEYS["station"])
    ledger.certify("swap-lock", [("lock-swap-1", g("bob", "lock", swap_lock, t + 9000))])
    swap_body = with_request(plan_swap(pool, request, station, ZONE, t + 10_000), signed_request)
    swap_batch = ledger.certify("swap", [("swap-1", g("station", "swap", swap_body, t + 10_000))])
    swapped = sign(SwapAnswer(request_id=request.request_id, host=station, status=SwapStatus.SWAPPED,
                              energy_wh=swap_body.energy_wh, credits_uc=swap_body.credits_uc, reason="",
                              certificate=encode(swap_batch.certificate),
                              pools=(pool_state_of(ledger.state.pools[pool_id].pool,
                                                   ledger.state.pools[pool_id].version),)), KEYS["station"])
    ledger.certify("share-payout-1", [("share-payout-1", g("station", "share_payout", compute_payout(
        ledger.state, programme_of(ledger.state, offer_terms.programme_id)), t + 11_000))],
        "pays the LPs their part of the swap's fee")
    ledger.certify("pool-update", [("pool-update", g("station", "pool_update", PoolUpdate(
        pool_id=pool_id, energy_cap_wh=40_000, add_energy_wh=1000, at_ms=t + 12_000), t + 12_000))])
    swap_lock_2 = dataclasses.replace(swap_lock, take_id=ident("swap-2"), deadline_ms=t + 73_000)
    ledger.certify("swap-lock-2", [("lock-swap-2", g("bob", "lock", swap_lock_2, t + 13_000))])
    ledger.certify("swap-decline", [("swap-decline", g("station", "swap_decline", SwapDecline(
        swap_id=ident("swap-2"), pool_id=pool_id, trader=bob, reason="slippage"), t + 14_000))])
    announcement = sign(PoolAnnouncement(host=station, zone=ZONE, sent_ms=t + 14_500, pools=(pool_state_of(
        ledger.state.pools[pool_id].pool, ledger.state.pools[pool_id].version),)), KEYS["station"])
    messages += [signed_vector("pool-query", query), signed_vector("swap-answer-state", state_answer),
                 signed_vector("swap-request", signed_request, "carried again, as signed, inside the host's swap entry"),
                 signed_vector("swap-answer-swapped", swapped, "certificate: the Certificate of the station's swap entry"),
                 signed_vector("pool-announcement", announcement)]

    # A lock the seller declines, one the buyer releases once the seller's chain has passed its deadline.
    lock_2 = dataclasses.replace(lock_1, take_id=ident("take-2"), qty_wh=200, amount=trade_value(200, 250_000),
                                 deadline_ms=t + 75_000)
    ledger.certify("lock-2", [("lock-take-2", g("bob", "lock", lock_2, t + 15_000))])
    ledger.certify("decline", [("decline-take-2", g("alice", "decline", Decline(ident("take-2")), t + 16_000))])
    lock_3 = dataclasses.replace(lock_1, take_id=ident("take-3"), qty_wh=100, amount=trade_value(100, 250_000),
                                 deadline_ms=t + 77_000)
    ledger.certify("lock-3", [("lock-take-3", g("bob", "lock", lock_3, t + 17_000))])

    # EV charging at the station.
    tariff = ChargeTariff(tariff_id=next_tariff_id(ledger.state, station, ZONE), zone=ZONE, price_uc_per_kwh=400_000,
                          charger_keys=(PUB["charger"],), max_power_w=11_000, max_session_wh=40_000,
                          until_ms=NOW + 86_400_000)
    ledger.certify("charge-tariff", [("charge-tariff", g("station", "charge_tariff", tariff, t + 18_000))])
    start = plan_charge_start(tariff_of(ledger.state, tariff.tariff_id), bob, 10_000, nonce=7,
                              plugged_in_ms=t + 18_500, deadline_ms=t + 19_000 + 3 * 3_600_000)
    ledger.certify("charge-start", [("charge-start", g("bob", "charge_start", start, t + 19_000))])
    reading = sign(ChargeReading(charger_key=PUB["charger"], station=station, session_id=start.session_id,
                                 meter_start_wh=1_000_000, meter_stop_wh=1_007_000, started_ms=t + 19_000,
                                 ended_ms=t + 19_000 + 3_600_000), KEYS["charger"])
    messages.append(signed_vector("charge-reading", reading, "signed by the connector's key, carried in charge_bill"))
    ledger.certify("charge-bill", [("charge-bill", g("station", "charge_bill", plan_charge_bill(ledger.state, reading),
                                                     t + 19_000 + 3_601_000))])

    # Metering after the slot, the release, the LP's exit and redemption, settlement, a burn.
    readings = {
        "alice": MeterReading(account=alice, meter_key=PUB["alice-meter"], zone=ZONE, slot=SLOT, import_wh=0,
                              export_wh=1200, green_wh=1400, green_source=Source.PV, import_total_wh=5_000,
                              export_total_wh=80_000, created_ms=SLOT_END + 10_000),
        "bob": MeterReading(account=bob, meter_key=PUB["bob-meter"], zone=ZONE, slot=SLOT, import_wh=1600,
                            export_wh=0, green_wh=0, green_source=Source.NONE, import_total_wh=123_456,
                            export_total_wh=0, created_ms=SLOT_END + 20_000)}
    signed_readings = {who: sign(r, KEYS[f"{who}-meter"]) for who, r in readings.items()}
    messages.append(signed_vector("meter-reading", signed_readings["alice"],
                                  "signed by alice's meter key, carried in the meter entry of her chain"))
    messages.append(signed_vector("meter-registration", sign(registrations[1][2], KEYS["gateway"]),
                                  "the kind is registered as signed, but p2pgrid only carries it unsigned as the "
                                  "body of a meter_registration entry"))
    messages.append(signed_vector("meter-registration-v2", sign(registrations[0][2], KEYS["gateway"]),
                                  "v1 plus export_w; carried unsigned as the body of a meter_registration_v2 entry"))
    messages += onboarding_vectors()
    for who, offset in (("alice", 10_000), ("bob", 20_000)):
        ledger.certify(f"meter-{who}", [(f"meter-{who}", g(who, "meter", MeterEntryBody(signed_readings[who].encoded),
                                                           SLOT_END + offset))])
    ledger.certify("release", [("release-take-3", g("bob", "release", Release(ident("take-3")), SLOT_END + 30_000))],
                   "valid now: the seller's (alice's) chain is dated past the lock's deadline")
    ledger.certify("share-exit", [("share-exit", g("alice", "share_exit", plan_share_exit(
        programme_of(ledger.state, offer_terms.programme_id), 1), SLOT_END + 40_000))])
    ledger.certify("share-redeem", [("share-redeem", g("station", "share_redeem", plan_share_redeem(
        programme_of(ledger.state, offer_terms.programme_id), alice, 1, exit_shares=1), SLOT_END + 50_000))])
    settle_body, _ = compute_settlement(ledger.state, RULES, SLOT)
    ledger.certify("settle", [("settle", g("gateway", "settle", settle_body, DUE + 30_000))],
                   "the gateway settles the slot over the inputs it names; validators recompute it")
    ledger.certify("burn", [("burn", g("alice", "burn", Burn(50_000), DUE + 60_000))])
    # A lock whose seller never decides it: the buyer takes it back with a quorum of expiry promises.
    lock_4 = dataclasses.replace(lock_1, take_id=ident("take-4"), qty_wh=100, amount=trade_value(100, 250_000),
                                 deadline_ms=DUE + 120_000)
    ledger.certify("lock-4", [("lock-take-4", g("bob", "lock", lock_4, DUE + 70_000))])
    expiries = [sign(LockExpiry(v.public_key, ZONE, COMMITTEE.epoch, ident("take-4")), v)
                for v in VALIDATORS[:COMMITTEE.quorum]]
    messages.append(signed_vector("lock-expiry", expiries[0], "a validator's promise; a quorum of them is carried "
                                                              "in the buyer's refund entry"))
    ledger.certify("refund", [("refund-take-4", g("bob", "refund", Refund(ident("take-4"), tuple(
        e.encoded for e in expiries)), DUE + 120_000 + RULES.lock_expiry_grace_ms))],
                   "valid whatever the seller's chain: a quorum of the committee promised never to vote for a "
                   "consumer of the lock")

    # A power purchase agreement: the station sells bob 25 % of its export for three days from the
    # next day, at an indexed price; bob terminates it after its first day; the station closes it.
    ppa_start = SLOT + 86_400
    ppa_terms = make_terms(station, bob, zone=ZONE, start_slot=ppa_start, days=3, shape=Shape.PAY_AS_PRODUCED,
                           name="Station output to bob", index_name="cpi", index_base=1000,
                           termination_penalty_uc=1_000_000)
    ppa_id = terms_hash(ppa_terms)
    ledger.certify("ppa-index", [("ppa-index", g("gateway", "ppa_index", PpaIndex("cpi", ppa_start, 1020),
                                                 DUE + 61_000))],
                   "the zone operator publishes a reference value before its period starts")
    offer_entry = g("station", "ppa_offer", PpaOffer(ppa_terms, ppa_id, ppa_start * 1000), DUE + 62_000)
    ledger.certify("ppa-offer", [("ppa-offer", offer_entry)],
                   "ppa_id is the SHA-256 of the terms' canonical text; validators render it again")
    ledger.certify("ppa-accept", [("ppa-accept", g("bob", "ppa_accept", PpaAccept(ppa_id, station,
                                                                                  offer_entry.body.seq),
                                                   DUE + 63_000))])
    ledger.certify("ppa-terminate", [("ppa-terminate", g("bob", "ppa_terminate",
                                                         PpaTerminate(ppa_id, ppa_start + 86_400), DUE + 64_000))],
                   "one day's notice, as the terms require; bob pays the station the termination penalty")
    ppa_reading = MeterReading(account=bob, meter_key=PUB["bob-meter"], zone=ZONE, slot=ppa_start, import_wh=300,
                               export_wh=0, green_wh=0, green_source=Source.NONE, import_total_wh=123_756,
                               export_total_wh=0, created_ms=SLOT_RULES.slot_end_ms(ppa_start) + 10_000)
    ledger.certify("meter-bob-ppa", [("meter-bob-ppa", g("bob", "meter", MeterEntryBody(
        sign(ppa_reading, KEYS["bob-meter"]).encoded), ppa_reading.created_ms))])
    ppa_kind, ppa_settle = plan_settlement(ledger.state, RULES, ppa_start)
    ledger.certify("settle-ppa", [("settle-ppa", g("gateway", ppa_kind, ppa_settle,
                                                   SLOT_RULES.metering_due_ms(ppa_start) + 30_000))],
                   "the agreement's first slot: the station reported no reading, so its pay-as-produced "
                   "position is 0 Wh; the settlement names the agreement and bob's termination")
    ledger.certify("ppa-expire", [("ppa-expire", g("station", "ppa_expire", PpaExpire(ppa_id, bob),
                                                   (ppa_start + 86_400) * 1000))],
                   "the station closes the agreement at the end bob's termination named")
    flex_invalid = flex_scenario(ledger)

    votes = [signed_vector(f"vote-fill-validator-{i}", make_vote(COMMITTEE, VALIDATORS[i], [entry_hash(s) for s in
                                                                                          verified(fill_batch)]))
             for i in range(COMMITTEE.quorum)]
    invalid, refusal_reply = invalid_entries(ledger)
    invalid += flex_invalid
    return {
        "about": {
            "what": "p2pgrid protocol test vectors: wire encodings, signatures, hashes and verdicts, from fixed "
                    "keys and times. Explained in docs/PROTOCOL.md, section 'Test vectors'.",
            "regenerate": REGENERATE,
            "generator": "tools/protocol_vectors.py",
        },
        "conventions": {
            "bytes": "lowercase hex strings",
            "integers": "exact; limits in the schema reach 2**63 - 1, beyond a double's 2**53",
            "fields": "JSON objects in field order; enums as their string value; arrays as lists; "
                      "nested structures as objects. The wire form is a msgpack array in the same order.",
            "times": "*_ms: Unix milliseconds; slot, lockup_until_slot: Unix seconds (a slot start)",
            "money": "µc (micro-credits, integer); prices µc per kWh; energy Wh",
        },
        "keys": {name: {"seed_hex": key.seed.hex(), "public_key_hex": key.public_key.hex(), "role": KEY_LABELS[name],
                        "seed_rule": f"sha256(b'p2pgrid-test-key/{name}')"} for name, key in KEYS.items()},
        "parameters": {
            "zone": ZONE, "slot": SLOT, "now_ms": NOW,
            "slot_rules": dataclasses.asdict(SLOT_RULES),
            "topics": {"orders": orders_topic(ZONE), "pools": pools_topic(ZONE), "ledger": ledger_topic(ZONE)},
            "order_rules": {"clock_disparity_ms": ORDER_RULES.clock_disparity_ms,
                            "max_batch_bytes": ORDER_RULES.max_batch_bytes,
                            "require_own_items": ORDER_RULES.require_own_items},
            "ledger_rules": {"zone": RULES.zone, "gateway": "gateway", "credit_limit_uc": RULES.credit_limit_uc,
                             "clock_skew_ms": RULES.clock_skew_ms, "shortfall_price": PRICES.shortfall_price,
                             "feed_in_price": PRICES.feed_in_price, "grid_fees": []},
            "committee": {"zone": COMMITTEE.zone, "epoch": COMMITTEE.epoch, "quorum": COMMITTEE.quorum,
                          "validators": [NAME_OF[v] for v in COMMITTEE.validators]},
        },
        "schema": schema(),
        "messages": messages + votes + [signed_vector("refusal", refusal_reply[2],
                                                      "validator-0 will never vote for the lock-closed entry")],
        "decoding": decoding_cases(offer),
        "order_gossip": order_gossip_cases(offer, cancel),
        "take_decisions": take_decisions,
        "ledger": {"entries": ledger.entries, "batches": ledger.batches,
                   "final_balances": {NAME_OF[a]: b for a, b in sorted(ledger.state.balances.items())},
                   "money_total": ledger.state.money_total(),
                   "final_state_root_hex": state_root(ledger.state).hex()},
        "ledger_invalid": invalid,
        "ledger_gossip": ledger_gossip_cases(fill_batch, swap_batch),
        "streams": streams(take, reserved, confirm, filled, query, state_answer, signed_request, swapped, ledger, fill_batch,
                           refusal_reply[:2]) + books_exchanges(offer, cancel),
        "book_digests": book_digests(offer, bid, cancel),
    }


def onboarding_vectors() -> list[dict[str, Any]]:
    """The join bundle and join request (``p2pgrid.onboarding.invite``): never on the network, they
    travel as text lines (``p2pgrid-invite:`` / ``p2pgrid-request:`` + URL-safe base64 of the
    encoded bytes, no padding) between the operator and a neighbour."""
    gateway = PUB["gateway"]
    address = f"/ip4/127.0.0.1/tcp/4101/p2p/{peer_id_base58(gateway)}"
    zone = ZoneSection(id=ZONE, gateway_account=gateway.hex(), validators=(Validator(gateway.hex(), address),))
    invite = Invite(gateway, ZONE, render_preset(zone), (address,), NOW)
    request = JoinRequest(PUB["alice"], PUB["alice-meter"], ZONE, "alice", "household", 6000, 6000, 10_000, NOW)
    return [signed_vector("invite", sign(invite, KEYS["gateway"]),
                          "the operator's join bundle: zone preset (TOML text) and bootstrap addresses, signed by "
                          "the gateway the preset names"),
            signed_vector("join-request", sign(request, KEYS["alice"]),
                          "a neighbour's answer: account, meter key, role and nameplate, signed by the account")]


def book_digests(offer: Signed[Order], bid: Signed[Order], cancel: Signed[Cancel]) -> list[dict[str, Any]]:
    """Slot digests of ``/p2pgrid/books/1`` (``net.reconcile``): the keys a node holds, and why."""
    cases = [("empty", [], "a slot holding nothing"),
             ("offer-and-bid", [offer, bid], "two open orders"),
             ("offer-and-cancelled-bid", [offer, bid, cancel],
              "the cancel replaces bob's bid: the same digest whether the bid arrived or not"),
             ("offer-and-cancel-only", [offer, cancel], "the bid never arrived here")]
    out = []
    for name, items, note in cases:
        held = OpenItems(SLOT_RULES)
        for signed in items:
            held.add(signed, NOW)
        keys, _ = held.keys(ZONE, SLOT, b"", MAX_IDS_PER_PAGE)
        digest = held.digest(ZONE, SLOT)
        if digest != compute_digest(ZONE, SLOT, keys):
            raise RuntimeError(f"book digest {name}: held digest and computed digest differ")
        out.append({"name": name, "note": note, "zone": ZONE, "slot": SLOT, "keys_hex": [k.hex() for k in keys],
                    "count": digest.count, "digest_hex": digest.digest.hex()})
    return out


def books_exchanges(offer: Signed[Order], cancel: Signed[Cancel]) -> list[dict[str, Any]]:
    """One pull on ``/p2pgrid/books/1``: the client holds bob's cancel, the server also alice's offer."""
    client, server = OpenItems(SLOT_RULES), OpenItems(SLOT_RULES)
    client.add(cancel, NOW)
    server.add(offer, NOW)
    server.add(cancel, NOW)
    digests = DigestRequest(1, (ZONE,), tuple(client.digests([ZONE])))
    differing = DigestReply(1, tuple(differing_slots(digests.digests, server.digests([ZONE]), [ZONE])))
    ids = IdsRequest(2, ZONE, SLOT, b"", MAX_IDS_PER_PAGE)
    keys, more = server.keys(ZONE, SLOT, ids.after, ids.limit)
    missing = tuple(k for k in keys if client.lacks(k))
    if missing != (item_key(offer.body),):
        raise RuntimeError("the books exchange should fetch alice's offer alone")
    fetch = FetchRequest(3, ZONE, missing)
    held = [server.get(k) for k in missing]
    fetched = FetchReply(3, tuple(s.encoded for s in held if s is not None))
    return [{"protocol": BOOKS_PROTOCOL, "name": name, "max_frame_bytes": MAX_BOOKS_FRAME_BYTES,
             "request_hex": encode_books_frame(req).hex(),
             "request_framed_hex": frame_bytes(encode_books_frame(req), MAX_BOOKS_FRAME_BYTES).hex(),
             "answer_hex": encode_books_frame(ans).hex(),
             "answer_framed_hex": frame_bytes(encode_books_frame(ans), MAX_BOOKS_FRAME_BYTES).hex()}
            for name, req, ans in (("books-digests", digests, differing),
                                   ("books-ids", ids, IdsReply(2, tuple(keys), more)),
                                   ("books-fetch", fetch, fetched))]


def verified(batch: CertifiedEntries) -> list[Signed[Any]]:
    return list(verify_batch(COMMITTEE, batch, set()).entries)


def take_decision(name: str, take: Take, order: Order, certified_wh: int, reserved_wh: int, now_ms: int) -> dict[str, Any]:
    verdict = decide_take(take, order, certified_wh, reserved_wh, SLOT_RULES, now_ms)
    out: dict[str, Any] = {"name": name, "take": as_json(take), "order": as_json(order), "certified_wh": certified_wh,
                           "reserved_wh": reserved_wh, "now_ms": now_ms, "grid_fee": 0}
    if isinstance(verdict, Accept):
        out["expect"] = {"status": "accept", "qty_wh": verdict.qty_wh}
    else:
        out["expect"] = {"status": "refuse", "reason": verdict.reason.value, "available_wh": verdict.available_wh}
    return out


def decoding_cases(offer: Signed[Order]) -> list[dict[str, Any]]:
    """Bytes that ``wire.decode_signed`` must accept or refuse, with the error class it raises."""
    kind, version, signer, body, signature = offer.spec.kind, offer.spec.version, offer.signer, to_plain(offer.body), \
        offer.signature
    qty_at = [f.name for f, _ in Order.__wire_fields__].index("qty_wh")  # type: ignore[attr-defined]
    # qty_wh = 1500 is uint16 (cd 05dc); the same value as uint32 (ce 000005dc) is valid msgpack, not canonical.
    wide = offer.encoded.replace(bytes.fromhex("cd05dc"), bytes.fromhex("ce000005dc"), 1)
    short_zone = offer.encoded.replace(bytes([0xa0 + len(ZONE)]) + ZONE.encode(),
                                       bytes([0xd9, len(ZONE)]) + ZONE.encode(), 1)
    as_map = pack({"kind": kind, "version": version, "signer": signer, "body": body, "signature": signature})
    with_nil = pack([kind, version, signer, body[:qty_at] + [None] + body[qty_at + 1:], signature])
    with_float = pack([kind, version, signer, body[:qty_at] + [1500.0] + body[qty_at + 1:], signature])
    other = KEYS["mallory"]
    by_stranger = pack([kind, version, other.public_key, body,
                        other.sign(signing_bytes(offer.spec.domain, other.public_key, body))])
    tampered = pack([kind, version, signer, body[:qty_at] + [1501] + body[qty_at + 1:], signature])
    v2 = pack([kind, 2, signer, body, KEYS["alice"].sign(signing_bytes(f"{kind}/v2", signer, body))])
    unknown = pack(["p2pgrid/teleport", 1, signer, body, signature])
    cases = [("canonical", offer.encoded, None, "the order-offer message as sent"),
             ("non-minimal-int", wide, "DecodeError", "qty_wh as uint32 where uint16 fits"),
             ("non-minimal-str", short_zone, "DecodeError", "zone as str8 where fixstr fits"),
             ("trailing-byte", offer.encoded + b"\x00", "DecodeError", "one byte after the message"),
             ("map-not-array", as_map, "DecodeError", "the same content as a map"),
             ("nil-field", with_nil, "DecodeError", "nil in place of qty_wh"),
             ("float-field", with_float, "DecodeError", "a float64 in place of qty_wh"),
             ("tampered-body", tampered, "SignatureError", "qty_wh changed after signing"),
             ("signer-not-owner", by_stranger, "SignatureError",
              "a valid signature by mallory over alice's order: the order's owner must sign"),
             ("unknown-version", v2, "UnknownVersionError", "p2pgrid/order v2, correctly signed under p2pgrid/order/v2"),
             ("unknown-kind", unknown, "UnknownVersionError", "a kind nobody registered"),
             ("oversize", pack([kind, version, signer, body, signature + bytes(500)]), "OversizeError",
              "larger than p2pgrid/order's 512-byte limit")]
    out = []
    for name, data, error, what in cases:
        out.append({"name": name, "what": what, "hex": data.hex(), "expect": error or "ok"})
    return out


def order_gossip_cases(offer: Signed[Order], cancel: Signed[Cancel]) -> list[dict[str, Any]]:
    """Order batches on the orders topic and the validator's verdict (fresh replay cache each)."""
    def case(name: str, data: bytes, sender: str, now_ms: int, what: str, validator: Any = None) -> dict[str, Any]:
        verdict = (validator.validate(data, PUB[sender], now_ms) if validator is not None
                   else validate_order_batch(data, PUB[sender], ORDER_RULES, now_ms, ReplayCache()))
        return {"name": name, "what": what, "sender": sender, "now_ms": now_ms, "batch_hex": data.hex(),
                "batch_id_hex": verdict.batch_id.hex(),
                "expect": {"result": verdict.result.value.upper(), "reason": verdict.reason.value if verdict.reason else None,
                           "items": [{"result": v.result.value.upper(), "reason": v.reason.value if v.reason else None}
                                     for v in verdict.items]}}

    own = encode(OrderBatch(ZONE, NOW + 600, (offer.encoded,)))
    validator = OrderBatchValidator(ORDER_RULES)
    out = [case("accepted", own, "alice", NOW + 700, "one signed order of the publisher", validator),
           case("replayed-batch", own, "alice", NOW + 800, "the same batch again, to the same validator", validator),
           case("order-and-cancel", encode(OrderBatch(ZONE, NOW + 600, (cancel.encoded,))), "bob", NOW + 700,
                "a cancel is an item like an order")]
    future = sign(dataclasses.replace(offer.body, order_id=ident("offer-9"), created_ms=NOW + 10_000), KEYS["alice"])
    out.append(case("created-in-the-future", encode(OrderBatch(ZONE, NOW, (future.encoded,))), "alice", NOW,
                    "created 10 s ahead of the receiver's clock: ignored, no penalty"))
    for name, (data, _) in bad_order_batches(KEYS["alice"], KEYS["mallory"], ORDER_RULES, NOW).items():
        out.append(case(name.replace("_", "-"), data, "alice", NOW, "one of the validator's invalid classes"))
    return out


FLEX_DAY_MS = 86_400_000
FLEX_SLOT = SLOT + 6 * 86_400            # the event: the scenario's slot time of day, six days later


def flex_scenario(ledger: Ledger) -> list[dict[str, Any]]:
    """The virtual power plant: carol's meter reports the event's time of day on five days (the
    fewest a "high 5 of 10" baseline takes), the gateway requests 2500 Wh less import, carol
    offers 600 Wh, is awarded them, delivers 700 and is paid 600; then it requests again for the next
    evening. Returns the refusals of bad flex entries, judged on the final state (as every case of
    ``ledger_invalid``), each by a validator whose clock reads the entry's own date."""
    g, carol, station = ledger.entry, PUB["carol"], PUB["station"]
    ledger.certify("flex-meter", [("register-carol-meter", g("gateway", "meter_registration_v2", MeterRegistrationV2(
        PUB["gateway"], carol, PUB["carol-meter"], ZONE, DUE + 70_000, 5000), DUE + 70_000))],
        "carol's connection can export 5 kW: 1250 Wh per 15-minute slot")
    import_total = 0
    for day in range(1, 6):
        slot = SLOT + day * 86_400
        import_total += 900 + 50 * day
        reading = MeterReading(account=carol, meter_key=PUB["carol-meter"], zone=ZONE, slot=slot,
                               import_wh=900 + 50 * day, export_wh=0, green_wh=0, green_source=Source.NONE,
                               import_total_wh=import_total, export_total_wh=0,
                               created_ms=SLOT_RULES.slot_end_ms(slot) + 10_000)
        ledger.certify(f"flex-history-{day}", [(f"meter-carol-day-{day}", g("carol", "meter", MeterEntryBody(
            sign(reading, KEYS["carol-meter"]).encoded), reading.created_ms))])
    t = FLEX_SLOT * 1000 - 6 * 3_600_000                       # six hours before the event
    request = FlexRequest(request_id=ident("flex-1"), zone=ZONE, feeder="feeder-1", direction=Direction.DOWN,
                          first_slot=FLEX_SLOT, n_slots=1, qty_wh=2500, price_uc_per_kwh=400_000,
                          penalty_uc_per_kwh=100_000, offer_deadline_ms=t + 3_600_000)
    ledger.certify("flex-request", [("flex-request", g("gateway", "flex_request", request, t))],
                   "the zone operator asks for 2500 Wh less import in the event slot, offers due in an hour")
    offer = plan_offer(ledger.state, RULES, carol, PUB["carol-meter"], request.request_id, 300_000, (600,))
    ledger.certify("flex-offer", [("flex-offer", g("carol", "flex_offer", offer, t + 60_000))],
                   "baseline: the mean of the five highest of carol's five evenings (1100 Wh); 600 Wh at 300 000 µc/kWh")
    ledger.certify("flex-award", [("flex-award", g("gateway", "flex_award", compute_award(
        ledger.state, request.request_id), request.offer_deadline_ms))],
        "merit order over the offers it names, recomputed by every validator")
    reading = MeterReading(account=carol, meter_key=PUB["carol-meter"], zone=ZONE, slot=FLEX_SLOT, import_wh=400,
                           export_wh=0, green_wh=0, green_source=Source.NONE, import_total_wh=import_total + 400,
                           export_total_wh=0, created_ms=SLOT_RULES.slot_end_ms(FLEX_SLOT) + 10_000)
    ledger.certify("flex-delivery", [("meter-carol-event", g("carol", "meter", MeterEntryBody(
        sign(reading, KEYS["carol-meter"]).encoded), reading.created_ms))],
        "carol imported 400 Wh against a baseline of 1100: 700 Wh delivered")
    ledger.certify("flex-settle", [("flex-settle", g("gateway", "flex_settle", compute_flex_settle(
        ledger.state, RULES, request.request_id), SLOT_RULES.metering_due_ms(FLEX_SLOT)))],
        "paid the 600 awarded Wh at carol's price: 180 000 µc from the gateway")
    # The next evening's request, open for offers: the refusals below are judged against it.
    t = (FLEX_SLOT + 86_400) * 1000 - 6 * 3_600_000
    ledger.certify("flex-grant", [("flex-grant", g("gateway", "flex_grant", FlexGrant(station, t + 86_400_000), t))],
                   "the station may post requests for a day, naming this entry's seq as its grant_seq")
    second = dataclasses.replace(request, request_id=ident("flex-2"), first_slot=FLEX_SLOT + 86_400,
                                 offer_deadline_ms=t + 3_600_000)
    ledger.certify("flex-request-2", [("flex-request-2", g("gateway", "flex_request", second, t))])
    deadline = second.offer_deadline_ms
    return flex_invalid_entries(ledger, [
        ("flex-request-from-non-operator", "alice is neither the zone operator nor granted by it",
         "alice", "flex_request", dataclasses.replace(second, request_id=ident("flex-3")), deadline - 1000,
         "not_operator"),
        ("flex-offer-after-deadline", "bob's offer is dated at the offer deadline",
         "bob", "flex_offer", dataclasses.replace(offer, request_id=second.request_id, meter_key=PUB["bob-meter"]),
         deadline, "offer dated"),
        ("flex-offer-beyond-capability", "carol's connection moves at most 1100 + 1250 Wh from her baseline",
         "carol", "flex_offer", dataclasses.replace(offer, request_id=second.request_id, qty_wh=(2400,)),
         deadline - 1000, "beyond_capability"),
        ("flex-award-beyond-request", "2600 Wh awarded of 2500 requested", "gateway", "flex_award",
         FlexAward(second.request_id, (carol,), (FlexAwardLine(carol, (2600,)),)), deadline, "award_beyond_request")])


def flex_invalid_entries(ledger: Ledger, cases: list[tuple[str, str, str, str, Any, int, str]]) -> list[dict[str, Any]]:
    """Bad flex entries ``(name, what, who, kind, body, dated, detail)`` judged on the scenario's
    state; ``detail`` starts the rejection's detail (the flex reason inside ``bad_body``). The
    state must be final when this is called: the file's reader replays the cases on it."""
    state, out = ledger.state, []
    for name, what, who, entry_kind, body, dated, detail in cases:
        entry = sign(build_entry(RULES, PUB[who], state.head(PUB[who]), entry_kind, body, dated), KEYS[who]).encoded
        decision = decide_vote(state, {}, [entry], RULES, dated)
        if not decision.rejections or not decision.rejections[0].detail.startswith(detail):
            raise RuntimeError(f"flex case {name}: {decision.rejections}")
        out.append({"name": name, "what": what, "validator_now_ms": dated, "entries_hex": [entry.hex()],
                    "voted_before": {}, "expect": rejection_json(decision), "detail_starts_with": detail})
    return out


def invalid_entries(ledger: Ledger) -> tuple[list[dict[str, Any]], tuple[VoteRequest, VoteReply, Signed[Any]]]:
    """Entries judged by a validator on the scenario's final state (``decide_vote``)."""
    state, now = ledger.state, DUE + 60_000
    alice, bob = PUB["alice"], PUB["bob"]
    pool_id = compute_pool_id(PUB["station"], ZONE, SLOT)

    def on_head(who: str, entry_kind: str, body: Any, /, dated: int = now, **changes: Any) -> bytes:
        entry = build_entry(RULES, PUB[who], state.head(PUB[who]), entry_kind, body, dated)
        return sign(dataclasses.replace(entry, **changes), KEYS[who]).encoded

    good = sign(build_entry(RULES, bob, state.head(bob), "transfer", Transfer(alice, 1000), now), KEYS["bob"])
    forged = to_plain(good.body)
    forged[-1] = pack(to_plain(Transfer(alice, 999_000)))
    tampered = pack([good.spec.kind, good.spec.version, good.signer, forged, good.signature])
    after_good = ChainHead(good.body.seq + 1, entry_hash(good), good.body.time_ms)
    too_much = sign(build_entry(RULES, bob, after_good, "transfer", Transfer(alice, 10**12), now), KEYS["bob"])
    after_that = sign(build_entry(RULES, bob, ChainHead(too_much.body.seq + 1, entry_hash(too_much), now), "transfer",
                                  Transfer(alice, 1), now), KEYS["bob"])
    other = sign(build_entry(RULES, bob, state.head(bob), "transfer", Transfer(alice, 2000), now), KEYS["bob"])
    late = MeterReading(account=alice, meter_key=PUB["alice-meter"], zone=ZONE, slot=SLOT + 900, import_wh=0,
                        export_wh=10, green_wh=0, green_source=Source.NONE, import_total_wh=5_000,
                        export_total_wh=80_010, created_ms=SLOT_RULES.metering_due_ms(SLOT + 900))
    cases: list[tuple[str, str, list[bytes], dict[bytes, bytes]]] = [
        ("valid", "a transfer on bob's head", [good.encoded], {}),
        ("longest-prefix", "valid, then an overdraft, then an entry extending it: the vote covers the first only",
         [good.encoded, too_much.encoded, after_that.encoded], {}),
        ("bad-signature", "the transfer's amount changed after signing", [tampered], {}),
        ("overdraft", "more than bob's spendable balance: waits (credits may arrive)", [on_head(
            "bob", "transfer", Transfer(alice, 10**12))], {}),
        ("seq-gap", "seq one past the head: waits for the missing entry",
         [on_head("alice", "burn", Burn(1), seq=state.head(alice).next_seq + 1)], {}),
        ("wrong-prev-hash", "does not link to the certified head",
         [on_head("alice", "burn", Burn(1), prev_hash=bytes(32))], {}),
        ("time-backwards", "dated before its predecessor", [on_head("alice", "burn", Burn(1), time_ms=NOW)], {}),
        ("not-yet", "dated 60 s after the validator's clock (skew 5 s): waits, never refused",
         [on_head("alice", "burn", Burn(1), dated=now + 60_000)], {}),
        ("unknown-kind", "a kind this validator has not registered",
         [on_head("alice", "burn", Burn(1), kind="teleport")], {}),
        ("wrong-kind-for-account", "only the gateway mints", [on_head("alice", "mint", Mint(bob, 1))], {}),
        ("duplicate-take", "a second lock with take-1's id", [on_head("bob", "lock", dataclasses.replace(
            state.locks[ident("take-1")].lock, deadline_ms=now + 60_000))], {}),
        ("lock-closed", "a fill of take-2, which alice declined", [on_head("alice", "fill", Fill(
            ident("take-2"), bob, ident("offer-1"), 200, 250_000))], {}),
        ("meter-reading-late", "a reading created at its slot's metering deadline",
         [on_head("alice", "meter", MeterEntryBody(sign(late, KEYS["alice-meter"]).encoded))], {}),
        ("already-voted", "this validator voted for another entry at bob's next seq",
         [good.encoded], {seq_key(other.body): entry_hash(other)}),
        ("pool-trim-after-gate-closure", "valid: the station lowers its frozen pool's cap (40 000 Wh certified)",
         [on_head("station", "pool_update", PoolUpdate(pool_id=pool_id, energy_cap_wh=30_000, add_energy_wh=0,
                                                       at_ms=now))], {}),
        ("pool-raise-after-gate-closure", "a higher cap for a frozen pool: only a lower one is taken",
         [on_head("station", "pool_update", PoolUpdate(pool_id=pool_id, energy_cap_wh=45_000, add_energy_wh=0,
                                                       at_ms=now))], {}),
    ]
    out = []
    for name, what, entries, voted in cases:
        decision = decide_vote(state, voted, entries, RULES, now)
        out.append({"name": name, "what": what, "validator_now_ms": now, "entries_hex": [e.hex() for e in entries],
                    "voted_before": {k.hex(): v.hex() for k, v in voted.items()}, "expect": rejection_json(decision)})
    # validator-0's whole answer to the lock-closed entry: no vote, the rejection, a signed refusal.
    closed = next(entries for name, _, entries, _ in cases if name == "lock-closed")
    decision = decide_vote(state, {}, closed, RULES, now)
    refusal = make_refusal(COMMITTEE, VALIDATORS[0], decision.refused_hash, decision.rejections[0].reason)
    return out, (VoteRequest(2, tuple(closed)), VoteReply(2, b"", decision.rejections, refusal.encoded, b""), refusal)


def ledger_gossip_cases(fill_batch: CertifiedEntries, swap_batch: CertifiedEntries) -> list[dict[str, Any]]:
    """Payloads on the ledger topic: ACCEPT iff the certificate and inclusion check out."""
    cert = fill_batch.certificate
    forged_sigs = (cert.signatures[0][:-1] + bytes([cert.signatures[0][-1] ^ 1]), *cert.signatures[1:])
    cases = [
        ("certified-batch", "a certified batch, whole", encode_certified(fill_batch)),
        ("bad-vote-signature", "one vote signature altered",
         encode_certified(dataclasses.replace(fill_batch, certificate=dataclasses.replace(cert, signatures=forged_sigs)))),
        ("below-quorum", "two signatures where the quorum is three", encode_certified(dataclasses.replace(
            fill_batch, certificate=dataclasses.replace(cert, signers=cert.signers[:2], signatures=cert.signatures[:2])))),
        ("outsider-signer", "a signer outside the committee", encode_certified(dataclasses.replace(
            fill_batch, certificate=dataclasses.replace(cert, signers=(PUB["mallory"], *cert.signers[1:]))))),
        ("entry-not-in-batch", "the fill's certificate with the swap's entry",
         encode_certified(CertifiedEntries(cert, (), swap_batch.entries))),
        ("not-decodable", "not a CertifiedEntries structure", pack(["certified", 1])),
    ]
    out = []
    for name, what, data in cases:
        try:
            verify_batch(COMMITTEE, decode_certified(data), set())
            expect = {"result": "ACCEPT"}
        except (WireError, CertificateInvalid) as exc:
            expect = {"result": "REJECT", "error": type(exc).__name__}
        out.append({"name": name, "what": what, "payload_hex": data.hex(), "expect": expect})
    return out


def streams(take: Signed[Any], reserved: Signed[Any], confirm: Signed[Any], filled: Signed[Any], query: Signed[Any],
            state_answer: Signed[Any], request: Signed[Any], swapped: Signed[Any], ledger: Ledger, fill_batch: CertifiedEntries,
            refused: tuple[VoteRequest, VoteReply]) -> list[dict[str, Any]]:
    """Request and answer frames of each stream protocol, as payloads and as framed stream bytes."""
    decision = decide_vote(LedgerState(), {}, ledger.certified["funding"].entries, RULES, NOW)
    reply = VoteReply(1, make_vote(COMMITTEE, VALIDATORS[1], decision.entry_hashes).encoded, ())
    sync_batch = ledger.certified["funding"]
    leaves = tuple(entry_hash(s) for s in verified(sync_batch))
    sync_reply = SyncReply(1, (CertifiedEntries(sync_batch.certificate, leaves, sync_batch.entries[:1]),), False)
    exchanges = [
        (TAKE_PROTOCOL, MAX_TAKE_BYTES, "take", take.encoded, reserved.encoded),
        (TAKE_PROTOCOL, MAX_TAKE_BYTES, "take-confirm", confirm.encoded, filled.encoded),
        (SWAP_PROTOCOL, MAX_SWAP_BYTES, "pool-query", query.encoded, state_answer.encoded),
        (SWAP_PROTOCOL, MAX_SWAP_BYTES, "swap", request.encoded, swapped.encoded),
        (VOTE_PROTOCOL, MAX_FRAME_BYTES, "vote-request", encode_frame(VoteRequest(1, ledger.certified["funding"].entries)),
         encode_frame(reply)),
        (VOTE_PROTOCOL, MAX_FRAME_BYTES, "vote-refused", encode_frame(refused[0]), encode_frame(refused[1])),
        (VOTE_PROTOCOL, MAX_FRAME_BYTES, "confirm", encode_frame(Confirm(fill_batch)),
         encode_frame(Confirmed(fill_batch.certificate.batch_root))),
        (SYNC_PROTOCOL, MAX_FRAME_BYTES, "sync", encode_frame(SyncRequest(1, (AccountHead(PUB["gateway"], 0),), 1)),
         encode_frame(sync_reply)),
    ]
    return [{"protocol": protocol, "name": name, "max_frame_bytes": limit, "request_hex": req.hex(),
             "request_framed_hex": frame_bytes(req, limit).hex(), "answer_hex": ans.hex(),
             "answer_framed_hex": frame_bytes(ans, limit).hex()}
            for protocol, limit, name, req, ans in exchanges]


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help=f"rewrite {VECTORS_FILE.relative_to(ROOT)}")
    group.add_argument("--check", action="store_true", help="exit 1 if the checked-in file is stale")
    args = parser.parse_args(argv)
    text = render(build())
    if args.write:
        VECTORS_FILE.write_text(text, encoding="utf-8")
    elif args.check:
        stale = not VECTORS_FILE.exists() or VECTORS_FILE.read_text(encoding="utf-8") != text
        if stale:
            print(f"{VECTORS_FILE.relative_to(ROOT)} is stale: run `{REGENERATE}`", file=sys.stderr)
        return 1 if stale else 0
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
