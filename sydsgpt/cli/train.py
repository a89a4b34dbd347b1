"""Pretrain a SydsGPT model on a text corpus (chapter 5).

DATA is a corpus name (tinyshakespeare, the-verdict) or the path of a UTF-8 text file.
The last --val-fraction of the text is held out for validation. The run writes into --out:
  log.jsonl       one JSON record per step (loss, learning rate, grad norm, tokens/s, val loss)
  checkpoint.pt   model + optimizer + scheduler + RNG + data position (atomic, resumable)
  run.json        the model and training configs; loss.png, the loss curves
  tokenizer.json  the BPE tokenizer, when --tokenizer bpe:N trained one

examples:
  # chapter 5's run: a 1,024-id BPE tokenizer and a 0.9M-parameter model, minutes on a CPU;
  # book-ch05.json: {"vocab_size": 1024, "embedding_dim": 128, "context_length": 128,
  #                  "num_layers": 4, "num_heads": 4, "dropout": 0.1, "tie_weights": true}
  sydsgpt train tinyshakespeare --tokenizer bpe:1024 --config book-ch05.json --steps 400 \\
      --batch-size 16 --context-length 128 --lr 3e-3 --warmup 20 --eval-interval 50 \\
      --eval-batches 10 --device cpu --out runs/ch05

  # GPT-2 small (124M) on one GPU, bf16 and torch.compile
  sydsgpt train tinyshakespeare --preset gpt2-small --batch-size 32 --context-length 1024 \\
      --steps 5000 --device cuda --dtype bfloat16 --compile --out runs/gpt2-small

  # the same on 8 GPUs of one machine (each process gets 32/8 = 4 rows of every batch)
  torchrun --standalone --nproc_per_node=8 -m sydsgpt.cli train tinyshakespeare \\
      --preset gpt2-small --batch-size 32 --context-length 1024 --steps 5000 --out runs/gpt2-small

  # continue a run that was stopped or crashed: the same command plus --resume
  sydsgpt train tinyshakespeare --preset gpt2-small ... --out runs/gpt2-small --resume
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_NAME, CheckpointError
from ..model import PRESETS, SydsGPTConfig

TOKENIZER_FILE = "tokenizer.json"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``sydsgpt train``'s arguments."""
    parser.add_argument("data", metavar="DATA", help="corpus name (tinyshakespeare, the-verdict) or a text file path")
    model = parser.add_argument_group("model")
    choice = model.add_mutually_exclusive_group()
    choice.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a named model size (default: book)")
    choice.add_argument("--config", metavar="JSON", default=None,
                        help="a JSON file with the model config (vocab_size, embedding_dim, context_length, num_layers, num_heads, ...)")
    model.add_argument("--tokenizer", default="gpt2", metavar="NAME",
                       help="gpt2 (default), bpe:N to train an N-id byte-level BPE on the training text, "
                       "or the path of a saved BPETokenizer JSON; vocab_size is set to the tokenizer's size")
    model.add_argument("--dropout", type=float, default=None, help="override the config's dropout")

    run = parser.add_argument_group("run")
    run.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/<data name>)")
    run.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt (same data, model, tokenizer)")
    run.add_argument("--stop-after", type=int, default=None, metavar="STEP",
                     help="end this session after STEP steps (checkpointed); the schedule still spans --steps")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps (default: one epoch)")
    length.add_argument("--epochs", type=int, default=None, help="passes over the training text")
    run.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out (default 0.1)")
    run.add_argument("--seed", type=int, default=123, help="seeds the init, dropout and data order (default 123)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    opt = parser.add_argument_group("optimization")
    opt.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch, over all processes (default 8)")
    opt.add_argument("--context-length", type=int, default=None, help="tokens per sequence (default: the model's)")
    opt.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    opt.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (default 4e-4)")
    opt.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of the peak (default 0.1)")
    opt.add_argument("--warmup", type=int, default=None, help="linear warm-up steps (default: 5%% of the run)")
    opt.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1)")
    opt.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 for none (default 1.0)")

    ev = parser.add_argument_group("evaluation and checkpoints")
    ev.add_argument("--eval-interval", type=int, default=100, help="evaluate and sample every N steps (default 100)")
    ev.add_argument("--eval-batches", type=int, default=20, help="validation batches per evaluation (default 20)")
    ev.add_argument("--checkpoint-interval", type=int, default=None, help="save every N steps (default: at each evaluation)")
    ev.add_argument("--sample-prompt", default="The", help="prompt of the samples printed at each evaluation")
    ev.add_argument("--sample-tokens", type=int, default=30, help="tokens per sample, 0 for none (default 30)")

    hw = parser.add_argument_group("hardware")
    hw.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    hw.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                    help="auto: bfloat16 autocast on a CUDA GPU that supports it, else float32")
    hw.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster steps on GPUs)")
    hw.add_argument("--no-tf32", action="store_true", help="keep full float32 matrix products on CUDA")
    hw.add_argument("--no-fused-adamw", action="store_true", help="use the unfused AdamW on CUDA")


def _data_name(data: str) -> str:
    from ..corpora import CORPORA

    return data if data in CORPORA else Path(data).stem


def _tokenizer(spec: str, train_text: str, data_name: str, out: Path, resume: bool) -> Any:
    """GPT-2's tokenizer, a saved BPE, or a BPE trained now (``bpe:N``) and saved in ``out``."""
    from ..bpe import BPETokenizer
    from ..tokenizer import get_gpt2_tokenizer

    if spec == "gpt2":
        return get_gpt2_tokenizer()
    if spec.startswith("bpe:"):
        size = spec.split(":", 1)[1]
        if not size.isdigit() or int(size) <= 256:
            raise ValueError(f"--tokenizer bpe:N needs an integer N > 256 (the byte tokens come first), got {spec!r}")
        saved = out / TOKENIZER_FILE
        if resume and saved.is_file():
            return BPETokenizer.load(saved)
        tokenizer = BPETokenizer(name=f"bpe{size}-{data_name}").train(train_text, int(size))
        out.mkdir(parents=True, exist_ok=True)
        tokenizer.save(saved)
        return tokenizer
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"--tokenizer {spec!r} is neither 'gpt2', 'bpe:N' nor an existing BPETokenizer JSON file")
    return BPETokenizer.load(path)


def model_config(args: argparse.Namespace, n_vocab: int) -> dict[str, Any]:
    """The model config from ``--preset``/``--config``, sized to the tokenizer."""
    if args.config:
        config = json.loads(Path(args.config).read_text())
        if not isinstance(config, dict):
            raise ValueError(f"{args.config} must hold a JSON object (the model config), got {type(config).__name__}")
    else:
        config = dict(PRESETS[args.preset or "book"])
    config["vocab_size"] = n_vocab
    if args.dropout is not None:
        config["dropout"] = args.dropout
    if args.context_length is not None and args.context_length > config["context_length"]:
        raise ValueError(
            f"--context-length {args.context_length} is longer than the model's context_length "
            f"{config['context_length']}; train on shorter sequences or use a config with a longer context"
        )
    return SydsGPTConfig.from_dict(config).to_dict()


def train_config(args: argparse.Namespace) -> Any:
    from ..train import TrainConfig

    return TrainConfig(
        max_steps=args.steps, epochs=args.epochs or 1, batch_size=args.batch_size, context_length=args.context_length,
        grad_accum_steps=args.grad_accum, lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip or None, eval_interval=args.eval_interval,
        eval_batches=args.eval_batches, checkpoint_interval=args.checkpoint_interval, sample_prompt=args.sample_prompt,
        sample_tokens=args.sample_tokens, seed=args.seed, device=args.device, dtype=args.dtype, compile=args.compile,
        tf32=False if args.no_tf32 else None, fused_adamw=False if args.no_fused_adamw else None,
    )


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success, 1 with a message on stderr for a user error."""
    from .. import distributed
    from ..corpora import load_corpus
    from ..data import train_val_split
    from ..model import SydsGPT
    from ..train import TrainingDiverged, make_loaders, plot_losses, resolve_device, seed_everything
    from ..train import train as train_loop

    out = Path(args.out or Path("runs") / _data_name(args.data))
    try:
        cfg = train_config(args)
        if (out / CHECKPOINT_NAME).exists() and not args.resume:
            raise FileExistsError(f"{out / CHECKPOINT_NAME} already exists: add --resume to continue that run, or choose another --out")
        if args.resume and not (out / CHECKPOINT_NAME).exists():
            raise FileNotFoundError(f"--resume: there is no {out / CHECKPOINT_NAME} to continue from; run without --resume first")
        ctx = distributed.init_distributed(resolve_device(cfg.device).type)
        text = load_corpus(args.data)
        train_text, _ = train_val_split(text, args.val_fraction)
        if args.tokenizer.startswith("bpe:") and ctx.enabled:
            # one process trains the BPE, the others then load it
            if ctx.is_main:
                tokenizer = _tokenizer(args.tokenizer, train_text, _data_name(args.data), out, args.resume)
            distributed.barrier(ctx)
            if not ctx.is_main:
                tokenizer = _tokenizer(str(out / TOKENIZER_FILE), train_text, _data_name(args.data), out, args.resume)
        else:
            tokenizer = _tokenizer(args.tokenizer, train_text, _data_name(args.data), out, args.resume)
        config = model_config(args, tokenizer.n_vocab)
        seed_everything(cfg.seed)
        model = SydsGPT(config)
        train_loader, val_loader = make_loaders(text, tokenizer, cfg, config["context_length"], args.val_fraction)
        if ctx.is_main:
            n_params = sum(p.numel() for p in model.parameters())
            print(f"model: {n_params:,} parameters; tokenizer {tokenizer.name} ({tokenizer.n_vocab} ids); "
                  f"{len(train_loader.dataset):,} training sequences; {ctx.world_size} process(es); out: {out}", file=sys.stderr)
        history = train_loop(
            model, train_loader, val_loader, cfg, tokenizer=tokenizer, out_dir=out, resume=args.resume,
            stop_after=args.stop_after, show_progress=not args.quiet,
        )
        if ctx.is_main:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            ax = plot_losses(out / "log.jsonl")
            ax.figure.savefig(out / "loss.png", dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            last_val = next((r["val_loss"] for r in reversed(history) if "val_loss" in r), None)
            print(f"done: step {history[-1]['step']}, val loss {last_val if last_val is None else round(last_val, 4)}; "
                  f"checkpoint {out / CHECKPOINT_NAME}", file=sys.stderr)
    except (TrainingDiverged, CheckpointError, FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"sydsgpt train: error: {exc}", file=sys.stderr)
        return 1
    finally:
        distributed.cleanup()
    return 0
