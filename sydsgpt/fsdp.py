"""FSDP2: shard a model's parameters, gradients and optimizer state across processes.

With DDP (:mod:`sydsgpt.distributed`) every process holds the whole model, its gradients
and both AdamW moments: about 16 bytes per parameter, so GPT-2 XL (1.5B) needs ~24 GB per
GPU before activations. FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps only
``1 / world_size`` of each parameter on each process (as a ``DTensor`` shard), all-gathers
a block's weights just before its forward and backward, and reduce-scatters its gradients,
so each process also holds only its shard of the gradients and optimizer state.

``sydsgpt train --fsdp`` (``TrainConfig.fsdp``) under ``torchrun`` uses it instead of DDP.
Checkpoints still hold the whole model: :func:`full_state_views` gathers it from the shards
when one is saved, so ``sydsgpt generate`` reads it as any other; the optimizer state is
stored by parameter name, so a run started with ``--fsdp`` resumes with ``--fsdp``.

Each transformer block is its own FSDP unit (its weights are gathered one block at a
time); the root unit holds the embeddings, the final norm and the output head (so tied
embeddings stay in one unit). Build the optimizer *after* :func:`shard_model`: it must
see the sharded parameters. Launch with ``torchrun`` as for DDP; gradients are averaged
across processes, so a step equals the single-process step on the whole global batch
(``tests/test_fsdp.py`` checks this on CPU with gloo, through a stop and a resume).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def shard_model(
    model: nn.Module, reshard_after_forward: bool = True, param_dtype: torch.dtype | None = None
) -> nn.Module:
    """Apply ``fully_shard`` to each transformer block, then to the whole model (in place; returns
    it).

    Args:
        reshard_after_forward: free the gathered weights after each block's forward (least
            memory; gathered again for backward). ``False`` trades memory for one all-gather less.
        param_dtype: compute in this dtype (e.g. ``torch.bfloat16``) with float32 master
            weights and float32 gradient reduction; ``None`` keeps the parameters' dtype.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(
        param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None
    )
    for block in model.transformer_blocks:  # type: ignore[union-attr]
        fully_shard(block, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(model, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """The whole (unsharded) state dict of a sharded
    model, on the CPU; every process must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )


def local_fraction(model: nn.Module) -> float:
    """The share of the model's parameter elements this
    process stores (``1 / world_size`` when sharded)."""
    local = total = 0
    for p in model.parameters():
        total += p.numel()
        local += p.to_local().numel() if hasattr(p, "to_local") else p.numel()
    return local / total


class _FullStateView:
    """Stands in for a sharded model or optimizer when a checkpoint is saved: its ``state_dict()``
    is the full one, gathered beforehand (by every process) with :func:`full_state_views`."""

    def __init__(self, state: dict[str, Any], config: Any = None) -> None:
        self._state, self.config = state, config

    def state_dict(self) -> dict[str, Any]:
        return self._state


def full_state_views(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[Any, Any]:
    """The whole model and optimizer state of a sharded model, for ``save_checkpoint`` on rank 0.

    Every process must call it (the shards are gathered); the optimizer state is keyed by
    parameter name, so resume such a checkpoint with FSDP (:func:`load_full_state`).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    optim_state = get_optimizer_state_dict(model, optimizer, options=options)
    return _FullStateView(full_state_dict(model), getattr(model, "config", None)), _FullStateView(
        optim_state
    )


def load_full_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    model_state: dict[str, Any],
    optim_state: dict[str, Any],
) -> None:
    """Load a checkpoint written through :func:`full_state_views`
    into a sharded model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=options)
    set_optimizer_state_dict(model, optimizer, optim_state, options=options)
