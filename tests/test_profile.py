"""Where the time goes: the profiler's split into phases and kinds of work, the reference
model the package's training step is compared with, and the committed result."""

from __future__ import annotations

import json

import pytest
import torch

from sydsgpt.bench import profile
from sydsgpt.bench.reference import ReferenceGPT, compare_reference
from sydsgpt.bench.common import RESULTS_DIR, interval
from sydsgpt.model import SydsGPT
from sydsgpt.train import TrainConfig

from helpers import tiny_config

GPT2_TINY = tiny_config(qkv_bias=False, tie_weights=True)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("aten::mm", "matrix products"),
        ("aten::addmm", "matrix products"),
        ("aten::_scaled_dot_product_flash_attention_for_cpu", "attention"),
        ("aten::_softmax", "attention"),
        ("aten::native_layer_norm_backward", "norms"),
        ("aten::embedding_dense_backward", "embedding and loss"),
        ("aten::nll_loss_forward", "embedding and loss"),
        ("aten::_log_softmax_backward_data", "embedding and loss"),
        ("aten::bernoulli_", "dropout masks"),
        ("aten::mul", profile.OTHER),
        ("aten::tanh", profile.OTHER),
    ],
)
def test_operations_are_sorted_into_kinds_of_work(name, kind):
    assert profile.kind_of(name) == kind


def _copy_into_reference(model: SydsGPT, reference: ReferenceGPT) -> None:
    """The package model's weights, under the reference's names (Q, K, V stacked)."""
    with torch.no_grad():
        reference.tokens.weight.copy_(model.token_embedding.weight)
        reference.positions.weight.copy_(model.position_embedding.weight)
        for block, ref in zip(model.transformer_blocks, reference.blocks):
            attention = block.attention
            ref.qkv.weight.copy_(
                torch.cat(
                    [
                        attention.weight_query.weight,
                        attention.weight_key.weight,
                        attention.weight_value.weight,
                    ]
                )
            )
            ref.proj.load_state_dict(attention.output_projection.state_dict())
            ref.up.load_state_dict(block.feed_forward.layers[0].state_dict())
            ref.down.load_state_dict(block.feed_forward.layers[2].state_dict())
            for norm, ref_norm in ((block.layer_norm1, ref.norm1), (block.layer_norm2, ref.norm2)):
                ref_norm.weight.copy_(norm.scale)
                ref_norm.bias.copy_(norm.shift)
        reference.norm.weight.copy_(model.final_layer_norm.scale)
        reference.norm.bias.copy_(model.final_layer_norm.shift)


def test_the_reference_computes_the_package_models_function():
    """Same parameters, same logits: the speed comparison compares two ways of computing one
    model, not two models."""
    torch.manual_seed(0)
    model = SydsGPT(GPT2_TINY).eval()
    reference = ReferenceGPT(GPT2_TINY)
    count = sum(p.numel() for p in reference.parameters())
    assert count == sum(p.numel() for p in model.parameters())  # Q, K, V stacked in one
    _copy_into_reference(model, reference)
    ids = torch.randint(0, GPT2_TINY["vocab_size"], (2, GPT2_TINY["context_length"]))
    assert torch.allclose(model(ids), reference(ids), atol=1e-5)
    assert reference.head.weight is reference.tokens.weight  # tied


def _profiled_tiny_training(steps: int) -> dict:
    """:func:`profile.profile_training` of the tiny GPT-2 model on one fixed batch."""
    torch.manual_seed(0)
    model = SydsGPT(GPT2_TINY)
    ids = torch.randint(0, GPT2_TINY["vocab_size"], (4, 13))
    return profile.profile_training(
        model, TrainConfig(lr=1e-3), lambda: (ids[:, :-1], ids[:, 1:]), steps=steps, warmup=1
    )


def test_profile_training_splits_a_step_into_phases_and_kinds():
    result = _profiled_tiny_training(steps=2)
    assert set(result["phases"]) == set(profile.PHASES)
    assert all(ms > 0 for name, ms in result["phases"].items() if name != "data")
    kinds = {row["kind"] for row in result["rows"]}
    assert {"matrix products", "norms", "embedding and loss", profile.UNACCOUNTED} <= kinds
    phases = {row["phase"] for row in result["rows"]}
    assert {"forward", "backward", "optimizer"} <= phases
    assert all(row["ms"] >= 0 for row in result["rows"])


def test_profile_decoding_counts_only_the_new_tokens():
    torch.manual_seed(0)
    model = SydsGPT(GPT2_TINY)
    result = profile.profile_decoding(model, torch.tensor([[1, 2, 3]]), new_tokens=3)
    assert result["token_ms"] > 0 and result["rows"][-1]["kind"] == profile.UNACCOUNTED
    assert any(row["kind"] == "matrix products" for row in result["rows"])
    weight_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert result["weight_mb"] == pytest.approx(weight_bytes / 1e6, abs=0.01)


def test_compare_reference_reports_a_ratio_and_its_interval():
    result = compare_reference(GPT2_TINY, batch_size=2, seq_len=8, rounds=3)
    mean, half = interval(result["round_ratios"])
    assert result["ratio"] == pytest.approx(mean, abs=1e-3)
    assert result["ratio_interval"] == pytest.approx(half, abs=1e-3)
    assert result["package_tokens_per_s"] > 0 and result["reference_tokens_per_s"] > 0


def test_quick_run_writes_the_result(tmp_path):
    out = tmp_path / "profile.json"
    result = profile.run(quick=True, out=out, log=None)
    written = json.loads(out.read_text())
    assert written["rows"] == result["rows"] and written["quick"] is True
    assert 0 < written["training"]["mfu"] and written["matmul_peak_flops"] > 0


def test_committed_profile_is_quiet_and_the_package_step_keeps_up():
    result = json.loads((RESULTS_DIR / "profile_cpu.json").read_text())
    assert not result["quick"] and result["load_before"] < 1
    reference = result["reference"]
    mean, half = interval(reference["round_ratios"])
    assert reference["ratio"] == pytest.approx(mean, abs=1e-3)
    assert reference["ratio_interval"] == pytest.approx(half, abs=1e-3)
    assert reference["ratio"] >= 1.0, "the package's training step fell behind the reference"
    shares = sum(row["share"] for row in result["training"]["rows"])
    assert shares == pytest.approx(1.0, abs=0.05)


def test_cli_profile_quick(tmp_path, capsys):
    from sydsgpt.cli import main

    assert main(["bench", "--what", "profile", "--quick", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "profile_cpu.json").read_text())["quick"] is True
    assert f"results: {tmp_path / 'profile_cpu.json'}" in capsys.readouterr().out


def test_top_operations_rank_self_time():
    result = _profiled_tiny_training(steps=1)
    top = result["top_operations"]
    assert 0 < len(top) <= 10 and [r["ms"] for r in top] == sorted(
        (r["ms"] for r in top), reverse=True
    )
    assert all(r["kind"] == profile.kind_of(r["op"]) for r in top)
