"""Benchmark: chapter 9's instruction-finetuning experiment, measured.

The book's pretrained model is finetuned on the word tasks of
:func:`sydsgpt.instruct.word_task_records` (repeat / first / last / reverse of a few
words, in the Alpaca-style template) and scored on held-out prompts: word combinations
that no training record contains. Rows:

* ``base model``: the pretrained model as it is (it continues text; it was never told to stop);
* ``finetuned, masked loss``: the loss on the response and its end token only (the chapter's way);
* ``finetuned, unmasked loss``: the same run, with the prompt tokens graded too.

Columns: ``response_loss`` (held-out, nats per graded token), ``stopped`` (share of greedy
answers that end with the end token), ``exact_match`` (share equal to the expected answer),
``trainable_params``, ``train_s`` (wall clock), the settings, and a few held-out answers.

Run it with ``sydsgpt bench --what instruct`` (``--quick``: seconds, a tiny random model).
The test prompts are the first 24 word-task records of another seed that are not training prompts.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..instruct import (
    add_end_token,
    exact_match,
    finetune_instructions,
    instruction_loader,
    response_loss,
    word_task_records,
)
from ..runtime import seed_everything
from ..train_config import Session, TrainConfig
from .common import RESULTS_DIR, report

COLUMNS = (
    "setup",
    "response_loss",
    "stopped",
    "exact_match",
    "trainable_params",
    "train_s",
    "steps",
    "lr",
)
SEED = 123
TRAIN_RECORDS, TEST_RECORDS = 400, 24
STEPS, BATCH_SIZE, LR = 50, 8, 3e-3
THREADS = 1
"""One CPU thread: on a shared machine two threads are slower and erratic (see bench.finetune)."""
MAX_NEW_TOKENS = 12
SHOWN = 8
"""Held-out answers kept per row (what the model generates)."""


def splits(quick: bool = False) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """``(train, test)`` word-task records; no test prompt is among the training prompts."""
    n_train, n_test = (48, 8) if quick else (TRAIN_RECORDS, TEST_RECORDS)
    train = word_task_records(n_train, SEED)
    seen = {(r["instruction"], r["input"]) for r in train}
    unseen = [
        r
        for r in word_task_records(4 * n_test, SEED + 1)
        if (r["instruction"], r["input"]) not in seen
    ]
    return train, unseen[:n_test]


def _score(
    model: nn.Module, tokenizer: Any, test: list[dict[str, str]], quick: bool
) -> dict[str, Any]:
    loader = instruction_loader(test, tokenizer, model.config.context_length, batch_size=8)
    score = exact_match(model, tokenizer, test, 3 if quick else MAX_NEW_TOKENS)
    return {
        "response_loss": response_loss(model, loader),
        "stopped": score["stopped"],
        "exact_match": score["exact_match"],
        "answers": score["answers"][:SHOWN],
    }


def _quick_base() -> tuple[nn.Module, Any, str]:
    from ..bpe import BPETokenizer
    from ..model import SydsGPT

    seed_everything(0)
    model = SydsGPT(
        {
            "vocab_size": 256,
            "embedding_dim": 16,
            "context_length": 256,
            "num_layers": 1,
            "num_heads": 2,
            "dropout": 0.0,
            "qkv_bias": False,
        }
    )
    return model.eval(), BPETokenizer(name="bytes"), "a tiny random model on raw bytes (--quick)"


def run(
    out: str | os.PathLike[str] | None = RESULTS_DIR / "instruct_cpu.json",
    quick: bool = False,
    device: str = "cpu",
    base: tuple[nn.Module, Any, str] | None = None,
    steps: int = STEPS,
) -> dict[str, Any]:
    """Measure every row (see the module docstring), print the table and write the JSON ``out``."""
    from .finetune import book_base_model

    model0, tokenizer0, source = base or (_quick_base() if quick else book_base_model())
    threads_before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(THREADS)
    try:
        return _run(model0, tokenizer0, source, out, quick, device, steps)
    finally:
        torch.set_num_threads(threads_before)


def _run(
    model0: nn.Module, tokenizer0: Any, source: str, out: Any, quick: bool, device: str, steps: int
) -> dict[str, Any]:
    model0, tokenizer = add_end_token(model0.to(device), tokenizer0)
    train, test = splits(quick)
    steps = 4 if quick else steps
    rows: list[dict[str, Any]] = [
        {
            "setup": "base model",
            **_score(model0, tokenizer, test, quick),
            "trainable_params": 0,
            "train_s": 0.0,
            "steps": 0,
        }
    ]
    for name, mask, lr in (
        ("finetuned, masked loss", True, LR),
        ("finetuned, unmasked loss", False, LR),
    ):
        model = copy.deepcopy(model0)
        cfg = TrainConfig(
            max_steps=steps,
            batch_size=BATCH_SIZE,
            lr=lr,
            warmup_steps=10,
            weight_decay=0.0,
            eval_interval=0,
            sample_tokens=0,
            device=device,
            seed=SEED,
        )
        seed_everything(SEED)
        start = time.perf_counter()
        finetune_instructions(
            model,
            tokenizer,
            train,
            None,
            cfg,
            mask_prompt=mask,
            session=Session(show_progress=False),
        )
        train_s = time.perf_counter() - start
        rows.append(
            {
                "setup": name,
                **_score(model, tokenizer, test, quick),
                "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "train_s": round(train_s, 1),
                "steps": steps,
                "lr": lr,
            }
        )
        print(
            f"{name}: exact match {rows[-1]['exact_match']:.2f}, stopped {rows[-1]['stopped']:.2f} "
            f"in {train_s:.0f} s",
            flush=True,
        )
        del model
    for row in rows:
        row["response_loss"] = round(row["response_loss"], 4)
    return report(
        rows,
        COLUMNS,
        out,
        "instruct",
        quick=quick,
        base_model=source,
        base_params=sum(p.numel() for p in model0.parameters()),
        base_config=model0.config.to_dict(),
        data="word-tasks",
        steps_per_run=steps,
        lr=LR,
        records={"train": len(train), "test": len(test)},
        batch_size=BATCH_SIZE,
        max_new_tokens=MAX_NEW_TOKENS,
        device=device,
        threads=torch.get_num_threads(),
        timing="wall clock on a shared machine, under load from other work: compare rows, not "
        "machines",
    )


if __name__ == "__main__":  # python -m sydsgpt.bench.instruct [--quick] [OUT]
    import sys

    arguments = [a for a in sys.argv[1:] if a != "--quick"]
    run(
        Path(arguments[0]) if arguments else RESULTS_DIR / "instruct_cpu.json",
        quick="--quick" in sys.argv,
    )
