"""Chapters 4 and 7: model weights in the Hugging Face format, from a folder or the Hub.

:func:`download_hf_model` is the one Hub downloader (GPT-2, Llama, Qwen3): it fetches a
repository's config, weights and tokenizer with ``huggingface_hub`` and checks each file
against the size and sha256 the Hub publishes for it, as :mod:`sydsgpt.corpora` checks the
corpora. Without network access (or without ``huggingface_hub``) it fails with a message
that says how to copy the files by hand. :func:`read_source` turns any source the loaders
accept (a folder, a weights file, a Hub name, a state dict, a ``transformers`` model) into
a state dict and a config, for :func:`sydsgpt.gpt2_weights.load_gpt2_weights` and
:func:`sydsgpt.hf_weights.load_hf_weights`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file

from .files import file_sha256

HUB_FILES = (
    "config.json",
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
)
"""What :func:`download_hf_model` fetches from a model repository."""
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
"""The weight files a Hugging Face model folder may hold, in the order they are looked for."""
LEGACY_WEIGHTS = "pytorch_model.bin"
"""Fetched only from a repository that has no safetensors weights (older GPT-2 uploads)."""
_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".json", ".txt", ".gguf")
"""A name ending so is a (missing) file, never a Hub repository."""


def read_weights_file(path: Path) -> dict:
    """Tensors of a ``.safetensors`` file, a sharded
    ``.index.json``, or a ``.bin`` (read with weights_only=True)."""
    if path.name.endswith(".index.json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in read_weights_file(path.parent / shard).items()}
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def read_model_folder(folder: Path, format_name: str) -> tuple[dict, dict]:
    """``(state_dict, config)`` of a Hugging Face model folder (``config.json`` and one of
    :data:`WEIGHT_FILES`).

    Raises ``FileNotFoundError`` naming the folder, what it must hold and what it holds.
    """
    config_file = folder / "config.json"
    weights = next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)
    if not config_file.is_file() or weights is None:
        raise FileNotFoundError(
            f"{folder} must hold config.json and one of {list(WEIGHT_FILES)} (the Hugging Face "
            f"{format_name} format); found {sorted(p.name for p in folder.iterdir())}."
        )
    return read_weights_file(weights), json.loads(config_file.read_text())


def verify_files(
    folder: str | os.PathLike[str], expected: Mapping[str, tuple[int | None, str | None]]
) -> None:
    """Check that ``folder`` holds every file of ``expected`` (name -> ``(size, sha256)``; ``None``:
    not checked).

    Raises ``ValueError`` naming each missing, truncated or corrupted file.
    """
    folder = Path(folder)
    problems = []
    for name, (size, sha256) in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif size is not None and path.stat().st_size != size:
            problems.append(
                f"{name} has {path.stat().st_size:,} bytes, expected {size:,} (an interrupted "
                "download?)"
            )
        elif sha256 is not None and (found := file_sha256(path)) != sha256:
            problems.append(f"{name} has sha256 {found}, expected {sha256}")
    if problems:
        raise ValueError(
            f"the files in {folder} are not the ones published: "
            + "; ".join(problems)
            + ". Delete them and download again."
        )


def looks_like_hub_name(name: str) -> bool:
    """Whether ``name`` can be a Hub repository (``gpt2``, ``Qwen/Qwen3-0.6B``), not a path."""
    return bool(_HUB_NAME.match(name)) and not name.lower().endswith(FILE_SUFFIXES)


def download_hf_model(
    repo_id: str,
    folder: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    loader: str = "load_hf_weights",
) -> Path:
    """Download a model repository's config, weights and tokenizer from the Hugging Face Hub.

    Needs ``huggingface_hub`` and network access (and, for Llama, an accepted licence and
    a login: ``huggingface-cli login``). Every weights file is checked against the size
    and sha256 the Hub publishes for it.

    Args:
        repo_id: e.g. ``"gpt2"``, ``"Qwen/Qwen3-0.6B"`` or ``"meta-llama/Llama-3.2-1B"``.
        folder: where to put the files (default: the Hugging Face cache).
        revision: a branch, tag or commit (default: the latest commit).
        loader: the function the error messages tell to load a folder copied by hand.

    Returns:
        The folder with the files, ready for :func:`load_hf_weights`.
    """
    how_to = (
        f"Without network access, download {', '.join(HUB_FILES[:2])} (or {LEGACY_WEIGHTS}) and "
        f"tokenizer.json from https://huggingface.co/{repo_id} on another machine, put them in one "
        f"folder and pass that folder: {loader}('path/to/folder')."
    )
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as exc:
        raise ImportError(
            f"downloading {repo_id!r} needs the huggingface_hub package (pip install "
            f"huggingface_hub). {how_to}"
        ) from exc
    try:
        info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        names = [s.rfilename for s in info.siblings]
        patterns = list(HUB_FILES)
        if not any(n.endswith(".safetensors") for n in names):
            patterns.append(LEGACY_WEIGHTS)
        path = Path(
            snapshot_download(
                repo_id,
                revision=info.sha,
                allow_patterns=patterns,
                local_dir=None if folder is None else str(folder),
            )
        )
    except Exception as exc:  # offline, unknown or gated repository, ...
        raise RuntimeError(
            f"downloading {repo_id!r} from the Hugging Face Hub failed ({type(exc).__name__}: "
            f"{exc}). {how_to}"
        ) from exc
    expected = {
        s.rfilename: (s.size, s.lfs.sha256 if getattr(s, "lfs", None) else None)
        for s in info.siblings
        if any(fnmatch.fnmatch(s.rfilename, p) for p in patterns)
    }
    verify_files(path, expected)
    return path


def read_source(
    source: Any, format_name: str, loader: str, hub_example: str
) -> tuple[Mapping[str, torch.Tensor], dict[str, Any] | None]:
    """``(state_dict, config_or_None)`` from any source a weights loader accepts.

    Args:
        source: a state dict (no config); a ``transformers`` model; a folder with
            ``config.json`` and weights (:data:`WEIGHT_FILES`); a weights file with
            ``config.json`` beside it; or a Hub name (downloaded by :func:`download_hf_model`).
        format_name: how messages name the format (``"GPT-2"``, ``"Llama / Qwen3"``).
        loader: the loading function messages tell to use (``"load_gpt2_weights"``).
        hub_example: a Hub name for the messages (``"gpt2"``).
    """
    if isinstance(source, Mapping):
        return source, None
    if hasattr(source, "state_dict") and hasattr(getattr(source, "config", None), "to_dict"):
        return source.state_dict(), source.config.to_dict()  # a transformers model
    accepted = (
        f"a folder with config.json and model.safetensors, a weights file with config.json "
        f"beside it, or a Hub name such as {hub_example!r}"
    )
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(
            f"source must be a folder, a weights file, a Hub model name, a state dict or a "
            f"transformers model; got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if path.is_dir():
        return read_model_folder(path, format_name)
    if path.is_file():
        config_file = path.parent / "config.json"
        if not path.name.endswith((".safetensors", ".bin", ".index.json")):
            raise ValueError(
                f"{path} is not a weights file (.safetensors or .bin); expected {accepted}"
            )
        if not config_file.is_file():
            raise FileNotFoundError(
                f"no config.json beside {path}; the {format_name} config.json "
                "must sit in the same folder as the weights"
            )
        return read_weights_file(path), json.loads(config_file.read_text())
    if not looks_like_hub_name(str(source)):
        raise FileNotFoundError(f"no folder or file {path}; expected {accepted}")
    return read_model_folder(download_hf_model(str(source), loader=loader), format_name)
