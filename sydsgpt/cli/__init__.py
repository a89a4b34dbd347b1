"""The ``sydsgpt`` command line: ``sydsgpt train``, ``sydsgpt generate``, ``sydsgpt bench``.

Each subcommand lives in a module of this package that provides
``configure(parser)`` (adds its arguments) and ``run(args) -> int`` (does the work).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, str] = {
    "train": "Pretrain a model on a dataset (chapter 5).",
    "generate": "Generate text from a checkpoint (chapter 6).",
    "bench": "Measure training, generation and tokenizer speed (appendix: Making it fast).",
    "check": "Check your own exercise answers (a chapter notebook or a .py file) with the book's cases.",
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per available subcommand."""
    parser = argparse.ArgumentParser(
        prog="sydsgpt",
        description="SydsGPT: the GPT-style language model built in the book. Train, generate, benchmark.",
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
            name, help=summary, description=text.strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sydsgpt`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
