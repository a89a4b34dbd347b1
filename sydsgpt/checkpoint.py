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
``data_fingerprint``  a short hash of the training tokens (:func:`sydsgpt.train.train`
                   writes it): a resume on other data is refused
``checksum``       sha256 of every tensor's bytes (with its place, dtype and shape),
                   checked at load: a damaged file is an error, not silently wrong weights
=================  ===============================================================

Everything is a tensor or a plain Python value, so :func:`load_checkpoint` can use
``torch.load(..., weights_only=True)``, which refuses arbitrary pickled objects (a
checkpoint from the internet cannot run code on your machine). :func:`save_checkpoint`
writes atomically: a crash mid-write leaves the previous checkpoint intact. Checkpoints
written before the checksum existed still load (there is nothing to check them against).
"""

from __future__ import annotations

import hashlib
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .gguf_tokenizer import load_tokenizer
from .files import CHECKPOINT_NAME, TOKENIZER_NAME, atomic_write
from .model import SydsGPT
from .tokenizer import get_gpt2_tokenizer

FORMAT_VERSION = 1
__all__ = [
    "CHECKPOINT_NAME",
    "CheckpointError",
    "CheckpointMismatchError",
    "RunState",
    "load_checkpoint",
    "load_model",
    "load_model_and_tokenizer",
    "model_from_checkpoint",
    "save_checkpoint",
]


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
    state["numpy"] = {
        "name": name,
        "keys": keys.tolist(),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
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
        np.random.set_state(
            (n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
        )


# ---------------------------------------------------------------------------- saving


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through :func:`sydsgpt.files.atomic_write`: ``path`` always holds either
    the old complete file or the new complete one, even if the process dies mid-write."""
    return atomic_write(path, lambda f: torch.save(obj, f))


@dataclass(frozen=True)
class RunState:
    """Where a training run stands and how it was made: what a checkpoint stores beside the
    weights, the optimizer and the scheduler (each field is the checkpoint key of its name)."""

    step: int = 0
    """Optimizer steps done."""
    tokens_seen: int = 0
    """Training tokens consumed so far (over all processes)."""
    train_config: Mapping[str, Any] | None = None
    """The run's :class:`sydsgpt.train.TrainConfig`, as a dict."""
    rng: list[dict[str, Any]] | None = None
    """One :func:`capture_rng_state` per process (``None``: this process's, taken at the save)."""
    data: Mapping[str, Any] | None = None
    """The data order's ``state_dict`` (e.g. :class:`sydsgpt.data.ResumableBatches`)."""
    data_fingerprint: str | None = None
    """A short hash of the training tokens (:func:`sydsgpt.train.data_fingerprint`); stored
    only when given."""


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    *,
    tokenizer: Any = None,
    run: RunState = RunState(),
) -> Path:
    """Write a checkpoint atomically (see the module docstring for its keys).

    Args:
        model: the model (DDP / compiled wrappers are removed first).
        tokenizer: stored as its identity (:func:`tokenizer_identity`), checked at resume.
        run: where the run stands (:class:`RunState`: step, tokens seen, training config,
            RNG states, data position and fingerprint).
    """
    raw = unwrap_model(model)
    checkpoint: dict[str, Any] = {
        "model": raw.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "config": dict(raw.config) if isinstance(getattr(raw, "config", None), Mapping) else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(run.step),
        "tokens_seen": int(run.tokens_seen),
        "train_config": dict(run.train_config) if run.train_config is not None else None,
        "tokenizer": tokenizer_identity(tokenizer),
        "rng": run.rng if run.rng is not None else [capture_rng_state()],
        "data": dict(run.data) if run.data is not None else None,
        "format_version": FORMAT_VERSION,
    }
    if run.data_fingerprint is not None:
        checkpoint["data_fingerprint"] = run.data_fingerprint
    checkpoint["checksum"] = {"algorithm": "sha256", "tensors": tensor_checksum(checkpoint)}
    return atomic_torch_save(checkpoint, path)


# ---------------------------------------------------------------------------- loading


def tensor_checksum(checkpoint: Mapping[str, Any]) -> str:
    """sha256 over every tensor in ``checkpoint`` (except its ``checksum`` entry): each tensor's
    place in the dict, dtype, shape and bytes, in the dict's order."""
    digest = hashlib.sha256()

    def visit(value: Any, where: str) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{where}|{t.dtype}|{tuple(t.shape)}|".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{where}/{key!r}")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(item, f"{where}/{i}")

    visit({k: v for k, v in checkpoint.items() if k != "checksum"}, "")
    return digest.hexdigest()


def first_non_finite(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> str | None:
    """The name of the first weight (or optimizer moment) holding a NaN or infinity, else ``None``:
    checked before a checkpoint is saved, so a saved checkpoint is always finite."""
    for name, tensor in unwrap_model(model).state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name}"
    if optimizer is not None:
        for i, state in enumerate(optimizer.state.values()):
            for key, tensor in state.items():
                if (
                    isinstance(tensor, torch.Tensor)
                    and tensor.is_floating_point()
                    and not bool(torch.isfinite(tensor).all())
                ):
                    return f"optimizer state {key} of parameter {i}"
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain values only) and
    check its tensors against the checksum stored at save (when it has one).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: naming the file: it is empty, truncated or not a checkpoint, holds
            arbitrary Python objects, lacks ``model``/``config``, or its tensors do not match
            their checksum (the file was damaged after it was written).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}; train first (sydsgpt train ... --out {path.parent})"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes), not a checkpoint; use another copy or train again"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise CheckpointError(
                f"{path} is damaged or not a checkpoint (its pickle data cannot be read: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
            ) from exc
        raise CheckpointError(
            f"{path} contains Python objects other than tensors and plain values, so it was not "
            "loaded (loading arbitrary pickles can run code). SydsGPT checkpoints only hold "
            "tensors, numbers, strings, lists and dicts. If you trust the file, open it yourself "
            f"with torch.load(path, weights_only=False). Details: {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # torch/zip/pickle raise many types for a truncated or foreign file
        detail = str(exc).split(". ")[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint: it is truncated, damaged or not a torch.save "
            f"file ({type(exc).__name__}: {detail}); use another copy or an earlier checkpoint"
        ) from exc
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or "config" not in checkpoint:
        found = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(
            f"{path} is not a SydsGPT checkpoint: expected a dict with 'model' and 'config', found "
            f"{found}"
        )
    stored = checkpoint.get("checksum")
    if stored is not None:
        if not isinstance(stored, Mapping) or stored.get("tensors") != tensor_checksum(checkpoint):
            raise CheckpointError(
                f"{path} is corrupted: its tensor data does not match the sha256 checksum stored "
                "when it was saved (the file was changed or damaged after it was written, e.g. by "
                "a disk or copy error); use another copy or an earlier checkpoint"
            )
    return checkpoint


def check_compatible(
    checkpoint: Mapping[str, Any],
    model_config: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
) -> None:
    """Raise :class:`CheckpointMismatchError` if the checkpoint was made for another model or
    tokenizer.

    Only the values given are compared; the message lists every differing key.
    """
    problems: list[str] = []
    if model_config is not None and checkpoint.get("config") is not None:
        saved, wanted = checkpoint["config"], dict(model_config)
        for key in sorted(set(saved) | set(wanted)):
            if saved.get(key) != wanted.get(key):
                problems.append(
                    f"model config '{key}': checkpoint has {saved.get(key)!r}, this run has "
                    f"{wanted.get(key)!r}"
                )
    identity = tokenizer_identity(tokenizer)
    if (
        identity is not None
        and checkpoint.get("tokenizer") is not None
        and checkpoint["tokenizer"] != identity
    ):
        problems.append(
            f"tokenizer: checkpoint was trained with {checkpoint['tokenizer']}, this run uses "
            f"{identity}"
        )
    if problems:
        raise CheckpointMismatchError(
            "the checkpoint does not match this run:\n  - "
            + "\n  - ".join(problems)
            + "\nUse the same model config (--preset/--config) and tokenizer as the run that wrote "
            "it, or start a fresh run in another output directory."
        )


def load_model_and_tokenizer(
    path: str | Path,
    device: str | torch.device = "cpu",
    tokenizer_path: str | Path | None = None,
) -> tuple[nn.Module, Any]:
    """The model (eval mode, on ``device``) and tokenizer of a checkpoint, checked to match.

    The tokenizer is ``tokenizer_path`` if given; else, when the checkpoint was trained with
    a tokenizer other than GPT-2's, the ``tokenizer.json`` that training saved beside it;
    else GPT-2's.
    """
    checkpoint = load_checkpoint(path, map_location=device)
    checkpoint_path = path
    identity = checkpoint.get("tokenizer") or {"name": "gpt2"}
    beside = Path(path).parent / TOKENIZER_NAME
    if tokenizer_path is None and identity["name"] != "gpt2" and beside.is_file():
        tokenizer_path = beside
    tokenizer = get_gpt2_tokenizer() if tokenizer_path is None else load_tokenizer(tokenizer_path)
    check_compatible(checkpoint, tokenizer=tokenizer)
    model = model_from_checkpoint(checkpoint, checkpoint_path)
    if tokenizer.n_vocab > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.n_vocab} ids but the model only "
            f"{model.config.vocab_size}; pass the tokenizer the model was trained with "
            "(--tokenizer PATH)."
        )
    return model.to(device).eval(), tokenizer


def model_from_checkpoint(
    checkpoint: Mapping[str, Any], path: str | Path = "the checkpoint"
) -> nn.Module:
    """A :class:`~sydsgpt.model.SydsGPT` built from a loaded checkpoint's config, with its weights.

    Raises:
        CheckpointError: naming ``path``: its config is invalid or its tensors do not fit it.
    """

    try:
        model = SydsGPT(checkpoint["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} holds an invalid model config: {exc}") from exc
    if any(name.endswith(".lora_A") for name in checkpoint["model"]):
        return _merged_lora_model(model, checkpoint, path)
    load_weights(model, checkpoint["model"], path)
    return model


def _merged_lora_model(model: SydsGPT, checkpoint: Mapping[str, Any], path: str | Path) -> SydsGPT:
    """A LoRA run's checkpoint (its layers wrapped, chapter 9) as a plain model: the adapters'
    settings come from the ``adapter.safetensors`` beside it, and ``B A`` is merged into ``W``."""
    from .lora import ADAPTER_NAME, LoRAConfig, apply_lora, read_adapter, remove_lora

    adapter = Path(path).parent / ADAPTER_NAME
    if not adapter.is_file():
        raise CheckpointError(
            f"{path} holds LoRA layers, but the {ADAPTER_NAME} that says their settings is not "
            "beside it; keep the run folder together"
        )
    apply_lora(model, LoRAConfig.from_dict(read_adapter(adapter)[1]["lora"]))
    load_weights(model, checkpoint["model"], path)
    return remove_lora(model, merge=True)


def load_weights(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path = "the checkpoint"
) -> None:
    """``model.load_state_dict(state)``, with a :class:`CheckpointError` naming ``path`` and the
    tensors that are of another shape than the model's config gives them (or missing,
    unexpected)."""
    expected = model.state_dict()
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: its 'model' entry is a {type(state).__name__}, not a state dict"
        )
    # The original SydsGPT-Pretraining checkpoints store each layer's causal mask; it follows
    # from the shapes, so it is not a weight here.
    state = {k: v for k, v in state.items() if not k.endswith(".attention.causal_mask")}
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    padded = ("token_embedding.weight", "output_projection.weight")  # any padding loads

    def fits(name: str, value: torch.Tensor) -> bool:
        want = expected[name].shape
        if name in padded and vocab is not None and value.dim() == 2 and value.shape[0] >= vocab:
            return value.shape[1:] == want[1:]
        return value.shape == want

    problems = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and isinstance(v, torch.Tensor) and not fits(k, v)
    ]
    if problems:
        raise CheckpointError(
            f"{path}: its tensors do not fit the model its config describes ({len(problems)} "
            "problem(s): "
            + "; ".join(problems[:5])
            + ("; ..." if len(problems) > 5 else "")
            + "); the file is damaged or was edited"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing or unexpected tensors
        detail = " ".join(str(exc).split())
        raise CheckpointError(
            f"{path}: its tensors do not fit the model its config describes ({detail[:400]})"
        ) from exc


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """A :class:`~sydsgpt.model.SydsGPT` built from a
    checkpoint's config and weights, in eval mode."""
    return model_from_checkpoint(load_checkpoint(path, map_location), path).to(map_location).eval()
