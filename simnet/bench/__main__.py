"""``python -m simnet.bench NAME [options]``: run one benchmark module ``simnet.bench.NAME``."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import simnet.bench


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(simnet.bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in {"-h", "--help"}:
        print(f"usage: python -m simnet.bench {{{','.join(names)}}} [options]")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"simnet.bench: unknown benchmark {name!r}; choose from {', '.join(names)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"simnet.bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
