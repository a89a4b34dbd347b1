"""Benchmark: chapter 5's recipe with GPT-2 blocks vs modern blocks (chapter 7).

Every row trains chapter 5's model (the run ``book-ch05`` of :data:`sydsgpt.presets.RUNS`:
Tiny Shakespeare, its 1,024-id BPE, its optimizer and schedule) with one
architecture, and reports the held-out **bits per byte** and the measured training
**tokens/s**:

* ``GPT-2 blocks``: chapter 5's model as it is;
* one change at a time on top of it: ``+RMSNorm``, ``+SwiGLU``, ``+RoPE``, ``+GQA``
  (2 key/value heads for 4 query heads), ``+QK-norm``;
* ``modern blocks``: all of them together, without biases (the Llama 3 / Qwen3 block);
* the GPT-2 row again with another seed, to show how large a gap chance alone makes.

Fair comparison on a shared, noisy CPU:

* **equal parameter count**: each row's feed-forward width is chosen so that its
  parameter count is as close as possible to the GPT-2 row's (``params`` column);
* **equal training time, as an equal token budget**: the number of steps is chosen
  once, from a time target and the GPT-2 row's measured speed, and every row then
  trains that many steps on the same batches. A row's quality therefore does not
  depend on how busy the machine was while it ran; its speed does, and is reported
  separately: ``tokens_per_s`` is the median step's speed (robust to a burst of load
  from another process), ``wall_tokens_per_s`` the whole run's, with the machine's load
  average before and after.

Run it with ``sydsgpt bench --what modern`` (about 8 minutes on a quiet 2-core machine;
``--quick``: seconds, a tiny model).
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch

from ..data import make_loaders
from ..losses import held_out_bits_per_byte
from ..model import SydsGPT, count_parameters
from ..presets import RUNS, get_preset
from ..runtime import seed_everything
from ..train import Session, TrainConfig, train
from .common import format_table, report, torch_threads

BOOK_RUN = RUNS["book-ch05"]
"""Chapter 5's run: the recipe every row follows."""
COLUMNS = (
    "setup",
    "params",
    "steps",
    "tokens",
    "train_s",
    "tokens_per_s",
    "wall_tokens_per_s",
    "val_loss",
    "val_bpb",
)

CHANGES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("GPT-2 blocks", {}),
    ("+RMSNorm", {"norm": "rmsnorm"}),
    ("+SwiGLU", {"ffn": "swiglu"}),
    ("+RoPE", {"positions": "rope"}),
    ("+GQA (2 KV heads)", {"num_kv_heads": 2}),
    ("+QK-norm", {"qk_norm": True}),
    (
        "modern blocks",
        {
            "norm": "rmsnorm",
            "ffn": "swiglu",
            "positions": "rope",
            "num_kv_heads": 2,
            "qk_norm": True,
            "linear_bias": False,
            "norm_eps": 1e-6,
        },
    ),
)
"""``(row name, config changes on top of chapter 5's model)``; the first row is the baseline."""
REPEAT_SEED = 7
"""A last row trains the GPT-2 row again with this seed (another initialisation and batch order):
its difference from the first row shows how much of a gap one seed's luck can explain."""


def match_parameter_count(
    config: Mapping[str, Any], target: int, multiple_of: int = 8
) -> dict[str, Any]:
    """``config`` with the ``ffn_hidden_dim`` (a multiple of
    ``multiple_of``) whose parameter count is closest to ``target``."""
    # The count is linear in the hidden width: two widths give the line, the target its step.
    d = config["embedding_dim"]
    first = count_parameters({**config, "ffn_hidden_dim": multiple_of})
    per_step = count_parameters({**config, "ffn_hidden_dim": 2 * multiple_of}) - first
    last_step = 8 * d // multiple_of - 1  # widths multiple_of .. 8 d
    step = min(max(round((target - first) / per_step), 0), last_step)
    return {**config, "ffn_hidden_dim": multiple_of * (step + 1)}


def quick_setup(preset: str) -> tuple[str, Any, dict[str, Any]]:
    """The quick runs' data and model: the-verdict, a 300-id BPE trained on it, and ``preset``
    shrunk to one block of width 32 (seconds; a smoke test, not a result)."""
    from ..bpe import BPETokenizer
    from ..corpora import load_corpus

    text = load_corpus("the-verdict")
    tokenizer = BPETokenizer(name="bpe300-the-verdict").train(text, 300)
    tiny = {"embedding_dim": 32, "context_length": 32, "num_layers": 1, "num_heads": 4}
    return text, tokenizer, {**get_preset(preset), **tiny}


def train_row(
    config: Mapping[str, Any], cfg: TrainConfig, loaders: tuple[Any, Any], tokenizer: Any
) -> dict[str, Any]:
    """Train ``config`` with ``cfg`` (seeded by ``cfg.seed``) on the training loader; its
    parameters, steps, tokens, time, speeds and held-out loss and bits per byte (every batch
    of the held-out loader)."""
    seed_everything(cfg.seed)
    model = SydsGPT(dict(config))
    start = time.perf_counter()
    history = train(model, loaders[0], None, cfg, session=Session(show_progress=False))
    seconds = time.perf_counter() - start
    speeds = [r["tokens_per_s"] for r in history[1:] if "tokens_per_s" in r]
    step_speeds, late = (
        sorted(speeds),
        speeds[len(speeds) // 2 :],
    )  # late: the second half of the run
    tokens = cfg.max_steps * cfg.batch_size * cfg.seq_len  # type: ignore[operator]
    loss, bpb = held_out_bits_per_byte(model, loaders[1], tokenizer)
    return {
        "params": count_parameters(model),
        "steps": cfg.max_steps,
        "tokens": tokens,
        "train_s": round(seconds, 2),
        "tokens_per_s": step_speeds[len(step_speeds) // 2],
        "wall_tokens_per_s": round(tokens / seconds, 1),
        "late_tokens_per_s": sorted(late)[len(late) // 2],
        "val_loss": round(loss, 4),
        "val_bpb": round(bpb, 4),
    }


def run(
    seconds_per_row: float = 60.0,
    max_steps: int = 400,
    quick: bool = False,
    threads: int | None = None,
    seed: int | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """Train every row of :data:`CHANGES`; returns ``{"rows": [...], ...settings}``.

    ``threads``: PyTorch's intra-op threads during the run (``None``: leave as is). On a
    machine that another process shares, one thread keeps the speeds comparable: the
    other process then takes nothing from this core, whereas threads that must wait
    for each other at every operation slow down several-fold when one of them is
    preempted. On a quiet machine, all cores give the larger token budget.
    ``seed``: the rows' seed (default chapter 5's); repeat a run with a few to see the spread.
    """
    with torch_threads(threads):
        return _run(seconds_per_row, max_steps, quick, seed, log)


def _run(
    seconds_per_row: float, max_steps: int, quick: bool, seed: int | None, log: Any
) -> dict[str, Any]:
    from ..book import book_tokenizer
    from ..corpora import load_corpus

    load_before = os.getloadavg()
    if quick:
        text, tokenizer, base = quick_setup(BOOK_RUN.preset)
        cfg = replace(
            BOOK_RUN.train,
            batch_size=4,
            seq_len=32,
            warmup_steps=2,
            eval_interval=0,
            sample_tokens=0,
        )
    else:
        text = load_corpus(BOOK_RUN.corpus)
        tokenizer = book_tokenizer(run=BOOK_RUN)
        base = get_preset(BOOK_RUN.preset)
        cfg = replace(BOOK_RUN.train, eval_interval=0, sample_tokens=0)
    base["vocab_size"] = tokenizer.n_vocab
    cfg = replace(cfg, eval_at_start=False, seed=cfg.seed if seed is None else seed)
    cfg = replace(cfg, seq_len=cfg.seq_len or base["context_length"])
    loaders = make_loaders(text, tokenizer, cfg.seq_len, cfg.batch_size, BOOK_RUN.val_fraction)
    target = count_parameters(base)

    # The token budget: as many steps as the GPT-2 row trains in `seconds_per_row` (measured now).
    # The GPT-2 row's speed over a short run, from its second half (the first steps run slower).
    calibration = train_row(base, replace(cfg, max_steps=4 if quick else 60), loaders, tokenizer)
    speed = calibration["late_tokens_per_s"]
    steps = max(50, min(max_steps, round(seconds_per_row * speed / (cfg.batch_size * cfg.seq_len))))
    if quick:
        steps = 5
    cfg = replace(
        cfg,
        max_steps=steps,
        warmup_steps=cfg.warmup_steps if steps > 4 * (cfg.warmup_steps or 0) else 1,
    )
    log(
        f"token budget: {steps} steps of {cfg.batch_size} x {cfg.seq_len} tokens per row "
        f"(GPT-2 row at {speed:.0f} tokens/s, target {seconds_per_row:.0f} s per row)"
    )

    rows = []
    for name, changes in CHANGES:
        config = {**base, **changes}
        if changes:
            config = match_parameter_count(config, target)
        row = {
            "setup": name,
            **train_row(config, cfg, loaders, tokenizer),
            "ffn_hidden_dim": config.get("ffn_hidden_dim") or 4 * base["embedding_dim"],
            "config_changes": changes,
        }
        rows.append(row)
        log(format_table([row], COLUMNS).splitlines()[-1])
    repeat = {
        "setup": f"GPT-2 blocks, seed {REPEAT_SEED}",
        **train_row(base, replace(cfg, seed=REPEAT_SEED), loaders, tokenizer),
        "ffn_hidden_dim": 4 * base["embedding_dim"],
        "config_changes": {},
    }
    rows.append(repeat)
    log(format_table([repeat], COLUMNS).splitlines()[-1])
    load_after = os.getloadavg()
    return {
        "rows": rows,
        "corpus": "the-verdict" if quick else BOOK_RUN.corpus,
        "tokenizer": tokenizer.name,
        "base_model": base,
        "train": cfg.to_dict(),
        "steps_per_row": steps,
        "seconds_per_row_target": seconds_per_row,
        "calibration": calibration,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "torch_threads": torch.get_num_threads(),
        "quick": quick,
    }


def benchmark(
    seconds_per_row: float = 60.0,
    max_steps: int = 400,
    quick: bool = False,
    threads: int | None = None,
    seed: int | None = None,
    out: str | Path | None = None,
    log: Any = print,
) -> dict[str, Any]:
    """:func:`run`, its table printed and its JSON written to ``out`` (when given)."""
    result = run(seconds_per_row, max_steps, quick, threads, seed, log=log or (lambda _msg: None))
    if log:
        log(f"load average before {result['loadavg_before']}, after {result['loadavg_after']}")
    extra = {k: v for k, v in result.items() if k != "rows"}
    return report(result["rows"], COLUMNS, out, "modern", log, **extra)
