"""Chapter 2 exercises: padding masks and fully masked
rows, attention entropy, one new query against all keys."""

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


# -------------------------------------------------- 2.1 masked softmax (padding, fully masked rows)


def _solution_masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0)  # a row with every key masked: 0/0 -> all zeros


def _wrong_masked_softmax_nan(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Leaves the NaN of a fully masked row: softmax of a row that is all -inf is 0/0 = nan, and one
    nan spreads through every later layer. Give such a row weights 0 (e.g. torch.nan_to_num)."""
    return torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)


def _wrong_masked_softmax_zero_fill(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fills the masked scores with 0 instead of -inf:
    exp(0) = 1, so masked keys still get weight."""
    return torch.softmax(scores.masked_fill(mask, 0.0), dim=-1)


def _wrong_masked_softmax_inverted(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reads the mask the other way round: True means the key may NOT be seen."""
    return torch.nan_to_num(
        torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1), nan=0.0
    )


def _run_masked_by_hand(candidate) -> None:
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.tensor([[False, False, True]])
    e = [math.exp(1.0), math.exp(2.0)]
    expected = torch.tensor([[e[0] / sum(e), e[1] / sum(e), 0.0]])
    expect_close(
        candidate(scores, mask),
        expected,
        "masked_softmax([[1, 2, 3]], mask [[F, F, T]]) (the third key is padding)",
    )


def _run_fully_masked_row(candidate) -> None:
    scores = torch.tensor([[0.5, -1.0], [2.0, 1.0]])
    mask = torch.tensor([[True, True], [False, True]])
    out = candidate(scores, mask)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise AssertionError(
            f"a row whose keys are all masked gave {out[0].tolist()}: nan. Expected [0.0, 0.0]"
        )
    expect_close(
        out, torch.tensor([[0.0, 0.0], [1.0, 0.0]]), "masked_softmax with row 0 fully masked"
    )


def _run_masked_batch(candidate) -> None:
    scores = _randn(2, 3, 4, 4, seed=7)
    lengths = torch.tensor([4, 2])  # the second sequence has 2 padding tokens
    mask = (torch.arange(4)[None, :] >= lengths[:, None])[:, None, None, :].expand(2, 3, 4, 4)
    allowed = (~mask).float()
    numerators = torch.exp(scores) * allowed
    expected = numerators / numerators.sum(-1, keepdim=True)
    expect_close(
        candidate(scores.clone(), mask.clone()),
        expected,
        "masked_softmax of (2, 3, 4, 4) scores, sequence 2 padded after 2 tokens",
    )


register(
    Exercise(
        key="2.1",
        title="masked_softmax(scores, mask): attention weights where mask is True for keys that "
        "may not be seen; rows with no visible key give zeros, not nan",
        cases=[
            Case("one row by hand, the last key is padding", _run_masked_by_hand),
            Case("a fully masked row gives zeros, not nan", _run_fully_masked_row),
            Case("a padded batch of scores (batch, heads, T, T)", _run_masked_batch),
        ],
        solution=_solution_masked_softmax,
        wrong_answers=[
            _wrong_masked_softmax_nan,
            _wrong_masked_softmax_zero_fill,
            _wrong_masked_softmax_inverted,
        ],
        hint="masked_fill the forbidden scores with -inf, softmax over the last dimension. A row "
        "that is all -inf gives exp(-inf) / sum = 0 / 0 = nan: replace those nans by 0 "
        "(torch.nan_to_num or torch.where).",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 2.2 causal + padding mask


def _solution_causal_padding_mask(lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    future = _future(num_tokens)  # (T, T)
    padding = (
        torch.arange(num_tokens)[None, :] >= lengths[:, None]
    )  # (B, T): keys past each sequence's end
    return future[None, :, :] | padding[:, None, :]  # (B, T, T)


def _wrong_padding_mask_only_padding(lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masks the padding but forgets the future: a GPT must still not see later tokens."""
    padding = torch.arange(num_tokens)[None, :] >= lengths[:, None]
    return padding[:, None, :].expand(len(lengths), num_tokens, num_tokens)


def _wrong_padding_mask_off_by_one(lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masks from position length + 1: a sequence of length
    L holds positions 0..L-1, so key L is padding."""
    padding = torch.arange(num_tokens)[None, :] > lengths[:, None]
    return _future(num_tokens)[None] | padding[:, None, :]


def _wrong_padding_mask_on_queries(lengths: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Masks the padding QUERIES (rows) instead of the padding KEYS (columns): the real tokens could
    then still attend to padding."""
    padding = torch.arange(num_tokens)[None, :] >= lengths[:, None]
    return _future(num_tokens)[None] | padding[:, :, None]


def _bool_mask_case(name: str, lengths: list[int], num_tokens: int, expected: list) -> Case:
    def run(candidate):
        out = candidate(torch.tensor(lengths), num_tokens)
        if not isinstance(out, torch.Tensor) or out.dtype != torch.bool:
            raise AssertionError(
                "expected a bool tensor (True = may not look), got "
                f"{getattr(out, 'dtype', type(out))}"
            )
        want = torch.tensor(expected, dtype=torch.bool)
        expect_equal(tuple(out.shape), tuple(want.shape), "shape")
        if not torch.equal(out, want):
            raise AssertionError(
                f"causal_padding_mask({lengths}, {num_tokens}): "
                f"expected\n{want.int().tolist()}\n(1 = forbidden), got\n{out.int().tolist()}"
            )

    return Case(name, run)


def _run_mask_with_softmax(candidate) -> None:
    scores = _randn(2, 5, 5, seed=8)
    mask = candidate(torch.tensor([5, 3]), 5)
    weights = _solution_masked_softmax(scores, mask)
    expect_close(
        weights[1, 2, 3:],
        torch.zeros(2),
        "weights of sequence 2's token 2 on the padding keys 3 and 4",
    )
    expect_close(
        weights[0],
        torch.softmax(scores[0].masked_fill(_future(5), float("-inf")), -1),
        "sequence 1 (no padding): plain causal weights",
    )


register(
    Exercise(
        key="2.2",
        title="causal_padding_mask(lengths, num_tokens): the (B, T, T) bool mask, True where query "
        "i may not see key j (j after i, or j padding)",
        cases=[
            _bool_mask_case(
                "one sequence of 3 real tokens out of 4",
                [3],
                4,
                [[[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]]],
            ),
            _bool_mask_case(
                "two sequences, lengths 2 and 3",
                [2, 3],
                3,
                [[[0, 1, 1], [0, 0, 1], [0, 0, 1]], [[0, 1, 1], [0, 0, 1], [0, 0, 0]]],
            ),
            Case("with exercise 2.1's softmax, padding keys get weight 0", _run_mask_with_softmax),
        ],
        solution=_solution_causal_padding_mask,
        wrong_answers=[
            _wrong_padding_mask_only_padding,
            _wrong_padding_mask_off_by_one,
            _wrong_padding_mask_on_queries,
        ],
        hint="Two masks OR-ed together: the causal one (T, T), True above the diagonal, and the "
        "padding one (B, T), True at key positions >= length. Broadcast them as (1, T, T) | (B, 1, "
        "T): the padding mask is about columns (keys).",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 2.3 attention entropy


def _solution_attention_entropy(weights: torch.Tensor) -> torch.Tensor:
    logs = torch.where(
        weights > 0, weights.log(), torch.zeros_like(weights)
    )  # 0 * log 0 counts as 0
    return -(weights * logs).sum(dim=-1)


def _wrong_entropy_nan(weights: torch.Tensor) -> torch.Tensor:
    """Computes 0 * log(0) = 0 * (-inf) = nan for the masked (zero) weights: by convention a
    weight of 0 contributes 0. Use torch.where(weights > 0, ...) or torch.special.xlogy."""
    return -(weights * weights.log()).sum(dim=-1)


def _wrong_entropy_bits(weights: torch.Tensor) -> torch.Tensor:
    """Uses log2 (bits); the exercise asks for nats (natural log)."""
    return _solution_attention_entropy(weights) / math.log(2)


def _wrong_entropy_sign(weights: torch.Tensor) -> torch.Tensor:
    """Forgets the minus sign: log of a probability is <= 0, so entropy is -sum p log p >= 0."""
    return -_solution_attention_entropy(weights)


def _run_entropy_by_hand(candidate) -> None:
    weights = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    out = candidate(weights)
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise AssertionError(
            f"attention_entropy gave {out.tolist()}: nan for rows with zero weights (0 * log 0 "
            "must count as 0)"
        )
    expect_close(
        out,
        torch.tensor([0.0, math.log(2), math.log(4)]),
        "entropies of one-hot, two-way and four-way weights (ln 1, ln 2, ln 4)",
    )


def _run_entropy_causal(candidate) -> None:
    weights = torch.softmax(torch.zeros(5, 5).masked_fill(_future(5), float("-inf")), dim=-1)
    expect_close(
        candidate(weights),
        torch.log(torch.arange(1.0, 6.0)),
        "entropies of causal uniform weights: token i spreads over i + 1 keys",
    )


def _run_entropy_batch(candidate) -> None:
    weights = torch.softmax(_randn(2, 3, 4, 6, seed=9), dim=-1)
    out = candidate(weights)
    expect_equal(
        tuple(out.shape), (2, 3, 4), "shape for (2, 3, 4, 6) weights (one entropy per query)"
    )
    expect_close(
        out, -(weights * weights.log()).sum(-1), "entropies of a (2, 3, 4, 6) batch of weights"
    )


register(
    Exercise(
        key="2.3",
        title="attention_entropy(weights): the entropy in nats of each query's attention "
        "distribution, (..., T, T) -> (..., T)",
        cases=[
            Case("one-hot, two-way and four-way weights by hand", _run_entropy_by_hand),
            Case("causal weights with zeros in the future", _run_entropy_causal),
            Case("a batch of heads", _run_entropy_batch),
        ],
        solution=_solution_attention_entropy,
        wrong_answers=[_wrong_entropy_nan, _wrong_entropy_bits, _wrong_entropy_sign],
        hint="H = -sum_j w_j ln w_j over the last dimension. The causal mask leaves zeros, and 0 * "
        "ln 0 must count as 0: take the log only where w > 0 (torch.where), or use "
        "torch.special.xlogy(w, w).",
        difficulty=1,
    )
)

# --------------------------------------------------------------- 2.4 one new query against all keys


def _solution_attend_one(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    scores = (
        keys @ query / math.sqrt(query.shape[-1])
    )  # (T,): the newest token's score for every key
    return torch.softmax(scores, dim=-1) @ values  # (D,): no mask, all keys are in its past


def _wrong_attend_one_square_mask(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Applies a square causal mask as if the query were token 0: the newest token is the LAST
    position, so every key, itself included, is in its past and none is masked."""
    scores = (keys @ query / math.sqrt(query.shape[-1]))[None, :]  # (1, T)
    future = torch.triu(torch.ones(1, keys.shape[0], dtype=torch.bool), diagonal=1)
    return (torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ values)[0]


def _wrong_attend_one_unscaled(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
) -> torch.Tensor:
    """Forgets to divide the scores by sqrt(head_dim)."""
    return torch.softmax(keys @ query, dim=-1) @ values


def _run_attend_by_hand(candidate) -> None:
    query = torch.tensor([2.0, 0.0, 0.0, 0.0])
    keys = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    values = torch.tensor([[1.0], [0.0]])
    # scores 2 / sqrt(4) = 1 and 0: weights softmax([1, 0]).
    expected = torch.tensor([math.e / (math.e + 1)])
    expect_close(candidate(query, keys, values), expected, "attend_one(q = [2, 0, 0, 0], two keys)")


def _run_attend_equals_last_row(candidate) -> None:
    q, k, v = (_randn(6, 8, seed=s) for s in (10, 11, 12))
    full, _ = scaled_dot_product_attention(q, k, v, causal=True)
    expect_close(
        candidate(q[-1], k, v),
        full[-1],
        "attend_one(last query, 6 keys) vs the last row of full causal attention",
    )


register(
    Exercise(
        key="2.4",
        title="attend_one(query, keys, values): the context vector of the NEWEST token, query "
        "(D,), keys and values (T, D)",
        cases=[
            Case("two keys by hand", _run_attend_by_hand),
            Case("equals the last row of full causal attention", _run_attend_equals_last_row),
        ],
        solution=_solution_attend_one,
        wrong_answers=[_wrong_attend_one_square_mask, _wrong_attend_one_unscaled],
        hint="The newest token sits after every key, so the causal mask hides nothing: scores = "
        "keys @ query / sqrt(D), softmax over the T keys, then weights @ values. This is what "
        "generation with a KV cache computes each step.",
        difficulty=2,
    )
)
