"""Named text corpora and data sets, downloaded on first use, checked by sha256 and cached.

The cache is the directory named by ``SYDSGPT_DATA_DIR`` (default
``~/.cache/sydsgpt/data``). Offline, copy the files there (or point the variable at a
directory that has them); a cached file whose sha256 does not match is an error.

>>> text = load_corpus("the-verdict")          # doctest: +SKIP
>>> text = load_corpus("my_notes.txt")         # any local file works too  # doctest: +SKIP

Chapter 9's two data sets are parsed and checked here too:
:func:`load_sms_spam` (``(label, text)`` pairs, any ``label<TAB>text`` file through
:func:`load_labelled_texts`) and :func:`load_instructions` (instruction/input/output records).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

#: Environment variable naming the cache directory.
DATA_DIR_ENV = "SYDSGPT_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    """A downloadable text file: where it comes from and what it must hash to.

    When ``member`` is set, ``url`` is a zip archive and the file is its member of that
    name; ``sha256`` and ``size`` are then the extracted file's (the archive is not kept).
    """

    name: str
    filename: str
    url: str
    sha256: str
    size: int  # bytes
    description: str = ""
    member: str | None = None
    licence: str = ""


CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (
        Corpus(
            "tinyshakespeare",
            "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
            "data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            1_115_394,
            "About 40,000 lines from Shakespeare's plays (Karpathy's char-rnn data set).",
        ),
        Corpus(
            "the-verdict",
            "the-verdict.txt",
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
            "ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            20_479,
            "Edith Wharton's short story 'The Verdict' (1908, public domain).",
        ),
        Corpus(
            "sms-spam",
            "SMSSpamCollection",
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
            477_907,
            "5,574 SMS messages labelled ham or spam, one 'label<TAB>text' per line (UCI SMS Spam "
            "Collection).",
            member="SMSSpamCollection",
            licence="CC BY 4.0",
        ),
        Corpus(
            "instruction-data",
            "instruction-data.json",
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/"
            "ch07/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            203_524,
            "1,100 Alpaca-style records with 'instruction', 'input' and 'output' "
            "(LLMs-from-scratch, chapter 7).",
            licence="Apache-2.0",
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
        raise KeyError(
            f"unknown corpus {name!r}; known corpora: {sorted(CORPORA)} (or pass a path to a text "
            "file)"
        )
    return CORPORA[name]


def _extract(archive: bytes, corpus: Corpus) -> bytes:
    """The member ``corpus.member`` of the zip archive ``archive`` (its bytes)."""
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            return zf.read(corpus.member)  # type: ignore[arg-type]
    except zipfile.BadZipFile as exc:
        raise CorpusError(
            f"downloaded {corpus.url} but it is not a zip archive ({exc}); nothing was cached"
        ) from None
    except KeyError:
        raise CorpusError(
            f"the zip archive {corpus.url} has no member {corpus.member!r}; the archive changed. "
            f"Nothing was cached: copy the file {corpus.filename} into {data_dir()} by hand."
        ) from None


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
                "file is corrupt or a different version. Delete it to download it again from "
                f"{corpus.url}."
            )
        return path
    if not download:
        raise CorpusError(f"corpus {name!r} is not cached at {path}")
    unzip = " (extracted from that zip archive)" if corpus.member else ""
    try:
        data = _download(corpus.url)
    except (urllib.error.URLError, OSError) as exc:
        raise CorpusError(
            f"corpus {name!r} is not cached at {path} and downloading it from {corpus.url} failed "
            f"({exc}). Offline? Copy the file {corpus.filename}{unzip} into {path.parent}, or set "
            f"the environment variable {DATA_DIR_ENV} to a directory that holds it."
        ) from exc
    what = corpus.url
    if corpus.member is not None:
        data, what = _extract(data, corpus), f"{corpus.member} inside {corpus.url}"
    digest = _sha256(data)
    if digest != corpus.sha256:
        raise CorpusError(
            f"downloaded {what} but its sha256 is {digest}, expected {corpus.sha256}; "
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
            raise ValueError(
                f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); convert it to UTF-8 "
                "first"
            ) from None
        if not text:
            raise ValueError(f"{path} is empty: there is no text to train on")
        return text
    raise FileNotFoundError(
        f"{key!r} is neither a known corpus ({', '.join(sorted(CORPORA))}) nor an existing file"
    )


# ---------------------------------------------------------------------------- chapter 9's data sets

SMS_LABELS = ("ham", "spam")
"""The labels of the ``sms-spam`` data set (ham: a normal message)."""
INSTRUCTION_FIELDS = ("instruction", "input", "output")
"""The fields of an instruction record; ``input`` may be empty or absent (no extra context)."""


def _read_named_or_local(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    """``(text, where)``: a named data set's text (downloaded if needed) or a local file's."""
    key = os.fspath(name_or_path)
    where = str(corpus_path(key)) if key in CORPORA else str(Path(key).expanduser())
    return load_corpus(key), where


def load_labelled_texts(
    name_or_path: str | os.PathLike[str], labels: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(label, text)`` pairs from a file with one ``label<TAB>text`` per line (a named data
    set such as ``"sms-spam"``, or a local file); blank lines are skipped.

    Args:
        labels: the allowed labels; ``None``: any label found in the file.
    Raises:
        ValueError: one line naming the file and line number: a line without a TAB, an empty
            label or text, or a label not in ``labels``.
    """
    text, where = _read_named_or_local(name_or_path)
    allowed = None if labels is None else tuple(labels)
    records: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, tab, message = line.partition("\t")
        label, message = label.strip(), message.strip()
        if not tab:
            raise ValueError(
                f"{where}:{number}: no TAB in {line[:40]!r}; each line must be 'label<TAB>text'"
            )
        if not label or not message:
            raise ValueError(
                f"{where}:{number}: empty {'label' if not label else 'text'}; each line must be "
                "'label<TAB>text' with both parts non-empty"
            )
        if allowed is not None and label not in allowed:
            raise ValueError(
                f"{where}:{number}: unknown label {label!r}; expected one of {list(allowed)}"
            )
        records.append((label, message))
    if not records:
        raise ValueError(f"{where} has no 'label<TAB>text' lines: there is nothing to classify")
    return records


def load_sms_spam() -> list[tuple[str, str]]:
    """The SMS Spam Collection as 5,574 ``(label, text)`` pairs, label ``"ham"`` or ``"spam"``."""
    return load_labelled_texts("sms-spam", SMS_LABELS)


def load_instructions(
    name_or_path: str | os.PathLike[str] = "instruction-data",
) -> list[dict[str, str]]:
    """Instruction records from a JSON list of objects (a named data set or a local file).

    Each returned dict has exactly the keys ``instruction``, ``input`` (``""`` when the record
    has none) and ``output``, all strings; other keys are dropped.

    Raises:
        ValueError: one line naming the file and the record: not JSON, not a list of objects,
            an ``instruction`` or ``output`` that is missing, not a string or empty, an ``input``
            that is not a string.
    """
    text, where = _read_named_or_local(name_or_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(data, list) or not data:
        raise ValueError(
            f"{where} must hold a non-empty JSON list of records "
            f"{{'instruction': ..., 'input': ..., 'output': ...}}, got {type(data).__name__}"
        )
    records = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise ValueError(
                f"{where}: record {i} is a {type(record).__name__}, not an object with "
                f"{list(INSTRUCTION_FIELDS)}"
            )
        for field in ("instruction", "output"):
            value = record.get(field)
            if field not in record:
                raise ValueError(
                    f"{where}: record {i} has no {field!r} field; every record needs 'instruction' "
                    f"and 'output' (and optionally 'input'); its fields are {sorted(record)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"{where}: record {i}'s {field!r} must be a non-empty string, got {value!r}"
                )
        extra = record.get("input", "")
        if not isinstance(extra, str):
            raise ValueError(
                f"{where}: record {i}'s 'input' must be a string (\"\" for none), got {extra!r}"
            )
        records.append(
            {"instruction": record["instruction"], "input": extra, "output": record["output"]}
        )
    return records
