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
    """Every module ``path`` imports (relative imports resolved to ``sydsgpt.``...), at any depth."""
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
    outer = [m for m in _imports(path) if m.split(".")[:2] in (["sydsgpt", "cli"], ["sydsgpt", "bench"])]
    assert not outer, f"{path.relative_to(PACKAGE)} imports {outer}: move what it needs to the core"
