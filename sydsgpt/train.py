"""Chapter 5: pretraining.

From the loss to a training loop a practitioner would use:

- :func:`cross_entropy_loss`, :func:`perplexity`, :func:`batch_loss`, :func:`loader_loss`
  (mean loss over a loader, e.g. the validation split);
- :func:`lr_at_step` / :func:`make_scheduler`: linear warm-up then cosine decay;
- :func:`build_optimizer`: AdamW, weight decay on matrices only, fused on CUDA;
- :class:`ResumableBatches`: the data order, fixed by a seed, resumable, sharded across
  processes;
- :func:`train_step`: one optimizer step (gradient accumulation, bf16 autocast, clipping,
  a :class:`TrainingDiverged` error on a NaN/inf loss);
- :func:`train`: the loop (periodic evaluation and samples, a tqdm bar, a JSON-lines log
  of every step, atomic checkpoints, exact resume, DDP under ``torchrun``);
- :func:`read_log` / :func:`plot_losses`: the loss curves from the log;
- :func:`train_book_model`: the small model chapter 5 trains (chapter 6 decodes with it).

Every knob lives in one :class:`TrainConfig`.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .checkpoint import (
    CHECKPOINT_NAME, capture_rng_state, check_compatible, load_checkpoint,
    restore_rng_state, save_checkpoint, tokenizer_identity, unwrap_model,
)
from .distributed import DistributedContext, all_reduce_mean, all_reduce_sum, barrier, current_context, gather_objects
from .model import generate_simple

LOG_NAME = "log.jsonl"
Batch = tuple[torch.Tensor, torch.Tensor]


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; the weights were not updated with it."""

    def __init__(self, step: int | None, loss: float, grad_norm: float, checkpoint: str | None = None) -> None:
        self.step, self.loss, self.grad_norm, self.checkpoint = step, loss, grad_norm, checkpoint
        where = f"at step {step}" if step is not None else "in this step"
        message = (
            f"training diverged {where}: loss is {loss}, gradient norm is {grad_norm}. "
            "The optimizer did not apply this step. "
        )
        message += f"The last good checkpoint is {checkpoint}. " if checkpoint else "No checkpoint was written yet. "
        message += "Try a lower learning rate (--lr), a longer warm-up (--warmup) or gradient clipping (--grad-clip)."
        super().__init__(message)


# ---------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Everything that controls a training run (stored in every checkpoint).

    ``batch_size`` is the *global* micro-batch: under ``torchrun`` with ``N`` processes
    each one gets ``batch_size // N`` rows of it. One optimizer step sees
    ``batch_size * grad_accum_steps`` sequences of ``context_length`` tokens, whatever
    the number of processes.
    """

    max_steps: int | None = None
    """Optimizer steps; ``None``: as many as ``epochs`` passes over the training data take."""
    epochs: int = 1
    batch_size: int = 8
    context_length: int | None = None
    """Tokens per training sequence; ``None``: the model's ``context_length``."""
    grad_accum_steps: int = 1
    lr: float = 4e-4
    """Peak learning rate, reached at the end of the warm-up."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio``."""
    warmup_steps: int | None = None
    """Linear warm-up steps; ``None``: 5% of the run."""
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (``None`` or 0: no clipping)."""
    eval_interval: int = 100
    """Evaluate (and sample) every this many steps and at the end; 0: never."""
    eval_batches: int | None = 20
    """Validation batches per evaluation (``None``: the whole validation loader)."""
    eval_at_start: bool = True
    """Also evaluate before the first step (the curve then starts at the untrained loss)."""
    sample_prompt: str = "The"
    sample_tokens: int = 30
    """Greedy sample length printed at each evaluation (needs a tokenizer; 0: no samples)."""
    checkpoint_interval: int | None = None
    """Save every this many steps (``None``: at each evaluation); always at the end."""
    seed: int = 123
    device: str = "auto"
    """``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    dtype: str = "auto"
    """``auto`` (bfloat16 autocast on CUDA GPUs that support it, else float32), ``float32``, ``bfloat16``."""
    compile: bool = False
    """Run the training step through ``torch.compile``."""
    compile_backend: str = "inductor"
    """``torch.compile``'s backend (``"aot_eager"`` skips code generation: a quick check on CPU)."""
    tf32: bool | None = None
    """TF32 matrix products for float32 on CUDA (``None``: on for CUDA)."""
    fused_adamw: bool | None = None
    """The fused AdamW kernel (``None``: on for CUDA)."""

    def __post_init__(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum_steps": self.grad_accum_steps}
        for opt in ("max_steps", "context_length", "checkpoint_interval"):
            if getattr(self, opt) is not None:
                positive[opt] = getattr(self, opt)
        for name, value in positive.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0 or None, got {self.warmup_steps!r}")
        if self.eval_interval < 0 or self.sample_tokens < 0:
            raise ValueError("TrainConfig.eval_interval and sample_tokens must be >= 0")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"TrainConfig.dtype must be 'auto', 'float32' or 'bfloat16', got {self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys are an error (a typo should not be ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the run: ``max_steps``, or ``epochs`` passes over the data."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, self.epochs * batches_per_epoch // self.grad_accum_steps)

    def warmup_for(self, total_steps: int) -> int:
        """Warm-up steps: ``warmup_steps``, or 5% of ``total_steps``."""
        return self.warmup_steps if self.warmup_steps is not None else round(0.05 * total_steps)


# ---------------------------------------------------------------------------- losses


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: ``(B, T, V)`` logits, ``(B, T)`` targets -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def perplexity(loss: float | torch.Tensor) -> float:
    """``exp(mean cross-entropy)``: the number of equally likely tokens the model hesitates between."""
    return math.exp(float(loss))


def batch_loss(model: nn.Module, input_ids: torch.Tensor, target_ids: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """The model's mean cross-entropy on one batch (``(B, T)`` inputs and targets)."""
    if device is not None:
        input_ids = input_ids.to(device, non_blocking=True)
        target_ids = target_ids.to(device, non_blocking=True)
    return cross_entropy_loss(model(input_ids), target_ids)


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def loader_loss(
    model: nn.Module,
    loader: Iterable[Batch],
    num_batches: int | None = None,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    ctx: DistributedContext | None = None,
) -> float:
    """Mean cross-entropy per token over the first ``num_batches`` batches of ``loader``.

    The model is evaluated in eval mode (no dropout), then put back in its previous mode.
    Under DDP the batches are shared out across processes and the result is the same on all.
    """
    ctx = ctx or current_context()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (loss * tokens, tokens)
    for i, (input_ids, target_ids) in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            break
        if i % ctx.world_size != ctx.rank:
            continue
        with _autocast(device, amp_dtype):
            loss = batch_loss(model, input_ids, target_ids, device)
        sums[0] += loss.double() * target_ids.numel()
        sums[1] += target_ids.numel()
    model.train(was_training)
    total, count = all_reduce_sum(sums, ctx).tolist()
    if count == 0:
        raise ValueError(
            "the loader yielded no batches: the text is probably shorter than one sequence of "
            "context_length + 1 tokens; use more text or a shorter context_length."
        )
    return total / count


# ---------------------------------------------------------------------------- schedule and optimizer


def lr_at_step(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Steps ``0 .. warmup_steps-1`` rise linearly to ``peak_lr`` (``peak_lr * (step+1) /
    warmup_steps``); from ``warmup_steps`` to ``total_steps`` the rate follows half a cosine
    from ``peak_lr`` down to ``min_lr``, and stays at ``min_lr`` after that.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_at_step`, relative to each group's initial ``lr``.

    Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    factor = partial(lr_at_step, peak_lr=1.0, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device | str | None = None) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only (not on biases or layer-norm
    parameters), and the fused kernel when ``cfg.fused_adamw`` (default: on CUDA)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = cfg.fused_adamw if cfg.fused_adamw is not None else device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


# ---------------------------------------------------------------------------- devices and precision


def resolve_device(name: str = "auto", ctx: DistributedContext | None = None) -> torch.device:
    """``auto`` -> CUDA if available, else Apple MPS, else CPU. Under DDP on CUDA, GPU ``local_rank``."""
    ctx = ctx or current_context()
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu (or auto)")
        if device.index is None:
            device = torch.device("cuda", ctx.local_rank)
    return device


def resolve_amp_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``TrainConfig.dtype`` on ``device`` (``None``: plain float32)."""
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def configure_tf32(enabled: bool | None, device: torch.device) -> bool:
    """Allow TF32 float32 matrix products on CUDA (a process-wide setting). Returns whether it is on."""
    on = (device.type == "cuda") if enabled is None else bool(enabled and device.type == "cuda")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if on else "highest")
    return on


# ---------------------------------------------------------------------------- data order


class ResumableBatches:
    """An endless stream of training batches whose order is fixed by ``seed`` and resumable.

    Epoch ``e`` visits the dataset in the order ``randperm(len(dataset))`` drawn from a
    generator seeded with ``seed + e`` (its own generator: the model's random numbers do not
    change it), cut into global batches of ``batch_size`` rows; an incomplete last batch is
    dropped. With ``world_size`` processes, rank ``r`` gets rows ``r*b .. (r+1)*b - 1`` of
    each global batch (``b = batch_size // world_size``): disjoint shards that together form
    the global batch. :meth:`state_dict` records the position, so a resumed run continues
    with exactly the batch an uninterrupted run would have seen.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size % world_size != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be divisible by the number of processes ({world_size}): "
                "each process gets an equal share of every global batch"
            )
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.num_samples = len(dataset)  # type: ignore[arg-type]
        if self.num_samples < batch_size:
            raise ValueError(
                f"the training data has {self.num_samples} sequences, fewer than batch_size={batch_size}; "
                "use more text, a smaller batch size or a shorter context length"
            )
        self.epoch, self.position = 0, 0
        self._order: tuple[int, torch.Tensor] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """Dataset indices in the order epoch ``epoch`` visits them."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        if self._order is None or self._order[0] != epoch:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            self._order = (epoch, torch.randperm(self.num_samples, generator=generator))
        return self._order[1]

    def global_batch_indices(self) -> torch.Tensor:
        """Indices of the next global batch (all processes), without advancing."""
        if self.position >= self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        start = self.position * self.batch_size
        return self.epoch_order(self.epoch)[start : start + self.batch_size]

    def __iter__(self) -> "ResumableBatches":
        return self

    def __next__(self) -> Batch:
        """This process's shard of the next global batch: ``(input_ids, target_ids)``, each ``(b, T)``."""
        indices = self.global_batch_indices()
        self.position += 1
        per_rank = self.batch_size // self.world_size
        mine = indices[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()
        items = [self.dataset[i] for i in mine]
        return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])

    @property
    def progress(self) -> float:
        """Epochs done, as a fraction (e.g. 1.25)."""
        return self.epoch + self.position / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "position": self.position, "seed": self.seed, "shuffle": self.shuffle,
            "num_samples": self.num_samples, "batch_size": self.batch_size,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("seed", "shuffle", "num_samples", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the data order: the checkpoint's {key} is {state[key]!r} but this run's is "
                    f"{getattr(self, key)!r}. Resume with the same text, tokenizer, context length, batch size and seed."
                )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def _as_dataset(data: Any, batch_size: int) -> Dataset:
    """The dataset behind a DataLoader (checking its batch size) or the dataset itself."""
    if isinstance(data, DataLoader):
        if data.batch_size != batch_size:
            raise ValueError(
                f"the training DataLoader has batch_size={data.batch_size} but TrainConfig.batch_size is "
                f"{batch_size}; make them equal (or pass the dataset itself)"
            )
        return data.dataset
    if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        raise TypeError(f"train data must be a DataLoader or a map-style Dataset of (input_ids, target_ids), got {type(data).__name__}")
    return data


def make_loaders(
    text: str, tokenizer: Any, cfg: TrainConfig, context_length: int, val_fraction: float = 0.1
) -> tuple[DataLoader, DataLoader]:
    """Split ``text`` into training and validation parts and cut each into non-overlapping
    sequences of ``cfg.context_length`` (default ``context_length``) tokens."""
    from .data import create_dataloader, train_val_split

    length = cfg.context_length or context_length
    train_text, val_text = train_val_split(text, val_fraction)
    common = {"max_length": length, "step_size": length, "batch_size": cfg.batch_size, "tokenizer": tokenizer}
    train_loader = create_dataloader(train_text, shuffle=True, drop_last=True, **common)
    val_loader = create_dataloader(val_text, shuffle=False, drop_last=False, **common)
    return train_loader, val_loader


# ---------------------------------------------------------------------------- one step


def _ddp_inside(model: nn.Module) -> nn.parallel.DistributedDataParallel | None:
    inner = getattr(model, "_orig_mod", model)
    return inner if isinstance(inner, nn.parallel.DistributedDataParallel) else None


def train_step(
    model: nn.Module,
    micro_batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: Any = None,
    grad_clip: float | None = 1.0,
    amp_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    ctx: DistributedContext | None = None,
    step: int | None = None,
) -> tuple[float, float]:
    """One optimizer step on ``micro_batches`` (gradient accumulation over them).

    Each micro-batch's loss is divided by their number before ``backward()``, so the
    accumulated gradient is that of the mean loss over all of them. Under DDP the gradients
    are averaged across processes on the last micro-batch only (``no_sync`` before).

    Returns:
        ``(loss, grad_norm)``: the mean loss (over micro-batches and processes) and the
        gradient norm before clipping.
    Raises:
        TrainingDiverged: the loss or gradient norm is NaN/inf (the optimizer step is skipped).
    """
    ctx = ctx or current_context()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    ddp = _ddp_inside(model)
    optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=device)
    for i, (input_ids, target_ids) in enumerate(micro_batches):
        sync = nullcontext() if ddp is None or i == n - 1 else ddp.no_sync()
        with sync:
            with _autocast(device, amp_dtype):
                loss = batch_loss(model, input_ids, target_ids, device)
            (loss / n).backward()
        loss_sum += loss.detach().float()
    mean_loss = all_reduce_mean(loss_sum / n, ctx)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip else math.inf)
    loss_value, norm_value = mean_loss.item(), grad_norm.item()
    if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(step, loss_value, norm_value)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss_value, norm_value


# ---------------------------------------------------------------------------- logs


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines training log (an incomplete last line, left by a crash, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _truncate_log(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the records up to ``last_step`` (a resumed run rewrites what came after)."""
    records = [r for r in read_log(path) if r["step"] <= last_step] if path.exists() else []
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
    return records


def plot_losses(log: str | Path | Sequence[Mapping[str, Any]], ax: Any = None, title: str = "Training and validation loss") -> Any:
    """Plot train loss (every step) and validation loss (each evaluation) against tokens seen.

    Args:
        log: a log file path or the records :func:`train` returned.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure, 8 x 4 inches).
    Returns:
        The ``Axes``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    records = read_log(log) if isinstance(log, (str, Path)) else list(log)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    train = [(r["tokens_seen"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["tokens_seen"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train (each step)", alpha=0.7, linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", linewidth=2)
    ax.xaxis.set_major_formatter(EngFormatter())  # 200 k, 1 M, 3 G
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


# ---------------------------------------------------------------------------- the loop


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and numpy."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def sample_text(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int, device: torch.device | str | None = None) -> str:
    """Greedy continuation of ``prompt`` (eval mode; the model's mode is restored)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    context = unwrap_model(model).cfg.context_length
    was_training = model.training
    model.eval()
    ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    out = generate_simple(model, ids, max_new_tokens, context)
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())


def _warn_if_config_changed(saved: Mapping[str, Any] | None, cfg: TrainConfig) -> None:
    if not saved:
        return
    changed = {k: (saved.get(k), v) for k, v in cfg.to_dict().items() if saved.get(k) != v}
    if changed:
        lines = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
        warnings.warn(f"resuming with a different training config ({lines}); the run will differ from an uninterrupted one", stacklevel=3)


def train(
    model: nn.Module,
    train_data: DataLoader | Dataset,
    val_data: Iterable[Batch] | None,
    cfg: TrainConfig,
    *,
    tokenizer: Any = None,
    out_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    stop_after: int | None = None,
    show_progress: bool = True,
    progress_interval: float = 1.0,
) -> list[dict[str, Any]]:
    """Pretrain ``model`` and return the log records (one dict per step, plus step 0).

    Args:
        model: a :class:`~sydsgpt.model.SydsGPT` (seed before building it for a reproducible init).
        train_data: a map-style dataset of ``(input_ids, target_ids)`` pairs, or a DataLoader
            over one (its dataset is used, in :class:`ResumableBatches` order).
        val_data: validation batches (e.g. a DataLoader without shuffling), or ``None``.
        cfg: the :class:`TrainConfig`.
        tokenizer: for the samples printed at each evaluation, and recorded in checkpoints.
        out_dir: where to write ``log.jsonl`` and ``checkpoint.pt`` (nothing written if None).
        resume: ``True`` resumes from ``out_dir/checkpoint.pt``; a path resumes from that file.
        stop_after: end this session after this step (checkpointed; the learning-rate
            schedule still spans the whole run). Resume it later with ``resume=True``.
        show_progress: the tqdm progress bar (rank 0 only).
        progress_interval: seconds between refreshes of the bar (a notebook keeps every
            refresh in its output: use tens of seconds there).

    Each record has ``step``, ``epoch``, ``tokens_seen``, ``lr``, ``train_loss``,
    ``grad_norm``, ``tokens_per_s``, and ``val_loss`` (and ``sample``) when evaluated.
    Under ``torchrun`` the model is wrapped in DDP; every process must call :func:`train`.

    Raises:
        TrainingDiverged: a NaN/inf loss; the last checkpoint on disk is left intact.
        CheckpointMismatchError: resuming from a checkpoint of another model/tokenizer.
    """
    ctx = current_context()
    device = resolve_device(cfg.device, ctx)
    amp_dtype = resolve_amp_dtype(cfg.dtype, device)
    configure_tf32(cfg.tf32, device)
    raw = unwrap_model(model).to(device)
    raw.train()
    batches = ResumableBatches(_as_dataset(train_data, cfg.batch_size), cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
    total_steps = cfg.total_steps(batches.batches_per_epoch)
    optimizer = build_optimizer(raw, cfg, device)
    scheduler = make_scheduler(optimizer, total_steps, cfg.warmup_for(total_steps), cfg.min_lr_ratio)
    seed_everything(cfg.seed + ctx.rank)

    out = Path(out_dir) if out_dir is not None else None
    checkpoint_path = out / CHECKPOINT_NAME if out is not None else None
    log_path = out / LOG_NAME if out is not None and ctx.is_main else None
    if out is not None and ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    step, tokens_seen, history = 0, 0, []
    last_checkpoint: str | None = None  # named in the TrainingDiverged message
    if resume:
        path = Path(resume) if not isinstance(resume, bool) else checkpoint_path
        if path is None:
            raise ValueError("resume=True needs out_dir (the checkpoint is out_dir/checkpoint.pt), or pass resume=<path>")
        state = load_checkpoint(path)
        check_compatible(state, raw.config, tokenizer)
        _warn_if_config_changed(state.get("train_config"), cfg)
        raw.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        batches.load_state_dict(state["data"])
        rng_states = state["rng"]
        restore_rng_state(rng_states[ctx.rank % len(rng_states)])
        step, tokens_seen, last_checkpoint = int(state["step"]), int(state["tokens_seen"]), str(path)
        if log_path is not None:
            history = _truncate_log(log_path, step)
    elif log_path is not None:
        log_path.write_text("")
    if out is not None and ctx.is_main:
        run_info = {"model": raw.config, "train": cfg.to_dict(), "tokenizer": tokenizer_identity(tokenizer), "world_size": ctx.world_size}
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")

    step_model: nn.Module = raw
    if ctx.enabled:
        step_model = nn.parallel.DistributedDataParallel(raw, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        step_model = torch.compile(step_model, backend=cfg.compile_backend)

    log_file = log_path.open("a") if log_path is not None else None
    checkpoint_every = cfg.checkpoint_interval or cfg.eval_interval or None

    def evaluate(record: dict[str, Any]) -> None:
        if val_data is not None:
            record["val_loss"] = loader_loss(raw, val_data, cfg.eval_batches, device, amp_dtype, ctx)
        if tokenizer is not None and cfg.sample_tokens and ctx.is_main:
            with _autocast(device, amp_dtype):
                record["sample"] = sample_text(raw, tokenizer, cfg.sample_prompt, cfg.sample_tokens, device)

    def emit(record: dict[str, Any]) -> None:
        history.append(record)
        if log_file is not None:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()

    def report(record: dict[str, Any]) -> None:
        if ctx.is_main and show_progress and ("val_loss" in record or "sample" in record):
            parts = [f"step {record['step']}"]
            if "train_loss" in record:
                parts.append(f"train loss {record['train_loss']:.3f}")
            if "val_loss" in record:
                parts.append(f"val loss {record['val_loss']:.3f}")
            tqdm.write(", ".join(parts) + (f" | {record['sample']!r}" if "sample" in record else ""), file=sys.stderr)

    if step == 0 and cfg.eval_at_start and cfg.eval_interval:
        record = {"step": 0, "epoch": 0.0, "tokens_seen": 0}
        evaluate(record)
        emit(record)
        report(record)

    end = total_steps if stop_after is None else min(total_steps, stop_after)
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", mininterval=progress_interval,
               disable=not (show_progress and ctx.is_main), file=sys.stderr)
    smoothed_tps = None
    try:
        while step < end:
            start = time.perf_counter()
            micro_batches = [next(batches) for _ in range(cfg.grad_accum_steps)]
            lr = optimizer.param_groups[0]["lr"]
            try:
                loss, grad_norm = train_step(
                    step_model, micro_batches, optimizer, scheduler=scheduler, grad_clip=cfg.grad_clip,
                    amp_dtype=amp_dtype, device=device, ctx=ctx, step=step + 1,
                )
            except TrainingDiverged as exc:
                raise TrainingDiverged(exc.step, exc.loss, exc.grad_norm, last_checkpoint) from None
            step += 1
            n_tokens = sum(y.numel() for _, y in micro_batches) * ctx.world_size
            tokens_seen += n_tokens
            tps = n_tokens / max(time.perf_counter() - start, 1e-9)
            smoothed_tps = tps if smoothed_tps is None else 0.9 * smoothed_tps + 0.1 * tps
            record = {
                "step": step, "epoch": round(batches.progress, 4), "tokens_seen": tokens_seen, "lr": lr,
                "train_loss": loss, "grad_norm": grad_norm, "tokens_per_s": round(tps, 1),
            }
            if cfg.eval_interval and (step % cfg.eval_interval == 0 or step == total_steps):
                evaluate(record)
            emit(record)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{smoothed_tps:,.0f}", refresh=False)
            report(record)
            if checkpoint_path is not None and (step == end or (checkpoint_every and step % checkpoint_every == 0)):
                rng_states = gather_objects(capture_rng_state(), ctx)
                if ctx.is_main:
                    save_checkpoint(
                        checkpoint_path, raw, optimizer, scheduler, step=step, tokens_seen=tokens_seen,
                        train_config=cfg.to_dict(), tokenizer=tokenizer, rng=rng_states, data=batches.state_dict(),
                    )
                last_checkpoint = str(checkpoint_path)
                barrier(ctx)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    return history


# ---------------------------------------------------------------------------- the book's model

BOOK_CORPUS = "tinyshakespeare"
BOOK_VOCAB_SIZE = 1024
"""Chapter 5 trains a byte-level BPE tokenizer with this many ids on the training split."""
BOOK_MODEL: dict[str, Any] = {
    "embedding_dim": 128, "context_length": 128, "num_layers": 4, "num_heads": 4,
    "dropout": 0.1, "qkv_bias": False, "tie_weights": True,
}
"""The chapter-5 model (``vocab_size`` comes from the tokenizer): about 0.94M parameters."""
BOOK_TRAINING = TrainConfig(
    max_steps=400, batch_size=16, context_length=128, lr=3e-3, warmup_steps=20, min_lr_ratio=0.1,
    weight_decay=0.1, grad_clip=1.0, eval_interval=50, eval_batches=10, sample_prompt="JULIET:\nO",
    sample_tokens=24, seed=123, device="cpu",
)
"""The chapter-5 run: ~0.8M training tokens, a few minutes on a laptop CPU."""


@dataclass
class BookRun:
    """What :func:`train_book_model` returns."""

    model: nn.Module
    tokenizer: Any
    history: list[dict[str, Any]]
    out_dir: Path
    trained_now: bool
    """False when a finished run was found in ``out_dir`` and loaded instead."""


def book_tokenizer(out_dir: str | Path | None = None) -> Any:
    """The chapter-5 tokenizer: BPE with :data:`BOOK_VOCAB_SIZE` ids trained on the training
    split of :data:`BOOK_CORPUS` (deterministic); loaded from ``out_dir/tokenizer.json`` if saved there."""
    from .bpe import BPETokenizer
    from .corpora import load_corpus
    from .data import train_val_split

    saved = Path(out_dir) / "tokenizer.json" if out_dir is not None else None
    if saved is not None and saved.is_file():
        return BPETokenizer.load(saved)
    train_text, _ = train_val_split(load_corpus(BOOK_CORPUS), 0.1)
    tokenizer = BPETokenizer(name=f"bpe{BOOK_VOCAB_SIZE}-{BOOK_CORPUS}").train(train_text, BOOK_VOCAB_SIZE)
    if saved is not None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
    return tokenizer


def train_book_model(
    out_dir: str | Path = "runs/book-ch05",
    *,
    cfg: TrainConfig = BOOK_TRAINING,
    fresh: bool = False,
    show_progress: bool = True,
    progress_interval: float = 1.0,
) -> BookRun:
    """Train chapter 5's model on Tiny Shakespeare, or load it if ``out_dir`` holds the finished run.

    Chapter 5 calls it with ``fresh=True`` (always train); chapter 6 calls it to reuse that
    run (a few minutes on a CPU if it is not there). The run is fully determined by
    :data:`BOOK_VOCAB_SIZE`, :data:`BOOK_MODEL` and ``cfg`` (default :data:`BOOK_TRAINING`);
    an interrupted run is resumed, and a run made with another ``cfg`` is started afresh.

    Returns:
        A :class:`BookRun`; its model is in eval mode, on ``cfg.device``.
    """
    from .corpora import load_corpus
    from .model import SydsGPT

    out = Path(out_dir)
    checkpoint_path = out / CHECKPOINT_NAME
    if fresh and out.exists():
        for name in (CHECKPOINT_NAME, LOG_NAME, "run.json", "tokenizer.json"):
            (out / name).unlink(missing_ok=True)
    tokenizer = book_tokenizer(out)
    seed_everything(cfg.seed)
    model = SydsGPT({**BOOK_MODEL, "vocab_size": tokenizer.n_vocab})
    resume = False
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        if state.get("train_config") == cfg.to_dict() and state.get("config") == model.config:
            if state["step"] == cfg.max_steps:
                model.load_state_dict(state["model"])
                return BookRun(model.to(resolve_device(cfg.device)).eval(), tokenizer, read_log(out / LOG_NAME), out, False)
            resume = True
    train_loader, val_loader = make_loaders(load_corpus(BOOK_CORPUS), tokenizer, cfg, BOOK_MODEL["context_length"])
    history = train(model, train_loader, val_loader, cfg, tokenizer=tokenizer, out_dir=out, resume=resume,
                    show_progress=show_progress, progress_interval=progress_interval)
    return BookRun(model.eval(), tokenizer, history, out, True)
