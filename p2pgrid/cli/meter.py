"""``p2pgrid meter show``: the node's meter public key, before the node ever ran.

Meter readings are signed by a key of their own (``[devices.meter] key_file`` in the data dir,
``p2pgrid.settlement.node_service.meter_key_of``), which the zone gateway must register for the
node's account before any reading counts. ``show`` prints that public key in hex — creating the
key file (0600) if the node has none yet, and saying so — and, when the node's keystore can be
opened, the ``[[gateway.meters]]`` lines the operator adds for it. Needs no running node, ledger or
network.
"""

from __future__ import annotations

import argparse

from p2pgrid.cli.common import add_config_args, config_from_args, load_node_key
from p2pgrid.errors import KeystoreError


def do_meter_show(args: argparse.Namespace) -> int:
    from p2pgrid.settlement.node_service import meter_key_of

    config = config_from_args(args)
    path = config.node.data_dir / config.devices.meter.key_file
    existed = path.exists()
    key = meter_key_of(config)
    print(f"meter key {key.account}")
    print(f"file {path}" + ("" if existed else " (created now, mode 0600)"))
    try:
        account = load_node_key(config, args.passphrase_file).account
    except KeystoreError as exc:
        print(f"(node account not shown: {exc})")
        return 0
    print("for the zone operator's config:")
    print("[[gateway.meters]]")
    print(f'account = "{account}"')
    print(f'meter_key = "{key.account}"')
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    meter = subparsers.add_parser("meter", help="the node's meter key")
    commands = meter.add_subparsers(dest="meter_command", required=True, metavar="COMMAND")
    show = commands.add_parser("show", help="print the meter public key (creates the key if missing)")
    add_config_args(show)
    show.set_defaults(func=do_meter_show)
