"""Chapter 2 exercises: the causal softmax, splitting heads, and scaled dot-product attention."""

from __future__ import annotations

import math

import torch

from ..attention import scaled_dot_product_attention
from .checker import Case, Exercise, expect_close, expect_equal, register


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _future(num_tokens: int) -> torch.Tensor:
    """``True`` above the diagonal: the keys each query must not see."""
    positions = torch.arange(num_tokens)
    return positions[None, :] > positions[:, None]


# ---------------------------------------------------------------- 2.1 causal softmax


def _solution_causal_softmax(scores: torch.Tensor) -> torch.Tensor:
    num_tokens = scores.shape[-1]
    future = torch.triu(torch.ones(num_tokens, num_tokens, dtype=torch.bool), diagonal=1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)


def _wrong_causal_softmax_zero_mask(scores: torch.Tensor) -> torch.Tensor:
    future = _future(scores.shape[-1])
    return torch.softmax(scores.masked_fill(future, 0.0), dim=-1)  # exp(0) = 1 still counts


def _wrong_causal_softmax_mask_after(scores: torch.Tensor) -> torch.Tensor:
    return torch.softmax(scores, dim=-1).masked_fill(_future(scores.shape[-1]), 0.0)  # rows no longer sum to 1


def _wrong_causal_softmax_hides_itself(scores: torch.Tensor) -> torch.Tensor:
    hidden = ~torch.tril(torch.ones(scores.shape[-1], scores.shape[-1], dtype=torch.bool), diagonal=-1)
    return torch.softmax(scores.masked_fill(hidden, -1e9), dim=-1)  # a token may not see itself


def _run_equal_scores(candidate) -> None:
    # Equal scores: each query spreads its attention evenly over itself and the tokens before it.
    expected = torch.tensor([[1 / (i + 1) if j <= i else 0.0 for j in range(4)] for i in range(4)])
    expect_close(candidate(torch.zeros(4, 4)), expected, "causal_softmax(zeros(4, 4))")


def _run_future_gets_no_weight(candidate) -> None:
    scores = _randn(5, 5, seed=0) * 3
    weights = candidate(scores.clone())
    expect_equal(tuple(weights.shape), (5, 5), "shape of the weights")
    leaked = weights[_future(5)].abs().max().item()
    if leaked != 0.0:
        raise AssertionError(f"a query gives weight {leaked:.4f} to a later token; future positions must get exactly 0")
    expect_close(weights.sum(-1), torch.ones(5), "each row's sum")


def _run_batched(candidate) -> None:
    scores = _randn(2, 3, 6, 6, seed=1)
    allowed = ~_future(6)
    numerators = torch.exp(scores) * allowed  # softmax written out over the allowed keys only
    expected = numerators / numerators.sum(-1, keepdim=True)
    expect_close(candidate(scores.clone()), expected, "causal_softmax of a (2, 3, 6, 6) batch of scores")


register(
    Exercise(
        key="2.1",
        title="causal_softmax(scores): attention weights from (..., T, T) scores, each query seeing only itself and earlier tokens",
        cases=[
            Case("equal scores give each query a uniform average over tokens 0..i", _run_equal_scores),
            Case("future tokens get weight 0 and each row sums to 1", _run_future_gets_no_weight),
            Case("works on a (batch, heads, T, T) tensor of scores", _run_batched),
        ],
        solution=_solution_causal_softmax,
        wrong_answers=[_wrong_causal_softmax_zero_mask, _wrong_causal_softmax_mask_after, _wrong_causal_softmax_hides_itself],
        hint="Before the softmax, set the scores above the diagonal to -inf (torch.triu(..., diagonal=1) "
        "marks them): exp(-inf) = 0, whereas a score of 0 still gets weight exp(0) = 1.",
    )
)

# ---------------------------------------------------------------- 2.2 split heads


def _solution_split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, num_tokens, d_out = x.shape
    return x.view(batch, num_tokens, num_heads, d_out // num_heads).transpose(1, 2)


def _wrong_split_heads_plain_view(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, num_tokens, d_out = x.shape
    return x.view(batch, num_heads, num_tokens, d_out // num_heads)  # right shape, scrambled contents


def _wrong_split_heads_no_transpose(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    batch, num_tokens, d_out = x.shape
    return x.view(batch, num_tokens, num_heads, d_out // num_heads)  # (B, T, H, D): heads not in front


def _numbered(batch: int, num_tokens: int, d_out: int) -> torch.Tensor:
    """x[b, t, f] = 1000 b + 100 t + f, so every entry says where it came from."""
    b, t, f = torch.meshgrid(torch.arange(batch), torch.arange(num_tokens), torch.arange(d_out), indexing="ij")
    return (1000 * b + 100 * t + f).float()


def _run_split_shape(candidate) -> None:
    out = candidate(_numbered(2, 5, 12), 3)
    expect_equal(tuple(out.shape), (2, 3, 5, 4), "split_heads(x of shape (2, 5, 12), num_heads=3).shape")


def _run_split_contents(candidate) -> None:
    x = _numbered(2, 5, 12)
    out = candidate(x.clone(), 3)
    expect_equal(tuple(out.shape), (2, 3, 5, 4), "shape")
    for b, h, t in [(0, 0, 1), (0, 2, 0), (1, 1, 4)]:
        expected = x[b, t, 4 * h : 4 * h + 4]
        if not torch.equal(out[b, h, t], expected):
            raise AssertionError(
                f"head {h} of token {t} (batch {b}) should hold features {4 * h}..{4 * h + 3} of that token, "
                f"{expected.int().tolist()}, got {out[b, h, t].int().tolist()}"
            )


def _run_split_round_trip(candidate) -> None:
    x = _randn(3, 4, 8, seed=2)
    out = candidate(x.clone(), 2)
    expect_equal(tuple(out.shape), (3, 2, 4, 4), "split_heads(x of shape (3, 4, 8), num_heads=2).shape")
    merged = out.transpose(1, 2).reshape(3, 4, 8)
    expect_close(merged, x, "merging the heads back, out.transpose(1, 2).reshape(3, 4, 8)")


register(
    Exercise(
        key="2.2",
        title="split_heads(x, num_heads): (B, T, d_out) -> (B, H, T, d_out // H), head h holding features h*D..(h+1)*D-1",
        cases=[
            Case("output shape is (batch, heads, tokens, head_dim)", _run_split_shape),
            Case("each head holds its own slice of every token's features", _run_split_contents),
            Case("transpose(1, 2) + reshape merges the heads back into x", _run_split_round_trip),
        ],
        solution=_solution_split_heads,
        wrong_answers=[_wrong_split_heads_plain_view, _wrong_split_heads_no_transpose],
        hint="view(B, T, H, D) first (that cuts each token's features into H slices), then transpose(1, 2) "
        "to bring the head dimension in front of the tokens. A plain view(B, H, T, D) has the right shape "
        "but mixes tokens into heads.",
    )
)

# ---------------------------------------------------------------- 2.3 scaled dot-product attention


def _solution_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    future = torch.triu(torch.ones(scores.shape[-2:], dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return weights @ values


def _wrong_attention_unscaled(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    scores = queries @ keys.transpose(-2, -1)
    return torch.softmax(scores.masked_fill(_future(scores.shape[-1]), float("-inf")), dim=-1) @ values


def _wrong_attention_scaled_by_d(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return _wrong_attention_unscaled(queries / queries.shape[-1], keys, values)


def _wrong_attention_not_causal(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    scores = queries @ keys.transpose(-2, -1) / math.sqrt(queries.shape[-1])
    return torch.softmax(scores, dim=-1) @ values


def _run_scaling(candidate) -> None:
    # Query 1 scores key 0 with 2*2 = 4 and key 1 with 0; divided by sqrt(4): softmax([2, 0]).
    queries = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0]])
    keys = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[1.0], [0.0]])
    expected = torch.tensor([[1.0], [math.exp(2) / (math.exp(2) + 1)]])
    expect_close(candidate(queries, keys, values), expected, "attention with head_dim 4 (scores must be divided by 2)")


def _run_causal(candidate) -> None:
    # Query 0 may only see key 0, whatever the other scores are.
    queries = torch.tensor([[0.0, 5.0], [1.0, 1.0], [1.0, -1.0]])
    keys = torch.tensor([[1.0, 0.0], [0.0, 5.0], [0.0, 5.0]])
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = candidate(queries, keys, values)
    expect_equal(tuple(out.shape), (3, 2), "output shape")
    expect_close(out[0], values[0], "the first token's context vector (it can only see itself)")


def _run_batched_attention(candidate) -> None:
    q, k, v = (_randn(2, 3, 5, 8, seed=s) for s in (3, 4, 5))
    expected, _ = scaled_dot_product_attention(q, k, v, causal=True)
    expect_close(candidate(q, k, v), expected, "attention on (2, 3, 5, 8) queries, keys and values")


register(
    Exercise(
        key="2.3",
        title="attention(queries, keys, values): causal scaled dot-product attention, returning the context vectors",
        cases=[
            Case("scores are divided by sqrt(head_dim)", _run_scaling),
            Case("the first token only sees itself", _run_causal),
            Case("matches the package on a batch of heads", _run_batched_attention),
        ],
        solution=_solution_attention,
        wrong_answers=[_wrong_attention_unscaled, _wrong_attention_scaled_by_d, _wrong_attention_not_causal],
        hint="scores = Q @ K^T / sqrt(D) with D = queries.shape[-1]; mask the future with -inf; "
        "softmax over the last dimension; multiply by V.",
    )
)
