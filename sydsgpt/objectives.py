"""What turns a batch into a loss and its metrics: the one thing a training stage decides.

The training loop (:func:`sydsgpt.train.train_step`, :func:`sydsgpt.train.train`) and the
evaluation (:func:`sydsgpt.losses.loader_loss`) never look inside a batch. They hand each
batch to an :class:`Objective` and get an :class:`ObjectiveOutput` back: the loss to
backpropagate, how many things it averages over, and metrics for the log. Everything else
(accumulation, clipping, the schedule, DDP, checkpoints, exact resume, the progress bar) is
the same for every stage.

The objectives, each beside the chapter that teaches it:

======================================================  ====================================
:class:`sydsgpt.losses.NextTokenObjective` (default)    pretraining (chapter 5) and
                                                        instruction finetuning (chapter 9):
                                                        targets equal to :data:`IGNORE_INDEX`
                                                        are not graded
:class:`sydsgpt.classify.ClassificationObjective`       a label per text, read at its last
                                                        real token (chapter 9)
======================================================  ====================================

A new stage (a preference loss over chosen/rejected pairs, a reward-weighted loss over
sampled sequences) is one more class with the same two methods; its batches are whatever
its dataset's items collate to (tuples or dicts of tensors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

IGNORE_INDEX = -100
"""The target id that is not graded (:func:`torch.nn.functional.cross_entropy`'s default
``ignore_index``): prompt tokens and padding in instruction finetuning."""


@dataclass
class ObjectiveOutput:
    """What an :class:`Objective` computes on one batch."""

    loss: torch.Tensor
    """Scalar: the mean loss over what the batch grades (this is what is backpropagated)."""
    count: torch.Tensor | int
    """How many things the loss averages over (graded tokens, texts, pairs): an evaluation
    weighs each batch's loss and metrics by it."""
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    """Other per-batch means for the log, one per name of the objective's ``metric_names``
    (e.g. ``accuracy``); ``train`` logs them as ``train_<name>`` and ``val_<name>``."""


@runtime_checkable
class Objective(Protocol):
    """What turns a batch into a loss: ``objective(model, batch, device) -> ObjectiveOutput``."""

    metric_names: tuple[str, ...]
    """The keys of every output's ``metrics`` (an evaluation sums them across processes)."""

    def __call__(
        self, model: nn.Module, batch: Any, device: torch.device | str | None = None
    ) -> ObjectiveOutput:
        """The loss of ``model`` on ``batch`` (moved to ``device`` when given)."""
        ...

    def tokens(self, batch: Any) -> int:
        """The input tokens ``batch`` feeds the model (the log's ``tokens_seen``, tokens/s)."""
        ...


def to_device(batch: Any, device: torch.device | str | None) -> Any:
    """``batch`` (a tensor, or a tuple, list or dict of them) on ``device`` (as is if None)."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
