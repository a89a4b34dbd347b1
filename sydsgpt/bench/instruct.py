"""Benchmark: chapter 9's instruction-finetuning experiment, measured.

Two experiments on the word tasks of :func:`sydsgpt.instruct.word_task_records` (repeat /
first / last / reverse of a few words: exact answers a program checks), scored on held-out
prompts (word combinations that no training record contains):

**The real model** (``real_model`` in the JSON): SmolLM2-135M-Instruct, finetuned in its own
ChatML chat format (:func:`sydsgpt.instruct.chat_format`), with LoRA of rank 8 on every linear
layer of the blocks. Rows:

* ``base model``: SmolLM2 out of the box, asked in the same chat format. A 1-thread probe on
  a shared machine (2026-12-07, 20 prompts per task, 12 new tokens) scored 0/20 on each of the
  four tasks: it answers in sentences (``The first word in the sentence ... is``), joins words
  (``death-world``) or repeats the input; nothing is an exact answer;
* ``LoRA, masked loss``: the loss on the reply and its ``<|im_end|>`` only;
* ``LoRA, unmasked loss``: the same, with the prompt (system and user turns) graded too.

Both LoRA rows are run for each step budget in :data:`SMOL_STEPS` (the ``steps`` column), each
with :data:`SEEDS` (the adapters' initial values and the batch order); a row reports the mean
and sample standard deviation of the held-out exact match and response loss over the seeds,
with the per-seed values beside them (``per_seed``).

**The book's model** (the top-level ``rows``, kept for chapter 9's first part): the book
checkpoint, finetuned on all its weights in the Alpaca-style template (one seed each):
``base model``, ``finetuned, masked loss``, ``finetuned, unmasked loss``.

Columns: ``response_loss`` (held-out, nats per graded token), ``stopped`` (share of greedy
answers that end with the end token), ``exact_match`` (share equal to the expected answer and
stopped), ``trainable_params``, ``train_s`` (wall clock), the settings, and a few answers.

Sizing (the whole run must take at most 15 minutes with 2 threads). Timing probes with 1
thread on the shared 2-core machine (load average 2.7 to 2.9 from other work): a LoRA step of
SmolLM2 on 4 sequences of ~46 tokens took 1.15 to 1.3 s; scoring 60 held-out prompts (greedy
answers and the response loss) took 24 s for a finetuned model, and the base model, whose
answers run to 12 tokens, ~0.5 s a prompt. So: 2 losses x 3 seeds x (20 + 40) steps = 360
steps ~ 450 s; 13 scorings ~ 325 s; the book's rows ~ 60 s; loading ~ 5 s: about 14 minutes
with 1 thread, so about 8 to 10 minutes with :data:`THREADS` (2) on a quiet machine. Measured:
7 min 38 s with 2 threads from a load average of 0.59 (2026-12-07).

Run it with ``sydsgpt bench --what instruct`` (``--quick``: seconds, tiny random models, one
with a ChatML tokenizer in place of SmolLM2).
The book's test prompts are the first 24 word-task records of another seed that are not
training prompts (:func:`splits`); the real model's are the first 60 (:func:`real_splits`).
``Repeat the word twice.`` has only 24 prompts (one of 24 words), all of them among the 400
training records, so the held-out prompts are of the three other tasks
(``exact_match_by_task`` in each row).
"""

from __future__ import annotations

import copy
import itertools
import os
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..instruct import (
    TASKS,
    add_end_token,
    exact_match,
    finetune_instructions,
    instruction_loader,
    response_loss,
    word_task_records,
)
from ..lora import LoRAConfig, apply_lora, count_trainable_parameters
from ..runtime import seed_everything
from ..train_config import Session, TrainConfig
from .common import RESULTS_DIR, format_table, report, torch_threads

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
REAL_COLUMNS = (
    "setup",
    "exact_match",
    "exact_match_std",
    "response_loss",
    "response_loss_std",
    "stopped",
    "trainable_params",
    "train_s",
    "steps",
)
SEED = 123
TRAIN_RECORDS, TEST_RECORDS = 400, 24
STEPS, BATCH_SIZE, LR = 50, 8, 3e-3
"""The book model's rows: all weights, one seed."""
SMOL_TRAIN_RECORDS, SMOL_TEST_RECORDS = 400, 60
SMOL_STEPS = (20, 40)
"""The step budgets of the LoRA rows: after 20 steps the two losses differ (a 1-seed probe:
47 of 60 exact answers masked, 27 unmasked), after 60 both had learnt the tasks (60 of 60
unmasked), so 40 shows the catching up."""
SMOL_BATCH_SIZE, SMOL_LR, SMOL_WARMUP = 4, 2e-3, 5
SMOL_CONTEXT = 256
"""Positions SmolLM2 is loaded with (a prompt and its answer are under 60 tokens)."""
SEEDS = (1, 2, 3)
LORA = LoRAConfig(rank=8, alpha=16.0)
"""Rank 8 on every linear layer of the blocks (attention and feed-forward)."""
THREADS = 2
MAX_NEW_TOKENS = 12
SHOWN = 8
"""Held-out answers kept per row (what the model generates)."""
QUICK_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\\n{% endif %}"
)
"""A ChatML template for the quick run's tiny chat model."""


def _unseen(train: Sequence[dict[str, str]], n_test: int, seed: int) -> list[dict[str, str]]:
    """The first ``n_test`` word-task records of ``seed`` whose prompt no training record has."""
    seen = {(r["instruction"], r["input"]) for r in train}
    candidates = word_task_records(4 * n_test, seed)
    return [r for r in candidates if (r["instruction"], r["input"]) not in seen][:n_test]


def splits(quick: bool = False) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The book model's ``(train, test)`` word-task records; no test prompt is a training one."""
    n_train, n_test = (48, 8) if quick else (TRAIN_RECORDS, TEST_RECORDS)
    train = word_task_records(n_train, SEED)
    return train, _unseen(train, n_test, SEED + 1)


def real_splits(quick: bool = False) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The real model's ``(train, test)`` records: as :func:`splits`, 60 test prompts."""
    n_train, n_test = (48, 8) if quick else (SMOL_TRAIN_RECORDS, SMOL_TEST_RECORDS)
    train = word_task_records(n_train, SEED)
    return train, _unseen(train, n_test, SEED + 1)


def _score(
    model: nn.Module, tokenizer: Any, test: list[dict[str, str]], max_new_tokens: int
) -> dict[str, Any]:
    """Held-out response loss, the share of stopped / exact answers (also per task), answers."""
    loader = instruction_loader(test, tokenizer, model.config.context_length, batch_size=8)
    answers, by_task, stopped, correct = {}, {}, 0.0, 0.0
    for task in TASKS:
        records = [r for r in test if r["instruction"] == task]
        if not records:
            continue
        score = exact_match(model, tokenizer, records, max_new_tokens)
        by_task[task] = round(score["exact_match"], 4)
        stopped += score["stopped"] * len(records)
        correct += score["exact_match"] * len(records)
        answers.update({id(r): a for r, a in zip(records, score["answers"])})
    return {
        "response_loss": response_loss(model, loader),
        "stopped": stopped / len(test),
        "exact_match": correct / len(test),
        "exact_match_by_task": by_task,
        "answers": [answers[id(r)] for r in test[:SHOWN]],
    }


def _tiny(vocab_size: int, **config: Any) -> nn.Module:
    from ..model import SydsGPT

    seed_everything(0)
    base = {"embedding_dim": 16, "context_length": 256, "num_layers": 1, "num_heads": 2}
    cfg = {**base, "dropout": 0.0, "qkv_bias": False, **config, "vocab_size": vocab_size}
    return SydsGPT(cfg).eval()


def _quick_base() -> tuple[nn.Module, Any, str]:
    from ..bpe import BPETokenizer

    return _tiny(256), BPETokenizer(name="bytes"), "a tiny random model on raw bytes (--quick)"


def _quick_chat_base() -> tuple[nn.Module, Any, str]:
    """A tiny random model with a ChatML tokenizer (bytes, a few merges, the two control
    tokens and a chat template), standing in for SmolLM2 in the quick run."""
    from ..bpe import BPETokenizer

    tokenizer = BPETokenizer(name="chat-bytes").train(
        "Write the words. " * 4, 260, special_tokens=["<|im_start|>", "<|im_end|>"]
    )
    tokenizer.chat_template = QUICK_CHAT_TEMPLATE
    model = _tiny(tokenizer.n_vocab)
    return model, tokenizer, "a tiny random model with a ChatML tokenizer (--quick)"


def _smollm2() -> tuple[nn.Module, Any, str]:
    from ..models import SMOLLM2, load_model
    from ..smollm2 import find_smollm2

    model, tokenizer = load_model(SMOLLM2, context_length=SMOL_CONTEXT)
    return model, tokenizer, f"SmolLM2-135M-Instruct ({find_smollm2().name})"


def run(
    out: str | os.PathLike[str] | None = RESULTS_DIR / "instruct_cpu.json",
    quick: bool = False,
    device: str = "cpu",
    base: tuple[nn.Module, Any, str] | None = None,
    steps: int = STEPS,
    real_base: tuple[nn.Module, Any, str] | None = None,
) -> dict[str, Any]:
    """Measure every row (see the module docstring), print the tables and write the JSON
    ``out``. ``base`` / ``real_base``: other models in place of the book's and SmolLM2."""
    from .finetune import book_base_model

    load_before = os.getloadavg()
    with torch_threads(THREADS if device == "cpu" else None):
        book = _run(
            *(base or (_quick_base() if quick else book_base_model())), quick, device, steps
        )
        real = _run_real(
            *(real_base or (_quick_chat_base() if quick else _smollm2())), quick, device
        )
        return report(
            book["rows"],
            COLUMNS,
            out,
            "instruct",
            **{k: v for k, v in book.items() if k != "rows"},
            real_model=real,
            loadavg_before=list(load_before),
            loadavg_after=list(os.getloadavg()),
            timing="wall clock; compare rows, not machines; a load average above 1 before the "
            "run means other work ran beside it",
        )


def _config(
    steps: int, batch_size: int, lr: float, warmup: int, seed: int, device: str
) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=warmup,
        weight_decay=0.0,
        eval_interval=0,
        sample_tokens=0,
        device=device,
        seed=seed,
    )


def _finetuned(
    model0: nn.Module,
    tokenizer: Any,
    train: list[dict[str, str]],
    cfg: TrainConfig,
    mask: bool,
    lora: LoRAConfig | None = None,
) -> tuple[nn.Module, float]:
    """A copy of ``model0`` finetuned on ``train`` (with LoRA adapters first, when ``lora``),
    seeded by ``cfg.seed``, and the training's wall-clock seconds."""
    model = copy.deepcopy(model0)
    seed_everything(cfg.seed)  # the adapters' initial values
    if lora is not None:
        apply_lora(model, lora)
    start = time.perf_counter()
    finetune_instructions(
        model, tokenizer, train, None, cfg, mask_prompt=mask, session=Session(show_progress=False)
    )
    return model, time.perf_counter() - start


def _run_real(
    model0: nn.Module, tokenizer: Any, source: str, quick: bool, device: str
) -> dict[str, Any]:
    """The real model's rows: the base model, then LoRA with and without masking, each seed."""
    model0 = model0.to(device)
    train, test = real_splits(quick)
    budgets, seeds = ((2, 3), SEEDS[:2]) if quick else (SMOL_STEPS, SEEDS)
    max_new = 3 if quick else MAX_NEW_TOKENS
    rows = [{"setup": "base model", **_score(model0, tokenizer, test, max_new), "steps": 0}]
    rows[0].update(trainable_params=0, train_s=0.0)
    print(f"base model: exact match {rows[0]['exact_match']:.2f}", flush=True)
    setups = (("LoRA, masked loss", True), ("LoRA, unmasked loss", False))
    for steps, (name, mask) in itertools.product(budgets, setups):
        runs = []
        for seed in seeds:
            cfg = _config(steps, SMOL_BATCH_SIZE, SMOL_LR, SMOL_WARMUP, seed, device)
            model, train_s = _finetuned(model0, tokenizer, train, cfg, mask, LORA)
            runs.append(
                {
                    "seed": seed,
                    **_score(model, tokenizer, test, max_new),
                    "train_s": round(train_s, 1),
                    "trainable_params": count_trainable_parameters(model),
                }
            )
            print(
                f"{name}, {steps} steps, seed {seed}: exact match {runs[-1]['exact_match']:.2f}, "
                f"response loss {runs[-1]['response_loss']:.3f} in {train_s:.0f} s",
                flush=True,
            )
            del model
        rows.append(_summary(name, runs, steps))
    for row in rows:
        row["response_loss"] = round(row["response_loss"], 4)
    print(format_table(rows, REAL_COLUMNS))
    return {
        "rows": rows,
        "base_model": source,
        "base_params": sum(p.numel() for p in model0.parameters()),
        "format": "the model's ChatML chat template (sydsgpt.instruct.chat_format)",
        "lora": LORA.to_dict(),
        "seeds": list(seeds),
        "steps_per_run": list(budgets),
        "lr": SMOL_LR,
        "warmup_steps": SMOL_WARMUP,
        "batch_size": SMOL_BATCH_SIZE,
        "records": {"train": len(train), "test": len(test)},
        "max_new_tokens": max_new,
        "context_length": model0.config.context_length,
        "examples": [
            {"prompt": f"{r['instruction']} {r['input']}", "expected": r["output"]}
            for r in test[:SHOWN]
        ],
    }


def _summary(name: str, runs: list[dict[str, Any]], steps: int) -> dict[str, Any]:
    """One row of a setup run with several seeds: means, sample standard deviations (0 for
    one seed) and the per-seed values."""

    def spread(key: str) -> tuple[float, float]:
        values = [r[key] for r in runs]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values), std

    em, em_std = spread("exact_match")
    loss, loss_std = spread("response_loss")
    return {
        "setup": name,
        "exact_match": round(em, 4),
        "exact_match_std": round(em_std, 4),
        "response_loss": loss,
        "response_loss_std": round(loss_std, 4),
        "stopped": round(statistics.fmean(r["stopped"] for r in runs), 4),
        "trainable_params": runs[0]["trainable_params"],
        "train_s": round(statistics.fmean(r["train_s"] for r in runs), 1),
        "steps": steps,
        "per_seed": [
            {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in runs
        ],
        "answers": runs[0]["answers"],
    }


def _run(
    model0: nn.Module, tokenizer0: Any, source: str, quick: bool, device: str, steps: int
) -> dict[str, Any]:
    """The book model's rows (one seed, all weights trained, the Alpaca-style format)."""
    model0, tokenizer = add_end_token(model0.to(device), tokenizer0)
    train, test = splits(quick)
    steps = 4 if quick else steps
    max_new = 3 if quick else MAX_NEW_TOKENS
    rows: list[dict[str, Any]] = [
        {
            "setup": "base model",
            **_score(model0, tokenizer, test, max_new),
            "trainable_params": 0,
            "train_s": 0.0,
            "steps": 0,
        }
    ]
    for name, mask in (("finetuned, masked loss", True), ("finetuned, unmasked loss", False)):
        cfg = _config(steps, BATCH_SIZE, LR, 10, SEED, device)
        model, train_s = _finetuned(model0, tokenizer, train, cfg, mask)
        rows.append(
            {
                "setup": name,
                **_score(model, tokenizer, test, max_new),
                "trainable_params": count_trainable_parameters(model),
                "train_s": round(train_s, 1),
                "steps": steps,
                "lr": LR,
            }
        )
        print(f"{name}: exact match {rows[-1]['exact_match']:.2f} in {train_s:.0f} s", flush=True)
        del model
    for row in rows:
        row["response_loss"] = round(row["response_loss"], 4)
    return {
        "rows": rows,
        "quick": quick,
        "base_model": source,
        "base_params": sum(p.numel() for p in model0.parameters()),
        "base_config": model0.config.to_dict(),
        "data": "word-tasks",
        "steps_per_run": steps,
        "lr": LR,
        "records": {"train": len(train), "test": len(test)},
        "batch_size": BATCH_SIZE,
        "max_new_tokens": MAX_NEW_TOKENS,
        "device": device,
        "threads": torch.get_num_threads(),
    }


if __name__ == "__main__":  # python -m sydsgpt.bench.instruct [--quick] [OUT]
    import sys

    arguments = [a for a in sys.argv[1:] if a != "--quick"]
    run(
        Path(arguments[0]) if arguments else RESULTS_DIR / "instruct_cpu.json",
        quick="--quick" in sys.argv,
    )
