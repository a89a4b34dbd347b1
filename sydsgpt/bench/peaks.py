"""Peak FLOP/s of the hardware, and model FLOPs utilisation (MFU).

MFU is the fraction of the hardware's peak arithmetic that the model's own FLOPs use:

    MFU = tokens_per_second * flops_per_token / peak_flops_per_second

with ``flops_per_token`` from :func:`sydsgpt.model.flops_per_token` (``6 N + 12 L T d``
for training). GPU peaks come from a table of datasheet numbers (dense bf16 tensor-core
FLOP/s, no sparsity); a CPU has no such number we can trust, so its peak is *measured*:
the best FLOP/s of a large float32 matrix product on this machine.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

# Dense (not 2:4 sparse) bf16 tensor-core peaks from NVIDIA's datasheets, in FLOP/s.
# More specific names first: the first pattern found in the device name wins.
GPU_BF16_PEAKS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM (reported as e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989e12),  # same compute die as H100 SXM, more and faster memory
    ("A100", 312e12),
)
"""``(name pattern, bf16 dense FLOP/s)``; sources: NVIDIA H100, H200 and A100 datasheets."""


@dataclass(frozen=True)
class Peak:
    """A peak FLOP/s and where it came from."""

    flops: float
    """Peak floating-point operations per second."""
    source: str
    """``"datasheet"`` (table lookup) or ``"measured"`` (timed matrix product)."""
    description: str
    """Human-readable: what the number is, e.g. "NVIDIA H100 bf16 dense (datasheet)"."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def gpu_peak_flops(device_name: str) -> float | None:
    """Datasheet dense bf16 FLOP/s for a GPU name
    (``torch.cuda.get_device_name()``), or ``None`` if unknown."""
    for pattern, flops in GPU_BF16_PEAKS:
        if pattern.lower() in device_name.lower():
            return flops
    return None


def measure_matmul_peak(
    size: int = 2048,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    repeats: int = 5,
) -> float:
    """Best FLOP/s of a ``size x size`` by ``size x size`` matrix product on ``device``.

    A square product takes ``2 size^3`` FLOPs (a multiply and an add per term). The best
    of ``repeats`` timed runs (after one warm-up) is the least disturbed by other work.
    """
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: str | torch.device = "cpu", matmul_size: int = 2048) -> Peak:
    """The peak to measure MFU against on ``device``.

    CUDA: the datasheet bf16 dense peak of the GPU (measured if the GPU is not in
    :data:`GPU_BF16_PEAKS`). CPU: a measured float32 matrix-product peak.
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        flops = gpu_peak_flops(name)
        if flops is not None:
            return Peak(flops, "datasheet", f"{name} bf16 dense (datasheet)")
        measured = measure_matmul_peak(8192, torch.bfloat16, device)
        return Peak(
            measured, "measured", f"{name}: measured bf16 matmul peak (not in the datasheet table)"
        )
    measured = measure_matmul_peak(matmul_size, torch.float32, device)
    return Peak(
        measured,
        "measured",
        f"MFU vs measured matmul peak: best float32 {matmul_size}x{matmul_size} matmul on this CPU",
    )


def mfu(tokens_per_second: float, flops_per_token: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved model FLOP/s over the peak (a fraction, 0..1 normally)."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return tokens_per_second * flops_per_token / peak
