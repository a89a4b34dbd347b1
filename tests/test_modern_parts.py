"""Chapter 7's parts, each against its formula and against transformers' reference code:
RMSNorm, SwiGLU, RoPE (relative positions, Llama 3 scaling), GQA / MQA, QK-norm."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sydsgpt.attention import MultiHeadAttention
from sydsgpt.blocks import LayerNorm, TransformerBlock, make_norm
from sydsgpt.config import Kernels, SydsGPTConfig
from sydsgpt.gqa import repeat_kv
from sydsgpt.norms import RMSNorm
from sydsgpt.rope import RotaryEmbedding, apply_rope, rope_frequencies, rope_tables, rotate_half
from sydsgpt.swiglu import SwiGLUFeedForward, swiglu_hidden_dim

GEN = torch.Generator().manual_seed(0)


def config(d: int, heads: int, **chapter7) -> SydsGPTConfig:
    """A model config of width ``d`` (context 16) with chapter 7's switches."""
    return SydsGPTConfig(
        vocab_size=1, embedding_dim=d, context_length=16, num_layers=1, num_heads=heads, **chapter7
    )


def attention(d: int, heads: int, impl: str = "explicit", **chapter7) -> MultiHeadAttention:
    """The attention layer a model with those switches builds."""
    return MultiHeadAttention.from_config(config(d, heads, **chapter7), Kernels(attention=impl))


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


# ------------------------------------------------------------------------- RMSNorm


def test_rmsnorm_by_hand_and_against_torch() -> None:
    x = torch.tensor([[3.0, -4.0, 0.0, 0.0]])  # mean of squares 25/4: root 2.5
    torch.testing.assert_close(RMSNorm(4, eps=0.0)(x), torch.tensor([[1.2, -1.6, 0.0, 0.0]]))
    norm = RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.scale.copy_(randn(6))
    x = randn(2, 3, 6) * 3 + 1
    reference = torch.nn.RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        reference.weight.copy_(norm.scale)
    torch.testing.assert_close(norm(x), reference(x))
    assert not torch.allclose(norm(x), LayerNorm(6)(x), atol=1e-2)  # it is not a layer norm
    with pytest.raises(ValueError, match="RMSNorm was built for 6"):
        norm(randn(2, 5))
    with pytest.raises(ValueError, match="norm'\\] must be one of \\('layernorm', 'rmsnorm'"):
        config(6, 1, norm="batchnorm")
    assert isinstance(make_norm(config(6, 1, norm="rmsnorm")), RMSNorm)


def test_rmsnorm_in_bfloat16_computes_the_mean_in_float32() -> None:
    x = (randn(4, 64) * 100).bfloat16()
    out = RMSNorm(64).to(torch.bfloat16)(x)
    assert out.dtype == torch.bfloat16
    by_hand = (
        x.float() / x.float().pow(2).mean(dim=-1, keepdim=True).add(1e-5).sqrt()
    )  # float32 all the way
    torch.testing.assert_close(out, by_hand.bfloat16(), atol=0, rtol=0)


# ------------------------------------------------------------------------- SwiGLU


def test_swiglu_formula_and_parameter_matching() -> None:
    ff = SwiGLUFeedForward(8, 16)
    x = randn(2, 3, 8)
    expected = ff.down_projection(F.silu(ff.gate_projection(x)) * ff.up_projection(x))
    torch.testing.assert_close(ff(x), expected)
    assert sum(p.numel() for p in ff.parameters()) == 3 * 8 * 16
    for d in (64, 128, 256, 768, 1000):
        h = swiglu_hidden_dim(d)
        assert h % 8 == 0 and 3 * d * h >= 8 * d * d > 3 * d * (
            h - 8
        )  # smallest multiple of 8 with >= GELU's weights
    assert swiglu_hidden_dim(96) == 256


# ------------------------------------------------------------------------- RoPE


def test_rope_rotates_each_pair_by_position_times_frequency() -> None:
    d = 4
    freqs = rope_frequencies(d, base=100.0)  # theta_0 = 1, theta_1 = 100 ** (-1/2) = 0.1
    torch.testing.assert_close(freqs, torch.tensor([1.0, 0.1]))
    x = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(
        1, 1, 1, d
    )  # pair 0 = (x0, x2) = (1, 0); pair 1 = (x1, x3) = (0, 1)
    m = 3
    out = apply_rope(x, rope_tables(torch.tensor([m]), freqs)).flatten()
    pair0 = (math.cos(3.0), math.sin(3.0))  # (1, 0) turned by 3 rad
    pair1 = (-math.sin(0.3), math.cos(0.3))  # (0, 1) turned by 0.3 rad
    torch.testing.assert_close(out, torch.tensor([pair0[0], pair1[0], pair0[1], pair1[1]]))
    torch.testing.assert_close(
        rotate_half(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.tensor([-3.0, -4.0, 1.0, 2.0])
    )


def test_rope_scores_depend_only_on_relative_position() -> None:
    d, freqs = 16, rope_frequencies(16)
    q, k = randn(1, 1, 1, d), randn(1, 1, 1, d)

    def score(m: int, n: int) -> float:
        qm = apply_rope(q, rope_tables(torch.tensor([m]), freqs))
        kn = apply_rope(k, rope_tables(torch.tensor([n]), freqs))
        return (qm * kn).sum().item()

    assert (
        score(5, 2)
        == pytest.approx(score(105, 102), abs=1e-4)
        == pytest.approx(score(3, 0), abs=1e-4)
    )
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-2)
    rotated = apply_rope(q.expand(1, 1, 50, d), rope_tables(torch.arange(50), freqs))
    torch.testing.assert_close(
        rotated.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 50)
    )  # rotations keep lengths
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_frequencies(7)
    with pytest.raises(ValueError, match="do not fit"):
        apply_rope(randn(1, 1, 3, d), rope_tables(torch.arange(4), freqs))


def test_rope_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    scaling = {
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_context_length": 8192,
    }
    config = transformers.LlamaConfig(
        hidden_size=2048,
        num_attention_heads=32,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            **{
                k if k != "original_context_length" else "original_max_position_embeddings": v
                for k, v in scaling.items()
            },
        },
    )
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    ours = rope_frequencies(64, 500000.0, scaling)
    torch.testing.assert_close(ours, theirs.float())
    assert not torch.allclose(
        ours, rope_frequencies(64, 500000.0)
    )  # the scaling changes the slow pairs
    assert torch.equal(ours[:4], rope_frequencies(64, 500000.0)[:4])  # and keeps the fast ones
    q, k = randn(2, 4, 9, 64), randn(2, 2, 9, 64)
    cos, sin = RotaryEmbedding(64, 500000.0, scaling)(torch.arange(9))
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos[None], sin[None])
    torch.testing.assert_close(apply_rope(q, (cos, sin)), q_hf)
    torch.testing.assert_close(apply_rope(k, (cos, sin)), k_hf)


# ------------------------------------------------------------------------- GQA, MQA, QK-norm


def test_repeat_kv_order_matches_transformers() -> None:
    pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import repeat_kv as hf_repeat_kv

    kv = randn(2, 3, 5, 4)
    torch.testing.assert_close(repeat_kv(kv, 4), hf_repeat_kv(kv, 4))
    assert torch.equal(repeat_kv(kv, 2)[:, 1], kv[:, 0]) and torch.equal(
        repeat_kv(kv, 2)[:, 2], kv[:, 1]
    )
    assert repeat_kv(kv, 1) is kv


@pytest.mark.parametrize("impl", ["explicit", "sdpa"])
@pytest.mark.parametrize("num_kv_heads", [1, 2])
def test_gqa_equals_mha_with_shared_key_value_weights(impl: str, num_kv_heads: int) -> None:
    """GQA is multi-head attention whose query heads of a group share one key/value head."""
    torch.manual_seed(0)
    heads, head_dim, d = 4, 6, 24
    gqa = attention(d, heads, impl, num_kv_heads=num_kv_heads).eval()
    mha = attention(d, heads, impl).eval()
    group = heads // num_kv_heads
    with torch.no_grad():
        mha.weight_query.weight.copy_(gqa.weight_query.weight)
        mha.output_projection.load_state_dict(gqa.output_projection.state_dict())
        for ours, theirs in (
            (gqa.weight_key, mha.weight_key),
            (gqa.weight_value, mha.weight_value),
        ):
            per_head = ours.weight.view(num_kv_heads, head_dim, d)
            theirs.weight.copy_(per_head.repeat_interleave(group, dim=0).reshape(d, d))
    x = randn(2, 10, d)
    torch.testing.assert_close(gqa(x), mha(x), atol=1e-6, rtol=0)
    assert gqa.weight_key.weight.shape == (num_kv_heads * head_dim, d)
    with pytest.raises(ValueError, match="multiple of config\\['num_kv_heads'\\]"):
        attention(d, heads, num_kv_heads=3)


def test_qk_norm_normalises_each_head_and_bounds_the_scores() -> None:
    torch.manual_seed(0)
    attn = attention(16, 2, qk_norm=True).eval()
    assert attn.q_norm.scale.shape == (8,) and attn.k_norm.scale.shape == (8,)
    seen = {}
    attn.q_norm.register_forward_hook(lambda m, i, o: seen.setdefault("q", o))
    attn(randn(1, 5, 16) * 1000)
    rms = seen["q"].pow(2).mean(dim=-1).sqrt()
    torch.testing.assert_close(
        rms, torch.ones_like(rms), atol=1e-3, rtol=0
    )  # whatever the input's scale


def test_block_switches_build_the_right_parts() -> None:
    block = TransformerBlock(
        config(
            32,
            4,
            norm="rmsnorm",
            ffn="swiglu",
            linear_bias=False,
            num_kv_heads=2,
            head_dim=16,
            qk_norm=True,
        )
    )
    assert isinstance(block.layer_norm1, RMSNorm) and isinstance(
        block.feed_forward, SwiGLUFeedForward
    )
    assert (
        block.attention.output_projection.bias is None
        and block.attention.weight_query.weight.shape == (64, 32)
    )
    assert block.feed_forward.up_projection.weight.shape == (swiglu_hidden_dim(32), 32)
    rope = RotaryEmbedding(16)(torch.arange(7))
    assert block(randn(2, 7, 32), rope=rope).shape == (2, 7, 32)
