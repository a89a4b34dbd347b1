"""Where the time goes (appendix: Making it fast): a training step and a decode step under
``torch.profiler``, the CPU's matrix-product peak beside them, and the package's training step
against a plain reference formulation of the same model.

- :func:`profile_training`: one optimizer step of a model, split into phases (``data``,
  ``forward``, ``backward``, ``optimizer``) and, inside the forward and backward passes, into
  kinds of work (:data:`KINDS`: matrix products, attention, norms, embedding and loss, the
  rest), from the profiler's *self* time of every operation;
- :func:`profile_decoding`: the steps of greedy decoding with the KV cache, split the same
  way, with the time no operation accounts for (Python, dispatch) as its own row;
- :func:`run` also races the package's training step against
  :class:`~sydsgpt.bench.reference.ReferenceGPT`, the same model written the compact way
  (:mod:`sydsgpt.bench.reference`).

Run it with ``sydsgpt bench --what profile`` (about a minute; ``--quick``: seconds).
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import replace
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

from ..model import SydsGPT, flops_per_token
from ..optim import build_optimizer
from ..train import TrainConfig
from .peaks import measure_matmul_peak
from .reference import compare_reference

PHASES = ("data", "forward", "backward", "optimizer")
"""The phases of a training step, in order."""
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("embedding and loss", ("embedding", "cross_entropy", "log_softmax", "nll_loss")),
    ("attention", ("scaled_dot_product", "flash_attention", "softmax", "masked_fill")),
    ("norms", ("layer_norm", "rms_norm")),
    ("dropout masks", ("bernoulli", "dropout")),
)
"""Kinds of work, each a list of pieces of operation names (the first kind whose piece is in
an operation's name takes it); anything else is "elementwise and other"."""
OTHER = "elementwise and other"
UNACCOUNTED = "outside operations"
"""Wall time no profiled operation covers: Python, dispatch, waiting."""


def kind_of(op_name: str) -> str:
    """The kind of work (:data:`KINDS`) an operation's name belongs to."""
    for kind, pieces in KINDS:
        if any(piece in op_name for piece in pieces):
            return kind
    return OTHER


def _phase_of(event: Any) -> str | None:
    """The ``phase:NAME`` range an event ran inside (its nearest such ancestor), or None."""
    while event is not None:
        if event.name.startswith("phase:"):
            return event.name[len("phase:") :]
        event = event.cpu_parent
    return None


def _operations(events: Any) -> Any:
    """The profiled operations that took self time (the ``phase:`` ranges left out)."""
    return (e for e in events if not e.name.startswith("phase:") and e.self_cpu_time_total > 0)


def _self_ms(events: Any, steps: int) -> dict[tuple[str | None, str], float]:
    """Self CPU milliseconds per step of every ``(phase, kind)`` of the profiled events."""
    totals: dict[tuple[str | None, str], float] = defaultdict(float)
    for event in _operations(events):
        totals[(_phase_of(event), kind_of(event.name))] += event.self_cpu_time_total / 1e3 / steps
    return totals


def _top_operations(events: Any, steps: int, count: int = 10) -> list[dict[str, Any]]:
    """The ``count`` operations with the most self time per step: ``{"op", "kind", "ms",
    "calls"}`` (calls per step)."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in _operations(events):
        totals[event.name][0] += event.self_cpu_time_total / 1e3 / steps
        totals[event.name][1] += 1 / steps
    ranked = sorted(totals.items(), key=lambda item: -item[1][0])[:count]
    return [
        {"op": name, "kind": kind_of(name), "ms": round(ms, 2), "calls": round(calls, 1)}
        for name, (ms, calls) in ranked
    ]


def _rows(totals: Mapping[tuple[str | None, str], float], wall_ms: float) -> list[dict[str, Any]]:
    """``[{"phase", "kind", "ms", "share"}]``, largest first, plus the unaccounted time."""
    rows = [
        {"phase": phase or "-", "kind": kind, "ms": round(ms, 2)}
        for (phase, kind), ms in sorted(totals.items(), key=lambda item: -item[1])
        if ms >= 0.005
    ]
    rows.append(
        {
            "phase": "-",
            "kind": UNACCOUNTED,
            "ms": round(max(0.0, wall_ms - sum(totals.values())), 2),
        }
    )
    for row in rows:
        row["share"] = round(row["ms"] / wall_ms, 4)
    return rows


def profile_training(
    model: nn.Module,
    cfg: TrainConfig,
    batches: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    steps: int = 3,
    warmup: int = 2,
) -> dict[str, Any]:
    """Profile ``steps`` optimizer steps (after ``warmup`` untimed ones) of ``model`` with
    ``cfg``'s optimizer; ``batches()`` gives the next ``(inputs, targets)``.

    Returns ``{"step_ms"`` (wall time per step, measured without the profiler), ``"phases"``
    (ms per step of each phase of :data:`PHASES`, from the profiler), ``"rows"`` (per phase
    and kind of work, :func:`_rows`)``}``.
    """
    optimizer = build_optimizer(model, cfg, "cpu")
    model.train()

    def step() -> None:
        with record_function("phase:data"):
            x, y = batches()
        with record_function("phase:forward"):
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        with record_function("phase:backward"):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        with record_function("phase:optimizer"):
            optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    wall_ms = statistics.median(times) * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = prof.events()
    phases = {
        name: round(
            sum(e.cpu_time_total for e in events if e.name == f"phase:{name}") / 1e3 / steps, 2
        )
        for name in PHASES
    }
    return {
        "step_ms": round(wall_ms, 2),
        "phases": phases,
        "rows": _rows(_self_ms(events, steps), wall_ms),
        "top_operations": _top_operations(events, steps),
    }


@torch.no_grad()
def profile_decoding(
    model: nn.Module, prompt: torch.Tensor, new_tokens: int = 32
) -> dict[str, Any]:
    """Profile greedy decoding of ``new_tokens`` tokens after ``prompt`` (``(1, T)``) with
    the KV cache; only the steps after the prompt's are counted.

    Returns ``{"token_ms"`` (wall ms per new token, without the profiler), ``"rows"``,
    ``"weight_mb"`` (the float32 weights a step reads), ``"weight_gb_per_s"`` (those bytes
    over the step's time)``}``.
    """
    from ..generate import next_token_logits

    model.eval()
    context = model.config.context_length

    def decode() -> float:
        """Decode after a fresh prefill; the seconds per new token."""
        cache = model.make_kv_cache(True)
        logits = next_token_logits(model, prompt, context, cache)  # the prompt's pass
        ids = prompt
        start = time.perf_counter()
        for _ in range(new_tokens):
            with record_function("phase:decode"):
                ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
                logits = next_token_logits(model, ids, context, cache)
        return (time.perf_counter() - start) / new_tokens

    decode()  # warm-up
    token_ms = statistics.median(decode() for _ in range(3)) * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        decode()
    events = [e for e in prof.events() if _phase_of(e) == "decode"]
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "token_ms": round(token_ms, 3),
        "rows": _rows(_self_ms(events, new_tokens), token_ms),
        "top_operations": _top_operations(events, new_tokens),
        "weight_mb": round(weight_bytes / 1e6, 2),
        "weight_gb_per_s": round(weight_bytes / (token_ms / 1e3) / 1e9, 2),
    }


def run(quick: bool = False, out: Any = None, log: Any = print) -> dict[str, Any]:
    """Profile record 0's training step (the first book checkpoint's run: its model, batch and
    AdamW, on Tiny Shakespeare; GPT-2 blocks, the shape the reference formulation shares) and
    the book checkpoint's decoding; measure the matmul peak, the step's MFU and the package's
    step against :class:`~sydsgpt.bench.reference.ReferenceGPT` at the same shape."""
    import os

    from ..book import book_tokenizer, load_book_checkpoint
    from ..corpora import load_corpus
    from ..data import make_loaders
    from ..presets import RUNS, get_preset
    from .common import format_table, report
    from .modern import quick_setup

    spec = RUNS["record-0"]
    load_before = os.getloadavg()[0]
    if quick:
        text, tokenizer, config = quick_setup(spec.preset)
        cfg = replace(spec.train, batch_size=2, seq_len=16)
    else:
        text, tokenizer = load_corpus(spec.corpus), book_tokenizer(run=spec)
        config, cfg = get_preset(spec.preset), spec.train
    config = {**config, "vocab_size": tokenizer.n_vocab}
    seq_len = cfg.seq_len or config["context_length"]
    loader = make_loaders(text, tokenizer, seq_len, cfg.batch_size, spec.val_fraction)[0]
    iterator = iter(loader)

    def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal iterator
        try:
            return next(iterator)
        except StopIteration:
            iterator = iter(loader)
            return next(iterator)

    torch.manual_seed(cfg.seed)
    training = profile_training(SydsGPT(config), cfg, next_batch, steps=2 if quick else 3)
    peak = measure_matmul_peak(256 if quick else 2048)
    tokens_per_s = cfg.batch_size * seq_len / (training["step_ms"] / 1e3)
    flops = flops_per_token(config, seq_len=seq_len, training=True)
    training.update(
        tokens_per_s=round(tokens_per_s, 1),
        flops_per_token=flops,
        mfu=round(tokens_per_s * flops / peak, 4),
    )
    if quick:
        decoder = SydsGPT(config)
        prompt = torch.tensor([tokenizer.encode("I")])
    else:
        book = load_book_checkpoint()
        decoder, prompt = book.model, torch.tensor([book.tokenizer.encode("ROMEO:")])
    decoding = profile_decoding(decoder, prompt, new_tokens=4 if quick else 32)
    gpt2_blocks = {
        **config,
        "norm": "layernorm",
        "ffn": "gelu",
        "positions": "learned",
        "ffn_hidden_dim": None,
        "num_kv_heads": None,
        "qk_norm": False,
    }
    reference = compare_reference(
        gpt2_blocks,
        cfg.batch_size,
        seq_len,
        rounds=2 if quick else 10,
        steps_per_round=1 if quick else 3,
        warmup=1 if quick else 6,
    )
    if log:
        log(f"training step: {training['step_ms']:.0f} ms, MFU {training['mfu']:.1%}")
        log(format_table(training["rows"]))
        log(f"decode step: {decoding['token_ms']:.2f} ms per token")
        log(format_table(decoding["rows"]))
        log(f"package vs reference: x{reference['ratio']:.3f} +- {reference['ratio_interval']:.3f}")
    return report(
        training["rows"],
        None,
        out,
        "profile",
        log=None,
        model=config,
        batch_size=cfg.batch_size,
        seq_len=seq_len,
        optimizer=cfg.optimizer,
        training=training,
        decoding=decoding,
        matmul_peak_flops=round(peak),
        reference=reference,
        reference_model=gpt2_blocks,
        load_before=round(load_before, 2),
        load_after=round(os.getloadavg()[0], 2),
        quick=quick,
        torch_threads=torch.get_num_threads(),
    )
