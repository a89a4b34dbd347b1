"""Chapter 2: the causal mask, scaled dot-product attention, multi-head attention, KV cache."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import seeded_randn
from torch import nn

from sydsgpt.attention import KVCache, MultiHeadAttention, causal_mask, scaled_dot_product_attention
from sydsgpt.config import Kernels

IMPLS = ("explicit", "sdpa")


def make_mha(
    impl: str = "explicit", seed: int = 0, fused_qkv: bool = True, **overrides
) -> MultiHeadAttention:
    """A small layer: 8 features in, 12 out, 3 heads of 4, context 10, in eval mode."""
    kwargs = dict(d_in=8, d_out=12, context_length=10, num_heads=3, dropout=0.0, qkv_bias=True)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    mha = MultiHeadAttention(**kwargs).eval()
    mha.kernels = Kernels(attention=impl, fused_qkv=fused_qkv)
    return mha


def inputs(
    batch: int = 2, tokens: int = 7, features: int = 8, seed: int = 1, dtype=torch.float32
) -> torch.Tensor:
    return seeded_randn(batch, tokens, features, seed=seed, dtype=dtype)


def grads(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of a fixed scalar of the output w.r.t. the input and every parameter."""
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    out = module(x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    found = {name: p.grad.clone() for name, p in module.named_parameters()}
    found["input"] = x.grad.clone()
    return found


# --- causal_mask ---------------------------------------------------------------------------


def test_causal_mask_square_hides_the_future() -> None:
    expected = torch.tensor([[False, True, True], [False, False, True], [False, False, False]])
    assert torch.equal(causal_mask(3, 3), expected)


def test_causal_mask_with_cached_keys_offsets_the_queries() -> None:
    # Two new queries at absolute positions 3 and 4 of five keys.
    expected = torch.tensor(
        [[False, False, False, False, True], [False, False, False, False, False]]
    )
    assert torch.equal(causal_mask(2, 5), expected)
    assert not causal_mask(1, 6).any()  # the newest token sees every key


def test_causal_mask_rejects_more_queries_than_keys() -> None:
    with pytest.raises(ValueError, match="num_queries <= num_keys"):
        causal_mask(4, 3)


# --- scaled_dot_product_attention (the explicit maths) -------------------------------------


def test_equal_scores_give_a_running_mean_of_the_values() -> None:
    # All-zero queries: every allowed key scores the same, so query i averages values 0..i.
    values = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [-4.0, 2.0]])
    q = torch.zeros(4, 2)
    k = torch.randn(4, 2)
    context, weights = scaled_dot_product_attention(q, k, values)
    expected_weights = torch.tensor(
        [[1, 0, 0, 0], [1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0], [1 / 4, 1 / 4, 1 / 4, 1 / 4]]
    )
    assert torch.allclose(weights, expected_weights)
    expected_context = torch.tensor([[1.0, 0.0], [0.5, 1.0], [4 / 3, 2.0], [0.0, 2.0]])
    assert torch.allclose(context, expected_context)


def test_scores_are_scaled_by_sqrt_of_head_dim() -> None:
    # One query, two keys: scores q.k = 4 and 0, scaled by sqrt(4) -> softmax([2, 0]).
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    v = torch.tensor([[1.0], [0.0]])
    context, weights = scaled_dot_product_attention(q, k, v, causal=False)
    p = math.exp(2) / (math.exp(2) + 1)
    assert torch.allclose(weights, torch.tensor([[p, 1 - p]]))
    assert torch.allclose(context, torch.tensor([[p]]))


def test_attention_weights_are_causal_and_normalised() -> None:
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    _, weights = scaled_dot_product_attention(q, k, v)
    assert weights.shape == (2, 3, 5, 5)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5))
    assert (weights[..., causal_mask(5, 5)] == 0).all()
    _, unmasked = scaled_dot_product_attention(q, k, v, causal=False)
    assert (unmasked > 0).all()


def test_dropout_module_applies_to_the_weights_only_in_training() -> None:
    q, k, v = (torch.randn(1, 6, 4) for _ in range(3))
    plain, weights = scaled_dot_product_attention(q, k, v)
    drop = nn.Dropout(0.5).train()
    torch.manual_seed(0)
    dropped, weights_again = scaled_dot_product_attention(q, k, v, dropout=drop)
    torch.manual_seed(0)
    kept = drop(weights)  # the same dropout draw, applied to the weights by hand
    assert torch.allclose(dropped, kept @ v)
    assert not torch.allclose(dropped, plain)
    assert torch.equal(weights, weights_again)  # the returned weights are before dropout
    drop.eval()
    assert torch.allclose(scaled_dot_product_attention(q, k, v, dropout=drop)[0], plain)


# --- MultiHeadAttention ------------------------------------------------------------------


def per_head_reference(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """Each head computed on its own slice of the projection weights, then concatenated."""
    d = mha.head_dim
    heads = []
    for h in range(mha.num_heads):
        rows = slice(h * d, (h + 1) * d)

        def project(linear: nn.Linear) -> torch.Tensor:
            bias = linear.bias[rows] if linear.bias is not None else 0.0
            return x @ linear.weight[rows].T + bias

        q, k, v = project(mha.weight_query), project(mha.weight_key), project(mha.weight_value)
        scores = q @ k.transpose(1, 2) / math.sqrt(d)
        t = x.shape[1]
        future = torch.arange(t)[None, :] > torch.arange(t)[:, None]
        heads.append(torch.softmax(scores.masked_fill(future, -math.inf), dim=-1) @ v)
    return mha.output_projection(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("qkv_bias", [False, True])
def test_mha_matches_a_head_by_head_reference(impl: str, qkv_bias: bool) -> None:
    mha = make_mha(impl, qkv_bias=qkv_bias)
    x = inputs()
    out = mha(x)
    assert out.shape == (2, 7, 12)
    assert torch.allclose(out, per_head_reference(mha, x), atol=1e-6)


def test_state_dict_names_match_the_original_project() -> None:
    names = set(make_mha(qkv_bias=True).state_dict())
    expected = {
        f"{layer}.{p}"
        for layer in ("weight_query", "weight_key", "weight_value")
        for p in ("weight", "bias")
    }
    expected |= {"output_projection.weight", "output_projection.bias"}
    assert names == expected
    assert "weight_query.bias" not in make_mha(qkv_bias=False).state_dict()


def test_sdpa_and_explicit_agree_forward_and_gradients() -> None:
    x = inputs(dtype=torch.float64)
    explicit = make_mha("explicit").double()
    sdpa = make_mha("sdpa").double()
    assert torch.allclose(explicit(x), sdpa(x), atol=1e-12)
    g_explicit, g_sdpa = grads(explicit, x), grads(sdpa, x)
    assert set(g_explicit) == {name for name, _ in explicit.named_parameters()} | {"input"}
    for name, g in g_explicit.items():
        assert g.abs().sum() > 0, f"no gradient reached {name}"
        assert torch.allclose(g, g_sdpa[name], atol=1e-12), name


def test_sdpa_and_explicit_agree_in_float32() -> None:
    x = inputs()
    assert torch.allclose(make_mha("explicit")(x), make_mha("sdpa")(x), atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_fused_and_separate_qkv_projections_agree(impl: str) -> None:
    x = inputs(dtype=torch.float64)
    fused = make_mha(impl, fused_qkv=True).double()
    separate = make_mha(impl, fused_qkv=False).double()
    assert torch.allclose(fused(x), separate(x), atol=1e-12)
    g_fused, g_separate = grads(fused, x), grads(separate, x)
    for name, g in g_fused.items():
        assert torch.allclose(g, g_separate[name], atol=1e-12), name


def _projection_weight_rows(
    mha: MultiHeadAttention, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> list[int]:
    """Rows of the weight of every ``F.linear`` call one forward of ``mha`` makes."""
    import sydsgpt.attention as attention

    rows: list[int] = []
    real_linear = torch.nn.functional.linear

    def counting_linear(inp, weight, bias=None):  # type: ignore[no-untyped-def]
        rows.append(weight.shape[0])
        return real_linear(inp, weight, bias)

    monkeypatch.setattr(attention.F, "linear", counting_linear)
    monkeypatch.setattr(nn.functional, "linear", counting_linear)  # what nn.Linear calls
    mha(x)
    monkeypatch.undo()
    return rows


def test_fused_qkv_is_one_product_with_gradients_and_three_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mha, x = make_mha(fused_qkv=True), inputs()
    # Training: one (3 * d_out)-row product for Q, K, V, then the output projection.
    assert _projection_weight_rows(mha, x, monkeypatch) == [3 * mha.d_out, mha.d_out]
    # Generation / evaluation: the three weights are used in place, no joined copy.
    with torch.no_grad():
        assert _projection_weight_rows(mha, x, monkeypatch) == [mha.d_out] * 4
        assert torch.allclose(mha(x), make_mha(fused_qkv=False)(x), atol=1e-6)


def test_one_new_token_after_a_cached_prefix_builds_no_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sydsgpt.attention as attention

    mha, x = make_mha("sdpa"), inputs(tokens=5)
    cache = KVCache(mha.context_length)
    mha(x[:, :4], kv_cache=cache)

    def no_mask_expected(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a single newest token may see every key: no mask is needed")

    monkeypatch.setattr(attention, "causal_mask", no_mask_expected)
    assert torch.allclose(mha(x[:, 4:], kv_cache=cache), mha(x)[:, 4:], atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_changing_a_future_token_leaves_earlier_outputs_unchanged(impl: str) -> None:
    mha = make_mha(impl)
    x = inputs()
    changed = x.clone()
    changed[:, 4] += 10.0
    before, after = mha(x), mha(changed)
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:], atol=1e-3)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("preallocate", [True, False])
@pytest.mark.parametrize("prefill", [1, 3])
def test_kv_cache_prefill_then_one_token_at_a_time_equals_full_forward(
    impl: str, preallocate: bool, prefill: int
) -> None:
    mha = make_mha(impl)
    x = inputs(tokens=8)
    cache = KVCache(mha.context_length, preallocate=preallocate)
    pieces = [mha(x[:, :prefill], kv_cache=cache)]
    for t in range(prefill, x.shape[1]):
        pieces.append(mha(x[:, t : t + 1], kv_cache=cache))
    assert cache.length == x.shape[1]
    assert torch.allclose(torch.cat(pieces, dim=1), mha(x), atol=1e-6)


@pytest.mark.parametrize("preallocate", [True, False])
def test_kv_cache_reset_starts_a_new_sequence(preallocate: bool) -> None:
    mha = make_mha()
    x, y = inputs(tokens=4), inputs(tokens=4, seed=2)
    cache = KVCache(mha.context_length, preallocate=preallocate)
    mha(x, kv_cache=cache)
    cache.reset()
    assert cache.length == 0
    assert torch.allclose(mha(y, kv_cache=cache), mha(y), atol=1e-6)


def test_kv_cache_errors() -> None:
    cache = KVCache(4)
    k = torch.zeros(1, 2, 3, 5)
    cache.update(k, k)
    with pytest.raises(ValueError, match="KV cache overflow: holds 3 positions"):
        cache.update(k, k)
    with pytest.raises(ValueError, match=r"call reset\(\)"):
        cache.update(torch.zeros(2, 2, 1, 5), torch.zeros(2, 2, 1, 5))
    with pytest.raises(ValueError, match="same shape"):
        cache.update(torch.zeros(1, 2, 1, 5), torch.zeros(1, 2, 1, 4))
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        KVCache(0)


def test_preallocated_cache_reallocates_for_a_new_head_dim_after_reset() -> None:
    cache = KVCache(4)
    cache.update(torch.zeros(1, 2, 1, 5), torch.zeros(1, 2, 1, 5))
    cache.reset()
    k, v = cache.update(torch.ones(1, 2, 2, 3), torch.ones(1, 2, 2, 3))
    assert k.shape == v.shape == (1, 2, 2, 3)


@pytest.mark.parametrize("impl", IMPLS)
def test_dropout_is_active_in_training_and_off_in_eval(impl: str) -> None:
    mha = make_mha(impl, dropout=0.5)
    reference = make_mha(impl, dropout=0.0)  # same seed, same weights, no dropout
    x = inputs()
    assert torch.equal(mha(x), mha(x))
    assert torch.allclose(mha(x), reference(x), atol=1e-6)
    mha.train()
    torch.manual_seed(0)
    first = mha(x)
    second = mha(x)
    assert not torch.allclose(first, second)
    assert not torch.allclose(first, reference(x))


def test_dropout_probability_is_read_from_the_dropout_module() -> None:
    mha = make_mha("sdpa", dropout=0.3)
    mha.dropout.p = 0.0  # e.g. switched off for fine-tuning
    mha.train()
    x = inputs()
    assert torch.equal(mha(x), mha(x))


def test_an_unknown_state_dict_key_is_refused() -> None:
    source, target = make_mha(seed=0), make_mha(seed=1)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        target.load_state_dict({**source.state_dict(), "causal_mask": torch.zeros(1)})


def test_num_heads_must_divide_d_out() -> None:
    with pytest.raises(
        ValueError,
        match=r"num_heads \(5\) must be a divisor of d_out \(12\).*\[1, 2, 3, 4, 6, 12\]",
    ):
        MultiHeadAttention(8, 12, 10, num_heads=5)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        MultiHeadAttention(8, 12, 10, num_heads=0)


def test_other_constructor_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="Kernels.attention must be one of"):
        Kernels(attention="flash")
    with pytest.raises(ValueError, match=r"dropout must be .*\[0, 1\)"):
        MultiHeadAttention(8, 12, 10, 3, dropout=1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_input_longer_than_context_length_is_a_clear_error(impl: str) -> None:
    mha = make_mha(impl)
    with pytest.raises(ValueError, match="sequence of 11 tokens is longer than context_length=10"):
        mha(inputs(tokens=11))
    cache = KVCache(20)
    mha(inputs(tokens=8), kv_cache=cache)
    with pytest.raises(ValueError, match=r"12 tokens \(8 cached \+ 4 new\).*reset the KV cache"):
        mha(inputs(tokens=4), kv_cache=cache)


def test_wrong_input_rank_or_width_is_a_clear_error() -> None:
    mha = make_mha()
    with pytest.raises(
        ValueError,
        match=r"expects input of shape \(batch, tokens, 8\), got a 2-D tensor.*unsqueeze\(0\)",
    ):
        mha(torch.randn(7, 8))
    with pytest.raises(ValueError, match="got a 4-D tensor"):
        mha(torch.randn(1, 2, 7, 8))
    with pytest.raises(ValueError, match="expected 8 features per token, got 6"):
        mha(torch.randn(2, 7, 6))
