"""The package tree keeps its one-way data flow (docs/design.md): no upward imports, no cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spora_sd"

#: subpackage -> subpackages it must never import (at module level or inside a function).
#: The subpackages that read or write a cohort and are used by no other (the leaves under cli).
_LEAVES = {"importers", "qc", "viewer"}
FORBIDDEN: dict[str, set[str]] = {
    "layout": {"io", "validation", "convert", "stats", "datasets", "ontologies", "lamin", "ml", "cli", "testing"}
    | _LEAVES
    | {"analysis"},
    "io": {"validation", "convert", "stats", "lamin", "ml", "cli", "testing", "analysis"} | _LEAVES,
    "validation": {"convert", "stats", "lamin", "ml", "cli", "testing", "analysis"} | _LEAVES,
    "stats": {"convert", "lamin", "ml", "cli", "testing", "analysis"} | _LEAVES,
    "convert": {"lamin", "ml", "cli", "testing", "analysis"} | _LEAVES,
    # analyses of the cell table (squidpy at scale): above stats (its per-tissue map), beside lamin and ml
    "analysis": {"convert", "lamin", "ml", "cli", "testing"} | _LEAVES,
    "ontologies": {"io", "validation", "convert", "stats", "datasets", "lamin", "ml", "cli", "testing", "analysis"}
    | _LEAVES,
    # lamin attaches a Vitessce config to what it registers (lamin.vitessce -> viewer.config)
    "lamin": {"cli", "ml", "testing", "importers", "qc"},
    "ml": {"cli", "lamin", "testing"} | _LEAVES,
    "importers": {"lamin", "ml", "cli", "testing", "qc", "viewer"},
    "qc": {"convert", "lamin", "ml", "cli", "testing", "importers", "viewer"},
    # the viewer opens registered artifacts (viewer.artifact -> lamin)
    "viewer": {"ml", "cli", "testing", "importers", "qc"},
}


def _module_name(path: Path) -> str:
    """``src/spora_sd/io/cohort.py`` -> ``spora_sd.io.cohort``."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Absolute names of the spora_sd modules a file imports anywhere in it."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for block in ast.walk(tree):  # imports for type checkers only are not run
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test):
            block.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import (the package uses absolute imports)")
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spora_sd"):
            # `from spora_sd.cli import cohort` imports the submodule (and runs the package's __init__
            # first, which is not a dependency of the importing module on that package's contents)
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("spora_sd"))
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_upward_imports(name: str) -> None:
    parts = name.split(".")
    forbidden = FORBIDDEN.get(parts[1], set()) if len(parts) > 1 else set()
    bad = sorted(m for m in _imports(MODULES[name]) if len(m.split(".")) > 1 and m.split(".")[1] in forbidden)
    assert not bad, f"{name} imports {bad}, against the flow layout -> io -> stats -> convert -> lamin/ml -> cli"


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from spora_sd.cli.app import app\n")
    assert "spora_sd.cli.app" in _imports(bad)
