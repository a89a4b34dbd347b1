"""The full model: config validation, presets and their sizes, FLOPs, vocabulary padding,
greedy generation with cropping, and checkpoints in the original project's layout."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY, tiny_config, tiny_model
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from sydsgpt.model import (
    SydsGPT,
    SydsGPTConfig,
    count_parameters,
    flops_per_token,
    generate_simple,
    model_memory_bytes,
)
from sydsgpt.checkpoint import load_weights
from sydsgpt.config import Kernels
from sydsgpt.presets import PRESETS, get_preset


# ------------------------------------------------------------------------- forward


def test_forward_shape_and_tied_head() -> None:
    ids = torch.randint(0, 61, (3, 7))
    assert tiny_model()(ids).shape == (3, 7, 61)
    tied = tiny_model(tie_weights=True)
    assert tied.output_projection.weight is tied.token_embedding.weight
    untied = tiny_model()
    assert untied.output_projection.weight.data_ptr() != untied.token_embedding.weight.data_ptr()
    assert tied(ids, last_only=True).shape == (3, 1, 61)
    torch.testing.assert_close(tied(ids, last_only=True), tied(ids)[:, -1:])


def test_forward_rejects_bad_input() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="shape \\(batch, tokens\\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match="exceeds context_length=12"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_dropout_only_in_training() -> None:
    model = tiny_model(dropout=0.5)
    ids = torch.randint(0, 61, (2, 9))
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_kv_cache_matches_full_forward() -> None:
    model = tiny_model()
    ids = torch.randint(0, 61, (2, 10))
    cache = model.make_kv_cache()
    steps = [model(ids[:, :6], kv_cache=cache)] + [
        model(ids[:, t : t + 1], kv_cache=cache) for t in range(6, 10)
    ]
    torch.testing.assert_close(torch.cat(steps, dim=1), model(ids), atol=1e-5, rtol=1e-5)
    model(torch.zeros(2, 2, dtype=torch.long), kv_cache=cache)  # 12 positions: full
    with pytest.raises(ValueError, match="exceeds context_length"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)


# ------------------------------------------------------------------------- config validation


def test_config_missing_key() -> None:
    config = {k: v for k, v in TINY.items() if k != "num_heads"}
    with pytest.raises(ValueError, match="missing required config key\\(s\\) \\['num_heads'\\]"):
        SydsGPT(config)


def test_config_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown config key\\(s\\) \\['emb_dim'\\]"):
        SydsGPT({**TINY, "emb_dim": 16})


@pytest.mark.parametrize(
    "key", ["vocab_size", "embedding_dim", "context_length", "num_layers", "num_heads"]
)
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_config_non_positive_sizes(key: str, value) -> None:
    with pytest.raises(ValueError, match=f"config\\['{key}'\\] must be a positive integer"):
        SydsGPTConfig.from_dict({**TINY, key: value})


def test_config_heads_must_divide_dim() -> None:
    with pytest.raises(
        ValueError, match="\\(16\\) must be divisible by config\\['num_heads'\\] \\(3\\)"
    ):
        SydsGPTConfig.from_dict({**TINY, "num_heads": 3})


@pytest.mark.parametrize("dropout", [1.0, -0.1, "0.1", None, True])
def test_config_bad_dropout(dropout) -> None:
    with pytest.raises(ValueError, match="dropout'\\] must be a finite number in \\[0, 1\\)"):
        SydsGPTConfig.from_dict({**TINY, "dropout": dropout})


@pytest.mark.parametrize("key", ["attention", "fused_qkv", "pad_vocab_multiple"])
def test_kernel_switches_are_not_config_keys(key: str) -> None:
    with pytest.raises(ValueError, match=f"choose kernels, not the architecture.*Kernels\\({key}="):
        SydsGPTConfig.from_dict({**TINY, key: Kernels.__dataclass_fields__[key].default})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attention": "flash"}, "Kernels.attention must be one of \\('explicit', 'sdpa'\\)"),
        ({"fused_qkv": "yes"}, "Kernels.fused_qkv must be True or False"),
        ({"pad_vocab_multiple": 0}, "Kernels.pad_vocab_multiple must be a positive integer"),
    ],
)
def test_kernels_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Kernels(**changes)


@pytest.mark.parametrize("key", ["qkv_bias", "tie_weights", "linear_bias", "qk_norm"])
def test_config_switches_must_be_bool(key: str) -> None:
    with pytest.raises(ValueError, match=f"config\\['{key}'\\] must be True or False"):
        SydsGPTConfig.from_dict({**TINY, key: "yes"})


def test_config_not_a_dict() -> None:
    with pytest.raises(TypeError, match="config must be a dict"):
        SydsGPT([("vocab_size", 10)])


def test_config_round_trip_and_presets() -> None:
    model = tiny_model(tie_weights=True)
    assert SydsGPT(model.config).config == model.config
    assert get_preset("gpt2-small", dropout=0.0)["dropout"] == 0.0
    with pytest.raises(ValueError, match="unknown preset 'gpt3'"):
        get_preset("gpt3")
    with pytest.raises(ValueError, match="num_heads"):
        get_preset("gpt2-mini", num_heads=5)
    with pytest.raises(
        ValueError, match="unknown preset 'book'"
    ):  # gpt2-mini's first name, gone in 0.x
        get_preset("book")


# ------------------------------------------------------------------------- sizes


def _numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_weights": True},
        {"qkv_bias": False},
        {"ffn": "swiglu", "norm": "rmsnorm"},
        {"positions": "rope", "num_kv_heads": 2, "qk_norm": True, "linear_bias": False},
    ],
)
def test_count_parameters_matches_model(overrides: dict) -> None:
    model = tiny_model(**overrides)
    if model.position_embedding is None:  # RoPE: no position embedding to leave out
        assert count_parameters(model.config, include_position=False) == count_parameters(
            model.config
        )
        return
    assert count_parameters(model.config) == _numel(model) == count_parameters(model)
    no_pos = _numel(model) - model.position_embedding.weight.numel()
    assert (
        count_parameters(model.config, include_position=False)
        == no_pos
        == count_parameters(model, include_position=False)
    )


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_count_parameters_book_and_gpt2_small_instantiated() -> None:
    assert count_parameters(PRESETS["gpt2-mini"]) == _numel(SydsGPT(PRESETS["gpt2-mini"]))
    assert (
        count_parameters(PRESETS["gpt2-small"])
        == _numel(SydsGPT(PRESETS["gpt2-small"]))
        == 124_439_808
    )


GPT2_SIZES = {  # preset: (Hugging Face config, size in the GPT-2 paper's model names, millions)
    "gpt2-small": ({}, 124),
    "gpt2-medium": ({"n_embd": 1024, "n_layer": 24, "n_head": 16}, 355),
    "gpt2-large": ({"n_embd": 1280, "n_layer": 36, "n_head": 20}, 774),
    "gpt2-xl": ({"n_embd": 1600, "n_layer": 48, "n_head": 25}, 1558),
}


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("preset", sorted(GPT2_SIZES))
def test_count_parameters_equals_transformers_gpt2(preset: str) -> None:
    transformers = pytest.importorskip("transformers")
    hf_config, millions = GPT2_SIZES[preset]
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**hf_config))
        ours = SydsGPT(PRESETS[preset])
    expected = _numel(hf_model)
    assert count_parameters(PRESETS[preset]) == _numel(ours) == expected
    assert round(expected / 1e6) == millions


def test_model_memory_bytes() -> None:
    model = tiny_model(tie_weights=True)
    n = count_parameters(model.config)
    assert model_memory_bytes(model.config) == 4 * n == model_memory_bytes(model, torch.float32)
    bf16 = model.to(torch.bfloat16)
    assert (
        model_memory_bytes(model.config, torch.bfloat16)
        == sum(p.numel() * p.element_size() for p in bf16.parameters())
        == 2 * n
    )
    assert model_memory_bytes(PRESETS["gpt2-small"], 2) == 2 * 124_439_808


def _counted_flops_per_token(model: SydsGPT, ids: torch.Tensor, backward: bool) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(ids)
        if backward:
            logits.sum().backward()
    return counter.get_total_flops() / ids.numel()


@pytest.mark.parametrize("backward", [False, True])
def test_flops_per_token_matches_flop_counter(backward: bool) -> None:
    """PyTorch's FlopCounterMode counts every matrix product (mm, addmm, bmm) of the
    explicit attention path; the estimate must agree exactly (tolerance 0)."""
    config = dict(TINY)  # (a padded vocabulary adds FLOPs no logit needs; they are not counted)
    model = SydsGPT(config, Kernels(attention="explicit"))
    for seq_len in (5, 12):
        ids = torch.randint(0, 61, (2, seq_len))
        counted = _counted_flops_per_token(model, ids, backward)
        assert flops_per_token(config, seq_len=seq_len, training=backward) == counted
    assert flops_per_token(config) == flops_per_token(config, seq_len=12)


def test_flops_per_token_gpt2_small_rule_of_thumb() -> None:
    """For GPT-2 small at T=1024, 6N (N = non-embedding matmul weights + head) dominates."""
    n_matmul = 12 * 12 * 768**2 + 50257 * 768
    assert flops_per_token(PRESETS["gpt2-small"]) == 6 * n_matmul + 12 * 12 * 1024 * 768


# ------------------------------------------------------------------------- vocabulary padding


def test_pad_vocab_multiple_keeps_logits_and_loss() -> None:
    plain = tiny_model(seed=1)
    padded = SydsGPT(TINY, Kernels(pad_vocab_multiple=64)).eval()
    assert padded.token_embedding.weight.shape[0] == padded.output_projection.weight.shape[0] == 64
    state = plain.state_dict()
    for name in ("token_embedding.weight", "output_projection.weight"):
        extra = torch.randn(64 - 61, TINY["embedding_dim"])  # whatever the padded rows hold
        state[name] = torch.cat([state[name], extra])
    padded.load_state_dict(state)
    ids = torch.randint(0, 61, (2, 12))
    targets = torch.randint(0, 61, (2, 12))
    logits = padded(ids)
    assert logits.shape == (2, 12, 61)
    torch.testing.assert_close(logits, plain(ids))
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss, F.cross_entropy(plain(ids).flatten(0, 1), targets.flatten()))


# ------------------------------------------------------------------------- generate_simple


def test_generate_simple_is_greedy() -> None:
    model = tiny_model(tie_weights=True)
    prompt = torch.randint(0, 61, (2, 4))
    out = generate_simple(model, prompt, max_new_tokens=5, context_len=12)
    assert out.shape == (2, 9)
    assert torch.equal(out[:, :4], prompt)
    ids = prompt
    for _ in range(5):
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)
    assert torch.equal(generate_simple(model, prompt, 0, 12), prompt)


def test_generate_simple_crops_to_context() -> None:
    model = tiny_model(tie_weights=True)
    torch.manual_seed(3)
    tail = torch.randint(0, 61, (1, 12))
    long_a = torch.cat([torch.randint(0, 61, (1, 8)), tail], dim=1)  # 20 tokens > context_length 12
    long_b = torch.cat([torch.randint(0, 61, (1, 3)), tail], dim=1)
    out_a = generate_simple(model, long_a, max_new_tokens=6, context_len=12)
    out_b = generate_simple(model, long_b, max_new_tokens=6, context_len=12)
    assert out_a.shape == (1, 26)
    assert torch.equal(out_a[:, -6:], out_b[:, -6:])  # only the last 12 tokens matter
    assert torch.equal(out_a[:, -6:], generate_simple(model, tail, 6, 12)[:, -6:])
    # a smaller window is a different model input: context_len is really used
    narrow = generate_simple(model, long_a, max_new_tokens=6, context_len=2)
    window = long_a[:, -2:]
    assert narrow[0, 20].item() == model(window)[0, -1].argmax().item()


def test_generate_simple_errors() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_simple(model, torch.zeros(1, 2, dtype=torch.long), -1, 12)
    with pytest.raises(ValueError, match="context_len"):
        generate_simple(model, torch.zeros(1, 2, dtype=torch.long), 1, 0)
    with pytest.raises(ValueError, match="unsqueeze"):
        generate_simple(model, torch.zeros(2, dtype=torch.long), 1, 12)


# ------------------------------------------------------------------------- checkpoints

ORIGINAL_CONFIG = tiny_config(dropout=0.1, qkv_bias=False)  # the original project's seven keys only


def test_checkpoint_pattern_of_the_original_project(tmp_path) -> None:
    torch.manual_seed(0)
    model = SydsGPT(ORIGINAL_CONFIG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 61, (2, 12))
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": ORIGINAL_CONFIG},
        path,
    )

    ckpt = torch.load(path, weights_only=True)
    fresh = SydsGPT(ckpt["config"])
    fresh.load_state_dict(ckpt["model"])
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_opt.load_state_dict(ckpt["optimizer"])
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    torch.testing.assert_close(fresh.eval()(ids), model.eval()(ids))


def test_state_dict_in_the_original_layout_loads() -> None:
    """The original project stored a ``causal_mask`` buffer per layer and an untied head:
    checkpoint loading (sydsgpt.checkpoint.load_weights) drops the masks."""
    torch.manual_seed(0)
    source = SydsGPT(ORIGINAL_CONFIG).eval()
    state = dict(source.state_dict())
    ctx = ORIGINAL_CONFIG["context_length"]
    for i in range(ORIGINAL_CONFIG["num_layers"]):
        state[f"transformer_blocks.{i}.attention.causal_mask"] = torch.triu(
            torch.ones(ctx, ctx), diagonal=1
        )
    assert "output_projection.weight" in state and "token_embedding.weight" in state
    fresh = SydsGPT(ORIGINAL_CONFIG).eval()
    with pytest.raises(RuntimeError, match="causal_mask"):  # not a weight of this model ...
        fresh.load_state_dict(state, strict=True)
    load_weights(fresh, state)  # ... but a checkpoint of the original project loads
    ids = torch.randint(0, 61, (1, 10))
    torch.testing.assert_close(fresh(ids), source(ids))


def test_a_checkpoint_loads_whatever_vocabulary_padding_it_was_saved_with() -> None:
    padded = SydsGPT(TINY, Kernels(pad_vocab_multiple=64)).eval()
    plain = SydsGPT(TINY).eval()
    load_weights(plain, padded.state_dict())
    ids = torch.randint(0, 61, (2, 12))
    torch.testing.assert_close(plain(ids), padded(ids))
    load_weights(padded, plain.state_dict())  # and back: the missing rows are zeros
    assert padded.token_embedding.weight.shape[0] == 64
    assert not padded.token_embedding.weight[61:].any()
    torch.testing.assert_close(padded(ids), plain(ids))


def test_tied_model_stays_tied_after_loading() -> None:
    source = tiny_model(seed=4, tie_weights=True)
    fresh = tiny_model(seed=5, tie_weights=True)
    fresh.load_state_dict(source.state_dict())
    assert fresh.output_projection.weight is fresh.token_embedding.weight
    torch.testing.assert_close(fresh.token_embedding.weight, source.token_embedding.weight)


# ------------------------------------------------------------------------- one config object


def test_model_config_is_one_object_that_reads_like_the_original_dict() -> None:
    model = tiny_model()
    config = model.config
    assert isinstance(config, SydsGPTConfig)
    assert config["num_layers"] == config.num_layers == 2 and config.get("missing", 7) == 7
    assert (
        dict(config) == config.to_dict() and config == config.to_dict()
    )  # compares equal to its dict
    assert config != {**config.to_dict(), "num_layers": 3}
    with pytest.raises(KeyError):
        config["emb_dim"]
    assert not hasattr(model, "cfg")  # one name: model.config
    assert config.replace(num_layers=1).num_layers == 1 and config.num_layers == 2


def test_generate_simple_takes_the_old_argument_name_and_defaults_to_the_model_context() -> None:
    model = tiny_model()
    ids = torch.tensor([[1, 2, 3]])
    expected = generate_simple(model, ids, 4, 12)
    assert torch.equal(generate_simple(model, ids, 4, context_len=12), expected)
    assert torch.equal(generate_simple(model, ids, 4), expected)
    with pytest.raises(TypeError, match="not both"):
        generate_simple(model, ids, 4, 12, context_len=6)
