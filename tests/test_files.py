"""sydsgpt.files: the run folder's names, the one atomic write and the one run-folder lock."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sydsgpt.files import LockedRunFolder, RunFolderLocked, atomic_write, lock_run_folder


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


def test_a_run_folder_is_locked_once(tmp_path: Path) -> None:
    with lock_run_folder(tmp_path / "run") as held:
        assert isinstance(held, LockedRunFolder) and held.lock.read_text().split()[0].isdigit()
        with pytest.raises(
            RunFolderLocked, match="in use by another run"
        ):  # no reentrancy, even in one process
            with lock_run_folder(tmp_path / "run"):
                pass
    assert not held.lock.exists()
