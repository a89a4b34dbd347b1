"""Shared pytest fixtures (the offline cache set-up is the plugin tests/offline_env.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test runs with one intra-op thread: tiny models gain nothing from more, and on a
    busy 2-core machine spinning threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fast_lane(config: pytest.Config) -> bool:
    """Whether the ``-m`` expression leaves out slow tests (``pytest -m "not slow"``)."""
    from _pytest.mark.expression import Expression

    markexpr = config.getoption("markexpr", "") or ""
    if not markexpr:
        return False
    try:
        return not Expression.compile(markexpr).evaluate(lambda name, **kwargs: name == "slow")
    except Exception:  # an expression pytest itself will report
        return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The fast lane collects no notebook at all (nbval would otherwise parse and list every
    ``.ipynb`` only to deselect it); a plain ``pytest`` still runs every notebook."""
    if collection_path.suffix == ".ipynb" and _fast_lane(config):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast lane (``pytest -m "not slow"``) is the package's unit tests: every notebook run
    by nbval and every book-build / browser test counts as slow too."""
    for item in items:
        if item.path.suffix == ".ipynb" or item.get_closest_marker("book"):
            item.add_marker(pytest.mark.slow)
