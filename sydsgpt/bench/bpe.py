"""Tokenizer speed: from-scratch BPE training time, and encoding throughput against tiktoken.

Trains :class:`sydsgpt.bpe.BPETokenizer` on a corpus (default tinyshakespeare, 1.1 MB) at
each vocabulary size, then encodes the whole corpus with GPT-2's merges in
``BPETokenizer.from_gpt2()`` (pure Python; "cold" = empty chunk cache, "warm" = every chunk
already cached) and with tiktoken's ``gpt2`` (Rust), and checks that both give the same ids.

Run it with ``sydsgpt bench --what tokenizer``.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ..bpe import BPETokenizer
from ..corpora import load_corpus
from ..tokenizer import get_gpt2_tokenizer
from .common import time_call

COLUMNS = ["task", "tokenizer", "vocab_size", "seconds", "MB_per_s", "tokens", "equal_ids"]


def _row(
    task: str, tokenizer: str, vocab_size: int, seconds: float, n_bytes: int, **extra: Any
) -> dict[str, Any]:
    return {
        "task": task,
        "tokenizer": tokenizer,
        "vocab_size": vocab_size,
        "seconds": seconds,
        "MB_per_s": n_bytes / 1e6 / seconds,
        **extra,
    }


def run(
    vocab_sizes: Sequence[int] = (1000, 5000), corpus: str = "tinyshakespeare", repeats: int = 3
) -> list[dict[str, Any]]:
    """Time BPE training at each of ``vocab_sizes`` and GPT-2 encoding on ``corpus``; one dict per
    measurement.

    Raises:
        AssertionError: the from-scratch GPT-2 tokenizer and tiktoken disagree on the corpus.
    """
    text = load_corpus(corpus)
    n_bytes = len(text.encode("utf-8"))
    rows = []
    for vocab_size in vocab_sizes:
        start = time.perf_counter()
        trained = BPETokenizer().train(text, vocab_size)
        rows.append(
            _row("train", "sydsgpt BPE", trained.n_vocab, time.perf_counter() - start, n_bytes)
        )

    ours = BPETokenizer.from_gpt2()
    theirs = get_gpt2_tokenizer()
    expected = theirs.encode(text)
    got = ours.encode(text)
    if got != expected:
        first = next(
            (i for i, (a, b) in enumerate(zip(got, expected)) if a != b),
            min(len(got), len(expected)),
        )
        raise AssertionError(
            f"BPETokenizer.from_gpt2() and tiktoken differ on {corpus} from token {first}"
        )

    def cold() -> None:
        ours.clear_cache()
        ours.encode(text)

    extra = {"tokens": len(expected), "equal_ids": True}
    rows.append(
        _row(
            "encode",
            "from_gpt2 (cold cache)",
            ours.n_vocab,
            time_call(cold, repeats, warmup=0),
            n_bytes,
            **extra,
        )
    )
    rows.append(
        _row(
            "encode",
            "from_gpt2 (warm cache)",
            ours.n_vocab,
            time_call(lambda: ours.encode(text), repeats),
            n_bytes,
            **extra,
        )
    )
    rows.append(
        _row(
            "encode",
            "tiktoken gpt2",
            theirs.n_vocab,
            time_call(lambda: theirs.encode(text), repeats),
            n_bytes,
            **extra,
        )
    )
    return rows
