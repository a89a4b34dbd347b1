"""Named text corpora, downloaded on first use, checked by sha256 and cached.

The cache is the directory named by ``SYDSGPT_DATA_DIR`` (default
``~/.cache/sydsgpt/data``). Offline, copy the files there (or point the variable at a
directory that has them); a cached file whose sha256 does not match is an error.

>>> text = load_corpus("the-verdict")          # doctest: +SKIP
>>> text = load_corpus("my_notes.txt")         # any local file works too  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

#: Environment variable naming the cache directory.
DATA_DIR_ENV = "SYDSGPT_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    """A downloadable text file: where it comes from and what it must hash to."""

    name: str
    filename: str
    url: str
    sha256: str
    size: int  # bytes
    description: str = ""


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "tinyshakespeare",
            "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1_115_394,
            "About 40,000 lines from Shakespeare's plays (Karpathy's char-rnn data set).",
        ),
        Corpus(
            "the-verdict",
            "the-verdict.txt",
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            20_479,
            "Edith Wharton's short story 'The Verdict' (1908, public domain).",
        ),
    )
}


class CorpusError(RuntimeError):
    """A corpus could not be found, downloaded or verified."""


def data_dir() -> Path:
    """The cache directory: ``$SYDSGPT_DATA_DIR`` or ``~/.cache/sydsgpt/data``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sydsgpt" / "data"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(url: str, timeout: float = 60.0) -> bytes:
    """The bytes at ``url`` (raises ``urllib.error.URLError`` when unreachable)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _get_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise KeyError(f"unknown corpus {name!r}; known corpora: {sorted(CORPORA)} (or pass a path to a text file)")
    return CORPORA[name]


def corpus_path(name: str, download: bool = True) -> Path:
    """The local path of corpus ``name``, downloading and verifying it first if needed.

    Raises:
        KeyError: ``name`` is not in :data:`CORPORA`.
        CorpusError: the file is missing and cannot be downloaded, or its sha256 is wrong.
    """
    corpus = _get_corpus(name)
    path = data_dir() / corpus.filename
    if path.exists():
        digest = _sha256(path.read_bytes())
        if digest != corpus.sha256:
            raise CorpusError(
                f"{path} has sha256 {digest}, expected {corpus.sha256} for corpus {name!r}: the "
                f"file is corrupt or a different version. Delete it to download it again from {corpus.url}."
            )
        return path
    if not download:
        raise CorpusError(f"corpus {name!r} is not cached at {path}")
    try:
        data = _download(corpus.url)
    except (urllib.error.URLError, OSError) as exc:
        raise CorpusError(
            f"corpus {name!r} is not cached at {path} and downloading it from {corpus.url} failed "
            f"({exc}). Offline? Copy the file {corpus.filename} into {path.parent}, or set the "
            f"environment variable {DATA_DIR_ENV} to a directory that holds it."
        ) from exc
    digest = _sha256(data)
    if digest != corpus.sha256:
        raise CorpusError(
            f"downloaded {corpus.url} but its sha256 is {digest}, expected {corpus.sha256}; "
            "the file at that URL changed or the download was corrupted. Nothing was cached."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{corpus.filename}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)  # atomic: readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_corpus(name_or_path: str | os.PathLike[str]) -> str:
    """The text of a named corpus (see :data:`CORPORA`) or of a local UTF-8 file.

    Raises:
        CorpusError: see :func:`corpus_path`.
        FileNotFoundError: neither a known corpus name nor an existing file.
        ValueError: the file is empty or not UTF-8 (the message names it).
    """
    key = os.fspath(name_or_path)
    if key in CORPORA:
        return corpus_path(key).read_text(encoding="utf-8")
    path = Path(key).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8 first") from None
        if not text:
            raise ValueError(f"{path} is empty: there is no text to train on")
        return text
    raise FileNotFoundError(
        f"{key!r} is neither a known corpus ({', '.join(sorted(CORPORA))}) nor an existing file"
    )
