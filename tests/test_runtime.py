"""sydsgpt.runtime: the one home of every "auto" rule
(device, precision, TF32, fused AdamW) and seeding."""

from __future__ import annotations

import random

import pytest
import torch

from sydsgpt.bench.ablation import plan
from sydsgpt.bench.setups import Setup, resolved_switches
from sydsgpt.optim import build_optimizer
from sydsgpt.runtime import (
    DTYPES,
    DeviceUnavailableError,
    auto_amp_dtype,
    auto_fused_adamw,
    auto_tf32,
    device_type,
    resolve_device,
    resolve_fast_paths,
    seed_everything,
)
from sydsgpt.train import TrainConfig


@pytest.mark.parametrize(
    ("dtype", "kind", "bf16", "expected"),
    [
        ("auto", "cuda", True, torch.bfloat16),
        ("auto", "cuda", False, None),  # an old GPU without bfloat16: plain float32
        ("auto", "cpu", True, None),  # auto never turns autocast on for a CPU
        ("auto", "mps", True, None),
        ("float32", "cuda", True, None),
        ("bfloat16", "cpu", True, torch.bfloat16),
    ],
)
def test_auto_precision_rule(
    dtype: str, kind: str, bf16: bool, expected: torch.dtype | None
) -> None:
    assert auto_amp_dtype(dtype, kind, bf16_supported=bf16) is expected


def test_unknown_dtype_names_the_choices() -> None:
    with pytest.raises(ValueError, match="bfloat16"):
        auto_amp_dtype("fp8", "cuda")
    assert DTYPES == ("auto", "float32", "bfloat16")


@pytest.mark.parametrize("kind", ["cpu", "cuda", "mps"])
def test_tf32_and_fused_adamw_mean_on_for_cuda_only(kind: str) -> None:
    cuda = kind == "cuda"
    assert auto_tf32(None, kind) is cuda and auto_fused_adamw(None, kind) is cuda
    assert auto_tf32(True, kind) is cuda  # TF32 does not exist off CUDA
    assert auto_fused_adamw(True, kind) is True and auto_fused_adamw(False, kind) is False


def test_resolve_fast_paths_spells_out_every_auto() -> None:
    gpu = resolve_fast_paths("cuda", bf16_supported=True)
    cpu = resolve_fast_paths("cpu")
    assert (gpu.amp_dtype, gpu.tf32, gpu.fused_adamw, gpu.compile, gpu.dtype_name) == (
        torch.bfloat16,
        True,
        True,
        False,
        "bfloat16",
    )
    assert (cpu.amp_dtype, cpu.tf32, cpu.fused_adamw, cpu.dtype_name) == (
        None,
        False,
        False,
        "float32",
    )


def test_the_benchmark_plan_reads_the_same_rules() -> None:
    # The GPU plan's package-defaults row is what TrainConfig's defaults resolve to on CUDA.
    defaults = TrainConfig()
    rows = plan(None, "cuda", log=None)["rows"]
    row = next(r for r in rows if r["setup"] == "package defaults")
    fast = resolve_fast_paths(
        "cuda",
        defaults.dtype,
        defaults.tf32,
        defaults.fused_adamw,
        defaults.compile,
        bf16_supported=True,
    )
    assert (row["dtype"], row["tf32"], row["fused_adamw"], row["compile"]) == (
        fast.dtype_name,
        fast.tf32,
        fast.fused_adamw,
        fast.compile,
    )
    switches = Setup("package defaults", defaults=True).switches(
        {"vocab_size": 10, "embedding_dim": 8, "context_length": 4, "num_layers": 1, "num_heads": 2}
    )
    assert resolved_switches(switches, "cpu")["dtype"] == "float32"


def test_the_optimizer_follows_the_fused_rule() -> None:
    model = torch.nn.Linear(4, 4)
    assert build_optimizer(model, TrainConfig(), "cpu").defaults["fused"] is False
    assert build_optimizer(model, TrainConfig(fused_adamw=True), "cpu").defaults["fused"] is True


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert device_type("cuda:1") == "cuda" and device_type("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is available; use cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_seed_everything_seeds_torch_python_and_numpy() -> None:
    import numpy as np

    seed_everything(5)
    first = (torch.rand(2).tolist(), random.random(), float(np.random.rand()))
    seed_everything(5)
    assert (torch.rand(2).tolist(), random.random(), float(np.random.rand())) == first
