"""The files of a run folder, and writing files so that a crash never leaves half of one.

A run folder (``sydsgpt train --out DIR``) holds:

=====================  ===============================================================
``checkpoint.pt``      model, optimizer, scheduler, RNG and data position (resumable)
``log.jsonl``          one JSON record per step (loss, learning rate, val loss, ...)
``run.json``           the model and training configs, the tokenizer, the process count
``tokenizer.json``     the BPE tokenizer, when the run trained or was given one
``loss.png``           the loss curves
=====================  ===============================================================

:func:`atomic_write` (or :func:`atomic_open`, to write a file piece by piece) is the one way the
package writes a file it must not lose.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
RUN_INFO_NAME = "run.json"
TOKENIZER_NAME = "tokenizer.json"
LOSS_PLOT_NAME = "loss.png"
TEMP_SUFFIX = ".tmp"
"""How an unfinished atomic write is named: ``.<name>.<random>.tmp`` beside the file."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on leaving the block, fsync it and
    ``os.replace`` it onto ``path`` (on an exception: delete it, leaving ``path`` as it was).

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` always holds either the old
    complete file or the new complete file, even if the process dies mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[IO[bytes]], object]) -> Path:
    """Write ``data`` to ``path`` atomically (through :func:`atomic_open`).

    Args:
        data: bytes, text (written as UTF-8), or a function that writes into the open binary file
            (e.g. ``lambda f: torch.save(obj, f)``).
    """
    with atomic_open(path) as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)
