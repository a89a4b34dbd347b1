"""Corpus files as streams of documents: ``.txt``, ``.jsonl`` / ``.jsonl.gz`` and Parquet.

:func:`input_files` expands folders; :func:`read_segments` streams one file's documents as
*segments* (a stretch of text and whether its document ends there), so a huge document
never has to fit in memory; :func:`split_documents` cuts them further at a separator string
such as ``<|endoftext|>``. A damaged file is a ``ValueError`` that names it (and the line).
:mod:`sydsgpt.prepare` tokenizes what these readers give.
"""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator

from .tokenizer import partial_suffix, special_regex

SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
"""The file types the readers understand."""

Segment = tuple[str, bool]
"""A stretch of one document's text, and whether the document ends with it."""


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in sorted(SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)


def input_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The files to read: each path itself, or every readable file under a folder (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and _kind(p) and not p.name.startswith(".")
            )
            if not found:
                raise FileNotFoundError(f"folder {path} has no {', '.join(SUFFIXES)} files")
            files.extend(found)
        elif path.is_file():
            if _kind(path) is None:
                raise ValueError(
                    f"{path}: cannot read this file type; expected one of {', '.join(SUFFIXES)}"
                )
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} does not exist")
    return files


def _opener(path: Path) -> Any:
    return gzip.open if path.name.lower().endswith(".gz") else open


def not_utf8(path: Path) -> ValueError:
    """The error for a file that is not UTF-8: its first bad byte, by line and column."""
    with _opener(path)(path, "rb") as f:
        for number, raw in enumerate(f, 1):  # no UTF-8 character holds the byte of "\n"
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return ValueError(
                    f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); save it as UTF-8, e.g. iconv -f latin1 -t utf-8"
                )
    return ValueError(f"{path}: not UTF-8 text; save it as UTF-8")


def _valid_text(text: str) -> str:
    """``text`` with any lone surrogate (``"\\ud83d"`` in JSON) replaced by U+FFFD, as tiktoken
    does: such text has no UTF-8 bytes, so it could be neither counted nor encoded byte by byte."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def read_text_file(path: Path, chunk_size: int) -> Iterator[Segment]:
    """A text file as one document, read ``chunk_size`` characters at a time (newlines as
    ``read_text`` gives them). Not UTF-8: ``ValueError`` naming the file, line and byte."""
    try:
        with open(path, encoding="utf-8") as f:
            chunk = f.read(chunk_size)
            while chunk:
                following = f.read(chunk_size)
                yield chunk, not following
                chunk = following
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def read_jsonl(path: Path, text_field: str) -> Iterator[Segment]:
    """One document per line of a ``.jsonl`` (or gzip-compressed ``.jsonl.gz``) file; empty texts
    are skipped. A bad line or a damaged file: ``ValueError`` naming the file (and line)."""
    number = 0
    try:
        with _opener(path)(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(
                        f"{path}:{number}: not a line of JSON ({exc.msg} at column "
                        f"{exc.colno}); each line must be one JSON object"
                    ) from None
                if not isinstance(record, dict) or text_field not in record:
                    raise ValueError(
                        f"{path}:{number}: expected a JSON object with the field "
                        f"{text_field!r} (choose the field with --text-field)"
                    )
                if record[text_field]:
                    yield _valid_text(str(record[text_field])), True
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(
            f"{path}: the gzip file is truncated or damaged after line {number} "
            f"({exc}); download or compress it again"
        ) from None


def read_parquet(path: Path, text_field: str, batch_rows: int = 1024) -> Iterator[Segment]:
    """The ``text_field`` column of a Parquet file,
    ``batch_rows`` rows at a time (needs ``pyarrow``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(
            f"reading {path} needs the package pyarrow, which is not installed: pip install pyarrow"
        ) from None
    import pyarrow

    try:
        table = pq.ParquetFile(path)
        names = table.schema_arrow.names
        if text_field in names:
            batches = table.iter_batches(batch_size=batch_rows, columns=[text_field])
            for batch in batches:
                for text in batch.column(0).to_pylist():
                    if text:
                        yield str(text), True
    except (pyarrow.ArrowException, OSError) as exc:
        raise ValueError(
            f"{path}: not a readable Parquet file ({exc}); download it again"
        ) from None
    if text_field not in names:
        raise ValueError(
            f"{path} has no column {text_field!r} (its columns: {', '.join(names)}); "
            "choose it with --text-field"
        )


def read_segments(
    path: Path, text_field: str = "text", chunk_size: int = 1 << 20
) -> Iterator[Segment]:
    """The documents of one file as segments (see each reader)."""
    kind = _kind(path)
    if kind == ".txt":
        return read_text_file(path, chunk_size)
    if kind == ".parquet":
        return read_parquet(path, text_field)
    return read_jsonl(path, text_field)


def iter_documents(
    paths: Iterable[str | os.PathLike[str]], text_field: str = "text"
) -> Iterator[str]:
    """Every document of ``paths`` as one string (for
    small corpora and tests; :func:`prepare` streams)."""
    parts: list[str] = []
    for path in input_files(paths):
        for text, ends in read_segments(path, text_field):
            parts.append(text)
            if ends:
                yield "".join(parts)
                parts = []


def split_documents(
    segments: Iterable[Segment],
    path: Path,
    separator: str | None = None,
    specials: Collection[str] = (),
) -> Iterator[Segment]:
    """The segments of one file, each ``separator`` in the text ending a document there (the
    separator itself dropped); text spelling one of ``specials`` (the tokenizer's special
    tokens) other than the separator is refused, naming the file and how to allow it.
    A separator cut across two segments is found all the same."""
    watched = set(specials) | ({separator} if separator else set())
    if not watched:
        yield from segments
        return
    finder = special_regex(watched)
    carry = ""
    for text, ends in segments:
        carry += text
        start = 0
        for match in finder.finditer(carry):
            if match.group() != separator:
                raise ValueError(
                    f"{path} contains {match.group()!r}, the text of one of the tokenizer's "
                    "special tokens, which would be encoded as ordinary text; if it separates "
                    f"documents, pass --separator '{match.group()}' (PrepareConfig.separator), "
                    "else remove it"
                )
            yield carry[start : match.start()], True
            start = match.end()
        rest = carry[start:]
        if ends:
            if rest:  # a text that ends with its separator has no empty document after it
                yield rest, True
            carry = ""
            continue
        hold = partial_suffix(rest, watched)
        if len(rest) > hold:
            yield rest[: len(rest) - hold], False
        carry = rest[len(rest) - hold :]
    if carry:
        yield carry, True
