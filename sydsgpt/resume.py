"""Chapter 5: what a resumed run may change, and the record of what it changed.

A run resumed from a checkpoint (``train(..., session=Session(..., resume=True))``,
``sydsgpt train --resume``) may be given different training options. Those that decide which tokens
each step sees (:data:`RESUME_FIXED`) cannot change without making the run something else, so resume
refuses them, listing every difference. Every other option applies from the next step
(see :class:`sydsgpt.train.TrainConfig`), and :func:`record_changes` keeps the history in
``run.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import CheckpointMismatchError
from .train_config import TrainConfig

RESUME_FIXED: tuple[str, ...] = ("batch_size", "seq_len", "grad_accum_steps", "optimizer", "seed")
""":class:`TrainConfig` fields a resumed run cannot change: four decide which tokens each step sees
(the data order is part of the checkpoint), and the optimizer's saved state is its own kind, so
resume refuses, listing the differences. Every other
field may change on resume and applies from the next step; the change is recorded in the log and
in ``run.json``."""


def resume_changes(saved: Mapping[str, Any] | None, cfg: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """``{field: (checkpoint's value, this run's value)}`` for every option that differs from the
    checkpoint's training config (``saved``); nothing for a checkpoint without one.

    Raises:
        CheckpointMismatchError: a field of :data:`RESUME_FIXED` differs.
    """
    if not saved:
        return {}
    try:
        before = TrainConfig.from_dict(saved).to_dict()
    except (
        TypeError,
        ValueError,
    ):  # saved by a version that allowed a value now refused (e.g. grad_clip=0)
        before = dict(saved)
    changed = {k: (before.get(k), v) for k, v in cfg.to_dict().items() if before.get(k) != v}
    fixed = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items() if k in RESUME_FIXED]
    if fixed:
        raise CheckpointMismatchError(
            f"--resume cannot change {', '.join(fixed)} (these options decide the data each step "
            "sees); resume with the checkpoint's values, or start a new run in another output "
            "directory"
        )
    return changed


def record_changes(
    run_info_path: Path, step: int, changes: Mapping[str, tuple[Any, Any]]
) -> list[dict[str, Any]]:
    """The ``changes`` list of ``run.json``: the earlier
    sessions' (read back) plus this resume's."""
    try:
        earlier = json.loads(run_info_path.read_text()).get("changes", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    return [
        *earlier,
        *({"step": step, "option": k, "from": a, "to": b} for k, (a, b) in changes.items()),
    ]
