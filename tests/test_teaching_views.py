"""The book's teaching views (sydsgpt.notebook): regions and folded ``# later:`` blocks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from sydsgpt.notebook import teaching_source

SOURCE = """
def forward(x, cache=None):
    # region: core
    y = x + 1
    # later: the KV cache (chapter 6)
    if cache is not None:
        y = y + cache
    # endlater
    # endregion: core
    return y
"""


@pytest.fixture()
def fake(tmp_path: Path):
    path = tmp_path / "fake_teaching_module.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("fake_teaching_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_later_blocks_fold_into_one_comment_and_markers_vanish(fake) -> None:
    text = teaching_source(fake.forward)
    assert "# ... the KV cache (chapter 6)" in text
    assert "cache is not None" not in text
    assert "region" not in text and "endlater" not in text
    assert text.splitlines()[-1] == "    return y"


def test_full_keeps_the_plumbing_but_not_the_markers(fake) -> None:
    text = teaching_source(fake.forward, full=True)
    assert "if cache is not None:" in text
    assert "# later" not in text and "# endlater" not in text


def test_a_region_shows_only_its_lines_dedented(fake) -> None:
    text = teaching_source(fake.forward, region="core")
    assert text.splitlines()[0] == "y = x + 1"
    assert "return" not in text and "def forward" not in text


def test_unknown_region_names_the_object(fake) -> None:
    with pytest.raises(ValueError, match="no '# region: nope' marker in the source of forward"):
        teaching_source(fake.forward, region="nope")


def test_unbalanced_markers_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad_teaching_module.py"
    path.write_text("def f():\n    # later: x\n    return 1\n")
    spec = importlib.util.spec_from_file_location("bad_teaching_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match="without '# endlater'"):
        teaching_source(module.f)


def test_every_marker_in_the_package_is_balanced() -> None:
    """A stray marker would only show when a chapter is built; check them all here."""
    import sydsgpt

    root = Path(sydsgpt.__file__).parent
    for path in sorted(root.rglob("*.py")):
        depth, regions = 0, []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("# later: "):
                depth += 1
            elif stripped == "# endlater":
                depth -= 1
                assert depth >= 0, f"{path}:{number}: '# endlater' without '# later:'"
            elif stripped.startswith("# region: "):
                regions.append(stripped.removeprefix("# region: "))
            elif stripped.startswith("# endregion: "):
                assert regions and regions.pop() == stripped.removeprefix("# endregion: "), (
                    f"{path}:{number}: unmatched endregion"
                )
        assert depth == 0 and not regions, f"{path}: unclosed markers"


# ---------------------------------------------------------------------- every view the book renders

import ast  # noqa: E402
import builtins  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import textwrap  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    sources = ("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    # IPython's magics and shell lines are not Python: each becomes a `pass` (keeping blocks valid).
    return [re.sub(r"(?m)^(\s*)[%!].*$", r"\1pass", source) for source in sources]


def _views_of(notebook: Path) -> list[tuple[str, Any, str | None, bool]]:
    """``(where, object, region, full)`` for each object of each ``show_source`` call."""
    trees = [ast.parse(source) for source in _code_cells(notebook)]
    namespace: dict[str, Any] = {}
    for tree in trees:  # the notebook's imports give the names its calls use
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                exec(compile(ast.Module([node], []), str(notebook), "exec"), namespace)
    views = []
    for tree in trees:
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "show_source"):
                continue
            options = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
            for arg in call.args:
                where = f"{notebook.name}: show_source({ast.unparse(arg)}, {options})"
                try:
                    obj = eval(compile(ast.Expression(arg), where, "eval"), namespace)
                except NameError:  # a loop variable (the solutions page): checked below
                    continue
                views.append((where, obj, options.get("region"), options.get("full", False)))
    return views


def _solution_views() -> list[tuple[str, Any, str | None, bool]]:
    from sydsgpt.exercises import load_all
    from sydsgpt.exercises.checker import REGISTRY

    load_all()
    return [
        (f"solutions: exercise {k}", e.solution, None, False) for k, e in sorted(REGISTRY.items())
    ]


VIEWS = [view for notebook in NOTEBOOKS for view in _views_of(notebook)] + _solution_views()


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds: assignments, parameters, definitions, imports, loop targets."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return bound


def test_the_book_shows_many_views() -> None:
    # Guards the collector: if it silently found nothing, the tests below would pass on nothing.
    assert len(VIEWS) >= 60 and {Path(w.split(":")[0]).name for w, *_ in VIEWS} >= {
        "02_attention.ipynb",
        "04_model.ipynb",
        "05_pretraining.ipynb",
        "solutions",
    }


@pytest.mark.parametrize(("where", "obj", "region", "full"), VIEWS, ids=[v[0] for v in VIEWS])
def test_every_view_is_python_and_names_nothing_it_folded_away(where, obj, region, full) -> None:
    text = teaching_source(obj, region=region, full=full)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        pytest.fail(f"{where} is not valid Python: {exc}\n{text}")
    module = inspect.getmodule(obj) if not inspect.ismodule(obj) else obj
    known = _bound_names(tree) | set(vars(module)) | set(dir(builtins)) | {"__class__"}
    if region is not None:  # a region may use what the code around it defines, unless folded
        known |= _bound_names(ast.parse(textwrap.dedent(teaching_source(obj))))
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    assert not used - known, f"{where} uses {sorted(used - known)}, defined nowhere it shows"


def _package_regions() -> set[str]:
    marker = re.compile(r"^\s*# region: (?P<name>[\w.-]+)\s*$", re.M)
    return {
        m["name"]
        for path in (ROOT / "sydsgpt").rglob("*.py")
        for m in marker.finditer(path.read_text())
    }


def test_every_region_in_the_package_is_shown_by_the_book() -> None:
    shown = {region for _, _, region, _ in VIEWS if region}
    assert _package_regions() - shown == set(), "regions no notebook shows: remove their markers"


# ------------------------------------------------- the Solutions page shows each solution's helpers

HELPED = """
from sydsgpt.blocks import TransformerBlock

SCALE = 2


def _unused():
    return 0


def _inner(x):
    return x * SCALE


def _outer(x):
    return _inner(x) + 1


def _solution(block: TransformerBlock, x):
    return _outer(x)
"""


def test_solution_source_shows_the_helpers_it_calls_transitively(tmp_path: Path) -> None:
    from sydsgpt.notebook import solution_source

    path = tmp_path / "fake_solution_module.py"
    path.write_text(HELPED)
    spec = importlib.util.spec_from_file_location("fake_solution_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        text = solution_source(module._solution)
    finally:
        del sys.modules[spec.name]
    assert text.startswith("from sydsgpt.blocks import TransformerBlock\n")
    order = [text.find(s) for s in ("SCALE = 2", "def _inner(", "def _outer(", "def _solution(")]
    assert -1 not in order and order == sorted(order), text
    assert "_unused" not in text


def _shown_blocks(notebook: Path) -> list[str]:
    """The code the page displays: the text of each output that holds a ``def``."""
    cells = json.loads(notebook.read_text())["cells"]
    texts = [
        "".join(output.get("data", {}).get("text/plain", ""))
        for cell in cells
        if cell["cell_type"] == "code"
        for output in cell["outputs"]
    ]
    return [text for text in texts if "def " in text]


SOLUTION_KEYS = [
    w.removeprefix("solutions: exercise ") for w, *_ in VIEWS if w.startswith("solutions: ")
]


@pytest.mark.parametrize("key", SOLUTION_KEYS)
def test_the_solutions_page_shows_every_helper_a_solution_uses(key: str) -> None:
    """A solution that calls ``_vocabulary(merges)`` hides its crux unless the page shows
    ``_vocabulary`` too: every name of the exercise module that the shown code reads must
    be defined in the same shown block (checked on the committed page's outputs)."""
    from sydsgpt.exercises import get_exercise
    from sydsgpt.notebook import _top_level_definitions

    solution = get_exercise(key).solution
    shown = [
        t
        for t in _shown_blocks(ROOT / "book" / "solutions.ipynb")
        if f"def {solution.__name__}(" in t
    ]
    assert len(shown) == 1, (
        f"exercise {key}: the Solutions page shows no (or several) code blocks with "
        f"{solution.__name__}; re-execute it: .ci/execute-notebooks book/solutions.ipynb"
    )
    tree = ast.parse(shown[0])
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    hidden = (used & set(_top_level_definitions(inspect.getmodule(solution)))) - _bound_names(tree)
    assert not hidden, (
        f"exercise {key}: the Solutions page shows {solution.__name__} but not {sorted(hidden)}, "
        "which it uses; show it with sydsgpt.notebook.show_solution and re-execute the page"
    )
