"""sydsgpt.lora: the update starts at zero, merge/unmerge equal the unmerged forward, exact
trainable-parameter counts, only the adapter is saved, and it loads back onto the base model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from sydsgpt.lora import (
    LoRAConfig,
    LoRALinear,
    adapter_state_dict,
    apply_lora,
    count_trainable_parameters,
    load_adapter,
    lora_layers,
    merge_lora,
    read_adapter,
    remove_lora,
    save_adapter,
    unmerge_lora,
)
from sydsgpt.model import SydsGPT

from helpers import seeded_randn, tiny_config, tiny_model

D, LAYERS, HIDDEN = (
    tiny_config()["embedding_dim"],
    tiny_config()["num_layers"],
    4 * tiny_config()["embedding_dim"],
)
IDS = torch.randint(0, 61, (3, 12), generator=torch.Generator().manual_seed(0))


def randomize_adapters(model: nn.Module, seed: int = 1) -> None:
    """Give every B a random value (it starts at zero, which would make every check trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def test_a_lora_linear_is_the_base_plus_the_scaled_low_rank_product() -> None:
    torch.manual_seed(0)
    base = nn.Linear(5, 3)
    layer = LoRALinear(copy.deepcopy(base), rank=2, alpha=6.0)
    x = seeded_randn(4, 5)
    assert torch.equal(layer(x), base(x))  # B = 0: the adapted layer starts as the base layer
    with torch.no_grad():
        layer.lora_B.copy_(seeded_randn(3, 2, seed=1))
    expected = (
        x @ base.weight.T + base.bias + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    )  # alpha / r = 3
    torch.testing.assert_close(layer(x), expected)
    assert layer.lora_A.shape == (2, 5) and layer.lora_B.shape == (3, 2)
    assert (
        not layer.base.weight.requires_grad
        and layer.lora_A.requires_grad
        and layer.lora_B.requires_grad
    )


@pytest.mark.parametrize(
    "targets", [("attention", "feed_forward"), ("weight_query", "weight_value"), ("feed_forward",)]
)
def test_merge_and_unmerge_equal_the_unmerged_forward(targets: tuple[str, ...]) -> None:
    model = tiny_model()
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, targets=targets))
    randomize_adapters(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    unmerged = model(IDS)
    assert merge_lora(model) == len(lora_layers(model))
    torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(IDS), unmerged, rtol=1e-5, atol=1e-5)
    for key, value in model.state_dict().items():  # the base weights are back (to float rounding)
        torch.testing.assert_close(value, before[key], rtol=0, atol=1e-6)


def test_remove_lora_gives_a_plain_model_with_the_merged_weights() -> None:
    model = tiny_model()
    apply_lora(model, LoRAConfig(rank=2))
    randomize_adapters(model)
    expected = model(IDS)
    plain = remove_lora(model)
    assert not lora_layers(plain)
    reloaded = SydsGPT(tiny_config())
    reloaded.load_state_dict(plain.state_dict())  # the base architecture's keys again
    torch.testing.assert_close(reloaded.eval()(IDS), expected, rtol=1e-5, atol=1e-5)


def test_training_mode_uses_the_update_too() -> None:
    """The fused QKV path reads raw weights; adapted attention layers must not take it."""
    model = tiny_model()
    apply_lora(model, LoRAConfig(rank=2, targets=("weight_query",)))
    randomize_adapters(model)
    model.eval()
    expected = model(IDS)
    model.train()  # dropout is 0 in the tiny config, so train mode computes the same
    torch.testing.assert_close(model(IDS), expected)
    assert not model.transformer_blocks[0].attention.kernels.fused_qkv


@pytest.mark.parametrize("rank", [1, 4])
def test_trainable_parameter_counts_are_exact(rank: int) -> None:
    model = tiny_model()
    total = sum(p.numel() for p in model.parameters())
    names = apply_lora(model, LoRAConfig(rank=rank))
    # Per block: 4 attention projections d -> d, r (d + d)
    # each; the feed-forward d -> 4d -> d, r (d + 4d) twice.
    per_block = 4 * rank * (D + D) + 2 * rank * (D + HIDDEN)
    assert count_trainable_parameters(model) == LAYERS * per_block
    assert len(names) == 6 * LAYERS and all(n.startswith("transformer_blocks.") for n in names)
    assert (
        sum(p.numel() for p in model.parameters()) == total + LAYERS * per_block
    )  # the base is all still there
    only_q_v = tiny_model()
    apply_lora(only_q_v, LoRAConfig(rank=rank, targets=("weight_query", "weight_value")))
    assert count_trainable_parameters(only_q_v) == LAYERS * 2 * rank * (D + D)


def test_the_vocabulary_head_is_not_a_target() -> None:
    """``output_projection`` names both the attention output
    and the model's head: only the blocks are searched."""
    model = tiny_model()
    names = apply_lora(model, LoRAConfig(targets=("output_projection",)))
    assert names == [f"transformer_blocks.{i}.attention.output_projection" for i in range(LAYERS)]
    assert isinstance(model.output_projection, nn.Linear) and not isinstance(
        model.output_projection, LoRALinear
    )


def test_bad_configs_and_targets_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="alpha"):
        LoRAConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match="no linear layer matches.*weight_query"):
        apply_lora(tiny_model(), LoRAConfig(targets=("attn",)))
    model = tiny_model()
    apply_lora(model)
    with pytest.raises(ValueError, match="already has LoRA"):
        apply_lora(model)


def test_only_the_adapter_is_saved_and_it_loads_onto_a_fresh_base(tmp_path: Path) -> None:
    base = tiny_model(seed=3)
    tuned = copy.deepcopy(base)
    config = LoRAConfig(rank=2, alpha=4.0, targets=("attention",))
    apply_lora(tuned, config)
    randomize_adapters(tuned)
    path = save_adapter(tmp_path / "adapter.safetensors", tuned, config, metadata={"note": "test"})
    tensors, info = read_adapter(path)
    assert set(tensors) == set(adapter_state_dict(tuned)) and all(
        "lora_" in name for name in tensors
    )
    assert (
        sum(t.numel() for t in tensors.values())
        == count_trainable_parameters(tuned)
        == LAYERS * 4 * 2 * (2 * D)
    )
    assert info["lora"] == config.to_dict() and info["note"] == "test"
    assert path.stat().st_size < 20_000  # kilobytes, not the whole model
    fresh = copy.deepcopy(base)
    assert load_adapter(fresh, path) == config
    torch.testing.assert_close(fresh.eval()(IDS), tuned.eval()(IDS))
    assert count_trainable_parameters(fresh) == count_trainable_parameters(tuned)


def test_an_adapter_for_another_model_is_refused(tmp_path: Path) -> None:
    tuned = tiny_model()
    apply_lora(tuned, LoRAConfig(rank=2))
    path = save_adapter(tmp_path / "a.safetensors", tuned, LoRAConfig(rank=2))
    wider = tiny_model(embedding_dim=32)
    with pytest.raises(ValueError, match="does not fit"):
        load_adapter(wider, path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable"):
        load_adapter(tiny_model(), tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        load_adapter(tiny_model(), tmp_path / "missing.safetensors")


def test_a_merged_adapter_is_not_saved(tmp_path: Path) -> None:
    model = tiny_model()
    apply_lora(model)
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge"):
        save_adapter(tmp_path / "a.safetensors", model, LoRAConfig())


def test_lora_trains_only_the_adapter() -> None:
    model = tiny_model()
    apply_lora(model, LoRAConfig(rank=2))
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(IDS).flatten(0, 1), IDS.flatten()).backward()
        optimizer.step()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())
    assert any(layer.lora_B.abs().sum() > 0 for layer in lora_layers(model).values())
