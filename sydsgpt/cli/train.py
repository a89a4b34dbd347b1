"""Pretrain a SydsGPT model on a text corpus (chapter 5).

DATA is a corpus name (tinyshakespeare, the-verdict), the path of a UTF-8 text file (the
last --val-fraction of the text is held out for validation), or a dataset folder made by
`sydsgpt prepare` (its shards are memory-mapped; its validation shard is held out). The run writes
into --out:
  log.jsonl       one JSON record per step (loss, learning rate, grad norm, tokens/s, val loss)
  checkpoint.pt   model + optimizer + scheduler + RNG + data position (atomic, resumable)
  run.json        the model and training configs; loss.png, the loss curves
  tokenizer.json  the BPE tokenizer, when --tokenizer bpe:N trained one
While it runs, --out holds run.lock (a second run on it is refused). Ctrl-C or SIGTERM
finishes the current step, saves its checkpoint and stops; add --resume to continue.

Every training option below is a field of sydsgpt.train.TrainConfig (its default and
help come from there).

examples:
  # chapter 5's run (a 1,024-id BPE tokenizer, the 0.9M-parameter book-ch05 model,
  # minutes on a CPU); the line comes from sydsgpt.presets.RUNS["book-ch05"].command(...)
  {book_ch05}

  # GPT-2 small (124M) on one GPU, bf16 and torch.compile
  sydsgpt train tinyshakespeare --preset gpt2-small --batch-size 32 --seq-len 1024 \\
      --max-steps 5000 --device cuda --dtype bfloat16 --compile --out runs/gpt2-small

  # the same on 8 GPUs of one machine (each process gets 32/8 = 4 rows of every batch)
  torchrun --standalone --nproc_per_node=8 -m sydsgpt.cli train tinyshakespeare \\
      --preset gpt2-small --batch-size 32 --seq-len 1024 --max-steps 5000 --out runs/gpt2-small

  # a model too large for DDP: shard weights, gradients and AdamW state over the 8 GPUs (FSDP2)
  torchrun --standalone --nproc_per_node=8 -m sydsgpt.cli train data/fineweb-edu-10B \\
      --preset gpt2-xl --batch-size 128 --grad-accum-steps 4 --seq-len 1024 --fsdp --out
      runs/gpt2-xl

  # continue a run that was stopped or crashed: the same command plus --resume
  sydsgpt train tinyshakespeare --preset gpt2-small ... --out runs/gpt2-small --resume
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import distributed
from ..bpe import BPETokenizer
from ..corpora import CORPORA, load_corpus
from ..data import make_loaders, train_val_split
from ..files import TOKENIZER_NAME
from ..model import SydsGPT, SydsGPTConfig
from ..presets import RUNS, get_preset, preset_names
from ..resume import RESUME_FIXED
from ..runtime import device_type, resolve_device, seed_everything
from ..shards import (
    DATASET_TOKENIZER_NAME,
    dataset_tokenizer,
    is_prepared_dataset,
    prepared_loaders,
    read_manifest,
)
from ..bpe import TOKENIZER_SPEC_HELP, resolve_tokenizer
from ..train import Session, train as train_loop
from ..train_config import TrainConfig
from ..validation import check_positive_int
from .options import add_config_options, config_from_args, flag_name
from .runs import check_run_folder, finish_run, run_folder


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``sydsgpt train``'s arguments."""
    parser.add_argument(
        "data",
        metavar="DATA",
        help="corpus name (tinyshakespeare, the-verdict), a text file path, or a folder from "
        "sydsgpt prepare",
    )
    model = parser.add_argument_group("model")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument(
        "--preset",
        choices=preset_names(),
        default=None,
        metavar="NAME",
        help=f"a named model config: {', '.join(preset_names())} (default: gpt2-mini)",
    )
    choice.add_argument(
        "--config",
        metavar="JSON",
        default=None,
        help="a JSON file with the model config (vocab_size, embedding_dim, context_length, "
        "num_layers, num_heads, ...)",
    )
    model.add_argument(
        "--tokenizer",
        default="gpt2",
        metavar="SPEC",
        help=TOKENIZER_SPEC_HELP + "; vocab_size is set to the tokenizer's size (default: gpt2)",
    )
    model.add_argument("--dropout", type=float, default=None, help="override the config's dropout")

    run = parser.add_argument_group("run")
    run.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (default: runs/<data name>)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint.pt (same data, model, tokenizer); a changed training "
        "option applies from the next step and is recorded in log.jsonl and run.json, except "
        + ", ".join(flag_name(f) for f in RESUME_FIXED)
        + " (fixed for a run: resume refuses a change)",
    )
    run.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEP",
        help="end this session after STEP steps (checkpointed); the schedule still spans "
        "--max-steps",
    )
    run.add_argument(
        "--val-fraction", type=float, default=0.1, help="share of the text held out (default: 0.1)"
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    add_config_options(
        parser.add_argument_group("training (sydsgpt.train.TrainConfig)"), TrainConfig
    )


def description() -> str:
    """This command's ``--help`` text, with chapter 5's command line filled in from its preset."""
    return (__doc__ or "").replace("{book_ch05}", RUNS["book-ch05"].command("runs/book-ch05"))


def _data_name(data: str) -> str:
    return data if data in CORPORA else Path(data).stem


def _tokenizer(spec: str, train_text: str, data_name: str, out: Path, resume: bool) -> Any:
    """GPT-2's tokenizer, a saved BPE, or a BPE trained now (``bpe:N``) and saved in ``out``."""
    saved = out / TOKENIZER_NAME
    if spec.startswith("bpe:") and resume and saved.is_file():
        return BPETokenizer.load(saved)
    tokenizer = resolve_tokenizer(spec, train_text, data_name)
    if spec.startswith("bpe:"):
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
    return tokenizer


def _prepared_tokenizer(folder: str, spec: str, out: Path) -> Any:
    """A prepared dataset's own tokenizer (a BPE one is copied into ``out``); ``--tokenizer`` may
    only name it (``gpt2``, the default, or the dataset's file)."""
    saved = read_manifest(folder)["tokenizer"]["spec"]
    if spec != "gpt2" and Path(spec).resolve() != (Path(folder) / DATASET_TOKENIZER_NAME).resolve():
        raise ValueError(
            f"{folder} is a prepared dataset: it is already tokenized (with {saved}); leave out "
            "--tokenizer"
        )
    tokenizer = dataset_tokenizer(folder)
    if saved != "gpt2":
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(out / TOKENIZER_NAME)
    return tokenizer


def model_config(args: argparse.Namespace, n_vocab: int) -> dict[str, Any]:
    """The model config from ``--preset``/``--config``, sized to the tokenizer."""
    if args.config:
        try:
            config = json.loads(Path(args.config).read_text())
        except ValueError as exc:
            raise ValueError(
                f"{args.config} is not valid JSON ({exc}); --config needs a JSON object with the "
                "model config"
            ) from None
        if not isinstance(config, dict):
            raise ValueError(
                f"{args.config} must hold a JSON object (the model config), got "
                f"{type(config).__name__}"
            )
    else:
        config = get_preset(args.preset or "gpt2-mini")
    config["vocab_size"] = n_vocab
    if args.dropout is not None:
        config["dropout"] = args.dropout
    if args.seq_len is not None and args.seq_len > config["context_length"]:
        raise ValueError(
            f"--seq-len {args.seq_len} is longer than the model's context_length "
            f"{config['context_length']}; train on shorter sequences or use a config with a longer "
            "context"
        )
    return SydsGPTConfig.from_dict(config).to_dict()


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` the options ask for."""
    return config_from_args(TrainConfig, args)


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success. Errors propagate to :func:`sydsgpt.cli.main`, which reports them
    (:mod:`sydsgpt.cli.errors`)."""
    out = Path(args.out or Path("runs") / _data_name(args.data))
    cfg = train_config(args)
    check_positive_int(args.stop_after, "--stop-after", allow_none=True)
    resolve_device(cfg.device, 0)  # a missing GPU is an error before anything is written
    model_config(args, 1)  # and so is a bad model option, before a tokenizer is trained
    check_run_folder(out, args.resume)
    ctx = distributed.init_distributed(device_type(cfg.device))
    try:
        # locked before anything is written into --out (the tokenizer, the log)
        with run_folder(out, lock=ctx.is_main) as folder:
            _train(args, cfg, out, folder, ctx)
    finally:
        distributed.cleanup()
    return 0


def _train(args: argparse.Namespace, cfg: TrainConfig, out: Path, folder: Any, ctx: Any) -> None:
    """:func:`run`'s body, in the locked run folder."""
    prepared = is_prepared_dataset(args.data)
    if prepared:  # a folder from sydsgpt prepare: its shards and its tokenizer
        tokenizer = _prepared_tokenizer(args.data, args.tokenizer, out)
    else:
        text = load_corpus(args.data)
        train_text, _ = train_val_split(text, args.val_fraction)
    if not prepared and args.tokenizer.startswith("bpe:") and ctx.enabled:
        # one process trains the BPE, the others then load it
        if ctx.is_main:
            tokenizer = _tokenizer(
                args.tokenizer, train_text, _data_name(args.data), out, args.resume
            )
        distributed.barrier(ctx)
        if not ctx.is_main:
            tokenizer = _tokenizer(
                str(out / TOKENIZER_NAME), train_text, _data_name(args.data), out, args.resume
            )
    elif not prepared:
        tokenizer = _tokenizer(args.tokenizer, train_text, _data_name(args.data), out, args.resume)
    config = model_config(args, tokenizer.n_vocab)
    seed_everything(cfg.seed)
    model = SydsGPT(config)
    seq_len = cfg.seq_len or config["context_length"]
    if prepared:
        train_loader, val_loader = prepared_loaders(args.data, seq_len, cfg.batch_size)
    else:
        train_loader, val_loader = make_loaders(
            text, tokenizer, seq_len, cfg.batch_size, args.val_fraction
        )
    if ctx.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"model: {n_params:,} parameters; tokenizer {tokenizer.name} ({tokenizer.n_vocab} "
            f"ids); {len(train_loader.dataset):,} training sequences; {ctx.world_size} "
            f"process(es); out: {out}",
            file=sys.stderr,
        )
    session = Session(
        out_dir=folder, resume=args.resume, stop_after=args.stop_after, show_progress=not args.quiet
    )
    history = train_loop(model, train_loader, val_loader, cfg, tokenizer=tokenizer, session=session)
    if ctx.is_main:
        finish_run(out, history, "Training and validation loss")
