"""Chapter 5: the loss a language model is trained on, and how to read it.

- :func:`cross_entropy_loss`: mean next-token cross-entropy of ``(B, T, V)`` logits;
- :func:`perplexity`: ``exp`` of it, the number of tokens the model hesitates between;
- :func:`bits_per_byte`: the same loss per byte of text, so tokenizers of any size compare;
- :func:`batch_loss`: the model's loss on a batch; :class:`NextTokenObjective`, the same as
  the training loop's default :class:`~sydsgpt.objectives.Objective`;
- :func:`loader_loss`: an objective's mean loss over a loader (e.g. the validation split);
- :func:`held_out_bits_per_byte`: loss and bits per byte over a whole loader (how the book
  reports held-out quality).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import DistributedContext, all_reduce_sum, current_context
from .objectives import IGNORE_INDEX, Objective, ObjectiveOutput, to_device
from .runtime import autocast

Batch = tuple[torch.Tensor, torch.Tensor]


def cross_entropy_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: ``(B, T, V)`` logits, ``(B, T)`` targets -> scalar."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def perplexity(loss: float | torch.Tensor) -> float:
    """``exp(mean cross-entropy)``: the number of equally
    likely tokens the model hesitates between."""
    return math.exp(float(loss))


def batch_loss(
    model: nn.Module,
    input_ids: torch.Tensor,
    target_ids: torch.Tensor,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The model's mean cross-entropy on one batch (``(B, T)`` inputs and targets)."""
    if device is not None:
        input_ids = input_ids.to(device, non_blocking=True)
        target_ids = target_ids.to(device, non_blocking=True)
    return cross_entropy_loss(model(input_ids), target_ids)


class NextTokenObjective:
    """Predict every next token: ``(input_ids, target_ids)`` batches, each ``(B, T)``.

    The loss is :func:`batch_loss`; targets equal to :data:`~sydsgpt.objectives.IGNORE_INDEX`
    are not graded (instruction finetuning masks the prompt and the padding so), and
    ``count`` is the number of graded targets. Pretraining's default objective.
    """

    def __call__(
        self, model: nn.Module, batch: Batch, device: torch.device | str | None = None
    ) -> ObjectiveOutput:
        input_ids, target_ids = to_device(batch, device)
        loss = batch_loss(model, input_ids, target_ids)
        return ObjectiveOutput(loss, count=(target_ids != IGNORE_INDEX).sum())

    metric_names: tuple[str, ...] = ()

    def tokens(self, batch: Batch) -> int:
        return batch[1].numel()  # (B, T) targets: as many as input tokens


def bits_per_byte(loss: float, num_tokens: int, num_bytes: int) -> float:
    """Convert a mean loss in nats per token into bits per byte of text.

    ``loss * num_tokens`` is the total cost of the text in nats; divided by ``ln 2`` it is
    in bits, and divided by the text's UTF-8 bytes it no longer depends on how many bytes a
    token covers: a 1,024-id tokenizer and GPT-2's 50,257-id one are compared fairly.
    """
    if num_tokens < 1 or num_bytes < 1:
        raise ValueError(
            f"bits_per_byte needs num_tokens >= 1 and num_bytes >= 1, got {num_tokens} and "
            f"{num_bytes}"
        )
    return float(loss) * num_tokens / (math.log(2) * num_bytes)


@torch.no_grad()
def loader_loss(
    model: nn.Module,
    loader: Iterable[Batch],
    num_batches: int | None = None,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    ctx: DistributedContext | None = None,
    *,
    objective: Objective | None = None,
    metrics: dict[str, float] | None = None,
) -> float:
    """Mean loss per graded token (or text, pair, ...) over the first ``num_batches`` batches.

    The model is evaluated in eval mode (no dropout), then put back in its previous mode.
    Under DDP the batches are shared out across processes and the result is the same on all.
    ``objective`` (default :class:`NextTokenObjective`) turns a batch into a loss; each
    batch weighs by the number of things it grades. ``metrics``, if given, is filled with
    the objective's other metrics, averaged the same way.
    """
    objective = objective or NextTokenObjective()
    ctx = ctx or current_context()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (loss * count, count)
    # later: the objective's other metrics, weighed like the loss (chapter 9)
    names = objective.metric_names
    metric_sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    # endlater
    for i, batch in enumerate(loader):
        if num_batches is not None and i >= num_batches:
            break
        # later: under DDP, each process takes every world_size-th batch (appendix: scaling up)
        if i % ctx.world_size != ctx.rank:
            continue
        # endlater
        with autocast(device, amp_dtype):
            out = objective(model, batch, device)
        sums[0] += out.loss.double() * out.count
        sums[1] += out.count
        # later: the objective's other metrics, weighed like the loss (chapter 9)
        for j, name in enumerate(names):
            metric_sums[j] += torch.as_tensor(out.metrics[name], device=device).double() * out.count
        # endlater
    model.train(was_training)
    total, count = all_reduce_sum(sums, ctx).tolist()
    if count == 0:
        raise ValueError(
            "the loader yielded no batches (or nothing to grade in them): the text is probably "
            "shorter than one sequence of context_length + 1 tokens; use more text or a shorter "
            "context_length."
        )
    # later: the objective's other metrics, weighed like the loss (chapter 9)
    if metrics is not None and names:
        weighted = all_reduce_sum(metric_sums, ctx).tolist()
        metrics.update({name: value / count for name, value in zip(names, weighted)})
    # endlater
    return total / count


@torch.no_grad()
def held_out_bits_per_byte(
    model: nn.Module, loader: Iterable[Any], tokenizer: Any
) -> tuple[float, float]:
    """``(loss, bits per byte)`` over every batch of ``loader``.

    Bits per byte = the total cross-entropy of the predicted tokens in bits, divided by
    the UTF-8 bytes those tokens spell: it compares models whatever their tokenizer.
    """
    batches = list(loader)
    loss = loader_loss(model, batches)  # mean nats per token
    tokens = sum(target.numel() for _, target in batches)
    n_bytes = sum(
        len(tokenizer.decode(row.tolist()).encode("utf-8"))
        for _, target in batches
        for row in target
    )
    return loss, bits_per_byte(loss, tokens, n_bytes)
