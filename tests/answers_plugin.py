"""``pytest --answers PATH``: check the reader's own exercise answers and nothing else.

Loaded with ``-p tests.answers_plugin`` (pyproject's addopts), so the option exists whatever
paths are given. The checks themselves are tests/test_your_answers.py.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--answers",
        action="append",
        default=[],
        metavar="PATH",
        help="check YOUR exercise answers in PATH (a chapter notebook or a .py file of answers) "
        "and run only that check; may be given more than once. For a file outside the project "
        "write --answers=PATH.",
    )


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--answers``, keep only the reader-answers tests."""
    if config.getoption("answers"):
        keep = [item for item in items if item.get_closest_marker("your_answers")]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep
