"""The ``p2pgrid`` command: the parser, logging set-up and the one place errors become exit codes.

Contract for command modules: ``register(subparsers)`` adds sub-commands whose parsers
``set_defaults(func=do_something)``; ``do_something(args) -> int`` is the exit code. Node commands
live in ``node_commands``, creating and joining a zone in ``zone``, the offline device check in ``devices``, the meter key in ``meter``,
trading through the running node in ``trade``, pool shares in ``shares``, EV charging in
``charging``, the flexibility market in ``flex``, and ``ledger``, ``settlement`` and ``invest`` read
the node's ledger. What they share is in ``common``; no command module imports another.

Errors: a ``P2PGridError`` prints one line ``p2pgrid: error: ...`` on stderr and exits 1; a usage
error prints one line and exits 2; Ctrl-C exits 130 without a traceback.

Logging is configured in one place, ``common.configure_logging``, *after* importing libp2p: py-libp2p
sets ``propagate = False`` on its logger when imported, which we undo so its records reach our
handler.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import NoReturn

from p2pgrid import __version__
from p2pgrid.errors import P2PGridError

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _MissingRequired(Exception):
    """argparse found a required option missing; raised only to look for unknown ones first."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (and exit code 2), and an unknown option
    is named even when a required one is missing too (argparse checks required options first, so
    ``run --bogus`` would otherwise say ``--config is required``)."""

    def error(self, message: str) -> NoReturn:
        if "required" in message:
            raise _MissingRequired(message)
        self._usage_error(message)

    def _usage_error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def, override]
        try:
            return super().parse_known_args(args, namespace)
        except _MissingRequired as missing:
            unknown = self._unknown_options(sys.argv[1:] if args is None else list(args))
            self._usage_error(f"unrecognized arguments: {' '.join(unknown)}" if unknown else str(missing))

    def _unknown_options(self, args: list[str]) -> list[str]:
        """The options in ``args`` this parser does not know, parsed with nothing required."""
        relaxed = [(item, item.required) for item in (*self._actions, *self._mutually_exclusive_groups)]
        for item, _ in relaxed:
            item.required = False
        try:
            _, extras = super().parse_known_args(args, argparse.Namespace())
        except _MissingRequired:
            extras = []     # a sub-command's own required option: it names its own problem
        finally:
            for item, required in relaxed:
                item.required = required
        return [text for text in extras if text.startswith("-")]


def build_parser() -> argparse.ArgumentParser:
    from p2pgrid.cli import charging, devices, invest, ledger, meter, node_commands, settlement, shares, trade, zone
    from p2pgrid.cli import flex
    from p2pgrid.ppa import cli as ppa_cli

    parser = OneLineArgumentParser(prog="p2pgrid", description="Peer-to-peer energy trading node.")
    parser.add_argument("--version", action="version", version=f"p2pgrid {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (node_commands, zone, devices, meter, trade, ledger, settlement, invest, shares, charging, flex,
                   ppa_cli):
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except P2PGridError as exc:
        return _report(exc)
    except BaseExceptionGroup as group:
        # trio nurseries wrap errors in groups; a group made only of P2PGridErrors (a peer, the
        # user or the environment broke something) is still one line. Anything else is a bug.
        matched, rest = group.split(P2PGridError)
        if matched is None or rest is not None:
            # Python prints nested groups only ten deep: name every real error, whole, first.
            for leaf in _leaves(group):
                traceback.print_exception(leaf, file=sys.stderr)
            raise
        return _report(_first_leaf(matched))
    except KeyboardInterrupt:
        print("p2pgrid: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _report(exc: BaseException) -> int:
    print(f"p2pgrid: error: {_one_line(str(exc))}", file=sys.stderr)
    return EXIT_ERROR


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:  # type: ignore[type-arg]
    return [leaf for exc in group.exceptions
            for leaf in (_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])]


def _first_leaf(group: BaseExceptionGroup) -> BaseException:  # type: ignore[type-arg]
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


if __name__ == "__main__":
    sys.exit(main())
