"""The book's own training runs, trained once and reused.

* :func:`train_book_model` trains a named run of :data:`sydsgpt.presets.RUNS` (chapter 5's
  ``book-ch05`` by default) into a folder, or loads it from there when the run is finished.
  :func:`book_tokenizer` is a run's tokenizer.
* **The book checkpoint** is the ``book-checkpoint`` run, the first seed of the appendix's
  CPU speedrun record (``speedrun-record``: chapter 5's model made larger, with chapter 7's
  parts and dropout 0.2, trained with Muon for about 20 minutes on two CPU cores), trained
  by the one ``sydsgpt train`` line of ``RUNS["book-checkpoint"].command(...)``.
  :func:`publish_book_checkpoint` turns the finished run into the files that ship with the
  package (``sydsgpt/weights/book-checkpoint``: ``model.safetensors``, ``tokenizer.json``,
  ``info.json`` with the file's sha256, the command, the training time and the held-out
  bits per byte), and :func:`load_book_checkpoint` loads them, checking the sha256 first.
  Chapter 6 and later chapters decode and finetune with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .bpe import BPETokenizer
from .checkpoint import CheckpointError, load_checkpoint, load_weights, model_from_checkpoint
from .corpora import load_corpus
from .data import make_loaders, train_val_split
from .files import (
    CHECKPOINT_NAME,
    LOG_NAME,
    RUN_INFO_NAME,
    TOKENIZER_NAME,
    atomic_write,
    file_sha256,
)
from .logs import read_log
from .losses import held_out_bits_per_byte
from .model import SydsGPT, count_parameters
from .presets import RunPreset, get_run
from .runtime import cpu_model, resolve_device, seed_everything
from .bpe import resolve_tokenizer
from .train import Session, TrainConfig, train


@dataclass
class BookRun:
    """What :func:`train_book_model` returns."""

    model: nn.Module
    tokenizer: Any
    history: list[dict[str, Any]]
    out_dir: Path
    trained_now: bool
    """False when a finished run was found in ``out_dir`` and loaded instead."""
    info: dict[str, Any] | None = None
    """The book checkpoint's ``info.json`` (:func:`load_book_checkpoint`), else None."""


BOOK_CHECKPOINT = "book-checkpoint"
"""The run name (in :data:`sydsgpt.presets.RUNS`) of the book checkpoint."""
BOOK_CHECKPOINT_DIR = Path(__file__).parent / "weights" / BOOK_CHECKPOINT
"""Where the book checkpoint's files ship with the package."""
WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "info.json"
_TIED_NAME, _TIED_TO = "output_projection.weight", "token_embedding.weight"
"""With ``tie_weights`` the head is the token
embedding's tensor: the weights file stores it once."""


def book_tokenizer(out_dir: str | Path | None = None, run: str | RunPreset = "book-ch05") -> Any:
    """The run's tokenizer (deterministic: a BPE trained on the corpus's training split, or
    GPT-2's); loaded from ``out_dir/tokenizer.json`` if it was saved there."""
    spec = get_run(run) if isinstance(run, str) else run
    saved = Path(out_dir) / TOKENIZER_NAME if out_dir is not None else None
    if saved is not None and saved.is_file() and spec.tokenizer != "gpt2":
        return BPETokenizer.load(saved)
    train_text, _ = train_val_split(load_corpus(spec.corpus), spec.val_fraction)
    tokenizer = resolve_tokenizer(spec.tokenizer, train_text, spec.corpus)
    if saved is not None and spec.tokenizer != "gpt2":
        saved.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
    return tokenizer


def train_book_model(
    out_dir: str | Path = "runs/book-ch05",
    *,
    run: str | RunPreset = "book-ch05",
    cfg: TrainConfig | None = None,
    fresh: bool = False,
    stop_after: int | None = None,
    show_progress: bool = True,
    progress_interval: float = 1.0,
) -> BookRun:
    """Train a named run of the book, or load it if ``out_dir`` holds the finished run.

    Chapter 5 calls it with ``fresh=True`` (always train). Without ``fresh``, a finished
    run in ``out_dir`` is loaded instead of trained again (the finetuning benchmark reuses
    chapter 5's run so); chapter 6 decodes with the book checkpoint instead
    (:func:`load_book_checkpoint`). The run is fully determined by its
    :class:`~sydsgpt.presets.RunPreset` (``cfg`` replaces its training config); an
    interrupted run is resumed, and a run made with another config is started afresh.
    ``stop_after`` ends this session after that step (the run stays resumable).

    Returns:
        A :class:`BookRun`; its model is in eval mode, on ``cfg.device``.
    """
    spec = get_run(run) if isinstance(run, str) else run
    cfg = cfg or spec.train
    out = Path(out_dir)
    checkpoint_path = out / CHECKPOINT_NAME
    if fresh and out.exists():
        for name in (CHECKPOINT_NAME, LOG_NAME, RUN_INFO_NAME, TOKENIZER_NAME):
            (out / name).unlink(missing_ok=True)
    tokenizer = book_tokenizer(out, spec)
    seed_everything(cfg.seed)
    model_config = {**spec.model_config, "vocab_size": tokenizer.n_vocab}
    model = SydsGPT(model_config)
    resume = False
    if checkpoint_path.is_file():
        state = load_checkpoint(checkpoint_path)
        same_train = (
            state.get("train_config") and TrainConfig.from_dict(state["train_config"]) == cfg
        )
        if same_train and model.config == state.get("config"):
            if state["step"] == cfg.max_steps:
                model.load_state_dict(state["model"])
                return BookRun(
                    model.to(resolve_device(cfg.device)).eval(),
                    tokenizer,
                    read_log(out / LOG_NAME),
                    out,
                    False,
                )
            resume = True
    seq_len = cfg.seq_len or model_config["context_length"]
    train_loader, val_loader = make_loaders(
        load_corpus(spec.corpus), tokenizer, seq_len, cfg.batch_size, spec.val_fraction
    )
    session = Session(
        out_dir=out,
        resume=resume,
        stop_after=stop_after,
        show_progress=show_progress,
        progress_interval=progress_interval,
    )
    history = train(model, train_loader, val_loader, cfg, tokenizer=tokenizer, session=session)
    return BookRun(model.eval(), tokenizer, history, out, True)


def held_out(model: nn.Module, tokenizer: Any, run: str) -> tuple[float, float]:
    """``(loss, bits per byte)`` of ``model`` over the whole held-out split of ``run``'s corpus,
    cut into sequences of the model's ``context_length`` (how the book reports quality)."""
    spec = get_run(run)
    _, val_loader = make_loaders(
        load_corpus(spec.corpus), tokenizer, model.config.context_length, 16, spec.val_fraction
    )
    return held_out_bits_per_byte(model, val_loader, tokenizer)


def _run_seconds(log: list[dict[str, Any]]) -> float:
    """Training time of a run from its log: each step's tokens over its measured speed."""
    steps = [r for r in log if r.get("tokens_per_s")]
    tokens = [
        b["tokens_seen"] - a["tokens_seen"] for a, b in zip([{"tokens_seen": 0}, *steps], steps)
    ]
    return sum(n / r["tokens_per_s"] for n, r in zip(tokens, steps))


def publish_book_checkpoint(
    run_dir: str | Path = f"runs/{BOOK_CHECKPOINT}",
    dest: str | Path = BOOK_CHECKPOINT_DIR,
    run: str = BOOK_CHECKPOINT,
) -> dict[str, Any]:
    """Write a finished run's weights (safetensors), tokenizer and ``info.json`` into ``dest``.

    The run must be complete and made with ``RUNS[run]``'s exact training config. Its
    held-out bits per byte are measured here, on the whole validation split (the last
    ``val_fraction`` of the corpus) at the model's context length; ``val_curve`` keeps the
    run's periodic validation losses (``[step, tokens_seen, loss]``, each over the run's
    ``eval_batches`` batches). Returns the info dict.
    """
    spec = get_run(run)
    run_dir, dest = Path(run_dir), Path(dest)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    if (
        TrainConfig.from_dict(state["train_config"]) != spec.train
        or state["step"] != spec.train.max_steps
    ):
        raise CheckpointError(
            f"{run_dir} is not the finished {run!r} run; train it with: "
            f"{spec.command(str(run_dir))}"
        )
    model = model_from_checkpoint(state, run_dir / CHECKPOINT_NAME).eval()
    tokenizer = book_tokenizer(run_dir, spec)
    val_loss, val_bpb = held_out(model, tokenizer, run)
    log = read_log(run_dir / LOG_NAME)
    dest.mkdir(parents=True, exist_ok=True)
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if (
        model.config.tie_weights
    ):  # one tensor under two names: store it once (same bytes every time)
        del weights[_TIED_NAME]
    save_file(weights, str(dest / WEIGHTS_NAME), metadata={"run": run})
    tokenizer.save(dest / TOKENIZER_NAME)
    info = {
        "run": run,
        "command": spec.command(f"runs/{run}"),
        "sha256": file_sha256(dest / WEIGHTS_NAME),
        "model": model.config.to_dict(),
        "parameters": count_parameters(model),
        "tokenizer": tokenizer.name,
        "train": spec.train.to_dict(),
        "steps": state["step"],
        "tokens_seen": state["tokens_seen"],
        "train_seconds": round(_run_seconds(log), 3),
        "val_curve": [
            [r["step"], r["tokens_seen"], round(r["val_loss"], 4)] for r in log if "val_loss" in r
        ],
        "val_loss": round(val_loss, 4),
        "val_bpb": round(val_bpb, 4),
        "machine": f"{cpu_model()}, torch {torch.__version__}, {spec.train.threads or 'default'} "
        "thread(s)",
    }
    atomic_write(dest / INFO_NAME, json.dumps(info, indent=2) + "\n")
    return info


def load_book_checkpoint(folder: str | Path = BOOK_CHECKPOINT_DIR, device: str = "cpu") -> BookRun:
    """The book checkpoint (model in eval mode, tokenizer, ``info``), after checking its sha256.

    Raises:
        CheckpointError: a file is missing, or the weights do not hash to ``info.json``'s
            sha256 (a damaged or replaced file).
    """

    folder = Path(folder)
    missing = [
        name for name in (WEIGHTS_NAME, TOKENIZER_NAME, INFO_NAME) if not (folder / name).is_file()
    ]
    if missing:
        raise CheckpointError(
            f"the book checkpoint in {folder} lacks {', '.join(missing)}; reinstall sydsgpt, or "
            f"train and publish it (sydsgpt.book.publish_book_checkpoint)"
        )
    info = json.loads((folder / INFO_NAME).read_text())
    digest = file_sha256(folder / WEIGHTS_NAME)
    if digest != info["sha256"]:
        raise CheckpointError(
            f"{folder / WEIGHTS_NAME} has sha256 {digest}, but {folder / INFO_NAME} records "
            f"{info['sha256']}: the file is damaged or was replaced; reinstall sydsgpt"
        )
    model = SydsGPT(info["model"])
    weights = load_file(folder / WEIGHTS_NAME)
    if model.config.tie_weights and _TIED_TO in weights:
        weights[_TIED_NAME] = weights[_TIED_TO]
    load_weights(model, weights, folder / WEIGHTS_NAME)
    tokenizer = BPETokenizer.load(folder / TOKENIZER_NAME)
    return BookRun(model.to(device).eval(), tokenizer, [], folder, False, info)
