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


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test with one intra-op thread: tiny models gain nothing from more, and on a busy
    2-core machine spinning threads make them many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The fast lane (``pytest -m "not slow"``) is the package's unit tests: every notebook run
    by nbval and every book-build / browser test counts as slow too."""
    for item in items:
        if item.path.suffix == ".ipynb" or item.get_closest_marker("book"):
            item.add_marker(pytest.mark.slow)
