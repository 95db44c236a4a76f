"""Architecture rules: the functional core stays pure.

Pure modules take time and data as arguments and never touch the network, the disk, the clock or
the terminal. Checked twice: their own import statements, and everything they pull in transitively.
A domain package keeps its rules and its shells side by side; its rule modules are the pure ones.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Packages whose modules are pure except the shells named for each: the node services, stores,
# servers and adapters that run the package's rules under trio or touch the disk. A module added to
# one of these packages is pure unless it is named here.
PURE_PACKAGES = {
    "p2pgrid/market": (),
    "p2pgrid/forecast": (),
    "p2pgrid/agent": ("agent_trader.py", "profile_trader.py", "random_trader.py", "runlog.py"),
    "p2pgrid/settlement": ("service.py", "node_service.py", "gateway.py", "api.py"),
    "p2pgrid/charging": ("service.py", "api.py"),
    "p2pgrid/shares": ("service.py", "api.py"),
    "p2pgrid/flex": ("service.py",),
    "p2pgrid/ppa": ("service.py", "api.py", "cli.py"),
    "p2pgrid/pools": ("host.py", "client.py", "node_service.py", "delivery.py"),
    "p2pgrid/invest": ("report.py",),
    "p2pgrid/onboarding": ("api.py", "node_dir.py"),
    "p2pgrid/trading": ("service.py", "node_service.py", "own_orders.py", "testing.py"),
    "p2pgrid/devices": ("aio.py", "sampler.py", "sunspec.py", "mqtt.py", "real_set.py", "service.py", "telemetry_store.py",
                        "api.py"),
}
# Pure modules of packages that are mostly shell, and of the top level.
PURE_MODULES = ["p2pgrid/units.py", "p2pgrid/wire.py", "p2pgrid/errors.py", "p2pgrid/ledger/chain.py",
                "p2pgrid/net/validation.py", "p2pgrid/net/restarts.py", "p2pgrid/net/connections.py",
                "p2pgrid/node/entry_kinds.py",
                "simnet/summary.py",     # the report's headline, reconciliation and attention list
                "simnet/optimum.py"]     # the community optimum's model (its solver, simnet/highs.py, is apart)
FORBIDDEN = {"trio", "trio_asyncio", "asyncio", "libp2p", "aiosqlite", "rich", "sqlite3", "socket",
             "time", "threading", "subprocess"}


def pure_files() -> list[Path]:
    files = [ROOT / entry for entry in PURE_MODULES]
    for package, shells in PURE_PACKAGES.items():
        files += [path for path in sorted((ROOT / package).rglob("*.py")) if path.name not in shells]
    return files


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io_library(path):
    assert not imported_roots(path) & FORBIDDEN


def test_pure_modules_pull_in_no_io_library_transitively():
    modules = [module_name(p) for p in pure_files()]
    probe = ("import importlib, json, sys\n"
             f"for m in {modules!r}: importlib.import_module(m)\n"
             "print(json.dumps(sorted(m for m in sys.modules)))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], check=True, cwd=ROOT,
                                       capture_output=True, text=True).stdout)
    roots = {name.split(".")[0] for name in loaded}
    # The interpreter itself may load some of these at start-up; only our imports count.
    baseline = json.loads(subprocess.run([sys.executable, "-c", "import json, sys; print(json.dumps(sorted(sys.modules)))"],
                                         check=True, capture_output=True, text=True).stdout)
    assert not (roots - {b.split(".")[0] for b in baseline}) & FORBIDDEN


def test_every_module_and_shell_named_exists():
    named = PURE_MODULES + [f"{package}/{shell}" for package, shells in PURE_PACKAGES.items() for shell in shells]
    assert [entry for entry in named if not (ROOT / entry).is_file()] == []


def test_the_rule_itself_catches_an_io_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom libp2p.host import basic_host\n")
    assert imported_roots(bad) & FORBIDDEN == {"trio", "libp2p"}
