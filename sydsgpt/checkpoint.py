"""Chapter 5: checkpoints that survive crashes and resume a run exactly.

A checkpoint is one ``torch.save`` file holding a plain dict:

=================  ===============================================================
``model``          the model's ``state_dict`` (unwrapped from DDP / ``torch.compile``)
``optimizer``      the optimizer's ``state_dict`` (AdamW moments, step counts)
``config``         the model config dict (the original SydsGPT project's three keys
                   are ``model``, ``optimizer``, ``config``; the rest are new)
``scheduler``      the learning-rate scheduler's ``state_dict``
``step``           optimizer steps done; ``tokens_seen`` training tokens consumed
``train_config``   the training config dict (:class:`sydsgpt.train.TrainConfig`)
``tokenizer``      the tokenizer's identity, ``{"name": ..., "n_vocab": ...}``
``rng``            one RNG snapshot per process (torch CPU, CUDA, ``random``, numpy)
``data``           where the data order stands (epoch, batch within the epoch, seed)
=================  ===============================================================

Everything is a tensor or a plain Python value, so :func:`load_checkpoint` can use
``torch.load(..., weights_only=True)``, which refuses arbitrary pickled objects (a
checkpoint from the internet cannot run code on your machine). :func:`save_checkpoint`
writes atomically: a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .files import CHECKPOINT_NAME, TOKENIZER_NAME, atomic_write

FORMAT_VERSION = 1
__all__ = ["CHECKPOINT_NAME", "CheckpointError", "CheckpointMismatchError", "load_checkpoint", "load_model",
           "load_model_and_tokenizer", "model_from_checkpoint", "save_checkpoint"]


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or is not a SydsGPT checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was made for a different model config or tokenizer."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside ``DistributedDataParallel`` and/or ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def tokenizer_identity(tokenizer: Any) -> dict[str, Any] | None:
    """``{"name", "n_vocab"}`` of a tiktoken ``Encoding`` or a ``BPETokenizer`` (None for None)."""
    if tokenizer is None:
        return None
    if isinstance(tokenizer, Mapping):
        return {"name": str(tokenizer["name"]), "n_vocab": int(tokenizer["n_vocab"])}
    return {"name": str(tokenizer.name), "n_vocab": int(tokenizer.n_vocab)}


# ---------------------------------------------------------------------------- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Every random generator training touches, as tensors and plain Python values."""
    version, mt_state, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
    }
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return state
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))


# ---------------------------------------------------------------------------- saving


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`sydsgpt.files.atomic_write`: ``path`` always holds either
    the old complete file or the new complete one, even if the process dies mid-write."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    step: int = 0,
    tokens_seen: int = 0,
    train_config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    rng: list[dict[str, Any]] | None = None,
    data: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its keys).

    Args:
        model: the model (DDP / compiled wrappers are removed first).
        rng: one :func:`capture_rng_state` per process; default: this process's.
        data: the data order's ``state_dict`` (e.g. :class:`sydsgpt.train.ResumableBatches`).
        extra: more plain values to store (must be tensors / Python builtins).
    """
    raw = unwrap_model(model)
    checkpoint: dict[str, Any] = {
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": dict(raw.config) if isinstance(getattr(raw, "config", None), Mapping) else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "tokens_seen": int(tokens_seen),
        "train_config": dict(train_config) if train_config is not None else None,
        "tokenizer": tokenizer_identity(tokenizer),
        "rng": rng if rng is not None else [capture_rng_state()],
        "data": dict(data) if data is not None else None,
        "format_version": FORMAT_VERSION,
    }
    if extra:
        checkpoint.update(extra)
    return atomic_torch_save(checkpoint, path)


# ---------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain values only).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file holds arbitrary Python objects, or lacks ``model``/``config``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (sydsgpt train ... --out {path.parent})")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} contains Python objects other than tensors and plain values, so it was not loaded "
            "(loading arbitrary pickles can run code). SydsGPT checkpoints only hold tensors, numbers, "
            f"strings, lists and dicts. If you trust the file, open it yourself with "
            f"torch.load(path, weights_only=False). Details: {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"{path} is not a SydsGPT checkpoint: expected a dict with 'model' and 'config', found {found}")
    return checkpoint


def check_compatible(
    checkpoint: Mapping[str, Any],
    model_config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
) -> None:
    """Raise :class:`CheckpointMismatchError` if the checkpoint was made for another model or tokenizer.

    Only the values given are compared; the message lists every differing key.
    """
    problems: list[str] = []
    if model_config is not None and checkpoint.get("config") is not None:
        saved, wanted = checkpoint["config"], dict(model_config)
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                problems.append(f"model config '{key}': checkpoint has {saved.get(key)!r}, this run has {wanted.get(key)!r}")
    identity = tokenizer_identity(tokenizer)
    if identity is not None and checkpoint.get("tokenizer") is not None and checkpoint["tokenizer"] != identity:
        problems.append(f"tokenizer: checkpoint was trained with {checkpoint['tokenizer']}, this run uses {identity}")
    if problems:
        raise CheckpointMismatchError(
            "the checkpoint does not match this run:\n  - " + "\n  - ".join(problems)
            + "\nUse the same model config (--preset/--config) and tokenizer as the run that wrote it, "
            "or start a fresh run in another output directory."
        )


def load_model_and_tokenizer(
    path: str | Path, device: str | torch.device = "cpu", tokenizer_path: str | Path | None = None,
) -> tuple[nn.Module, Any]:
    """The model (eval mode, on ``device``) and tokenizer of a checkpoint, checked to match.

    The tokenizer is ``tokenizer_path`` if given; else, when the checkpoint was trained with
    a tokenizer other than GPT-2's, the ``tokenizer.json`` that training saved beside it;
    else GPT-2's.
    """
    from .bpe import BPETokenizer
    from .tokenizer import get_gpt2_tokenizer

    checkpoint = load_checkpoint(path, map_location=device)
    identity = checkpoint.get("tokenizer") or {"name": "gpt2"}
    beside = Path(path).parent / TOKENIZER_NAME
    if tokenizer_path is None and identity["name"] != "gpt2" and beside.is_file():
        tokenizer_path = beside
    tokenizer = get_gpt2_tokenizer() if tokenizer_path is None else BPETokenizer.load(tokenizer_path)
    check_compatible(checkpoint, tokenizer=tokenizer)
    model = model_from_checkpoint(checkpoint)
    if tokenizer.n_vocab > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.n_vocab} ids but the model only {model.config.vocab_size}; "
            "pass the tokenizer the model was trained with (--tokenizer PATH)."
        )
    return model.to(device).eval(), tokenizer


def model_from_checkpoint(checkpoint: Mapping[str, Any]) -> nn.Module:
    """A :class:`~sydsgpt.model.SydsGPT` built from a loaded checkpoint's config, with its weights."""
    from .model import SydsGPT

    model = SydsGPT(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    return model


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A :class:`~sydsgpt.model.SydsGPT` built from a checkpoint's config and weights, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location)).to(map_location).eval()
