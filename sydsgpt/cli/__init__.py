"""The ``sydsgpt`` command line: ``sydsgpt prepare``, ``sydsgpt train``, ``sydsgpt generate``,
``sydsgpt finetune``, ``sydsgpt bench``.

Each subcommand lives in a module of this package that provides
``configure(parser)`` (adds its arguments) and ``run(args) -> int`` (does the work).
Errors are reported by :mod:`sydsgpt.cli.errors`: one line, exit status 2 for bad usage
and 1 for a failed run, a traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..interrupts import TrainingInterrupted
from .errors import EXIT_STATUS_HELP, Parser, debug_requested, report

DEBUG_HELP = "show the full traceback of an error instead of one line (or set SYDSGPT_DEBUG=1)"
"""``--debug``, added once to every subcommand (to each task of ``finetune``)."""
SUBCOMMANDS: dict[str, str] = {
    "prepare": "Tokenize a large corpus into token shards (appendix: Scaling up).",
    "train": "Pretrain a model on a dataset (chapter 5).",
    "generate": "Generate text from a checkpoint (chapter 6).",
    "chat": "Chat with a model in the terminal: SmolLM2-135M-Instruct or your own (chapter 8).",
    "finetune": "Finetune a pretrained model: a classifier or an instruction follower, optionally "
    "with LoRA (chapter 9), or learn from rewards with GRPO or DPO (chapter 10).",
    "bench": "Measure training, generation and tokenizer speed (appendix: Making it fast).",
    "check": "Check your own exercise answers (a chapter notebook or a .py file) with the book's "
    "cases.",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available subcommand."""
    parser = Parser(
        prog="sydsgpt",
        description="SydsGPT: the GPT-style language model built in the book. Train, generate, "
        "benchmark.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        describe = getattr(module, "description", None)
        text = describe() if describe else (module.__doc__ or summary)
        sub = subparsers.add_parser(
            name,
            help=summary,
            description=text.strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=EXIT_STATUS_HELP,
        )
        module.configure(sub)
        for leaf in _leaf_parsers(sub):  # finetune's options are its tasks' (classify, instruct)
            leaf.add_argument("--debug", action="store_true", help=DEBUG_HELP)
        sub.set_defaults(_run=module.run, _parser=sub)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` itself, or the parsers of its subcommands (recursively) when it has some."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not nested:
        return [parser]
    unique = {id(p): p for action in nested for p in action.choices.values()}  # aliases: one parser
    return [leaf for p in unique.values() for leaf in _leaf_parsers(p)]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sydsgpt`` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the subcommand, as every other error of its options
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except TrainingInterrupted as exc:
        print(
            f"sydsgpt {args.command}: "
            f"{exc.describe('continue with the same command plus --resume')}",
            file=sys.stderr,
        )
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"sydsgpt {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug_requested(args):
            raise
        return report(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
