"""Generate text from a checkpoint, streamed to stdout as it is produced (chapter 6).

The prompt is printed first, then each new piece of text as soon as it is decoded.
Decoding is greedy unless --temperature is above 0 (--top-k, --top-p and --seed need
--temperature: without it they are refused, as they would change nothing). Generation stops after
--max-new-tokens tokens, at the end-of-text token, or at a --stop string (not printed).

Examples:
  sydsgpt generate --checkpoint runs/book-ch05/checkpoint.pt --prompt "Every effort moves you"
  sydsgpt generate --model book-checkpoint --prompt "ROMEO:" --max-new-tokens 60
  sydsgpt generate --checkpoint ckpt.pt --prompt "ROMEO:" --temperature 0.8 --top-k 50 --seed 123
  sydsgpt generate --checkpoint ckpt.pt --prompt "Once" --top-p 0.9 --temperature 1.0 \\
      --repetition-penalty 1.2 --no-repeat-ngram-size 3 --stop "\\n\\n" --max-new-tokens 200

Checkpoints written by `sydsgpt train` and the original SydsGPT-Pretraining format
({"model", "optimizer", "config"}) both load; they are read with weights_only=True.
The tokenizer is GPT-2's, unless the checkpoint was trained with another one: then the
tokenizer.json saved beside it is used (or give --tokenizer PATH).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from ..checkpoint import load_model_and_tokenizer
from ..models import describe, load_model
from ..generate import GenerationConfig, IgnoredOptionWarning, stream_text, use_decoding_layout
from ..runtime import resolve_device
from .errors import UsageError
from .options import add_config_options, config_from_args, flag_name, unescape

SKIPPED = ("eos_id",)
"""GenerationConfig fields with no option: the end-of-text
id comes from the tokenizer (see --ignore-eos)."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt generate`` arguments."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file (.pt) to load")
    source.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help=f"a model by name or file, as sydsgpt chat takes it: {describe()}",
    )
    parser.add_argument(
        "--prompt", required=True, help="the text to continue (escapes like \\n work)"
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=100, help="most tokens to generate (default: 100)"
    )
    parser.add_argument(
        "--stop",
        nargs="+",
        default=[],
        metavar="STR",
        help="stop when the new text contains one of these strings (escapes like \\n work)",
    )
    parser.add_argument(
        "--ignore-eos", action="store_true", help="do not stop at the end-of-text token"
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        metavar="PATH",
        help="a BPETokenizer saved with .save(); default: tokenizer.json beside the "
        "checkpoint when the checkpoint names a tokenizer other than GPT-2's, else GPT-2's",
    )
    add_decoding_options(parser)


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and every :class:`GenerationConfig` option (``sydsgpt generate`` and
    ``sydsgpt chat``); :func:`decoding_config` reads them back."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps",
    )
    add_config_options(
        parser.add_argument_group("decoding (sydsgpt.generate.GenerationConfig)"),
        GenerationConfig,
        skip=SKIPPED,
    )


def load_for_generation(
    path: str, device: str = "auto", tokenizer_path: str | None = None
) -> tuple[Any, Any]:
    """The checkpoint's model and tokenizer, the model in eval mode on ``device`` and in the weight
    layout one-token steps read fastest (:func:`~sydsgpt.generate.use_decoding_layout`)."""
    model, tokenizer = load_model_and_tokenizer(path, resolve_device(device), tokenizer_path)
    return use_decoding_layout(model), tokenizer


def load_named_for_generation(
    spec: str, device: str = "auto", context_length: int | None = None
) -> tuple[Any, Any]:
    """``--model SPEC`` (:func:`sydsgpt.models.load_model`: a name, a .gguf or a .pt) on
    ``device``, in the decoding layout; ``sydsgpt generate`` and ``sydsgpt chat`` use it.

    Raises:
        UsageError: ``spec`` is not a model (one line saying what is accepted).
    """
    try:
        model, tokenizer = load_model(spec, context_length)
    except ValueError as exc:
        raise UsageError(f"--model {exc}") from None
    return use_decoding_layout(model.to(resolve_device(device))), tokenizer


def decoding_config(args: argparse.Namespace) -> GenerationConfig:
    """The :class:`GenerationConfig` the options ask for; an option that would change nothing
    (``--top-k`` without ``--temperature``) is a usage error, not a silent greedy run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IgnoredOptionWarning)
        config = config_from_args(GenerationConfig, args)
    ignored = config.ignored_options()
    if ignored:
        raise UsageError(GenerationConfig.ignored_message(ignored, [flag_name(n) for n in ignored]))
    return config


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint and stream the continuation of ``--prompt`` to stdout (errors are
    reported by :func:`sydsgpt.cli.main`)."""
    config = decoding_config(args)  # every option checked before the checkpoint is loaded
    if args.model is not None:
        if args.tokenizer is not None:
            raise UsageError("--tokenizer goes with --checkpoint; a --model brings its own")
        model, tokenizer = load_named_for_generation(args.model, args.device)
    else:
        model, tokenizer = load_for_generation(args.checkpoint, args.device, args.tokenizer)
    pieces = stream_text(
        model,
        tokenizer,
        unescape(args.prompt),
        args.max_new_tokens,
        config,
        stop=[unescape(s) for s in args.stop],
        stop_at_eos=not args.ignore_eos,
    )
    out = sys.stdout
    out.write(unescape(args.prompt))
    out.flush()
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return 0
