"""FSDP2: shard a model's parameters, gradients and optimizer state across processes.

With DDP (:mod:`sydsgpt.distributed`) every process holds the whole model, its gradients
and both AdamW moments: about 16 bytes per parameter, so GPT-2 XL (1.5B) needs ~24 GB per
GPU before activations. FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps only
``1 / world_size`` of each parameter on each process (as a ``DTensor`` shard), all-gathers
a block's weights just before its forward and backward, and reduce-scatters its gradients,
so each process also holds only its shard of the gradients and optimizer state.

Each transformer block is its own FSDP unit (its weights are gathered one block at a
time); the root unit holds the embeddings, the final norm and the output head (so tied
embeddings stay in one unit). Build the optimizer *after* :func:`shard_model`: it must
see the sharded parameters. Launch with ``torchrun`` as for DDP; gradients are averaged
across processes, so a step equals the single-process step on the whole global batch
(``tests/test_fsdp.py`` checks this on CPU with gloo).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shard_model(model: nn.Module, reshard_after_forward: bool = True, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Apply ``fully_shard`` to each transformer block, then to the whole model (in place; returns it).

    Args:
        reshard_after_forward: free the gathered weights after each block's forward (least
            memory; gathered again for backward). ``False`` trades memory for one all-gather less.
        param_dtype: compute in this dtype (e.g. ``torch.bfloat16``) with float32 master
            weights and float32 gradient reduction; ``None`` keeps the parameters' dtype.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for block in model.transformer_blocks:  # type: ignore[union-attr]
        fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(model, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """The whole (unsharded) state dict of a sharded model, on the CPU; every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def local_fraction(model: nn.Module) -> float:
    """The share of the model's parameter elements this process stores (``1 / world_size`` when sharded)."""
    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
    return local / total
