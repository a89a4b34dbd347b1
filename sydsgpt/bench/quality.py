"""The book's two quality figures: held-out bits per byte of its runs, with their wall times.

* **Chapter 5's run** (``RUNS["book-ch05"]``) is trained here from scratch, timed, then
  measured on the whole held-out split (the last 10% of Tiny Shakespeare) at its context
  length. The chapter's target: <= 2.5 bits per byte in <= 120 s of training on a 2-core CPU.
* **The book checkpoint** (``RUNS["book-checkpoint"]``, the weights that ship with the
  package) is measured the same way; its training time is the one its ``info.json``
  recorded when it was trained (``sydsgpt.book.publish_book_checkpoint``), since retraining
  it takes about twenty minutes.

``sydsgpt bench --what quality`` runs this and writes ``quality_cpu.json``. Measure on a
quiet machine: training time depends on what else runs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ..book import held_out, load_book_checkpoint, train_book_model
from ..model import count_parameters
from ..presets import get_run

COLUMNS = (
    "run",
    "params",
    "tokenizer",
    "steps",
    "tokens",
    "train_s",
    "val_loss",
    "val_bpb",
    "how_timed",
)
TARGET_BPB, TARGET_SECONDS = 2.5, 120.0
"""Chapter 5's run should reach this many bits per byte within this many seconds of training."""


def run(log: Any = print) -> list[dict[str, Any]]:
    """Train chapter 5's run (timed), load the book checkpoint; one row each."""
    spec = get_run("book-ch05")
    rows = []
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        trained = train_book_model(Path(out) / "book-ch05", fresh=True, show_progress=False)
        seconds = time.perf_counter() - start
    loss, bpb = held_out(trained.model, trained.tokenizer, "book-ch05")
    steps = spec.train.max_steps
    rows.append(
        {
            "run": "book-ch05",
            "params": count_parameters(trained.model),
            "tokenizer": trained.tokenizer.name,
            "steps": steps,
            "tokens": steps * spec.train.batch_size * spec.train.seq_len,
            "train_s": round(seconds, 1),
            "val_loss": round(loss, 4),
            "val_bpb": round(bpb, 4),
            "how_timed": "timed here: tokenizer training and the whole train_book_model call",
        }
    )
    log(
        f"book-ch05: {bpb:.3f} bits/byte after {seconds:.0f} s (target: <= {TARGET_BPB} in <= "
        f"{TARGET_SECONDS:.0f} s)"
    )
    book = load_book_checkpoint()
    loss, bpb = held_out(book.model, book.tokenizer, "book-checkpoint")
    info = book.info or {}
    rows.append(
        {
            "run": "book-checkpoint",
            "params": info.get("parameters"),
            "tokenizer": book.tokenizer.name,
            "steps": info.get("steps"),
            "tokens": info.get("tokens_seen"),
            "train_s": info.get("train_seconds"),
            "val_loss": round(loss, 4),
            "val_bpb": round(bpb, 4),
            "how_timed": f"from its info.json (training steps only, {info.get('machine')})",
        }
    )
    log(f"book-checkpoint: {bpb:.3f} bits/byte ({info.get('train_seconds')} s of training)")
    return rows
