"""Chapter 7: grouped-query attention (GQA) and multi-query attention (MQA).

Multi-head attention (chapter 2) gives every query head its own key and value head.
**Grouped-query attention** keeps all ``H`` query heads but only ``H_kv`` key/value
heads, each shared by a group of ``H / H_kv`` consecutive query heads: query head
``h`` reads key/value head ``h // (H / H_kv)``. ``H_kv = H`` is plain multi-head
attention, ``H_kv = 1`` is **multi-query attention**.

The key/value projections, and above all the KV cache, shrink by ``H / H_kv``
(Llama 3.2 1B: 32 query heads, 8 key/value heads, a 4x smaller cache); the queries
lose nothing. Shapes: ``B`` batch, ``S`` keys, ``D`` head dimension.
"""

from __future__ import annotations

import torch


def repeat_kv(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Give every query head its key/value head: ``(B, H_kv, S, D) -> (B, H_kv * groups, S, D)``.

    Head ``j`` of ``x`` is repeated ``groups`` times in a row, so query heads
    ``j * groups .. (j + 1) * groups - 1`` all see it (the order Llama and Qwen3 use).
    """
    if groups == 1:
        return x
    b, h_kv, s, d = x.shape
    return x[:, :, None].expand(b, h_kv, groups, s, d).reshape(b, h_kv * groups, s, d)
