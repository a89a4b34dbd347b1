"""Benchmark: chapter 10's learning from rewards, measured (``sydsgpt bench --what rewards``).

**The task**: one-digit arithmetic (``add``, ``sub``, ``mul`` of
:func:`sydsgpt.rewards.make_tasks` at difficulty 1: every one of the 300 questions, shuffled
with seed 0), 200 for training and :data:`HELD_OUT` (100) held out; scored by
:func:`sydsgpt.rewards.reward` on the greedy answer (:func:`sydsgpt.rollouts.accuracy`).

**The policy**: SmolLM2-135M-Instruct in its own chat format, with LoRA (rank 8, alpha 16,
every linear layer of the blocks). It needs no format SFT first: a probe (40 questions per
kind, greedy, 2026-12-07) gave 19/40 on ``add``, 5/40 on ``sub`` and 26/40 on ``mul``, well
below the ceiling, and its replies (``The answer is 18.``) are read by the parser's
last-number rule. A 2-digit ``add`` probe gave 5/40, and its samples at temperature 0.5 had
a right answer in 2 of 8 groups: too few groups to learn from on two cores.

**Rows** (:data:`METHODS`, each with :data:`SEEDS`: the adapters' initial values, the tasks
of each step and the samples), every one :data:`STEPS` optimizer steps of
:func:`sydsgpt.reward_training.train_with_rewards` with its defaults
(:class:`~sydsgpt.reward_training.RewardConfig`):

* ``start``: the policy before training (greedy, so one value);
* ``grpo``: each step samples 8 answers to each of 8 training tasks at temperature 0.7;
* ``dpo``: the policy first answers :data:`DPO_TASKS` training tasks 8 times; each group
  with a right and a wrong answer gives a pair; each step learns from 8 pairs;
* ``sft``: each step learns the correct ``Answer: <n>`` of 8 training tasks.

Each row reports held-out accuracy as the mean over seeds with a 95% confidence interval
(Student's t with ``n - 1`` degrees of freedom), its curve at every evaluated step, the
reward curve (GRPO), the CPU seconds of training and of evaluation, and a few answers.

Sizing: a pilot (2 threads, shared machine) took 27 s per GRPO step (10 s sampling 64
answers, 17 s forward and backward) and about 10 s per held-out evaluation; DPO's sampling of
64 tasks x 8 is 8 such batches (~80 s), its steps and SFT's ~3 s each. So per seed GRPO
~8.5 min, DPO ~3.5 min, SFT ~1.5 min with five evaluations each: about 42 minutes for 3
seeds, on a quiet machine. Measured: 34 min 5 s with 2 threads from a load average of 0.59
(2026-12-07; GRPO 4.6 to 5.9 min a seed, DPO 4.0 to 4.6, SFT 1.1 to 1.3).
"""

from __future__ import annotations

import copy
import math
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..lora import LoRAConfig, apply_lora
from ..reward_training import RewardConfig, task_split, train_with_rewards
from ..rewards import Task
from ..rollouts import accuracy
from ..train_config import Session
from .common import interval, report, torch_threads

METHODS = ("grpo", "dpo", "sft")
SEEDS = (0, 1, 2)
STEPS = 16
HELD_OUT = 100
DPO_TASKS = 64
THREADS = 2
KINDS = ("add", "sub", "mul")


def split_tasks(quick: bool = False) -> tuple[list[Task], list[Task]]:
    """The training and held-out tasks: all 300 one-digit questions, shuffled with seed 0
    (:func:`~sydsgpt.reward_training.task_split`)."""
    train, held = task_split(KINDS, 1, 200, HELD_OUT, seed=0)
    return (train[:12], held[:4]) if quick else (train, held)


def config(method: str, seed: int, quick: bool = False) -> RewardConfig:
    """The benchmark's settings of one run (the quick run: 2 short steps)."""
    if quick:
        return RewardConfig(
            method=method,
            seed=seed,
            steps=2,
            tasks_per_step=3,
            group_size=4,
            max_new_tokens=4,
            temperature=1.5,
            eval_every=2,
            lr=1e-2,
        )
    return RewardConfig(method=method, seed=seed, steps=STEPS)


def _base(quick: bool) -> tuple[nn.Module, Any, str]:
    if quick:
        from .instruct import _quick_chat_base

        return _quick_chat_base()
    from ..smollm2 import find_smollm2, load_smollm2

    model, tokenizer = load_smollm2(context_length=256)
    return model, tokenizer, f"SmolLM2-135M-Instruct ({find_smollm2().name})"


def _run_one(
    base: nn.Module,
    tokenizer: Any,
    method: str,
    seed: int,
    quick: bool,
    train: list[Task],
    held: list[Task],
) -> dict[str, Any]:
    cfg = config(method, seed, quick)
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    apply_lora(model, LoRAConfig.from_dict(cfg.lora))
    tasks = train
    if method == "dpo":  # DPO answers DPO_TASKS tasks once, before training
        tasks = random.Random(f"dpo:{seed}").sample(train, min(DPO_TASKS, len(train)))
    start = time.process_time()
    wall = time.perf_counter()
    history = train_with_rewards(model, tokenizer, tasks, held, cfg, Session(show_progress=False))
    cpu_s, wall_s = time.process_time() - start, time.perf_counter() - wall
    final = accuracy(model, tokenizer, held)
    return {
        "seed": seed,
        "accuracy": final.accuracy,
        "correct": final.correct,
        "curve": [
            {
                k: r[k]
                for k in (
                    "step",
                    "accuracy",
                    "reward",
                    "loss",
                    "seconds",
                    "groups_with_signal",
                    "reward_accuracy",
                )
                if k in r
            }
            for r in history
        ],
        "cpu_s": round(cpu_s, 1),
        "wall_s": round(wall_s, 1),
        "eval_wall_s": round(sum(r.get("eval_s", 0.0) for r in history), 1),
        "answers": [{"question": t.prompt, "answer": a} for t, a in zip(held[:6], final.texts)],
    }


def run(
    out: str | os.PathLike[str] | None,
    *,
    quick: bool = False,
    threads: int = THREADS,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Measure every row; the JSON is written after each run (a stopped run keeps its rows)."""
    load_before, started = os.getloadavg()[0], time.perf_counter()
    with torch_threads(threads):
        base, tokenizer, name = _base(quick)
        train, held = split_tasks(quick)
        start = accuracy(base, tokenizer, held)
        rows: list[dict[str, Any]] = [
            {
                "method": "start",
                "accuracy": start.accuracy,
                "interval": 0.0,
                "correct": start.correct,
                "seeds": 0,
                "answers": [
                    {"question": t.prompt, "answer": a} for t, a in zip(held[:6], start.texts)
                ],
            }
        ]
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}

        def write() -> dict[str, Any]:
            table = rows[:1] + [_summary(m, r) for m, r in runs.items() if r]
            return report(
                table,
                ["method", "accuracy", "interval", "seeds", "cpu_min", "wall_min"],
                out,
                "rewards",
                log=None,
                model=name,
                task="one-digit add, sub and mul (300 questions)",
                train_tasks=len(train),
                held_out=len(held),
                steps=config("grpo", 0, quick).steps,
                seeds=list(SEEDS),
                threads=threads,
                load_before=round(load_before, 2),
                wall_s=round(time.perf_counter() - started, 1),
                configs={m: vars(config(m, 0, quick)) for m in methods},
            )

        for seed in SEEDS[:1] if quick else SEEDS:
            for method in sorted(methods, key=lambda m: ("sft", "dpo", "grpo").index(m)):
                try:
                    runs[method].append(_run_one(base, tokenizer, method, seed, quick, train, held))
                except ValueError as error:  # the quick run's random model: no DPO pairs
                    if not quick:
                        raise
                    print(f"{method}: {error}", flush=True)
                payload = write()
        payload = write()
    print(_table(payload["rows"]), flush=True)
    return payload


def _summary(method: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    mean, half = interval([r["accuracy"] for r in runs])
    return {
        "method": method,
        "accuracy": mean,
        "interval": half,
        "seeds": len(runs),
        "cpu_min": round(statistics.fmean(r["cpu_s"] for r in runs) / 60, 2),
        "wall_min": round(statistics.fmean(r["wall_s"] for r in runs) / 60, 2),
        "per_seed": runs,
    }


def _table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'method':8} {'held-out accuracy':>22} {'seeds':>5} {'CPU min':>8} {'wall min':>8}"]
    for row in rows:
        half = row["interval"]
        spread = "" if not half or math.isnan(half) else f" +- {half:.3f}"
        cpu, wall = row.get("cpu_min", ""), row.get("wall_min", "")
        lines.append(
            f"{row['method']:8} {row['accuracy']:>12.3f}{spread:>10} "
            f"{row['seeds']:>5} {cpu:>8} {wall:>8}"
        )
    return "\n".join(lines)


def committed(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The committed result (``results/rewards_cpu.json``)."""
    import json

    from .common import RESULTS_DIR

    return json.loads(Path(path or RESULTS_DIR / "rewards_cpu.json").read_text())


PROBE_KINDS = (
    ("add", 1),
    ("sub", 1),
    ("mul", 1),
    ("add", 2),
    ("sub", 2),
    ("countdown", 3),
    ("count", 4),
)
"""The task kinds and difficulties the policy was chosen on (:func:`probe`)."""
PROBE_SAMPLED = (("add", 1), ("add", 2))
"""Where :func:`probe` also samples groups, to count the groups GRPO could learn from."""


def probe(out: str | os.PathLike[str] | None, *, threads: int = THREADS) -> dict[str, Any]:
    """How the chapter chose its task: SmolLM2's greedy accuracy on 40 questions (seed 1) of
    each of :data:`PROBE_KINDS`, and for :data:`PROBE_SAMPLED` 8 answers at temperature 0.7
    to each of 8 questions (seed 2): the mean reward and the groups with a right and a wrong
    answer (the only groups GRPO learns from). Written to ``out`` (``rewards_probe_cpu.json``).
    """
    from ..rollouts import sample_answers
    from ..rewards import make_tasks

    load_before, started = os.getloadavg()[0], time.perf_counter()
    rows: list[dict[str, Any]] = []
    with torch_threads(threads):
        model, tokenizer, name = _base(False)
        for kind, difficulty in PROBE_KINDS:
            tasks = make_tasks(kind, 40, difficulty, seed=1)
            result = accuracy(model, tokenizer, tasks)
            row: dict[str, Any] = {
                "kind": kind,
                "difficulty": difficulty,
                "greedy_right": sum(result.correct),
                "questions": len(tasks),
                "example": result.texts[0][:80],
            }
            if (kind, difficulty) in PROBE_SAMPLED:
                rollout = sample_answers(
                    model,
                    tokenizer,
                    make_tasks(kind, 8, difficulty, seed=2),
                    8,
                    generator=torch.Generator().manual_seed(0),
                )
                row["sampled_reward"] = float(rollout.rewards.mean())
                row["mixed_groups"] = int(rollout.mixed_groups().sum())
                row["groups"] = len(rollout.tasks)
            rows.append(row)
    return report(
        rows,
        ["kind", "difficulty", "greedy_right", "questions", "sampled_reward", "mixed_groups"],
        out,
        "rewards_probe",
        model=name,
        threads=threads,
        load_before=round(load_before, 2),
        wall_s=round(time.perf_counter() - started, 1),
    )
