"""Finetune a pretrained model (chapter 9): a classifier, or an instruction follower;
learn from a reward (chapter 10: grpo, dpo; sydsgpt.cli.rewards).

  sydsgpt finetune classify [DATA]   a classification head on the model (DATA: sms-spam, or a
                                     TAB-separated file of `label<TAB>text` lines)
  sydsgpt finetune instruct [DATA]   answer instructions, in the model's own chat template
                                     (a chat model: smollm2-135m-instruct, a .gguf) or in the
                                     Alpaca-style template (DATA: instruction-data, word-tasks,
                                     or a JSON list of records with instruction, input, output)
  sydsgpt finetune grpo              learn from a reward on generated questions (chapter 10)
  sydsgpt finetune dpo               learn from right/wrong pairs of the model's own answers

--base is the pretrained model: `book` (the book's checkpoint), smollm2-135m-instruct or
another Llama-architecture .gguf file, a checkpoint file from
`sydsgpt train` (.pt), a GPT-2 folder (config.json + model.safetensors), or a Hugging Face
Hub name such as gpt2 or gpt2-medium (downloaded once; needs the internet). Every option is
checked before anything is loaded or written. --lora-rank R
trains low-rank adapters instead of the weights. The run writes into --out, as
`sydsgpt train` does: log.jsonl, checkpoint.pt (resumable: add --resume), run.json,
loss.png, and tokenizer.json (instruct: with its end token, and a chat model's template)
or classifier.json (classify); with LoRA also adapter.safetensors (the adapter only). A
finetuned chat model chats with `sydsgpt chat --model DIR/checkpoint.pt` (after --lora-rank
too: the adapters are merged into the weights as the checkpoint loads).

examples:
  sydsgpt finetune instruct word-tasks --base book --lr 0.001 --max-steps 150 --out runs/ft-words
  sydsgpt finetune instruct instruction-data --base gpt2 --device cuda --epochs 2 --out runs/ft-gpt2
  sydsgpt finetune instruct word-tasks --base smollm2-135m-instruct --batch-size 4 --max-steps 60 \\
      --out runs/ft-smollm2 && sydsgpt chat --model runs/ft-smollm2/checkpoint.pt
  sydsgpt finetune classify sms-spam --base book --trainable last-block --out runs/ft-spam
  sydsgpt finetune classify sms-spam --base book --lora-rank 8 --out runs/ft-spam-lora
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Sequence

from ..classify import (
    POOLINGS,
    TRAINABLE,
    ClassifierConfig,
    balanced_split,
    classifier_train_config,
    finetune_classifier,
)
from ..corpora import load_instructions, load_labelled_texts
from ..files import TOKENIZER_NAME
from ..instruct import (
    add_end_token,
    chat_format,
    exact_match,
    finetune_instructions,
    instruction_data,
    word_task_records,
)
from ..lora import ADAPTER_NAME, LoRAConfig, apply_lora, save_adapter
from ..runtime import resolve_device, seed_everything
from ..train import Session
from ..train_config import TrainConfig
from ..validation import check_positive_int, check_real
from .bases import BASE_HELP, check_base, load_base
from .errors import EXIT_STATUS_HELP, UsageError
from .options import add_config_options, config_from_args
from .rewards import add_commands as add_reward_commands
from .runs import check_run_folder, finish_run, run_folder

WORD_TASKS = "word-tasks"
"""The DATA name of :func:`sydsgpt.instruct.word_task_records` (checkable answers)."""
WORD_TASK_RECORDS = 1000
SKIPPED = ("seq_len", "fsdp", "sample_prompt", "sample_tokens")
"""TrainConfig fields without an option here: the data
decides the sequence length; samples are shown at the end."""
DEFAULTS = TrainConfig(
    epochs=1,
    batch_size=8,
    lr=1e-4,
    warmup_steps=10,
    weight_decay=0.0,
    eval_interval=50,
    eval_batches=10,
    sample_tokens=0,
)
"""Instruction finetuning's defaults: a lower learning rate than pretraining, no weight decay, no
samples (classification starts from :func:`sydsgpt.classify.classifier_train_config`)."""


# ---------------------------------------------------------------------------- options


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``sydsgpt finetune``'s subcommands and their options."""
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    classify = tasks.add_parser(
        "classify",
        help="train a classification head (chapter 9)",
        description="Finetune a classifier: " + _run_classify.__doc__.strip(),
        epilog=EXIT_STATUS_HELP,
    )
    classify.add_argument(
        "data",
        nargs="?",
        default="sms-spam",
        metavar="DATA",
        help="sms-spam (default) or a TAB-separated file of label<TAB>text lines",
    )
    classify.add_argument(
        "--labels",
        default=None,
        metavar="A,B",
        help="the labels, in order (default: those of the data, sorted); another label in the data "
        "is an error",
    )
    classify.add_argument(
        "--trainable",
        choices=TRAINABLE,
        default="last-block",
        help="what is trained: the new head only, also the last block (default), all weights, or "
        "LoRA adapters",
    )
    classify.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="last",
        help="classify from the last token's features (default) or their mean over the text",
    )
    classify.add_argument(
        "--max-length",
        type=int,
        default=None,
        metavar="N",
        help="tokens per text (longer ones are cut); default: the longest training text, at most "
        "the context",
    )
    classify.set_defaults(_task=_run_classify)
    instruct = tasks.add_parser(
        "instruct",
        help="teach the model to answer instructions (chapter 9)",
        description="Finetune on instructions: " + _run_instruct.__doc__.strip(),
        epilog=EXIT_STATUS_HELP,
    )
    instruct.add_argument(
        "data",
        nargs="?",
        default="instruction-data",
        metavar="DATA",
        help=f"instruction-data (default), {WORD_TASKS} (a generated set with exact answers), or a "
        "JSON file: a list of records with instruction, input (may be empty) and output",
    )
    instruct.add_argument(
        "--mask-prompt",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="grade only the response tokens (default); --no-mask-prompt grades the prompt too",
    )
    instruct.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        metavar="N",
        help="most tokens of each answer in the final score on the validation records (default: "
        "64)",
    )
    instruct.set_defaults(_task=_run_instruct)
    _common_options(classify, classifier_train_config())
    _common_options(instruct, DEFAULTS)
    add_reward_commands(tasks, BASE_HELP)


def _common_options(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    parser.add_argument(
        "--base", default="book", metavar="SPEC", help=BASE_HELP + " (default: book)"
    )
    parser.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        metavar="R",
        help="train LoRA adapters of rank R (frozen base weights) instead of the weights",
    )
    parser.add_argument(
        "--lora-alpha",
        type=float,
        default=None,
        metavar="X",
        help="LoRA's alpha (default: LoRAConfig's)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output directory (default: runs/finetune-<task>)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.pt (same data, base and options)",
    )
    run.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="end this session after STEP steps (checkpointed); --resume continues it",
    )
    run.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the records held out (default: 0.1)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(
        parser.add_argument_group("training (sydsgpt.train.TrainConfig)"),
        TrainConfig,
        skip=SKIPPED,
        defaults=defaults,
    )
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand (errors are reported by :func:`sydsgpt.cli.main`)."""
    return args._task(args)


# ---------------------------------------------------------------------------- shared steps


def _prepare(args: argparse.Namespace, task: str) -> tuple[TrainConfig, Path]:
    """The training config and the output folder, every option checked before anything is
    loaded or written."""
    cfg = config_from_args(TrainConfig, args, sample_tokens=0)
    check_positive_int(args.stop_after, "--stop-after", allow_none=True)
    check_positive_int(args.lora_rank, "--lora-rank", allow_none=True)
    check_real(args.lora_alpha, "--lora-alpha", low=0, low_open=True, allow_none=True)
    check_real(args.val_fraction, "--val-fraction", low=0, high=1, low_open=True, high_open=True)
    if task == "instruct":
        check_positive_int(args.max_new_tokens, "--max-new-tokens")
    else:
        check_positive_int(args.max_length, "--max-length", allow_none=True)
    check_base(args.base)
    resolve_device(cfg.device, 0)
    out = Path(args.out or Path("runs") / f"finetune-{task}")
    check_run_folder(out, args.resume)
    return cfg, out


def _lora_config(args: argparse.Namespace) -> LoRAConfig | None:
    if args.lora_rank is None:
        return None
    if args.lora_alpha is None:
        return LoRAConfig(rank=args.lora_rank)
    return LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha)


def split_records(
    records: Sequence[Any], val_fraction: float, seed: int
) -> tuple[list[Any], list[Any]]:
    """``(train, val)``: a seeded shuffle, the last
    ``val_fraction`` held out (at least one of each)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    if n_val < 1:
        raise UsageError(
            f"{len(order)} record(s) cannot be split into training and validation records; give at "
            "least 2"
        )
    return order[:-n_val], order[-n_val:]


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    """A BPE tokenizer goes into the run folder
    (``sydsgpt generate`` reads it there); GPT-2's needs no file."""
    if hasattr(tokenizer, "save"):
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / TOKENIZER_NAME)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


# ---------------------------------------------------------------------------- the two tasks


def _run_instruct(args: argparse.Namespace) -> int:
    """the model learns to answer records (sydsgpt.instruct): a chat model (its tokenizer
    has a chat template, e.g. smollm2-135m-instruct) as conversations in that template,
    ended by its end-of-turn token; any other model in the Alpaca-style template, ended by
    <|endoftext|>. The loss is on the response tokens only (--no-mask-prompt: on every
    token). At the end it scores greedy answers on the held-out records: the share that
    stop at the end token, and the share that equal the record's output exactly."""
    cfg, out = _prepare(args, "instruct")
    records = (
        word_task_records(WORD_TASK_RECORDS, seed=cfg.seed)
        if args.data == WORD_TASKS
        else load_instructions(args.data)
    )
    train_records, val_records = split_records(records, args.val_fraction, cfg.seed)
    base_model, base_tokenizer = load_base(args.base)
    model, tokenizer = add_end_token(base_model, base_tokenizer)
    # every record tokenized and checked against the context before anything is written
    # (finetune_instructions tokenizes them again: cheap, and one training path)
    instruction_data(
        train_records,
        val_records,
        tokenizer,
        model.config.context_length,
        cfg.batch_size,
        mask_prompt=args.mask_prompt,
    )
    lora = _lora_config(args)
    if lora is not None:
        seed_everything(cfg.seed)  # the adapters' initial values
        apply_lora(model, lora)
        if tokenizer is not base_tokenizer:
            # the new end token's rows must learn too (saved with the adapter)
            model.token_embedding.weight.requires_grad_(True)
            model.output_projection.weight.requires_grad_(True)
    with run_folder(out) as folder:
        _save_tokenizer(tokenizer, out)
        graded = "the response only" if args.mask_prompt else "every token"
        form = "the Alpaca-style template" if chat_format(tokenizer) is None else "its chat format"
        _say(
            f"finetuning on {len(train_records):,} instruction records ({len(val_records):,} held "
            f"out) in {form}; loss on {graded}; out: {out}"
        )
        session = Session(
            out_dir=folder,
            resume=args.resume,
            stop_after=args.stop_after,
            show_progress=not args.quiet,
        )
        history = finetune_instructions(
            model,
            tokenizer,
            train_records,
            val_records,
            cfg,
            mask_prompt=args.mask_prompt,
            session=session,
        )
        if lora is not None:
            save_adapter(out / ADAPTER_NAME, model, lora)
        scored = val_records[:50]
        score = exact_match(model, tokenizer, scored, args.max_new_tokens)
        finish_run(
            out,
            history,
            "Finetuning loss",
            loss_name="held-out response loss",
            extra=f"; on {len(scored)} held-out records: {score['stopped']:.0%} stopped at "
            f"the end token, {score['exact_match']:.0%} exact matches",
        )
    print(f"example answer to {scored[0]['instruction']!r}: {score['answers'][0]!r}")
    return 0


def _run_classify(args: argparse.Namespace) -> int:
    """a classification head replaces the model's output head (sydsgpt.classify); the data
    is cut into balanced, seeded training, validation and test splits, and the test
    accuracy is printed at the end."""
    cfg, out = _prepare(args, "classify")
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    records = load_labelled_texts(args.data, labels)
    train_records, val_records, test_records = balanced_split(records, seed=cfg.seed)
    model, tokenizer = load_base(args.base)
    lora = _lora_config(args)
    trainable = "lora" if lora is not None else args.trainable
    if trainable == "lora" and lora is None:
        lora = LoRAConfig()
    with run_folder(out) as folder:
        _save_tokenizer(tokenizer, out)
        _say(
            f"finetuning a classifier ({trainable}, {args.pooling} pooling) on "
            f"{len(train_records):,} texts ({len(val_records):,} validation, "
            f"{len(test_records):,} test); out: {out}"
        )
        classifier = ClassifierConfig(
            labels=labels,
            pooling=args.pooling,
            trainable=trainable,
            lora=lora,
            max_length=args.max_length,
        )
        session = Session(
            out_dir=folder,
            resume=args.resume,
            stop_after=args.stop_after,
            show_progress=not args.quiet,
        )
        result = finetune_classifier(
            model,
            tokenizer,
            train_records,
            val_records,
            classifier=classifier,
            cfg=cfg,
            session=session,
        )
        finish_run(
            out,
            result.history,
            "Finetuning loss",
            extra=f"; {result.trainable_params:,} trainable parameters, {result.train_s:.0f} s",
        )
    print(f"test accuracy {result.accuracy(test_records):.4f} on {len(test_records):,} texts")
    return 0
