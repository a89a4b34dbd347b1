"""Every registered exercise: its cases pass on the reference solution and fail on a
stub and on each plausible wrong answer (a check that cannot fail is a defect)."""

from __future__ import annotations

import pytest

from sydsgpt.exercises import REGISTRY, check, get_exercise, load_all
from sydsgpt.exercises.checker import run_checks

load_all()
KEYS = sorted(REGISTRY, key=lambda k: tuple(int(p) for p in k.split(".")))


def _stub(*args, **kwargs):
    raise NotImplementedError


def test_exercises_are_registered() -> None:
    assert KEYS, "no exercises registered"


@pytest.mark.parametrize("key", KEYS)
def test_solution_passes(key: str) -> None:
    report = run_checks(get_exercise(key), get_exercise(key).solution)
    assert report.passed, report.summary()


@pytest.mark.parametrize("key", KEYS)
def test_stub_fails(key: str) -> None:
    report = run_checks(get_exercise(key), _stub)
    assert not report.passed
    assert all(not r.passed for r in report.results), report.summary()


@pytest.mark.parametrize("key", KEYS)
def test_wrong_answers_fail(key: str) -> None:
    exercise = get_exercise(key)
    assert exercise.wrong_answers, f"exercise {key} declares no plausible wrong answer"
    for wrong in exercise.wrong_answers:
        report = run_checks(exercise, wrong)
        assert not report.passed, f"{key}: wrong answer {wrong.__name__} passes every check"


def test_each_chapter_has_two_coding_exercises() -> None:
    chapters = {get_exercise(k).chapter for k in KEYS}
    for chapter in chapters:
        n = sum(get_exercise(k).chapter == chapter for k in KEYS)
        assert n >= 2, f"chapter {chapter} has {n} coding exercise(s); at least 2 expected"


def test_check_prints_feedback(capsys: pytest.CaptureFixture[str]) -> None:
    key = KEYS[0]
    report = check(key, _stub)
    out = capsys.readouterr().out
    assert f"Exercise {key}" in out and "[FAIL]" in out and "not implemented yet" in out
    assert not report
    assert check(key, get_exercise(key).solution, verbose=False)


def test_unknown_exercise_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no exercise"):
        get_exercise("99.9")
