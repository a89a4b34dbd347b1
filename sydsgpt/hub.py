"""Chapter 7: downloading model repositories from the Hugging Face Hub, checked file by file.

:func:`download_hf_model` fetches a repository's config, weights and tokenizer with
``huggingface_hub`` and checks each file against the size and sha256 the Hub publishes
for it, as :mod:`sydsgpt.corpora` checks the corpora. Without network access (or
without ``huggingface_hub``) it fails with a message that says how to copy the files by
hand; :func:`sydsgpt.hf_weights.load_hf_weights` then loads them from a folder.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Mapping

from .files import file_sha256

HUB_FILES = ("config.json", "model.safetensors", "model-*.safetensors", "model.safetensors.index.json",
             "tokenizer.json", "tokenizer_config.json", "generation_config.json")
"""What :func:`download_hf_model` fetches from a model repository."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""The weight files a Hugging Face model folder may hold, in the order they are looked for."""


def read_weights_file(path: Path) -> dict:
    """Tensors of a ``.safetensors`` file, a sharded ``.index.json``, or a ``.bin`` (read with weights_only=True)."""
    import json

    import torch

    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in read_weights_file(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def read_model_folder(folder: Path, format_name: str) -> tuple[dict, dict]:
    """``(state_dict, config)`` of a Hugging Face model folder (``config.json`` and one of :data:`WEIGHT_FILES`).

    Raises ``FileNotFoundError`` naming the folder, what it must hold and what it holds.
    """
    import json

    config_file = folder / "config.json"
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise FileNotFoundError(
            f"{folder} must hold config.json and one of {list(WEIGHT_FILES)} (the Hugging Face {format_name} "
            f"format); found {sorted(p.name for p in folder.iterdir())}."
        )
    return read_weights_file(weights), json.loads(config_file.read_text())


def verify_files(folder: str | os.PathLike[str], expected: Mapping[str, tuple[int | None, str | None]]) -> None:
    """Check that ``folder`` holds every file of ``expected`` (name -> ``(size, sha256)``; ``None``: not checked).

    Raises ``ValueError`` naming each missing, truncated or corrupted file.
    """
    folder = Path(folder)
    problems = []
    for name, (size, sha256) in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif size is not None and path.stat().st_size != size:
            problems.append(f"{name} has {path.stat().st_size:,} bytes, expected {size:,} (an interrupted download?)")
        elif sha256 is not None and (found := file_sha256(path)) != sha256:
            problems.append(f"{name} has sha256 {found}, expected {sha256}")
    if problems:
        raise ValueError(f"the files in {folder} are not the ones published: " + "; ".join(problems)
                         + ". Delete them and download again.")


def download_hf_model(repo_id: str, folder: str | os.PathLike[str] | None = None, revision: str | None = None) -> Path:
    """Download a Llama/Qwen3 repository's config, weights and tokenizer from the Hugging Face Hub.

    Needs ``huggingface_hub`` and network access (and, for Llama, an accepted licence and
    a login: ``huggingface-cli login``). Every weights file is checked against the size
    and sha256 the Hub publishes for it.

    Args:
        repo_id: e.g. ``"Qwen/Qwen3-0.6B"`` or ``"meta-llama/Llama-3.2-1B"``.
        folder: where to put the files (default: the Hugging Face cache).
        revision: a branch, tag or commit (default: the latest commit).

    Returns:
        The folder with the files, ready for :func:`load_hf_weights`.
    """
    how_to = (
        f"Without network access, download {', '.join(HUB_FILES[:2])} (and tokenizer.json) from "
        f"https://huggingface.co/{repo_id} on another machine, put them in one folder and pass that folder: "
        f"load_hf_weights('path/to/folder')."
    )
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:
        raise ImportError(f"downloading {repo_id!r} needs the huggingface_hub package (pip install huggingface_hub). {how_to}") from exc
    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        path = Path(snapshot_download(repo_id, revision=info.sha, allow_patterns=list(HUB_FILES),
                                      local_dir=None if folder is None else str(folder)))
    except Exception as exc:  # offline, unknown or gated repository, ...
        raise RuntimeError(
            f"downloading {repo_id!r} from the Hugging Face Hub failed ({type(exc).__name__}: {exc}). {how_to}"
        ) from exc
    expected = {
        s.rfilename: (s.size, s.lfs.sha256 if getattr(s, "lfs", None) else None)
        for s in info.siblings if any(fnmatch.fnmatch(s.rfilename, p) for p in HUB_FILES)
    }
    verify_files(path, expected)
    return path
