"""What the command modules share: finding a node's config and key, parsing common arguments,
reaching the running node, and the one place logging is configured.

Every ``p2pgrid`` command that talks to a **running** node is a client of its local JSON-RPC API
(``[rpc] enabled = true``): ``open_client(data_dir)`` reads the address from ``<data_dir>/rpc.json``
and the bearer token from the 0600 file it names, as trading bots do. Commands that read a node's
ledger database (``ledger``, ``settle``, ``invest``) need no running node.

This module imports no other command module; ``main`` registers the command modules, which import
this one (and ``invest`` mounts ``shares``' offline ``invest shares``), never ``main``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2pgrid.config import NodeConfig, load_config, parse_override
from p2pgrid.data_dir import pid_alive
from p2pgrid.errors import ConfigError, KeystoreError, LedgerError, P2PGridError, RpcError
from p2pgrid.identity import NodeKey, load_keystore
from p2pgrid.node.rpc import live_endpoint
from p2pgrid.node.status import read_status
from p2pgrid.onboarding.node_dir import CONFIG_FILE
from p2pgrid.rpc.api import NodeInfo
from p2pgrid.rpc.client import RpcClient
from p2pgrid.units import SlotRules

RPC_TIMEOUT_S = 10.0


class NodeNotRunning(RpcError):
    """The command needs a running node and there is none for this data dir."""


class NodeUnreachable(P2PGridError):
    """No running node with a local RPC endpoint at the given data dir."""


def open_client(data_dir: Path, *, timeout_s: float = RPC_TIMEOUT_S) -> RpcClient:
    """A client of the local RPC of the node running in ``data_dir`` (see the module docstring)."""
    endpoint = live_endpoint(data_dir, "rpc")
    if endpoint is None:
        raise NodeUnreachable(f"no RPC endpoint in {data_dir}: is the node running with [rpc] enabled = true?")
    return RpcClient(endpoint["url"], token_file=endpoint["token_file"], timeout_s=timeout_s)


def node_slot(text: str, info: NodeInfo) -> int:
    """The slot ``--slot`` names (``parse_slot``), on the running node's own calendar and clock."""
    rules = SlotRules(length_s=info.slot_length_s, horizon_s=info.horizon_s, gate_s=info.gate_s)
    return parse_slot(text, rules, info.now_ms)


def read_passphrase(path: Path | None) -> bytes | None:
    """The first line of ``path`` (without its newline), or None when no file is given. The file
    must be private to its owner (no group or other permission bits)."""
    if path is None:
        return None
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        first_line = Path(path).read_bytes().splitlines()[:1]
    except OSError as exc:
        raise KeystoreError(f"cannot read passphrase file {path}: {exc.strerror}") from None
    if mode & 0o077:
        # The passphrase guards the keystore; readable by others it guards nothing (ssh refuses
        # such key files for the same reason).
        raise KeystoreError(f"passphrase file {path} is readable by other users (mode {mode:04o}); "
                            f"run: chmod 600 {path}")
    if not first_line or not first_line[0]:
        raise KeystoreError(f"passphrase file {path} is empty")
    return first_line[0]


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    """The config named by ``--config``, or ``<--data-dir>/config.toml``, with ``--set`` overrides."""
    overrides = dict(parse_override(text) for text in getattr(args, "set", None) or [])
    path = getattr(args, "config", None)
    if path is None:
        data_dir = getattr(args, "data_dir", None)
        if data_dir is None:
            raise ConfigError("give --config FILE or --data-dir DIR")
        path = Path(data_dir) / CONFIG_FILE
    return load_config(Path(path), overrides)


def load_node_key(config: NodeConfig, passphrase_file: Path | None = None) -> NodeKey:
    passphrase = read_passphrase(passphrase_file or config.node.passphrase_file)
    return load_keystore(config.node.keystore_path, passphrase)


def running_status(config: NodeConfig):  # type: ignore[no-untyped-def]
    status = read_status(config.node.data_dir)
    if status is None or status.state != "running" or not pid_alive(status.pid):
        raise NodeNotRunning(f"no running node for {config.node.data_dir} (start it with `p2pgrid run`)")
    return status


def parse_slot(text: str, rules: SlotRules, market_now_ms: int) -> int:
    """``next`` (first tradable slot), ``+N`` (N slots after that) or a slot start in Unix seconds."""
    tradable = rules.tradable_slots(market_now_ms)
    if text == "next" or text.startswith("+"):
        offset = 0 if text == "next" else _int_arg("--slot", text[1:])
        if offset >= len(tradable):
            raise ConfigError(f"--slot: only {len(tradable)} slots are open for trading")
        return int(tradable[offset])
    slot = _int_arg("--slot", text)
    if not rules.is_tradable(slot, market_now_ms):
        raise ConfigError(f"--slot: {slot} is not open for trading now (try `next`)")
    return slot


def _int_arg(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not an integer") from None


def add_config_args(parser: argparse.ArgumentParser, *, config_required: bool = False) -> None:
    where = parser.add_mutually_exclusive_group(required=config_required)
    where.add_argument("--config", type=Path, help="node config file (TOML)")
    if not config_required:
        where.add_argument("--data-dir", type=Path, help="node data dir (uses its config.toml)")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a config value (TOML syntax), repeatable")
    parser.add_argument("--passphrase-file", type=Path, help="file holding the keystore passphrase")


def resolve_account(text: str, known: Sequence[bytes] | Any) -> bytes:
    """A full hex public key, or the one known account starting with the given hex prefix."""
    text = text.lower().strip()
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            raise LedgerError(f"not a hex public key: {text!r}") from None
    matches = [a for a in known if a.hex().startswith(text)]
    if len(matches) != 1 or not text:
        raise LedgerError(f"{len(matches)} accounts match {text!r}: give more hex digits")
    return matches[0]


def parse_time(text: str) -> int:
    """Unix seconds, or an ISO date/time taken as UTC."""
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither Unix seconds nor an ISO date") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


def configure_logging(level: str = "info", *, log_file: Path | None = None) -> None:
    """Root logging for a command; call after libp2p is imported (it resets its own logger)."""
    try:
        import libp2p  # noqa: F401  (imported for its side effect on logging, which we then undo)
    except ImportError:
        pass
    logging.getLogger("libp2p").propagate = True
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file is not None
                                else logging.StreamHandler(sys.stderr))
    if level != "debug":
        # py-libp2p sets INFO on some of its own loggers and is chatty there: keep its warnings only.
        handler.addFilter(lambda record: record.levelno >= logging.WARNING
                          or not record.name.startswith("libp2p"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
