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
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .gqa import repeat_kv
from .norms import RMSNorm
from .rope import RopeTables, apply_rope

AttentionImpl = Literal["explicit", "sdpa"]
ATTENTION_IMPLS: tuple[str, ...] = ("explicit", "sdpa")


def causal_mask(num_queries: int, num_keys: int, device: torch.device | None = None) -> torch.Tensor:
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
            f"causal_mask needs num_queries <= num_keys (the queries are the newest keys), got "
            f"num_queries={num_queries}, num_keys={num_keys}: the first queries would see no key at all."
        )
    offset = num_keys - num_queries
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).triu(diagonal=offset + 1)


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
                f"KVCache.update expects keys and values of the same shape (batch, heads, tokens, head_dim), "
                f"got keys {tuple(k_new.shape)} and values {tuple(v_new.shape)}"
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


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention.

    Args:
        d_in: input features per token.
        d_out: output features per token (split evenly over the heads).
        context_length: the longest sequence the layer accepts.
        num_heads: number of heads; must divide ``d_out``.
        dropout: dropout probability on the attention weights.
        qkv_bias: give the query/key/value projections a bias.
        impl: ``"explicit"`` (the chapter's maths) or ``"sdpa"`` (PyTorch's fused kernel).
        fused_qkv: while gradients are recorded (training), compute Q, K and V with one
            matrix product instead of three (same parameters, same result). Without
            gradients (generation, evaluation) the three products run on the weights as
            they are: joining the weights copies them on every call, which costs more than
            one larger product saves when a step is a single token.

    Chapter 7's switches (defaults: GPT-2's attention):

    * ``num_kv_heads``: grouped-query attention, ``H_kv`` key/value heads each shared
      by ``num_heads / H_kv`` query heads (:mod:`sydsgpt.gqa`); ``None``: ``num_heads``.
    * ``head_dim``: features per head; ``None``: ``d_out / num_heads``. The queries are
      ``num_heads * head_dim`` wide, the output projection maps that back to ``d_out``.
    * ``qk_norm``: RMS-normalise each head's queries and keys (epsilon ``norm_eps``).
    * ``output_bias``: a bias in the output projection.
    * RoPE: :meth:`forward`'s ``rope`` tables rotate queries and keys (:mod:`sydsgpt.rope`).

    Shapes: ``(B, T, d_in) -> (B, T, d_out)``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        num_heads: int,
        dropout: float = 0.0,
        qkv_bias: bool = False,
        impl: AttentionImpl = "sdpa",
        fused_qkv: bool = True,
        # later: grouped-query attention, head_dim, qk-norm, output bias (chapter 7)
        *,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qk_norm: bool = False,
        output_bias: bool = True,
        norm_eps: float = 1e-6,
        # endlater
    ) -> None:
        super().__init__()
        # later: checks of num_heads, impl and dropout (each error says how to fix it)
        if head_dim is None and (num_heads < 1 or d_out % num_heads != 0):
            raise ValueError(
                f"num_heads ({num_heads}) must be a positive divisor of d_out ({d_out}): "
                f"each head gets d_out / num_heads features. Try num_heads in "
                f"{[h for h in range(1, min(d_out, 64) + 1) if d_out % h == 0]}."
            )
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        # endlater
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads if head_dim is None else head_dim
        # later: num_kv_heads, the key/value heads: num_heads unless grouped-query (chapter 7)
        self.num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if self.num_kv_heads < 1 or num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads}): each key/value "
                f"head serves the same number of query heads. Try num_kv_heads in "
                f"{[h for h in range(1, num_heads + 1) if num_heads % h == 0]}."
            )
        # endlater
        self.q_dim = num_heads * self.head_dim  # width of all query heads together (d_out for GPT-2)
        self.kv_dim = self.num_kv_heads * self.head_dim  # width of all key (or value) heads together
        self.impl: AttentionImpl = impl
        self.fused_qkv = fused_qkv
        self.weight_query = nn.Linear(d_in, self.q_dim, bias=qkv_bias)
        self.weight_key = nn.Linear(d_in, self.kv_dim, bias=qkv_bias)
        self.weight_value = nn.Linear(d_in, self.kv_dim, bias=qkv_bias)
        self.output_projection = nn.Linear(self.q_dim, d_out, bias=output_bias)
        # later: qk-norm (chapter 7)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else None
        # endlater
        self.dropout = nn.Dropout(dropout)

    # later: dropout_p, read by the SDPA fast path (appendix: making it fast)
    @property
    def dropout_p(self) -> float:
        """Dropout probability on the attention weights (read from ``self.dropout``, so both impls agree)."""
        return self.dropout.p
    # endlater

    # later: loading checkpoints of the original SydsGPT-Pretraining project (a compatibility shim)
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints of the original SydsGPT-Pretraining project stored the causal mask
        # as a buffer; it is derived from the shapes here, so the stored copy is dropped.
        state_dict.pop(prefix + "causal_mask", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
    # endlater

    def _project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(B, T, d_in)`` -> queries ``(B, T, q_dim)``, keys and values ``(B, T, kv_dim)``."""
        if not (self.fused_qkv and torch.is_grad_enabled()):
            return self.weight_query(x), self.weight_key(x), self.weight_value(x)
        # later: the fused path, one matrix product for Q, K and V (appendix: making it fast)
        weight = torch.cat([self.weight_query.weight, self.weight_key.weight, self.weight_value.weight])
        bias = None
        if self.weight_query.bias is not None:
            bias = torch.cat([self.weight_query.bias, self.weight_key.bias, self.weight_value.bias])
        return F.linear(x, weight, bias).split([self.q_dim, self.kv_dim, self.kv_dim], dim=-1)
        # endlater

    def _split_heads(self, t: torch.Tensor, heads: int | None = None) -> torch.Tensor:
        """``(B, T, heads * D)`` -> ``(B, heads, T, D)`` (``heads`` defaults to ``num_heads``)."""
        b, n, _ = t.shape
        return t.view(b, n, heads or self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None, rope: RopeTables | None = None) -> torch.Tensor:
        """``(B, T, d_in) -> (B, T, d_out)``; with ``kv_cache`` the T tokens follow the cached ones.

        ``rope``: the ``(cos, sin)`` tables of the T tokens' positions (chapter 7), or ``None``.
        """
        # later: a check that x is a batch (B, T, d_in) (the error says how to fix it)
        if x.dim() != 3:
            raise ValueError(
                f"MultiHeadAttention expects input of shape (batch, tokens, {self.d_in}), "
                f"got a {x.dim()}-D tensor of shape {tuple(x.shape)}. Add a batch dimension with x.unsqueeze(0)."
            )
        # endlater
        b, t, d = x.shape
        # later: checks of d_in and of T against context_length (errors say how to fix it)
        if d != self.d_in:
            raise ValueError(f"expected {self.d_in} features per token, got {d} (input shape {tuple(x.shape)})")
        # later: the KV cache (chapter 6): past, the number of tokens already cached
        # region: kv-cache
        past = kv_cache.length if kv_cache is not None else 0
        # endregion: kv-cache
        # endlater
        if past + t > self.context_length:
            cached = f" ({past} cached + {t} new)" if past else ""
            raise ValueError(
                f"sequence of {past + t} tokens{cached} is longer than context_length={self.context_length}; "
                f"crop the input to its last {self.context_length} tokens"
                + (" or reset the KV cache." if past else ".")
            )
        # endlater
        queries, keys, values = self._project_qkv(x)
        q = self._split_heads(queries)  # (B, H, T, D)
        k, v = self._split_heads(keys, self.num_kv_heads), self._split_heads(values, self.num_kv_heads)  # (B, H_kv, T, D)
        # later: qk-norm and RoPE (chapter 7)
        if self.q_norm is not None and self.k_norm is not None:  # QK-norm: each head's queries and keys
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # rotate by position before caching: cached keys keep their rotation
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        # endlater
        # later: the KV cache (chapter 6): append the new keys and values, attend to all
        # region: kv-cache-2
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # the cache holds H_kv heads: the memory GQA saves
        # endregion: kv-cache-2
        # endlater
        # later: grouped-query attention shares each key/value head (chapter 7)
        groups = self.num_heads // self.num_kv_heads
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)  # (B, H, S, D)
        # endlater
        if self.impl == "explicit":
            context, _ = scaled_dot_product_attention(q, k, v, causal=True, dropout=self.dropout)
        else:
            # later: PyTorch's fused SDPA kernel (appendix: making it fast)
            dropout_p = self.dropout_p if self.training else 0.0
            if t == k.shape[-2]:  # no cached prefix: plain causal attention
                context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            # region: kv-cache-3
            elif t == 1:  # one new token after a cached prefix: it may see every key
                context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:  # queries are the newest tokens of a longer key sequence
                allowed = ~causal_mask(t, k.shape[-2], device=x.device)
                context = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)
            # endregion: kv-cache-3
            # endlater
        context = context.transpose(1, 2).reshape(b, t, self.q_dim)  # merge heads
        return self.output_projection(context)
