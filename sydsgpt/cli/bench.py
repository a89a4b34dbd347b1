"""Measure how fast SydsGPT trains, generates and tokenizes on this machine.

Each benchmark prints a table and writes a JSON result (machine, torch version, date,
settings, one row per configuration) into the --out folder:

  train      training tokens/s, MFU and peak memory: plain path, package defaults, all fast paths
             -> training_<cpu|gpu>.json
  ablation   the fast paths switched on one at a time (cumulative) -> ablation_<cpu|gpu>.json
  generate   generation tokens/s with and without the KV cache (and against transformers)
             -> generation.json
  tokenizer  from-scratch BPE training time, encoding MB/s next to tiktoken -> bpe.json
  modern     GPT-2 blocks vs modern blocks, one change at a time, one seed per row at a
             time-derived budget -> modern_cpu.json (chapter 7's experiment is now the
             speedrun harness: --what speedrun with its recipes, 3 seeds each)
  prepare    sydsgpt prepare's MB/s (-j 1, -j 2) next to tiktoken's single-call encode ->
             prepare.json
  quality    held-out bits per byte of chapter 5's run (trained and timed here) and of the
             book checkpoint -> quality_cpu.json
  finetune   chapter 9's SMS spam classifiers on SmolLM2-135M-Instruct and the book checkpoint
             (3 seeds per row, rates chosen on validation): baselines, random init, head only,
             last blocks, LoRA ranks, all weights; a learning curve; a memory split (about an
             hour, CPU only) -> finetune_cpu.json
  instruct   chapter 9's instruction finetuning: SmolLM2 (LoRA, 3 seeds) and the book model,
             with and without loss masking, on held-out prompts -> instruct_<cpu|gpu>.json
  quantization  the book checkpoint and SmolLM2-135M-Instruct in float32, int8 (weight-only and
             dynamic) and 4-bit: held-out bits per byte, weight bytes, memory, decode tokens/s
             -> quantization_cpu.json
  realmodel  SmolLM2-135M-Instruct vs the book checkpoint: bits per byte on Tiny Shakespeare and
             on a text the book checkpoint never saw; greedy decode tokens/s against transformers
             and the memory-bandwidth limit -> real_model_cpu.json
  rewards    chapter 10's learning from rewards: SmolLM2-135M-Instruct on one-digit arithmetic,
             held-out accuracy before and after GRPO, DPO and SFT (3 seeds, 95% intervals;
             about 35 minutes, CPU only) -> rewards_cpu.json
  rewards-probe  how chapter 10 chose its task: SmolLM2's greedy accuracy on 40 questions of
             each task kind, and the groups of sampled answers GRPO could learn from (about a
             minute) -> rewards_probe_cpu.json
  profile    where the time goes: torch.profiler splits of record 0's training step (the
             first book checkpoint's) and the book checkpoint's decode step, the matmul
             peak and MFU, and the training step against a compact reference GPT of the
             same shape (about two minutes) -> profile_cpu.json
  speedrun   recipes trained with several seeds to one budget (default: chapter 5's run),
             held-out bits per byte as a mean and a 95% interval; refuses a busy machine
             (--recipe, --seeds, --allow-busy) -> speedrun_cpu.json (--result: another
             name); --record: the record recipe (the run speedrun-record) in full, once
             per seed (the confirmation, about 20 min per seed) -> speedrun_record_cpu.json
  all        all of them (speedrun: only when named)

Examples:
  sydsgpt bench --what train --quick --out /tmp/bench     # smoke test, seconds
  sydsgpt bench --what ablation                           # gpt2-mini on the CPU, minutes
  sydsgpt bench --what ablation --device cuda             # GPT-2 small at context 1024 on a GPU
  sydsgpt bench --what all --out sydsgpt/bench/results    # refresh the results the book shows

Timings are only comparable within one run: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..runtime import device_type
from ..validation import check_positive_int
from .errors import UsageError
from .options import add_config_options, config_from_args, flag_name

WHAT = (
    "train",
    "ablation",
    "generate",
    "tokenizer",
    "modern",
    "prepare",
    "quality",
    "finetune",
    "instruct",
    "quantization",
    "realmodel",
    "rewards",
    "rewards-probe",
    "profile",
    "speedrun",
)
QUICK_BPE = {"vocab_sizes": (300,), "corpus": "the-verdict", "repeats": 1}
FULL_BPE = {"vocab_sizes": (1000, 5000), "corpus": "tinyshakespeare", "repeats": 3}


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt bench`` options to ``parser``."""
    from ..bench.training import Schedule

    parser.add_argument(
        "--what",
        choices=(*WHAT, "all"),
        default="all",
        help="which benchmark to run (default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-results"),
        help="folder for the JSON results (default: ./bench-results)",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="ablation only: write its rows marked 'not measured' without running (e.g. --device "
        "cuda on a machine without a GPU)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument(
        "--preset",
        default=None,
        help="model preset (default: gpt2-mini on CPU, gpt2-small on CUDA; generate: gpt2-small)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per training step (default: 4 on CPU, 8 on CUDA)",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="tokens per training sequence (default: 256 on CPU, 1024 on CUDA)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: tiny models, one timed step, no torch.compile, seconds",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice, usually one per core)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="generate: rounds of the transformers comparison (default: 5)",
    )
    parser.add_argument(
        "--seconds-per-row",
        type=float,
        default=60.0,
        help="modern: each row's token budget is what the GPT-2 row trains in this many seconds "
        "(default: 60)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="modern: the rows' seed (default: chapter 5's)"
    )
    speed = parser.add_argument_group("speedrun")
    speed.add_argument(
        "--recipe",
        action="append",
        default=None,
        metavar="NAME",
        help="a recipe of sydsgpt.bench.speedrun.RECIPES, SEARCH or FULL_LENGTH (repeatable; "
        "default: chapter5): chapter5, rmsnorm, swiglu, rope, gqa, qk-norm, modern-blocks, "
        "sr-base, sr-muon, sr-modern, sr-modern-muon, sr-mm-seq128, sr-mm-bpe1024, "
        "sr-mm-deep, rec1-dropout0.2-x1.5",
    )
    speed.add_argument(
        "--result",
        default=None,
        metavar="FILE",
        help="the result's file name in --out (default: speedrun_cpu.json, with --record "
        "speedrun_record_cpu.json)",
    )
    speed.add_argument(
        "--record",
        action="store_true",
        help="train the record recipe (the run speedrun-record of sydsgpt.presets.RUNS) in full "
        "once per seed (--seeds, default 2 here) into runs/speedrun/ and score each on the whole "
        "held-out split",
    )
    speed.add_argument(
        "--seeds",
        type=int,
        default=None,
        metavar="N",
        help="seeds per recipe (default: 3; --record: 2)",
    )
    speed.add_argument(
        "--allow-busy",
        action="store_true",
        help="run even when the load average is 1 or more (the result is marked quiet: false)",
    )
    add_config_options(parser.add_argument_group("timing of train and ablation"), Schedule)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmarks; returns the exit status."""
    import torch

    from ..bench import ablation, bpe, finetune, generation, modern, training
    from ..bench import prepare as prepare_bench
    from ..bench import quality
    from ..bench.common import report
    from ..bench.memory import PeakMemory
    from ..bench.setups import DEVICE_DEFAULTS

    if args.plan and args.what != "ablation":
        raise UsageError("--plan only applies to --what ablation")
    for name in (
        "batch_size",
        "seq_len",
        "threads",
        "repeats",
        "seeds",
    ):  # 0 would mean "the default"
        check_positive_int(getattr(args, name), flag_name(name), allow_none=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = device_type(args.device)
    default_preset, default_batch, default_seq = DEVICE_DEFAULTS[
        "cuda" if kind == "cuda" else "cpu"
    ]
    preset, batch_size, seq_len = (
        args.preset or default_preset,
        args.batch_size or default_batch,
        args.seq_len or default_seq,
    )
    schedule = config_from_args(training.Schedule, args)
    workload = training.preset_workload(preset, kind, batch_size, seq_len)
    result = "gpu" if kind == "cuda" else "cpu"
    written = []
    for what in WHAT if args.what == "all" else (args.what,):
        print(f"=== {what}", flush=True)
        if what == "train":
            out = args.out / f"training_{result}.json"
            training.run(workload, args.device, schedule=schedule, quick=args.quick, out=out)
        elif what == "ablation":
            out = args.out / f"ablation_{result}.json"
            if args.plan:
                ablation.plan(out, kind, args.preset, args.batch_size, args.seq_len)
            else:
                ablation.run(args.device, workload, schedule, args.quick, out)
        elif what == "generate":
            out = args.out / "generation.json"
            generation.benchmark(
                preset=args.preset,
                device=args.device,
                quick=args.quick,
                transformers=not args.quick,
                repeats=args.repeats,
                out=out,
            )
        elif what == "modern":
            out = args.out / "modern_cpu.json"
            modern.benchmark(args.seconds_per_row, quick=args.quick, seed=args.seed, out=out)
        elif what == "finetune":
            out = args.out / f"finetune_{result}.json"
            if kind != "cpu" and args.what != "all":
                raise UsageError("--what finetune runs on the CPU only (drop --device)")
            if kind != "cpu":
                print("skipped: the finetune benchmark runs on the CPU only", flush=True)
                continue
            finetune.run(out, quick=args.quick, threads=args.threads or finetune.THREADS)
        elif what == "instruct":
            from ..bench import instruct as instruct_bench

            out = args.out / f"instruct_{result}.json"
            instruct_bench.run(out, quick=args.quick, device=args.device)
        elif what == "quantization":
            from ..bench import quantization

            out = args.out / "quantization_cpu.json"
            quantization.run(out, quick=args.quick)
        elif what == "realmodel":
            from ..bench import real_model

            out = args.out / "real_model_cpu.json"
            real_model.run(out, quick=args.quick)
        elif what == "rewards":
            from ..bench import rewards as rewards_bench

            out = args.out / f"rewards_{result}.json"
            if kind != "cpu":
                if args.what != "all":
                    raise UsageError("--what rewards runs on the CPU only (drop --device)")
                print("skipped: the rewards benchmark runs on the CPU only", flush=True)
                continue
            rewards_bench.run(out, quick=args.quick, threads=args.threads or rewards_bench.THREADS)
        elif what == "speedrun":
            from ..bench import speedrun

            if args.what == "all":
                continue  # minutes per seed: only when asked for by name

            seeds = list(range(123, 123 + (args.seeds or (2 if args.record else 3))))
            if args.record:
                out = args.out / (args.result or "speedrun_record_cpu.json")
                speedrun.confirm(seeds=seeds, allow_busy=args.allow_busy, out=out)
            else:
                out = args.out / (args.result or "speedrun_cpu.json")
                speedrun.run(
                    args.recipe or ["chapter5"],
                    seeds,
                    quick=args.quick,
                    allow_busy=args.allow_busy,
                    out=out,
                )
        elif what == "profile":
            from ..bench import profile as profile_bench

            if kind != "cpu":
                print("skipped: the profile is of the CPU training and decode steps", flush=True)
                continue
            out = args.out / "profile_cpu.json"
            profile_bench.run(quick=args.quick, out=out)
        elif what == "rewards-probe":
            from ..bench import rewards as rewards_bench

            if args.quick or kind != "cpu":
                print("skipped: the probe needs SmolLM2 on the CPU (no --quick)", flush=True)
                continue
            out = args.out / "rewards_probe_cpu.json"
            rewards_bench.probe(out, threads=args.threads or rewards_bench.THREADS)
        elif what == "prepare":
            out = args.out / "prepare.json"
            rows, extra = prepare_bench.run(copies=2 if args.quick else 8)
            report(rows, prepare_bench.COLUMNS, out, "prepare", **extra)
        elif what == "quality":
            out = args.out / "quality_cpu.json"
            report(
                quality.run(),
                quality.COLUMNS,
                out,
                "quality",
                target_bpb=quality.TARGET_BPB,
                target_seconds=quality.TARGET_SECONDS,
                threads=torch.get_num_threads(),
            )
        else:
            out = args.out / "bpe.json"
            options: dict[str, Any] = dict(QUICK_BPE if args.quick else FULL_BPE)
            print(
                f"tokenizer: BPE training on {options['corpus']} at vocab sizes "
                f"{list(options['vocab_sizes'])}; encoding vs tiktoken"
            )
            with PeakMemory("cpu") as memory:
                rows = bpe.run(**options)
            report(
                rows,
                bpe.COLUMNS,
                out,
                "bpe",
                corpus=options["corpus"],
                peak_memory_mib=memory.peak_bytes / 2**20,
                memory=f"whole benchmark: {memory.method}",
            )
        written.append(out)
    print("results: " + ", ".join(str(p) for p in written))
    return 0
