"""The benchmarks: MFU and the peak table, memory measurement, the ablation's setups, and
``sydsgpt bench`` end to end in ``--quick`` mode (tiny model, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sydsgpt.bench import ablation, generation
from sydsgpt.bench.memory import PeakMemory
from sydsgpt.bench.peaks import gpu_peak_flops, measure_matmul_peak, mfu, peak_flops
from sydsgpt.bench.setups import PLAIN_MODEL, PLAIN_TRAIN, TINY_MODEL, Setup
from sydsgpt.bench.training import state_bytes
from sydsgpt.cli import main
from sydsgpt.model import SydsGPT, count_parameters, flops_per_token
from sydsgpt.presets import get_preset


# ------------------------------------------------------------------ MFU and peaks


def test_mfu_of_the_book_model_by_hand() -> None:
    # gpt2-mini: d = 256, L = 4, V = 50257, T = 256.
    # matmul weights N = L * 12 d^2 + V d = 4 * 786432 + 12865792 = 16011520
    # forward per token = 2 N + 4 L T d = 32023040 + 1048576 = 33071616; training = 3x = 99214848
    per_token = flops_per_token(get_preset("gpt2-mini"), 256, training=True)
    assert per_token == 99_214_848
    # 1000 tokens/s on a 1 TFLOP/s machine: 99214848 * 1000 / 1e12
    assert mfu(1000.0, per_token, 1e12) == pytest.approx(0.099214848, rel=1e-12)


def test_mfu_of_gpt2_small_on_an_h100_by_hand() -> None:
    # N = 12 * 12 * 768^2 + 50257 * 768 = 84934656 + 38597376 = 123532032
    # 6 N + 12 L T d = 741192192 + 12 * 12 * 1024 * 768 = 741192192 + 113246208 = 854438400
    per_token = flops_per_token(get_preset("gpt2-small"), 1024, training=True)
    assert per_token == 854_438_400
    # 400k tokens/s: 854438400 * 4e5 = 3.4177536e14 FLOP/s of the H100's 9.89e14
    assert mfu(4e5, per_token, gpu_peak_flops("NVIDIA H100 80GB HBM3")) == pytest.approx(
        3.4177536e14 / 9.89e14
    )


def test_mfu_needs_a_positive_peak() -> None:
    with pytest.raises(ValueError, match="positive"):
        mfu(1.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989),  # H100 SXM as torch.cuda.get_device_name reports it
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA A100 80GB PCIe", 312),
        ("Tesla T4", None),
    ],
)
def test_gpu_peak_table(name: str, tflops: int | None) -> None:
    expected = None if tflops is None else tflops * 1e12
    assert gpu_peak_flops(name) == expected


def test_cuda_peak_comes_from_the_datasheet_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    peak = peak_flops("cuda")
    assert (peak.flops, peak.source) == (989e12, "datasheet")
    assert "H200" in peak.description


def test_cpu_peak_is_a_measured_matmul() -> None:
    peak = peak_flops("cpu", matmul_size=128)
    assert peak.source == "measured" and peak.description.startswith("MFU vs measured matmul peak")
    # a 128^3 product is 2 * 128^3 = 4194304 FLOPs; any real CPU does it in well under a second
    assert 4194304 < peak.flops < 1e14
    assert measure_matmul_peak(64, repeats=1) > 0


# ------------------------------------------------------------------ memory and state


def test_peak_memory_sees_a_tensor_allocated_inside_the_block() -> None:
    with PeakMemory("cpu") as memory:
        block = torch.ones(10 * 2**20)  # 40 MiB of float32, written (so resident)
        del block
    assert 36 * 2**20 < memory.peak_bytes < 200 * 2**20
    assert memory.method


def test_state_bytes_counts_parameters_and_adamw_moments() -> None:
    model = SydsGPT(TINY_MODEL)  # tied head: counted once
    optimizer = torch.optim.AdamW(model.parameters())
    n = count_parameters(model)
    assert state_bytes(model, optimizer) == 4 * n  # no optimizer state before the first step
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    tensors = len(list(model.parameters()))
    # exp_avg and exp_avg_sq (float32, like the parameter) plus a float32 step counter per tensor
    assert state_bytes(model, optimizer) == 4 * n * 3 + 4 * tensors


# ------------------------------------------------------------------ setups


def test_setup_switches_start_from_the_plain_path_or_the_defaults() -> None:
    base = get_preset("gpt2-mini")
    assert Setup("plain").switches(base) == {**PLAIN_MODEL, **PLAIN_TRAIN}
    defaults = Setup("defaults", defaults=True).switches(base)
    assert defaults == {
        "attention": "sdpa",
        "fused_qkv": True,
        "pad_vocab_multiple": 1,
        "gelu": "fused",
        "dtype": "auto",
        "tf32": None,
        "compile": False,
        "fused_adamw": None,
    }


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_ablation_adds_one_switch_per_row(device: str) -> None:
    base = get_preset("gpt2-mini")
    setups = ablation.ablation_setups(device)
    assert setups[0].name == "plain" and setups[-1].name == "package defaults"
    rows = [s.switches(base) for s in setups[:-1]]
    changed = [{k for k in now if now[k] != before[k]} for before, now in zip(rows, rows[1:])]
    expected = ["fused_qkv", "attention", "pad_vocab_multiple", "dtype", "compile", "fused_adamw"]
    if device == "cuda":
        expected.insert(0, "tf32")
    assert changed == [{k} for k in expected]
    assert "+torch.compile" not in [s.name for s in ablation.ablation_setups(device, compile=False)]


# ------------------------------------------------------------------ the command line


def load(path: Path) -> dict[str, Any]:
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def check_machine(result: dict[str, Any]) -> None:
    machine = result["machine"]
    assert machine["cpu"] and machine["torch"] == torch.__version__ and machine["date"]
    assert "gpu" in machine


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_bench_train_quick_writes_a_json_with_machine_and_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--what", "train", "--quick", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "tokens_per_s" in printed and "training_cpu.json" in printed
    result = load(tmp_path / "training_cpu.json")
    check_machine(result)
    assert result["benchmark"] == "training" and result["model"] == TINY_MODEL
    assert (
        result["peak"]["source"] == "measured"
        and "MFU vs measured matmul peak" in result["peak"]["description"]
    )
    assert result["flops_per_token"] == flops_per_token(TINY_MODEL, result["seq_len"])
    assert "VmHWM" in result["memory"] or "ru_maxrss" in result["memory"]
    rows = result["rows"]
    assert [r["setup"] for r in rows] == [
        "plain",
        "package defaults",
        "all fast paths",
        "defaults, decoding layout",
    ]
    for row in rows:
        assert row["measured"] and row["tokens_per_s"] > 0 and row["step_s"] > 0 and 0 < row["mfu"]
        assert row["mfu"] == pytest.approx(
            row["tokens_per_s"] * result["flops_per_token"] / result["peak"]["flops"]
        )
        assert (
            row["peak_mib"] == pytest.approx(row["state_mib"] + row["step_mib"])
            and row["state_mib"] > 0
        )
        # same initial weights and batch: the same first loss (bf16 in the last row: close)
        assert row["first_loss"] == pytest.approx(rows[0]["first_loss"], abs=0.02)
    assert rows[0]["speedup"] == 1.0
    assert rows[2]["dtype"] == "bfloat16" and rows[2]["pad_vocab_multiple"] == 64
    assert (
        rows[1]["dtype"] == "float32" and rows[1]["fused_adamw"] is False
    )  # "auto" resolved on the CPU
    # The last row differs from the defaults only in how the weights are stored: same losses.
    assert [r["decoding_layout"] for r in rows] == [False, False, False, True]
    assert rows[3]["final_loss"] == pytest.approx(rows[1]["final_loss"], abs=1e-4)


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_bench_ablation_quick_and_the_gpu_plan(tmp_path: Path) -> None:
    assert main(["bench", "--what", "ablation", "--quick", "--out", str(tmp_path)]) == 0
    result = load(tmp_path / "ablation_cpu.json")
    check_machine(result)
    assert [r["setup"] for r in result["rows"]] == [
        s.name for s in ablation.ablation_setups("cpu", compile=False)
    ]
    assert all(r["measured"] and r["tokens_per_s"] > 0 for r in result["rows"])

    assert (
        main(["bench", "--what", "ablation", "--plan", "--device", "cuda", "--out", str(tmp_path)])
        == 0
    )
    plan = load(tmp_path / "ablation_gpu.json")
    assert plan["measured"] is False and plan["preset"] == "gpt2-small" and plan["seq_len"] == 1024
    assert [r["setup"] for r in plan["rows"]] == [s.name for s in ablation.ablation_setups("cuda")]
    for row in plan["rows"]:
        assert (
            row["measured"] is False
            and row["tokens_per_s"] is None
            and row["note"].startswith("not measured")
        )
    defaults = plan["rows"][-1]  # "auto" / None spelled out as TrainConfig defines them for CUDA
    assert (defaults["dtype"], defaults["tf32"], defaults["fused_adamw"]) == (
        "bfloat16",
        True,
        True,
    )


def test_bench_plan_is_only_for_the_ablation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--what", "train", "--plan", "--out", str(tmp_path)]) == 2  # bad usage
    assert (
        capsys.readouterr().err == "sydsgpt bench: error: --plan only applies to --what ablation\n"
    )


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_bench_tokenizer_quick_writes_bpe_json_with_memory(tmp_path: Path) -> None:
    assert main(["bench", "--what", "tokenizer", "--quick", "--out", str(tmp_path)]) == 0
    result = load(tmp_path / "bpe.json")
    check_machine(result)
    assert {r["tokenizer"] for r in result["rows"]} >= {"sydsgpt BPE", "tiktoken gpt2"}
    assert result["peak_memory_mib"] > 0 and result["memory"].startswith("whole benchmark")


def test_bench_generate_hands_its_options_to_the_generation_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The generation benchmark itself is tested with
    # the chapter-6 code; here: what the CLI passes on.
    calls = []
    monkeypatch.setattr(generation, "benchmark", lambda **options: calls.append(options) or {})
    main(["bench", "--what", "generate", "--quick", "--out", str(tmp_path)])
    main(
        [
            "bench",
            "--what",
            "generate",
            "--device",
            "cuda",
            "--preset",
            "gpt2-medium",
            "--repeats",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    out = tmp_path / "generation.json"
    assert calls == [
        {
            "preset": None,
            "device": "cpu",
            "quick": True,
            "transformers": False,
            "repeats": 5,
            "out": out,
        },
        {
            "preset": "gpt2-medium",
            "device": "cuda",
            "quick": False,
            "transformers": True,
            "repeats": 3,
            "out": out,
        },
    ]


def test_a_decoding_layout_setup_trains_the_model_with_transposed_weights() -> None:
    from sydsgpt.bench.setups import PLAIN_MODEL, Setup
    from sydsgpt.bench.training import _Runner
    from sydsgpt.config import Kernels
    from sydsgpt.model import SydsGPT

    init = SydsGPT(TINY_MODEL, Kernels(**PLAIN_MODEL))
    for layout in (False, True):
        runner = _Runner(
            Setup("x", decoding_layout=layout), TINY_MODEL, init, torch.device("cpu"), lr=1e-3
        )
        linears = [m for m in runner.model.modules() if isinstance(m, torch.nn.Linear)]
        assert all(m.weight.t().is_contiguous() != m.weight.is_contiguous() for m in linears)
        assert all(m.weight.t().is_contiguous() == layout for m in linears)
        assert runner.switches["decoding_layout"] is layout


def test_report_prints_the_table_and_writes_the_json(tmp_path: Path) -> None:
    from sydsgpt.bench.common import report

    lines: list[str] = []
    rows = [{"setup": "a", "tokens_per_s": 1234.5678}, {"setup": "b", "tokens_per_s": 2.0}]
    payload = report(
        rows, ["setup", "tokens_per_s"], tmp_path / "r.json", "demo", log=lines.append, note="x"
    )
    assert lines[0].splitlines()[0].split() == ["setup", "tokens_per_s"] and "1235" in lines[0]
    assert lines[1] == f"wrote {tmp_path / 'r.json'}"
    written = load(tmp_path / "r.json")
    assert written["benchmark"] == "demo" and written["rows"] == rows and written["note"] == "x"
    assert payload == {"benchmark": "demo", "note": "x", "rows": rows}
    assert (
        report(rows, None, None, "demo", log=None)["rows"] == rows
    )  # nothing written, nothing printed
