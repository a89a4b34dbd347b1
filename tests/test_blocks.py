"""Chapter 3: LayerNorm, GELU, FeedForward, the
pre-norm TransformerBlock, and why shortcuts matter."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import seeded_randn
import torch.nn.functional as F
from torch import nn

from sydsgpt.attention import KVCache
from sydsgpt.blocks import GELU, FeedForward, LayerNorm, TransformerBlock
from sydsgpt.config import Kernels, SydsGPTConfig


def block_config(emb_dim: int = 16, **overrides) -> SydsGPTConfig:
    """A block's sizes: ``emb_dim`` features, 4 heads, context 12 (a config also names a vocabulary
    and a depth, which a single block does not use)."""
    sizes = dict(vocab_size=1, embedding_dim=emb_dim, context_length=12, num_layers=1, num_heads=4)
    return SydsGPTConfig(**{**sizes, **overrides})


def make_block(
    attention: str = "sdpa", emb_dim: int = 16, fused_qkv: bool = True, **overrides
) -> TransformerBlock:
    torch.manual_seed(0)
    kernels = Kernels(attention=attention, fused_qkv=fused_qkv)
    return TransformerBlock(block_config(emb_dim, **overrides), kernels).eval()


# --- LayerNorm -----------------------------------------------------------------------------


def test_layer_norm_by_hand() -> None:
    # mean 2.5, biased variance 1.25 -> (x - 2.5) / sqrt(1.25 + eps)
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / math.sqrt(1.25 + 1e-5)
    assert torch.allclose(LayerNorm(4)(x), expected)


def test_layer_norm_gives_each_token_mean_zero_variance_one() -> None:
    out = LayerNorm(6)(seeded_randn(2, 5, 6) * 3 + 7)
    assert torch.allclose(out.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(out.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-4)


def test_layer_norm_equals_torch_layer_norm_values_and_gradients() -> None:
    ours, theirs = LayerNorm(6).double(), nn.LayerNorm(6, eps=1e-5).double()
    with torch.no_grad():
        ours.scale.copy_(seeded_randn(6, seed=1, dtype=torch.float64))
        ours.shift.copy_(seeded_randn(6, seed=2, dtype=torch.float64))
        theirs.weight.copy_(ours.scale)
        theirs.bias.copy_(ours.shift)
    x = seeded_randn(3, 4, 6, seed=3, dtype=torch.float64)
    upstream = seeded_randn(3, 4, 6, seed=4, dtype=torch.float64)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = ours(x1), theirs(x2)
    assert torch.allclose(y1, y2, atol=1e-12)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)
    assert torch.allclose(ours.scale.grad, theirs.weight.grad, atol=1e-10)
    assert torch.allclose(ours.shift.grad, theirs.bias.grad, atol=1e-10)


def test_layer_norm_wrong_width_is_a_clear_error() -> None:
    with pytest.raises(
        ValueError, match=r"built for 4 features.*last dimension is 5.*LayerNorm\(5\)"
    ):
        LayerNorm(4)(torch.zeros(2, 5))


# --- GELU -----------------------------------------------------------------------------------


def test_gelu_equals_torch_tanh_approximation_values_and_gradients() -> None:
    x = torch.linspace(-6, 6, 241, dtype=torch.float64, requires_grad=True)
    ours = GELU()(x)
    theirs = F.gelu(x, approximate="tanh")
    assert torch.allclose(ours, theirs, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    (g_theirs,) = torch.autograd.grad(theirs.sum(), x)
    assert torch.allclose(g_ours, g_theirs, atol=1e-12)


def test_gelu_is_the_tanh_approximation_not_the_exact_erf_form() -> None:
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    assert (GELU()(x) - F.gelu(x)).abs().max() > 1e-4
    assert GELU()(torch.tensor(0.0)) == 0.0


def test_gelu_keeps_the_shape() -> None:
    assert GELU()(torch.zeros(2, 3, 5)).shape == (2, 3, 5)


# --- FeedForward ----------------------------------------------------------------------------


def test_feed_forward_expands_four_times_and_keeps_the_shape() -> None:
    ff = FeedForward(8)
    first, act, second = ff.layers
    assert (first.in_features, first.out_features) == (8, 32)
    assert isinstance(act, GELU)
    assert (second.in_features, second.out_features) == (32, 8)
    x = seeded_randn(2, 3, 8)
    assert ff(x).shape == (2, 3, 8)
    # 8*32 + 32 + 32*8 + 8 = 8d^2 + 5d for d = 8
    assert sum(p.numel() for p in ff.parameters()) == 8 * 8**2 + 5 * 8


def test_feed_forward_treats_tokens_independently() -> None:
    ff = FeedForward(8)
    x = seeded_randn(1, 5, 8)
    whole = ff(x)
    one_by_one = torch.cat([ff(x[:, t : t + 1]) for t in range(5)], dim=1)
    assert torch.allclose(whole, one_by_one, atol=1e-6)


# --- TransformerBlock -----------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_block_keeps_the_shape(attention: str) -> None:
    x = seeded_randn(2, 5, 16)
    assert make_block(attention)(x).shape == (2, 5, 16)


def test_block_parameter_count_by_hand() -> None:
    # two LayerNorms 2*2d; Q, K, V 3*d^2 (+3d bias);
    # output projection d^2 + d; feed-forward 8d^2 + 5d
    for d, bias in [(16, False), (16, True), (768, False)]:
        block = TransformerBlock(block_config(d, qkv_bias=bias))
        expected = 4 * d + 3 * d * d + (3 * d if bias else 0) + d * d + d + 8 * d * d + 5 * d
        assert sum(p.numel() for p in block.parameters()) == expected
    assert expected == 12 * 768**2 + 10 * 768 == 7_085_568


def test_block_state_dict_names_match_the_original_project() -> None:
    prefixes = {name.split(".")[0] for name in make_block().state_dict()}
    assert prefixes == {"layer_norm1", "attention", "layer_norm2", "feed_forward"}
    assert isinstance(make_block().dropout, nn.Dropout)


def test_block_is_pre_norm() -> None:
    # The attention and feed-forward sublayers see layer-normalised inputs.
    block = make_block()
    seen: dict[str, torch.Tensor] = {}
    block.attention.register_forward_hook(
        lambda m, args, out: seen.__setitem__("attention", args[0])
    )
    block.feed_forward.register_forward_hook(
        lambda m, args, out: seen.__setitem__("feed_forward", args[0])
    )
    x = seeded_randn(2, 5, 16) * 4 + 3
    block(x)
    assert torch.allclose(seen["attention"], block.layer_norm1(x))
    after_attention = x + block.attention(block.layer_norm1(x))
    assert torch.allclose(seen["feed_forward"], block.layer_norm2(after_attention), atol=1e-6)


def test_block_with_silenced_sublayers_is_the_identity() -> None:
    # Zero the last linear layer of both branches: only the shortcut connections remain.
    block = make_block()
    with torch.no_grad():
        for linear in (block.attention.output_projection, block.feed_forward.layers[2]):
            linear.weight.zero_()
            linear.bias.zero_()
    x = seeded_randn(2, 5, 16)
    assert torch.equal(block(x), x)


def test_block_equals_its_two_residual_steps() -> None:
    block = make_block()
    x = seeded_randn(2, 5, 16)
    h = x + block.attention(block.layer_norm1(x))
    expected = h + block.feed_forward(block.layer_norm2(h))
    assert torch.allclose(block(x), expected, atol=1e-6)


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_block_is_causal(attention: str) -> None:
    block = make_block(attention)
    x = seeded_randn(1, 6, 16)
    changed = x.clone()
    changed[:, 3] = 0.0
    assert torch.equal(block(x)[:, :3], block(changed)[:, :3])


@pytest.mark.parametrize("attention", ["explicit", "sdpa"])
def test_block_with_kv_cache_equals_full_forward(attention: str) -> None:
    block = make_block(attention)
    x = seeded_randn(2, 6, 16)
    cache = KVCache(12)
    steps = [block(x[:, :2], kv_cache=cache)] + [
        block(x[:, t : t + 1], kv_cache=cache) for t in range(2, 6)
    ]
    assert torch.allclose(torch.cat(steps, dim=1), block(x), atol=1e-5)


def test_block_dropout_is_active_in_training_only() -> None:
    block = make_block(dropout=0.5)
    x = seeded_randn(2, 5, 16)
    assert torch.equal(block(x), block(x))
    block.train()
    assert not torch.allclose(block(x), block(x))


def test_block_passes_its_config_and_kernels_to_attention() -> None:
    block = make_block("explicit", qkv_bias=True, fused_qkv=False)
    assert block.attention.kernels.attention == "explicit"
    assert block.attention.weight_query.bias is not None
    assert block.attention.kernels.fused_qkv is False
    with pytest.raises(ValueError, match="must be divisible by"):
        TransformerBlock(block_config(10))


# --- why shortcut connections matter --------------------------------------------------------


def first_layer_gradient_norm(
    use_shortcut: bool, depth: int = 8, width: int = 16, seed: int = 0
) -> tuple[float, float]:
    """Gradient norms of the first and last layers'
    first weight in a stack of FeedForward layers."""
    torch.manual_seed(seed)
    layers = nn.ModuleList(FeedForward(width) for _ in range(depth))
    h = torch.randn(4, 8, width)
    for layer in layers:
        h = h + layer(h) if use_shortcut else layer(h)
    F.mse_loss(h, torch.randn(4, 8, width)).backward()
    norms = [layer.layers[0].weight.grad.norm().item() for layer in layers]
    return norms[0], norms[-1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shortcuts_keep_the_first_layer_gradient_alive(seed: int) -> None:
    # Measured over seeds 0-19 (depth 8, width 16): first-layer gradient norm with / without
    # shortcuts 2.5e5 to 1.1e6 (asserted > 1e4, margin 25x); without shortcuts first / last layer
    # at most 1.1e-4 (asserted < 1e-3); with shortcuts first / last at least 0.88 (asserted > 0.5).
    with_first, with_last = first_layer_gradient_norm(True, seed=seed)
    without_first, without_last = first_layer_gradient_norm(False, seed=seed)
    assert with_first > 1e4 * without_first
    assert without_first < 1e-3 * without_last  # it vanishes on the way down ...
    assert with_first > 0.5 * with_last  # ... unless the shortcuts carry it
