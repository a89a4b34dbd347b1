"""Helpers for the book's notebooks (need IPython, which Jupyter provides).

:func:`show_source` displays the package's real source, read at build time, so the book
can never show stale code. A chapter often needs a *teaching view*: the part of a class or
function its section teaches, without the plumbing later chapters add. Two kinds of
comment markers in the package's source make those views:

* ``# region: name`` ... ``# endregion: name`` marks a region; ``show_source(obj,
  region="name")`` shows only its lines (dedented).
* ``# later: what and where`` ... ``# endlater`` marks plumbing that a first reading skips
  (a KV cache, a fused path, distributed training). A teaching view replaces the block with
  one comment line, ``# ... what and where``, at the block's indentation; ``full=True``
  shows it.

Marker lines themselves are never displayed. :func:`teaching_source` returns the text
(the tests check that each view keeps and drops what it should).

:func:`show_solution` shows an exercise's reference solution *with* the module-level
helpers and constants of its own module that it uses (transitively), so a solution that
calls ``_vocabulary(merges)`` shows ``_vocabulary`` too; names it imports from other
package modules are shown as their import lines.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from typing import Any

_REGION = re.compile(r"^\s*# region: (?P<name>[\w.-]+)\s*$")
_ENDREGION = re.compile(r"^\s*# endregion: (?P<name>[\w.-]+)\s*$")
_LATER = re.compile(r"^(?P<indent>\s*)# later: (?P<what>.+?)\s*$")
_ENDLATER = re.compile(r"^\s*# endlater\s*$")


def _select_region(lines: list[str], region: str, where: str) -> list[str]:
    inside, found, kept = False, False, []
    for line in lines:
        start, end = _REGION.match(line), _ENDREGION.match(line)
        if start and start["name"] == region:
            inside, found = True, True
        elif end and end["name"] == region:
            inside = False
        elif inside:
            kept.append(line)
    if not found:
        raise ValueError(f"no '# region: {region}' marker in the source of {where}")
    if inside:
        raise ValueError(f"'# region: {region}' in {where} has no '# endregion: {region}'")
    return kept


def _elide_later(lines: list[str], full: bool, where: str) -> list[str]:
    kept: list[str] = []
    depth = 0
    for line in lines:
        start = _LATER.match(line)
        if start:
            if depth == 0 and not full:
                kept.append(f"{start['indent']}# ... {start['what']}")
            depth += 1
        elif _ENDLATER.match(line):
            if depth == 0:
                raise ValueError(f"'# endlater' without '# later:' in {where}")
            depth -= 1
        elif depth == 0 or full:
            kept.append(line)
    if depth:
        raise ValueError(f"'# later:' without '# endlater' in {where}")
    return [line for line in kept if not (_REGION.match(line) or _ENDREGION.match(line))]


def teaching_source(obj: Any, region: str | None = None, full: bool = False) -> str:
    """The source of ``obj`` as the book shows it: the ``region`` if given, ``# later:``
    blocks folded into one comment line unless ``full``, marker lines removed."""
    where = getattr(obj, "__qualname__", repr(obj))
    lines = inspect.getsource(obj).splitlines()
    if region is not None:
        lines = _select_region(lines, region, where)
    lines = _elide_later(lines, full, where)
    return textwrap.dedent("\n".join(lines)).strip("\n")


def show_source(*objects: Any, region: str | None = None, full: bool = False) -> Any:
    """Display the package's real source of ``objects``, syntax highlighted.

    ``region`` shows one marked region (with a single object); ``# later:`` blocks are
    folded into one comment line unless ``full=True`` (see the module docstring).
    """
    from IPython.display import Code

    if region is not None and len(objects) != 1:
        raise ValueError("show_source(region=...) takes one object")
    return Code(
        "\n\n".join(teaching_source(obj, region, full) for obj in objects), language="python"
    )


def _top_level_definitions(module: Any) -> dict[str, ast.stmt]:
    """Each name that ``module``'s own source defines at top level (def, class, assignment)."""
    definitions: dict[str, ast.stmt] = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        definitions[name.id] = node
    return definitions


def _free_names(text: str) -> set[str]:
    """The names ``text`` reads but does not bind itself (parameters, assignments, defs)."""
    tree = ast.parse(text)
    bound = {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
    loaded = {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }
    return loaded - bound


def solution_source(function: Any) -> str:
    """``function``'s source preceded by what it uses from the package, as the Solutions
    page shows it: the import line of each name from another ``sydsgpt`` module, then the
    source of each helper or constant its own module defines and it reads (transitively),
    in the module's order, then the function itself."""
    module = inspect.getmodule(function)
    source = inspect.getsource(module)
    definitions = _top_level_definitions(module)
    own, imports, todo = {function.__name__}, set(), [teaching_source(function)]
    while todo:
        for name in _free_names(todo.pop()) - own:
            if name in definitions:
                own.add(name)
                todo.append(ast.get_source_segment(source, definitions[name]) or "")
                continue
            value = vars(module).get(name)
            home = getattr(value, "__module__", None) or ""
            if home.startswith("sydsgpt.") and home != module.__name__:
                imports.add(f"from {home} import {name}")
    helpers = sorted(own - {function.__name__}, key=lambda n: definitions[n].lineno)
    parts = [
        teaching_source(vars(module)[name])
        if isinstance(definitions[name], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        else ast.get_source_segment(source, definitions[name])
        for name in helpers
    ]
    head = ["\n".join(sorted(imports))] if imports else []
    return "\n\n\n".join([*head, *parts, teaching_source(function)])


def show_solution(function: Any) -> Any:
    """Display :func:`solution_source` of ``function``, syntax highlighted."""
    from IPython.display import Code

    return Code(solution_source(function), language="python")
