"""Benchmark: the ablation, one optimisation at a time on top of the previous ones.

Starting from the plain path (chapter 2's explicit attention, three Q/K/V products, the
unpadded vocabulary, float32, eager mode, the for-each AdamW), each row switches on one
more fast path; a last row is the package defaults. Every row trains the same weights on
the same batches (:mod:`sydsgpt.bench.training`), so ``speedup`` (vs. the plain row)
isolates what each switch adds on this machine, and ``final_loss`` shows it still
computes the same thing.

* CPU: the book's model (``get_preset("book")``, 256 tokens of context, batch 4).
* CUDA: GPT-2 small (124M) at context 1024, batch 8; TF32 is a row of its own there.
  Where no GPU is available, ``--plan`` writes the GPU rows marked *not measured*.

Usage::

    python -m sydsgpt.bench.ablation                      # CPU, writes results/ablation_cpu.json (minutes)
    python -m sydsgpt.bench.ablation --device cuda        # GPU, writes results/ablation_gpu.json
    python -m sydsgpt.bench.ablation --device cuda --plan # the GPU rows, not measured
    python -m sydsgpt.bench.ablation --quick              # tiny model, seconds, writes nothing
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..model import get_preset
from .common import format_table, write_result
from .training import (
    COLUMNS, DEVICE_DEFAULTS, MODEL_SWITCHES, RESULTS_DIR, TRAIN_SWITCHES, Schedule, Setup, add_arguments, device_kind,
    result_path, schedule_from, shape_defaults,
)
from .training import run as run_training

STEPS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("+TF32", "train", {"tf32": True}, "cuda"),
    ("+fused QKV", "model", {"fused_qkv": True}, "any"),
    ("+SDPA attention", "model", {"attention": "sdpa"}, "any"),
    ("+padded vocab (x64)", "model", {"pad_vocab_multiple": 64}, "any"),
    ("+bf16 autocast", "train", {"dtype": "bfloat16"}, "any"),
    ("+torch.compile", "train", {"compile": True}, "any"),
    ("+fused AdamW", "train", {"fused_adamw": True}, "any"),
)
"""The optimisations in the order they are added: ``(row name, "model"|"train", switch values, devices)``."""

NOT_MEASURED = "not measured: no GPU was available to this run; run `sydsgpt bench --what ablation --device cuda`"


def ablation_setups(device_type: str = "cpu", compile: bool = True) -> list[Setup]:
    """The cumulative setups for ``device_type`` (``"cpu"`` or ``"cuda"``), plus the package defaults.

    ``compile=False`` leaves out the ``torch.compile`` row (it takes a minute to compile).
    """
    model: dict[str, Any] = {}
    train: dict[str, Any] = {}
    setups = [Setup("plain")]
    for name, kind, values, devices in STEPS:
        if devices not in ("any", device_type) or (not compile and "compile" in values):
            continue
        (model if kind == "model" else train).update(values)
        setups.append(Setup(name, model=dict(model), train=dict(train)))
    setups.append(Setup("package defaults", defaults=True, note="sydsgpt.model / sydsgpt.train defaults on this device"))
    return setups


def planned_switches(switches: Mapping[str, Any], device_type: str) -> dict[str, Any]:
    """``switches`` with ``TrainConfig``'s ``"auto"`` / ``None`` spelled out for ``device_type``,
    as its docs define them (on for CUDA; bf16 assumes a GPU that supports it)."""
    cuda = device_type == "cuda"
    planned = dict(switches)
    if planned["dtype"] == "auto":
        planned["dtype"] = "bfloat16" if cuda else "float32"
    for key in ("tf32", "fused_adamw"):
        if planned[key] is None:
            planned[key] = cuda
    return planned


def not_measured_rows(setups: Sequence[Setup], base_model: Mapping[str, Any], device_type: str = "cuda",
                      reason: str = NOT_MEASURED) -> list[dict[str, Any]]:
    """The rows a run on ``device_type`` would fill, each marked ``measured: False`` with every number ``None``."""
    numbers = [c for c in COLUMNS if c != "setup"]
    return [
        {"setup": s.name, **planned_switches(s.switches(base_model), device_type), "measured": False,
         **{c: None for c in numbers}, "note": reason}
        for s in setups
    ]


def plan(out: str | Path | None, device_type: str = "cuda", preset: str | None = None, batch_size: int | None = None,
         seq_len: int | None = None, log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Write the ablation's rows for ``device_type`` without running them (all *not measured*).

    ``preset``, ``batch_size``, ``seq_len`` default to the device's (:data:`DEVICE_DEFAULTS`).
    """
    default_preset, default_batch, default_seq = DEVICE_DEFAULTS[device_type]
    preset, batch_size, seq_len = preset or default_preset, batch_size or default_batch, seq_len or default_seq
    base = get_preset(preset, dropout=0.0)
    rows = not_measured_rows(ablation_setups(device_type), base, device_type)
    extra = {"preset": preset, "model": base, "batch_size": batch_size, "seq_len": seq_len,
             "device": device_type, "measured": False, "reason": NOT_MEASURED}
    if log:
        log(format_table(rows, ["setup", *MODEL_SWITCHES, *TRAIN_SWITCHES, "measured"]))
    if out is not None:
        path = write_result(out, "ablation", rows, **extra)
        if log:
            log(f"wrote {path}")
    return {"benchmark": "ablation", **extra, "rows": rows}


def run(
    device: str = "cpu",
    preset: str = "book",
    batch_size: int = 4,
    seq_len: int = 256,
    schedule: Schedule = Schedule(),
    quick: bool = False,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, Any]:
    """Run the ablation on ``device`` and return the JSON payload (written to ``out`` if given).

    ``quick=True``: tiny model, one timed step, no ``torch.compile`` row (a smoke test).
    """
    setups = ablation_setups(device_kind(device), compile=not quick)
    return run_training(preset, device, batch_size, seq_len, setups=setups, schedule=schedule, quick=quick,
                        out=out, name="ablation", log=log)


def load(device_type: str = "cpu", folder: str | Path = RESULTS_DIR) -> dict[str, Any]:
    """The committed ablation result for ``"cpu"`` or ``"gpu"`` (``ablation_<device_type>.json``)."""
    path = Path(folder) / f"ablation_{device_type}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; create it with: python -m sydsgpt.bench.ablation --out {path}")
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
        ax.text(max(value, 0.02), bar.get_y() + bar.get_height() / 2, " " + label, va="center", fontsize=9)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, max([1.0, *speedups]) * 1.25)
    ax.set_xlabel("training tokens/s relative to the plain path")
    machine = result.get("machine", {})
    where = machine.get("gpu") or machine.get("cpu") if result.get("rows") and rows[0].get("measured") else "not measured"
    ax.set_title(title or f"Ablation: {result.get('preset', '')} on {where}")
    return ax


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sydsgpt.bench.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--plan", action="store_true", help="write the rows without running them (marked not measured)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON result path (default sydsgpt/bench/results/ablation_<cpu|gpu>.json; none with --quick)")
    args = parser.parse_args(argv)
    out = result_path(args, "ablation")
    preset, batch_size, seq_len = shape_defaults(args)
    if args.plan:
        plan(out, device_kind(args.device), preset, batch_size, seq_len)
    else:
        run(args.device, preset, batch_size, seq_len, schedule_from(args), args.quick, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
