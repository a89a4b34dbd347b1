"""Where code runs, and how fast: the device, the precision, the random seed.

This module is the one home of every "auto" rule. Training, generation, the benchmarks
and the command line all ask it, so ``auto`` means the same thing everywhere:

=================  =========================================================================
``device="auto"``  CUDA if a GPU is visible, else Apple MPS, else the CPU
``dtype="auto"``   bfloat16 autocast on a CUDA GPU that supports it, else plain float32
``tf32=None``      TF32 float32 matrix products on CUDA, off elsewhere
``fused_adamw``    ``None``: the fused AdamW kernel on CUDA, the for-each one elsewhere
``compile``        off unless asked for (it costs a minute of start-up)
=================  =========================================================================

:func:`resolve_fast_paths` turns a request (``"auto"`` / ``None`` or an explicit value)
into what a run on a given device actually uses; :func:`cpu_model` names the machine (for
results and the book checkpoint's info).
"""

from __future__ import annotations

import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

Dtype = Literal["auto", "float32", "bfloat16"]
"""The precision choices of training (:class:`sydsgpt.train.TrainConfig` ``dtype``)."""
DTYPES: tuple[str, ...] = get_args(Dtype)


class DeviceUnavailableError(RuntimeError):
    """The device asked for does not exist on this machine."""


def resolve_device(
    name: str | torch.device = "auto", local_rank: int | None = None
) -> torch.device:
    """The :class:`torch.device` for a device name.

    Args:
        name: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        local_rank: under ``torchrun`` on CUDA, a bare ``"cuda"`` means GPU ``local_rank``
            (default: the current distributed context's).

    Raises:
        DeviceUnavailableError: CUDA or MPS asked for on a machine without it.
    """
    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"device {name!r} was asked for but no CUDA GPU is available; use cpu (or auto)"
            )
        if device.index is None:
            if local_rank is None:
                from .distributed import current_context

                local_rank = current_context().local_rank
            device = torch.device("cuda", local_rank)
    if device.type == "mps" and not _mps_available():
        raise DeviceUnavailableError(
            f"device {name!r} was asked for but Apple MPS is not available; use cpu (or auto)"
        )
    return device


def check_device_name(name: str) -> None:
    """``name`` must be ``auto`` or a device torch knows (``cpu``, ``cuda``, ``cuda:1``, ``mps``,
    ...); whether this machine has it is checked when the device is used
    (:func:`resolve_device`)."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def device_type(name: str | torch.device) -> str:
    """``"cuda"``, ``"mps"`` or ``"cpu"``: the kind of device ``name`` is, without checking it
    exists (``"auto"`` is resolved on this machine)."""
    if str(name) == "auto":
        return resolve_device("auto").type
    return torch.device(name).type


# ---------------------------------------------------------------------------- the "auto" rules


def auto_amp_dtype(
    dtype: str, device_kind: str, bf16_supported: bool | None = None
) -> torch.dtype | None:
    """The autocast dtype for a ``dtype`` choice on a kind of device (``None``: plain float32).

    ``bf16_supported`` says whether the GPU has bfloat16 (default: ask the current GPU; a
    plan for a GPU that is not here assumes it has).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    if device_kind != "cuda":
        return None
    if bf16_supported is None:
        bf16_supported = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else None


def auto_tf32(tf32: bool | None, device_kind: str) -> bool:
    """Whether float32 matrix products use TF32: ``None`` means on for CUDA; never off CUDA."""
    return device_kind == "cuda" and (tf32 is None or bool(tf32))


def auto_fused_adamw(fused: bool | None, device_kind: str) -> bool:
    """Whether AdamW uses its fused kernel: ``None`` means on for CUDA."""
    return (device_kind == "cuda") if fused is None else bool(fused)


@dataclass(frozen=True)
class FastPaths:
    """What a run actually uses once every ``"auto"`` is resolved for its device."""

    amp_dtype: torch.dtype | None
    """The autocast dtype (``None``: plain float32)."""
    tf32: bool
    fused_adamw: bool
    compile: bool

    @property
    def dtype_name(self) -> str:
        """``"bfloat16"`` or ``"float32"``: how results tables name the precision."""
        return str(self.amp_dtype or torch.float32).removeprefix("torch.")


def resolve_fast_paths(
    device_kind: str,
    dtype: str = "auto",
    tf32: bool | None = None,
    fused_adamw: bool | None = None,
    compile: bool = False,
    bf16_supported: bool | None = None,
) -> FastPaths:
    """Apply this module's rules: what
    ``dtype``/``tf32``/``fused_adamw``/``compile`` mean on ``device_kind``."""
    return FastPaths(
        amp_dtype=auto_amp_dtype(dtype, device_kind, bf16_supported),
        tf32=auto_tf32(tf32, device_kind),
        fused_adamw=auto_fused_adamw(fused_adamw, device_kind),
        compile=bool(compile),
    )


def configure_tf32(enabled: bool | None, device: torch.device) -> bool:
    """Allow TF32 float32 matrix products on CUDA (a
    process-wide setting). Returns whether it is on."""
    on = auto_tf32(enabled, device.type)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high" if on else "highest")
    return on


def autocast(device: torch.device, amp_dtype: torch.dtype | None):  # type: ignore[no-untyped-def]
    """``torch.autocast`` to ``amp_dtype`` on ``device``,
    or a context that does nothing for ``None``."""
    from contextlib import nullcontext

    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


# ---------------------------------------------------------------------------- seeding


def configure_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads in PyTorch's operations (``None``: leave the current setting)."""
    if threads is not None:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's ``random`` and numpy."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
