"""Tokenize a large corpus into token shards that `sydsgpt train DIR` reads (appendix: Scaling up).

INPUT is a .txt file (one document), a .jsonl or .jsonl.gz file (one JSON object per line,
its --text-field a document), a Parquet file (the --text-field column; needs pyarrow), or a
folder of such files. DIR (--out) receives manifest.json, val_000000.bin (the corpus's
first --val-tokens tokens, held out) and train_NNNNNN.bin shards of --shard-tokens ids each:
uint16 when the vocabulary fits, else uint32, an end-of-text id after every document.

Running the same command again resumes an interrupted run: finished shards are kept. After a
run that failed on a bad input, fix the input and run the same command: it starts over. --out
must be new, empty, or a prepared dataset folder. Text that spells a special token of the
tokenizer (<|endoftext|>) is refused unless --separator names it: then each one ends a document.
Every option below is a field of sydsgpt.prepare.PrepareConfig.

examples:
  sydsgpt prepare tinyshakespeare.txt --out data/shakespeare --val-tokens 30000 --shard-tokens
  100000 # FineWeb-Edu's 10B-token sample, downloaded as Parquet files (see the appendix)
  sydsgpt prepare fineweb-edu/sample/10BT --out data/fineweb-edu-10B -j 16 --val-tokens 10000000
  sydsgpt train data/fineweb-edu-10B --preset gpt2-small --seq-len 1024 ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..prepare import PrepareConfig
from .options import add_config_options, config_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``sydsgpt prepare``'s arguments."""
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="text, .jsonl(.gz) or Parquet files, or folders of them",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="the prepared dataset folder"
    )
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="end this session after N new training shards (run again to resume)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_options(
        parser.add_argument_group("preparing (sydsgpt.prepare.PrepareConfig)"),
        PrepareConfig,
        aliases={"jobs": ["-j"]},
    )


def run(args: argparse.Namespace) -> int:
    """Prepare; returns 0 on success. Errors propagate to :func:`sydsgpt.cli.main`, which reports
    them in one line (:mod:`sydsgpt.cli.errors`: 2 for bad usage, such as a missing input, 1 for a
    failed run)."""
    from ..prepare import prepare

    cfg = config_from_args(PrepareConfig, args)
    stats = prepare(
        args.inputs, args.out, cfg, stop_after=args.stop_after, show_progress=not args.quiet
    )
    manifest = stats["manifest"]
    state = (
        "complete" if manifest["complete"] else "unfinished (run the same command again to resume)"
    )
    totals = manifest.get("tokens") or {}
    print(
        f"{args.out}: {state}; {len(manifest['shards'])} shards ({stats['shards_written']} written "
        f"now, {stats['pieces_skipped']} pieces skipped); train {totals.get('train', '?')} tokens, "
        f"val {totals.get('val', '?')} tokens",
        file=sys.stderr,
    )
    return 0
