"""The RPC bearer token: a random secret in a 0600 file in the node's data dir.

Like Ethereum clients' local RPC (geth's ``jwtsecret``): whoever can read the node's data dir may
drive the node; nobody else on the machine can. ``load_or_create_token`` creates the file with
mode 0600 *atomically* (``O_CREAT | O_EXCL``, so there is no window where it is world-readable)
and refuses a file that group or others may read or write, as ssh does for private keys.

Clients send ``Authorization: Bearer <token>``; ``is_authorized`` compares in constant time.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from pathlib import Path

from p2pgrid.rpc.errors import TokenFileError

TOKEN_FILE_NAME = "rpc.token"
TOKEN_BYTES = 32


def token_path(data_dir: Path | str) -> Path:
    return Path(data_dir) / TOKEN_FILE_NAME


def load_or_create_token(data_dir: Path | str) -> str:
    """The token stored in ``data_dir/rpc.token``, creating the file (0600) when missing."""
    path = token_path(data_dir)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_token(path)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_token(path: Path | str) -> str:
    """Read a token file, refusing one that others may read (mode must be 0600 or stricter)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except OSError as exc:
        raise TokenFileError(f"cannot read RPC token file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"RPC token file {path} is accessible by others "
                             f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    if len(token) < 16:
        raise TokenFileError(f"RPC token file {path} holds no usable token")
    return token


def bearer_token(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, or None."""
    if authorization is None:
        return None
    scheme, _, value = authorization.decode("latin-1").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_authorized(authorization: bytes | None, token: str) -> bool:
    presented = bearer_token(authorization)
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())
