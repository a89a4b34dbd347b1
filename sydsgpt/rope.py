"""Chapter 7: rotary position embeddings (RoPE).

GPT-2 adds a learned vector to each token for its position (chapter 4). RoPE instead
*rotates* the queries and keys inside attention: the head's ``D`` features form
``D / 2`` pairs, and pair ``i`` of the token at position ``m`` is turned by the angle
``m * theta_i``, with one frequency per pair,

``theta_i = base ** (-2 i / D)``,  ``i = 0 .. D/2 - 1``

(``base`` is the config's ``rope_theta``: 10,000 in the RoPE paper, 500,000 in Llama 3,
1,000,000 in Qwen3). A dot product of two rotated vectors depends only on the
difference of their angles, so an attention score depends on how far apart two tokens
are, not on where they sit.

Which features form a pair is a convention. Here, as in Llama and Qwen3 checkpoints,
pair ``i`` is ``(x[i], x[i + D/2])`` (the "rotate half" layout), so their weights load
unchanged. Shapes: ``B`` batch, ``H`` heads, ``T`` tokens, ``D`` head dimension.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from .config import LLAMA3_SCALING_KEYS

RopeTables = tuple[torch.Tensor, torch.Tensor]
"""``(cos, sin)``, each ``(T, D)``: the rotation for
``T`` positions, both halves of a pair alike."""


def rope_frequencies(
    head_dim: int, base: float = 10000.0, scaling: Mapping[str, Any] | None = None
) -> torch.Tensor:
    """The ``D / 2`` angular frequencies ``theta_i = base ** (-2 i / D)``, float32.

    ``scaling`` (Llama 3.1 / 3.2's ``"llama3"`` rope scaling: ``factor``,
    ``low_freq_factor``, ``high_freq_factor``, ``original_context_length``) slows the
    low frequencies down: wavelengths longer than ``original_context_length /
    low_freq_factor`` are divided by ``factor``, those shorter than
    ``original_context_length / high_freq_factor`` are kept, and the ones between are
    blended smoothly.

    Returns:
        ``(D / 2,)`` float32 tensor, the fastest pair (``i = 0``, one radian per position) first.
    """
    if head_dim % 2:
        raise ValueError(
            f"RoPE rotates pairs of features, so head_dim must be even, got {head_dim}"
        )
    exponents = (
        torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    )  # 2i / D
    freqs = 1.0 / (base**exponents)
    if scaling is None:
        return freqs
    factor, low, high, original = (float(scaling[k]) for k in LLAMA3_SCALING_KEYS)
    wavelength = 2 * math.pi / freqs
    scaled = torch.where(
        wavelength > original / low, freqs / factor, freqs
    )  # long waves: slowed down
    blend = (original / wavelength - low) / (
        high - low
    )  # 0 at the long end of the band, 1 at the short end
    smoothed = (1 - blend) * scaled / factor + blend * scaled
    in_band = (wavelength >= original / high) & (wavelength <= original / low)
    return torch.where(in_band, smoothed, scaled)


def rope_tables(positions: torch.Tensor, freqs: torch.Tensor) -> RopeTables:
    """``cos`` and ``sin`` of the angles ``position * theta_i``, laid out for :func:`apply_rope`.

    Args:
        positions: ``(T,)`` integer positions (they continue after a KV cache's tokens).
        freqs: ``(D / 2,)`` from :func:`rope_frequencies`.

    Returns:
        ``(cos, sin)``, each ``(T, D)`` float32: the ``D / 2`` angles repeated for the second half.
    """
    angles = positions.float()[:, None] * freqs.float()[None, :]  # (T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, D): feature i and i + D/2 turn together
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``(..., D) -> (..., D)``: ``[x1, x2] -> [-x2, x1]`` with ``x1, x2`` the two halves.

    For a pair ``(a, b) = (x[i], x[i + D/2])`` this gives ``(-b, a)``: the pair turned a
    quarter turn, so ``x * cos + rotate_half(x) * sin`` turns it by any angle.
    """
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate every pair of ``x`` by its position's angle.

    Args:
        x: ``(B, H, T, D)`` queries or keys.
        tables: ``(cos, sin)``, each ``(T, D)``, from :func:`rope_tables`.

    Returns:
        ``(B, H, T, D)``, the same dtype as ``x``; the norm of every pair is unchanged.
    """
    cos, sin = tables
    if cos.shape != (x.shape[-2], x.shape[-1]):
        raise ValueError(
            f"RoPE tables of shape {tuple(cos.shape)} do not fit queries/keys of shape "
            f"{tuple(x.shape)}: expected ({x.shape[-2]}, {x.shape[-1]}) (one row per token, one "
            "column per feature)"
        )
    rotated = x * cos + rotate_half(x) * sin  # a pair (a, b) -> (a cos - b sin, b cos + a sin)
    return rotated.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """The model's RoPE: holds the frequencies, makes the tables for a range of positions.

    The model calls it once per forward pass and hands the same tables to every layer.
    The frequencies follow from the config, so they are not a buffer: they are not saved
    in the state dict and stay float32 when the model is cast to bfloat16 (a bfloat16
    angle ``m * theta`` would be off by whole radians at large positions).

    Args:
        head_dim: features per head ``D`` (even).
        base: ``rope_theta``.
        scaling: Llama 3's rope scaling, or ``None`` (see :func:`rope_frequencies`).
    """

    def __init__(
        self, head_dim: int, base: float = 10000.0, scaling: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.freqs = rope_frequencies(head_dim, base, scaling)  # (D/2,) float32, on the CPU

    def forward(self, positions: torch.Tensor) -> RopeTables:
        """``(T,)`` positions -> ``(cos, sin)``, each
        ``(T, D)`` float32, on the positions' device."""
        if self.freqs.device != positions.device:
            self.freqs = self.freqs.to(positions.device)
        return rope_tables(positions, self.freqs)
