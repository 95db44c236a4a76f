"""The market core is pure: no I/O, no clocks, no randomness, no async frameworks."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import p2pgrid.market

MARKET_DIR = pathlib.Path(p2pgrid.market.__file__).parent
FORBIDDEN_IN_SOURCE = {"trio", "libp2p", "aiosqlite", "rich", "sqlite3", "socket", "time", "datetime", "random",
                       "asyncio", "os", "threading"}
FORBIDDEN_LOADED = {"trio", "libp2p", "aiosqlite", "rich", "sqlite3"}


def imported_roots(path: pathlib.Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_market_modules_import_nothing_impure():
    files = sorted(MARKET_DIR.glob("*.py"))
    assert {f.name for f in files} >= {"book.py", "amm.py", "router.py", "auction.py"}
    for path in files:
        assert not imported_roots(path) & FORBIDDEN_IN_SOURCE, path.name


def test_importing_the_market_loads_no_io_framework():
    code = ("import sys, p2pgrid.market.book, p2pgrid.market.amm, p2pgrid.market.router, p2pgrid.market.auction;"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(FORBIDDEN_LOADED)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
