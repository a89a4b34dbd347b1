"""The book's teaching views (sydsgpt.notebook): regions and folded ``# later:`` blocks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from sydsgpt.notebook import teaching_source

SOURCE = '''
def forward(x, cache=None):
    # region: core
    y = x + 1
    # later: the KV cache (chapter 6)
    if cache is not None:
        y = y + cache
    # endlater
    # endregion: core
    return y
'''


@pytest.fixture()
def fake(tmp_path: Path):
    path = tmp_path / "fake_teaching_module.py"
    path.write_text(SOURCE)
    spec = importlib.util.spec_from_file_location("fake_teaching_module", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_later_blocks_fold_into_one_comment_and_markers_vanish(fake) -> None:
    text = teaching_source(fake.forward)
    assert "# ... the KV cache (chapter 6)" in text
    assert "cache is not None" not in text
    assert "region" not in text and "endlater" not in text
    assert text.splitlines()[-1] == "    return y"


def test_full_keeps_the_plumbing_but_not_the_markers(fake) -> None:
    text = teaching_source(fake.forward, full=True)
    assert "if cache is not None:" in text
    assert "# later" not in text and "# endlater" not in text


def test_a_region_shows_only_its_lines_dedented(fake) -> None:
    text = teaching_source(fake.forward, region="core")
    assert text.splitlines()[0] == "y = x + 1"
    assert "return" not in text and "def forward" not in text


def test_unknown_region_names_the_object(fake) -> None:
    with pytest.raises(ValueError, match="no '# region: nope' marker in the source of forward"):
        teaching_source(fake.forward, region="nope")


def test_unbalanced_markers_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad_teaching_module.py"
    path.write_text("def f():\n    # later: x\n    return 1\n")
    spec = importlib.util.spec_from_file_location("bad_teaching_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ValueError, match="without '# endlater'"):
        teaching_source(module.f)


def test_every_marker_in_the_package_is_balanced() -> None:
    """A stray marker would only show when a chapter is built; check them all here."""
    import sydsgpt

    root = Path(sydsgpt.__file__).parent
    for path in sorted(root.rglob("*.py")):
        depth, regions = 0, []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("# later: "):
                depth += 1
            elif stripped == "# endlater":
                depth -= 1
                assert depth >= 0, f"{path}:{number}: '# endlater' without '# later:'"
            elif stripped.startswith("# region: "):
                regions.append(stripped.removeprefix("# region: "))
            elif stripped.startswith("# endregion: "):
                assert regions and regions.pop() == stripped.removeprefix("# endregion: "), f"{path}:{number}: unmatched endregion"
        assert depth == 0 and not regions, f"{path}: unclosed markers"
