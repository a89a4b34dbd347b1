"""Helpers for the book's notebooks (need IPython, which Jupyter provides)."""

from __future__ import annotations

import inspect
from typing import Any


def show_source(*objects: Any) -> Any:
    """Display the package's real source of ``objects``, syntax highlighted.

    The book renders code from the package itself, so it can never show stale code.
    """
    from IPython.display import Code

    return Code("\n\n".join(inspect.getsource(obj) for obj in objects), language="python")
