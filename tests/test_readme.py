"""README.md starts with exactly the two set-up commands, and .ci/run runs the second one."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    return re.findall(r"^    (python3 -m venv .venv && .+)$", (ROOT / "README.md").read_text(), re.M)


def test_readme_opens_with_demo_and_test_commands():
    commands = setup_commands()
    assert len(commands) == 2
    demo, tests = commands
    assert demo.endswith("python -m simnet demo")
    assert "pytest" in tests
    first_block = (ROOT / "README.md").read_text().split("\n\n")[:4]
    assert any(demo in block for block in first_block), "the commands must open the README"


def test_ci_runs_exactly_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    extracted = subprocess.run(
        ["bash", "-c", "sed -n 's/^    \\(python3 -m venv .venv && .*pytest.*\\)$/\\1/p' README.md | head -n 1"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == setup_commands()[1]
    assert "exit 1" in script and '"$status" -eq 5' in script
