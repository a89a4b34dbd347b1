"""The reader's own exercise answers: ``pytest --answers book/02_attention.ipynb`` (or a .py file).

One test per coding exercise of the answered chapters: it passes when the answer passes
every case, fails with the exercise's feedback when an attempted answer is wrong, and is
skipped while the exercise is not attempted. Without ``--answers`` there is nothing to check.
"""

from __future__ import annotations

import pytest

from sydsgpt.exercises.answers import FAILED, NOT_ATTEMPTED, AnswerResult, check_answers

pytestmark = pytest.mark.your_answers


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "answer" not in metafunc.fixturenames:
        return
    params, ids = [], []
    for path in metafunc.config.getoption("answers"):
        for result in check_answers(path):
            params.append(result)
            ids.append(f"{path}::{result.key}")
    if not params:
        params, ids = (
            [
                pytest.param(
                    None,
                    marks=pytest.mark.skip(reason="no answers to check: pytest --answers PATH"),
                )
            ],
            ["no-answers"],
        )
    metafunc.parametrize("answer", params, ids=ids)


def test_answer(answer: AnswerResult) -> None:
    if answer.status == NOT_ATTEMPTED:
        pytest.skip(f"exercise {answer.key} not attempted ({answer.detail})")
    if answer.status == FAILED:
        feedback = answer.report.summary() if answer.report is not None else answer.detail
        pytest.fail(f"exercise {answer.key} fails:\n{feedback}", pytrace=False)
