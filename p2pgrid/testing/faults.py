"""Fault controls simnet drives a node with, and a deliberately broken node (test-only).

Fault controls (``simnet.fault_control = true``)
    ``FaultGate`` wraps the node's transport: a **partition** blocks peers (dials and streams to
    them fail, their gossip is ignored, open streams to them are closed); ``heal`` lifts it. The
    ``FaultControl`` service executes commands dropped as JSON in ``<data_dir>/control/``
    (``apply_fault`` runs the same commands directly for in-memory clusters): ``partition``,
    ``heal``, ``stale_device``, and byzantine acts ``spam`` (garbage and oversize gossip),
    ``bad_signature`` (tampered and foreign-signed orders), ``replay`` (a batch published twice and
    an order twice in one batch), ``equivocate`` (two entries at one (account, seq), each sent to a
    different part of the committee) and ``double_vote`` (this validator from now on also votes for
    entries conflicting with ones it voted for). Honest nodes must shrug all of it off. Every
    command and its outcome is appended to ``faults.jsonl`` (``p2pgrid.agent.runlog``).

``simnet.overfill_once`` (test-only broken node): ``Overfiller`` certifies one trade that fills an
offer beyond its signed size (with a throwaway accomplice key as the seller, whose lock states a
larger order size); the ledger cannot see the signed order, simnet's end check must.
"""

from __future__ import annotations

import json
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pgrid.agent.runlog import FAULTS_LOG, append_jsonl, log_order, real_ms
from p2pgrid.errors import LedgerError, NetError, P2PGridError, WireError
from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import RejectReason, build_entry
from p2pgrid.ledger.committee import assemble_certificate, make_vote
from p2pgrid.ledger.messages import (
    MAX_FRAME_BYTES, CertifiedEntries, Confirm, Confirmed, Fill, Lock, Transfer, Vote, VoteReply, VoteRequest,
    decode_frame, encode_certified, encode_frame, hash_bytes,
)
from p2pgrid.ledger.service import VOTE_PROTOCOL, ledger_topic
from p2pgrid.net.orders import orders_topic
from p2pgrid.net.transport import (
    DEFAULT_MAX_FRAME_BYTES, FramedStream, PeerUnreachable, StreamClosed, StreamHandler, Transport, ValidationResult, Validator, accept_all,
)
from p2pgrid.service import WithAgent, WithLedger, WithTransport
from p2pgrid.units import trade_value
from p2pgrid.wire import Order, OrderBatch, Side, Source, decode_signed, encode, sign

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

CONTROL_DIR = "control"
CONTROL_POLL_S = 0.1


class FaultHost(WithLedger, WithTransport, WithAgent, Protocol):
    """What fault commands use of the node (byzantine acts also keep their state on it, as ``byzantine``)."""


# --- the fault gate (test-only) -------------------------------------------------------------------

class FaultGate:
    """A ``Transport`` that can be partitioned from given peers (see the module docstring)."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.blocked: set[bytes] = set()
        self._forged: list[bytes] = []     # byzantine acts' messages our own validator must pass
        self._streams: weakref.WeakSet[_GatedStream] = weakref.WeakSet()

    def __getattr__(self, name: str) -> Any:   # mesh_peers, host, … for tests and benchmarks
        return getattr(self.inner, name)

    @property
    def local_peer(self) -> bytes:
        return self.inner.local_peer

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        return self.inner.listen_addrs

    async def connect(self, addr: str) -> bytes:
        peer = await self.inner.connect(addr)
        if peer in self.blocked:
            raise PeerUnreachable(f"partitioned from {peer.hex()[:16]}")
        return peer

    def peers(self) -> frozenset[bytes]:
        return self.inner.peers() - self.blocked

    def supports(self, peer: bytes, protocol: str) -> bool:
        return peer not in self.blocked and self.inner.supports(peer, protocol)

    async def publish(self, topic: str, data: bytes) -> None:
        await self.inner.publish(topic, data)

    async def subscribe(self, topic: str, validator: Validator = accept_all) -> Any:
        def gated(sender: bytes, data: bytes) -> ValidationResult:
            if sender in self.blocked:
                return ValidationResult.IGNORE
            if sender == self.inner.local_peer and data in self._forged:
                return ValidationResult.ACCEPT    # a byzantine act: let it out, the peers must judge it
            return validator(sender, data)
        return await self.inner.subscribe(topic, gated)

    def topic_peers(self, topic: str) -> frozenset[bytes]:
        return self.inner.topic_peers(topic) - self.blocked

    def peer_score(self, peer: bytes, topic: str) -> float:
        return self.inner.peer_score(peer, topic)

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        async def gated(stream: FramedStream) -> None:
            if stream.peer in self.blocked:
                return
            wrapped = _GatedStream(stream, self)
            self._streams.add(wrapped)
            await handler(wrapped)
        self.inner.set_stream_handler(protocol, gated, max_frame_bytes=max_frame_bytes)

    async def open_stream(self, peer: bytes, protocol: str, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> FramedStream:
        if peer in self.blocked:
            raise PeerUnreachable(f"partitioned from {peer.hex()[:16]}")
        stream = _GatedStream(await self.inner.open_stream(peer, protocol, max_frame_bytes=max_frame_bytes), self)
        self._streams.add(stream)
        return stream

    async def publish_forged(self, topic: str, data: bytes) -> None:
        """Publish ``data`` even though our own validator would stop it (byzantine acts only):
        transports validate a node's own messages too, and drop what fails."""
        self._forged.append(data)
        try:
            await self.inner.publish(topic, data)
        finally:
            self._forged.remove(data)

    async def partition(self, peers: Sequence[bytes]) -> None:
        self.blocked |= set(peers)
        for stream in list(self._streams):
            if stream.peer in self.blocked:
                try:
                    await stream.aclose()
                except NetError:
                    pass

    def heal(self) -> None:
        self.blocked.clear()


class _GatedStream:
    def __init__(self, inner: FramedStream, gate: FaultGate) -> None:
        self.inner = inner
        self.gate = gate

    @property
    def peer(self) -> bytes:
        return self.inner.peer

    @property
    def protocol(self) -> str:
        return self.inner.protocol

    @property
    def max_frame_bytes(self) -> int:
        return self.inner.max_frame_bytes

    def _check(self) -> None:
        if self.inner.peer in self.gate.blocked:
            raise StreamClosed(f"partitioned from {self.inner.peer.hex()[:16]}")

    async def send_frame(self, data: bytes) -> None:
        self._check()
        await self.inner.send_frame(data)

    async def receive_frame(self) -> bytes:
        self._check()
        frame = await self.inner.receive_frame()
        self._check()
        return frame

    async def aclose(self) -> None:
        await self.inner.aclose()


def gate_transport(config: NodeConfig, transport: Transport) -> Transport:
    """The node's transport, behind a ``FaultGate`` when fault control is on (test-only)."""
    return FaultGate(transport) if config.simnet.fault_control else transport


# --- fault commands ---------------------------------------------------------------------------

@dataclass
class ByzantineState:
    double_voting: bool = False
    double_votes: int = 0
    acts: list[str] = field(default_factory=list)


async def apply_fault(node: FaultHost, command: dict[str, Any]) -> dict[str, Any]:
    """Execute one fault command on ``node``; returns what happened (also appended to faults.jsonl)."""
    op = command.get("op")
    result: dict[str, Any] = {"op": op, "ok": True}
    gate = node.transport
    if op in ("partition", "heal"):
        if not isinstance(gate, FaultGate):
            raise P2PGridError("partition needs simnet.fault_control = true")
        if op == "partition":
            await gate.partition([bytes.fromhex(p) for p in command["peers"]])
        else:
            gate.heal()
            await _reconnect_and_sync(node)
    elif op == "stale_device":
        agent = getattr(node, "agent", None)
        if agent is None:
            raise P2PGridError("stale_device needs the profile strategy")
        agent.stale_since_ms = node.clock.now_ms()
    elif op in BYZANTINE_ACTS:
        result.update(await BYZANTINE_ACTS[op](node))
        _byzantine(node).acts.append(op)
    else:
        raise P2PGridError(f"unknown fault command {op!r}")
    result["market_ms"] = node.clock.now_ms()
    append_jsonl(node.config.node.data_dir / FAULTS_LOG, result)
    return result


async def _reconnect_and_sync(node: FaultHost) -> None:
    """After a heal: dial the bootstrap peers again (links may have dropped) and pull what the
    other side certified meanwhile (anti-entropy would get there too, one peer per interval)."""
    with trio.move_on_after(10):
        for addr in node.config.network.bootstrap:
            try:
                await node.transport.connect(addr)
            except NetError:
                continue
        if node.ledger is not None:
            try:
                await node.ledger.sync_all()
            except (NetError, LedgerError):
                pass


def _byzantine(node: FaultHost) -> ByzantineState:
    state = getattr(node, "byzantine", None)
    if state is None:
        state = ByzantineState()
        node.byzantine = state  # type: ignore[attr-defined]
    return state


async def _publish_bad(node: FaultHost, names: Sequence[str], repeat: int = 1) -> dict[str, Any]:
    from p2pgrid.net.testing import bad_order_batches
    from p2pgrid.net.validation import OrderRules

    rules = OrderRules(zone=node.zone, slot_rules=node.config.zone.slot_rules)
    bad = bad_order_batches(node.key, NodeKey.generate(), rules, node.clock.now_ms())
    sent = 0
    for _ in range(repeat):
        for name in names:
            await _publish_forged(node, orders_topic(node.zone), bad[name][0])
            sent += 1
    return {"published": sent}


async def _publish_forged(node: FaultHost, topic: str, data: bytes) -> None:
    gate = node.transport
    if not isinstance(gate, FaultGate):
        raise P2PGridError("byzantine acts need simnet.fault_control = true")
    await gate.publish_forged(topic, data)


async def act_spam(node: FaultHost) -> dict[str, Any]:
    return await _publish_bad(node, ["garbage_bytes", "batch_not_canonical", "oversize_batch", "oversize_item"],
                              repeat=5)


async def act_bad_signature(node: FaultHost) -> dict[str, Any]:
    return await _publish_bad(node, ["tampered_order", "signed_by_someone_else", "one_bad_item_among_good"], repeat=3)


async def act_replay(node: FaultHost) -> dict[str, Any]:
    """One valid order nobody will take (far slot, ten times retail), its batch published twice,
    plus a batch holding one order twice."""
    rules = node.config.zone.slot_rules
    now = node.clock.now_ms()
    slot = rules.tradable_slots(now)[-1]
    order = Order(order_id=os.urandom(16), owner=node.key.public_key, side=Side.SELL, zone=node.zone, slot=slot,
                  qty_wh=1, limit_price=10 * node.config.zone.tariffs.retail_price, green=False, source=Source.GRID,
                  created_ms=now, expiry_ms=rules.gate_closure_ms(slot), nonce=10**9)
    data = encode(OrderBatch(node.zone, now, (sign(order, node.key).encoded,)))
    for _ in range(3):
        await _publish_forged(node, orders_topic(node.zone), data)
    extra = await _publish_bad(node, ["same_order_twice_in_batch"], repeat=2)
    return {"published": 3 + extra["published"]}


async def act_double_vote(node: FaultHost) -> dict[str, Any]:
    """From now on this validator also votes for entries that conflict with its earlier votes."""
    if node.ledger is None or not node.ledger.is_validator:
        raise P2PGridError("double_vote needs a validator node")
    state = _byzantine(node)
    state.double_voting = True
    node.transport.set_stream_handler(VOTE_PROTOCOL, lambda s: _serve_votes_twice(node, s, state),
                                      max_frame_bytes=MAX_FRAME_BYTES)
    return {}


async def _serve_votes_twice(node: FaultHost, stream: FramedStream, state: ByzantineState) -> None:
    ledger = node.ledger
    while True:
        try:
            frame = decode_frame(await stream.receive_frame())
        except WireError:
            return
        if isinstance(frame, VoteRequest):
            reply = await ledger.handle_vote_request(frame)  # type: ignore[union-attr]
            reasons = {r.reason for r in reply.rejections}
            if reasons == {RejectReason.ALREADY_VOTED.value}:
                vote = make_vote(ledger.committee, node.key, [hash_bytes(e) for e in frame.entries])  # type: ignore[union-attr]
                reply = VoteReply(frame.request_id, vote.encoded, ())
                state.double_votes += 1
            await stream.send_frame(encode_frame(reply))
        elif isinstance(frame, Confirm):
            try:
                await ledger.receive_certified(frame.batch)  # type: ignore[union-attr]
            except LedgerError:
                return
            await stream.send_frame(encode_frame(Confirmed(frame.batch.certificate.batch_root)))
        else:
            return


async def act_equivocate(node: FaultHost) -> dict[str, Any]:
    """Sign two transfers at one (account, seq) and ask disjoint-but-one parts of the committee to
    vote: the first to a quorum, the second to the rest plus one validator of the first part. An
    honest validator never votes twice at one seq, so at most the first is certified."""
    ledger = node.ledger
    if ledger is None:
        raise P2PGridError("equivocate needs a ledger")
    head = ledger.state.head(node.key.public_key)
    others = sorted(p for p in ledger.state.balances if p not in (node.key.public_key, ledger.rules.gateway))
    if not others:
        raise P2PGridError("equivocate needs another account to pay")
    now = node.clock.now_ms()
    a, b = (sign(build_entry(ledger.rules, node.key.public_key, head, "transfer", Transfer(to=to, amount=1), now),
                 node.key)
            for to in (others[0], others[-1] if len(others) > 1 else ledger.rules.gateway))
    committee = list(ledger.committee.validators)
    quorum = ledger.committee.quorum
    votes_a = await _ask_votes(node, committee[:quorum], a.encoded)
    votes_b = await _ask_votes(node, committee[quorum - 1:], b.encoded)
    certified = []
    for entry, votes in ((a, votes_a), (b, votes_b)):
        certificate = assemble_certificate(ledger.committee, votes)
        if certificate is not None:
            batch = CertifiedEntries(certificate, (), (entry.encoded,))
            await ledger.receive_certified(batch)
            await node.transport.publish(ledger_topic(node.config.zone.ledger_zone), encode_certified(batch))
            certified.append(entry is a)
    return {"votes_first": len(votes_a), "votes_second": len(votes_b), "certified": len(certified)}


async def _ask_votes(node: FaultHost, validators: Sequence[bytes], entry: bytes) -> list[Any]:
    votes = []
    for validator in validators:
        try:
            if validator == node.key.public_key:
                reply = await node.ledger.handle_vote_request(VoteRequest(1, (entry,)))  # type: ignore[union-attr]
            else:
                stream = await node.transport.open_stream(validator, VOTE_PROTOCOL, max_frame_bytes=MAX_FRAME_BYTES)
                try:
                    with trio.fail_after(10):
                        await stream.send_frame(encode_frame(VoteRequest(1, (entry,))))
                        reply = decode_frame(await stream.receive_frame())
                finally:
                    await stream.aclose()
            if isinstance(reply, VoteReply) and reply.vote:
                votes.append(decode_signed(reply.vote, Vote))
        except (NetError, WireError, trio.TooSlowError):
            continue
    return votes


BYZANTINE_ACTS: dict[str, Callable[[FaultHost], Any]] = {
    "spam": act_spam, "bad_signature": act_bad_signature, "replay": act_replay,
    "equivocate": act_equivocate, "double_vote": act_double_vote,
}


class FaultControl:
    """Executes fault commands dropped in ``<data_dir>/control/<n>.json`` (test-only)."""

    name = "fault-control"

    async def run(self, node: FaultHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        inbox = node.config.node.data_dir / CONTROL_DIR
        inbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        task_status.started()
        while True:
            for path in sorted(inbox.glob("*.json")):
                try:
                    command = json.loads(path.read_text())
                    await apply_fault(node, command)
                except (ValueError, KeyError, P2PGridError) as exc:
                    append_jsonl(node.config.node.data_dir / FAULTS_LOG, {"op": str(path.name), "ok": False,
                                                                         "error": str(exc)[:200]})
                path.unlink(missing_ok=True)
            await trio.sleep(CONTROL_POLL_S)


# --- the deliberately broken node (test-only) -------------------------------------------------

class Overfiller:
    """Once funded: certifies a fill of 2 kWh on a signed 1 kWh offer (see module docstring)."""

    name = "overfiller"

    async def run(self, node: FaultHost, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        ledger = node.ledger
        if ledger is None:
            raise RuntimeError("the overfiller needs a ledger")
        accomplice = NodeKey.generate()
        rules = node.config.zone.slot_rules
        while ledger.balance() < trade_value(2000, 100_000):
            await trio.sleep(0.2)
        now = node.clock.now_ms()
        slot = rules.tradable_slots(now)[2]
        offer = sign(Order(order_id=os.urandom(16), owner=accomplice.public_key, side=Side.SELL, zone=node.zone,
                           slot=slot, qty_wh=1000, limit_price=100_000, green=False, source=Source.GRID,
                           created_ms=now, expiry_ms=rules.gate_closure_ms(slot), nonce=1), accomplice)
        log_order(node.config.node.data_dir, offer.encoded, "offer", real_ms())
        take_id = os.urandom(16)
        try:
            await ledger.submit(ledger.next_entry("lock", Lock(
                take_id=take_id, seller=accomplice.public_key, order_id=offer.body.order_id,
                order_owner=accomplice.public_key, order_size_wh=2000, qty_wh=2000, price=100_000,
                amount=trade_value(2000, 100_000), deadline_ms=rules.gate_closure_ms(slot))))
            fill = sign(build_entry(ledger.rules, accomplice.public_key, ledger.state.head(accomplice.public_key),
                                    "fill", Fill(take_id=take_id, buyer=node.key.public_key,
                                                 order_id=offer.body.order_id, qty_wh=2000, price=100_000),
                                    node.clock.now_ms()), accomplice)
            await ledger.submit(fill)
        except LedgerError as exc:
            log.warning("overfill not certified: %s", exc)
            return
        append_jsonl(node.config.node.data_dir / FAULTS_LOG, {"op": "overfill", "ok": True,
                                                             "market_ms": node.clock.now_ms()})
        await trio.sleep_forever()


def fault_services(config: NodeConfig) -> list[Any]:
    """The fault control and the broken node's over-filler, when simnet switches them on."""
    services: list[Any] = []
    if config.simnet.fault_control:
        services.append(FaultControl())
    if config.simnet.overfill_once:
        services.append(Overfiller())
    return services
