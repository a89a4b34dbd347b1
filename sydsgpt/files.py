"""The files of a run folder, and writing files so that a crash never leaves half of one.

A run folder (``sydsgpt train --out DIR``) holds:

=====================  ===============================================================
``checkpoint.pt``      model, optimizer, scheduler, RNG and data position (resumable)
``log.jsonl``          one JSON record per step (loss, learning rate, val loss, ...)
``run.json``           the model and training configs, the tokenizer, the process count
``tokenizer.json``     the BPE tokenizer, when the run trained or was given one
``loss.png``           the loss curves
``run.lock``           while a run is using the folder: the process id holding it
=====================  ===============================================================

:func:`atomic_write` (or :func:`atomic_open`, to write a file piece by piece) is the one way
the package writes a file it must not lose; a process
killed mid-write leaves its temporary file (``.checkpoint.pt.<random>.tmp``) behind, which
:func:`remove_stale_temp_files` deletes when the next run starts. :func:`lock_run_folder`
keeps two runs from writing into one folder at once.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
RUN_INFO_NAME = "run.json"
TOKENIZER_NAME = "tokenizer.json"
LOSS_PLOT_NAME = "loss.png"
LOCK_NAME = "run.lock"
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
""":func:`atomic_write` writes ``path`` through ``<dir>/.<name>.<random>.tmp``."""


class RunFolderLocked(RuntimeError):
    """Another running process holds the output folder's lock."""


def file_sha256(path: str | os.PathLike[str], chunk_bytes: int = 1 << 22) -> str:
    """The sha256 hex digest of a file, read in chunks (shards and weights files are gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Open a temporary file beside ``path`` for binary writing; on leaving the block, fsync it and
    ``os.replace`` it onto ``path`` (on an exception: delete it, leaving ``path`` as it was).

    ``os.replace`` is atomic on POSIX and Windows, so ``path`` always holds either the old
    complete file or the new complete file, even if the process dies mid-write. A failed
    write (a full disk) is an ``OSError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        Path(tmp_name).unlink(missing_ok=True)
        if (
            isinstance(exc, OSError) and not exc.filename
        ):  # a failed write names no file: name the one we lost
            raise OSError(
                exc.errno,
                f"{exc.strerror or exc} (the previous version, if any, is intact)",
                str(path),
            ) from exc
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        dir_fd = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write(
    path: str | os.PathLike[str], data: bytes | str | Callable[[IO[bytes]], object]
) -> Path:
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


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` when a process was
    killed mid-write (only call it while holding the folder's lock); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        if candidate.is_file() and any(
            candidate.name.startswith(f"{TEMP_PREFIX}{name}.") for name in RUN_FILES
        ):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


RUN_FILES = (CHECKPOINT_NAME, LOG_NAME, RUN_INFO_NAME, TOKENIZER_NAME, LOSS_PLOT_NAME)
"""The files a run folder holds (their temporary files are the stale ones)."""


@dataclass(frozen=True)
class LockedRunFolder:
    """A run folder whose lock this process holds (what :func:`lock_run_folder` yields).

    Pass it as ``out_dir`` to :func:`sydsgpt.train.train` to train into a folder you locked
    before writing into it (the command line writes the tokenizer first): the folder is
    locked once, for the whole command."""

    path: Path
    lock: Path


def _pid_alive(pid: int) -> bool:
    if (
        os.name == "nt"
    ):  # os.kill would terminate the process there: assume it runs (the message says what to do)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def lock_run_folder(
    folder: str | os.PathLike[str], announce: Callable[[str], None] | None = None
) -> Iterator[LockedRunFolder]:
    """Hold ``folder/run.lock`` (holding this process's id) while the block runs.

    A lock whose process is no longer running (on this machine) is stale: it is taken over and
    ``announce`` is told. Taking the lock also removes stale temporary files. A folder is
    locked once: a second lock on it, even from this process, is refused (pass the
    :class:`LockedRunFolder` on instead).

    Raises:
        RunFolderLocked: a running process (this one included) holds the lock.
    """
    folder = Path(folder).resolve()
    announce = announce or (lambda message: print(message, file=sys.stderr))
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().partition(" ")
                pid, host = int(pid_text), host.strip()
            except (OSError, ValueError):
                pid, host = None, ""
            if pid is not None and (host != socket.gethostname() or _pid_alive(pid)):
                raise RunFolderLocked(
                    f"{folder} is in use by another run (process "
                    f"{pid}{' on ' + host if host else ''}, lock file {lock}); wait for it to "
                    "finish or choose another --out. If that process is gone, delete the lock "
                    "file."
                ) from None
            lock.unlink(missing_ok=True)
            announce(f"took over the stale lock {lock} (process {pid} is no longer running)")
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:  # pragma: no cover - another process took the stale lock between our two tries
        raise RunFolderLocked(
            f"{folder} is in use by another run (lock file {lock}); choose another --out"
        )
    try:
        removed = remove_stale_temp_files(folder)
        if removed:
            announce(
                f"removed {len(removed)} stale temporary file(s) left by an interrupted save in "
                f"{folder}: " + ", ".join(p.name for p in removed)
            )
        yield LockedRunFolder(folder, lock)
    finally:
        try:
            if lock.read_text() == me:
                lock.unlink()
        except OSError:
            pass
