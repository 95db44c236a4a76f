"""Writing a new node's data dir: keystore (0600), config, and for a zone member its zone preset.

Shared by ``p2pgrid init`` (a node of a zone given by id), ``p2pgrid zone init`` (the operator's
node, whose preset it writes) and ``p2pgrid join`` (a neighbour's node, whose preset comes from a
join bundle). Everything is checked before the first file is written: an existing keystore,
config or preset is refused unless ``force``; a passphrase file must be readable and private.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p2pgrid.config import NodeConfig, load_config
from p2pgrid.errors import ConfigError
from p2pgrid.identity import NodeKey, save_keystore

CONFIG_FILE = "config.toml"
KEYSTORE_FILE = "node.key"
PRESET_FILE = "zone.toml"


def render_init_config(*, name: str, role: str, zone: str, passphrase_file: Path | None, port: int = 0,
                       bootstrap: Sequence[str] = (), preset_file: str | None = None,
                       extra_lines: Sequence[str] = ()) -> str:
    """The config file written next to the keystore (data_dir "." = the file's directory):
    listening on 127.0.0.1 at ``port``, RPC on (it serves 127.0.0.1 only), bootstrapped to
    ``bootstrap`` (one running node of the zone is enough: discovery finds the rest). With
    ``preset_file`` the zone is that preset (relative to the config) instead of a bare zone id;
    ``extra_lines`` are appended (more sections)."""
    lines = [
        "# Written by `p2pgrid init` (or `zone init`, `join`). Every key is explained in node-configs/*.toml;",
        "# unknown keys are refused at start-up.",
        "[node]",
        f"name = {json.dumps(name)}",
        'data_dir = "."            # relative to this file: the directory holding it',
        f"role = {json.dumps(role)}",
    ]
    if passphrase_file is not None:
        lines.append(f"passphrase_file = {json.dumps(str(passphrase_file))}")
    lines += ["", "[zone]"]
    if preset_file is not None:
        lines.append(f"preset = {json.dumps(preset_file)}   # zone {zone}: id, slots, tariffs, gateway, validators")
    else:
        lines.append(f"id = {json.dumps(zone)}")
    lines += [
        "",
        "[network]",
        f'listen = ["/ip4/127.0.0.1/tcp/{port}"]   # 127.0.0.1 only unless you mean to expose the node',
        f"bootstrap = {json.dumps(list(bootstrap))}   # one running node of the zone is enough: discovery finds the rest",
        "",
        "[rpc]",
        "enabled = true             # how `p2pgrid order place`, `book`, `trade`, … reach the running node",
        "port = 0                   # JSON-RPC listens on 127.0.0.1 only; 0 = a free port (see rpc.json)",
        "",
    ]
    return "\n".join([*lines, *extra_lines])


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range (``net.ports``):
    written into the config so the node's address (and the bootstrap line others copy) stays the
    same across restarts, and no outgoing connection takes it meanwhile."""
    from p2pgrid.net.ports import free_fixed_ports

    return free_fixed_ports(1)[0]


def safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)[:32]
    return cleaned or "node"


@dataclass(frozen=True)
class NewNode:
    """What ``create_node_dir`` wrote."""

    key: NodeKey
    keystore: Path
    config_path: Path
    config: NodeConfig
    port: int

    @property
    def peer_id(self) -> str:
        from p2pgrid.node.api import peer_id_base58

        return peer_id_base58(self.key.public_key)

    @property
    def address(self) -> str:
        """The full address others bootstrap to."""
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"


def refuse_existing(data_dir: Path, *, force: bool, preset: bool, keep_key: bool = False) -> None:
    """``ConfigError`` if the data dir already holds a node (keystore, config, preset) and not
    ``force``; with ``keep_key`` its keystore and config are expected (they are reused / replaced)."""
    names = ([] if keep_key else [KEYSTORE_FILE, CONFIG_FILE]) + ([PRESET_FILE] if preset else [])
    for existing in (data_dir / name for name in names):
        if existing.exists() and not force:
            raise ConfigError(f"{existing} already exists (use --force to replace it)")


def create_node_dir(data_dir: Path, *, name: str, role: str, zone: str, passphrase: bytes | None,
                    passphrase_file: Path | None, port: int, bootstrap: Sequence[str] = (),
                    preset_text: str | None = None, extra_lines: Sequence[str] = (), key: NodeKey | None = None,
                    force: bool = False) -> NewNode:
    """Write a node's keystore, config and (with ``preset_text``) its zone preset into
    ``data_dir``; the config written must load. ``port`` 0 picks a port free now."""
    refuse_existing(data_dir, force=force, preset=preset_text is not None)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = key or NodeKey.generate()
    port = port or free_loopback_port()
    keystore = data_dir / KEYSTORE_FILE
    save_keystore(keystore, key, passphrase)
    if preset_text is not None:
        (data_dir / PRESET_FILE).write_text(preset_text)
    config_path = data_dir / CONFIG_FILE
    config_path.write_text(render_init_config(
        name=safe_name(name), role=role, zone=zone, passphrase_file=passphrase_file, port=port, bootstrap=bootstrap,
        preset_file=PRESET_FILE if preset_text is not None else None, extra_lines=extra_lines))
    return NewNode(key, keystore, config_path, load_config(config_path), port)
