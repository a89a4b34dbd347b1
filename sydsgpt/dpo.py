"""DPO from scratch (chapter 10): learn from pairs of a better and a worse answer.

Direct Preference Optimization needs no reward during training, only pairs: for one prompt,
an answer that was preferred (``chosen``) and one that was not (``rejected``). Here the pairs
come from the policy's own samples (:func:`preference_pairs`): a verified-correct answer
and an incorrect one to the same task. The loss (:func:`dpo_loss`, :class:`DPOObjective`) is
the Bradley-Terry model's negative log-likelihood of the preference, with the "reward" of
an answer replaced by ``beta`` times how much more likely the policy makes it than the
frozen reference does. The reference log-probabilities are computed once, before training
(:func:`pair_batches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import ObjectiveOutput
from .rollouts import Rollout, pad_answers, reference_logprobs, token_logprobs
from .validation import check_real


@dataclass
class PreferencePairs:
    """Chosen and rejected answers to the same prompts, padded (row ``i`` of each is a pair)."""

    chosen: torch.Tensor
    """``(P, T)`` prompt + preferred answer."""
    chosen_mask: torch.Tensor
    """``(P, T - 1)`` 1 where the next token belongs to the answer."""
    rejected: torch.Tensor
    rejected_mask: torch.Tensor
    prompts: list[str]
    """Each pair's task prompt (for showing pairs)."""


def preference_pairs(rollout: Rollout, pad_id: int, pairs_per_task: int = 1) -> PreferencePairs:
    """Pairs from a rollout: in every group with both a correct and an incorrect answer, up to
    ``pairs_per_task`` (correct, incorrect) pairs, each answer used once, in sample order.

    Groups that are all right or all wrong give no pair (nothing to prefer).
    """
    chosen, rejected, prompts = [], [], []
    for g, task in enumerate(rollout.tasks):
        rows = range(g * rollout.group_size, (g + 1) * rollout.group_size)
        good = [i for i in rows if rollout.rewards[i] == 1.0]
        bad = [i for i in rows if rollout.rewards[i] != 1.0]
        for c, r in list(zip(good, bad))[:pairs_per_task]:
            chosen.append(c)
            rejected.append(r)
            prompts.append(task.prompt)

    def split(i: int) -> tuple[list[int], list[int]]:
        mask = rollout.answer_mask[i]
        start = int(mask.argmax()) + 1  # first answer token
        length = int(mask.sum())
        ids = rollout.ids[i].tolist()
        return ids[:start], ids[start : start + length]

    if not chosen:
        empty = torch.zeros(0, 2, dtype=torch.long)
        return PreferencePairs(empty, empty[:, 1:].float(), empty, empty[:, 1:].float(), [])
    both = [split(i) for i in chosen + rejected]
    ids, mask = pad_answers([p for p, _ in both], [a for _, a in both], pad_id)
    n = len(chosen)
    return PreferencePairs(ids[:n], mask[:n], ids[n:], mask[n:], prompts)


# region: loss
def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per pair: ``-log sigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))``.

    Every argument is ``(P,)``: an answer's summed log-probability under the policy or the
    reference. ``beta * (logp - ref_logp)`` is DPO's implicit reward of an answer.
    """
    margin = (chosen - ref_chosen) - (rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


# endregion: loss


def answer_logprob(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the summed log-probability of each row's answer tokens."""
    return (token_logprobs(model, ids) * mask).sum(dim=1)


@dataclass
class DPOObjective:
    """The DPO loss on a micro-batch of pairs from :func:`pair_batches` (an
    :class:`~sydsgpt.objectives.Objective`); metrics: the share of pairs whose implicit
    reward already prefers the chosen answer, and the mean implicit-reward margin."""

    beta: float = 0.1
    """How far the policy may move from the reference: a larger beta, a stiffer leash."""

    metric_names: tuple[str, ...] = ("reward_accuracy", "margin")

    def __post_init__(self) -> None:
        check_real(self.beta, "beta", low=0.0, low_open=True)

    def __call__(
        self, model: nn.Module, batch: dict[str, torch.Tensor], device: Any
    ) -> ObjectiveOutput:
        n = batch["chosen"].shape[0]
        ids = torch.cat([batch["chosen"], batch["rejected"]]).to(device)
        mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]).to(device)
        logprobs = answer_logprob(model, ids, mask)  # one pass over chosen and rejected
        chosen, rejected = logprobs[:n], logprobs[n:]
        ref_chosen, ref_rejected = batch["ref_chosen"].to(device), batch["ref_rejected"].to(device)
        losses = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, self.beta)
        margin = self.beta * ((chosen - ref_chosen) - (rejected - ref_rejected)).detach()
        metrics = {"reward_accuracy": (margin > 0).float().mean(), "margin": margin.mean()}
        return ObjectiveOutput(losses.mean(), n, metrics)

    def tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["chosen_mask"].sum() + batch["rejected_mask"].sum())


def pair_batches(
    model: nn.Module, pairs: PreferencePairs, batch_size: int = 8
) -> list[dict[str, torch.Tensor]]:
    """All pairs as batches of ``batch_size``, with the reference's summed log-probabilities
    (the model with its adapters off), computed here once."""
    chosen_ref = (reference_logprobs(model, pairs.chosen) * pairs.chosen_mask).sum(dim=1)
    rejected_ref = (reference_logprobs(model, pairs.rejected) * pairs.rejected_mask).sum(dim=1)
    batches = []
    for part in torch.arange(len(pairs.chosen)).split(batch_size):
        batches.append(
            {
                "chosen": pairs.chosen[part],
                "chosen_mask": pairs.chosen_mask[part],
                "rejected": pairs.rejected[part],
                "rejected_mask": pairs.rejected_mask[part],
                "ref_chosen": chosen_ref[part],
                "ref_rejected": rejected_ref[part],
            }
        )
    return batches
