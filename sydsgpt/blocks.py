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
from .norms import RMSNorm
from .rope import RopeTables
from .swiglu import SwiGLUFeedForward, swiglu_hidden_dim
from .validation import check_features

NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")


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
        check_features(x, self.scale.shape[0], "LayerNorm")
        return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)


def make_norm(kind: str, emb_dim: int, eps: float = 1e-5) -> nn.Module:
    """The norm a config names: ``"layernorm"`` (GPT-2, this chapter) or ``"rmsnorm"`` (chapter 7)."""
    if kind == "layernorm":
        return LayerNorm(emb_dim, eps)
    if kind == "rmsnorm":
        return RMSNorm(emb_dim, eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class GELU(nn.Module):
    """GELU, tanh approximation (as GPT-2 uses): ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise, any shape."""
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


class FeedForward(nn.Module):
    """Position-wise MLP: ``d -> 4d -> GELU -> d``. Shapes ``(B, T, d) -> (B, T, d)``.

    ``hidden_dim`` (default ``hidden_mult * d``) and ``bias`` are chapter 7's switches.
    """

    def __init__(self, emb_dim: int, hidden_mult: int = 4, hidden_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        hidden = hidden_mult * emb_dim if hidden_dim is None else hidden_dim
        self.layers = nn.Sequential(
            nn.Linear(emb_dim, hidden, bias=bias),
            GELU(),
            nn.Linear(hidden, emb_dim, bias=bias),
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

    Chapter 7's switches (defaults: GPT-2's block): ``norm`` (``"layernorm"`` or
    ``"rmsnorm"``) and ``norm_eps``; ``ffn`` (``"gelu"`` or ``"swiglu"``) and its
    ``ffn_hidden_dim`` (``None``: ``4 d`` for GELU, ``8d/3`` for SwiGLU); ``linear_bias`` (output projection and
    feed-forward biases); ``num_kv_heads``, ``head_dim``, ``qk_norm``: see
    :class:`~sydsgpt.attention.MultiHeadAttention`.
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
        # later: chapter 7's switches: norm, feed-forward, biases, attention variants
        *,
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        ffn: str = "gelu",
        ffn_hidden_dim: int | None = None,
        linear_bias: bool = True,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        # endlater
    ) -> None:
        super().__init__()
        # The attribute names stay layer_norm1/2 whichever norm they hold (the state dict keeps its names).
        self.layer_norm1 = make_norm(norm, emb_dim, norm_eps)
        self.attention = MultiHeadAttention(
            emb_dim, emb_dim, context_length, num_heads, dropout, qkv_bias, impl=attention, fused_qkv=fused_qkv,
            # later: chapter 7's attention switches
            num_kv_heads=num_kv_heads, head_dim=head_dim, qk_norm=qk_norm, output_bias=linear_bias, norm_eps=norm_eps,
            # endlater
        )
        self.layer_norm2 = make_norm(norm, emb_dim, norm_eps)
        if ffn == "gelu":
            self.feed_forward: nn.Module = FeedForward(emb_dim, hidden_dim=ffn_hidden_dim, bias=linear_bias)
        # later: the SwiGLU feed-forward network (chapter 7)
        elif ffn == "swiglu":
            hidden = swiglu_hidden_dim(emb_dim) if ffn_hidden_dim is None else ffn_hidden_dim
            self.feed_forward = SwiGLUFeedForward(emb_dim, hidden, bias=linear_bias)
        else:
            raise ValueError(f"ffn must be 'gelu' or 'swiglu', got {ffn!r}")
        # endlater
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, rope: RopeTables | None = None) -> torch.Tensor:
        """``(B, T, d) -> (B, T, d)``; ``rope``: the RoPE tables of the T tokens' positions (chapter 7)."""
        x = x + self.dropout(self.attention(self.layer_norm1(x), kv_cache=kv_cache, rope=rope))
        x = x + self.dropout(self.feed_forward(self.layer_norm2(x)))
        return x
