"""Chapter 3: the transformer block.

Layer normalisation, the GELU activation, the position-wise feed-forward network,
and the pre-norm transformer block that joins them to attention with residual
connections. Shapes: ``(B, T, d) -> (B, T, d)`` throughout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionImpl, KVCache, MultiHeadAttention


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

    def __init__(self, emb_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d) -> (..., d)``: each token (last dimension) is normalised on its own."""
        if x.shape[-1] != self.scale.shape[0]:
            raise ValueError(
                f"LayerNorm was built for {self.scale.shape[0]} features per token but the input's last "
                f"dimension is {x.shape[-1]} (shape {tuple(x.shape)}); build it with LayerNorm({x.shape[-1]})."
            )
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


class GELU(nn.Module):
    """GELU, tanh approximation (as GPT-2 uses): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise, any shape."""
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """Position-wise MLP: ``d -> 4d -> GELU -> d``. Shapes ``(B, T, d) -> (B, T, d)``."""

    def __init__(self, emb_dim: int, hidden_mult: int = 4) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, hidden_mult * emb_dim),
            GELU(),
            nn.Linear(hidden_mult * emb_dim, emb_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d) -> (B, T, 4d) -> (B, T, d)``, each token independently."""
        return self.layers(x)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + dropout(attention(layer_norm1(x)))`` then ``x + dropout(feed_forward(layer_norm2(x)))``.

    Args:
        emb_dim: features per token ``d``.
        context_length: longest sequence accepted.
        num_heads: attention heads (must divide ``emb_dim``).
        dropout: dropout on attention weights and on both residual branches.
        qkv_bias: bias in the query/key/value projections.
        attention: attention implementation, ``"explicit"`` or ``"sdpa"``.
        fused_qkv: one matrix product for Q, K and V.
    """

    def __init__(
        self,
        emb_dim: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        attention: AttentionImpl = "sdpa",
        fused_qkv: bool = True,
    ) -> None:
        super().__init__()
        self.layer_norm1 = LayerNorm(emb_dim)
        self.attention = MultiHeadAttention(
            emb_dim, emb_dim, context_length, num_heads, dropout, qkv_bias, impl=attention, fused_qkv=fused_qkv
        )
        self.layer_norm2 = LayerNorm(emb_dim)
        self.feed_forward = FeedForward(emb_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """``(B, T, d) -> (B, T, d)``."""
        x = x + self.dropout(self.attention(self.layer_norm1(x), kv_cache=kv_cache))
        x = x + self.dropout(self.feed_forward(self.layer_norm2(x)))
        return x
