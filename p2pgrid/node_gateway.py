"""The zone operator's node service: initial credits for the community's accounts.

``GatewayFunder`` runs on the node whose key is the zone's gateway account (``[zone]
gateway_account``) when ``[gateway] fund_accounts`` lists accounts. It mints ``[gateway] fund_uc``
once to each of them, through the certified ledger (one ``mint`` entry per account in the
gateway's own chain; the gateway's balance goes negative by as much: money is conserved).

**Once, even across restarts.** Before minting it reads the gateway's certified chain from the
store and skips every account that already received a mint, so a restarted operator never pays
twice. Minting needs a quorum of validators: until one answers, it retries with a bounded backoff.
A node that is not the gateway runs nothing here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.chain import decode_body
from p2pgrid.ledger.messages import Mint

if TYPE_CHECKING:
    from p2pgrid.config import NodeConfig
    from p2pgrid.node import Node

log = logging.getLogger(__name__)

RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


def is_gateway_node(config: NodeConfig, public_key: bytes) -> bool:
    return bool(config.zone.gateway_account) and bytes.fromhex(config.zone.gateway_account) == public_key


async def funded_accounts(node: Node) -> set[bytes]:
    """Accounts the gateway's certified chain already minted to."""
    ledger = node.ledger
    if ledger is None:
        return set()
    funded: set[bytes] = set()
    seq = 0
    while True:
        entries = await ledger.store.account_entries(ledger.me, seq, 1000)
        if not entries:
            return funded
        for signed in entries:
            if signed.body.kind == "mint":
                funded.add(decode_body(signed.body).to)
        seq = entries[-1].body.seq + 1


class GatewayFunder:
    name = "gateway-funder"

    def __init__(self) -> None:
        self.done = trio.Event()

    async def run(self, node: Node, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if node.ledger is None or not is_gateway_node(node.config, node.key.public_key):
            self.done.set()
            await trio.sleep_forever()
        amount = node.config.gateway.fund_uc
        wanted = [bytes.fromhex(a) for a in node.config.gateway.fund_accounts]
        delay = RETRY_MIN_S
        while True:
            pending = [a for a in wanted if a not in await funded_accounts(node) and a != node.key.public_key]
            if not pending or amount == 0:
                break
            failures: list[LedgerError] = []

            async def submit(entry: Any) -> None:
                try:
                    await node.ledger.submit(entry)  # type: ignore[union-attr]
                except LedgerError as exc:   # no quorum yet (validators still starting)
                    failures.append(exc)

            entries = [node.ledger.next_entry("mint", Mint(to=account, amount=amount)) for account in pending]
            async with trio.open_nursery() as nursery:
                for entry in entries:
                    nursery.start_soon(submit, entry)
            if failures:
                log.info("funding not certified yet (%s); retrying in %.1f s", failures[0], delay)
                await trio.sleep(delay)
                delay = min(RETRY_MAX_S, delay * 2)
        self.done.set()
        await trio.sleep_forever()


def gateway_services(config: NodeConfig) -> list[Any]:
    return [GatewayFunder()] if config.gateway.fund_accounts and config.zone.gateway_account else []
