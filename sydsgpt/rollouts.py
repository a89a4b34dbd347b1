"""A policy's answers to verifiable tasks, scored (chapter 10): what DPO and GRPO learn from.

Learning from rewards starts the same way for every method: ask the model a batch of
:class:`~sydsgpt.rewards.Task` questions in its own chat format, let it answer, and score
each answer with :func:`sydsgpt.rewards.reward`. This module does that step:

- :func:`sample_answers`: ``group_size`` sampled answers per task, batched with the KV cache
  (prompts of one token length go through together), as a padded :class:`Rollout`;
- :func:`token_logprobs`: the log-probability the model gives each answer token (the
  quantity every objective of the chapter is built from), optionally under the reference
  model (:func:`adapters_off`: the LoRA policy with its adapters switched off);
- :func:`accuracy`: greedy held-out accuracy, the number the chapter's tables report.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .generate import generate
from .instruct import end_token_id, prompt_ids
from .lora import lora_layers
from .rewards import Task, ask, reward

ANSWER_TOKENS = 24
"""How many tokens an answer may have (a 1-digit arithmetic reply takes 7 to 12)."""


@dataclass
class Rollout:
    """Sampled answers to tasks, padded into one batch.

    Row ``i`` answers ``tasks[i // group_size]``: ``ids[i]`` is its prompt followed by its
    answer (right-padded with the end token), and ``answer_mask[i, t]`` is 1 where
    ``ids[i, t + 1]`` is an answer token (the answer's own end token included), so it lines up
    with :func:`token_logprobs`, which scores ``ids[:, 1:]``.
    """

    ids: torch.Tensor
    """``(N, T)`` int64: prompt and answer of every sample."""
    answer_mask: torch.Tensor
    """``(N, T - 1)`` float: 1 on positions that predict an answer token."""
    rewards: torch.Tensor
    """``(N,)`` float: :func:`~sydsgpt.rewards.reward` of each decoded answer."""
    texts: list[str]
    """The decoded answers (without the end token)."""
    tasks: list[Task]
    """The tasks asked, once each (``N = len(tasks) * group_size``)."""
    group_size: int

    def groups(self) -> torch.Tensor:
        """``(len(tasks), group_size)``: the rewards, one row per task."""
        return self.rewards.view(len(self.tasks), self.group_size)

    def mixed_groups(self) -> torch.Tensor:
        """``(len(tasks),)`` bool: the groups whose rewards are not all equal (the only ones
        GRPO learns from)."""
        groups = self.groups()
        return groups.min(dim=1).values != groups.max(dim=1).values


def _by_length(prompts: Sequence[list[int]]) -> dict[int, list[int]]:
    """Indices of ``prompts`` grouped by token length (one generation batch per length)."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(len(ids), []).append(i)
    return groups


def _answers(
    model: nn.Module,
    prompts: Sequence[list[int]],
    max_new_tokens: int,
    end_id: int,
    generator: torch.Generator | None,
    **options: Any,
) -> list[list[int]]:
    """Each prompt's answer ids, up to and including its first end token."""
    answers: list[list[int]] = [[] for _ in prompts]
    for length, rows in _by_length(prompts).items():
        batch = torch.tensor([prompts[i] for i in rows])
        out = generate(model, batch, max_new_tokens, eos_id=end_id, generator=generator, **options)
        for i, new in zip(rows, out[:, length:].tolist()):
            answers[i] = new[: new.index(end_id) + 1] if end_id in new else new
    return answers


def _decode(tokenizer: Any, answer: list[int], end_id: int) -> str:
    return tokenizer.decode(answer[:-1] if answer and answer[-1] == end_id else answer)


def sample_answers(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[Task],
    group_size: int,
    *,
    temperature: float = 0.7,
    max_new_tokens: int = ANSWER_TOKENS,
    generator: torch.Generator | None = None,
) -> Rollout:
    """``group_size`` answers to each task, sampled at ``temperature`` and scored.

    The prompt is :func:`~sydsgpt.rewards.ask` in the model's chat format
    (:func:`~sydsgpt.instruct.prompt_ids`). ``generator`` makes the samples reproducible.
    """
    end_id = end_token_id(tokenizer)
    asked = [prompt_ids(ask(task), tokenizer) for task in tasks]
    prompts = [ids for ids in asked for _ in range(group_size)]
    answers = _answers(model, prompts, max_new_tokens, end_id, generator, temperature=temperature)
    texts = [_decode(tokenizer, answer, end_id) for answer in answers]
    scores = [reward(tasks[i // group_size], text) for i, text in enumerate(texts)]
    ids, mask = pad_answers(prompts, answers, end_id)
    return Rollout(ids, mask, torch.tensor(scores), texts, list(tasks), group_size)


def pad_answers(
    prompts: Sequence[list[int]], answers: Sequence[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prompt + answer`` rows right-padded with ``pad_id``, and the answer mask
    (``(N, T - 1)``, 1 where the next token is an answer token)."""
    rows = [list(p) + list(a) for p, a in zip(prompts, answers)]
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length - 1)
    for i, (prompt, answer) in enumerate(zip(prompts, answers)):
        ids[i, : len(rows[i])] = torch.tensor(rows[i])
        mask[i, len(prompt) - 1 : len(prompt) - 1 + len(answer)] = 1.0
    return ids, mask


def token_logprobs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``(B, T - 1)``: ``log p(ids[:, t + 1] | ids[:, : t + 1])`` under ``model`` (float32)."""
    logits = model(ids[:, :-1]).float()  # (B, T - 1, V)
    return -F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T - 1)


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """The model without its LoRA updates (the frozen reference), for the ``with`` block.

    Every :class:`~sydsgpt.lora.LoRALinear` scales its update by 0 inside the block, so the
    policy and the reference share one copy of the weights.
    """
    layers = list(lora_layers(model).values())
    if not layers:
        raise ValueError(
            "the model has no LoRA adapters, so it has no reference to switch to; apply_lora() "
            "first, or keep a frozen copy of the model as the reference"
        )
    if any(layer.merged for layer in layers):
        raise ValueError("the adapters are merged into the weights; unmerge_lora() first")
    saved = [layer.scaling for layer in layers]
    try:
        for layer in layers:
            layer.scaling = 0.0
        yield model
    finally:
        for layer, scaling in zip(layers, saved):
            layer.scaling = scaling


@torch.no_grad()
def reference_logprobs(model: nn.Module, ids: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """:func:`token_logprobs` under the reference (:func:`adapters_off`), in batches."""
    with adapters_off(model):
        return torch.cat([token_logprobs(model, part) for part in ids.split(batch_size)])


@dataclass
class Accuracy:
    """Greedy answers to held-out tasks, scored."""

    accuracy: float
    """The share of tasks answered correctly."""
    correct: list[bool]
    """Per task, in order (for paired comparisons between models)."""
    texts: list[str]
    """Each greedy answer."""


@torch.no_grad()
def accuracy(
    model: nn.Module,
    tokenizer: Any,
    tasks: Sequence[Task],
    *,
    max_new_tokens: int = ANSWER_TOKENS,
) -> Accuracy:
    """Greedy (temperature 0) accuracy on ``tasks``: the held-out number of the chapter."""
    end_id = end_token_id(tokenizer)
    prompts = [prompt_ids(ask(task), tokenizer) for task in tasks]
    answers = _answers(model, prompts, max_new_tokens, end_id, None)
    texts = [_decode(tokenizer, answer, end_id) for answer in answers]
    correct = [reward(task, text) == 1.0 for task, text in zip(tasks, texts)]
    return Accuracy(sum(correct) / max(len(tasks), 1), correct, texts)
