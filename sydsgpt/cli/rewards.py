"""``sydsgpt finetune grpo`` and ``sydsgpt finetune dpo`` (chapter 10): learn from a reward.

The run (:data:`DESCRIPTION`) is :func:`sydsgpt.reward_training.train_with_rewards` on
questions of :mod:`sydsgpt.rewards`, with LoRA adapters; :data:`EXAMPLES` are its help's
examples.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..instruct import add_end_token
from ..lora import LoRAConfig, apply_lora
from ..reward_training import (
    STATE_NAME,
    RewardConfig,
    plot_reward_history,
    task_split,
    train_with_rewards,
)
from ..rewards import KINDS, count_tasks, difficulty_range
from ..runtime import seed_everything
from ..train_config import Session
from ..validation import check_positive_int
from .bases import check_base, load_base
from .errors import EXIT_STATUS_HELP, UsageError
from .options import add_config_options, config_from_args
from .runs import check_run_folder

DESCRIPTION = (
    "The model answers generated questions whose answers a program checks (add, sub, mul, "
    "countdown, count, with a difficulty) and learns from the scores with LoRA adapters. The "
    "run folder (--out) gets log.jsonl (a record per step), state.pt (the checkpoint: --resume "
    "continues it exactly), run.json (the options and the held-out accuracy at every "
    "evaluation), rewards.png (held-out accuracy and, for GRPO, the mean reward per step) and, "
    "at the end, adapter.safetensors."
)
EXAMPLES = """examples:
  sydsgpt finetune grpo --steps 16 --out runs/grpo
  sydsgpt finetune dpo --task add,mul --train-tasks 140 --held-out 60 --out runs/dpo
  sydsgpt finetune grpo --task countdown --difficulty 3 --group-size 16 --out runs/countdown"""
PLOT_NAME = "rewards.png"
RUN_NAME = "run.json"
DEFAULT_BASE = "smollm2-135m-instruct"


INTERNAL = ("method", "lora", "max_new_tokens", "micro_batch_size", "checkpoint_every")
"""RewardConfig fields without an option (the command decides them; checkpoints follow
--eval-every)."""


def add_commands(tasks: Any, base_help: str) -> None:
    """Add the ``grpo`` and ``dpo`` subcommands to ``sydsgpt finetune``'s ``tasks``."""
    for method, summary in (
        ("grpo", "learn from a reward by comparing sampled answers in groups (chapter 10)"),
        ("dpo", "learn from pairs of a right and a wrong answer of the model's own (chapter 10)"),
    ):
        parser = tasks.add_parser(
            method,
            help=summary,
            description=textwrap.fill(f"{summary}. {DESCRIPTION}", 88),
            epilog=EXAMPLES + "\n\n" + EXIT_STATUS_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument(
            "--base",
            default=DEFAULT_BASE,
            metavar="SPEC",
            help=f"{base_help} (default: {DEFAULT_BASE})",
        )
        task = parser.add_argument_group("the task")
        task.add_argument(
            "--task",
            default="add,sub,mul",
            metavar="KIND[,KIND]",
            help=f"task kinds, comma-separated, of {', '.join(KINDS)} (default: add,sub,mul)",
        )
        task.add_argument(
            "--difficulty",
            type=int,
            default=1,
            metavar="D",
            help="digits per operand (arithmetic), numbers given (countdown), "
            "word length (count); default 1",
        )
        task.add_argument(
            "--train-tasks",
            type=int,
            default=200,
            metavar="N",
            help="training questions (default 200)",
        )
        task.add_argument(
            "--held-out",
            type=int,
            default=100,
            metavar="N",
            help="held-out questions, scored greedily (default 100)",
        )
        run = parser.add_argument_group("training (sydsgpt.reward_training.RewardConfig)")
        skip = INTERNAL + (("beta",) if method == "grpo" else ("clip", "kl"))
        add_config_options(run, RewardConfig, skip=skip)
        run.add_argument(
            "--lora-rank",
            type=int,
            default=8,
            metavar="R",
            help="rank of the LoRA adapters (default 8; alpha = 2 R)",
        )
        if method == "dpo":
            run.add_argument(
                "--pair-tasks",
                type=int,
                default=64,
                metavar="N",
                help="questions the model answers --group-size times before training, for the "
                "pairs (default 64)",
            )
        out = parser.add_argument_group("run")
        out.add_argument(
            "--out",
            default=None,
            metavar="DIR",
            help=f"output directory (default: runs/finetune-{method})",
        )
        out.add_argument(
            "--resume",
            action="store_true",
            help=f"continue from DIR/{STATE_NAME} (same options; --steps may grow)",
        )
        out.add_argument(
            "--stop-after",
            type=int,
            default=None,
            metavar="STEP",
            help="end this session after STEP steps; --resume continues it",
        )
        out.add_argument("--quiet", action="store_true", help="no progress bar")
        parser.set_defaults(_task=run_rewards, _method=method, _parser=parser)


def _kinds(spec: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if not kinds or unknown:
        raise UsageError(
            f"--task {spec}: unknown kind {unknown or spec!r}; use some of "
            f"{', '.join(KINDS)}, comma-separated"
        )
    return kinds


def _check(args: argparse.Namespace) -> tuple[tuple[str, ...], RewardConfig, Path]:
    """Every option checked before anything is loaded or written."""
    kinds = _kinds(args.task)
    for kind in kinds:
        low, high = difficulty_range(kind)
        if not isinstance(args.difficulty, int) or not low <= args.difficulty <= high:
            raise UsageError(f"--difficulty {args.difficulty}: {kind} tasks take {low} to {high}")
    for name in ("train_tasks", "held_out", "lora_rank", "pair_tasks"):
        check_positive_int(getattr(args, name, 1), "--" + name.replace("_", "-"))
    check_positive_int(args.stop_after, "--stop-after", allow_none=True)
    # the training options: RewardConfig checks them (errors name the --option)
    config = config_from_args(
        RewardConfig,
        args,
        method=args._method,
        checkpoint_every=args.eval_every,
        lora={"rank": args.lora_rank, "alpha": 2.0 * args.lora_rank},
    )
    available = sum(count_tasks(kind, args.difficulty) for kind in kinds)
    wanted = args.train_tasks + args.held_out
    if wanted > available:
        raise UsageError(
            f"--train-tasks {args.train_tasks} + --held-out {args.held_out} = {wanted} questions, "
            f"but only {available} distinct {args.task} questions exist at difficulty "
            f"{args.difficulty}; ask for fewer or raise --difficulty"
        )
    out = Path(args.out or Path("runs") / f"finetune-{args._method}")
    check_run_folder(out, args.resume, STATE_NAME)
    return kinds, config, out


def run_rewards(args: argparse.Namespace) -> int:
    """Run ``sydsgpt finetune grpo`` or ``dpo``."""
    kinds, config, out = _check(args)
    check_base(args.base)
    train, held = task_split(kinds, args.difficulty, args.train_tasks, args.held_out, args.seed)
    if args._method == "dpo":
        train = train[: args.pair_tasks]
    model, tokenizer = add_end_token(*load_base(args.base))  # a no-op for a chat model
    seed_everything(args.seed)  # the adapters' initial values
    apply_lora(model, LoRAConfig.from_dict(config.lora))
    print(
        f"{args._method}: {len(train)} training and {len(held)} held-out {args.task} questions "
        f"(difficulty {args.difficulty}); out: {out}",
        file=sys.stderr,
    )
    session = Session(
        out_dir=out, resume=args.resume, stop_after=args.stop_after, show_progress=not args.quiet
    )
    history = train_with_rewards(model, tokenizer, train, held, config, session)
    plot_reward_history(history, out / PLOT_NAME, title=f"{args._method} on {args.task}")
    scored = [r for r in history if "accuracy" in r]
    summary = {
        "options": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "config": asdict(config),
        "accuracy": {r["step"]: r["accuracy"] for r in scored},
    }
    (out / RUN_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    first, last = scored[0], scored[-1]
    print(
        f"done: step {history[-1]['step']}; held-out accuracy {first['accuracy']:.2f} at step "
        f"{first['step']} -> {last['accuracy']:.2f} at step {last['step']}; "
        f"state {out / STATE_NAME}",
        file=sys.stderr,
    )
    return 0
