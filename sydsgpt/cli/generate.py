"""Generate text from a checkpoint, streamed to stdout as it is produced (chapter 6).

The prompt is printed first, then each new piece of text as soon as it is decoded.
Decoding is greedy unless --temperature is above 0. Generation stops after
--max-new-tokens tokens, at the end-of-text token, or at a --stop string (not printed).

Examples:
  sydsgpt generate --checkpoint runs/book/checkpoint.pt --prompt "Every effort moves you"
  sydsgpt generate --checkpoint ckpt.pt --prompt "ROMEO:" --temperature 0.8 --top-k 50 --seed 123
  sydsgpt generate --checkpoint ckpt.pt --prompt "Once" --top-p 0.9 --temperature 1.0 \\
      --repetition-penalty 1.2 --no-repeat-ngram 3 --stop "\\n\\n" --max-new-tokens 200

Checkpoints written by `sydsgpt train` and the original SydsGPT-Pretraining format
({"model", "optimizer", "config"}) both load; they are read with weights_only=True.
The tokenizer is GPT-2's, unless the checkpoint was trained with another one: then the
tokenizer.json saved beside it is used (or give --tokenizer PATH).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CheckpointError, check_compatible, load_checkpoint
from ..generate import stream_text, use_decoding_layout
from ..model import SydsGPT
from ..tokenizer import get_gpt2_tokenizer


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``sydsgpt generate`` arguments."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (.pt) to load")
    parser.add_argument("--prompt", required=True, help="the text to continue (escapes like \\n work)")
    parser.add_argument("--max-new-tokens", type=int, default=100, help="most tokens to generate (default 100)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the K most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the nucleus of mass P, in (0, 1]")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="CTRL penalty on seen tokens (1 = off)")
    parser.add_argument("--no-repeat-ngram", type=int, default=0, metavar="N", help="never repeat an N-gram (0 = off)")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling: same seed, same text")
    parser.add_argument("--stop", nargs="+", default=[], metavar="STR",
                        help="stop when the new text contains one of these strings (escapes like \\n work)")
    parser.add_argument("--ignore-eos", action="store_true", help="do not stop at the end-of-text token")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole window each step (slower)")
    parser.add_argument("--tokenizer", default=None, metavar="PATH",
                        help="a BPETokenizer saved with .save(); default: tokenizer.json beside the "
                        "checkpoint when the checkpoint names a tokenizer other than GPT-2's, else GPT-2's")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps... (default: cuda if available)")


def _unescape(text: str) -> str:
    """``"\\n"`` typed on a command line means a newline."""
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_for_generation(path: str, device: torch.device, tokenizer_path: str | None = None) -> tuple[SydsGPT, Any]:
    """The model (eval mode, on ``device``, in :func:`~sydsgpt.generate.use_decoding_layout`) and
    tokenizer for a checkpoint; checks they match."""
    checkpoint = load_checkpoint(path, map_location=device)
    identity = checkpoint.get("tokenizer") or {"name": "gpt2"}
    beside = Path(path).parent / "tokenizer.json"  # where training saves a BPE tokenizer
    if tokenizer_path is None and identity["name"] != "gpt2" and beside.is_file():
        tokenizer_path = str(beside)
    if tokenizer_path is None:
        tokenizer = get_gpt2_tokenizer()
    else:
        from ..bpe import BPETokenizer

        tokenizer = BPETokenizer.load(tokenizer_path)
    check_compatible(checkpoint, tokenizer=tokenizer)
    model = SydsGPT(checkpoint["config"])
    model.load_state_dict(checkpoint["model"])
    if tokenizer.n_vocab > model.cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {tokenizer.n_vocab} ids but the model only {model.cfg.vocab_size}; "
            "pass the tokenizer the model was trained with (--tokenizer PATH)."
        )
    # Generation only: store the linear weights as one-token steps read them fastest.
    return use_decoding_layout(model.to(device).eval()), tokenizer


def run(args: argparse.Namespace) -> int:
    """Load the checkpoint and stream the continuation of ``--prompt`` to stdout."""
    try:
        model, tokenizer = load_for_generation(args.checkpoint, _device(args.device), args.tokenizer)
        pieces = stream_text(
            model, tokenizer, _unescape(args.prompt), args.max_new_tokens,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
            repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram,
            seed=args.seed, stop=[_unescape(s) for s in args.stop], stop_at_eos=not args.ignore_eos,
            use_cache=not args.no_cache,
        )
    except (OSError, ValueError, CheckpointError) as exc:
        print(f"sydsgpt generate: error: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    out.write(_unescape(args.prompt))
    out.flush()
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    out.flush()
    return 0
