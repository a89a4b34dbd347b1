"""The loop that learns from rewards (chapter 10): GRPO, DPO, or more SFT, step by step.

:func:`train_with_rewards` runs one of :data:`METHODS` on a LoRA policy for a number of
optimizer steps, each one :func:`sydsgpt.train.train_step` with the method's objective:

- ``grpo``: every step samples a group of answers to ``tasks_per_step`` training tasks and
  learns from their group-relative advantages (:mod:`sydsgpt.grpo`);
- ``dpo``: before the first step, the policy answers every training task ``group_size``
  times; a right and a wrong answer to one task make a pair, the reference scores every
  pair once, and every step learns from ``tasks_per_step`` pairs (:mod:`sydsgpt.dpo`);
- ``sft``: every step learns the correct answers of ``tasks_per_step`` training tasks
  (``Answer: <answer>``) by next-token prediction, the finetuning chapter's objective.

What a step sees is decided by ``(seed, step)`` alone (which tasks, the sampling
generator), so a run stopped after any checkpoint and resumed (``resume=True``) ends with
exactly the weights of an uninterrupted run. The log (``log.jsonl``), the state
(``state.pt``: adapter, optimizer, history) and, at the end, ``adapter.safetensors`` go to
``out_dir``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from .dpo import DPOObjective, pair_batches, preference_pairs
from .files import atomic_write
from .grpo import GRPOObjective, grpo_batches
from .instruct import collate_instructions, end_token_id, tokenize_example
from .lora import ADAPTER_NAME, LoRAConfig, lora_layers, save_adapter
from .losses import NextTokenObjective
from .rewards import Task, ask, count_tasks, make_tasks
from .rollouts import ANSWER_TOKENS, accuracy, sample_answers
from .train import train_step
from .train_config import Session
from .validation import check_choice, check_int, check_real

METHODS = ("grpo", "dpo", "sft")
"""What :func:`train_with_rewards` can run."""

STATE_NAME = "state.pt"
LOG_NAME = "log.jsonl"


@dataclass
class RewardConfig:
    """One run of :func:`train_with_rewards`. Every default is the chapter's benchmark's."""

    method: str = "grpo"
    """One of :data:`METHODS`."""
    steps: int = 16
    """Optimizer steps."""
    tasks_per_step: int = 8
    """Tasks a GRPO step samples groups for; pairs (DPO) or examples (SFT) per step."""
    group_size: int = 8
    """Answers sampled per task (GRPO every step, DPO once before training)."""
    temperature: float = 0.7
    """Sampling temperature of the answers."""
    max_new_tokens: int = ANSWER_TOKENS
    """The most tokens of a sampled or greedy answer."""
    lr: float = 5e-4
    """AdamW's learning rate (constant; no weight decay on the adapters)."""
    clip: float = 0.2
    """GRPO's PPO clip range: the ratio p / p_old counts only within [1 - clip, 1 + clip]."""
    kl: float = 0.0
    """GRPO's weight of the KL penalty towards the reference (0: off)."""
    beta: float = 0.1
    """DPO's beta: how far the policy may move from the reference."""
    micro_batch_size: int = 16
    """Sequences per forward pass (gradient accumulation over the rest of a step)."""
    eval_every: int = 4
    """Held-out greedy accuracy every this many steps (and at step 0 and the end)."""
    checkpoint_every: int = 4
    """Save the state every this many steps (and at the last step)."""
    seed: int = 0
    """Decides the adapters' start (the caller seeds them), each step's tasks and samples."""
    lora: dict[str, Any] = field(default_factory=lambda: {"rank": 8, "alpha": 16.0})
    """The LoRA adapters' settings (:class:`~sydsgpt.lora.LoRAConfig` fields)."""

    def __post_init__(self) -> None:
        check_choice(self.method, "RewardConfig.method", METHODS)
        for name in (
            "steps",
            "tasks_per_step",
            "group_size",
            "max_new_tokens",
            "micro_batch_size",
            "eval_every",
            "checkpoint_every",
        ):
            check_int(getattr(self, name), f"RewardConfig.{name}", minimum=1)
        check_int(self.seed, "RewardConfig.seed")
        for name in ("temperature", "lr", "beta"):
            check_real(getattr(self, name), f"RewardConfig.{name}", low=0.0, low_open=True)
        for name in ("clip", "kl"):
            check_real(getattr(self, name), f"RewardConfig.{name}", low=0.0)


def task_split(
    kinds: Sequence[str], difficulty: int, n_train: int, n_held: int, seed: int = 0
) -> tuple[list[Task], list[Task]]:
    """``(train, held_out)``: distinct questions of ``kinds``, as even a share of each kind as
    exists (at most ``ceil((n_train + n_held) / len(kinds))`` per kind), shuffled with ``seed``;
    the first ``n_train`` train, the next ``n_held`` are held out."""
    per_kind = -(-(n_train + n_held) // len(kinds))
    tasks = [
        task
        for kind in kinds
        for task in make_tasks(kind, min(per_kind, count_tasks(kind, difficulty)), difficulty, seed)
    ]
    if len(tasks) < n_train + n_held:
        raise ValueError(
            f"only {len(tasks)} distinct questions of {', '.join(kinds)} at difficulty "
            f"{difficulty}; ask for fewer than {n_train} + {n_held}"
        )
    random.Random(seed).shuffle(tasks)
    return tasks[:n_train], tasks[n_train : n_train + n_held]


def _step_draw(items: Sequence[Any], config: RewardConfig, step: int) -> list[Any]:
    """What ``step`` learns from: ``tasks_per_step`` of ``items`` (tasks, or DPO's pair
    indices), a draw decided by ``(seed, step)`` only."""
    rng = random.Random(f"{config.seed}:{step}")
    return rng.sample(list(items), min(config.tasks_per_step, len(items)))


def _generator(config: RewardConfig, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(config.seed * 1_000_003 + step)


def sft_records(tasks: Sequence[Task]) -> list[dict[str, str]]:
    """Tasks as instruction records whose output is the correct ``Answer: <answer>`` line."""
    return [{"instruction": ask(t), "input": "", "output": f"Answer: {t.answer}"} for t in tasks]


def _sft_batches(tokenizer: Any, tasks: Sequence[Task], micro: int) -> list[Any]:
    end_id = end_token_id(tokenizer)
    examples = [tokenize_example(r, tokenizer, end_id) for r in sft_records(tasks)]
    return [
        collate_instructions(examples[i : i + micro], end_id)
        for i in range(0, len(examples), micro)
    ]


class _Method:
    """What one method feeds each step; ``prepare`` runs once (its result is saved)."""

    def __init__(self, config: RewardConfig, tokenizer: Any, tasks: Sequence[Task]) -> None:
        self.config, self.tokenizer, self.tasks = config, tokenizer, list(tasks)
        self.objective: Any = {
            "grpo": lambda: GRPOObjective(config.clip, config.kl),
            "dpo": lambda: DPOObjective(config.beta),
            "sft": NextTokenObjective,
        }[config.method]()
        self.data: dict[str, Any] = {}

    def prepare(self, model: nn.Module) -> dict[str, Any]:
        if self.config.method != "dpo":
            return {}
        cfg = self.config
        rollout = sample_answers(
            model,
            self.tokenizer,
            self.tasks,
            cfg.group_size,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            generator=_generator(cfg, -1),
        )
        pairs = preference_pairs(rollout, end_token_id(self.tokenizer))
        if len(pairs.chosen) == 0:
            raise ValueError(
                "no preference pairs: every group of answers was all right or all wrong; use "
                "more tasks, a larger group_size or a higher temperature"
            )
        batches = pair_batches(model, pairs, batch_size=len(pairs.chosen))
        return {"pairs": batches[0], "sample_reward": float(rollout.rewards.mean())}

    def batches(self, model: nn.Module, step: int) -> tuple[list[Any], dict[str, float]]:
        cfg = self.config
        if cfg.method == "sft":
            tasks = _step_draw(self.tasks, cfg, step)
            return _sft_batches(self.tokenizer, tasks, cfg.micro_batch_size), {}
        if cfg.method == "dpo":
            pairs = self.data["pairs"]
            n = len(pairs["chosen"])
            rows = _step_draw(range(n), cfg, step)
            picked = {key: value[rows] for key, value in pairs.items()}
            parts = torch.arange(len(rows)).split(max(cfg.micro_batch_size // 2, 1))
            return [{k: v[p] for k, v in picked.items()} for p in parts], {}
        rollout = sample_answers(
            model,
            self.tokenizer,
            _step_draw(self.tasks, cfg, step),
            cfg.group_size,
            temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens,
            generator=_generator(cfg, step),
        )
        info = {
            "reward": float(rollout.rewards.mean()),
            "groups_with_signal": float(rollout.mixed_groups().float().mean()),
            "answer_tokens": float(rollout.answer_mask.sum(1).mean()),
        }
        return grpo_batches(rollout, cfg.micro_batch_size, model=model, kl=cfg.kl), info


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _append_log(out_dir: Path | None, record: dict[str, Any]) -> None:
    if out_dir is not None:
        with open(out_dir / LOG_NAME, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _save_state(out_dir: Path, model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    payload = {
        "trainable": {k: v.detach().clone() for k, v in _trainable(model).items()},
        "optimizer": optimizer.state_dict(),
        **state,
    }
    atomic_write(out_dir / STATE_NAME, lambda f: torch.save(payload, f))


def train_with_rewards(
    model: nn.Module,
    tokenizer: Any,
    train_tasks: Sequence[Task],
    eval_tasks: Sequence[Task],
    config: RewardConfig,
    session: Session = Session(),
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``config.method`` on ``model`` (which must carry LoRA adapters) and return the
    history: one record per step (``step``, ``loss``, ``seconds``, the method's numbers) and
    ``accuracy`` (greedy, on ``eval_tasks``) on the evaluated steps, step 0 first.

    ``session`` is :func:`~sydsgpt.train.train`'s: ``out_dir`` (``None``: nothing is written),
    ``resume`` (continue the run saved there), ``stop_after`` (end after that step, as an
    interrupted run would after its last checkpoint), ``show_progress``. ``on_step`` is called
    with each step's record.
    """
    if not lora_layers(model):
        raise ValueError("train_with_rewards trains LoRA adapters: apply_lora(model) first")
    if not train_tasks:
        raise ValueError("no training tasks")
    out = Path(session.out_dir) if session.out_dir is not None else None
    resume, stop_after = bool(session.resume), session.stop_after
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    method = _Method(config, tokenizer, train_tasks)
    optimizer = torch.optim.AdamW(list(_trainable(model).values()), lr=config.lr, weight_decay=0)
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        if out is None or not (out / STATE_NAME).exists():
            raise FileNotFoundError(f"nothing to resume: no {STATE_NAME} in {out}")
        saved = torch.load(out / STATE_NAME, weights_only=False)
        if saved["config"] != asdict(config) | {"steps": saved["config"]["steps"]}:
            raise ValueError(
                f"{out / STATE_NAME} was written by a run with another config; resume with the "
                "same options (only --steps may change)"
            )
        with torch.no_grad():
            for name, p in _trainable(model).items():
                p.copy_(saved["trainable"][name])
        optimizer.load_state_dict(saved["optimizer"])
        history, start, method.data = saved["history"], saved["step"], saved["data"]
    else:
        if out is not None and (out / LOG_NAME).exists():
            (out / LOG_NAME).unlink()
        method.data = method.prepare(model)

    def evaluate(record: dict[str, Any]) -> None:
        if eval_tasks:
            t0 = time.perf_counter()
            record["accuracy"] = accuracy(model, tokenizer, eval_tasks).accuracy
            record["eval_s"] = time.perf_counter() - t0

    if start == 0:
        first: dict[str, Any] = {"step": 0}
        evaluate(first)
        history.append(first)
        _append_log(out, first)
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(
        range(start + 1, last + 1),
        desc=config.method,
        disable=not session.show_progress,
        initial=start,
        total=config.steps,
    )
    for step in bar:
        t0 = time.perf_counter()
        model.train()
        batches, info = method.batches(model, step)
        record: dict[str, Any] = {"step": step, **info}
        if batches:
            metrics: dict[str, float] = {}
            loss, norm = train_step(
                model, batches, optimizer, objective=method.objective, step=step, metrics=metrics
            )
            record.update(loss=loss, grad_norm=norm, **metrics)
        else:
            record["skipped"] = True  # every group had one reward for all: no gradient
        model.eval()
        record["seconds"] = time.perf_counter() - t0
        if step % config.eval_every == 0 or step == config.steps:
            evaluate(record)
        history.append(record)
        _append_log(out, record)
        if on_step is not None:
            on_step(record)
        shown = {k: round(record[k], 3) for k in ("loss", "reward", "accuracy") if k in record}
        bar.set_postfix(shown)
        if out is not None and (step % config.checkpoint_every == 0 or step == last):
            state = {
                "step": step,
                "history": history,
                "data": method.data,
                "config": asdict(config),
            }
            _save_state(out, model, optimizer, state)
    if out is not None and last == config.steps:
        save_adapter(
            out / ADAPTER_NAME, model, LoRAConfig.from_dict(config.lora), {"method": config.method}
        )
    return history


def plot_reward_history(
    history: Sequence[dict[str, Any]], path: str | Path | None = None, title: str = ""
) -> Any:
    """Held-out accuracy at each evaluated step and, where the run sampled (GRPO), the mean
    reward of each step's samples; saved to ``path`` when given. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    scored = [(r["step"], r["accuracy"]) for r in history if "accuracy" in r]
    sampled = [(r["step"], r["reward"]) for r in history if "reward" in r]
    if scored:
        ax.plot(*zip(*scored), "o-", label="held-out accuracy (greedy)")
    if sampled:
        ax.plot(*zip(*sampled), ".-", alpha=0.6, label="mean reward of the step's samples")
    ax.set(xlabel="optimizer step", ylabel="share correct", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    if path is not None:
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return fig
