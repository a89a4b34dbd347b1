"""Finetune a pretrained model (chapter 8): a classifier, or an instruction follower.

  sydsgpt finetune classify [DATA]   a classification head on the model (DATA: sms-spam, or a
                                     TAB-separated file of `label<TAB>text` lines)
  sydsgpt finetune instruct [DATA]   answer instructions in the Alpaca-style template (DATA:
                                     instruction-data, word-tasks, or a JSON list of records
                                     with instruction, input, output)

--base is the pretrained model: `book` (the book's checkpoint), a checkpoint file from
`sydsgpt train`, a GPT-2 folder (config.json + model.safetensors), or a Hugging Face Hub
name such as gpt2 or gpt2-medium (downloaded once; needs the internet). --lora-rank R
trains low-rank adapters instead of the weights. The run writes into --out, as
`sydsgpt train` does: log.jsonl, checkpoint.pt (resumable: add --resume), run.json,
loss.png, and tokenizer.json (instruct, a BPE tokenizer: with its end token) or
classifier.json (classify); with LoRA also adapter.safetensors (the adapter only).

examples:
  sydsgpt finetune instruct word-tasks --base book --lr 0.001 --max-steps 150 --out runs/ft-words
  sydsgpt finetune instruct instruction-data --base gpt2 --device cuda --epochs 2 --out runs/ft-gpt2
  sydsgpt finetune classify sms-spam --base book --trainable last-block --out runs/ft-spam
  sydsgpt finetune classify sms-spam --base book --lora-rank 8 --out runs/ft-spam-lora
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from ..files import CHECKPOINT_NAME, LOG_NAME, LOSS_PLOT_NAME, TOKENIZER_NAME
from ..train_config import TrainConfig
from .errors import EXIT_STATUS_HELP, UsageError
from .options import add_config_options, config_from_args

WORD_TASKS = "word-tasks"
"""The DATA name of :func:`sydsgpt.instruct.word_task_records` (checkable answers)."""
WORD_TASK_RECORDS = 1000
BASE_HELP = ("the pretrained model: book (the book's checkpoint), a checkpoint file from sydsgpt train, a GPT-2 "
             "folder (config.json + model.safetensors), or a Hub name such as gpt2, gpt2-medium (needs the internet)")
SKIPPED = ("seq_len", "fsdp", "sample_prompt", "sample_tokens")
"""TrainConfig fields without an option here: the data decides the sequence length; samples are shown at the end."""
DEFAULTS = TrainConfig(epochs=1, batch_size=8, lr=1e-4, warmup_steps=10, weight_decay=0.0, eval_interval=50,
                       eval_batches=10, sample_tokens=0)
"""Instruction finetuning's defaults: a lower learning rate than pretraining, no weight decay, no samples
(classification starts from :func:`sydsgpt.classify.classifier_train_config`)."""


# ---------------------------------------------------------------------------- options


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``sydsgpt finetune``'s two subcommands and their options."""
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    classify = tasks.add_parser("classify", help="train a classification head (chapter 8)",
                                description="Finetune a classifier: " + _run_classify.__doc__.strip(), epilog=EXIT_STATUS_HELP)
    classify.add_argument("data", nargs="?", default="sms-spam", metavar="DATA",
                          help="sms-spam (default) or a TAB-separated file of label<TAB>text lines")
    classify.add_argument("--labels", default=None, metavar="A,B",
                          help="the labels, in order (default: those of the data, sorted); another label in the data is an error")
    classify.add_argument("--trainable", choices=("head", "last-block", "all", "lora"), default="last-block",
                          help="what is trained: the new head only, also the last block (default), all weights, or LoRA adapters")
    classify.add_argument("--pooling", choices=("last", "mean"), default="last",
                          help="classify from the last token's features (default) or their mean over the text")
    classify.add_argument("--max-length", type=int, default=None, metavar="N",
                          help="tokens per text (longer ones are cut); default: the longest training text, at most the context")
    classify.set_defaults(_task=_run_classify)
    instruct = tasks.add_parser("instruct", help="teach the model to answer instructions (chapter 8)",
                                description="Finetune on instructions: " + _run_instruct.__doc__.strip(), epilog=EXIT_STATUS_HELP)
    instruct.add_argument("data", nargs="?", default="instruction-data", metavar="DATA",
                          help=f"instruction-data (default), {WORD_TASKS} (a generated set with exact answers), or a JSON "
                          "file: a list of records with instruction, input (may be empty) and output")
    instruct.add_argument("--mask-prompt", action=argparse.BooleanOptionalAction, default=True,
                          help="grade only the response tokens (default); --no-mask-prompt grades the prompt too")
    instruct.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                          help="most tokens of each answer in the final score on the validation records (default: 64)")
    instruct.set_defaults(_task=_run_instruct)
    from ..classify import classifier_train_config

    _common_options(classify, classifier_train_config())
    _common_options(instruct, DEFAULTS)


def _common_options(parser: argparse.ArgumentParser, defaults: TrainConfig) -> None:
    parser.add_argument("--base", default="book", metavar="SPEC", help=BASE_HELP + " (default: book)")
    parser.add_argument("--lora-rank", type=int, default=None, metavar="R",
                        help="train LoRA adapters of rank R (frozen base weights) instead of the weights")
    parser.add_argument("--lora-alpha", type=float, default=None, metavar="X", help="LoRA's alpha (default: LoRAConfig's)")
    run = parser.add_argument_group("run")
    run.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/finetune-<task>)")
    run.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt (same data, base and options)")
    run.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                     help="end this session after STEP steps (checkpointed); --resume continues it")
    run.add_argument("--val-fraction", type=float, default=0.1, help="share of the instruction records held out (default: 0.1)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--debug", action="store_true",
                     help="show the full traceback of an error instead of one line (or set SYDSGPT_DEBUG=1)")
    add_config_options(parser.add_argument_group("training (sydsgpt.train.TrainConfig)"), TrainConfig,
                       skip=SKIPPED, defaults=defaults)
    parser.set_defaults(_parser=parser)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand (errors are reported by :func:`sydsgpt.cli.main`)."""
    return args._task(args)


# ---------------------------------------------------------------------------- shared steps


def load_base(spec: str, device: Any = "cpu") -> tuple[Any, Any]:
    """The pretrained model (on ``device``) and its tokenizer that ``--base SPEC`` names."""
    from ..checkpoint import load_model_and_tokenizer
    from ..gpt2_weights import load_gpt2_weights
    from ..tokenizer import get_gpt2_tokenizer

    if spec == "book":
        from ..book import load_book_checkpoint

        run = load_book_checkpoint()
        return run.model.to(device), run.tokenizer
    path = Path(spec)
    if path.is_file() and path.suffix in (".pt", ".pth"):
        return load_model_and_tokenizer(path, device)
    return load_gpt2_weights(spec).to(device), get_gpt2_tokenizer()


def _prepare(args: argparse.Namespace, task: str) -> tuple[TrainConfig, Path]:
    """The training config and the output folder, checked before anything is loaded or written."""
    from ..runtime import resolve_device
    from ..validation import check_positive_int

    cfg = config_from_args(TrainConfig, args, sample_tokens=0)
    check_positive_int(args.stop_after, "--stop-after", allow_none=True)
    check_positive_int(args.lora_rank, "--lora-rank", allow_none=True)
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction must be strictly between 0 and 1, got {args.val_fraction}")
    resolve_device(cfg.device, 0)
    out = Path(args.out or Path("runs") / f"finetune-{task}")
    if (out / CHECKPOINT_NAME).exists() and not args.resume:
        raise FileExistsError(f"{out / CHECKPOINT_NAME} already exists: add --resume to continue that run, or choose another --out")
    if args.resume and not (out / CHECKPOINT_NAME).exists():
        raise FileNotFoundError(f"--resume: there is no {out / CHECKPOINT_NAME} to continue from; run without --resume first")
    return cfg, out


def _lora_config(args: argparse.Namespace) -> Any:
    if args.lora_rank is None:
        return None
    from ..lora import LoRAConfig

    return LoRAConfig(rank=args.lora_rank) if args.lora_alpha is None else LoRAConfig(rank=args.lora_rank, alpha=args.lora_alpha)


def split_records(records: Sequence[Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """``(train, val)``: a seeded shuffle, the last ``val_fraction`` held out (at least one of each)."""
    order = list(records)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
    if n_val < 1:
        raise UsageError(f"{len(order)} record(s) cannot be split into training and validation records; give at least 2")
    return order[:-n_val], order[-n_val:]


def _save_plot(out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..logs import plot_losses

    ax = plot_losses(out / LOG_NAME, title="Finetuning loss")
    ax.figure.savefig(out / LOSS_PLOT_NAME, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)


def _save_tokenizer(tokenizer: Any, out: Path) -> None:
    """A BPE tokenizer goes into the run folder (``sydsgpt generate`` reads it there); GPT-2's needs no file."""
    if hasattr(tokenizer, "save"):
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / TOKENIZER_NAME)


def _say(text: str) -> None:
    print(text, file=sys.stderr)


# ---------------------------------------------------------------------------- the two tasks


def _run_instruct(args: argparse.Namespace) -> int:
    """the model learns to answer records of the Alpaca-style template (sydsgpt.instruct),
    with the loss on the response tokens only (--no-mask-prompt: on every token). At the
    end it scores greedy answers on the held-out records: the share that stop at the end
    token, and the share that equal the record's output exactly."""
    from ..corpora import load_instructions
    from ..instruct import add_end_token, exact_match, finetune_instructions, word_task_records

    cfg, out = _prepare(args, "instruct")
    records = word_task_records(WORD_TASK_RECORDS, seed=cfg.seed) if args.data == WORD_TASKS else load_instructions(args.data)
    train_records, val_records = split_records(records, args.val_fraction, cfg.seed)
    base_model, base_tokenizer = load_base(args.base)
    model, tokenizer = add_end_token(base_model, base_tokenizer)
    lora = _lora_config(args)
    if lora is not None:
        from ..lora import apply_lora

        apply_lora(model, lora)
        if tokenizer is not base_tokenizer:  # the new end token's rows must learn too (saved with the adapter)
            model.token_embedding.weight.requires_grad_(True)
            model.output_projection.weight.requires_grad_(True)
    _save_tokenizer(tokenizer, out)
    _say(f"finetuning on {len(train_records):,} instruction records ({len(val_records):,} held out); "
         f"loss on {'the response only' if args.mask_prompt else 'every token'}; out: {out}")
    history = finetune_instructions(model, tokenizer, train_records, val_records, cfg, mask_prompt=args.mask_prompt,
                                    out_dir=out, resume=args.resume, stop_after=args.stop_after, show_progress=not args.quiet)
    _save_plot(out)
    if lora is not None:
        from ..lora import save_adapter

        save_adapter(out / "adapter.safetensors", model, lora)
    scored = val_records[:50]
    score = exact_match(model, tokenizer, scored, args.max_new_tokens)
    last_val = next((r["val_loss"] for r in reversed(history) if "val_loss" in r), None)
    _say(f"done: step {history[-1]['step']}, held-out response loss {last_val if last_val is None else round(last_val, 4)}; "
         f"on {len(scored)} held-out records: {score['stopped']:.0%} stopped at the end token, "
         f"{score['exact_match']:.0%} exact matches; checkpoint {out / CHECKPOINT_NAME}")
    print(f"example answer to {scored[0]['instruction']!r}: {score['answers'][0]!r}")
    return 0


def _run_classify(args: argparse.Namespace) -> int:
    """a classification head replaces the model's output head (sydsgpt.classify); the data
    is cut into balanced, seeded training, validation and test splits, and the test
    accuracy is printed at the end."""
    from ..classify import balanced_split, finetune_classifier
    from ..corpora import load_labelled_texts

    cfg, out = _prepare(args, "classify")
    labels = [label.strip() for label in args.labels.split(",")] if args.labels else None
    records = load_labelled_texts(args.data, labels)
    train_records, val_records, test_records = balanced_split(records, seed=cfg.seed)
    model, tokenizer = load_base(args.base)
    _save_tokenizer(tokenizer, out)
    lora = _lora_config(args)
    trainable = "lora" if lora is not None else args.trainable
    if trainable == "lora" and lora is None:
        from ..lora import LoRAConfig

        lora = LoRAConfig()
    _say(f"finetuning a classifier ({trainable}, {args.pooling} pooling) on {len(train_records):,} texts "
         f"({len(val_records):,} validation, {len(test_records):,} test); out: {out}")
    result = finetune_classifier(model, tokenizer, train_records, val_records, labels=labels, trainable=trainable,
                                 pooling=args.pooling, lora=lora, cfg=cfg, max_length=args.max_length, out_dir=out,
                                 resume=args.resume, show_progress=not args.quiet, stop_after=args.stop_after)
    _save_plot(out)
    _say(f"done: {result.trainable_params:,} trainable parameters, {result.train_s:.0f} s; checkpoint {out / CHECKPOINT_NAME}")
    print(f"test accuracy {result.accuracy(test_records):.4f} on {len(test_records):,} texts")
    return 0
