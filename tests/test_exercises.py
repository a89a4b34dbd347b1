"""Every registered exercise: its cases pass on the reference solution and fail on a
stub and on each plausible wrong answer (a check that cannot fail is a defect)."""

from __future__ import annotations

import pytest

from sydsgpt.exercises import REGISTRY, check, get_exercise, load_all
from sydsgpt.exercises.checker import explain_mistakes, run_checks

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


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("key", KEYS)
def test_wrong_answers_are_explained(key: str) -> None:
    """At least two wrong answers, each naming its likely mistake (its docstring), and the feedback
    on that wrong answer shows a likely mistake."""
    exercise = get_exercise(key)
    assert len(exercise.wrong_answers) >= 2, (
        f"exercise {key} declares {len(exercise.wrong_answers)} wrong answer(s); at least 2 "
        "expected"
    )
    for wrong in exercise.wrong_answers:
        assert wrong.__doc__, (
            f"{key}: wrong answer {wrong.__name__} has no docstring naming its likely mistake"
        )
        report = explain_mistakes(exercise, run_checks(exercise, wrong))
        assert report.attempted
        assert any(r.mistake for r in report.results if not r.passed), (
            f"{key}: no likely mistake shown for {wrong.__name__}\n{report.summary()}"
        )
        assert "likely mistake:" in report.summary()


@pytest.mark.parametrize("key", KEYS)
def test_exercise_shows_difficulty_and_hint(key: str) -> None:
    exercise = get_exercise(key)
    assert exercise.difficulty in (1, 2, 3) and exercise.stars == "★" * exercise.difficulty
    assert exercise.hint, f"exercise {key} has no hint"
    assert exercise.function_name.isidentifier(), (
        f"exercise {key}: its title must start with the function's name"
    )


def test_each_chapter_has_four_coding_exercises() -> None:
    chapters = {get_exercise(k).chapter for k in KEYS}
    assert chapters >= set(range(1, 8))
    for chapter in chapters:
        n = sum(get_exercise(k).chapter == chapter for k in KEYS)
        assert n >= 4, f"chapter {chapter} has {n} coding exercise(s); at least 4 expected"


def test_function_names_are_unique() -> None:
    """A .py file of answers finds each exercise by its function name, so no two may share one."""
    names = [get_exercise(k).function_name for k in KEYS]
    assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


def test_unattempted_exercise_prints_one_friendly_line(capsys: pytest.CaptureFixture[str]) -> None:
    key = KEYS[0]
    report = check(key, _stub)
    out = capsys.readouterr().out
    assert out.strip().count("\n") == 0, out
    assert f"Exercise {key} not attempted yet" in out and "[FAIL]" not in out
    assert not report and not report.attempted
    assert check(key, get_exercise(key).solution, verbose=False)


def test_wrong_answer_prints_full_feedback(capsys: pytest.CaptureFixture[str]) -> None:
    exercise = get_exercise("2.1")
    report = check("2.1", exercise.wrong_answers[0])
    out = capsys.readouterr().out
    assert report.attempted and not report
    assert (
        f"Exercise 2.1 ({exercise.stars})" in out
        and "[FAIL]" in out
        and "likely mistake:" in out
        and "Hint:" in out
    )


def test_unknown_exercise_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="no exercise"):
        get_exercise("99.9")


def test_the_mutation_guard_is_off_only_for_exercises_that_ask_for_in_place_changes() -> None:
    from sydsgpt.exercises import load_all
    from sydsgpt.exercises.checker import REGISTRY

    load_all()
    in_place = sorted(key for key, exercise in REGISTRY.items() if exercise.in_place)
    assert in_place == ["3.3", "5.2"]
    assert all("in place" in REGISTRY[key].title for key in in_place)


# Boundary cases: a plausible wrong answer that every other case lets through, and the one case
# that sits exactly on the boundary it gets wrong. Each row proves its case is needed.
BOUNDARY_CASES = {
    "1.1": ("_wrong_decode_strict", "ids that end in the middle of a character"),
    "4.2": (
        "_wrong_last_logits_counts_tokens",
        "a real token with the padding's id (0): the lengths say where",
    ),
    "6.1": ("_wrong_min_p_strict", "exactly on the threshold: 'at least' keeps it"),
}


@pytest.mark.parametrize("key", sorted(BOUNDARY_CASES))
def test_a_boundary_case_is_what_catches_its_wrong_answer(key: str) -> None:
    exercise = get_exercise(key)
    wrong_name, case_name = BOUNDARY_CASES[key]
    wrong = next(w for w in exercise.wrong_answers if w.__name__ == wrong_name)
    report = run_checks(exercise, wrong)
    failed = [r.name for r in report.results if not r.passed]
    assert failed == [case_name], f"{key}: {wrong_name} fails {failed}\n{report.summary()}"
