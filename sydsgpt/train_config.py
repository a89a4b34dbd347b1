"""Chapter 5: :class:`TrainConfig`, every knob of a training run in one place.

It is stored in every checkpoint, :mod:`sydsgpt.resume` decides which of its fields a
resumed run may change, and the command line's ``sydsgpt train`` options are derived
from its fields (:mod:`sydsgpt.cli.options`): each field's docstring is its ``--help``.
The loop that reads it is :func:`sydsgpt.train.train`.

Two small configs sit beside it, neither stored in a checkpoint: :class:`Session` (where
one call of :func:`~sydsgpt.train.train` writes, whether it resumes, where it stops, what
it shows) and :class:`StepOptions` (how :func:`~sydsgpt.train.train_step` runs a step).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, get_args

import torch

from .runtime import DTYPES, Dtype, check_device_name
from .validation import (
    check_bool,
    check_choice,
    check_int,
    check_keys,
    check_positive_int,
    check_real,
    check_str,
    field_names,
)

if TYPE_CHECKING:
    from .files import LockedRunFolder


OptimizerName = Literal["adamw", "muon"]
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
"""The values of ``TrainConfig.optimizer``."""


@dataclass
class TrainConfig:
    """Everything that controls a training run (stored in every checkpoint).

    ``batch_size`` is the *global* micro-batch: under ``torchrun`` with ``N`` processes
    each one gets ``batch_size // N`` rows of it. One optimizer step sees
    ``batch_size * grad_accum_steps`` sequences of ``seq_len`` tokens, whatever the
    number of processes.

    Each field's docstring is also its ``sydsgpt train --help`` text. Every value is checked
    here (a negative clip, a NaN learning rate, ``beta2 = 1``, zero evaluation batches, ...
    are errors), so a Python script gets the same checks as the command line.

    **Resuming** (``Session(resume=True)``, ``sydsgpt train ... --resume``): the five fields
    marked *fixed for a run* (``batch_size``, ``seq_len``, ``grad_accum_steps``, ``seed``,
    ``optimizer``; the first four decide which tokens each step sees,
    :data:`sydsgpt.resume.RESUME_FIXED`) must equal the
    checkpoint's, or resume refuses and lists the differences. Every other field may change and
    applies from the next step: a new ``lr``, ``warmup_steps``, ``min_lr_ratio``, ``max_steps`` or
    ``epochs`` recomputes the schedule at the step reached; ``weight_decay`` and the betas go into
    the optimizer; the rest are read at every step. Each change is recorded in the first log record
    of the resumed session (``"changed": {field: [old, new]}``) and in ``run.json``
    (``"changes"``: step, option, from, to).
    """

    max_steps: int | None = None
    """Optimizer steps; ``None``: as many as ``epochs`` passes over the training data take."""
    epochs: int = 1
    """Passes over the training data (when ``max_steps`` is not given)."""
    batch_size: int = 8
    """Sequences per micro-batch, over all processes
    together. Fixed for a run (resume refuses a change)."""
    seq_len: int | None = None
    """Tokens per training sequence; ``None``: the model's
    ``context_length``. Fixed for a run (resume refuses a change)."""
    grad_accum_steps: int = 1
    """Micro-batches whose gradients are summed into one
    optimizer step. Fixed for a run (resume refuses a change)."""
    lr: float = 4e-4
    """Peak learning rate, reached at the end of the warm-up."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio``."""
    warmup_steps: int | None = None
    """Linear warm-up steps; ``None``: 5% of the run."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay, on matrices and embeddings only."""
    optimizer: OptimizerName = "adamw"
    """``adamw``, or ``muon``: Muon for the blocks' matrices, AdamW (``lr``, betas, weight decay)
    for the embeddings, head, norms and biases. Fixed for a run (resume refuses a change)."""
    muon_lr: float = 0.02
    """Muon's peak learning rate (with ``optimizer=muon``; same warm-up and decay as ``lr``)."""
    muon_momentum: float = 0.95
    """Muon's momentum (Nesterov; with ``optimizer=muon``)."""
    beta1: float = 0.9
    """AdamW's decay rate of the gradient's running mean."""
    beta2: float = 0.95
    """AdamW's decay rate of the squared gradient's running mean."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (> 0; ``None``: no clipping)."""
    eval_interval: int = 100
    """Evaluate (and sample) every this many steps and at the end; 0: never."""
    eval_batches: int | None = 20
    """Validation batches per evaluation (``None``: the whole validation loader)."""
    eval_at_start: bool = True
    """Also evaluate before the first step (the curve then starts at the untrained loss)."""
    sample_prompt: str = "The"
    """The prompt of the greedy samples printed at each evaluation."""
    sample_tokens: int = 30
    """Greedy sample length printed at each evaluation (needs a tokenizer; 0: no samples)."""
    checkpoint_interval: int | None = None
    """Save every this many steps (``None``: at each evaluation); always at the end."""
    seed: int = 123
    """Seeds the initialisation, dropout and the data
    order. Fixed for a run (resume refuses a change)."""
    device: str = "auto"
    """``auto`` (CUDA, then Apple MPS, then CPU), ``cpu``, ``cuda``, ``cuda:1``, ``mps``."""
    dtype: Dtype = "auto"
    """``auto`` (bfloat16 autocast on a CUDA GPU that supports
    it, else float32), ``float32`` or ``bfloat16``."""
    compile: bool = False
    """Run the training step through ``torch.compile``."""
    compile_backend: str = "inductor"
    """``torch.compile``'s backend (``"aot_eager"`` skips code generation: a quick check on CPU)."""
    tf32: bool | None = None
    """TF32 matrix products for float32 on CUDA (``None``: on for CUDA)."""
    fused_adamw: bool | None = None
    """The fused AdamW kernel (``None``: on for CUDA)."""
    fsdp: bool = False
    """Under torchrun, shard weights, gradients and optimizer state across processes with FSDP2
    instead of DDP."""
    threads: int | None = None
    """PyTorch's CPU threads during the run (``None``: leave torch's choice, usually one per core).
    Float sums depend on how work is split across threads, so a run is bit-reproducible only
    with the same thread count: the book's runs pin it."""

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "grad_accum_steps",
            "max_steps",
            "seq_len",
            "checkpoint_interval",
            "eval_batches",
            "threads",
        ):
            check_positive_int(
                getattr(self, name),
                f"TrainConfig.{name}",
                allow_none=name not in ("epochs", "batch_size", "grad_accum_steps"),
            )
        for name in ("warmup_steps", "eval_interval", "sample_tokens"):
            check_int(
                getattr(self, name),
                f"TrainConfig.{name}",
                minimum=0,
                allow_none=name == "warmup_steps",
            )
        check_int(self.seed, "TrainConfig.seed")
        check_real(self.lr, "TrainConfig.lr", low=0, low_open=True)
        check_real(self.min_lr_ratio, "TrainConfig.min_lr_ratio", low=0, high=1)
        check_real(self.weight_decay, "TrainConfig.weight_decay", low=0)
        check_choice(self.optimizer, "TrainConfig.optimizer", OPTIMIZERS)
        check_real(self.muon_lr, "TrainConfig.muon_lr", low=0, low_open=True)
        check_real(self.muon_momentum, "TrainConfig.muon_momentum", low=0, high=1, high_open=True)
        for name in ("beta1", "beta2"):
            check_real(getattr(self, name), f"TrainConfig.{name}", low=0, high=1, high_open=True)
        check_real(
            self.grad_clip,
            "TrainConfig.grad_clip",
            low=0,
            low_open=True,
            allow_none=True,
            hint="a clip <= 0 would flip or zero the gradient; use None (--grad-clip none) for no "
            "clipping",
        )
        for name in ("eval_at_start", "compile", "fsdp"):
            check_bool(getattr(self, name), f"TrainConfig.{name}")
        for name in ("tf32", "fused_adamw"):
            check_bool(getattr(self, name), f"TrainConfig.{name}", allow_none=True)
        for name in ("sample_prompt", "device", "compile_backend"):
            check_str(getattr(self, name), f"TrainConfig.{name}")
        if self.sample_tokens and not self.sample_prompt:
            raise ValueError(
                "TrainConfig.sample_prompt must not be empty when TrainConfig.sample_tokens > 0 (a "
                "sample continues a prompt); give a prompt or set sample_tokens to 0"
            )
        check_device_name(self.device)
        check_choice(self.dtype, "TrainConfig.dtype", DTYPES)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys are an error (a typo should not be ignored)."""
        check_keys(values, field_names(cls), "training option")
        return cls(**values)

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimizer steps of the run: ``max_steps``, or ``epochs`` passes over the data."""
        if self.max_steps is not None:
            return self.max_steps
        return max(1, self.epochs * batches_per_epoch // self.grad_accum_steps)

    def warmup_for(self, total_steps: int) -> int:
        """Warm-up steps: ``warmup_steps``, or 5% of ``total_steps``."""
        return self.warmup_steps if self.warmup_steps is not None else round(0.05 * total_steps)


@dataclass(frozen=True)
class Session:
    """One call of :func:`~sydsgpt.train.train`: where it writes, whether it continues a
    run, where it stops and what it shows. Not stored in checkpoints: a run may be resumed
    in a session that shows less or stops elsewhere."""

    out_dir: str | Path | LockedRunFolder | None = None
    """Where ``log.jsonl``, ``checkpoint.pt`` and ``run.json`` go (``None``: nothing is written);
    a :class:`~sydsgpt.files.LockedRunFolder` is a folder the caller already locked."""
    resume: bool | str | Path = False
    """``True``: continue from ``out_dir/checkpoint.pt``; a path: continue from that file."""
    stop_after: int | None = None
    """End this session after this step (checkpointed; the learning-rate schedule still spans
    the whole run). Continue it later with ``resume=True``."""
    show_progress: bool = True
    """The tqdm progress bar and a line per evaluation, on stderr (rank 0 only)."""
    progress_interval: float = 1.0
    """Seconds between refreshes of the bar (a notebook keeps every refresh in its output:
    use tens of seconds there)."""

    def __post_init__(self) -> None:
        check_positive_int(self.stop_after, "stop_after", allow_none=True)
        check_bool(self.show_progress, "Session.show_progress")
        check_real(self.progress_interval, "Session.progress_interval", low=0)
        if self.resume is True and self.out_dir is None:
            raise ValueError(
                "resume=True needs out_dir (the checkpoint is out_dir/checkpoint.pt), "
                "or pass resume=<path>"
            )


@dataclass(frozen=True)
class StepOptions:
    """How :func:`~sydsgpt.train.train_step` runs a step: the same at every step of a run
    (:func:`~sydsgpt.train.train` builds them from its :class:`TrainConfig`)."""

    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this (``None``: no clipping)."""
    amp_dtype: torch.dtype | None = None
    """Run the forward passes under autocast to this dtype (``None``: no autocast)."""
    device: torch.device | str | None = None
    """Where the batches go (``None``: the device of the model's first parameter)."""
