import os
import stat

import pytest

from p2pgrid.errors import KeystoreError
from p2pgrid.identity import NodeKey, load_keystore, save_keystore
from p2pgrid.wire import verify_signature


def test_key_signs_and_verifies():
    key = NodeKey.generate()
    signature = key.sign(b"hello")
    assert verify_signature(key.public_key, b"hello", signature)
    assert not verify_signature(key.public_key, b"hullo", signature)


def test_plain_keystore_round_trip_with_mode_0600(tmp_path):
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    save_keystore(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path).public_key == key.public_key


def test_sealed_keystore_needs_the_right_passphrase(tmp_path):
    key = NodeKey.generate()
    path = tmp_path / "node.key"
    save_keystore(path, key, b"correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"correct horse" not in path.read_bytes() and key.seed not in path.read_bytes()
    assert load_keystore(path, b"correct horse").seed == key.seed
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        load_keystore(path, b"battery staple")
    with pytest.raises(KeystoreError, match="passphrase is needed"):
        load_keystore(path)


def test_corrupt_missing_or_exposed_keystore_is_one_clear_error(tmp_path):
    path = tmp_path / "node.key"
    with pytest.raises(KeystoreError, match="p2pgrid init"):
        load_keystore(path)
    path.write_bytes(b"not a keystore")
    os.chmod(path, 0o600)
    with pytest.raises(KeystoreError, match="corrupt"):
        load_keystore(path)
    save_keystore(path, NodeKey.generate())
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        load_keystore(path)


def test_swapped_public_key_is_detected(tmp_path):
    import msgpack
    path = tmp_path / "node.key"
    save_keystore(path, NodeKey.generate())
    record = msgpack.unpackb(path.read_bytes())
    record["public_key"] = NodeKey.generate().public_key
    path.write_bytes(msgpack.packb(record))
    with pytest.raises(KeystoreError, match="does not match"):
        load_keystore(path)
