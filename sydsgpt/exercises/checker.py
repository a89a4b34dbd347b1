"""The exercise machinery shared by every chapter.

An :class:`Exercise` holds test :class:`Case` s, a reference ``solution`` and a few
plausible ``wrong_answers``. :func:`check` runs the cases against the reader's function
and prints friendly feedback. The same cases run under pytest against the solutions,
and pytest also proves they *fail* on a stub and on every wrong answer.

Two guards make the feedback trustworthy: each case has a time limit
(:data:`DEFAULT_TIME_LIMIT`, ``check(..., time_limit=...)``), so an endless loop fails that
case with a message instead of hanging the notebook; and a function that changes its
input in place fails the case that caught it (the code that calls it would see the change).
The limit uses ``SIGALRM``: on Windows, or off the main thread, it is not enforced.
"""

from __future__ import annotations

import copy
import functools
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

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
        in_place: the exercise asks the function to change its arguments in place (an
            initialisation, an optimizer step), so the input-mutation guard is off for it.

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
    in_place: bool = False

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
        raise ValueError(
            f"exercise {exercise.key}: difficulty must be 1, 2 or 3, got {exercise.difficulty}"
        )
    if not exercise.cases:
        raise ValueError(
            f"exercise {exercise.key} has no cases: a check that cannot fail is a defect"
        )
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
            return (
                f"Exercise {self.key} not attempted yet: write {name}(...) in place of `raise "
                "NotImplementedError`, then run this cell again."
            )
        stars = f" ({self.stars})" if self.stars else ""
        lines = [f"Exercise {self.key}{stars}: {self.title}"]
        explained = set()
        for r in self.results:
            lines.append(f"  [pass] {r.name}" if r.passed else f"  [FAIL] {r.name}: {r.message}")
            if (
                r.mistake and r.mistake not in explained
            ):  # each likely mistake once, under its first case
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


DEFAULT_TIME_LIMIT = 10.0
"""Seconds each case may take (every reference solution takes well under one)."""


class CaseTimeout(BaseException):
    """A case ran past its time limit (a ``BaseException``,
    so a reader's ``except Exception`` cannot swallow it)."""


@contextmanager
def time_limited(seconds: float | None) -> Iterator[None]:
    """Raise :class:`CaseTimeout` in the block after ``seconds``
    (``None``/0: no limit; needs SIGALRM and the main thread)."""
    if (
        not seconds
        or not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        yield
        return

    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_UNCOPYABLE = object()


def _snapshot(value: Any) -> Any:
    """A deep copy of a mutable argument (tensors, arrays,
    containers, modules); immutable values need none."""
    if isinstance(value, (int, float, str, bytes, bool, type(None), frozenset)):
        return _UNCOPYABLE
    try:
        return copy.deepcopy(value)
    except Exception:  # an object that cannot be copied is not checked
        return _UNCOPYABLE


def _same(now: Any, before: Any) -> bool:
    import torch

    if isinstance(now, torch.nn.Module):
        return _same(now.state_dict(), before.state_dict())
    if isinstance(now, torch.Tensor):
        if (
            not isinstance(before, torch.Tensor)
            or now.shape != before.shape
            or now.dtype != before.dtype
        ):
            return False
        if now.is_floating_point() or now.is_complex():
            return bool(((now == before) | (now.isnan() & before.isnan())).all())
        return torch.equal(now, before)
    if isinstance(now, dict):
        return (
            isinstance(before, dict)
            and now.keys() == before.keys()
            and all(_same(now[k], before[k]) for k in now)
        )
    if isinstance(now, (list, tuple)):
        return (
            type(now) is type(before)
            and len(now) == len(before)
            and all(_same(a, b) for a, b in zip(now, before))
        )
    if (
        type(now).__eq__ is object.__eq__
    ):  # compared by identity only (a loader, a tokenizer): cannot tell
        return True
    try:
        return bool(now == before)
    except Exception:  # no meaningful equality: cannot tell
        return True


def guard_inputs(candidate: Candidate) -> Candidate:
    """``candidate``, raising a friendly ``AssertionError``
    when a call changes one of its arguments in place."""

    @functools.wraps(candidate)
    def call(*args: Any, **kwargs: Any) -> Any:
        given = [(f"argument {i + 1}", a) for i, a in enumerate(args)] + [
            (f"argument {k}=", v) for k, v in kwargs.items()
        ]
        before = [(where, value, _snapshot(value)) for where, value in given]
        result = candidate(*args, **kwargs)
        for where, value, then in before:
            if then is not _UNCOPYABLE and not _same(value, then):
                raise AssertionError(
                    f"your function changed its input in place ({where}, a "
                    f"{type(value).__name__}); the code that calls it still needs the original. "
                    "Work on a copy instead (x = x.clone(), list(ids), or x = x * 2 rather than x "
                    "*= 2)."
                )
        return result

    return call


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


def run_checks(
    exercise: Exercise, candidate: Candidate, time_limit: float | None = DEFAULT_TIME_LIMIT
) -> CheckReport:
    """Run every case against ``candidate``; never raises for a wrong candidate.

    Args:
        time_limit: seconds each case may take (``None``: no limit); a case past it fails
            with a message saying so.
    """
    report = CheckReport(exercise.key, exercise.title, hint=exercise.hint)
    guarded = candidate if exercise.in_place else guard_inputs(candidate)
    for case in exercise.cases:
        try:
            with time_limited(time_limit):
                case.run(guarded)
        except CaseTimeout:
            report.results.append(
                CaseResult(
                    case.name,
                    False,
                    (
                        f"still running after {time_limit:g} s (the time limit of each check), so "
                        "it was stopped: an endless loop? A correct answer takes well under a "
                        "second here; to allow more, pass time_limit=<seconds> to check()."
                    ),
                )
            )
        except Exception as exc:  # the reader's code may raise anything
            report.results.append(CaseResult(case.name, False, _describe_error(exc)))
        else:
            report.results.append(CaseResult(case.name, True))
    return report


def check(
    key: str,
    candidate: Candidate,
    verbose: bool = True,
    time_limit: float | None = DEFAULT_TIME_LIMIT,
) -> CheckReport:
    """Check the reader's ``candidate`` for exercise ``key`` and print feedback.

    Each case may take ``time_limit`` seconds (``None``: no limit).

    Example::

        from sydsgpt.exercises import check
        check("1.1", my_function)
    """
    if not callable(candidate):
        raise TypeError(f"check() needs the function you wrote, got {type(candidate).__name__}")
    exercise = get_exercise(key)
    report = explain_mistakes(exercise, run_checks(exercise, candidate, time_limit))
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
            same = [
                w
                for w in wrong_report.results
                if w.name == result.name and w.message == result.message
            ]
            if same and wrong.__doc__:
                result.mistake = " ".join(wrong.__doc__.split())
                break
    return report


def exercises_in_chapter(chapter: int) -> list[Exercise]:
    """All exercises of a chapter, in order."""
    from . import load_all

    load_all()
    return sorted(
        (e for e in REGISTRY.values() if e.chapter == chapter), key=lambda e: _sort_key(e.key)
    )


def expect_equal(actual: Any, expected: Any, what: str) -> None:
    """Raise a friendly ``AssertionError`` unless ``actual == expected``."""
    if actual != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_close(
    actual: Any, expected: Any, what: str, atol: float = 1e-5, rtol: float = 1e-4
) -> None:
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
        raise AssertionError(
            f"{what}: values differ from the expected ones (largest difference {diff:.3g}){shown}"
        )


def _rounded(values: Any) -> Any:
    """Numbers (or nested lists of them) rounded to 4 significant digits, for messages."""
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return float(f"{values:.4g}")
