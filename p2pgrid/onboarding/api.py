"""The zone gateway admitting a neighbour: ``approve_member`` of the node API (``p2pgrid zone approve``).

On the gateway's node only. Checks first, then writes: the node must be the zone's gateway, and
neither the meter key nor the account may be registered already (``AlreadyApproved``: approving
twice writes nothing). Then, in the gateway's own chain, it certifies the meter registration
(``meter_registration`` v2 with the connection's export capacity, which order admission bounds
offers by) and, when the zone funds newcomers (``[gateway] fund_uc``, or the amount asked), one
``mint`` to an account the gateway never funded before. Approvals are taken one at a time (the
checks and the writes of one happen before the next is checked).

An entry a round of votes did not decide (``EntryInDoubt``) is proposed again by the ledger
itself; the approval waits up to ``CERTIFY_WAIT_S`` for it and otherwise answers with a
``LedgerError`` saying it is still being certified (asking again then answers ``AlreadyApproved``
once it is).
"""

from __future__ import annotations

from typing import Any

import trio

from p2pgrid.errors import LedgerError
from p2pgrid.ledger.messages import Mint
from p2pgrid.ledger.service import EntryInDoubt
from p2pgrid.rpc.api import ApprovalView
from p2pgrid.service import WithLedger
from p2pgrid.settlement.entries import account_registration_of, meter_registration_of
from p2pgrid.settlement.gateway import funded_accounts, is_gateway_node
from p2pgrid.settlement.service import register_meters

CERTIFY_WAIT_S = 60.0
POLL_S = 0.1


class CannotApprove(LedgerError):
    """The approval was refused; nothing was written."""


class NotTheGateway(CannotApprove):
    """Only the zone gateway's node registers meters and funds accounts."""


class AlreadyApproved(CannotApprove):
    """The meter key or the account is registered already."""


class GatewayApi:
    def __init__(self, node: WithLedger, lock: trio.Lock) -> None:
        self.node = node
        self.lock = lock

    async def approve(self, account: bytes, meter_key: bytes, export_w: int, fund_uc: int | None) -> ApprovalView:
        node = self.node
        ledger = node.ledger
        if ledger is None or not is_gateway_node(node.config, node.key.public_key):
            raise NotTheGateway("this node is not its zone's gateway: run `zone approve` against the operator's node")
        if account == node.key.public_key:
            raise CannotApprove("the gateway account is the grid itself: it is never metered")
        amount = node.config.gateway.fund_uc if fund_uc is None else fund_uc
        async with self.lock:
            by_meter = meter_registration_of(ledger.state, meter_key)
            if by_meter is not None:
                raise AlreadyApproved(f"meter key {meter_key.hex()[:16]}… is registered already "
                                      f"(for account {by_meter.account.hex()[:16]}…)")
            by_account = account_registration_of(ledger.state, account)
            if by_account is not None:
                raise AlreadyApproved(f"account {account.hex()[:16]}… is registered already "
                                      f"(meter key {by_account.meter_key.hex()[:16]}…)")
            await _certified(register_meters(ledger, [(account, meter_key)], node.clock.now_ms(), {meter_key: export_w}),
                             lambda: meter_registration_of(ledger.state, meter_key) is not None, "meter registration")
            funded = 0
            if amount > 0 and account not in await funded_accounts(node):
                mint = ledger.next_entry("mint", Mint(to=account, amount=amount))
                await _certified(ledger.submit(mint), lambda: ledger.state.head(ledger.me).next_seq > mint.body.seq,
                                 "funding")
                funded = amount
        return ApprovalView(account, meter_key, export_w, funded)


async def _certified(submission: Any, is_certified: Any, what: str) -> None:
    """Await ``submission``; if a round left it in doubt, wait for the ledger to certify it."""
    try:
        await submission
    except EntryInDoubt:
        with trio.move_on_after(CERTIFY_WAIT_S):
            while not is_certified():
                await trio.sleep(POLL_S)
            return
        raise LedgerError(f"the {what} is not certified yet (no quorum of validators answered); "
                          "the ledger keeps proposing it") from None
