"""Chapter 5 shows ``train_book_model``'s docstring (``show_source``): the chapters it says
call the function must call it, and those that say they decode with the book checkpoint
must load it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sydsgpt.book import train_book_model

BOOK = Path(__file__).resolve().parent.parent / "book"


def _code(chapter: int) -> str:
    (path,) = BOOK.glob(f"{chapter:02d}_*.ipynb")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_the_chapters_the_docstring_names_as_callers_call_it() -> None:
    doc = " ".join(train_book_model.__doc__.split())
    callers = [int(n) for n in re.findall(r"[Cc]hapter (\d+) calls it", doc)]
    assert callers == [5]
    for chapter in callers:
        assert "train_book_model(" in _code(chapter)


def test_chapter_6_loads_the_book_checkpoint_not_chapter_5s_run() -> None:
    doc = " ".join(train_book_model.__doc__.split())
    assert "chapter 6 decodes with the book checkpoint" in doc
    assert "load_book_checkpoint(" in _code(6)
    assert "train_book_model(" not in _code(6)
