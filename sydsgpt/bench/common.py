"""Shared pieces of the benchmarks: machine description, timing, tables, JSON results.

:func:`report` is how every benchmark ends: print its table, write its JSON.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ..runtime import cpu_model

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where the committed results live
(``sydsgpt bench --out sydsgpt/bench/results`` refreshes them)."""


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch CPU threads (``None``: torch's choice as it is),
    and restore the number it had before, however the block ends."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def machine_info() -> dict[str, Any]:
    """What produced a result: CPU, cores, GPU (if any), torch version, date."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def time_call(
    fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, sync: Callable[[], None] | None = None
) -> float:
    """Best wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        if sync:
            sync()
        start = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - start)
    return best


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join([line, sep, *body])


def write_result(
    path: str | os.PathLike[str], name: str, rows: Sequence[dict[str, Any]], **extra: Any
) -> Path:
    """Write ``{"benchmark", "machine", "rows", ...}`` as JSON to ``path``; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine_info(), "rows": list(rows), **extra}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    return out


def report(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None,
    out: str | os.PathLike[str] | None,
    name: str,
    log: Callable[[str], None] | None = print,
    **extra: Any,
) -> dict[str, Any]:
    """Print ``rows`` as a table (through ``log``), write them with ``extra`` as the JSON result
    ``out`` (when given), and return the payload ``{"benchmark", **extra, "rows"}``."""
    if log:
        log(format_table(rows, columns))
    if out is not None:
        path = write_result(out, name, rows, **extra)
        if log:
            log(f"wrote {path}")
    return {"benchmark": name, **extra, "rows": list(rows)}


T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student's t quantile 0.975 by degrees of freedom (a 95% two-sided interval)."""


def interval(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, half-width of the 95% confidence interval)`` of ``values`` (Student's t with
    ``n - 1`` degrees of freedom; NaN for a single value, 1.96 beyond ten values)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan
    t = T_95.get(len(values) - 1, 1.96)
    return mean, t * statistics.stdev(values) / math.sqrt(len(values))
