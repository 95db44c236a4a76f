"""The incremental state root equals the full ``state_root`` after any sequence of changes."""

from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import (
    ChainHead, LedgerState, LockRecord, LockStatus, OrderProgress, StateRootCache, state_root,
)
from p2pgrid.ledger.messages import Lock


@dataclass(frozen=True)
class Record:
    """Stands for the records added kinds keep in ``pools``/``certificates``/``extra``."""

    owner: bytes
    amount: int
    tags: tuple[str, ...] = ()


ACCOUNTS = [bytes([i]) * 32 for i in range(4)]
KEYS = [bytes([i]) * n for i in range(1, 6) for n in (1, 16, 300)]      # fixbin… bin16 lengths
NAMES = ["owed/ab", "swap/" + "x" * 40, "m" * 300, "s"]                 # fixstr, str8, str16


def lock_record(key: bytes, amount: int, status: LockStatus) -> LockRecord:
    lock = Lock(take_id=key[:16].ljust(16, b"\0"), seller=ACCOUNTS[1], order_id=key[:16].ljust(16, b"\0"),
                order_owner=ACCOUNTS[0], order_size_wh=amount, qty_wh=amount, price=1, amount=amount,
                deadline_ms=10)
    return LockRecord(ACCOUNTS[2], lock, status, 0)


change = st.one_of(
    st.tuples(st.just("balances"), st.sampled_from(ACCOUNTS), st.integers(-10**9, 10**9)),
    st.tuples(st.just("locks"), st.sampled_from(KEYS), st.integers(1, 10**6)),
    st.tuples(st.just("orders"), st.sampled_from(KEYS), st.integers(1, 10**6)),
    st.tuples(st.sampled_from(["pools", "certificates"]), st.sampled_from(KEYS), st.integers(0, 99)),
    st.tuples(st.just("extra"), st.sampled_from(NAMES), st.integers(0, 99)),
)


def apply(state: LedgerState, name: str, key, value: int, delete: bool) -> None:
    mapping = getattr(state, name)
    if delete:
        mapping.pop(key, None)
    elif name == "balances":
        mapping[key] = value
    elif name == "locks":
        mapping[key] = lock_record(key, value, LockStatus.OPEN if value % 2 else LockStatus.FILLED)
    elif name == "orders":
        old = mapping.get((ACCOUNTS[0], key))
        mapping[(ACCOUNTS[0], key)] = (OrderProgress(value) if old is None
                                       else replace(old, filled_wh=min(old.size_wh, value)))
    else:
        mapping[key] = Record(ACCOUNTS[value % 4], value, tuple("t" * (value % 3)))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.lists(st.tuples(change, st.booleans()), max_size=6),
                          st.sampled_from(ACCOUNTS)), max_size=25))
def test_cached_root_equals_the_full_root_after_every_applied_entry(steps):
    state = LedgerState()
    cache = StateRootCache()
    assert cache.root(state) == state_root(state)
    for changes, account in steps:
        for (name, key, value), delete in changes:
            apply(state, name, key, value, delete and name != "balances")
        head = state.head(account)                       # applying an entry always raises the height
        state.heads[account] = ChainHead(head.next_seq + 1, bytes([head.next_seq % 256]) * 32, head.next_seq)
        assert cache.root(state) == state_root(state)


def test_a_new_state_object_is_encoded_afresh_even_at_the_same_height():
    cache = StateRootCache()
    first, second = LedgerState(), LedgerState()
    for state, balance in ((first, 5), (second, 7)):
        state.heads[ACCOUNTS[0]] = ChainHead(1, b"\x01" * 32, 0)
        state.balances[ACCOUNTS[0]] = balance
    assert cache.root(first) == state_root(first)
    assert cache.root(second) == state_root(second) != state_root(first)


def test_a_value_replaced_by_an_equal_copy_keeps_the_root():
    state, cache = LedgerState(), StateRootCache()
    state.extra["k"] = Record(ACCOUNTS[1], 3)
    state.heads[ACCOUNTS[0]] = ChainHead(1, b"\x01" * 32, 0)
    before = cache.root(state)
    state.extra["k"] = Record(ACCOUNTS[1], 3)
    state.heads[ACCOUNTS[0]] = ChainHead(2, b"\x02" * 32, 0)
    assert cache.root(state) == state_root(state)
    assert before != state_root(state)       # only the head moved
