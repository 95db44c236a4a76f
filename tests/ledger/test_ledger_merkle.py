"""RFC 9162 Merkle trees: every leaf's proof verifies, and nothing else does."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pgrid.ledger.merkle import EMPTY_ROOT, compute_proof, compute_root, leaf_hash, node_hash, verify_inclusion


def test_empty_tree_root_is_the_hash_of_nothing():
    assert compute_root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_three_leaves_split_at_the_largest_power_of_two():
    a, b, c = b"a", b"b", b"c"
    expected = node_hash(node_hash(leaf_hash(a), leaf_hash(b)), leaf_hash(c))
    assert compute_root([a, b, c]) == expected


def test_duplicating_the_last_leaf_changes_the_root():
    # Bitcoin's odd-node duplication gives [a, b, c] and [a, b, c, c] one root; RFC 9162 does not.
    assert compute_root([b"a", b"b", b"c"]) != compute_root([b"a", b"b", b"c", b"c"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8), min_size=1, max_size=40), st.data())
def test_every_proof_verifies_and_a_wrong_index_or_leaf_does_not(leaves, data):
    root = compute_root(leaves)
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = compute_proof(leaves, index)
    assert verify_inclusion(leaves[index], index, len(leaves), proof, root)
    assert not verify_inclusion(leaves[index] + b"x", index, len(leaves), proof, root)
    if len(leaves) > 1:
        other = (index + 1) % len(leaves)
        assert not verify_inclusion(leaves[index], other, len(leaves), proof, root) or leaves[other] == leaves[index]
    assert not verify_inclusion(leaves[index], len(leaves), len(leaves), proof, root)
