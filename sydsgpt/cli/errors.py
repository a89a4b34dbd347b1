"""How the ``sydsgpt`` command reports a problem: one line, no traceback.

Every error is printed as ``sydsgpt <command>: error: <what was wrong, what was expected,
how to fix it>`` and ends the command with

* exit status 2 (bad usage): the command line asks for something impossible or names
  something that is not there (an invalid option value, a missing file, a checkpoint of
  another model, a device this machine does not have);
* exit status 1 (the run failed): the command was fine but the work could not be done (the
  disk is full or read-only, the data cannot be downloaded, training diverged, a damaged
  checkpoint, the output folder is in use by another run);
* exit status 128 + N when signal N stopped a training run (130 for Ctrl-C, 143 for
  SIGTERM), after it saved a checkpoint of the step it had reached.

``--debug`` (or the environment variable ``SYDSGPT_DEBUG=1``) shows the full traceback
instead, for bug reports.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from typing import NoReturn

from ..checkpoint import CheckpointMismatchError
from ..runtime import DeviceUnavailableError

USAGE, FAILED = 2, 1
DEBUG_ENV = "SYDSGPT_DEBUG"
EXIT_STATUS_HELP = (
    "exit status: 0 done; 1 the run failed (disk full or read-only, no data offline, diverged, "
    "damaged checkpoint, folder in use); 2 bad usage (an invalid option, a missing file, a "
    "checkpoint of another model); 128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM) after "
    f"saving a checkpoint. Errors are one line; --debug (or {DEBUG_ENV}=1) shows the traceback."
)


class UsageError(ValueError):
    """The command line asks for something impossible (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_USAGE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    CheckpointMismatchError,
    DeviceUnavailableError,
)
_FIXES = {
    errno.ENOSPC: "free some disk space or choose another --out",
    errno.EDQUOT: "free some disk space or choose another --out",
    errno.EACCES: "choose a folder you can write to (--out DIR) or fix its permissions",
    errno.EPERM: "choose a folder you can write to (--out DIR) or fix its permissions",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EEXIST: "a file is in the way of a folder: choose another --out (a folder, or a new "
    "name)",
    errno.ENOTDIR: "a file is in the way of a folder: choose another --out (a folder, or a new "
    "name)",
}


def debug_requested(args: argparse.Namespace) -> bool:
    """``--debug`` was given or ``SYDSGPT_DEBUG`` is set to something other than ``0``."""
    return bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def exit_status(exc: BaseException) -> int:
    """2 for bad usage, 1 for a run that failed (see the module docstring)."""
    if isinstance(exc, UsageError):
        return USAGE
    if isinstance(exc, OSError) and not isinstance(
        exc, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)
    ):
        return FAILED
    return USAGE if isinstance(exc, _USAGE_ERRORS) else FAILED


def describe(exc: BaseException) -> str:
    """The error as one line that names the file (for file errors) and says how to fix it."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}"
        fix = _FIXES.get(exc.errno or 0)
        text += f"; {fix}" if fix else ""
    elif isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        text = exc.args[0]  # str(KeyError) adds quotes
    else:
        text = str(exc) or type(exc).__name__
        if not isinstance(exc, (*_USAGE_ERRORS, OSError, RuntimeError)):
            text = (
                f"{type(exc).__name__}: {text} (unexpected: run again with --debug for the "
                "traceback and please report it)"
            )
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def report(command: str, exc: BaseException) -> int:
    """Print ``exc`` as one error line for ``sydsgpt <command>``; returns the exit status."""
    print(f"sydsgpt {command}: error: {describe(exc)}", file=sys.stderr)
    return exit_status(exc)
