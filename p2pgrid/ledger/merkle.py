"""Merkle trees over byte-string leaves, RFC 9162 (Certificate Transparency v2) shape (pure).

    leaf hash  = sha256(0x00 || leaf)
    node hash  = sha256(0x01 || left || right)
    root(n)    = node(root(first k), root(rest)) with k the largest power of two < n

The 0x00 / 0x01 prefixes make a leaf impossible to pass off as an inner node, and splitting at a
power of two (instead of duplicating an odd last node, as Bitcoin does) means no two different leaf
lists share a root. An empty tree's root is ``sha256(b"")``.

An inclusion proof of leaf ``index`` in a tree of ``size`` leaves is the list of sibling hashes
from the leaf up; ``verify_inclusion`` is RFC 9162 §2.1.3.2.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return node_hash(_root_of_hashes(hashes[:k]), _root_of_hashes(hashes[k:]))


def compute_root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle root of ``leaves`` (in the given order)."""
    return root_of_leaf_hashes([leaf_hash(leaf) for leaf in leaves])


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The Merkle root of leaves given by their ``leaf_hash``es (in order)."""
    if not hashes:
        return EMPTY_ROOT
    return _root_of_hashes(hashes)


def compute_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes proving ``leaves[index]`` is in ``compute_root(leaves)``, leaf level first."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} outside a tree of {len(leaves)}")
    return _proof([leaf_hash(leaf) for leaf in leaves], index)


def _proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return _proof(hashes[:k], index) + [_root_of_hashes(hashes[k:])]
    return _proof(hashes[k:], index - k) + [_root_of_hashes(hashes[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> bool:
    """True when ``proof`` shows ``leaf`` at ``index`` in a tree of ``size`` leaves with ``root``."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(sibling, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
