"""Indexes of the ledger state that follow what changed: the prefix index of ``LedgerState.extra``
always equals a recomputation by a scan, through any sequence of writes and deletes on a state
and on (nested) overlays of it, and the overlays read and iterate exactly like the
``ChainMap({}, base)`` they replace; the write log of ``LedgerState.orders`` gives the keys
written since any point it still keeps; the height ``LedgerState.heads`` keeps is their sum."""

from collections import ChainMap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.chain import ChainHead, Heads, LedgerState, WriteLog
from p2pgrid.ledger.extra import ExtraMap, ExtraOverlay, Overlay, key_prefixes, prefixed_items, prefixed_keys

# Keys as added kinds write them: one or two levels under a namespace, namespaces sharing a
# stem (meter/ and meter_last/), and a key with no namespace at all.
KEYS = ["share_programme/aa", "share_programme/bb", "share_payout/aa/00000001", "share_payout/aa/00000002",
        "share_payout/bb/00000001", "meter/01/000000000000900", "meter/02/000000000000900", "meter_last/01",
        "meter_key/k1", "swap/" + "c" * 32, "settle/000000000000900", "owed/ab", "plain"]
QUERIED = sorted({prefix for key in KEYS for prefix in key_prefixes(key)} | {"absent/", "share_payout/zz/"})

# (layer, key, value or None for a delete): layer 0 writes the state itself, layer i > 0 the
# i-th overlay stacked on it (an overlay is created when first written).
operation = st.tuples(st.integers(0, 2), st.sampled_from(KEYS), st.one_of(st.none(), st.integers(0, 9)))


def scan(mapping, prefix: str) -> set[str]:
    return {key for key in mapping if key.startswith(prefix)}


@settings(max_examples=200, deadline=None)
@given(st.lists(operation, max_size=60), st.sampled_from(["extra", "balances", "locks"]))
def test_overlays_read_like_chainmaps_and_the_index_equals_a_scan(operations, field):
    state = LedgerState()
    layers = [state]
    references = [dict()]     # what each layer must read like: a dict, then ChainMaps over it
    for layer, key, value in operations:
        while len(layers) <= layer:
            layers.append(layers[-1].overlay())
            references.append(ChainMap({}, references[-1]))
        target, reference = getattr(layers[layer], field), references[layer]
        if value is None:
            try:
                del reference[key]
            except KeyError:
                with pytest.raises(KeyError):
                    del target[key]
            else:
                del target[key]
        else:
            target[key] = value
            reference[key] = value
        for mapping, expected in zip((getattr(s, field) for s in layers), references):
            assert dict(mapping) == dict(expected) and dict(mapping.items()) == dict(expected.items())
            assert len(mapping) == len(expected)
            assert list(mapping) == list(expected)        # iteration order as ChainMap's too
            for key in KEYS:
                assert (key in mapping) == (key in expected) and mapping.get(key) == expected.get(key)
            if field != "extra":
                continue
            for prefix in QUERIED:
                assert set(prefixed_keys(mapping, prefix)) == scan(expected, prefix)
                assert len(prefixed_keys(mapping, prefix)) == len(scan(expected, prefix))
                assert dict(prefixed_items(mapping, prefix)) == {k: expected[k] for k in scan(expected, prefix)}


def test_copy_keeps_an_index_of_its_own():
    state = LedgerState()
    state.extra["swap/01"] = 1
    copied = state.copy()
    copied.extra["swap/02"] = 2
    del state.extra["swap/01"]
    assert prefixed_keys(state.extra, "swap/") == []
    assert sorted(prefixed_keys(copied.extra, "swap/")) == ["swap/01", "swap/02"]


def test_a_plain_dict_given_to_the_state_is_indexed():
    state = LedgerState(extra={"share_programme/aa": 1, "owed/x": 2})
    assert isinstance(state.extra, ExtraMap)
    assert prefixed_keys(state.extra, "share_programme/") == ["share_programme/aa"]


def test_only_slash_terminated_prefixes_are_asked_for():
    with pytest.raises(ValueError):
        prefixed_keys(ExtraMap(), "swap")


def test_an_overlay_cannot_delete_what_its_base_holds():
    base = ExtraMap({"swap/01": 1})
    overlay = ExtraOverlay(base)
    overlay["swap/01"] = 2
    del overlay["swap/01"]                 # its own write goes; the base shows again
    assert overlay["swap/01"] == 1
    with pytest.raises(KeyError):
        del overlay["swap/01"]


class SmallWriteLog(WriteLog):
    KEEP = 8


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), max_size=40), st.data())
def test_a_write_log_gives_the_keys_written_since_any_point_it_still_keeps(keys, data):
    log = SmallWriteLog()
    for value, key in enumerate(keys):
        log[key] = value
    assert dict(log) == {key: value for value, key in enumerate(keys)}
    assert log.writes == len(keys)
    since = data.draw(st.integers(0, len(keys) + 2))
    written = log.written_since(since)
    if since > len(keys) or len(keys) - since > SmallWriteLog.KEEP:
        assert written is None
    else:
        assert written == keys[since:]


def test_the_ledger_state_logs_writes_of_order_progress():
    state = LedgerState()
    assert isinstance(state.orders, WriteLog)
    state.orders[(b"o", b"1")] = 1
    assert state.orders.written_since(0) == [(b"o", b"1")]
    assert isinstance(state.overlay().orders, Overlay) and not isinstance(state.copy().orders, WriteLog)


head_op = st.tuples(st.sampled_from(["set", "del", "pop", "update", "setdefault", "clear"]),
                    st.sampled_from([b"a", b"b", b"c"]), st.integers(0, 50))


@settings(max_examples=200, deadline=None)
@given(st.lists(head_op, max_size=40))
def test_the_kept_height_equals_the_sum_of_the_heads_after_any_changes(operations):
    state = LedgerState()
    assert isinstance(state.heads, Heads)
    for op, account, seq in operations:
        heads = state.heads
        if op == "set":
            heads[account] = ChainHead(seq)
        elif op == "del" and account in heads:
            del heads[account]
        elif op == "pop":
            heads.pop(account, None)
        elif op == "update":
            heads.update({account: ChainHead(seq)})
        elif op == "setdefault":
            heads.setdefault(account, ChainHead(seq))
        elif op == "clear":
            heads.clear()
        assert state.height == sum(h.next_seq for h in heads.values())
        assert state.overlay().height == state.height == state.copy().height
