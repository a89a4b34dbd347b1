"""The exercise machinery shared by every chapter.

An :class:`Exercise` holds test :class:`Case` s, a reference ``solution`` and a few
plausible ``wrong_answers``. :func:`check` runs the cases against the reader's function
and prints friendly feedback. The same cases run under pytest against the solutions,
and pytest also proves they *fail* on a stub and on every wrong answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

Candidate = Callable[..., Any]


@dataclass(frozen=True)
class Case:
    """One check: ``run(candidate)`` calls the candidate and raises ``AssertionError``
    with a reader-friendly message when the result is wrong."""

    name: str
    run: Callable[[Candidate], None]


@dataclass(frozen=True)
class Exercise:
    """A coding exercise.

    Attributes:
        key: ``"<chapter>.<number>"``, e.g. ``"1.2"``.
        title: one line saying what to write.
        cases: the checks.
        solution: the reference solution (rendered in the book's solutions).
        wrong_answers: plausible mistakes; each must fail at least one case.
        hint: shown when a check fails.
        difficulty: 1 to 3, shown as ★ to ★★★.

    Each wrong answer's docstring names the likely mistake it stands for: when the
    reader's function fails a case exactly as a wrong answer does, the feedback shows it.
    """

    key: str
    title: str
    cases: Sequence[Case]
    solution: Candidate
    wrong_answers: Sequence[Candidate] = ()
    hint: str = ""
    difficulty: int = 1

    @property
    def chapter(self) -> int:
        return int(self.key.split(".")[0])

    @property
    def stars(self) -> str:
        """The difficulty as ★ to ★★★."""
        return "★" * self.difficulty

    @property
    def function_name(self) -> str:
        """The name the reader's function must have: the title up to its first ``(``."""
        return self.title.split("(")[0].strip()


REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add an exercise to the registry (keys must be unique)."""
    if exercise.key in REGISTRY:
        raise ValueError(f"exercise {exercise.key} registered twice")
    if exercise.difficulty not in (1, 2, 3):
        raise ValueError(f"exercise {exercise.key}: difficulty must be 1, 2 or 3, got {exercise.difficulty}")
    if not exercise.cases:
        raise ValueError(f"exercise {exercise.key} has no cases: a check that cannot fail is a defect")
    REGISTRY[exercise.key] = exercise
    return exercise


@dataclass
class CaseResult:
    name: str
    passed: bool
    message: str = ""
    mistake: str = ""
    """The likely mistake (a declared wrong answer's docstring) when the failure matches one."""


@dataclass
class CheckReport:
    """What :func:`check` found. Truthy when every case passed."""

    key: str
    title: str
    results: list[CaseResult] = field(default_factory=list)
    hint: str = ""
    stars: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def attempted(self) -> bool:
        """False when every case stopped at the stub's ``raise NotImplementedError``."""
        return not all(r.message == NOT_IMPLEMENTED for r in self.results)

    @property
    def first_failure(self) -> CaseResult | None:
        return next((r for r in self.results if not r.passed), None)

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        n_ok = sum(r.passed for r in self.results)
        return f"<CheckReport {self.key}: {n_ok} of {len(self.results)} checks passed>"

    def summary(self) -> str:
        """The feedback text, one line per case (one line in all while not attempted)."""
        if not self.attempted:
            name = self.title.split("(")[0].strip()
            return f"Exercise {self.key} not attempted yet: write {name}(...) in place of `raise NotImplementedError`, then run this cell again."
        stars = f" ({self.stars})" if self.stars else ""
        lines = [f"Exercise {self.key}{stars}: {self.title}"]
        explained = set()
        for r in self.results:
            lines.append(f"  [pass] {r.name}" if r.passed else f"  [FAIL] {r.name}: {r.message}")
            if r.mistake and r.mistake not in explained:  # each likely mistake once, under its first case
                lines.append(f"         likely mistake: {r.mistake}")
                explained.add(r.mistake)
        n_ok = sum(r.passed for r in self.results)
        if self.passed:
            lines.append(f"All {n_ok} checks passed. Well done!")
        else:
            lines.append(f"{n_ok} of {len(self.results)} checks passed.")
            if self.hint:
                lines.append(f"Hint: {self.hint}")
        return "\n".join(lines)


NOT_IMPLEMENTED = "not implemented yet (the function raised NotImplementedError)"


def _describe_error(exc: BaseException) -> str:
    if isinstance(exc, NotImplementedError):
        return NOT_IMPLEMENTED
    if isinstance(exc, AssertionError):
        return str(exc) or "wrong result"
    return f"raised {type(exc).__name__}: {exc}"


def get_exercise(key: str) -> Exercise:
    """The registered exercise ``key`` (chapters' exercise modules are imported on demand)."""
    from . import load_all

    load_all()
    if key not in REGISTRY:
        raise KeyError(f"no exercise {key!r}; known: {sorted(REGISTRY, key=_sort_key)}")
    return REGISTRY[key]


def _sort_key(key: str) -> tuple[int, ...]:
    return tuple(int(part) for part in key.split("."))


def run_checks(exercise: Exercise, candidate: Candidate) -> CheckReport:
    """Run every case against ``candidate``; never raises for a wrong candidate."""
    report = CheckReport(exercise.key, exercise.title, hint=exercise.hint)
    for case in exercise.cases:
        try:
            case.run(candidate)
        except Exception as exc:  # the reader's code may raise anything
            report.results.append(CaseResult(case.name, False, _describe_error(exc)))
        else:
            report.results.append(CaseResult(case.name, True))
    return report


def check(key: str, candidate: Candidate, verbose: bool = True) -> CheckReport:
    """Check the reader's ``candidate`` for exercise ``key`` and print feedback.

    Example::

        from sydsgpt.exercises import check
        check("1.1", my_function)
    """
    if not callable(candidate):
        raise TypeError(f"check() needs the function you wrote, got {type(candidate).__name__}")
    exercise = get_exercise(key)
    report = explain_mistakes(exercise, run_checks(exercise, candidate))
    if verbose:
        print(report.summary())
    return report


def explain_mistakes(exercise: Exercise, report: CheckReport) -> CheckReport:
    """Add to each failed case of ``report`` the likely mistake: the docstring of the first
    declared wrong answer that fails that case with the very same message."""
    report.stars = exercise.stars
    failed = [r for r in report.results if not r.passed and r.message != NOT_IMPLEMENTED]
    if not failed:
        return report
    by_wrong = [(wrong, run_checks(exercise, wrong)) for wrong in exercise.wrong_answers]
    for result in failed:
        for wrong, wrong_report in by_wrong:
            same = [w for w in wrong_report.results if w.name == result.name and w.message == result.message]
            if same and wrong.__doc__:
                result.mistake = " ".join(wrong.__doc__.split())
                break
    return report


def exercises_in_chapter(chapter: int) -> list[Exercise]:
    """All exercises of a chapter, in order."""
    from . import load_all

    load_all()
    return sorted((e for e in REGISTRY.values() if e.chapter == chapter), key=lambda e: _sort_key(e.key))


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    """Raise a friendly ``AssertionError`` unless ``actual == expected``."""
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_close(actual: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    """Tensors/arrays/numbers close, with shape checked first."""
    import torch

    a = torch.as_tensor(actual, dtype=torch.float64)
    e = torch.as_tensor(expected, dtype=torch.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: expected shape {tuple(e.shape)}, got {tuple(a.shape)}")
    if not torch.allclose(a, e, atol=atol, rtol=rtol):
        diff = (a - e).abs().max().item()
        shown = ""
        if e.numel() <= 12:  # small enough to print: say what was expected and what came back
            shown = f"; expected {_rounded(e.tolist())}, got {_rounded(a.tolist())}"
        raise AssertionError(f"{what}: values differ from the expected ones (largest difference {diff:.3g}){shown}")


def _rounded(values: Any) -> Any:
    """Numbers (or nested lists of them) rounded to 4 significant digits, for messages."""
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return float(f"{values:.4g}")
