"""The node's identity: one Ed25519 key that is its libp2p peer identity and its ledger account.

The keystore is a small msgpack file written with mode 0600 (atomically: temp file, fsync,
rename). With a passphrase the 32-byte seed is sealed with ``SecretBox`` under a key derived by
Argon2id (``nacl.pwhash``); without one the seed is stored in the clear and the file mode is the
only protection, as with an unencrypted ssh key. Loading refuses a file that others can read.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import msgpack
from nacl import pwhash, secret, utils
from nacl.exceptions import CryptoError
from nacl.signing import SigningKey

from p2pgrid.errors import KeystoreError

KEYSTORE_KIND = "p2pgrid-keystore"
KEYSTORE_VERSION = 1
SEED_SIZE = 32


@dataclass(frozen=True, repr=False)
class NodeKey:
    """An Ed25519 key pair. ``public_key`` (32 bytes) is the account; ``seed`` never leaves."""

    seed: bytes

    def __post_init__(self) -> None:
        if type(self.seed) is not bytes or len(self.seed) != SEED_SIZE:
            raise KeystoreError("an Ed25519 seed is exactly 32 bytes")

    @classmethod
    def generate(cls) -> NodeKey:
        return cls(utils.random(SEED_SIZE))

    # Derived once: rebuilding the key from the seed cost ~35 µs per call on the gossip hot path.
    @cached_property
    def _signing_key(self) -> SigningKey:
        return SigningKey(self.seed)

    @cached_property
    def public_key(self) -> bytes:
        return bytes(self._signing_key.verify_key)

    @property
    def account(self) -> str:
        """The account as people see it: the public key in hex."""
        return self.public_key.hex()

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"NodeKey(account={self.account[:16]}…)"


def short_account(public_key: bytes) -> str:
    return public_key.hex()[:8]


def save_keystore(path: Path, key: NodeKey, passphrase: bytes | None = None) -> None:
    """Write ``key`` to ``path`` (mode 0600), sealed with ``passphrase`` if given."""
    record: dict[str, object] = {"kind": KEYSTORE_KIND, "version": KEYSTORE_VERSION,
                                 "public_key": key.public_key}
    if passphrase:
        salt = utils.random(pwhash.argon2id.SALTBYTES)
        ops, mem = pwhash.argon2id.OPSLIMIT_INTERACTIVE, pwhash.argon2id.MEMLIMIT_INTERACTIVE
        box_key = pwhash.argon2id.kdf(secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=ops, memlimit=mem)
        record.update(kdf="argon2id", opslimit=ops, memlimit=mem, salt=salt,
                      sealed_seed=bytes(secret.SecretBox(box_key).encrypt(key.seed)))
    else:
        record.update(kdf="none", seed=key.seed)
    _write_private(Path(path), msgpack.packb(record, use_bin_type=True))


def load_keystore(path: Path, passphrase: bytes | None = None) -> NodeKey:
    """Read the key at ``path``. Every way this can fail is one ``KeystoreError`` line."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise KeystoreError(f"no keystore at {path} (run `p2pgrid init` first)") from None
    except OSError as exc:
        raise KeystoreError(f"cannot read keystore {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeystoreError(f"keystore {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
                            "run `chmod 600` on it")
    record = _parse(path, data)
    if record["kdf"] == "none":
        key = NodeKey(_field(record, "seed", bytes, path))
    else:
        if not passphrase:
            raise KeystoreError(f"keystore {path} is sealed: a passphrase is needed")
        box_key = pwhash.argon2id.kdf(secret.SecretBox.KEY_SIZE, passphrase, _field(record, "salt", bytes, path),
                                      opslimit=_field(record, "opslimit", int, path),
                                      memlimit=_field(record, "memlimit", int, path))
        try:
            seed = secret.SecretBox(box_key).decrypt(_field(record, "sealed_seed", bytes, path))
        except CryptoError:
            raise KeystoreError(f"wrong passphrase for keystore {path}") from None
        key = NodeKey(seed)
    if key.public_key != record["public_key"]:
        raise KeystoreError(f"keystore {path} is corrupt: its seed does not match its public key")
    return key


def _parse(path: Path, data: bytes) -> dict[str, object]:
    try:
        record = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise KeystoreError(f"keystore {path} is corrupt (not a p2pgrid keystore)") from None
    if not isinstance(record, dict) or record.get("kind") != KEYSTORE_KIND:
        raise KeystoreError(f"keystore {path} is corrupt (not a p2pgrid keystore)")
    if record.get("version") != KEYSTORE_VERSION:
        raise KeystoreError(f"keystore {path} has unknown version {record.get('version')!r}")
    if record.get("kdf") not in ("none", "argon2id"):
        raise KeystoreError(f"keystore {path} uses unknown key derivation {record.get('kdf')!r}")
    _field(record, "public_key", bytes, path)
    return record


def _field(record: dict[str, object], name: str, kind: type, path: Path):  # type: ignore[no-untyped-def]
    value = record.get(name)
    if type(value) is not kind:
        raise KeystoreError(f"keystore {path} is corrupt (field {name!r})")
    return value


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
