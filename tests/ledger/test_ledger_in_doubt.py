"""An entry some validators voted for, but that missed a quorum, is never replaced by another
entry at its seq (those validators would refuse it forever): it is offered again first."""

import pytest
import trio

from p2pgrid.ledger.chain import state_root
from p2pgrid.ledger.messages import Mint, Transfer, entry_hash
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


async def _cancelled_while_waiting(ledger, entry) -> None:
    """Submit ``entry`` and give up at once: it is cancelled while waiting in the owner's check."""
    with trio.CancelScope() as scope:
        scope.cancel()
        await ledger.submit(entry)
    assert not ledger.is_in_doubt(entry)


async def test_a_submit_cancelled_while_its_entry_waits_leaves_no_hole_in_the_chain(tmp_path):
    # A caller that stops waiting (a take or swap timing out) must not strand its signed entry:
    # the next entry already extends it, and would wait for it for ever.
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, 1_000_000)
        operator, sender, receiver = nodes[0], nodes[5], nodes[4]
        first = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=1_500_000))
        await _cancelled_while_waiting(sender.ledger, first)      # overdraft: waits for credits
        second = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=100))
        assert second.body.seq == first.body.seq + 1
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.ledger.submit, second)
                await operator.ledger.submit(operator.ledger.next_entry("mint", Mint(to=sender.account, amount=600_000)))
        assert sender.ledger.state.head(sender.account).next_seq == second.body.seq + 1
        assert sender.ledger.state.balance(sender.account) == 1_600_000 - 1_500_100


async def test_an_entry_cancelled_and_never_valid_is_given_up_and_the_chain_goes_on(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, 1_000_000)
        sender, receiver = nodes[5], nodes[4]
        first = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=5_000_000))
        await _cancelled_while_waiting(sender.ledger, first)
        second = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=100))
        with trio.fail_after(60), pytest.raises(BatchRejected):   # it extends an entry given up
            await sender.ledger.submit(second)
        third = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=200))
        assert third.body.seq == first.body.seq                  # the hole is reused, nothing skipped
        with trio.fail_after(30):
            await sender.ledger.submit(third)
        assert sender.ledger.state.balance(sender.account) == 1_000_000 - 200


async def test_an_entry_refused_by_its_owner_does_not_rewind_the_tip_below_entries_being_voted(tmp_path):
    async with open_trading_cluster("memory", 6, tmp_path) as nodes:
        await fund(nodes, 1_000_000)
        sender, receiver = nodes[5], nodes[4]
        gate = trio.Event()
        for validator in nodes[:4]:                     # the first entry's vote round waits at the gate
            answer = validator.ledger.handle_vote_request

            async def held(request, peer=None, _answer=answer):
                await gate.wait()
                return await _answer(request, peer)
            validator.ledger.handle_vote_request = held
        queued = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=100))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_submit_ignoring_doubt, sender.ledger, queued)
            with trio.fail_after(10):
                await wait_until(lambda: any(p.entry == queued for p in sender.ledger._queued.values()))
            assert not sender.ledger.is_in_doubt(queued)
            to_self = sender.ledger.next_entry("transfer", Transfer(to=sender.account, amount=1))
            with pytest.raises(BatchRejected):          # final on the owner's own view: never proposed
                await sender.ledger.submit(to_self)
            after = sender.ledger.next_entry("transfer", Transfer(to=receiver.account, amount=300))
            assert after.body.seq == queued.body.seq + 1 and after.body.prev_hash == entry_hash(queued)
            gate.set()
            with trio.fail_after(60):
                await sender.ledger.submit(after)
        assert sender.ledger.state.balance(sender.account) == 1_000_000 - 400


async def _submit_ignoring_doubt(ledger, entry) -> None:
    try:
        await ledger.submit(entry)
    except EntryInDoubt:
        pass      # offered again by the ledger itself
