"""Architecture rule: the modules of p2pgrid and simnet import each other without cycles.

Every import counts, wherever it stands: at the top, under ``if TYPE_CHECKING:``, inside a function
(a lazy import hides a cycle, it does not remove it). Importing ``a.b.c`` runs ``a/__init__.py`` and
``a/b/__init__.py`` first, so a module depends on its parent packages too, and a package's
``__init__`` that re-exports its submodules is part of every cycle through them: keep them thin.
``from pkg import name`` depends on the submodule ``pkg.name`` when there is one, else on ``pkg``.

A failure names each group of modules tied together by cycles, and prints one cycle of the group
module by module, each line importing the next (the last imports the first).
"""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("p2pgrid", "simnet")


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name (a package by its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    """The modules of ``modules`` that importing ``name`` (at ``path``) imports, itself excluded."""
    is_package = path.name == "__init__.py"
    targets = set(_parents(name))
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets |= {alias.name, *_parents(alias.name)}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets |= {source, *_parents(source)}
            targets |= {f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules}
    return {t for t in targets if t in modules and t != name}


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Mapping[str, set[str]]) -> list[tuple[set[str], list[str]]]:
    """Every strongly connected component of more than one module (Tarjan's algorithm, iterative),
    with one cycle through it: a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)
    return [(component, _cycle_in(component, graph)) for component in components]


def _cycle_in(component: set[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside it)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe(cycles: list[tuple[set[str], list[str]]]) -> str:
    return "\n\n".join(f"{len(group)} modules tied by import cycles: {', '.join(sorted(group))}\none of them:\n  "
                         + "\n  ".join(f"{m} ->" for m in cycle) + f"\n  {cycle[0]}" for group, cycle in cycles)


def test_no_module_of_p2pgrid_or_simnet_is_part_of_an_import_cycle():
    cycles = find_cycles(import_graph(module_files()))
    assert not cycles, "\n" + describe(cycles)


def _write(root: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root, ["pkg"])


def test_the_rule_sees_type_only_lazy_relative_and_package_imports(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import B\n",
        "pkg/b.py": "def f():\n    from . import c\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/sub/__init__.py": "from pkg.sub.leaf import X\n",
        "pkg/sub/leaf.py": "X = 1\n",
        "pkg/free.py": "from pkg import sub\nimport pkg.c\n",
    })
    graph = import_graph(modules)
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.b"] == {"pkg", "pkg.c"}
    assert graph["pkg.free"] == {"pkg", "pkg.sub", "pkg.c"}
    cycles = find_cycles(graph)
    assert sorted(sorted(group) for group, _ in cycles) == [["pkg.a", "pkg.b", "pkg.c"], ["pkg.sub", "pkg.sub.leaf"]]
    assert "pkg.a ->\n  pkg.b ->\n  pkg.c ->\n  pkg.a" in describe(cycles)
