"""Chapter 7: the SwiGLU feed-forward network of Llama and Qwen3.

GPT-2's feed-forward (chapter 3) is ``down(GELU(up(x)))``. SwiGLU adds a third matrix,
a **gate**: ``down(SiLU(gate(x)) * up(x))``. Each hidden feature is the product of
two projections of the token, one of them squashed by ``SiLU(z) = z * sigmoid(z)``,
so the network can switch features on and off multiplicatively.

With three matrices instead of two, a SwiGLU of hidden width ``h`` has ``3 d h``
weights; :func:`swiglu_hidden_dim` picks ``h`` so that this matches GPT-2's
``2 d (4d)`` (``h = 8d/3``, rounded up to a multiple of 8). Shapes:
``(B, T, d) -> (B, T, h) -> (B, T, d)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import SydsGPTConfig, register


def swiglu_hidden_dim(emb_dim: int, multiple_of: int = 8) -> int:
    """The hidden width whose ``3 d h`` weights match GELU's
    ``8 d^2``: ``8d/3``, rounded up to ``multiple_of``."""
    h = (8 * emb_dim + 2) // 3  # ceil(8d / 3)
    return (h + multiple_of - 1) // multiple_of * multiple_of


@register("ffn", "swiglu")
class SwiGLUFeedForward(nn.Module):
    """``down(SiLU(gate(x)) * up(x))``, token by token.

    Args:
        emb_dim: features per token ``d``.
        hidden_dim: width ``h`` of the gate and up projections.
        bias: give the three linear layers a bias (Llama and Qwen3 have none).
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.gate_projection = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.up_projection = nn.Linear(emb_dim, hidden_dim, bias=bias)
        self.down_projection = nn.Linear(hidden_dim, emb_dim, bias=bias)

    default_hidden_dim = staticmethod(swiglu_hidden_dim)

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> SwiGLUFeedForward:
        """The SwiGLU network of a model with ``config``."""
        return cls(config.embedding_dim, config.ffn_hidden_size, config.linear_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, d) -> (B, T, d)``."""
        hidden = F.silu(self.gate_projection(x)) * self.up_projection(x)  # (B, T, h)
        return self.down_projection(hidden)
