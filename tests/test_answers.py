"""The reader-answers check (``sydsgpt check PATH`` / ``pytest --answers PATH``): a chapter
with the reference answers filled in passes, one with a declared wrong answer fails and
names the exercise, the untouched chapter reports every exercise as not attempted.

The filled-in copies are built in tmp_path from the registry: each answer cell's stub is
replaced by the source of the reference solution (or of a wrong answer), renamed to the
function the exercise asks for. No notebook is executed; only the answer cells run.
"""

from __future__ import annotations

import inspect
import json
import textwrap
import time
from pathlib import Path

import pytest

from sydsgpt.cli import main
from sydsgpt.exercises import exercises_in_chapter, get_exercise
from sydsgpt.exercises.answers import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    AnswersError,
    answer_cells,
    check_answers,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = {int(p.name[:2]): p for p in sorted((ROOT / "book").glob("0[1-9]_*.ipynb"))}


def _answer_source(key: str, function) -> str:
    """``function``'s module (for its helpers) plus its source renamed as the exercise asks."""
    exercise = get_exercise(key)
    source = textwrap.dedent(inspect.getsource(function)).replace(
        f"def {function.__name__}(", f"def {exercise.function_name}(", 1
    )
    module = function.__module__
    helpers = (
        f"import {module} as _chapter\nglobals().update({{k: v for k, v in vars(_chapter).items() "
        f"if not k.startswith('__')}})\n"
    )
    return f"# exercise {key}\n" + helpers + source


def _filled(chapter: int, tmp_path: Path, answers: dict[str, object]) -> Path:
    """A copy of the chapter notebook whose answer
    cells for ``answers`` hold the given functions."""
    notebook = json.loads(CHAPTERS[chapter].read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        source = "".join(cell.get("source", []))
        if cell["cell_type"] == "code" and source.startswith("# exercise "):
            key = source.split("\n", 1)[0].split()[-1]
            if key in answers:
                cell["source"] = (
                    _answer_source(key, answers[key])
                    + f'\nreport = check("{key}", {get_exercise(key).function_name})\n'
                )
    out = tmp_path / CHAPTERS[chapter].name
    out.write_text(json.dumps(notebook), encoding="utf-8")
    return out


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_every_coding_exercise_has_an_answer_cell(chapter: int) -> None:
    keys = [
        key for key, _ in answer_cells(json.loads(CHAPTERS[chapter].read_text(encoding="utf-8")))
    ]
    assert keys == [e.key for e in exercises_in_chapter(chapter)], (
        f"answer cells '# exercise N.M' of chapter {chapter}"
    )


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_untouched_chapter_is_not_attempted(chapter: int) -> None:
    results = check_answers(CHAPTERS[chapter])
    assert [r.key for r in results] == [e.key for e in exercises_in_chapter(chapter)]
    assert all(r.status == NOT_ATTEMPTED for r in results), [
        (r.key, r.status, r.detail) for r in results
    ]


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_reference_answers_pass(chapter: int, tmp_path: Path) -> None:
    path = _filled(chapter, tmp_path, {e.key: e.solution for e in exercises_in_chapter(chapter)})
    results = check_answers(path)
    assert results and all(r.status == PASSED for r in results), [
        (r.key, r.status, r.detail) for r in results
    ]


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_each_wrong_answer_fails_and_names_the_exercise(
    chapter: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for exercise in exercises_in_chapter(chapter):
        for n, wrong in enumerate(exercise.wrong_answers):
            folder = tmp_path / f"{exercise.key}-{n}"
            folder.mkdir()
            path = _filled(chapter, folder, {exercise.key: wrong})
            if n == 0:  # through the command: exit status 1 and the exercise's row says failed
                assert main(["check", str(path)]) == 1
                out = capsys.readouterr().out
                row = next(line for line in out.splitlines() if line.startswith(exercise.key + " "))
                assert FAILED in row and exercise.function_name in row, out
                assert (
                    f"0 passed, 1 failed, {len(exercises_in_chapter(chapter)) - 1} not attempted"
                    in out
                )
                continue
            status = {r.key: r.status for r in check_answers(path)}
            assert status[exercise.key] == FAILED, (
                f"{exercise.key}: {wrong.__name__} not reported as failed"
            )
            assert all(s == NOT_ATTEMPTED for k, s in status.items() if k != exercise.key)


def test_command_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(CHAPTERS[2])]) == 0
    out = capsys.readouterr().out
    assert "0 passed, 0 failed, 4 not attempted" in out
    solved = _filled(2, tmp_path, {e.key: e.solution for e in exercises_in_chapter(2)})
    assert main(["check", str(solved), "--verbose"]) == 0
    assert "4 passed" in capsys.readouterr().out


def test_python_file_of_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ch1 = exercises_in_chapter(1)
    good = tmp_path / "answers.py"
    good.write_text(
        "\n\n".join(_answer_source(e.key, e.solution) for e in ch1[:2]), encoding="utf-8"
    )
    results = check_answers(good)
    assert [(r.key, r.status) for r in results] == [(ch1[0].key, PASSED), (ch1[1].key, PASSED)] + [
        (e.key, NOT_ATTEMPTED) for e in ch1[2:]
    ]
    bad = tmp_path / "bad.py"
    bad.write_text(_answer_source(ch1[0].key, ch1[0].wrong_answers[0]), encoding="utf-8")
    assert main(["check", str(bad)]) == 1
    assert "failed" in capsys.readouterr().out


def test_unreadable_answers_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(tmp_path / "missing.ipynb")]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n", encoding="utf-8")
    with pytest.raises(AnswersError, match="defines none"):
        check_answers(empty)


def test_a_cell_that_raises_is_failed(tmp_path: Path) -> None:
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "source": ["# exercise 2.1\n", "def masked_softmax(scores, mask)\n"],
            }
        ]
    }
    path = tmp_path / "02_broken.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    status = {r.key: (r.status, r.detail) for r in check_answers(path)}
    assert status["2.1"][0] == FAILED and "SyntaxError" in status["2.1"][1]


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_a_cell_that_never_ends_is_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A correct function followed by a loop that never ends (a reader's self-test): the cell is
    stopped at the time limit and its exercise fails saying so; the other cells still run."""
    first, second = exercises_in_chapter(2)[:2]
    looping = _answer_source(first.key, first.solution) + "\nwhile True:\n    pass\n"
    cells = [looping, _answer_source(second.key, second.solution)]
    notebook = {"cells": [{"cell_type": "code", "source": s.splitlines(True)} for s in cells]}
    path = tmp_path / "02_looping.ipynb"
    path.write_text(json.dumps(notebook), encoding="utf-8")
    start = time.monotonic()
    assert main(["check", str(path), "--time-limit", "0.5"]) == 1
    assert time.monotonic() - start < 20
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "failed" in rows[first.key]
    assert "the answer cell was still running after 0.5 s" in rows[first.key]
    assert "passed" in rows[second.key]
    script = tmp_path / "answers.py"
    script.write_text(looping, encoding="utf-8")
    with pytest.raises(AnswersError, match=r"still running after 0\.5 s, so it was stopped"):
        check_answers(script, time_limit=0.5)
    assert main(["check", str(path), "--time-limit", "0"]) == 2
    assert "--time-limit must be a number of seconds > 0" in capsys.readouterr().err


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_pytest_answers_option(tmp_path: Path) -> None:
    """``pytest --answers PATH`` runs only the reader's answers: a passing answer passes, a wrong
    one fails and names its exercise, the others are skipped as not attempted."""
    import os
    import subprocess
    import sys

    first, second = exercises_in_chapter(3)[:2]
    path = _filled(3, tmp_path, {first.key: first.solution, second.key: second.wrong_answers[0]})
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        f"--answers={path}",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_your_answers.py",
    ]
    run = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"exercise {second.key} fails" in run.stdout
    assert "1 failed, 1 passed, 2 skipped" in run.stdout, run.stdout[-2000:]
