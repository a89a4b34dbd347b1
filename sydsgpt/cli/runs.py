"""The run folder of ``sydsgpt train`` and ``sydsgpt finetune``: checked, locked once, summed up.

Both commands write a run folder (:mod:`sydsgpt.files` lists its files) the same way:

* :func:`check_run_folder`: before anything is loaded, a finished or interrupted run in
  ``--out`` needs ``--resume``, and ``--resume`` needs a checkpoint to continue from;
* :func:`run_folder`: holds the folder's lock for the whole command (the tokenizer is
  written before training starts); the yielded folder goes to :func:`sydsgpt.train.train`
  as ``out_dir``, which then does not lock it again;
* :func:`finish_run`: the loss plot (``loss.png``) and the one-line summary.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..files import CHECKPOINT_NAME, LOG_NAME, LOSS_PLOT_NAME, LockedRunFolder, lock_run_folder
from ..logs import plot_losses


def check_run_folder(out: Path, resume: bool, checkpoint_name: str = CHECKPOINT_NAME) -> None:
    """Refuse to overwrite a run without ``--resume``, and ``--resume`` without a checkpoint
    (``checkpoint_name``: the file a run resumes from; ``finetune grpo|dpo``'s is ``state.pt``)."""
    checkpoint = out / checkpoint_name
    if checkpoint.exists() and not resume:
        raise FileExistsError(
            f"{checkpoint} already exists: add --resume to continue that run, "
            "or choose another --out"
        )
    if resume and not checkpoint.exists():
        raise FileNotFoundError(
            f"--resume: there is no {checkpoint} to continue from; run without --resume first"
        )


@contextmanager
def run_folder(out: Path, lock: bool = True) -> Iterator[LockedRunFolder | Path]:
    """Hold ``out``'s lock while the block runs (``lock=False``: another process of a
    ``torchrun`` job holds it) and yield what to pass as ``Session(out_dir=...)``."""
    if not lock:
        yield out
        return
    with lock_run_folder(out) as held:
        yield held


def last_val_loss(history: list[dict[str, Any]]) -> float | None:
    """The last validation loss of a run's log records (``None``: never evaluated)."""
    return next((r["val_loss"] for r in reversed(history) if "val_loss" in r), None)


def finish_run(
    out: Path,
    history: list[dict[str, Any]],
    title: str,
    *,
    loss_name: str = "val loss",
    extra: str = "",
) -> None:
    """Save the loss curves as ``out/loss.png`` and print ``done: step N, <loss_name> X<extra>;
    checkpoint PATH`` on stderr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ax = plot_losses(out / LOG_NAME, title=title)
    ax.figure.savefig(out / LOSS_PLOT_NAME, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    val = last_val_loss(history)
    print(
        f"done: step {history[-1]['step']}, {loss_name} {val if val is None else round(val, 4)}"
        f"{extra}; checkpoint {out / CHECKPOINT_NAME}",
        file=sys.stderr,
    )
