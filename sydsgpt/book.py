"""The book's own training runs, trained once and reused.

:func:`train_book_model` trains a named run of :data:`sydsgpt.presets.RUNS` (chapter 5's
``book-ch05`` by default) into a folder, or loads it from there when the run is finished,
so chapter 6 decodes with chapter 5's model instead of training its own.
:func:`book_tokenizer` is that run's tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .checkpoint import load_checkpoint
from .files import CHECKPOINT_NAME, LOG_NAME, RUN_INFO_NAME, TOKENIZER_NAME
from .logs import read_log
from .presets import RunPreset, get_run
from .runtime import resolve_device, seed_everything
from .train import TrainConfig, train


@dataclass
class BookRun:
    """What :func:`train_book_model` returns."""

    model: nn.Module
    tokenizer: Any
    history: list[dict[str, Any]]
    out_dir: Path
    trained_now: bool
    """False when a finished run was found in ``out_dir`` and loaded instead."""


def book_tokenizer(out_dir: str | Path | None = None, run: str | RunPreset = "book-ch05") -> Any:
    """The run's tokenizer (deterministic: a BPE trained on the corpus's training split, or
    GPT-2's); loaded from ``out_dir/tokenizer.json`` if it was saved there."""
    from .bpe import BPETokenizer
    from .corpora import load_corpus
    from .data import train_val_split
    from .tokenizer import resolve_tokenizer

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

    Chapter 5 calls it with ``fresh=True`` (always train); chapter 6 calls it to reuse that
    run (a few minutes on a CPU if it is not there). The run is fully determined by its
    :class:`~sydsgpt.presets.RunPreset` (``cfg`` replaces its training config); an
    interrupted run is resumed, and a run made with another config is started afresh.
    ``stop_after`` ends this session after that step (the run stays resumable).

    Returns:
        A :class:`BookRun`; its model is in eval mode, on ``cfg.device``.
    """
    from .corpora import load_corpus
    from .data import make_loaders
    from .model import SydsGPT

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
        same_train = state.get("train_config") and TrainConfig.from_dict(state["train_config"]) == cfg
        if same_train and model.config == state.get("config"):
            if state["step"] == cfg.max_steps:
                model.load_state_dict(state["model"])
                return BookRun(model.to(resolve_device(cfg.device)).eval(), tokenizer, read_log(out / LOG_NAME), out, False)
            resume = True
    seq_len = cfg.seq_len or model_config["context_length"]
    train_loader, val_loader = make_loaders(load_corpus(spec.corpus), tokenizer, seq_len, cfg.batch_size, spec.val_fraction)
    history = train(model, train_loader, val_loader, cfg, tokenizer=tokenizer, out_dir=out, resume=resume,
                    stop_after=stop_after, show_progress=show_progress, progress_interval=progress_interval)
    return BookRun(model.eval(), tokenizer, history, out, True)
