"""Benchmark: what quantizing the weights costs and buys (chapter 8).

For the book checkpoint and (when :func:`sydsgpt.smollm2.find_smollm2` finds the file)
SmolLM2-135M-Instruct, in float32 and each scheme of :func:`sydsgpt.quantize.quantize_model`
(``int8`` weight-only, ``int8-dynamic`` with PyTorch's int8 kernel, ``q4`` 4-bit blocks):

* ``val_bpb``: held-out bits per byte on Tiny Shakespeare's held-out split (the last 10%):
  the whole split for the book checkpoint (as :func:`sydsgpt.book.held_out` measures it);
  for SmolLM2 its first :data:`SMOLLM2_EVAL_TOKENS` tokens, in sequences of
  :data:`SMOLLM2_SEQ_LEN`, so that a row takes minutes, not an hour (the JSON says so);
* ``weight_mib``: :func:`sydsgpt.quantize.model_weight_bytes`, the stored weights;
* ``resident_mib``: how much the process grew to hold the quantized model, measured after one
  forward (so working copies such as the int8 kernel's packed weights are in);
* ``decode_peak_mib``: peak memory of one greedy decode above its start
  (:class:`sydsgpt.bench.memory.PeakMemory`): KV cache, activations, dequantized chunks;
* ``tok_s_median`` / ``tok_s_best``: greedy decoding with the KV cache
  (:func:`sydsgpt.generate.generate`), a fixed prompt and number of new tokens, ``repeats``
  times: the median and the fastest run; ``same_tokens_as_fp32`` compares the greedy tokens.

``sydsgpt bench --what quantization`` runs it and writes ``quantization_cpu.json``;
``--quick`` runs a tiny random model on a short slice, in seconds (a smoke test, not a
result). Timings mean something only on a quiet machine: the JSON records the load average
before and after.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..book import load_book_checkpoint
from ..corpora import load_corpus
from ..data import create_dataloader, train_val_split
from ..generate import generate
from ..losses import held_out_bits_per_byte
from ..model import SydsGPT
from ..quantize import SCHEMES, model_weight_bytes, quantize_model
from .common import report
from .memory import PeakMemory, memory_method, resident_bytes

COLUMNS = (
    "model",
    "scheme",
    "val_bpb",
    "weight_mib",
    "resident_mib",
    "decode_peak_mib",
    "tok_s_median",
    "tok_s_best",
    "same_tokens_as_fp32",
)
ROW_FIELDS = (
    "model",
    "scheme",
    "layers_quantized",
    "eval",
    "val_tokens",
    "val_loss",
    "val_bpb",
    "weight_bytes",
    "weight_mib",
    "resident_mib",
    "decode_peak_mib",
    "prompt_tokens",
    "new_tokens",
    "repeats",
    "tok_s_median",
    "tok_s_best",
    "same_tokens_as_fp32",
)
"""Every row of the result has these fields (the tests check it)."""
PROMPT = "ROMEO:\nWhat light through yonder window breaks?"
NEW_TOKENS, REPEATS = 64, 5
SMOLLM2_EVAL_TOKENS, SMOLLM2_SEQ_LEN, SMOLLM2_BATCH = 8192, 512, 2
"""SmolLM2 is measured on its first 8,192 held-out tokens, 2 sequences of 512 at a time (a batch's
logits, 2 x 512 x 49,152 floats, take 200 MB)."""
QUICK_CONFIG = {
    "vocab_size": 2048,
    "embedding_dim": 64,
    "context_length": 64,
    "num_layers": 2,
    "num_heads": 2,
    "dropout": 0.0,
    "qkv_bias": False,
    "tie_weights": True,
}
QUICK_EVAL_CHARS, QUICK_NEW_TOKENS, QUICK_REPEATS = 2000, 8, 2
MIB = 2**20

Evaluate = Callable[[nn.Module], tuple[float, float, int]]
"""model -> (held-out loss, bits per byte, tokens graded)."""


def text_evaluator(
    tokenizer: Any, text: str, seq_len: int, max_tokens: int | None = None, batch_size: int = 16
) -> Evaluate:
    """Bits per byte on ``text`` cut into sequences of ``seq_len`` (the first ``max_tokens``),
    ``batch_size`` sequences at a time."""
    loader = create_dataloader(
        text,
        tokenizer=tokenizer,
        max_length=seq_len,
        step_size=seq_len,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
    )
    batches, tokens = [], 0
    for inputs, targets in loader:
        if max_tokens is not None and tokens >= max_tokens:
            break
        batches.append((inputs, targets))
        tokens += targets.numel()

    def evaluate(model: nn.Module) -> tuple[float, float, int]:
        loss, bpb = held_out_bits_per_byte(model, batches, tokenizer)
        return loss, bpb, tokens

    return evaluate


def _held_out_text() -> str:
    return train_val_split(load_corpus("tinyshakespeare"), 0.1)[1]


def _decode_runs(
    model: nn.Module, prompt: torch.Tensor, new_tokens: int, repeats: int
) -> tuple[torch.Tensor, list[float], int]:
    """Greedy tokens, the seconds of each of ``repeats`` runs, the largest decode peak (bytes)."""
    generate(model, prompt, 2)  # warm-up: first calls allocate and pack
    seconds, peak, out = [], 0, prompt
    for _ in range(repeats):
        with PeakMemory("cpu") as memory:
            start = time.perf_counter()
            out = generate(model, prompt, new_tokens, use_cache=True)
            seconds.append(time.perf_counter() - start)
        peak = max(peak, memory.peak_bytes)
    return out, seconds, peak


def measure_model(
    name: str,
    model: nn.Module,
    tokenizer: Any,
    evaluate: Evaluate,
    how: str,
    new_tokens: int = NEW_TOKENS,
    repeats: int = REPEATS,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per scheme (fp32, then :data:`sydsgpt.quantize.SCHEMES`) for ``model``."""
    prompt = torch.tensor([tokenizer.encode(PROMPT)])
    rows, fp32_tokens = [], None
    with torch.no_grad():
        model.eval()(prompt)  # warm-up, so the first row's resident size is not torch's start-up
    for scheme in ("fp32", *SCHEMES):
        before = resident_bytes()  # collects the garbage first
        candidate = copy.deepcopy(model).eval()
        replaced = len(quantize_model(candidate, scheme).replaced) if scheme != "fp32" else 0
        with torch.no_grad():
            candidate(prompt)  # makes any working copy (the int8 kernel's packed weights)
        resident = resident_bytes() - before
        loss, bpb, tokens = evaluate(candidate)
        out, seconds, peak = _decode_runs(candidate, prompt, new_tokens, repeats)
        fp32_tokens = out if fp32_tokens is None else fp32_tokens
        rows.append(
            {
                "model": name,
                "scheme": scheme,
                "layers_quantized": replaced,
                "eval": how,
                "val_tokens": tokens,
                "val_loss": round(loss, 4),
                "val_bpb": round(bpb, 4),
                "weight_bytes": model_weight_bytes(candidate),
                "weight_mib": model_weight_bytes(candidate) / MIB,
                "resident_mib": resident / MIB,
                "decode_peak_mib": peak / MIB,
                "prompt_tokens": prompt.shape[1],
                "new_tokens": new_tokens,
                "repeats": repeats,
                "tok_s_median": new_tokens / statistics.median(seconds),
                "tok_s_best": new_tokens / min(seconds),
                "same_tokens_as_fp32": bool(torch.equal(out, fp32_tokens)),
            }
        )
        log(f"  {name} {scheme}: {bpb:.4f} bits/byte, {rows[-1]['tok_s_median']:.1f} tokens/s")
        del candidate
    return rows


def _quick_rows(log: Callable[[str], None]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = SydsGPT(QUICK_CONFIG).eval()
    tokenizer = load_book_checkpoint().tokenizer
    text = _held_out_text()[:QUICK_EVAL_CHARS]
    evaluate = text_evaluator(tokenizer, text, QUICK_CONFIG["context_length"])
    how = f"the first {QUICK_EVAL_CHARS} characters of the held-out split (quick smoke test)"
    return measure_model(
        "tiny-random", model, tokenizer, evaluate, how, QUICK_NEW_TOKENS, QUICK_REPEATS, log
    )


def _full_rows(log: Callable[[str], None]) -> list[dict[str, Any]]:
    from ..smollm2 import find_smollm2, load_smollm2

    book = load_book_checkpoint()
    evaluate = text_evaluator(book.tokenizer, _held_out_text(), book.model.config.context_length)
    how = (
        "the whole held-out split, in sequences of the context length "
        "(the same sequences as sydsgpt.book.held_out)"
    )
    rows = measure_model("book-checkpoint", book.model, book.tokenizer, evaluate, how, log=log)
    try:
        path = find_smollm2()
    except FileNotFoundError as exc:
        log(f"SmolLM2 rows skipped: {exc}")
        return rows
    model, tokenizer = load_smollm2(path, context_length=SMOLLM2_SEQ_LEN)
    evaluate = text_evaluator(
        tokenizer, _held_out_text(), SMOLLM2_SEQ_LEN, SMOLLM2_EVAL_TOKENS, SMOLLM2_BATCH
    )
    how = (
        f"the first {SMOLLM2_EVAL_TOKENS} tokens of the held-out split, in sequences of "
        f"{SMOLLM2_SEQ_LEN} (not the whole split: a few minutes per row)"
    )
    rows += measure_model("smollm2-135m-instruct", model, tokenizer, evaluate, how, log=log)
    return rows


def run(
    out: str | Path | None = None, quick: bool = False, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure every row, print the table, write the JSON to ``out``; returns the payload."""
    load_before = os.getloadavg()
    rows = _quick_rows(log) if quick else _full_rows(log)
    extra = {
        "quick": quick,
        "threads": torch.get_num_threads(),
        "memory": memory_method("cpu"),
        "prompt": PROMPT,
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
    }
    return report(rows, COLUMNS, out, "quantization", log, **extra)
