"""Test tools for the ledger, kept in the package so tests, simnet and benchmarks share them.

``LedgerFixture`` is a zone with a gateway and a committee of deterministic keys, and helpers to
build signed entries and certify them with the committee's keys directly (no network).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pgrid.identity import NodeKey
from p2pgrid.ledger.chain import ChainHead, LedgerRules, LedgerState, build_entry
from p2pgrid.ledger.committee import Committee, assemble_certificate, make_vote
from p2pgrid.ledger.messages import CertifiedEntries, Entry, entry_hash
from p2pgrid.wire import Signed, sign


def seeded_key(label: str) -> NodeKey:
    """A deterministic key for tests: the same label gives the same key on every run."""
    return NodeKey(hashlib.sha256(b"p2pgrid-test-key/" + label.encode()).digest())


@dataclass
class LedgerFixture:
    zone: str = "testzone"
    n_validators: int = 4
    credit_limit_uc: int = 0
    gateway: NodeKey = field(default_factory=lambda: seeded_key("gateway"))
    validators: list[NodeKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.validators:
            self.validators = [seeded_key(f"validator-{i}") for i in range(self.n_validators)]
        self.committee = Committee(self.zone, 0, tuple(v.public_key for v in self.validators))
        self.rules = LedgerRules(self.zone, self.gateway.public_key, self.credit_limit_uc,
                                 committee=self.committee.validators, committee_epoch=self.committee.epoch)

    def entry(self, key: NodeKey, head: ChainHead, kind: str, body: Any, time_ms: int = 0) -> Signed[Entry]:
        """``key``'s entry extending ``head``, dated ``time_ms`` (never before the head's date)."""
        return sign(build_entry(self.rules, key.public_key, head, kind, body, time_ms), key)

    def entry_on(self, state: LedgerState, key: NodeKey, kind: str, body: Any, time_ms: int = 0) -> Signed[Entry]:
        """The entry extending ``key``'s certified head in ``state``, dated ``time_ms``."""
        return self.entry(key, state.head(key.public_key), kind, body, time_ms)

    def certify(self, entries: Sequence[Signed[Entry]], signers: Sequence[NodeKey] | None = None) -> CertifiedEntries:
        """Certify a batch with the given validator keys (default: a quorum), skipping the rules."""
        signers = list(signers) if signers is not None else self.validators[:self.committee.quorum]
        hashes = [entry_hash(s) for s in entries]
        votes = [make_vote(self.committee, key, hashes) for key in signers]
        cert = assemble_certificate(self.committee, votes)
        if cert is None:
            raise ValueError("not enough signers for a certificate")
        return CertifiedEntries(cert, (), tuple(s.encoded for s in entries))


@asynccontextmanager
async def open_ledger_node(network: Any, key: NodeKey, db_path: Path, config: Any,
                           clock: Callable[[], int] | None = None) -> AsyncIterator[Any]:
    """A ``LedgerService`` on a ``MemoryNetwork`` transport (dialled to every node already on it)
    with its own store at ``db_path``."""
    from p2pgrid.ledger.service import open_ledger_service, wall_clock_ms
    from p2pgrid.ledger.store import open_store

    async with AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(db_path))
        transport = await stack.enter_async_context(network.open_transport(key, connect_to=network.addresses))
        yield await stack.enter_async_context(
            open_ledger_service(key, config, store, transport, clock or wall_clock_ms))
