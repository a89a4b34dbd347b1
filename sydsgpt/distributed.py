"""Chapter 5: training on several processes with PyTorch DDP, launched by ``torchrun``.

``torchrun --standalone --nproc_per_node=N -m sydsgpt.cli train ...`` starts N copies of
the program and tells each one its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` through
environment variables. Every process holds a full model; each one computes gradients on
its own disjoint slice of every global batch, and ``DistributedDataParallel`` averages the
gradients across processes during ``backward()``, so all copies take the same optimizer
step. The backend is ``nccl`` on GPUs and ``gloo`` on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` in
    ``0..world_size-1`` (``local_rank`` on its machine)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, checkpoints and the progress bar."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when ``torchrun`` (or ``python -m torch.distributed.run``) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device_type: str = "cpu") -> DistributedContext:
    """Join the process group when launched by ``torchrun``; a single-process context otherwise.

    Uses ``nccl`` for ``device_type="cuda"`` (and pins this process to GPU ``LOCAL_RANK``),
    ``gloo`` otherwise. Safe to call when the group already exists.
    """
    if not launched_by_torchrun():
        return current_context()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(dist.get_rank(), local_rank, dist.get_world_size())


def current_context() -> DistributedContext:
    """The context of an already initialised process group (single process if none)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(
            dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size()
        )
    return DistributedContext()


def all_reduce_mean(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """The mean of ``value`` over all processes (``value`` itself for one process)."""
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def all_reduce_sum(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """The sum of ``value`` over all processes."""
    if not ctx.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj: Any, ctx: DistributedContext) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` for one process)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistributedContext) -> None:
    """Wait until every process gets here."""
    if ctx.enabled:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (call once at the end of a torchrun program)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
