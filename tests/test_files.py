"""sydsgpt.files: the run folder's names and the one atomic write; sydsgpt.validation's shared checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sydsgpt.files import atomic_write
from sydsgpt.validation import check_input_ids, check_keys, check_positive_int


def test_atomic_write_text_bytes_and_a_writer(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "f.txt"
    atomic_write(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write(target, lambda f: torch.save({"x": torch.arange(3)}, f))
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.arange(3))


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write(target, "old")

    def half_then_crash(f) -> None:  # type: ignore[no-untyped-def]
        f.write(b"new but incomplete")
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_check_keys_names_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown widget option\(s\) \['colour'\]; known: \['color', 'size'\]"):
        check_keys({"colour": 1}, ["size", "color"], "widget option")
    with pytest.raises(TypeError, match=r"missing required widget option\(s\) \['size'\]"):
        check_keys({"color": 1}, ["size", "color"], "widget option", required=["size"], error=TypeError)
    check_keys({"size": 1}, ["size", "color"], "widget option", required=["size"])


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None])
def test_check_positive_int_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="n must be a positive integer"):
        check_positive_int(value, "n")


def test_check_positive_int_accepts() -> None:
    check_positive_int(3, "n")
    check_positive_int(None, "n", allow_none=True)


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([[1, 2]], TypeError, "make one with torch.tensor"),
        (torch.tensor([1, 2]), ValueError, r"got shape \(2,\); for a single sequence use input_ids.unsqueeze\(0\)"),
        (torch.tensor([[1.0, 2.0]]), TypeError, "integer tensor of token ids, got dtype torch.float32"),
        (torch.zeros(1, 0, dtype=torch.long), ValueError, "has no tokens"),
    ],
)
def test_check_input_ids(ids: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        check_input_ids(ids)
