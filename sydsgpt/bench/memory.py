"""Peak memory of a block of code, on a GPU or on the CPU.

* CUDA: ``torch.cuda.max_memory_allocated`` (bytes held by tensors, the caching
  allocator's spare blocks excluded), after ``reset_peak_memory_stats``.
* CPU (Linux): the process's peak resident set size (``VmHWM`` in ``/proc/self/status``),
  reset to the current RSS at the start by writing ``5`` to ``/proc/self/clear_refs``;
  free heap pages are first handed back to the OS (``malloc_trim``) so memory freed by an
  earlier measurement is not silently reused. Counts everything the process touches
  (tensors, allocator overhead, Python objects), so it is an upper bound on tensor memory.
* Elsewhere: the growth of ``ru_maxrss`` (the lifetime peak), which reads 0 when an
  earlier block already peaked higher; the ``method`` field says so.

Every result is the peak *above the level at the start of the block*, so a measurement
is not inflated by models that other measurements keep alive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path
from types import TracebackType

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (e.g. ``VmRSS``, ``VmHWM``) in KiB, or None."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _malloc_trim() -> None:
    """Return free heap memory to the OS (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _maxrss_bytes() -> int:
    """Lifetime peak RSS of this process (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated above the start of the run",
    "hwm": "peak RSS (VmHWM, reset via /proc/self/clear_refs) above the RSS at the start of the "
    "run",
    "maxrss": "growth of ru_maxrss (lifetime peak RSS; 0 if an earlier run peaked higher)",
}


def resident_bytes() -> int:
    """The process's resident set size now, in bytes, after handing free heap pages back to
    the OS (0 where ``/proc/self/status`` is missing)."""
    gc.collect()
    _malloc_trim()
    return (_status_kib("VmRSS") or 0) * 1024


def memory_method(device: str | torch.device = "cpu") -> str:
    """How :class:`PeakMemory` measures on ``device`` on this machine (the text results record)."""
    if torch.device(device).type == "cuda":
        return _METHODS["cuda"]
    return _METHODS["hwm" if _reset_rss_peak() else "maxrss"]


class PeakMemory:
    """Context manager measuring the peak memory used inside the ``with`` block.

    After the block, ``peak_bytes`` holds the peak above the starting level and
    ``method`` a short description of how it was measured::

        with PeakMemory("cpu") as mem:
            train_steps()
        print(mem.peak_bytes, mem.method)
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes: int = 0
        self.method: str = ""
        self._base = 0
        self._mode = ""

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self._mode = "cuda"
            self.method = _METHODS["cuda"]
            return self
        _malloc_trim()
        if _reset_rss_peak():
            self._base = (_status_kib("VmRSS") or 0) * 1024
            self._mode = "hwm"
        else:
            self._base = _maxrss_bytes()
            self._mode = "maxrss"
        self.method = _METHODS[self._mode]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._mode == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._mode == "hwm":
            peak = (_status_kib("VmHWM") or 0) * 1024
        else:
            peak = _maxrss_bytes()
        self.peak_bytes = max(0, peak - self._base)
