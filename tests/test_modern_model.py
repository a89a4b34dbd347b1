"""The one SydsGPT with chapter 7's switches: config validation, parameter and FLOP counts
for every variant, the GPT-2 path unchanged, the KV cache (tokens and memory), presets, CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from helpers import tiny_config

from sydsgpt.generate import generate, kv_cache_bytes
from sydsgpt.config import Kernels
from sydsgpt.model import SydsGPT, SydsGPTConfig, count_parameters, flops_per_token
from sydsgpt.presets import PRESETS, get_preset

TINY = tiny_config(embedding_dim=32, context_length=24, qkv_bias=False)
MODERN = {
    "norm": "rmsnorm",
    "ffn": "swiglu",
    "positions": "rope",
    "linear_bias": False,
    "num_kv_heads": 2,
    "qk_norm": True,
}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_kv_heads": 3}, "must be a multiple of config\\['num_kv_heads'\\]"),
        ({"positions": "rope", "head_dim": 7}, "head dimension must be even"),
        (
            {"positions": "rope", "num_heads": 32},
            "head dimension must be even",
        ),  # 32 / 32 = 1 feature per head
        ({"norm": "batchnorm"}, "config\\['norm'\\] must be one of"),
        ({"ffn": "relu"}, "config\\['ffn'\\] must be one of"),
        ({"positions": "alibi"}, "config\\['positions'\\] must be one of"),
        (
            {
                "rope_scaling": {
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_context_length": 16,
                }
            },
            "positions='rope'",
        ),
        ({"positions": "rope", "rope_scaling": {"factor": 8.0}}, "exactly the keys"),
        ({"num_kv_heads": 0}, "num_kv_heads'\\] must be a positive integer"),
        ({"norm_eps": 0}, "norm_eps'\\] must be a finite number > 0"),
        ({"qk_norm": "yes"}, "True or False"),
        ({"embedding_dim": 30}, "or set config\\['head_dim'\\]"),
    ],
)
def test_config_errors_say_what_to_fix(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        SydsGPTConfig.from_dict({**TINY, **overrides})


def test_head_dim_lifts_the_divisibility_rule() -> None:
    model = SydsGPT({**TINY, "embedding_dim": 30, "head_dim": 8, **MODERN})
    assert model.transformer_blocks[0].attention.weight_query.weight.shape == (32, 30)
    assert model(torch.randint(0, 61, (1, 5))).shape == (1, 5, 61)


VARIANTS = [
    dict(
        zip(
            ("norm", "ffn", "positions", "linear_bias", "num_kv_heads", "qk_norm", "tie_weights"),
            combo,
        )
    )
    for combo in itertools.product(
        ("layernorm", "rmsnorm"),
        ("gelu", "swiglu"),
        ("learned", "rope"),
        (True, False),
        (None, 1),
        (False, True),
        (True, False),
    )
]


@pytest.mark.parametrize("variant", VARIANTS[::5] + [VARIANTS[-1]], ids=str)
def test_parameter_count_formula_for_every_kind_of_part(variant) -> None:
    config = {**TINY, **variant}
    model = SydsGPT(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())
    no_pos = count_parameters(model, include_position=False)
    assert no_pos == count_parameters(config, include_position=False)
    assert (no_pos < count_parameters(model)) == (variant["positions"] == "learned")


def test_gpt2_path_is_unchanged() -> None:
    """The default config builds GPT-2's modules under
    the original names, with the original counts."""
    with torch.device("meta"):
        model = SydsGPT(get_preset("gpt2-small"))
    assert count_parameters(model) == 124_439_808
    assert (
        flops_per_token(get_preset("gpt2-small"), training=False)
        == 2 * (12 * 12 * 768**2 + 50257 * 768) + 4 * 12 * 1024 * 768
    )
    names = set(SydsGPT(TINY).state_dict())
    assert {
        "position_embedding.weight",
        "transformer_blocks.0.layer_norm1.shift",
        "transformer_blocks.0.feed_forward.layers.0.bias",
        "transformer_blocks.0.attention.output_projection.bias",
    } <= names
    assert not any("q_norm" in n or "rope" in n or "gate" in n for n in names)
    modern = set(SydsGPT({**TINY, **MODERN}).state_dict())
    assert (
        "position_embedding.weight" not in modern
        and "transformer_blocks.1.attention.k_norm.scale" in modern
    )


@pytest.mark.parametrize("kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_kv_cache_bytes_formula_matches_the_cache_tensors(kv_heads: int) -> None:
    config = {**TINY, **MODERN, "num_kv_heads": kv_heads, "head_dim": 8}
    model = SydsGPT(config).eval()
    cache = model.make_kv_cache(preallocate=False)
    with torch.no_grad():
        model(torch.randint(0, 61, (3, 10)), kv_cache=cache)
    measured = sum(t.numel() * t.element_size() for layer in cache for t in (layer._k, layer._v))
    assert measured == kv_cache_bytes(config, num_tokens=10, batch_size=3)
    assert (
        kv_cache_bytes(config, num_tokens=1) == 2 * 2 * kv_heads * 8 * 4
    )  # layers, K and V, heads, head_dim, float32


def test_kv_cache_bytes_of_the_real_shapes() -> None:
    per_token = {
        name: kv_cache_bytes(get_preset(name), num_tokens=1, bytes_per_value=2)
        for name in ("llama3.2-1b", "qwen3-0.6b")
    }
    assert per_token == {"llama3.2-1b": 2 * 16 * 8 * 64 * 2, "qwen3-0.6b": 2 * 28 * 8 * 128 * 2}
    mha = kv_cache_bytes(
        get_preset("llama3.2-1b", num_kv_heads=None), num_tokens=1, bytes_per_value=2
    )
    assert mha == 4 * per_token["llama3.2-1b"]


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_cached_generation_equals_uncached_past_the_context_window(attention: str) -> None:
    torch.manual_seed(0)
    model = SydsGPT({**TINY, **MODERN}, Kernels(attention=attention)).eval()
    prompt = torch.randint(0, 61, (2, 6))
    uncached = generate(model, prompt, 22, use_cache=False)  # 28 tokens: the 24-token window slides
    assert torch.equal(generate(model, prompt, 22, use_cache=True), uncached)
    assert torch.equal(generate(model, prompt, 22, use_cache=True, preallocate=False), uncached)


def test_modern_model_trains_and_survives_a_checkpoint(tmp_path) -> None:
    from sydsgpt.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = SydsGPT({**TINY, **MODERN, "rope_scaling": None})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 61, (4, 12))
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(
            model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    save_checkpoint(tmp_path / "c.pt", model, opt)
    state = load_checkpoint(tmp_path / "c.pt")
    again = SydsGPT(state["config"])
    again.load_state_dict(state["model"])
    assert torch.equal(again.eval()(ids), model.eval()(ids))


def test_modern_presets_are_valid_and_one_dict() -> None:
    from sydsgpt.presets import MODERN_PRESETS

    assert {"llama3.2-1b", "qwen3-0.6b", "book-modern"} <= set(MODERN_PRESETS) <= set(PRESETS)
    for name in MODERN_PRESETS:
        cfg = SydsGPTConfig.from_dict(get_preset(name))
        assert cfg.positions == "rope" and cfg.norm == "rmsnorm" and cfg.ffn == "swiglu"
    assert json.loads(json.dumps(get_preset("llama3.2-1b")))["rope_scaling"]["factor"] == 32.0
    book, modern = (
        count_parameters(get_preset("gpt2-mini")),
        count_parameters(get_preset("book-modern")),
    )
    assert abs(book - modern) / book < 0.03  # the CPU-sized modern model is gpt2-mini's size


def test_gpt2_export_refuses_a_modern_model() -> None:
    from sydsgpt.gpt2_weights import sydsgpt_config_to_gpt2

    sydsgpt_config_to_gpt2(get_preset("gpt2-small"))  # GPT-2 itself is fine
    with pytest.raises(ValueError, match="positions='rope'.*export_hf_weights"):
        sydsgpt_config_to_gpt2(get_preset("book-modern"))
    with pytest.raises(ValueError, match="num_kv_heads=1"):
        sydsgpt_config_to_gpt2({**get_preset("gpt2-small"), "num_kv_heads": 1})


def test_fast_paths_compute_the_same_modern_model() -> None:
    """SDPA vs explicit attention, fused vs separate
    Q/K/V, a padded vocabulary, the decoding layout."""
    from sydsgpt.generate import use_decoding_layout

    config = {**TINY, **MODERN}
    plain_kernels = {"attention": "explicit", "fused_qkv": False}
    torch.manual_seed(0)
    plain = SydsGPT(config, Kernels(**plain_kernels)).eval()
    ids = torch.randint(0, 61, (2, 12))
    expected = plain(ids)
    for switches in ({"attention": "sdpa"}, {"fused_qkv": True}, {"pad_vocab_multiple": 64}):
        fast = SydsGPT(config, Kernels(**{**plain_kernels, **switches}))
        fast.load_state_dict(plain.state_dict())  # any vocabulary padding loads
        fast.eval()
        with torch.enable_grad():  # the fused product runs while gradients are recorded
            torch.testing.assert_close(fast(ids), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(use_decoding_layout(plain)(ids), expected, atol=1e-5, rtol=0)
