"""Run under torchrun by tests/test_fsdp.py: a few FSDP2 training steps of the tiny model on CPU (gloo).

Usage: python -m torch.distributed.run --standalone --nproc_per_node=2 tests/fsdp_steps.py OUT.pt
Each process gets its half of every global batch; rank 0 saves the full weights and the losses.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from helpers import config, datasets, train_model

from sydsgpt.data import ResumableBatches
from sydsgpt.distributed import init_distributed
from sydsgpt.fsdp import full_state_dict, local_fraction, shard_model
from sydsgpt.optim import build_optimizer
from sydsgpt.train import train_step

STEPS, BATCH = 4, 4


def main(out: str) -> None:
    ctx = init_distributed("cpu")
    model = train_model(seed=0, dropout=0.0)
    if ctx.enabled:
        shard_model(model)
    cfg = config()
    optimizer = build_optimizer(model, cfg, "cpu")
    train, _ = datasets()
    batches = ResumableBatches(train, BATCH, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
    losses = [train_step(model, [next(batches)], optimizer, grad_clip=1.0, ctx=ctx)[0] for _ in range(STEPS)]
    state = full_state_dict(model) if ctx.enabled else model.state_dict()
    if ctx.is_main:
        torch.save({"model": state, "losses": losses, "local_fraction": local_fraction(model), "world_size": ctx.world_size}, out)
    if ctx.enabled:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
