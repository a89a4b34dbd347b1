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
"""

from __future__ import annotations

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
