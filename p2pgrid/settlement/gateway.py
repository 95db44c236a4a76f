"""The zone operator's node services: initial credits and meter registrations.

``GatewayFunder`` runs on the node whose key is the zone's gateway account (``[zone]
gateway_account``) when ``[gateway] fund_accounts`` lists accounts. It mints ``[gateway] fund_uc``
once to each of them, through the certified ledger (one ``mint`` entry per account in the
gateway's own chain; the gateway's balance goes negative by as much: money is conserved).

**Once, even across restarts.** Before minting it reads the gateway's certified chain from the
store and skips every account that already received a mint, so a restarted operator never pays
twice. Minting needs a quorum of validators: until one answers, it retries with a bounded backoff.
A refused attempt retries **the same signed entries** for as long as they can still be certified
(a batch some validator voted for stays in doubt and may yet be certified); new mint entries are
built only once another entry is certified at one of their seqs, when they never can be. So a
mint that was refused but certified later is never paid a second time.

``GatewayMeterRegistrar`` runs on the same node when ``[[gateway.meters]]`` lists meters: it
certifies one ``meter_registration`` entry per listed (account, meter key) — this meter measures
that account (``p2pgrid.settlement.service.register_meters``). Idempotent like funding: a key
already registered in the certified state is skipped, so a restarted operator registers nothing
twice; refusals (no quorum yet) are retried with the same backoff. Settlement only starts once
meters are registered (``p2pgrid.settlement.entries.slots_to_settle``). Registrations carry no
time rule; a meter entry whose registration has not reached a validator yet makes that validator
wait (``missing_dependency``), never refuse. It starts after the
funder is done: both write the gateway's one chain, and a chain is sequenced best by one writer at
a time while the committee is still coming up (a failed batch fails every entry built on it).

The gateway is also the single writer of the zone's ``settle`` entries (``SettlementNodeService``
in ``p2pgrid.node.ledger`` runs ``p2pgrid.settlement.service.SettlementService``): it settles
slot S at ``metering_due_ms(S) + [gateway] settle_delay_ms`` (W, the certification bound) over
what is certified then, and reconciles the slot whenever inputs of it are certified later.

A node that is not the gateway runs nothing here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import decode_body
from p2pgrid.ledger.messages import Mint, entry_hash
from p2pgrid.service import WithLedger
from p2pgrid.settlement.entries import meter_registration_of
from p2pgrid.settlement.service import register_meters

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


def is_gateway_node(config: NodeConfig, public_key: bytes) -> bool:
    return bool(config.zone.gateway_account) and bytes.fromhex(config.zone.gateway_account) == public_key


async def funded_accounts(node: WithLedger) -> set[bytes]:
    """Accounts the gateway's certified chain already minted to."""
    return (await _certified_chain(node))[0]


async def _certified_chain(node: WithLedger) -> tuple[set[bytes], dict[int, bytes]]:
    """The accounts the gateway's certified chain minted to, and its entry hashes by seq."""
    ledger = node.ledger
    funded: set[bytes] = set()
    hashes: dict[int, bytes] = {}
    if ledger is None:
        return funded, hashes
    seq = 0
    while True:
        entries = await ledger.store.account_entries(ledger.me, seq, 1000)
        if not entries:
            return funded, hashes
        for signed in entries:
            hashes[signed.body.seq] = entry_hash(signed)
            if signed.body.kind == "mint":
                funded.add(decode_body(signed.body).to)
        seq = entries[-1].body.seq + 1


def _superseded(entries: list[Any], certified: dict[int, bytes]) -> bool:
    """Whether another entry is certified at the seq of one of ``entries`` (then none of them
    that is not certified can ever be: the chain went another way)."""
    return any(e.body.seq in certified and certified[e.body.seq] != entry_hash(e) for e in entries)


class GatewayFunder:
    name = "gateway-funder"

    def __init__(self) -> None:
        self.done = trio.Event()

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if node.ledger is None or not is_gateway_node(node.config, node.key.public_key):
            self.done.set()
            await trio.sleep_forever()
        amount = node.config.gateway.fund_uc
        wanted = [bytes.fromhex(a) for a in node.config.gateway.fund_accounts]
        delay = RETRY_MIN_S
        attempt: list[Any] = []    # the signed mints of the last attempt, retried while they can certify
        while True:
            funded, certified = await _certified_chain(node)
            pending = [a for a in wanted if a not in funded and a != node.key.public_key]
            if not pending or amount == 0:
                break
            failures: list[LedgerError] = []

            async def submit(entry: Any) -> None:
                try:
                    await node.ledger.submit(entry)  # type: ignore[union-attr]
                except LedgerError as exc:   # no quorum yet (validators still starting)
                    failures.append(exc)

            entries = [e for e in attempt if e.body.seq not in certified]
            if not entries or _superseded(attempt, certified):
                attempt = entries = [node.ledger.next_entry("mint", Mint(to=account, amount=amount))
                                     for account in pending]
            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(submit, entry)
            if failures:
                log.info("funding not certified yet (%s); retrying in %.1f s", failures[0], delay)
                await trio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        self.done.set()
        await trio.sleep_forever()


class GatewayMeterRegistrar:
    """Registers the meters of ``[[gateway.meters]]`` once (see the module docstring)."""

    name = "gateway-meters"

    def __init__(self, after: trio.Event | None = None) -> None:
        self.after = after
        self.done = trio.Event()
        self.registered = 0

    async def run(self, node: WithLedger, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        ledger = node.ledger
        if ledger is None or not is_gateway_node(node.config, node.key.public_key):
            self.done.set()
            await trio.sleep_forever()
            return
        if self.after is not None:
            await self.after.wait()
        wanted = [(bytes.fromhex(m.account), bytes.fromhex(m.meter_key)) for m in node.config.gateway.meters]
        exports = {bytes.fromhex(m.meter_key): m.export_w for m in node.config.gateway.meters if m.export_w >= 0}
        delay = RETRY_MIN_S
        while True:
            pending = [(a, k) for a, k in wanted if meter_registration_of(ledger.state, k) is None]
            if not pending:
                break
            try:
                self.registered += await register_meters(ledger, pending, node.clock.now_ms(), exports)
            except LedgerError as exc:   # no quorum yet (validators still starting)
                log.info("meter registrations not certified yet (%s); retrying in %.1f s", exc, delay)
                await trio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        self.done.set()
        await trio.sleep_forever()


def gateway_services(config: NodeConfig) -> list[Any]:
    if not config.zone.gateway_account:
        return []
    funder = GatewayFunder() if config.gateway.fund_accounts else None
    services: list[Any] = [funder] if funder is not None else []
    if config.gateway.meters:
        services.append(GatewayMeterRegistrar(after=funder.done if funder is not None else None))
    return services
