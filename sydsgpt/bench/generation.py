"""Benchmark: generation speed with and without the KV cache (chapter 6).

GPT-2-small architecture with random weights, eval mode, float32, an 8-token prompt,
greedy decoding. For each number of new tokens it times :func:`sydsgpt.generate.generate`
with ``use_cache=False`` (the whole window goes through the model every step) and
``use_cache=True`` (one token per step), asserts both produce the same tokens, and
reports tokens per second, the speedup and memory.

Memory: ``*_peak_mib`` is the peak memory of each run above the level at its start, as
:class:`sydsgpt.bench.memory.PeakMemory` measures it (on Linux CPUs the peak resident set
size, on CUDA the peak of allocated tensors; the JSON's ``memory`` field says which);
``kv_cache_mib`` is the preallocated cache's size (:func:`sydsgpt.generate.kv_cache_bytes`).

With ``--transformers`` it also compares against Hugging Face ``transformers``:
the same weights go into both models (through :mod:`sydsgpt.gpt2_weights`), both run
greedy with their KV cache, the tokens are asserted equal and the speeds are measured in
turn in the same run (SydsGPT as built, and with :func:`sydsgpt.generate.use_decoding_layout`).

Run it with ``sydsgpt bench --what generate`` (50, 200 and 500 new tokens, ~20 min on 2 cores;
``--quick``: the small ``gpt2-mini`` model, seconds; ``--transformers``: the comparison).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from ..generate import generate, kv_cache_bytes, use_decoding_layout
from ..model import SydsGPT
from ..presets import get_preset
from .common import format_table, report
from .memory import PeakMemory, memory_method

QUICK_PRESET = "gpt2-mini"
QUICK_NEW_TOKENS = (20, 100)
COLUMNS = [
    "new_tokens",
    "uncached_tok_s",
    "cached_tok_s",
    "speedup",
    "same_tokens",
    "uncached_peak_mib",
    "cached_peak_mib",
    "kv_cache_mib",
]
HF_COLUMNS = [
    "new_tokens",
    "sydsgpt_tok_s",
    "sydsgpt_decoding_layout_tok_s",
    "transformers_tok_s",
    "sydsgpt_vs_transformers",
    "decoding_layout_vs_transformers",
    "same_tokens",
    "sydsgpt_peak_mib",
    "sydsgpt_decoding_layout_peak_mib",
    "transformers_peak_mib",
]
MIB = 2**20


def _timed(
    fn: Callable[[], torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, float, PeakMemory]:
    """``fn()``'s result, its wall-clock seconds and its peak memory."""
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with PeakMemory(device) as memory:
        if sync:
            sync()
        start = time.perf_counter()
        out = fn()
        if sync:
            sync()
        seconds = time.perf_counter() - start
    return out, seconds, memory


def build_model(preset: str = "gpt2-small", device: str = "cpu", seed: int = 0) -> SydsGPT:
    """The preset's architecture with random weights, float32, eval mode."""
    torch.manual_seed(seed)
    return SydsGPT(get_preset(preset)).to(device).eval()


def _prompt(model: SydsGPT, prompt_tokens: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_tokens), generator=gen)
    return ids.to(next(model.parameters()).device)


def run(
    new_tokens: Sequence[int] = (50, 200, 500),
    preset: str = "gpt2-small",
    prompt_tokens: int = 8,
    device: str = "cpu",
    seed: int = 0,
    preallocate: bool = True,
    model: SydsGPT | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """Tokens/s of greedy generation without and with the KV cache, one row per length.

    Raises ``AssertionError`` if the two paths produce different tokens.
    """
    model = model if model is not None else build_model(preset, device, seed)
    ids = _prompt(model, prompt_tokens, seed)
    generate(model, ids, 4, use_cache=True)  # warm-up: first calls allocate and pick kernels
    generate(model, ids, 4, use_cache=False)
    rows = []
    for n in new_tokens:
        if prompt_tokens + n > model.config.context_length:
            raise ValueError(
                f"{prompt_tokens} + {n} tokens exceed the context of "
                f"{model.config.context_length}: past it the cached path re-reads the whole window "
                "every step, which is not what this benchmark measures."
            )
        uncached, t_uncached, mem_uncached = _timed(
            lambda: generate(model, ids, n, use_cache=False), ids.device
        )
        cached, t_cached, mem_cached = _timed(
            lambda: generate(model, ids, n, use_cache=True, preallocate=preallocate), ids.device
        )
        same = torch.equal(uncached, cached)
        assert same, (
            f"{n} new tokens: the cached and uncached paths disagree; the KV cache is broken"
        )
        row = {
            "preset": preset,
            "device": str(ids.device),
            "prompt_tokens": prompt_tokens,
            "new_tokens": n,
            "uncached_s": t_uncached,
            "cached_s": t_cached,
            "uncached_tok_s": n / t_uncached,
            "cached_tok_s": n / t_cached,
            "speedup": t_uncached / t_cached,
            "same_tokens": same,
            "uncached_peak_mib": mem_uncached.peak_bytes / MIB,
            "cached_peak_mib": mem_cached.peak_bytes / MIB,
            "kv_cache_mib": kv_cache_bytes(
                model.config, model.config.context_length if preallocate else prompt_tokens + n
            )
            / MIB,
        }
        rows.append(row)
        if verbose:
            print(
                f"  {n} new tokens: {row['uncached_tok_s']:.1f} tok/s uncached, "
                f"{row['cached_tok_s']:.1f} cached, x{row['speedup']:.1f}",
                flush=True,
            )
    return rows


def compare_with_transformers(
    new_tokens: Sequence[int] = (50, 200),
    preset: str = "gpt2-small",
    prompt_tokens: int = 8,
    device: str = "cpu",
    seed: int = 0,
    model: SydsGPT | None = None,
    repeats: int = 5,
) -> list[dict[str, Any]]:
    """Greedy tokens/s of SydsGPT and ``transformers.GPT2LMHeadModel.generate``, both with
    their KV cache, on the same weights; asserts all produce the same tokens.

    SydsGPT runs twice: as built (``nn.Linear``'s usual row-major weights) and after
    :func:`sydsgpt.generate.use_decoding_layout` (the weights stored transposed, as
    GPT-2's ``Conv1D`` stores them). The three are timed in turn, ``repeats`` times, so
    that a slow patch of the machine hits all of them; each row gives the median tokens/s,
    the median of the per-round speed ratios, and the largest peak memory of any round.
    """
    from transformers import GPT2LMHeadModel

    from ..gpt2_weights import export_gpt2_weights

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    model = model if model is not None else build_model(preset, device, seed)
    with tempfile.TemporaryDirectory() as folder:
        export_gpt2_weights(model, folder)
        hf = GPT2LMHeadModel.from_pretrained(folder).to(device).eval()
    transposed = use_decoding_layout(copy.deepcopy(model).eval())
    ids = _prompt(model, prompt_tokens, seed)

    def hf_generate(n: int) -> torch.Tensor:
        with torch.no_grad():
            return hf.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                do_sample=False,
                use_cache=True,
                eos_token_id=None,
                pad_token_id=0,
            )

    contenders: dict[str, Callable[[int], torch.Tensor]] = {
        "sydsgpt": lambda n: generate(model, ids, n, use_cache=True),
        "sydsgpt_decoding_layout": lambda n: generate(transposed, ids, n, use_cache=True),
        "transformers": hf_generate,
    }
    for run_one in contenders.values():
        run_one(4)  # warm-up
    rows = []
    for n in new_tokens:
        speed: dict[str, list[float]] = {name: [] for name in contenders}
        peak: dict[str, float] = {name: 0.0 for name in contenders}
        for round_index in range(repeats):
            tokens: dict[str, torch.Tensor] = {}
            for name, run_one in contenders.items():
                tokens[name], seconds, memory = _timed(lambda: run_one(n), ids.device)
                speed[name].append(n / seconds)
                peak[name] = max(peak[name], memory.peak_bytes / MIB)
            same = all(torch.equal(tokens["transformers"], out) for out in tokens.values())
            assert same, (
                f"{n} new tokens, round {round_index + 1}: SydsGPT and transformers generated "
                "different tokens"
            )
        ratio = {
            name: statistics.median(a / b for a, b in zip(speed[name], speed["transformers"]))
            for name in ("sydsgpt", "sydsgpt_decoding_layout")
        }
        rows.append(
            {
                "preset": preset,
                "device": str(ids.device),
                "new_tokens": n,
                "repeats": repeats,
                "sydsgpt_tok_s": statistics.median(speed["sydsgpt"]),
                "sydsgpt_decoding_layout_tok_s": statistics.median(
                    speed["sydsgpt_decoding_layout"]
                ),
                "transformers_tok_s": statistics.median(speed["transformers"]),
                "sydsgpt_vs_transformers": ratio["sydsgpt"],
                "decoding_layout_vs_transformers": ratio["sydsgpt_decoding_layout"],
                "same_tokens": same,
                "sydsgpt_peak_mib": peak["sydsgpt"],
                "sydsgpt_decoding_layout_peak_mib": peak["sydsgpt_decoding_layout"],
                "transformers_peak_mib": peak["transformers"],
            }
        )
    return rows


PROMPT_TOKENS = 8
"""The prompt length of :func:`benchmark`: short, so the timings are the new tokens'."""


def benchmark(
    new_tokens: Sequence[int] | None = None,
    preset: str | None = None,
    device: str = "cpu",
    quick: bool = False,
    transformers: bool = False,
    repeats: int = 5,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """The whole generation benchmark: :func:`run` (and :func:`compare_with_transformers` when
    ``transformers``), its tables printed and its JSON written to ``out`` (when given).

    ``quick``: the small ``gpt2-mini`` model and short lengths, a smoke test in seconds. The
    prompt is :data:`PROMPT_TOKENS` tokens long.
    """
    prompt_tokens = PROMPT_TOKENS
    preset = preset or (QUICK_PRESET if quick else "gpt2-small")
    new_tokens = list(new_tokens or (QUICK_NEW_TOKENS if quick else (50, 200, 500)))
    say = log or (lambda _msg: None)
    say(
        f"generation benchmark: {preset}, {device}, {torch.get_num_threads()} threads, prompt "
        f"{prompt_tokens} tokens, greedy"
    )
    model = build_model(preset, device)
    rows = run(new_tokens, preset, prompt_tokens, device, model=model, verbose=log is not None)
    extra: dict[str, Any] = {"memory": memory_method(device), "threads": torch.get_num_threads()}
    if transformers:
        hf_rows = compare_with_transformers(
            new_tokens, preset, prompt_tokens, device, model=model, repeats=repeats
        )
        say(format_table(hf_rows, HF_COLUMNS))
        extra["transformers"] = hf_rows
    return report(rows, COLUMNS, out, "generation", log, **extra)
