"""Chapter 5: the training log (one JSON record per step) and the loss curves drawn from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import atomic_write


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines training log (an
    incomplete last line, left by a crash, is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def truncate_log(path: Path, last_step: int) -> list[dict[str, Any]]:
    """Keep the records up to ``last_step`` (a resumed run rewrites what came after)."""
    records = [r for r in read_log(path) if r["step"] <= last_step] if path.exists() else []
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in records))
    return records


def plot_losses(
    log: str | Path | Sequence[Mapping[str, Any]],
    ax: Any = None,
    title: str = "Training and validation loss",
) -> Any:
    """Plot train loss (every step) and validation loss (each evaluation) against tokens seen.

    Args:
        log: a log file path or the records :func:`train` returned.
        ax: a matplotlib ``Axes`` to draw on (default: a new figure, 8 x 4 inches).
    Returns:
        The ``Axes``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    records = read_log(log) if isinstance(log, (str, Path)) else list(log)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    train = [(r["tokens_seen"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["tokens_seen"], r["val_loss"]) for r in records if "val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train (each step)", alpha=0.7, linewidth=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", linewidth=2)
    ax.xaxis.set_major_formatter(EngFormatter())  # 200 k, 1 M, 3 G
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax
