"""Benchmark: the ablation, one optimisation at a time on top of the previous ones.

Starting from the plain path (chapter 2's explicit attention, three Q/K/V products, the
unpadded vocabulary, float32, eager mode, the for-each AdamW), each row switches on one
more fast path; a last row is the package defaults. Every row trains the same weights on
the same batches (:mod:`sydsgpt.bench.training`), so ``speedup`` (vs. the plain row)
isolates what each switch adds on this machine, and ``final_loss`` shows it still
computes the same thing.

* CPU: ``gpt2-mini`` (GPT-2's vocabulary, 16M parameters), 256 tokens of context, batch 4.
* CUDA: GPT-2 small (124M) at context 1024, batch 8; TF32 is a row of its own there.
  Where no GPU is available, ``--plan`` writes the GPU rows marked *not measured*.

The cumulative setups are :func:`sydsgpt.bench.setups.ablation_setups`. Run it with
``sydsgpt bench --what ablation`` (``--device cuda`` on a GPU, ``--plan`` to write the GPU rows
unmeasured).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..presets import get_preset
from ..runtime import device_type
from .common import RESULTS_DIR, format_table, write_result
from .setups import (
    DEVICE_DEFAULTS,
    MODEL_SWITCHES,
    TRAIN_SWITCHES,
    Setup,
    ablation_setups,
    resolved_switches,
)
from .training import COLUMNS, Schedule, Workload
from .training import run as run_training

NOT_MEASURED = (
    "not measured: no GPU was available to this run; run `sydsgpt bench --what ablation --device "
    "cuda`"
)


def not_measured_rows(
    setups: Sequence[Setup],
    base_model: Mapping[str, Any],
    device_kind: str = "cuda",
    reason: str = NOT_MEASURED,
) -> list[dict[str, Any]]:
    """The rows a run on ``device_kind`` would fill, each
    marked ``measured: False`` with every number ``None``."""
    numbers = [c for c in COLUMNS if c != "setup"]
    return [
        {
            "setup": s.name,
            **resolved_switches(s.switches(base_model), device_kind),
            "measured": False,
            **{c: None for c in numbers},
            "note": reason,
        }
        for s in setups
    ]


def plan(
    out: str | Path | None,
    device_kind: str = "cuda",
    preset: str | None = None,
    batch_size: int | None = None,
    seq_len: int | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Write the ablation's rows for ``device_kind`` without running them (all *not measured*).

    ``preset``, ``batch_size``, ``seq_len`` default to the device's (:data:`DEVICE_DEFAULTS`).
    """
    default_preset, default_batch, default_seq = DEVICE_DEFAULTS[device_kind]
    preset, batch_size, seq_len = (
        preset or default_preset,
        batch_size or default_batch,
        seq_len or default_seq,
    )
    base = get_preset(preset, dropout=0.0)
    rows = not_measured_rows(ablation_setups(device_kind), base, device_kind)
    extra = {
        "preset": preset,
        "model": base,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "device": device_kind,
        "measured": False,
        "reason": NOT_MEASURED,
    }
    if log:
        log(format_table(rows, ["setup", *MODEL_SWITCHES, *TRAIN_SWITCHES, "measured"]))
    if out is not None:
        path = write_result(out, "ablation", rows, **extra)
        if log:
            log(f"wrote {path}")
    return {"benchmark": "ablation", **extra, "rows": rows}


def run(
    device: str = "cpu",
    workload: Workload | None = None,
    schedule: Schedule = Schedule(),
    quick: bool = False,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the ablation on ``device`` and return the JSON payload (written to ``out`` if given).

    ``workload``: default, the device's default preset and batch shape. ``quick=True``: tiny
    model, one timed step, no ``torch.compile`` row (a smoke test).
    """
    setups = ablation_setups(device_type(device), compile=not quick)
    return run_training(
        workload,
        device,
        setups=setups,
        schedule=schedule,
        quick=quick,
        out=out,
        name="ablation",
        log=log,
    )


def load(kind: str = "cpu", folder: str | Path = RESULTS_DIR) -> dict[str, Any]:
    """The committed ablation result for ``"cpu"`` or ``"gpu"`` (``ablation_<kind>.json``)."""
    path = Path(folder) / f"ablation_{kind}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; create it with: sydsgpt bench --what ablation --out "
            f"{path.parent}"
        )
    return json.loads(path.read_text())


def plot_speedups(result: Mapping[str, Any], ax: Any = None, title: str | None = None) -> Any:
    """Horizontal bars of each row's training speed relative to the plain row.

    Rows that were not measured get no bar and the label "not measured". Returns the ``Axes``.
    """
    import matplotlib.pyplot as plt

    rows = result["rows"]
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    names = [r["setup"] for r in rows][::-1]
    speedups = [r["speedup"] if r.get("measured") else 0.0 for r in rows][::-1]
    bars = ax.barh(names, speedups, color=["tab:blue" if s else "lightgray" for s in speedups])
    for bar, value in zip(bars, speedups):
        label = f"x{value:.2f}" if value else "not measured"
        ax.text(
            max(value, 0.02),
            bar.get_y() + bar.get_height() / 2,
            " " + label,
            va="center",
            fontsize=9,
        )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, max([1.0, *speedups]) * 1.25)
    ax.set_xlabel("training tokens/s relative to the plain path")
    machine = result.get("machine", {})
    where = (
        machine.get("gpu") or machine.get("cpu")
        if result.get("rows") and rows[0].get("measured")
        else "not measured"
    )
    ax.set_title(title or f"Ablation: {result.get('preset', '')} on {where}")
    return ax
