"""Architecture rules: the functional core stays pure.

Pure modules take time and data as arguments and never touch the network, the disk, the clock or
the terminal. Checked twice: their own import statements, and everything they pull in transitively.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE = ["p2pgrid/units.py", "p2pgrid/wire.py", "p2pgrid/errors.py", "p2pgrid/market",
        "p2pgrid/ledger/chain.py", "p2pgrid/settlement.py", "p2pgrid/forecast", "p2pgrid/agent",
        "p2pgrid/telemetry.py", "p2pgrid/net/validation.py", "p2pgrid/net/restarts.py", "p2pgrid/invest.py", "p2pgrid/certificates.py",
        "p2pgrid/metering.py", "p2pgrid/settlement_entries.py", "p2pgrid/trading/local_books.py",
        "p2pgrid/trading/maker.py", "p2pgrid/trading/messages.py", "p2pgrid/trading/pool_entries.py",
        "p2pgrid/trading/pool_messages.py", "p2pgrid/trading/pool_shares.py", "p2pgrid/entry_kinds.py", "p2pgrid/charging.py", "p2pgrid/charging_plan.py", "p2pgrid/trading/share_planning.py",
        "p2pgrid/market/locality.py", "p2pgrid/devices/base.py", "p2pgrid/devices/readings.py",
        "p2pgrid/devices/battery.py", "p2pgrid/devices/pv.py", "p2pgrid/devices/ev.py",
        "p2pgrid/devices/meter.py", "p2pgrid/devices/series.py", "p2pgrid/devices/mqtt_map.py",
        "p2pgrid/devices/sunspec_readings.py"]
PURE += ["simnet/summary.py"]     # the report's headline, reconciliation and attention list
FORBIDDEN = {"trio", "trio_asyncio", "asyncio", "libp2p", "aiosqlite", "rich", "sqlite3", "socket",
             "time", "threading", "subprocess"}


def pure_files() -> list[Path]:
    files: list[Path] = []
    for entry in PURE:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
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


def test_the_rule_itself_catches_an_io_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import trio\nfrom libp2p.host import basic_host\n")
    assert imported_roots(bad) & FORBIDDEN == {"trio", "libp2p"}
