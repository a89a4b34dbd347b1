"""GRPO from scratch (chapter 10): learn from a reward by comparing answers within a group.

One step of Group Relative Policy Optimization:

1. sample a group of answers to each of a few tasks (:func:`sydsgpt.rollouts.sample_answers`);
2. score them (:func:`sydsgpt.rewards.reward`);
3. :func:`group_advantages`: each answer's reward minus its group's mean, over the group's
   spread, so an answer counts as good only relative to its siblings (no value model);
4. :class:`GRPOObjective`: raise the log-probability of every token of an answer in
   proportion to the answer's advantage, through the clipped ratio ``p / p_old`` of PPO, with
   an optional KL penalty towards the frozen reference; the per-token terms are averaged
   over all answer tokens of the step (token-level normalization).

:func:`grpo_batches` turns a :class:`~sydsgpt.rollouts.Rollout` into micro-batches for
:func:`sydsgpt.train.train_step`; the loop with checkpoints and exact resume is
:func:`sydsgpt.reward_training.train_with_rewards`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .objectives import ObjectiveOutput
from .rollouts import Rollout, reference_logprobs, token_logprobs
from .validation import check_real

ADVANTAGE_EPS = 1e-4
"""Added to a group's standard deviation, so a group whose rewards barely differ does not
blow its advantages up (a group whose rewards are all equal gets advantage 0)."""


# region: advantages
def group_advantages(rewards: torch.Tensor, eps: float = ADVANTAGE_EPS) -> torch.Tensor:
    """``(G groups, K answers)`` rewards -> advantages ``(r - mean) / (std + eps)`` per group.

    The standard deviation is the population one (divide by ``K``). A group where every
    answer scored the same teaches nothing: its advantages are all 0.
    """
    rewards = rewards.float()
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, unbiased=False, keepdim=True)
    return (rewards - mean) / (std + eps)


# endregion: advantages


# region: objective
def clipped_surrogate(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's per-token objective (to maximize): ``min(ratio * A, clip(ratio, 1 - e, 1 + e) * A)``
    with ``ratio = exp(logprobs - old_logprobs)``; all ``(B, T)``, ``advantages`` ``(B, 1)``."""
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.minimum(ratio * advantages, clipped * advantages)


def kl_estimate(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of ``KL(policy || reference)`` from sampled tokens (the "k3"
    estimator): ``exp(ref - logp) - (ref - logp) - 1``, never negative, 0 where they agree."""
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


@dataclass
class GRPOObjective:
    """The GRPO loss on a micro-batch from :func:`grpo_batches` (an
    :class:`~sydsgpt.objectives.Objective`).

    ``loss = -sum_t w_t * (surrogate_t - kl * KL_t)``, where ``w_t`` (the batch's
    ``token_weights``) is 1 over the step's answer-token count on answer tokens and 0
    elsewhere, scaled so that :func:`~sydsgpt.train.train_step`'s mean over micro-batches is
    the mean over all answer tokens of the step.
    """

    clip: float = 0.2
    """PPO's ``epsilon``: the ratio ``p / p_old`` counts only within ``[1 - e, 1 + e]``."""
    kl: float = 0.0
    """Weight of the KL penalty towards the reference (0: none, and no reference pass)."""

    metric_names: tuple[str, ...] = ("kl", "clipped")

    def __post_init__(self) -> None:
        check_real(self.clip, "clip", low=0.0)
        check_real(self.kl, "kl", low=0.0)

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: Any
    ) -> ObjectiveOutput:
        ids = batch["ids"].to(device)
        weights = batch["token_weights"].to(device)
        logprobs = token_logprobs(model, ids)
        old = batch.get("old_logprobs")
        old = logprobs.detach() if old is None else old.to(device)
        advantages = batch["advantages"].to(device)[:, None]
        per_token = clipped_surrogate(logprobs, old, advantages, self.clip)
        mask = (weights > 0).float()
        tokens = mask.sum().clamp(min=1.0)
        kl = torch.zeros(())
        if "ref_logprobs" in batch:
            kl_tokens = kl_estimate(logprobs, batch["ref_logprobs"].to(device))
            kl = (kl_tokens * mask).sum() / tokens
            per_token = per_token - self.kl * kl_tokens
        loss = -(per_token * weights).sum()
        ratio = torch.exp(logprobs.detach() - old)
        clipped = (((ratio - 1.0).abs() > self.clip).float() * mask).sum() / tokens
        return ObjectiveOutput(loss, int(mask.sum()), {"kl": kl.detach(), "clipped": clipped})

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["token_weights"] > 0).sum())


# endregion: objective


def grpo_batches(
    rollout: Rollout,
    micro_batch_size: int,
    *,
    model: nn.Module | None = None,
    kl: float = 0.0,
    old_logprobs: torch.Tensor | None = None,
) -> list[dict[str, torch.Tensor]]:
    """The micro-batches of one GRPO step on ``rollout``.

    Answers whose advantage is 0 (groups with one reward for all) are left out: they add
    nothing to the gradient. Each micro-batch holds ``ids``, ``advantages`` and
    ``token_weights`` (the answer mask times ``n_micro / step_answer_tokens``, see
    :class:`GRPOObjective`); with ``kl > 0`` also ``ref_logprobs`` (needs ``model``, whose
    adapters are switched off for them); ``old_logprobs`` if given (several updates on one
    rollout), else the objective uses the current ones (ratio 1).
    """
    advantages = group_advantages(rollout.groups()).flatten()
    keep = (advantages != 0).nonzero().flatten()
    if len(keep) == 0:
        return []
    if kl > 0 and model is None:
        raise ValueError("kl > 0 needs the model, for the reference log-probabilities")
    ids, mask, advantages = rollout.ids[keep], rollout.answer_mask[keep], advantages[keep]
    old = old_logprobs[keep] if old_logprobs is not None else None
    parts = list(torch.arange(len(keep)).split(micro_batch_size))
    scale = len(parts) / mask.sum()
    batches = []
    for part in parts:
        batch = {
            "ids": ids[part],
            "advantages": advantages[part],
            "token_weights": mask[part] * scale,
        }
        if old is not None:
            batch["old_logprobs"] = old[part]
        if kl > 0:
            batch["ref_logprobs"] = reference_logprobs(model, ids[part])
        batches.append(batch)
    return batches
