"""Exercises for every chapter, checked by the same cases in the notebook and in pytest.

In a notebook::

    from sydsgpt.exercises import check
    check("2.1", my_attention)

Each chapter's exercises live in ``chNN.py`` beside this file (cases, reference
solution, plausible wrong answers).
"""

from __future__ import annotations

import importlib
import pkgutil

from .checker import (
    REGISTRY,
    Case,
    CheckReport,
    Exercise,
    check,
    exercises_in_chapter,
    get_exercise,
    register,
)

__all__ = [
    "REGISTRY",
    "Case",
    "CheckReport",
    "Exercise",
    "check",
    "exercises_in_chapter",
    "get_exercise",
    "register",
    "load_all",
]


def load_all() -> None:
    """Import every ``chNN`` module so its exercises are registered."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{info.name}")
