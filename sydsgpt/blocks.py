"""Chapter 3: the transformer block.

Layer normalisation, the GELU activation, the position-wise feed-forward network,
and the pre-norm transformer block that joins them to attention with residual
connections. Shapes: ``(B, T, d) -> (B, T, d)`` throughout.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import norms, swiglu  # noqa: F401  (chapter 7's layers register their names)
from .attention import KVCache
from .config import ATTENTIONS, FEED_FORWARDS, NORMS, Kernels, SydsGPTConfig, register
from .rope import RopeTables
from .validation import check_features


@register("norm", "layernorm")
class LayerNorm(nn.Module):
    """Normalise each token's features to mean 0, variance 1, then scale and shift.

    ``y = (x - mean) / sqrt(var + eps) * scale + shift`` with the biased variance (divide
    by ``d``, not ``d - 1``), as :class:`torch.nn.LayerNorm` computes it.

    Chapter 3 computes this formula step by step; here PyTorch's fused ``F.layer_norm``
    evaluates it: one kernel, instead of the eight (mean, variance, subtract, add, square
    root, divide, multiply, add) that writing it out costs for every token, which matters
    most when a generation step is a single token.

    Args:
        emb_dim: features per token ``d``; ``scale`` and ``shift`` have shape ``(d,)``.
        eps: added to the variance so a constant token does not divide by zero.
    """

    def __init__(self, emb_dim: int, eps: float = SydsGPTConfig.norm_eps) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> LayerNorm:
        """A layer norm over the model's ``embedding_dim`` features."""
        return cls(config.embedding_dim, config.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d) -> (..., d)``: each token (last dimension) is normalised on its own."""
        check_features(x, self.scale.shape[0], "LayerNorm")
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


def make_norm(config: SydsGPTConfig) -> nn.Module:
    """The norm ``config.norm`` names (``"layernorm"``: this chapter; ``"rmsnorm"``: chapter 7)."""
    return NORMS[config.norm].from_config(config)


class GELU(nn.Module):
    """GELU, tanh approximation (as GPT-2 uses):
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise, any shape."""
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


@register("ffn", "gelu")
class FeedForward(nn.Module):
    """Position-wise MLP: ``d -> 4d -> GELU -> d``. Shapes ``(B, T, d) -> (B, T, d)``.

    Args:
        emb_dim: features per token ``d``.
        hidden_dim: the hidden width; ``None``: :meth:`default_hidden_dim` (``4 d``).
        bias: biases in both linear layers (GPT-2 has them).
    """

    def __init__(self, emb_dim: int, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden = self.default_hidden_dim(emb_dim) if hidden_dim is None else hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, hidden, bias=bias),
            GELU(),
            nn.Linear(hidden, emb_dim, bias=bias),
        )

    @staticmethod
    def default_hidden_dim(emb_dim: int) -> int:
        """GPT-2's hidden width: four times the model's."""
        return 4 * emb_dim

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> FeedForward:
        """The feed-forward network of a model with ``config``."""
        return cls(config.embedding_dim, config.ffn_hidden_size, config.linear_bias)

    def use_kernels(self, kernels: Kernels) -> None:
        """Compute GELU as ``kernels.gelu`` says: chapter 3's formula (``"explicit"``) or
        PyTorch's kernel of the same function (``"fused"``). No weights change."""
        self.layers[1] = nn.GELU(approximate="tanh") if kernels.gelu == "fused" else GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d) -> (B, T, 4d) -> (B, T, d)``, each token independently."""
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + dropout(attention(norm1(x)))``, then
    ``x + dropout(feed_forward(norm2(x)))``. Shapes ``(B, T, d) -> (B, T, d)``.

    Every part is the one ``config`` names: GPT-2's layer norm, multi-head attention and
    GELU feed-forward by default; chapter 7's RMSNorm, grouped-query attention and SwiGLU
    when the config asks (the tables are in :mod:`sydsgpt.config`). ``kernels`` choose how
    attention and GELU are computed (appendix: making it fast).
    """

    def __init__(self, config: Mapping[str, Any], kernels: Kernels | None = None) -> None:
        super().__init__()
        config = SydsGPTConfig.from_dict(config)  # a dict or a SydsGPTConfig, checked
        # The names stay layer_norm1/2 whichever norm they hold (the state dict keeps its keys).
        self.layer_norm1 = make_norm(config)
        self.attention = ATTENTIONS[config.attention_type].from_config(config, kernels)
        self.layer_norm2 = make_norm(config)
        self.feed_forward = FEED_FORWARDS[config.ffn].from_config(config)
        if hasattr(self.feed_forward, "use_kernels"):  # how it computes (appendix)
            self.feed_forward.use_kernels(kernels or Kernels())
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, rope: RopeTables | None = None
    ) -> torch.Tensor:
        """``(B, T, d) -> (B, T, d)``; ``kv_cache`` (chapter 6) and ``rope`` (chapter 7) are
        handed to attention."""
        x = x + self.dropout(self.attention(self.layer_norm1(x), kv_cache=kv_cache, rope=rope))
        x = x + self.dropout(self.feed_forward(self.layer_norm2(x)))
        return x
