"""Measure how fast SydsGPT trains, generates and tokenizes on this machine.

Each benchmark prints a table and writes a JSON result (machine, torch version, date,
settings, one row per configuration) into the --out folder:

  train      training tokens/s, MFU and peak memory: plain path, package defaults, all fast paths
             -> training_<cpu|gpu>.json
  ablation   the fast paths switched on one at a time (cumulative) -> ablation_<cpu|gpu>.json
  generate   generation tokens/s with and without the KV cache -> generation.json
  tokenizer  from-scratch BPE training time, encoding MB/s next to tiktoken -> bpe.json
  all        all four

Examples:
  sydsgpt bench --what train --quick --out /tmp/bench     # smoke test, seconds
  sydsgpt bench --what ablation                           # book model on the CPU, minutes
  sydsgpt bench --what ablation --device cuda             # GPT-2 small at context 1024 on a GPU
  sydsgpt bench --what all --out sydsgpt/bench/results    # refresh the results the book shows

Timings are only comparable within one run: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..bench import ablation, training
from ..bench.common import format_table, write_result
from ..bench.memory import PeakMemory

WHAT = ("train", "ablation", "generate", "tokenizer")
QUICK_BPE = {"vocab_sizes": (300,), "corpus": "the-verdict", "repeats": 1}
FULL_BPE = {"vocab_sizes": (1000, 5000), "corpus": "tinyshakespeare", "repeats": 3}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt bench`` options to ``parser``."""
    parser.add_argument("--what", choices=(*WHAT, "all"), default="all", help="which benchmark to run (default all)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"),
                        help="folder for the JSON results (default ./bench-results)")
    parser.add_argument("--plan", action="store_true",
                        help="ablation only: write its rows marked 'not measured' without running (e.g. --device cuda on a machine without a GPU)")
    training.add_arguments(parser)


def _tokenizer(args: argparse.Namespace) -> Path:
    from ..bench import bpe

    options: dict[str, Any] = dict(QUICK_BPE if args.quick else FULL_BPE)
    print(f"tokenizer: BPE training on {options['corpus']} at vocab sizes {list(options['vocab_sizes'])}; encoding vs tiktoken")
    with PeakMemory("cpu") as memory:
        rows = bpe.run(**options)
    print(format_table(rows, bpe.COLUMNS))
    return write_result(args.out / "bpe.json", "bpe", rows, corpus=options["corpus"],
                        peak_memory_mib=memory.peak_bytes / 2**20, memory=f"whole benchmark: {memory.method}")


def _generate(args: argparse.Namespace) -> Path:
    from ..bench import generation

    path = args.out / "generation.json"
    argv = ["--device", args.device, "--out", str(path)]
    if args.quick:
        argv.append("--quick")
    else:
        argv.append("--transformers")
    if args.preset:
        argv += ["--preset", args.preset]
    generation.main(argv)
    return path


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmarks; returns the exit status."""
    if args.plan and args.what != "ablation":
        raise SystemExit("sydsgpt bench: --plan only applies to --what ablation")
    chosen = WHAT if args.what == "all" else (args.what,)
    preset, batch_size, seq_len = training.shape_defaults(args)
    kind = "gpu" if training.device_kind(args.device) == "cuda" else "cpu"
    schedule = training.schedule_from(args)
    written = []
    for what in chosen:
        print(f"=== {what}", flush=True)
        if what == "train":
            out = args.out / f"training_{kind}.json"
            training.run(preset, args.device, batch_size, seq_len, schedule=schedule, quick=args.quick, out=out)
        elif what == "ablation":
            out = args.out / f"ablation_{kind}.json"
            if args.plan:
                ablation.plan(out, training.device_kind(args.device), args.preset, args.batch_size, args.seq_len)
            else:
                ablation.run(args.device, preset, batch_size, seq_len, schedule, args.quick, out)
        elif what == "generate":
            out = _generate(args)
        else:
            out = _tokenizer(args)
        written.append(out)
    print("results: " + ", ".join(str(p) for p in written))
    return 0
