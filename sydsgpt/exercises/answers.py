"""Check a reader's own exercise answers, from a chapter notebook or a ``.py`` file.

The convention (also in the README, "Check your exercise answers"):

- **In a notebook**, an answer cell is a code cell whose first line is
  ``# exercise N.M`` (the chapters' exercise cells already start that way). The answer
  cells of the notebook run on their own, top to bottom, in one fresh namespace that
  holds ``math``, ``torch``, ``nn`` (``torch.nn``), ``F`` (``torch.nn.functional``) and a
  silent ``check``; anything else an answer needs, it imports itself.
- **In a ``.py`` file**, the whole file runs (with the same namespace to start from).
- Either way the answer to exercise N.M is the function named as the exercise asks
  (``Exercise.function_name``, e.g. ``causal_softmax`` for 2.1). The same cases as
  :func:`sydsgpt.exercises.check` run on it.

Each exercise then is *passed*, *failed* (with its first failing case) or *not attempted*
(no such function, or it still raises ``NotImplementedError``). ``sydsgpt check PATH`` and
``pytest --answers PATH`` print this table; both fail when an attempted exercise fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checker import (
    CaseTimeout,
    CheckReport,
    Exercise,
    explain_mistakes,
    get_exercise,
    run_checks,
    time_limited,
)
from . import exercises_in_chapter, load_all

MARKER = re.compile(r"^\s*#\s*exercise\s+(\d+)\.(\d+)\s*$", re.IGNORECASE)
"""The first line of an answer cell: ``# exercise 2.1``, alone on its line."""

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"

CELL_TIME_LIMIT = 60.0
"""Seconds an answer cell (or a whole ``.py`` file) may run before it is stopped: an endless
loop in a reader's cell must not hang ``sydsgpt check`` or ``pytest --answers``."""


class AnswersError(ValueError):
    """The answers file cannot be read (not found, not a notebook or .py, no answers in it)."""


@dataclass
class AnswerResult:
    """One exercise's outcome: ``status`` is ``passed``, ``failed`` or ``not attempted``."""

    key: str
    status: str
    detail: str = ""
    report: CheckReport | None = None

    @property
    def exercise(self) -> Exercise:
        return get_exercise(self.key)


@dataclass
class Answers:
    """The reader's functions found in one file, and the chapters they answer."""

    path: Path
    namespace: dict[str, Any]
    chapters: list[int]
    cell_errors: dict[str, str]
    """Exercise key -> the error its answer cell raised when it ran."""


def answer_cells(notebook: dict) -> list[tuple[str, str]]:
    """``(key, source)`` of every answer cell of a notebook (parsed ``.ipynb`` JSON), in order."""
    found = []
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", []))
        match = MARKER.match(source.split("\n", 1)[0])
        if match:
            found.append((f"{match.group(1)}.{match.group(2)}", source))
    return found


def _fresh_namespace() -> dict[str, Any]:
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    return {
        "__name__": "__answers__",
        "math": math,
        "torch": torch,
        "nn": nn,
        "F": F,
        "check": lambda *args, **kwargs: None,
    }


def _run_source(
    source: str, namespace: dict[str, Any], label: str, limit: float | None = CELL_TIME_LIMIT
) -> str:
    """Run ``source`` in ``namespace`` quietly, for at most ``limit`` seconds (``None``: no
    limit); the error it raised (or that it ran too long), as one line ('' if none)."""
    lines = [
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    ]  # IPython magics
    try:
        with contextlib.redirect_stdout(io.StringIO()), time_limited(limit):
            exec(compile("\n".join(lines), label, "exec"), namespace)
    except CaseTimeout:
        return (
            f"still running after {limit:g} s, so it was stopped (an endless loop? a test loop "
            "after the function?); allow more with --time-limit SECONDS"
        )
    except Exception as exc:  # the reader's code may raise anything
        return f"{type(exc).__name__}: {exc}"
    return ""


def _chapter_of(path: Path) -> int | None:
    match = re.match(r"(\d+)_", path.name)
    return int(match.group(1)) if match else None


def load_answers(
    path: str | Path, chapters: list[int] | None = None, time_limit: float | None = CELL_TIME_LIMIT
) -> Answers:
    """Run the reader's answers in ``path``: a notebook or a ``.py`` file (module docstring).

    Each answer cell (a ``.py`` file: the whole file) may run ``time_limit`` seconds.
    """
    path = Path(path)
    if not path.is_file():
        raise AnswersError(
            f"no such file: {path} (give a chapter notebook or a .py file of answers)"
        )
    namespace = _fresh_namespace()
    errors: dict[str, str] = {}
    load_all()
    if path.suffix == ".ipynb":
        try:
            cells = answer_cells(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise AnswersError(f"{path} is not a notebook (invalid JSON: {exc})") from None
        if not cells and chapters is None:
            raise AnswersError(
                f"{path} has no answer cells: an answer cell's first line is '# exercise N.M'"
            )
        for key, source in cells:
            error = _run_source(source, namespace, f"{path.name} [exercise {key}]", time_limit)
            if error:
                errors[key] = error
        found = sorted(
            {int(key.split(".")[0]) for key, _ in cells} | ({_chapter_of(path)} - {None})
        )
    elif path.suffix == ".py":
        error = _run_source(path.read_text(encoding="utf-8"), namespace, str(path), time_limit)
        if error:
            raise AnswersError(f"{path} raised {error} when it ran; fix it and check again")
        found = sorted(
            {
                int(k.split(".")[0])
                for k in _all_keys()
                if get_exercise(k).function_name in namespace
            }
        )
        if not found and chapters is None:
            raise AnswersError(
                f"{path} defines none of the exercises' functions (e.g. causal_softmax for 2.1)"
            )
    else:
        raise AnswersError(f"{path}: expected a .ipynb notebook or a .py file")
    return Answers(path, namespace, chapters if chapters is not None else found, errors)


def _all_keys() -> list[str]:
    from .checker import REGISTRY

    return list(REGISTRY)


def check_answers(
    path: str | Path, chapters: list[int] | None = None, time_limit: float | None = CELL_TIME_LIMIT
) -> list[AnswerResult]:
    """The outcome of every coding exercise of the answered chapters, in order (each answer
    cell may run ``time_limit`` seconds: a cell stopped there fails its exercise)."""
    answers = load_answers(path, chapters, time_limit)
    results = []
    for chapter in answers.chapters:
        for exercise in exercises_in_chapter(chapter):
            results.append(_check_one(exercise, answers))
    return results


def _check_one(exercise: Exercise, answers: Answers) -> AnswerResult:
    candidate = answers.namespace.get(exercise.function_name)
    error = answers.cell_errors.get(exercise.key, "")
    if error.startswith("still running"):  # a cell that never ends fails, even after a good answer
        return AnswerResult(exercise.key, FAILED, f"the answer cell was {error}")
    if exercise.key in answers.cell_errors and not callable(candidate):
        return AnswerResult(
            exercise.key, FAILED, f"the answer cell raised {answers.cell_errors[exercise.key]}"
        )
    if not callable(candidate):
        return AnswerResult(exercise.key, NOT_ATTEMPTED, f"no function {exercise.function_name}")
    report = explain_mistakes(exercise, run_checks(exercise, candidate))
    if not report.attempted:
        return AnswerResult(exercise.key, NOT_ATTEMPTED, "still raises NotImplementedError", report)
    if report.passed:
        return AnswerResult(exercise.key, PASSED, f"all {len(report.results)} checks", report)
    first = report.first_failure
    assert first is not None
    detail = f"{first.name}: {first.message}" + (
        f" (likely mistake: {first.mistake})" if first.mistake else ""
    )
    return AnswerResult(exercise.key, FAILED, detail, report)


def table(results: list[AnswerResult]) -> str:
    """The per-exercise table: key, difficulty, function, status, and why."""
    if not results:
        return "no coding exercises in these chapters"
    rows = [
        (r.key, r.exercise.stars, r.exercise.function_name, r.status, r.detail) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [text.ljust(width) for text, width in zip(row[:4], widths)]
        lines.append("  ".join(cells) + ("  " + row[4] if row[4] else ""))
    counts = {
        status: sum(r.status == status for r in results)
        for status in (PASSED, FAILED, NOT_ATTEMPTED)
    }
    lines.append(
        f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[NOT_ATTEMPTED]} not attempted"
    )
    return "\n".join(lines)


def any_failed(results: list[AnswerResult]) -> bool:
    return any(r.status == FAILED for r in results)
