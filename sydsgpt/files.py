"""The files of a run folder, and writing files so that a crash never leaves half of one.

A run folder (``sydsgpt train --out DIR``) holds:

=====================  ===============================================================
``checkpoint.pt``      model, optimizer, scheduler, RNG and data position (resumable)
``log.jsonl``          one JSON record per step (loss, learning rate, val loss, ...)
``run.json``           the model and training configs, the tokenizer, the process count
``tokenizer.json``     the BPE tokenizer, when the run trained or was given one
``loss.png``           the loss curves
=====================  ===============================================================

:func:`atomic_write` is the one way the package writes a file it must not lose.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Callable

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
RUN_INFO_NAME = "run.json"
TOKENIZER_NAME = "tokenizer.json"
LOSS_PLOT_NAME = "loss.png"


def atomic_write(path: str | os.PathLike[str], data: bytes | str | Callable[[IO[bytes]], object]) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, fsync, then ``os.replace``.

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` always holds either the old
    complete file or the new complete file, even if the process dies mid-write.

    Args:
        data: bytes, text (written as UTF-8), or a function that writes into the open binary file
            (e.g. ``lambda f: torch.save(obj, f)``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
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
    return path
