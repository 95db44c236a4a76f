"""An entry some validators voted for, but that missed a quorum, is never replaced by another
entry at its seq (those validators would refuse it forever): it is offered again first."""

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.messages import Transfer
from p2pgrid.ledger.service import BatchRejected, EntryInDoubt
from p2pgrid.net.testing import wait_until
from p2pgrid.trading.testing import fund, open_trading_cluster


async def test_an_entry_in_doubt_is_reproposed_before_the_next_one(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, 1_000_000)
        sender, receiver = nodes[5], nodes[4]
        cut = nodes[2:4]                                  # 2 of the 4 validators: no quorum left
        for validator in cut:
            sender.transport.disconnect(validator.account)
        first = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=100))
        with pytest.raises(BatchRejected, match="no quorum"):
            await sender.ledger.submit(first)
        second = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=200))
        assert second.body.seq == first.body.seq + 1      # built on top of the entry in doubt

        for validator in cut:
            await sender.transport.connect(validator.transport.listen_addrs[0])
        with trio.fail_after(30):
            await sender.ledger.submit(second)
        head = sender.ledger.state.head(sender.account)
        assert head.next_seq == second.body.seq + 1
        assert sender.ledger.state.balance(sender.account) == 1_000_000 - 300
        with trio.fail_after(30):
            await wait_until(lambda: len({state_root(n.ledger.state) for n in nodes}) == 1)


async def test_an_entry_proposed_while_no_validator_answers_stays_in_doubt_and_is_offered_again(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, 1_000_000)
        sender, receiver = nodes[5], nodes[4]
        for validator in nodes[:4]:
            sender.transport.disconnect(validator.account)
        first = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=100))
        with pytest.raises(EntryInDoubt):
            await sender.ledger.submit(first)
        assert sender.ledger.is_in_doubt(first)
        second = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=200))
        assert second.body.seq == first.body.seq + 1      # it was kept: nothing else is signed at its seq
        for validator in nodes[:4]:
            await sender.transport.connect(validator.transport.listen_addrs[0])
        with trio.fail_after(30):                         # the ledger offers it again by itself
            await wait_until(lambda: sender.ledger.state.head(sender.account).next_seq > first.body.seq)
            await sender.ledger.submit(second)
        assert sender.ledger.state.balance(sender.account) == 1_000_000 - 300
