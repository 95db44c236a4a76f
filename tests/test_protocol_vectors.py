"""docs/protocol-vectors.json is exactly what the code produces, and every vector in it decodes,
verifies and gets its stated verdict from the production functions (not from the generator).

The file is the reference another implementation tests against (docs/PROTOCOL.md, "Test
vectors"); when this test fails after a deliberate protocol change, regenerate it with
``python tools/protocol_vectors.py --write`` and review the diff as a change of the wire protocol.
"""

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from p2pgrid import errors
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import LedgerState, apply_entry, decode_body, state_root
from p2pgrid.ledger.committee import decide_vote, verify_certificate
from p2pgrid.ledger.messages import Certificate, SyncReply, decode_certified, decode_frame, encode_frame, entry_hash
from p2pgrid.ledger.protocol import SyncSession, verify_batch
from p2pgrid.ledger.testing import seeded_key
from p2pgrid.net.framing import FrameDecoder, encode_uvarint
from p2pgrid.net.reconcile import compute_digest, peek_item_key
from p2pgrid.net.reconcile_messages import BOOKS_FRAME_TAGS, BOOKS_PROTOCOL, decode_books_frame, encode_books_frame
from p2pgrid.net.validation import OrderBatchValidator, ReplayCache, validate_order_batch
from p2pgrid.trading.maker import Accept, decide_take
from p2pgrid.trading.messages import Take
from p2pgrid.wire import Order, decode, decode_signed, pack, signing_bytes, to_plain, verify_signature

ROOT = Path(__file__).resolve().parents[1]
VECTORS_FILE = ROOT / "docs" / "protocol-vectors.json"


def _load_generator():
    spec = importlib.util.spec_from_file_location("protocol_vectors", ROOT / "tools" / "protocol_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()
VECTORS = json.loads(VECTORS_FILE.read_text(encoding="utf-8"))
LEDGER_ENTRIES = {e["name"]: e for e in VECTORS["ledger"]["entries"]}


def _first_difference(old, new, path="$"):
    if type(old) is not type(new) or not isinstance(old, (dict, list)):
        return None if old == new else path
    keys = range(max(len(old), len(new))) if isinstance(old, list) else sorted(set(old) | set(new))
    for key in keys:
        try:
            found = _first_difference(old[key], new[key], f"{path}[{key!r}]")
        except (IndexError, KeyError):
            return f"{path}[{key!r}]"
        if found:
            return found
    return None


def test_checked_in_vectors_are_what_the_code_produces():
    fresh = GEN.render(GEN.build())
    if fresh != VECTORS_FILE.read_text(encoding="utf-8"):
        where = _first_difference(VECTORS, json.loads(fresh)) or "formatting"
        pytest.fail(f"docs/protocol-vectors.json is stale (first difference at {where}). The code now puts "
                    f"other bytes on the wire or judges them differently. If that is intended, run "
                    f"`{GEN.REGENERATE}`, review the diff as a protocol change and update docs/PROTOCOL.md.")


@pytest.mark.parametrize("name", sorted(VECTORS["keys"]))
def test_keys_come_from_their_seeds(name):
    key = VECTORS["keys"][name]
    assert seeded_key(name).seed.hex() == key["seed_hex"] == hashlib.sha256(f"p2pgrid-test-key/{name}".encode()).hexdigest()
    assert NodeKey(bytes.fromhex(key["seed_hex"])).public_key.hex() == key["public_key_hex"]


SIGNED = VECTORS["messages"] + VECTORS["ledger"]["entries"]


@pytest.mark.parametrize("vector", SIGNED, ids=[v["name"] for v in SIGNED])
def test_signed_vector_decodes_and_verifies(vector):
    data = bytes.fromhex(vector["encoded_hex"])
    signed = decode_signed(data)
    signer = bytes.fromhex(VECTORS["keys"][vector["signer"]]["public_key_hex"])
    assert (signed.spec.kind, signed.spec.version, signed.spec.domain) == (vector["kind"], vector["version"], vector["domain"])
    assert signed.signer == signer and signed.signature.hex() == vector["signature_hex"]
    assert GEN.as_json(signed.body) == vector["fields"]
    assert GEN.from_json(type(signed.body), vector["fields"]) == signed.body
    body = to_plain(signed.body)
    assert pack(body).hex() == vector["body_hex"]
    message = signing_bytes(vector["domain"], signer, body)
    assert message.hex() == vector.get("signing_bytes_hex", message.hex())
    assert verify_signature(signer, message, signed.signature)
    assert hashlib.sha256(data).hexdigest() == vector["message_id_hex"] == signed.message_id.hex()
    if "body_kind" in vector:
        assert entry_hash(signed).hex() == vector["entry_hash_hex"]
        assert GEN.as_json(decode_body(signed.body)) == vector["body_fields"]


@pytest.mark.parametrize("case", VECTORS["decoding"], ids=[c["name"] for c in VECTORS["decoding"]])
def test_decoding_case(case):
    data = bytes.fromhex(case["hex"])
    if case["expect"] == "ok":
        assert decode_signed(data).encoded == data
    else:
        with pytest.raises(getattr(errors, case["expect"])):
            decode_signed(data)


def test_order_gossip_verdicts():
    rules = GEN.ORDER_RULES
    shared = OrderBatchValidator(rules)      # "accepted" then "replayed-batch" go to one validator
    for case in VECTORS["order_gossip"]:
        data, sender = bytes.fromhex(case["batch_hex"]), bytes.fromhex(VECTORS["keys"][case["sender"]]["public_key_hex"])
        if case["name"] in ("accepted", "replayed-batch"):
            verdict = shared.validate(data, sender, case["now_ms"])
        else:
            verdict = validate_order_batch(data, sender, rules, case["now_ms"], ReplayCache())
        expect = case["expect"]
        assert verdict.result.value.upper() == expect["result"], case["name"]
        assert (verdict.reason.value if verdict.reason else None) == expect["reason"], case["name"]
        assert [(v.result.value.upper(), v.reason.value if v.reason else None) for v in verdict.items] == \
            [(i["result"], i["reason"]) for i in expect["items"]], case["name"]


@pytest.mark.parametrize("case", VECTORS["take_decisions"], ids=[c["name"] for c in VECTORS["take_decisions"]])
def test_take_decision(case):
    verdict = decide_take(GEN.from_json(Take, case["take"]), GEN.from_json(Order, case["order"]), case["certified_wh"],
                          case["reserved_wh"], GEN.SLOT_RULES, case["now_ms"], case["grid_fee"])
    if isinstance(verdict, Accept):
        assert case["expect"] == {"status": "accept", "qty_wh": verdict.qty_wh}
    else:
        assert case["expect"] == {"status": "refuse", "reason": verdict.reason.value, "available_wh": verdict.available_wh}


def replayed_ledger() -> LedgerState:
    """The scenario's ledger rebuilt from the file's bytes, batch by batch, as a validator would."""
    state = LedgerState()
    for batch in VECTORS["ledger"]["batches"]:
        entries = [bytes.fromhex(LEDGER_ENTRIES[name]["encoded_hex"]) for name in batch["entries"]]
        decision = decide_vote(state, {}, entries, GEN.RULES, batch["validator_now_ms"])
        assert GEN.rejection_json(decision) == batch["decision"], batch["name"]
        certificate = decode(Certificate, bytes.fromhex(batch["certificate_hex"]))
        verify_certificate(GEN.COMMITTEE, certificate)
        assert certificate.batch_root.hex() == batch["batch_root_hex"]
        for signed in verify_batch(GEN.COMMITTEE, GEN.CertifiedEntries(certificate, (), tuple(entries)), set()).entries:
            apply_entry(state, signed, GEN.RULES)
        assert {GEN.NAME_OF[a]: b for a, b in sorted(state.balances.items())} == batch["balances_after"], batch["name"]
    return state


def test_ledger_scenario_replays_from_the_file():
    state = replayed_ledger()
    assert state.money_total() == VECTORS["ledger"]["money_total"] == 0
    assert state_root(state).hex() == VECTORS["ledger"]["final_state_root_hex"]
    for case in VECTORS["ledger_invalid"]:
        voted = {bytes.fromhex(k): bytes.fromhex(v) for k, v in case["voted_before"].items()}
        decision = decide_vote(state, voted, [bytes.fromhex(e) for e in case["entries_hex"]], GEN.RULES,
                               case["validator_now_ms"])
        assert GEN.rejection_json(decision) == case["expect"], case["name"]


@pytest.mark.parametrize("case", VECTORS["ledger_gossip"], ids=[c["name"] for c in VECTORS["ledger_gossip"]])
def test_ledger_gossip_verdict(case):
    try:
        verify_batch(GEN.COMMITTEE, decode_certified(bytes.fromhex(case["payload_hex"])), set())
        result = {"result": "ACCEPT"}
    except (errors.WireError, errors.LedgerError) as exc:
        result = {"result": "REJECT", "error": type(exc).__name__}
    assert result == case["expect"]


@pytest.mark.parametrize("case", VECTORS["streams"], ids=[f"{c['protocol']} {c['name']}" for c in VECTORS["streams"]])
def test_stream_frames(case):
    frames = []
    for side in ("request", "answer"):
        payload, framed = bytes.fromhex(case[f"{side}_hex"]), bytes.fromhex(case[f"{side}_framed_hex"])
        assert framed == encode_uvarint(len(payload)) + payload
        decoder = FrameDecoder(case["max_frame_bytes"])
        decoder.feed(framed)
        assert decoder.next_frame() == payload
        if case["protocol"] in ("/p2pgrid/vote/1", "/p2pgrid/sync/1"):
            frames.append(decode_frame(payload))
            assert encode_frame(frames[-1]) == payload
        elif case["protocol"] == BOOKS_PROTOCOL:
            frames.append(decode_books_frame(payload))
            assert encode_books_frame(frames[-1]) == payload
        else:
            frames.append(decode_signed(payload))
    if case["protocol"] == "/p2pgrid/sync/1":
        request, reply = frames
        session = SyncSession(GEN.COMMITTEE, {h.account: h.next_seq for h in request.heads}, request.max_entries)
        assert session.next_request() == request and isinstance(reply, SyncReply)
        assert [len(b.entries) for b in session.receive_reply(reply)] == [1]
    if case["name"] == "books-fetch":
        request, reply = frames
        assert [peek_item_key(item) for item in reply.items] == list(request.keys)
        assert all(decode_signed(item) for item in reply.items)


@pytest.mark.parametrize("case", VECTORS["book_digests"], ids=[c["name"] for c in VECTORS["book_digests"]])
def test_book_digests(case):
    keys = [bytes.fromhex(k) for k in case["keys_hex"]]
    digest = compute_digest(case["zone"], case["slot"], reversed(keys))
    assert (digest.count, digest.digest.hex()) == (case["count"], case["digest_hex"])


def test_vectors_and_protocol_page_cover_every_kind_protocol_and_reason():
    """A kind, entry kind, stream protocol, frame tag or reason code added to the code must reach
    the vectors (regenerate them) and docs/PROTOCOL.md (describe it)."""
    from p2pgrid.ledger.chain import RejectReason
    from p2pgrid.ledger.messages import FRAME_TAGS
    from p2pgrid.net.validation import Reason
    from p2pgrid.pools.messages import SwapRefuseReason
    from p2pgrid.trading.messages import RefuseReason

    kinds = {kind for kind, _ in GEN.protocol_message_kinds()}    # tests register kinds of their own
    entry_kinds = set(GEN.protocol_entry_kinds())
    assert {m["kind"] for m in VECTORS["messages"]} | {"p2pgrid/entry"} == kinds
    assert {e["body_kind"] for e in VECTORS["ledger"]["entries"]} == entry_kinds
    assert {s["protocol"] for s in VECTORS["streams"]} == {"/p2pgrid/take/2", "/p2pgrid/swap/1", "/p2pgrid/vote/1",
                                                           "/p2pgrid/sync/1", BOOKS_PROTOCOL}
    page = (ROOT / "docs" / "PROTOCOL.md").read_text(encoding="utf-8")
    named = kinds | entry_kinds | set(FRAME_TAGS) | set(BOOKS_FRAME_TAGS) | {s["protocol"] for s in VECTORS["streams"]}
    named |= {r.value for enum in (Reason, RejectReason, RefuseReason, SwapRefuseReason) for r in enum}
    missing = sorted(n for n in named if f"`{n}`" not in page and f'"{n}"' not in page)
    assert not missing, f"docs/PROTOCOL.md does not describe: {missing}"
