"""The yardstick for the package's training step (appendix: Making it fast): the same GPT-2
block model written the way most compact PyTorch GPTs write it, and an interleaved race
between the two.

- :class:`ReferenceGPT`: one fused Q/K/V layer, PyTorch's fused attention, ``nn.LayerNorm``,
  ``F.gelu``; the same parameters as the package's model;
- :func:`compare_reference`: both trained step for step on the same batches with the same
  AdamW, interleaved; the ratio of their speeds with a 95% interval.

:func:`sydsgpt.bench.profile.run` reports it beside the profile.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..model import SydsGPT, count_parameters
from ..optim import build_optimizer
from ..train import StepOptions, TrainConfig, train_step
from .common import interval


class _ReferenceBlock(nn.Module):
    """A GPT-2 block in the compact formulation: pre-norm attention and MLP, each added
    back to the residual stream."""

    def __init__(self, d: int, heads: int, qkv_bias: bool, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=qkv_bias)
        self.proj = nn.Linear(d, d, bias=bias)
        self.up, self.down = nn.Linear(d, 4 * d, bias=bias), nn.Linear(4 * d, d, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            t.view(B, T, self.heads, C // self.heads).transpose(1, 2)
            for t in self.qkv(self.norm1(x)).split(C, dim=2)
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(B, T, C))
        return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class ReferenceGPT(nn.Module):
    """The package's GPT-2 block model (learned positions, LayerNorm, GELU, tied head),
    written the compact way: the yardstick for the package's training step.

    Built from a SydsGPT config with ``norm="layernorm"``, ``ffn="gelu"`` and
    ``positions="learned"``; it has the same parameters as ``SydsGPT(config)`` (the same
    count; queries, keys and values stacked in one layer) and no dropout.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__()
        d, vocab = config["embedding_dim"], config["vocab_size"]
        self.tokens = nn.Embedding(vocab, d)
        self.positions = nn.Embedding(config["context_length"], d)
        bias = config.get("linear_bias", True)
        self.blocks = nn.ModuleList(
            _ReferenceBlock(d, config["num_heads"], config.get("qkv_bias", False), bias)
            for _ in range(config["num_layers"])
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if config.get("tie_weights", False):
            self.head.weight = self.tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def compare_reference(
    config: Mapping[str, Any],
    batch_size: int,
    seq_len: int,
    rounds: int = 10,
    steps_per_round: int = 3,
    seed: int = 0,
    warmup: int = 3,
) -> dict[str, Any]:
    """Train the package's model and :class:`ReferenceGPT` (same config, dropout 0, same
    AdamW settings) on the same random batches, in interleaved rounds of
    ``steps_per_round`` steps each (the median counts) after ``warmup`` untimed steps.

    Returns ``{"package_tokens_per_s", "reference_tokens_per_s"`` (median step),
    ``"ratio"`` (package speed over the reference's: the mean of the rounds' ratios),
    ``"ratio_interval"`` (its 95% half-width), ``"round_ratios", "parameters"}``.
    """
    config = {**config, "dropout": 0.0}
    torch.manual_seed(seed)
    package, reference = SydsGPT(config), ReferenceGPT(config)
    if count_parameters(package) != sum(p.numel() for p in reference.parameters()):
        raise ValueError("the reference does not have the package model's parameters")
    cfg = TrainConfig(lr=1e-3, device="cpu")
    optimizers = [build_optimizer(m, cfg, "cpu") for m in (package, reference)]
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(
        0, config["vocab_size"], (4, batch_size, seq_len + 1), generator=generator
    )
    batches = [(t[:, :-1], t[:, 1:]) for t in tokens]
    options = StepOptions(cfg.grad_clip, None, torch.device("cpu"))

    def timed(model: nn.Module, optimizer: torch.optim.Optimizer, i: int) -> float:
        start = time.perf_counter()
        train_step(model, [batches[i % len(batches)]], optimizer, options=options)
        return time.perf_counter() - start

    for model, optimizer in zip((package, reference), optimizers):
        for i in range(warmup):
            timed(model, optimizer, i)
    per_round: list[list[float]] = [[], []]
    for r in range(rounds):
        for which, (model, optimizer) in enumerate(zip((package, reference), optimizers)):
            per_round[which].append(
                statistics.median(timed(model, optimizer, r + s) for s in range(steps_per_round))
            )
    ratios = [ref / pkg for pkg, ref in zip(*per_round)]
    mean, half = interval(ratios)
    tokens_per_step = batch_size * seq_len
    return {
        "package_tokens_per_s": round(tokens_per_step / statistics.median(per_round[0]), 1),
        "reference_tokens_per_s": round(tokens_per_step / statistics.median(per_round[1]), 1),
        "ratio": round(mean, 4),
        "ratio_interval": round(half, 4),
        "round_ratios": [round(r, 4) for r in ratios],
        "parameters": count_parameters(package),
    }
