"""Chapter 7: RMSNorm, the normalisation of Llama, Qwen, Gemma and OLMo.

Chapter 3's :class:`~sydsgpt.blocks.LayerNorm` subtracts each token's mean, divides by
its standard deviation, then scales and shifts. **RMSNorm** keeps only the division:
it divides each token by the root mean square of its features and multiplies by a
learned scale; no mean, no shift:

``y = x / sqrt(mean(x^2) + eps) * scale``

:func:`sydsgpt.blocks.make_norm` builds the norm a config names (``"layernorm"`` or
``"rmsnorm"``, registered in :data:`sydsgpt.config.NORMS`). Shapes: ``(..., d) -> (..., d)``, each
token (last dimension) on its own.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SydsGPTConfig, register
from .validation import check_features


@register("norm", "rmsnorm")
class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned per-feature ``scale`` (starts at 1).

    The mean of squares is computed in float32 whatever the input dtype (as Llama and
    Qwen3 do), and the result is cast back before the scale is applied.

    Args:
        emb_dim: features per token ``d``; ``scale`` has shape ``(d,)``.
        eps: added to the mean of squares so an all-zero token does not divide by zero.
    """

    def __init__(self, emb_dim: int, eps: float = SydsGPTConfig.norm_eps) -> None:
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(emb_dim))

    @classmethod
    def from_config(cls, config: SydsGPTConfig) -> RMSNorm:
        """An RMSNorm over the model's ``embedding_dim`` features."""
        return cls(config.embedding_dim, config.norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., d) -> (..., d)``."""
        check_features(x, self.scale.shape[0], "RMSNorm")
        x32 = x.float()
        mean_square = x32.pow(2).mean(dim=-1, keepdim=True)  # (..., 1)
        normalised = x32 * torch.rsqrt(mean_square + self.eps)
        return self.scale * normalised.to(x.dtype)
