"""Chapter 5: stopping a run on Ctrl-C (SIGINT) or SIGTERM without losing it.

:class:`StopRequests` turns the first SIGINT/SIGTERM into a request that the training loop
reads after each step: it then writes a checkpoint of that step and raises
:class:`TrainingInterrupted`, whose message names the checkpoint. A second signal gets the
default behaviour again (stop at once), so a run that hangs can still be stopped.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(KeyboardInterrupt):
    """The run was stopped by a signal; a checkpoint of the current step was written.

    A ``KeyboardInterrupt``, so code that catches ``Exception`` does not swallow it.
    """

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(
            self.describe("continue with train(..., session=Session(..., resume=True))")
        )

    def describe(self, how_to_resume: str) -> str:
        """The message, with ``how_to_resume`` said the way
        the caller resumes (Python or command line)."""
        name = signal.Signals(self.signum).name
        if self.checkpoint is None:
            return (
                f"interrupted by {name} at step {self.step}; no output folder was given, so "
                "nothing was saved"
            )
        return (
            f"interrupted by {name}: checkpoint of step {self.step} saved to {self.checkpoint}; "
            f"{how_to_resume}"
        )

    @property
    def exit_code(self) -> int:
        """``128 + signal number``, as a shell reports a process stopped by that signal."""
        return 128 + self.signum


class StopRequests:
    """Catch SIGINT/SIGTERM while the ``with`` block runs; ``.signum`` is the first one caught.

    Only the main thread can install signal handlers: elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum
        self._restore()  # a second signal stops at once

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()
