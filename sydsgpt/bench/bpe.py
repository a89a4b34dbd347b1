"""Tokenizer speed: from-scratch BPE training time, and encoding throughput against tiktoken.

Trains :class:`sydsgpt.bpe.BPETokenizer` on a corpus (default tinyshakespeare, 1.1 MB) at
each vocabulary size, then encodes the whole corpus with GPT-2's merges in
``BPETokenizer.from_gpt2()`` (pure Python; "cold" = empty chunk cache, "warm" = every chunk
already cached) and with tiktoken's ``gpt2`` (Rust), and checks that both give the same ids.

    python -m sydsgpt.bench.bpe [--vocab-sizes 1000 5000] [--out sydsgpt/bench/results/bpe.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

from ..bpe import BPETokenizer
from ..corpora import load_corpus
from ..tokenizer import get_gpt2_tokenizer
from .common import format_table, time_call, write_result

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bpe.json"
COLUMNS = ["task", "tokenizer", "vocab_size", "seconds", "MB_per_s", "tokens", "equal_ids"]


def _row(task: str, tokenizer: str, vocab_size: int, seconds: float, n_bytes: int, **extra: Any) -> dict[str, Any]:
    return {"task": task, "tokenizer": tokenizer, "vocab_size": vocab_size, "seconds": seconds,
            "MB_per_s": n_bytes / 1e6 / seconds, **extra}


def run(vocab_sizes: Sequence[int] = (1000, 5000), corpus: str = "tinyshakespeare", repeats: int = 3) -> list[dict[str, Any]]:
    """Time BPE training at each of ``vocab_sizes`` and GPT-2 encoding on ``corpus``; one dict per measurement.

    Raises:
        AssertionError: the from-scratch GPT-2 tokenizer and tiktoken disagree on the corpus.
    """
    text = load_corpus(corpus)
    n_bytes = len(text.encode("utf-8"))
    rows = []
    for vocab_size in vocab_sizes:
        start = time.perf_counter()
        trained = BPETokenizer().train(text, vocab_size)
        rows.append(_row("train", "sydsgpt BPE", trained.n_vocab, time.perf_counter() - start, n_bytes))

    ours = BPETokenizer.from_gpt2()
    theirs = get_gpt2_tokenizer()
    expected = theirs.encode(text)
    got = ours.encode(text)
    if got != expected:
        first = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"BPETokenizer.from_gpt2() and tiktoken differ on {corpus} from token {first}")

    def cold() -> None:
        ours.clear_cache()
        ours.encode(text)

    extra = {"tokens": len(expected), "equal_ids": True}
    rows.append(_row("encode", "from_gpt2 (cold cache)", ours.n_vocab, time_call(cold, repeats, warmup=0), n_bytes, **extra))
    rows.append(_row("encode", "from_gpt2 (warm cache)", ours.n_vocab, time_call(lambda: ours.encode(text), repeats), n_bytes, **extra))
    rows.append(_row("encode", "tiktoken gpt2", theirs.n_vocab, time_call(lambda: theirs.encode(text), repeats), n_bytes, **extra))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sydsgpt.bench.bpe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[1000, 5000], help="BPE vocabulary sizes to train")
    parser.add_argument("--corpus", default="tinyshakespeare", help="corpus name or text file (default tinyshakespeare)")
    parser.add_argument("--repeats", type=int, default=3, help="timed encodings (the best is kept)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result path (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    rows = run(args.vocab_sizes, args.corpus, args.repeats)
    print(format_table(rows, COLUMNS))
    path = write_result(args.out, "bpe", rows, corpus=args.corpus)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
