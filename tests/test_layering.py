"""The package's layers: core modules never import the command line (``sydsgpt/cli``) or the
benchmarks (``sydsgpt/bench``); those import the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sydsgpt"
OUTER = ("cli", "bench")
CORE = sorted(p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in OUTER)


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports (relative imports
    resolved to ``sydsgpt.``...), at any depth."""
    package = ["sydsgpt", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            found += [module] + [f"{module}.{alias.name}" for alias in node.names]
    return found


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_core_module_imports_no_cli_and_no_benchmark(path: Path) -> None:
    outer = [
        m for m in _imports(path) if m.split(".")[:2] in (["sydsgpt", "cli"], ["sydsgpt", "bench"])
    ]
    assert not outer, f"{path.relative_to(PACKAGE)} imports {outer}: move what it needs to the core"


def _module_name(path: Path) -> str:
    parts = ["sydsgpt", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _module_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth; ``from . import x`` names module
    ``x``, not the package). The package's ``__init__`` files are left out: they only gather."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if path.name == "__init__.py":
            continue
        targets = set()
        for module in _imports(path):
            while (
                module and module not in MODULES
            ):  # ``sydsgpt.model.SydsGPT`` -> ``sydsgpt.model``
                module = module.rpartition(".")[0]
            if module and module != name and not MODULES[module].name == "__init__.py":
                targets.add(module)
        graph[name] = targets
    return graph


def test_no_import_circles() -> None:
    graph = _module_graph()
    assert len(graph) > 50 and graph["sydsgpt.model"] >= {"sydsgpt.blocks", "sydsgpt.config"}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt) :] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert circles == [], " ; ".join(" -> ".join(c) for c in circles)
