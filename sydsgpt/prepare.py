"""Tokenize a large corpus into token shards: readers, work pieces, and the resumable sharder.

``sydsgpt prepare INPUT... --out DIR`` runs :func:`prepare`. The pipeline:

1. **Readers** (:mod:`sydsgpt.readers`) stream documents from ``.txt`` files (a file is one
   document), ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line, its ``text_field`` a
   document) and Parquet (the ``text_field`` column, via ``pyarrow``); a folder means every
   such file in it. A ``separator`` string (``<|endoftext|>``) may split them further.
2. **Pieces**: the documents are packed into work pieces of about ``chunk_size``
   characters; a longer document is cut at pre-token boundaries
   (:func:`sydsgpt.tokenizer.split_at_boundary`), so its ids equal encoding it whole.
3. **Workers** (``jobs`` processes) encode pieces; at most ``2 * jobs`` pieces are in
   flight, so memory stays bounded whatever the corpus size.
4. **The writer** receives the pieces' ids in order (an end-of-text id after each
   document): the first ``val_tokens`` ids are the validation shard, the rest are cut
   into training shards of ``shard_tokens``. Validation and training share no token
   (one document may start in the one and end in the other, as with a text split).

Resumable: after each finished shard the manifest records where in the piece stream it
ended; run the same command again and the finished shards are kept, their pieces skipped.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator

import numpy as np
from tqdm import tqdm

from .files import TEMP_SUFFIX
from .shards import (
    DATASET_TOKENIZER_NAME,
    FORMAT,
    MANIFEST_NAME,
    VERSION,
    ShardWriter,
    read_manifest,
    token_dtype,
    write_manifest,
)
from .readers import Segment, input_files, read_segments, split_documents
from .tokenizer import check_streamable, split_at_boundary
from .validation import check_positive_int


@dataclass
class PrepareConfig:
    """How ``sydsgpt prepare`` tokenizes and shards a
    corpus (each field is a command-line option)."""

    tokenizer: str = "gpt2"
    """gpt2 (GPT-2's) or the path of a saved BPETokenizer JSON with an <|endoftext|> token."""
    text_field: str = "text"
    """The field (.jsonl) or column (Parquet) that holds each document's text."""
    shard_tokens: int = 100_000_000
    """Tokens per training shard (the last shard holds the rest)."""
    val_tokens: int = 1_000_000
    """Tokens of the validation shard: the first this many tokens of the corpus."""
    jobs: int = 1
    """Worker processes that tokenize."""
    chunk_size: int = 1 << 20
    """Characters of text per work piece (memory is a few pieces per worker)."""
    separator: str | None = None
    """A string that separates documents inside the text, such as <|endoftext|> in TinyStories:
    each one ends a document (an end-of-text id takes its place). Without it, text spelling one
    of the tokenizer's special tokens is refused."""

    def __post_init__(self) -> None:
        for name in ("shard_tokens", "val_tokens", "jobs", "chunk_size"):
            check_positive_int(getattr(self, name), f"PrepareConfig.{name}")
        sep = self.separator
        if sep is not None and (not isinstance(sep, str) or not sep):
            raise ValueError(
                f"PrepareConfig.separator must be a non-empty string or None, got "
                f"{self.separator!r}"
            )


# ---------------------------------------------------------------------------- pieces


def iter_pieces(
    files: list[Path],
    text_field: str,
    chunk_size: int,
    separator: str | None = None,
    specials: Collection[str] = (),
) -> Iterator[list[Segment]]:
    """Pack the documents of ``files`` into work pieces of about ``chunk_size`` characters.

    A document longer than a piece is cut only at pre-token boundaries, so encoding its
    segments one by one gives its ids. The pieces are the same on every run with the same
    files and ``chunk_size``: a resumed prepare finds its place by piece number.
    ``separator`` and ``specials``: see :func:`split_documents`.
    """
    piece: list[Segment] = []
    size = 0
    for path in files:
        carry = ""
        segments = read_segments(path, text_field, chunk_size)
        for text, ends in split_documents(segments, path, separator, specials):
            text = carry + text
            carry = ""
            start = 0
            while len(text) - start > chunk_size:  # a long document: cut it into pieces
                head, _ = split_at_boundary(text[start : start + chunk_size])
                if not head:  # no boundary in this window: keep it together
                    break
                piece.append((head, False))
                start += len(head)
                yield piece
                piece, size = [], 0
            text = text[start:] if start else text
            if ends:
                piece.append((text, True))
            else:
                head, carry = split_at_boundary(text)
                if head:
                    piece.append((head, False))
            size += len(text)
            if size >= chunk_size:
                yield piece
                piece, size = [], 0
        if carry:
            piece.append((carry, True))
    if piece:
        yield piece


# ---------------------------------------------------------------------------- workers

_worker_tokenizer: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _worker_tokenizer
    _worker_tokenizer = tokenizer


def encode_piece(
    piece: list[Segment], eot: int, dtype: str, tokenizer: Any = None
) -> tuple[np.ndarray, int]:
    """A piece's ids (an end-of-text id after each
    document's last segment) and its UTF-8 size in bytes."""
    tokenizer = tokenizer or _worker_tokenizer
    ids: list[int] = []
    n_bytes = 0
    for text, doc_end in piece:
        ids.extend(tokenizer.encode_ordinary(text))
        if doc_end:
            ids.append(eot)
        n_bytes += len(text.encode("utf-8"))
    return np.asarray(ids, dtype=dtype), n_bytes


def load_tokenizer(spec: str) -> Any:
    """The tokenizer a prepare spec names: ``gpt2`` or a
    saved BPETokenizer file (it needs ``<|endoftext|>``)."""
    from .bpe import resolve_tokenizer
    from .tokenizer import END_OF_TEXT

    if spec.startswith("bpe:"):
        raise ValueError(
            "sydsgpt prepare needs a ready tokenizer: gpt2, or a BPETokenizer saved as JSON (train "
            "one with BPETokenizer().train(text, N, special_tokens=['<|endoftext|>']).save(path))"
        )
    tokenizer = resolve_tokenizer(spec)
    if END_OF_TEXT not in getattr(tokenizer, "special_tokens_set", set()):
        raise ValueError(
            f"tokenizer {spec!r} has no {END_OF_TEXT} token to put between documents; "
            f"train it with special_tokens=[{END_OF_TEXT!r}]"
        )
    check_streamable(tokenizer)
    return tokenizer


# ---------------------------------------------------------------------------- the sharder


class _Sharder:
    """Routes ids, in stream order, to the validation shard and then to training shards."""

    def __init__(
        self, out: Path, cfg: PrepareConfig, dtype: np.dtype, manifest: dict[str, Any]
    ) -> None:
        self.out, self.cfg, self.dtype, self.manifest = out, cfg, dtype, manifest
        shards = manifest["shards"]
        self.val_done = any(s["split"] == "val" for s in shards)
        self.n_train = sum(1 for s in shards if s["split"] == "train")
        self.writer: ShardWriter | None = None
        self.new_train_shards = 0

    def _open(self) -> ShardWriter:
        if self.writer is None:
            split, index = ("train", self.n_train) if self.val_done else ("val", 0)
            self.writer = ShardWriter(self.out, split, index, self.dtype)
        return self.writer

    def _close(self, position: tuple[int, int]) -> None:
        assert self.writer is not None
        self.manifest["shards"].append(self.writer.finish(end=list(position)))
        if self.writer.split == "train":
            self.n_train += 1
            self.new_train_shards += 1
        else:
            self.val_done = True
        self.writer = None
        write_manifest(self.out, self.manifest)

    def add(self, number: int, ids: np.ndarray, skip: int) -> None:
        """The ids of piece ``number``, from id ``skip`` on:
        the validation shard first, then training shards."""
        a, b = skip, len(ids)
        while a < b:
            writer = self._open()
            capacity = self.cfg.shard_tokens if writer.split == "train" else self.cfg.val_tokens
            take = min(b - a, capacity - writer.tokens)
            writer.write(ids[a : a + take])
            a += take
            if writer.tokens == capacity:
                self._close((number, a))

    def finish(self, position: tuple[int, int]) -> None:
        if not self.val_done:
            tokens = self.writer.tokens if self.writer else 0
            if self.writer:
                self.writer.abort()
            raise ValueError(
                f"the corpus has {tokens} tokens, fewer than the validation shard's "
                f"{self.cfg.val_tokens} (and some for training); use a smaller --val-tokens or "
                "more text"
            )
        if self.writer is not None and self.writer.tokens:
            self._close(position)
        if self.n_train == 0:
            raise ValueError(
                "no tokens are left for training after the validation shard; use a smaller "
                "--val-tokens"
            )
        self.manifest["complete"] = True
        self.manifest["tokens"] = {
            split: sum(s["tokens"] for s in self.manifest["shards"] if s["split"] == split)
            for split in ("train", "val")
        }
        write_manifest(self.out, self.manifest)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def _settings(files: list[Path], cfg: PrepareConfig) -> dict[str, Any]:
    """What decides the output: compared on resume (a
    change means the finished shards do not fit)."""
    config = {k: v for k, v in asdict(cfg).items() if k != "jobs"}
    return {
        "inputs": [{"path": str(p.resolve()), "bytes": p.stat().st_size} for p in files],
        **config,
    }


def _ours(name: str) -> bool:
    """A file name that prepare itself writes into its folder (before or besides the manifest);
    hidden files (``.DS_Store``) do not make a folder someone else's either."""
    return name in (MANIFEST_NAME, DATASET_TOKENIZER_NAME) or name.endswith(TEMP_SUFFIX)


def _start_manifest(
    out: Path, files: list[Path], cfg: PrepareConfig, tokenizer: Any
) -> dict[str, Any]:
    """The manifest to continue: the one in ``out`` when its settings are these, else a new one.

    A run that failed (a bad input, since fixed) starts over; an unfinished run with other
    settings, or a folder of other files, is refused (nothing there is changed)."""
    settings = _settings(files, cfg)
    if (out / MANIFEST_NAME).is_file():
        manifest = read_manifest(out)
        changed = sorted(k for k in settings if manifest["settings"].get(k) != settings[k])
        if not changed:
            manifest.pop("failed", None)
            return manifest
        if manifest["complete"] or (manifest["shards"] and "failed" not in manifest):
            raise ValueError(
                f"{out} holds a dataset prepared with other settings "
                f"({', '.join(changed)} differ); use another --out, or delete that "
                "folder to start over"
            )
        for shard in manifest["shards"]:  # the failed run's shards: made again from the new inputs
            (out / shard["name"]).unlink(missing_ok=True)
    elif out.is_dir():
        others = sorted(
            p.name for p in out.iterdir() if not _ours(p.name) and not p.name.startswith(".")
        )
        if others:
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            shown = ", ".join(others[:3]) + more
            raise FileExistsError(
                f"--out {out} is a folder of other files ({shown}), not a "
                "prepared dataset; choose a new or empty folder"
            )
    out.mkdir(parents=True, exist_ok=True)
    spec = "gpt2" if cfg.tokenizer == "gpt2" else DATASET_TOKENIZER_NAME
    if spec != "gpt2":
        tokenizer.save(out / DATASET_TOKENIZER_NAME)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "complete": False,
        "dtype": token_dtype(tokenizer.n_vocab).name,
        "tokenizer": {
            "name": tokenizer.name,
            "n_vocab": tokenizer.n_vocab,
            "eot": tokenizer.eot_token,
            "spec": spec,
        },
        "settings": settings,
        "shards": [],
    }
    write_manifest(out, manifest)
    return manifest


def prepare(
    inputs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    cfg: PrepareConfig = PrepareConfig(),
    *,
    stop_after: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Tokenize ``inputs`` into a prepared dataset folder ``out`` (resuming an unfinished one).

    Args:
        stop_after: end this session after this many new training shards (resume by calling again).
        show_progress: a tqdm bar in MB/s of text (on stderr).

    Returns:
        ``{"manifest", "pieces_encoded", "pieces_skipped", "shards_written", "bytes"}``.
    """
    out = Path(out)
    files = input_files(inputs)
    tokenizer = load_tokenizer(cfg.tokenizer)
    manifest = _start_manifest(out, files, cfg, tokenizer)
    stats = {
        "manifest": manifest,
        "pieces_encoded": 0,
        "pieces_skipped": 0,
        "shards_written": 0,
        "bytes": 0,
    }
    if manifest["complete"]:
        return stats
    for stale in out.glob(f".*{TEMP_SUFFIX}"):  # a shard that a killed run left half-written
        stale.unlink()
    resume_piece, resume_offset = manifest["shards"][-1]["end"] if manifest["shards"] else (0, 0)
    dtype = np.dtype(manifest["dtype"])
    eot = tokenizer.eot_token
    sharder = _Sharder(out, cfg, dtype, manifest)
    bar = tqdm(
        desc="prepare",
        unit="B",
        unit_scale=True,
        disable=not show_progress,
        file=sys.stderr,
        mininterval=1.0,
    )
    pool = None
    if cfg.jobs > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(
            cfg.jobs, initializer=_init_worker, initargs=(tokenizer,)
        )
    pending: deque[tuple[int, Any]] = deque()

    def consume() -> bool:
        number, result = pending.popleft()
        ids, n_bytes = result.get() if pool is not None else result
        sharder.add(number, ids, resume_offset if number == resume_piece else 0)
        stats["pieces_encoded"] += 1
        stats["bytes"] += n_bytes
        bar.update(n_bytes)
        bar.set_postfix(shards=len(manifest["shards"]), refresh=False)
        return stop_after is not None and sharder.new_train_shards >= stop_after

    number, stopped = -1, False
    pieces = iter_pieces(
        files, cfg.text_field, cfg.chunk_size, cfg.separator, tokenizer.special_tokens_set
    )
    try:
        for number, piece in enumerate(pieces):
            if number < resume_piece:
                stats["pieces_skipped"] += 1
                continue
            if pool is None:
                pending.append((number, encode_piece(piece, eot, dtype.name, tokenizer)))
            else:
                pending.append((number, pool.apply_async(encode_piece, (piece, eot, dtype.name))))
            if len(pending) >= 2 * cfg.jobs and consume():
                stopped = True
                break
        while pending and not stopped:
            stopped = consume()
        if not stopped:
            sharder.finish((number + 1, 0))
        else:
            sharder.abort()
    except BaseException as exc:
        sharder.abort()
        if isinstance(exc, Exception):  # a bad input: once it is fixed, the next run starts over
            manifest["failed"] = f"{type(exc).__name__}: {exc}"
            write_manifest(out, manifest)
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    stats["shards_written"] = sharder.new_train_shards
    return stats
