"""Chapter 5: the optimizer and its learning-rate schedule.

- :func:`lr_at_step` / :func:`make_scheduler`: linear warm-up, then cosine decay;
- :func:`build_optimizer`: AdamW, weight decay on matrices only, the fused kernel where
  :mod:`sydsgpt.runtime` says so; or, with ``TrainConfig.optimizer = "muon"``, Muon for the
  blocks' matrices and AdamW for the rest (:class:`sydsgpt.muon.MuonWithAdamW`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from .runtime import auto_fused_adamw

if TYPE_CHECKING:
    from .train_config import TrainConfig


def lr_at_step(
    step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine decay.

    Steps ``0 .. warmup_steps-1`` rise linearly to ``peak_lr`` (``peak_lr * (step+1) /
    warmup_steps``); from ``warmup_steps`` to ``total_steps`` the rate follows half a cosine
    from ``peak_lr`` down to ``min_lr``, and stays at ``min_lr`` after that.
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_at_step`, relative to each group's initial ``lr``.

    Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    factor = partial(
        lr_at_step,
        peak_lr=1.0,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        min_lr=min_lr_ratio,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_optimizer(
    model: nn.Module, cfg: "TrainConfig", device: torch.device | str | None = None
) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices and embeddings only (not on biases or layer-norm
    parameters), and the fused kernel when ``cfg.fused_adamw`` (default: on CUDA).

    With ``cfg.optimizer == "muon"``: the 2-D matrices inside the blocks go to Muon (peak rate
    ``cfg.muon_lr``, momentum ``cfg.muon_momentum``, no weight decay) and everything else
    stays with AdamW as above, in one :class:`~sydsgpt.muon.MuonWithAdamW` whose groups are
    ``[AdamW decay, AdamW no decay, Muon]``."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    muon_ids: set[int] = set()
    if cfg.optimizer == "muon":
        from .muon import split_muon_params

        muon_ids = {id(p) for p in split_muon_params(model)[0]}
    adamw = [p for p in params if id(p) not in muon_ids]
    groups = [
        {"params": [p for p in adamw if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in adamw if p.dim() < 2], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "muon":
        from .muon import MuonWithAdamW

        betas = (cfg.beta1, cfg.beta2)
        muon = [p for p in params if id(p) in muon_ids]
        return MuonWithAdamW(
            [{**group, "lr": cfg.lr, "betas": betas} for group in groups]
            + [{"params": muon, "muon": True, "lr": cfg.muon_lr, "momentum": cfg.muon_momentum}]
        )
    fused = auto_fused_adamw(cfg.fused_adamw, device.type)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


def peak_lr(group: dict, cfg: "TrainConfig") -> float:
    """A parameter group's peak learning rate under ``cfg``: ``muon_lr`` for a Muon group,
    else ``lr``."""
    return cfg.muon_lr if group.get("muon") else cfg.lr


def apply_hyperparameters(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    cfg: "TrainConfig",
    device: torch.device | str | None = None,
) -> None:
    """Put ``cfg``'s values back into an optimizer and scheduler that were just loaded from a
    checkpoint (loading restores the values they were saved with): weight decay on the
    matrix group, the betas, and the peak learning rate of the schedule, whose current rate
    is recomputed for the step reached (so a changed ``lr``, ``warmup_steps``, ``max_steps`` or
    ``min_lr_ratio`` applies from the next step), and the fused kernel choice for ``device``
    (a run may resume on another device). Unchanged values give back the same numbers.
    """
    decay, no_decay = optimizer.param_groups[:2]
    decay["weight_decay"], no_decay["weight_decay"] = cfg.weight_decay, 0.0
    fused = (
        auto_fused_adamw(cfg.fused_adamw, torch.device(device).type)
        if device is not None and isinstance(optimizer, torch.optim.AdamW)
        else None
    )
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas):
        if fused is not None:
            group["fused"] = fused
        if group.get("muon"):
            group["momentum"] = cfg.muon_momentum
        else:
            group["betas"] = (cfg.beta1, cfg.beta2)
        group["initial_lr"] = peak_lr(group, cfg)
        group["lr"] = group["initial_lr"] * factor(scheduler.last_epoch)
    scheduler.base_lrs = [peak_lr(group, cfg) for group in optimizer.param_groups]
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
