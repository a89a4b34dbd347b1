"""Chapter 2: attention.

Scaled dot-product attention, the causal mask, and multi-head attention.

Two code paths compute the same maths:

* ``"explicit"``: scores, scaling, causal mask, softmax, dropout, weighted sum,
  written out step by step exactly as the chapter derives them;
* ``"sdpa"``: PyTorch's fused :func:`torch.nn.functional.scaled_dot_product_attention`
  (a flash / memory-efficient kernel on GPU).

Shapes use ``B`` batch, ``T`` new tokens, ``S`` keys seen so far (``S = T`` without a
KV cache), ``H`` heads, ``D`` head dimension.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .config import Kernels, SydsGPTConfig, register
from .gqa import repeat_kv
from .norms import RMSNorm
from .rope import RopeTables, apply_rope
from .validation import check_positive_int, check_real


def causal_mask(
    num_queries: int, num_keys: int, device: torch.device | None = None
) -> torch.Tensor:
    """Boolean mask of the positions a query may **not** look at.

    Query ``i`` sits at absolute position ``num_keys - num_queries + i`` (the queries
    are the newest tokens), so it may attend to keys ``0 .. that position``.

    Example: ``causal_mask(3, 3)`` is ``[[F, T, T], [F, F, T], [F, F, F]]``; with two cached
    keys, ``causal_mask(1, 3)`` is ``[[F, F, F]]`` (the newest token sees everything).

    Returns:
        ``(num_queries, num_keys)`` bool tensor, ``True`` where attention is forbidden.
    """
    if num_queries > num_keys:
        raise ValueError(
            "causal_mask needs num_queries <= num_keys (the queries are the newest keys), got "
            f"num_queries={num_queries}, num_keys={num_keys}: the first queries would see no key "
            "at all."
        )
    offset = num_keys - num_queries
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).triu(
        diagonal=offset + 1
    )


def scaled_dot_product_attention(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    causal: bool = True,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: ``softmax(Q K^T / sqrt(d_k) + mask) V``.

    Args:
        queries: ``(..., T, D)``.
        keys: ``(..., S, D)``.
        values: ``(..., S, D)``.
        causal: hide keys that come after each query.
        dropout: applied to the attention weights (training only), or ``None``.

    Returns:
        ``(context, weights)``: context ``(..., T, D)`` and weights ``(..., T, S)``
        (each row of ``weights`` sums to 1, before dropout).
    """
    d_k = queries.shape[-1]
    scores = queries @ keys.transpose(-2, -1)  # (..., T, S)
    scores = scores / math.sqrt(d_k)
    if causal:
        mask = causal_mask(queries.shape[-2], keys.shape[-2], device=scores.device)
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = dropout(weights) if dropout is not None else weights
    return dropped @ values, weights


class KVCache:
    """Keys and values of one attention layer, kept between generation steps.

    With ``preallocate=True`` the buffers ``(B, H, max_len, D)`` are allocated once and
    filled in place; otherwise each step concatenates (simpler, allocates every step).

    Args:
        max_len: the most positions the cache can hold (the model's context length).
        preallocate: use fixed buffers instead of concatenation.
    """

    def __init__(self, max_len: int, preallocate: bool = True) -> None:
        if max_len < 1:
            raise ValueError(f"KVCache max_len must be >= 1, got {max_len}")
        self.max_len = max_len
        self.preallocate = preallocate
        self.length = 0
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget everything (buffers are kept for reuse)."""
        self.length = 0
        if not self.preallocate:
            self._k = self._v = None

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``(B, H, T, D)`` new keys/values; return all ``(B, H, length, D)``."""
        t = k_new.shape[-2]  # new positions
        # later: shape and overflow checks, each with a clear error
        if k_new.dim() != 4 or k_new.shape != v_new.shape:
            raise ValueError(
                "KVCache.update expects keys and values of the same shape (batch, heads, tokens, "
                f"head_dim), got keys {tuple(k_new.shape)} and values {tuple(v_new.shape)}"
            )
        if self.length > 0 and self._k is not None:
            cached = (self._k.shape[0], self._k.shape[1], self._k.shape[3])
            new = (k_new.shape[0], k_new.shape[1], k_new.shape[3])
            if cached != new:
                raise ValueError(
                    f"KVCache holds (batch, heads, head_dim)={cached} but the new keys have {new}; "
                    f"call reset() before starting a sequence with a different batch or model."
                )
        if self.length + t > self.max_len:
            raise ValueError(
                f"KV cache overflow: holds {self.length} positions, adding {t} exceeds "
                f"max_len={self.max_len}. Crop the input or reset the cache."
            )
        # endlater
        if not self.preallocate:
            self._k = k_new if self._k is None else torch.cat([self._k, k_new], dim=-2)
            self._v = v_new if self._v is None else torch.cat([self._v, v_new], dim=-2)
            self.length += t
            return self._k, self._v
        b, h, _, d = k_new.shape
        if (
            self._k is None
            or self._k.shape != (b, h, self.max_len, d)
            or self._k.dtype != k_new.dtype
            or self._k.device != k_new.device
        ):
            self._k = k_new.new_empty(b, h, self.max_len, d)
            self._v = v_new.new_empty(b, h, self.max_len, d)
        assert self._v is not None
        self._k[:, :, self.length : self.length + t] = k_new
        self._v[:, :, self.length : self.length + t] = v_new
        self.length += t
        return self._k[:, :, : self.length], self._v[:, :, : self.length]


@register("attention_type", "multi-head")
class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention.

    Args:
        d_in: input features per token.
        d_out: output features per token (split evenly over the heads).
        context_length: the longest sequence the layer accepts.
        num_heads: number of heads; must divide ``d_out``.
        dropout: dropout probability on the attention weights.
        qkv_bias: give the query/key/value projections a bias.

    :meth:`from_config` builds the layer a model uses: this one, with chapter 7's parts
    where the config asks for them (grouped-query attention, a head width of its own,
    QK-norm, no output bias; RoPE arrives through :meth:`forward`'s ``rope``) and the
    :class:`~sydsgpt.config.Kernels` that compute it.

    Shapes: ``(B, T, d_in) -> (B, T, d_out)``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = SydsGPTConfig.dropout,
        qkv_bias: bool = SydsGPTConfig.qkv_bias,
    ) -> None:
        super().__init__()
        # later: checks of num_heads and dropout (each error says how to fix it)
        check_positive_int(num_heads, "num_heads")
        if d_out % num_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must be a divisor of d_out ({d_out}): each head "
                f"gets d_out / num_heads features. Try num_heads in "
                f"{[h for h in range(1, min(d_out, 64) + 1) if d_out % h == 0]}."
            )
        check_real(dropout, "dropout", low=0.0, high=1.0, high_open=True)
        # endlater
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.weight_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.weight_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.weight_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.output_projection = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        # later: chapter 7's parts and the kernels, which from_config sets
        self.num_kv_heads = num_heads
        self.q_norm: RMSNorm | None = None
        self.k_norm: RMSNorm | None = None
        self.kernels = Kernels()
        # endlater

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], kernels: Kernels | None = None
    ) -> MultiHeadAttention:
        """The attention of a model: chapter 2's layer with the chapter 7 parts ``config`` names."""
        config = SydsGPTConfig.from_dict(config)
        d, heads = config.embedding_dim, config.num_heads
        q_dim, kv_dim = heads * config.head_size, config.kv_heads * config.head_size
        layer = cls(d, q_dim, config.context_length, heads, config.dropout, config.qkv_bias)
        layer.kernels = kernels or Kernels()
        if kv_dim != q_dim:  # grouped-query attention: fewer, shared key/value heads
            layer.num_kv_heads = config.kv_heads
            layer.weight_key = nn.Linear(d, kv_dim, bias=config.qkv_bias)
            layer.weight_value = nn.Linear(d, kv_dim, bias=config.qkv_bias)
        if q_dim != d or not config.linear_bias:  # heads of their own width; no output bias
            layer.output_projection = nn.Linear(q_dim, d, bias=config.linear_bias)
            layer.d_out = d
        if config.qk_norm:  # QK-norm: each head's queries and keys RMS-normalised
            layer.q_norm = RMSNorm(config.head_size, config.norm_eps)
            layer.k_norm = RMSNorm(config.head_size, config.norm_eps)
        return layer

    @property
    def q_dim(self) -> int:
        """Width of all query heads together (``d_out`` for GPT-2)."""
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of all key (or value) heads together."""
        return self.num_kv_heads * self.head_dim

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T, d_in)`` -> queries ``(B, T, q_dim)``, keys and values ``(B, T, kv_dim)``.

        With ``kernels.fused_qkv``, while gradients are recorded (training), one matrix
        product computes all three (same parameters, same result). Without gradients
        (generation, evaluation) the three products run on the weights as they are:
        joining the weights copies them on every call, which costs more than one larger
        product saves when a step is a single token.
        """
        # later: the fused path, one matrix product for Q, K and V (appendix: making it fast)
        if self.kernels.fused_qkv and torch.is_grad_enabled():
            projections = (self.weight_query, self.weight_key, self.weight_value)
            weight = torch.cat([p.weight for p in projections])
            bias = None
            if self.weight_query.bias is not None:
                bias = torch.cat([p.bias for p in projections])
            return F.linear(x, weight, bias).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        # endlater
        return self.weight_query(x), self.weight_key(x), self.weight_value(x)

    def _split_heads(self, t: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """``(B, T, heads * D)`` -> ``(B, heads, T, D)`` (``heads`` defaults to ``num_heads``)."""
        b, n, _ = t.shape
        return t.view(b, n, heads or self.num_heads, self.head_dim).transpose(1, 2)

    def _check_input(self, x: torch.Tensor, kv_cache: KVCache | None) -> None:
        """``x`` must be ``(B, T, d_in)`` and fit the context after the cached tokens."""
        if x.dim() != 3:
            raise ValueError(
                f"MultiHeadAttention expects input of shape (batch, tokens, {self.d_in}), got a "
                f"{x.dim()}-D tensor of shape {tuple(x.shape)}. Add a batch dimension with "
                f"x.unsqueeze(0)."
            )
        if x.shape[-1] != self.d_in:
            raise ValueError(
                f"expected {self.d_in} features per token, got {x.shape[-1]} "
                f"(input shape {tuple(x.shape)})"
            )
        t, past = x.shape[1], kv_cache.length if kv_cache is not None else 0
        if past + t > self.context_length:
            cached = f" ({past} cached + {t} new)" if past else ""
            raise ValueError(
                f"sequence of {past + t} tokens{cached} is longer than "
                f"context_length={self.context_length}; crop the input to its last "
                f"{self.context_length} tokens" + (" or reset the KV cache." if past else ".")
            )

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, rope: RopeTables | None = None
    ) -> torch.Tensor:
        """``(B, T, d_in) -> (B, T, d_out)``; with ``kv_cache`` the T tokens follow the cached
        ones. ``rope``: the ``(cos, sin)`` tables of the T tokens' positions (chapter 7)."""
        self._check_input(x, kv_cache)
        b, t, _ = x.shape
        queries, keys, values = self._project_qkv(x)
        q = self._split_heads(queries)  # (B, H, T, D)
        k = self._split_heads(keys, self.num_kv_heads)  # (B, H_kv, T, D)
        v = self._split_heads(values, self.num_kv_heads)  # (B, H_kv, T, D)
        # later: QK-norm and RoPE (chapter 7)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # rotate by position before caching: cached keys keep their rotation
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        # endlater
        # later: the KV cache (chapter 6)
        # region: kv-cache
        if kv_cache is not None:  # append the new keys and values, attend to all of them
            k, v = kv_cache.update(k, v)  # (B, H_kv, S, D): the cache holds H_kv heads
        # endregion: kv-cache
        # endlater
        # later: grouped-query attention shares each key/value head (chapter 7)
        groups = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, S, D)
        # endlater
        if self.kernels.attention == "explicit":
            context, _ = scaled_dot_product_attention(q, k, v, causal=True, dropout=self.dropout)
        else:  # PyTorch's fused kernel (appendix: making it fast)
            context = self._sdpa(q, k, v)
        context = context.transpose(1, 2).reshape(b, t, self.q_dim)  # merge heads: (B, T, H * D)
        return self.output_projection(context)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention by :func:`torch.nn.functional.scaled_dot_product_attention`:
        ``(B, H, T, D)`` queries, ``(B, H, S, D)`` keys and values -> ``(B, H, T, D)``."""
        dropout_p = self.dropout.p if self.training else 0.0
        t, s = q.shape[-2], k.shape[-2]
        if t == s:  # no cached prefix: plain causal attention
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        if t == 1:  # one new token after a cached prefix: it may see every key
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        allowed = ~causal_mask(t, s, device=q.device)  # the queries are the newest t of s tokens
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
