"""Benchmark: chapter 9's table, every way of building an SMS spam classifier, measured.

Each row is scored on the same held-out **test** split of the SMS Spam Collection
(:func:`sydsgpt.classify.balanced_split`: as many ham as spam, so guessing scores 50%):

* ``majority class``: always the most common training label;
* ``bag of words + logistic regression``: word presence features, a few lines of torch;
* ``random init, all trained``: the book model's architecture, not pretrained;
* ``pretrained, head only`` / ``last block`` / ``all``: the book's pretrained model with the
  new head, more and more of it trained (:func:`sydsgpt.classify.set_trainable`);
* ``pretrained, LoRA r=8``: LoRA adapters on every linear layer of the blocks, plus the head.

Columns: ``accuracy`` (test), ``trainable_params``, ``train_s`` (the training loop's wall
clock), ``peak_mem_mb`` (:class:`sydsgpt.bench.memory.PeakMemory`: the process's peak RSS
above its level before the row, see the result's ``memory``), and each row's settings
(``lr``, ``epochs``, ``steps``). Every model row trains one epoch on the same batches of the
same messages (cut to :data:`MAX_LENGTH` tokens); only the learning rate differs, picked in
short trial runs scored on the *validation* split (a new head alone needs larger steps than
the whole network). ``pretrained, all`` takes the rate of ``random init, all trained``, so
those two rows differ in nothing but the initial weights.

Run it with ``sydsgpt bench --what finetune`` (a few minutes per row on a busy 2-core CPU;
``--quick``: seconds, a tiny random model), or one process per row,
``python -m sydsgpt.bench.finetune OUT ROW...``, joined by :func:`combine`.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..classify import (
    ClassifierConfig,
    bag_of_words_baseline,
    balanced_split,
    classifier_train_config,
    finetune_classifier,
    majority_baseline,
)
from ..corpora import load_sms_spam
from ..lora import LoRAConfig
from ..model import SydsGPT
from ..runtime import seed_everything
from ..train_config import Session
from .common import RESULTS_DIR, report
from .memory import PeakMemory

COLUMNS = (
    "setup",
    "accuracy",
    "trainable_params",
    "train_s",
    "peak_mem_mb",
    "lr",
    "epochs",
    "steps",
)
SPLIT_SEED = 123
"""The seed of the balanced train / validation / test split (chapter 9 uses the same)."""
MAX_LENGTH = 64
"""Tokens per message (the median SMS is about 60 of
the book tokenizer's tokens; longer ones are cut)."""
EPOCHS = 1
BATCH_SIZE = 16
THREADS = 1
"""One CPU thread: on a machine shared with other work, two threads that wait for each other
are slower (and far more erratic) than one; the book checkpoint was trained the same way."""

MODEL_ROWS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("random init, all trained", {"pretrained": False, "trainable": "all", "lr": 1e-3}),
    ("pretrained, head only", {"trainable": "head", "lr": 1e-2}),
    ("pretrained, last block", {"trainable": "last-block", "lr": 5e-3}),
    ("pretrained, all", {"trainable": "all", "lr": 1e-3}),
    (
        "pretrained, LoRA r=8",
        {"trainable": "lora", "lora": LoRAConfig(rank=8, alpha=16.0), "lr": 5e-3},
    ),
)
"""``(row name, options)`` of the rows that finetune a GPT (the two baselines come first)."""


def book_base_model() -> tuple[nn.Module, Any, str]:
    """``(model, tokenizer, description)`` of the book's pretrained model: the committed book
    checkpoint when the package has it, else chapter 5's run (trained once into
    ``runs/book-ch05``)."""
    from .. import book

    loader = getattr(book, "load_book_checkpoint", None)
    if loader is not None:
        run = loader()
        return (
            run.model,
            run.tokenizer,
            f"the book checkpoint (sydsgpt.book.load_book_checkpoint), sha256 {run.info['sha256']}",
        )
    run = book.train_book_model("runs/book-ch05", show_progress=False)
    return run.model, run.tokenizer, "chapter 5's run book-ch05 (sydsgpt.book.train_book_model)"


def _quick_base() -> tuple[nn.Module, Any, str]:
    from ..bpe import BPETokenizer

    seed_everything(0)
    model = SydsGPT(
        {
            "vocab_size": 256,
            "embedding_dim": 32,
            "context_length": 32,
            "num_layers": 2,
            "num_heads": 2,
            "dropout": 0.0,
            "qkv_bias": False,
        }
    )
    return model.eval(), BPETokenizer(name="bytes"), "a tiny random model on raw bytes (--quick)"


BASELINES = ("majority class", "bag of words + logistic regression")
SETUPS = (*BASELINES, *(name for name, _ in MODEL_ROWS))
"""Every row's name, in the table's order."""


def run(
    out: str | os.PathLike[str] | None = RESULTS_DIR / "finetune_cpu.json",
    quick: bool = False,
    epochs: int = EPOCHS,
    max_length: int = MAX_LENGTH,
    device: str = "cpu",
    threads: int | None = THREADS,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Measure every row (see the module docstring), print the table and write the JSON ``out``.

    ``threads``: torch's CPU threads during the run (restored after; ``None``: leave torch's
    choice).
    ``only``: measure just these rows (names of :data:`SETUPS`), e.g. one row per process,
    put together afterwards by :func:`combine`.
    """
    unknown = sorted(set(only or ()) - set(SETUPS))
    if unknown:
        raise ValueError(
            f"unknown finetune benchmark row(s) {unknown}; the rows are {list(SETUPS)}"
        )
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out, quick, epochs, max_length, device, set(only or SETUPS))
    finally:
        torch.set_num_threads(previous)


def combine(
    parts: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], note: str = ""
) -> dict[str, Any]:
    """Join the results of :func:`run` calls that measured different rows (``only=``) into one
    result ``out``, rows in table order; the settings must agree. ``note`` says how they ran."""
    payloads = [json.loads(Path(p).read_text()) for p in parts]
    settings = [{k: v for k, v in p.items() if k not in ("rows", "machine")} for p in payloads]
    if any(s != settings[0] for s in settings[1:]):
        raise ValueError("the parts were measured with different settings; run them alike")
    rows = {row["setup"]: row for p in payloads for row in p["rows"]}
    missing = [name for name in SETUPS if name not in rows]
    if missing:
        raise ValueError(f"no part measured the row(s) {missing}")
    return report(
        [rows[name] for name in SETUPS],
        COLUMNS,
        out,
        "finetune",
        **{k: v for k, v in settings[0].items() if k != "benchmark"},
        parallel=note,
    )


def _run(
    out: str | os.PathLike[str] | None,
    quick: bool,
    epochs: int,
    max_length: int,
    device: str,
    only: set[str],
) -> dict[str, Any]:
    base, tokenizer, source = _quick_base() if quick else book_base_model()
    base = base.to(device)
    train, val, test = balanced_split(load_sms_spam(), seed=SPLIT_SEED)
    if quick:
        train, val, test, epochs, max_length = train[:48], val[:16], test[:32], 1, 16
    rows: list[dict[str, Any]] = []
    if "majority class" in only:
        rows.append(
            {
                "setup": "majority class",
                "accuracy": majority_baseline(train, test),
                "trainable_params": 0,
                "train_s": 0.0,
            }
        )
    with PeakMemory(device) as memory:
        if "bag of words + logistic regression" in only:
            bow = bag_of_words_baseline(train, test, steps=20 if quick else 300)
            rows.append(
                {
                    "setup": "bag of words + logistic regression",
                    "accuracy": bow["accuracy"],
                    "trainable_params": bow["trainable_params"],
                    "train_s": bow["train_s"],
                    "peak_mem_mb": memory.peak_bytes / 2**20,
                    "steps": 20 if quick else 300,
                }
            )
    for name, options in MODEL_ROWS:
        if name not in only:
            continue
        options = dict(options)
        lr = options.pop("lr")
        if options.pop("pretrained", True):
            model = copy.deepcopy(base)
        else:
            seed_everything(SPLIT_SEED)
            model = SydsGPT(base.config).to(device)
        cfg = classifier_train_config(
            epochs=epochs,
            batch_size=BATCH_SIZE,
            lr=lr,
            device=device,
            eval_interval=0,
            seed=SPLIT_SEED,
        )  # no evaluations inside train_s: the test split scores
        with PeakMemory(device) as memory:
            classifier = ClassifierConfig(max_length=max_length, **options)
            result = finetune_classifier(
                model,
                tokenizer,
                train,
                None,
                classifier=classifier,
                cfg=cfg,
                session=Session(show_progress=False),
            )
        rows.append(
            {
                "setup": name,
                "accuracy": result.accuracy(test),
                "trainable_params": result.trainable_params,
                "train_s": result.train_s,
                "peak_mem_mb": memory.peak_bytes / 2**20,
                "lr": lr,
                "epochs": epochs,
                "steps": result.history[-1]["step"],
            }
        )
        print(
            f"{name}: test accuracy {rows[-1]['accuracy']:.3f} in {result.train_s:.0f} s",
            flush=True,
        )
        del model, result
    for row in rows:
        for key in ("accuracy", "train_s", "peak_mem_mb"):
            if key in row:
                row[key] = round(row[key], 4 if key == "accuracy" else 1)
    return report(
        rows,
        COLUMNS,
        out,
        "finetune",
        quick=quick,
        base_model=source,
        base_params=sum(p.numel() for p in base.parameters()),
        base_config=base.config.to_dict(),
        data="sms-spam",
        split={"seed": SPLIT_SEED, "train": len(train), "val": len(val), "test": len(test)},
        max_length=max_length,
        batch_size=BATCH_SIZE,
        device=device,
        threads=torch.get_num_threads(),
        memory=memory.method,
        timing="wall clock on a shared machine, under load from other work: compare rows, not "
        "machines",
    )


if __name__ == "__main__":  # python -m sydsgpt.bench.finetune [OUT [ROW ...]]
    import sys

    run(
        Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS_DIR / "finetune_cpu.json",
        only=sys.argv[2:] or None,
    )
