"""The book's diagrams: committed SVG files in book/figures, drawn for light and dark themes.

Every diagram is a hand-written SVG with a <title> and <desc> (what a screen reader says),
a light background card of its own (so it reads the same on the light and the dark theme),
dark text, and nothing loaded from elsewhere. Every file is used by a page, through a MyST
``{figure}`` directive with a descriptive ``:alt:``; the browser test then checks that each
one loads. (The chapters' matplotlib plots are checked in test_book.py.)
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "book" / "figures"
SVG_NS = "{http://www.w3.org/2000/svg}"
SVGS = sorted(FIGURES.glob("*.svg"))
FIGURE_DIRECTIVE = re.compile(r"```\{figure\}\s+(?P<path>\S+)\n(?P<options>(?::[^\n]*\n)*)")


def _luminance(color: str) -> float:
    color = color.strip().lower()
    named = {"white": "#ffffff", "black": "#000000"}
    color = named.get(color, color)
    if not re.fullmatch(r"#[0-9a-f]{6}|#[0-9a-f]{3}", color):
        raise AssertionError(f"use #rrggbb colours in diagrams, got {color!r}")
    if len(color) == 4:
        color = "#" + "".join(c * 2 for c in color[1:])
    r, g, b = (int(color[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _pages() -> dict[str, str]:
    """Every page's markdown text: notebooks' markdown cells and .md files."""
    texts = {}
    for path in sorted((ROOT / "book").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        texts[path.name] = "\n".join(
            "".join(c["source"]) + "\n" for c in cells if c["cell_type"] == "markdown"
        )
    for path in sorted((ROOT / "book").glob("*.md")):
        texts[path.name] = path.read_text()
    return texts


def _figure_uses() -> list[tuple[str, str, dict[str, str]]]:
    uses = []
    for page, text in _pages().items():
        for match in FIGURE_DIRECTIVE.finditer(text):
            options = dict(
                (
                    line[1:].split(":", 1)[0].strip(),
                    line.split(":", 2)[2].strip() if line.count(":") >= 2 else "",
                )
                for line in match["options"].splitlines()
            )
            uses.append((page, match["path"], options))
    return uses


def test_the_book_has_its_diagrams() -> None:
    assert len(SVGS) >= 7, f"expected the book's diagrams in {FIGURES}, found {len(SVGS)}"


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: p.name)
def test_diagram_is_self_describing_and_theme_safe(svg: Path) -> None:
    text = svg.read_text()
    assert "http://" not in text.replace("http://www.w3.org/", "") and "https://" not in text, (
        f"{svg.name} refers to another host"
    )
    assert "<image" not in text, f"{svg.name} embeds an image: draw it instead"
    root = ET.fromstring(text)
    assert root.tag == SVG_NS + "svg" and root.get("viewBox"), (
        f"{svg.name}: an <svg> root with a viewBox"
    )
    children = list(root)
    tags = [c.tag.removeprefix(SVG_NS) for c in children]
    assert tags[:2] == ["title", "desc"], (
        f"{svg.name}: start with <title> and <desc> (screen readers), got {tags[:2]}"
    )
    assert (
        len((children[0].text or "").split()) >= 3 and len((children[1].text or "").split()) >= 10
    ), f"{svg.name}: title and desc say what it shows"
    background = next((c for c in children if c.tag == SVG_NS + "rect"), None)
    assert (
        background is not None
        and background.get("width") == "100%"
        and background.get("height") == "100%"
    ), (
        f"{svg.name}: the first <rect> is a full-size background card (width and height 100%), so "
        "it reads on dark themes too"
    )
    assert _luminance(background.get("fill", "")) > 0.85, f"{svg.name}: a light background card"
    for element in root.iter(SVG_NS + "text"):
        fill = element.get("fill")
        if fill:
            assert _luminance(fill) < 0.45, (
                f"{svg.name}: text {element.text!r} in a light colour ({fill}) is unreadable on "
                "the card"
            )
    assert root.iter(SVG_NS + "text"), f"{svg.name}: a diagram has labels"


@pytest.mark.parametrize("svg", SVGS, ids=lambda p: p.name)
def test_every_diagram_is_used_with_alt_text(svg: Path) -> None:
    uses = [
        (page, options) for page, path, options in _figure_uses() if Path(path).name == svg.name
    ]
    assert uses, (
        f"{svg.name} is not shown by any page: use it in a {{figure}} directive or delete it"
    )
    for page, options in uses:
        alt = options.get("alt", "")
        assert len(alt.split()) >= 8, (
            f"{page}: the figure {svg.name} needs an :alt: that describes it (8+ words), got "
            f"{alt!r}"
        )


def test_every_figure_directive_points_at_a_file() -> None:
    for page, path, _ in _figure_uses():
        assert (ROOT / "book" / path).is_file(), f"{page}: {{figure}} {path} does not exist"
