"""Benchmark: ``sydsgpt prepare`` throughput in MB/s next to tiktoken's single-call encode of the
same text.

The corpus is ``copies`` copies of a named corpus (default tinyshakespeare, 1.1 MB each), one
text file per copy (each a document). Rows, in one run on the same files:

* ``tiktoken encode (one call)``: ``encode_ordinary`` of all the text as one string, one thread;
* ``prepare -j N``: the whole pipeline (reading, pieces, N worker processes, writing shards
  and manifest, the pool's start-up included), for each N in ``jobs``.

Each row has wall-clock MB/s and MB per CPU-second (this process and its worker processes).

Every prepared dataset is checked: its ids equal tiktoken's for each document plus an
end-of-text id. The machine's load average is recorded before and after each row, because
on a shared machine the other processes' work is in every number. Run it with
``sydsgpt bench --what prepare``.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..corpora import corpus_path
from ..prepare import PrepareConfig, prepare
from ..shards import read_manifest
from ..tokenizer import get_gpt2_tokenizer

COLUMNS = [
    "task",
    "jobs",
    "seconds",
    "MB_per_s",
    "cpu_seconds",
    "MB_per_cpu_s",
    "tokens",
    "equal_ids",
    "load_before",
    "load_after",
]


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the prepare workers)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _row(
    task: str, jobs: int, seconds: float, cpu: float, n_bytes: int, **extra: Any
) -> dict[str, Any]:
    return {
        "task": task,
        "jobs": jobs,
        "seconds": seconds,
        "MB_per_s": n_bytes / 1e6 / seconds,
        "cpu_seconds": cpu,
        "MB_per_cpu_s": n_bytes / 1e6 / cpu,
        **extra,
    }


def run(
    copies: int = 8,
    jobs: Sequence[int] = (1, 2),
    corpus: str = "tinyshakespeare",
    chunk_size: int = 1 << 20,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time tiktoken and ``prepare`` on ``copies`` copies of ``corpus``; returns ``(rows, extra)``.

    Raises:
        AssertionError: a prepared dataset's ids differ from tiktoken's.
    """
    source = corpus_path(corpus)
    text = source.read_text(encoding="utf-8")
    tokenizer = get_gpt2_tokenizer()
    doc_ids = [*tokenizer.encode_ordinary(text), tokenizer.eot_token]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sydsgpt-bench-prepare-") as tmp:
        folder = Path(tmp) / "corpus"
        folder.mkdir()
        for i in range(copies):
            shutil.copyfile(source, folder / f"part_{i:03d}.txt")
        n_bytes = sum(p.stat().st_size for p in folder.iterdir())
        whole = text * copies
        before, cpu = _load(), _cpu_seconds()
        start = time.perf_counter()
        n_tokens = len(tokenizer.encode_ordinary(whole))
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        rows.append(
            _row(
                "tiktoken encode (one call)",
                1,
                seconds,
                cpu,
                n_bytes,
                tokens=n_tokens,
                equal_ids=None,
                load_before=before,
                load_after=_load(),
            )
        )
        del whole
        for j in jobs:
            out = Path(tmp) / f"prepared-j{j}"
            cfg = PrepareConfig(
                jobs=j,
                chunk_size=chunk_size,
                val_tokens=len(doc_ids) // 2,
                shard_tokens=len(doc_ids),
            )
            before, cpu = _load(), _cpu_seconds()
            start = time.perf_counter()
            prepare([folder], out, cfg, show_progress=False)
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            after = _load()
            manifest = read_manifest(out)
            ids = np.concatenate(
                [np.fromfile(out / s["name"], dtype=manifest["dtype"]) for s in manifest["shards"]]
            )
            equal = ids.tolist() == doc_ids * copies
            if not equal:
                raise AssertionError(f"prepare -j {j} wrote ids that differ from tiktoken's")
            rows.append(
                _row(
                    "sydsgpt prepare",
                    j,
                    seconds,
                    cpu,
                    n_bytes,
                    tokens=len(ids),
                    equal_ids=equal,
                    load_before=before,
                    load_after=after,
                )
            )
    extra = {
        "corpus": f"{copies} copies of {corpus} as {copies} text files",
        "bytes": n_bytes,
        "tokenizer": "gpt2",
        "chunk_size": chunk_size,
        "cpu_count": os.cpu_count(),
        "loadavg_at_end": list(os.getloadavg()),
        "note": (
            "MB_per_s is wall time for the whole pipeline; MB_per_cpu_s divides by the CPU time of "
            "this process and its workers, which other work on a shared machine disturbs much "
            "less. tiktoken's row is one thread; prepare -j N uses N worker processes, so on an "
            "idle N-core machine it can reach about N times its MB_per_cpu_s. A load average above "
            "the core count means other work shared the cores."
        ),
    }
    return rows, extra
