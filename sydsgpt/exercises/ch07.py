"""Chapter 7 exercises: ideas of modern LLMs the chapter does not build (GeGLU, interleaved
RoPE, sliding-window attention, turning multi-head attention into grouped-query attention).

Difficulty: ★ a short formula, ★★ a few careful lines, ★★★ a step that needs the
chapter's shapes and conventions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attention import MultiHeadAttention, causal_mask
from ..config import SydsGPTConfig
from ..rope import apply_rope, rope_frequencies, rope_tables
from .checker import Case, Exercise, expect_close, expect_equal, register


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- 7.1 GeGLU


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _solution_geglu(
    x: torch.Tensor, gate_weight: torch.Tensor, up_weight: torch.Tensor, down_weight: torch.Tensor
) -> torch.Tensor:
    hidden = _gelu_tanh(x @ gate_weight.T) * (x @ up_weight.T)  # (..., h)
    return hidden @ down_weight.T  # (..., d)


def _wrong_geglu_silu(x, gate_weight, up_weight, down_weight):
    """Uses SiLU on the gate: that is SwiGLU. GeGLU gates with GELU (tanh form)."""
    return (F.silu(x @ gate_weight.T) * (x @ up_weight.T)) @ down_weight.T  # that is SwiGLU


def _wrong_geglu_gelu_on_up(x, gate_weight, up_weight, down_weight):
    """Puts the GELU on the up branch: the non-linearity
    goes on the gate branch, the up branch stays linear."""
    return ((x @ gate_weight.T) * _gelu_tanh(x @ up_weight.T)) @ down_weight.T


def _wrong_geglu_no_gate(x, gate_weight, up_weight, down_weight):
    """Drops the up branch: a gated unit multiplies
    GELU(gate(x)) by up(x) before the down projection."""
    return (
        _gelu_tanh(x @ gate_weight.T) @ down_weight.T
    )  # GPT-2's feed-forward with the gate as its first layer


def _run_geglu_by_hand(candidate) -> None:
    # gate(x) = 1, up(x) = 2: hidden = GELU(1) * 2 = 0.8412 * 2; down sends it to (+, -).
    x = torch.tensor([[1.0, 2.0]])
    gate, up, down = (
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([[0.0, 1.0]]),
        torch.tensor([[1.0], [-1.0]]),
    )
    g = 0.5 * (1 + math.tanh(math.sqrt(2 / math.pi) * 1.044715))
    expect_close(
        candidate(x, gate, up, down),
        torch.tensor([[2 * g, -2 * g]]),
        "GeGLU of x = [1, 2] (gate(x) = 1, up(x) = 2)",
    )


def _run_geglu_random(candidate) -> None:
    x = _randn(2, 3, 8)
    gate, up, down = _randn(12, 8, seed=1), _randn(12, 8, seed=2), _randn(8, 12, seed=3)
    out = candidate(x, gate, up, down)
    expect_equal(tuple(out.shape), (2, 3, 8), "output shape for x (2, 3, 8) and hidden width 12")
    expect_close(out, _solution_geglu(x, gate, up, down), "GeGLU of a (2, 3, 8) batch", atol=1e-4)


register(
    Exercise(
        key="7.1",
        title="geglu(x, gate_weight, up_weight, down_weight): down(GELU(gate(x)) * up(x)), weights "
        "stored as nn.Linear stores them",
        cases=[
            Case("x = [1, 2] by hand", _run_geglu_by_hand),
            Case("a (2, 3, 8) batch with hidden width 12", _run_geglu_random),
        ],
        solution=_solution_geglu,
        wrong_answers=[_wrong_geglu_silu, _wrong_geglu_gelu_on_up, _wrong_geglu_no_gate],
        hint="nn.Linear keeps a weight as (out_features, in_features), so a layer computes x @ "
        "weight.T. The GELU (tanh form, F.gelu(..., approximate='tanh')) goes on the gate branch "
        "only; the up branch stays linear.",
        difficulty=1,
    )
)

# ---------------------------------------------------------------- 7.2 interleaved RoPE


def _solution_rope_interleaved(
    x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0
) -> torch.Tensor:
    d = x.shape[-1]
    freqs = base ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (D/2,)
    angles = positions.float()[:, None] * freqs  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., 0::2], x[..., 1::2]  # pair i = (x[2i], x[2i + 1])
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def _wrong_rope_rotate_half(x, positions, base=10000.0):
    """Uses the chapter's rotate-half layout (pairs i and i +
    D/2): this exercise pairs neighbours, x[2i] and x[2i+1]."""
    return apply_rope(
        x, rope_tables(positions, rope_frequencies(x.shape[-1], base))
    )  # the chapter's layout


def _wrong_rope_backwards(x, positions, base=10000.0):
    """Turns the pairs the wrong way (by -angle): (a, b)
    goes to (a cos t - b sin t, a sin t + b cos t)."""
    return _solution_rope_interleaved(x, -positions, base)


def _wrong_rope_frequencies(x, positions, base=10000.0):
    """Uses base ** (-i / D) for pair i: the exponent is -2i / D."""
    d = x.shape[-1]
    freqs = base ** (-torch.arange(0, d // 2, dtype=torch.float32) / d)  # i / D instead of 2i / D
    angles = positions.float()[:, None] * freqs
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack(
        [a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], dim=-1
    ).flatten(-2)


def _run_rope_one_pair(candidate) -> None:
    out = candidate(torch.tensor([[1.0, 0.0]]), torch.tensor([1]))
    expect_close(
        out,
        torch.tensor([[math.cos(1.0), math.sin(1.0)]]),
        "(1, 0) at position 1 (turned by 1 radian)",
    )


def _run_rope_two_pairs(candidate) -> None:
    # base 100, D = 4: theta_0 = 1, theta_1 = 0.1. Position
    # 2: pair 0 turns 2 rad, pair 1 turns 0.2 rad.
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    expected = torch.tensor([[math.cos(2.0), math.sin(2.0), -math.sin(0.2), math.cos(0.2)]])
    expect_close(
        candidate(x, torch.tensor([2]), base=100.0),
        expected,
        "[1, 0, 0, 1] at position 2 with base 100",
    )


def _run_rope_same_as_rotate_half(candidate) -> None:
    # Moving feature 2i to i and 2i + 1 to i + D/2 turns the interleaved layout into the chapter's.
    x = _randn(2, 3, 5, 8)
    positions = torch.arange(5) + 7
    to_half = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])
    expected = torch.empty_like(x)
    expected[..., to_half] = apply_rope(
        x[..., to_half], rope_tables(positions, rope_frequencies(8))
    )
    expect_close(
        candidate(x, positions),
        expected,
        "a (2, 3, 5, 8) batch at positions 7..11, against the package's RoPE",
        atol=1e-5,
    )


register(
    Exercise(
        key="7.2",
        title="rope_interleaved(x, positions, base=10000.0): RoPE with pairs (x[2i], x[2i+1]), the "
        "original paper's layout",
        cases=[
            Case("one pair by hand", _run_rope_one_pair),
            Case("two pairs with their own frequencies", _run_rope_two_pairs),
            Case(
                "equals the chapter's RoPE after reordering the features",
                _run_rope_same_as_rotate_half,
            ),
        ],
        solution=_solution_rope_interleaved,
        wrong_answers=[_wrong_rope_rotate_half, _wrong_rope_backwards, _wrong_rope_frequencies],
        hint="x[..., 0::2] and x[..., 1::2] are the two coordinates of every pair. Pair i turns by "
        "position * base ** (-2i / D); a turn by angle t sends (a, b) to (a cos t - b sin t, a sin "
        "t + b cos t). torch.stack(..., dim=-1).flatten(-2) puts the pairs back side by side.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 7.3 sliding-window mask


def _solution_sliding_window(num_queries: int, num_keys: int, window: int) -> torch.Tensor:
    query_pos = torch.arange(num_keys - num_queries, num_keys)[
        :, None
    ]  # the queries are the newest tokens
    key_pos = torch.arange(num_keys)[None, :]
    return (key_pos > query_pos) | (key_pos <= query_pos - window)  # True: forbidden


def _wrong_window_one_too_many(num_queries, num_keys, window):
    """Lets each token see window + 1 positions: the window counts the token itself."""
    return _solution_sliding_window(num_queries, num_keys, window + 1)


def _wrong_window_not_causal(num_queries, num_keys, window):
    """Lets tokens see later positions inside the window: a sliding window is still causal."""
    query_pos = torch.arange(num_keys - num_queries, num_keys)[:, None]
    return (torch.arange(num_keys)[None, :] - query_pos).abs() >= window


def _wrong_window_ignores_cache(num_queries, num_keys, window):
    """Places query i at position i: after a KV cache the queries
    are the newest tokens, at num_keys - num_queries + i."""
    query_pos = torch.arange(num_queries)[:, None]  # as if query i sat at position i
    key_pos = torch.arange(num_keys)[None, :]
    return (key_pos > query_pos) | (key_pos <= query_pos - window)


def _check_mask(result, expected: torch.Tensor, what: str) -> None:
    if not isinstance(result, torch.Tensor) or result.dtype != torch.bool:
        raise AssertionError(
            f"{what}: expected a bool tensor (True = may not look), got "
            f"{getattr(result, 'dtype', type(result))}"
        )
    expect_equal(tuple(result.shape), tuple(expected.shape), f"{what}: shape")
    if not torch.equal(result, expected):
        raise AssertionError(
            f"{what}: expected\n{expected.int().tolist()}\n(1 = forbidden), "
            f"got\n{result.int().tolist()}"
        )


def _run_window_by_hand(candidate) -> None:
    expected = torch.tensor(
        [[0, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1], [1, 1, 0, 0]], dtype=torch.bool
    )
    _check_mask(
        candidate(4, 4, 2), expected, "4 tokens, window 2 (each sees itself and the one before)"
    )


def _run_window_with_cache(candidate) -> None:
    _check_mask(
        candidate(1, 6, 3),
        torch.tensor([[1, 1, 1, 0, 0, 0]], dtype=torch.bool),
        "1 new token after 5 cached, window 3",
    )
    _check_mask(
        candidate(2, 5, 2),
        torch.tensor([[1, 1, 0, 0, 1], [1, 1, 1, 0, 0]], dtype=torch.bool),
        "2 new tokens after 3 cached, window 2",
    )


def _run_window_wide_is_causal(candidate) -> None:
    _check_mask(
        candidate(5, 7, 7),
        causal_mask(5, 7),
        "a window as long as the sequence (plain causal attention)",
    )


register(
    Exercise(
        key="7.3",
        title="sliding_window_mask(num_queries, num_keys, window): causal mask where each token "
        "sees only the last `window` positions",
        cases=[
            Case("4 tokens, window 2, by hand", _run_window_by_hand),
            Case("new tokens after a KV cache", _run_window_with_cache),
            Case(
                "a window as long as the sequence is chapter 2's causal mask",
                _run_window_wide_is_causal,
            ),
        ],
        solution=_solution_sliding_window,
        wrong_answers=[
            _wrong_window_one_too_many,
            _wrong_window_not_causal,
            _wrong_window_ignores_cache,
        ],
        hint="As in sydsgpt.attention.causal_mask, query i sits at position num_keys - num_queries "
        "+ i. It may see key j when position - window < j <= position: `window` keys, itself "
        "included.",
        difficulty=2,
    )
)

# ---------------------------------------------------------------- 7.4 MHA -> GQA


def _solution_mean_pool(weight: torch.Tensor, num_heads: int, num_kv_heads: int) -> torch.Tensor:
    head_dim = weight.shape[0] // num_heads
    groups = num_heads // num_kv_heads
    per_head = weight.view(
        num_kv_heads, groups, head_dim, weight.shape[1]
    )  # consecutive heads form a group
    return per_head.mean(dim=1).reshape(num_kv_heads * head_dim, weight.shape[1])


def _wrong_pool_first_head(weight, num_heads, num_kv_heads):
    """Keeps each group's first head instead of averaging the group's heads."""
    head_dim = weight.shape[0] // num_heads
    per_head = weight.view(num_kv_heads, num_heads // num_kv_heads, head_dim, weight.shape[1])
    return per_head[:, 0].reshape(num_kv_heads * head_dim, weight.shape[1])


def _wrong_pool_strided(weight, num_heads, num_kv_heads):
    """Groups heads j, j + H_kv, ... (strided): repeat_kv makes groups of consecutive heads."""
    head_dim = weight.shape[0] // num_heads
    per_head = weight.view(
        num_heads // num_kv_heads, num_kv_heads, head_dim, weight.shape[1]
    )  # heads j, j + H_kv, ...
    return per_head.mean(dim=0).reshape(num_kv_heads * head_dim, weight.shape[1])


def _wrong_pool_sum(weight, num_heads, num_kv_heads):
    """Sums the group's heads: the GQA paper averages them (mean-pooling)."""
    return _solution_mean_pool(weight, num_heads, num_kv_heads) * (num_heads // num_kv_heads)


def _run_pool_by_hand(candidate) -> None:
    weight = torch.tensor([[1.0], [2.0], [3.0], [5.0]])  # 4 heads of 1 feature, one input feature
    expect_close(
        candidate(weight, 4, 2), torch.tensor([[1.5], [4.0]]), "4 one-feature heads pooled into 2"
    )
    expect_close(
        candidate(weight, 4, 1), torch.tensor([[2.75]]), "4 heads pooled into 1 (multi-query)"
    )


def _run_pool_identity(candidate) -> None:
    weight = _randn(12, 6)
    expect_close(candidate(weight, 3, 3), weight, "num_kv_heads = num_heads (nothing to pool)")


def _run_pool_in_attention(candidate) -> None:
    # When the heads of each group already agree, the pooled
    # GQA layer computes what the MHA layer computes.
    torch.manual_seed(0)
    heads, kv_heads, d = 4, 2, 16
    mha = MultiHeadAttention(d, d, 8, heads).eval()
    sizes = SydsGPTConfig(
        vocab_size=1,
        embedding_dim=d,
        context_length=8,
        num_layers=1,
        num_heads=heads,
        num_kv_heads=kv_heads,
    )
    gqa = MultiHeadAttention.from_config(sizes).eval()
    with torch.no_grad():
        for layer in (mha.weight_key, mha.weight_value):
            per_head = _randn(kv_heads, 1, d // heads, d, seed=4).expand(
                kv_heads, heads // kv_heads, d // heads, d
            )
            layer.weight.copy_(per_head.reshape(d, d))
        gqa.weight_query.load_state_dict(mha.weight_query.state_dict())
        gqa.output_projection.load_state_dict(mha.output_projection.state_dict())
        gqa.weight_key.weight.copy_(candidate(mha.weight_key.weight, heads, kv_heads))
        gqa.weight_value.weight.copy_(candidate(mha.weight_value.weight, heads, kv_heads))
    x = _randn(2, 6, d, seed=5)
    expect_close(
        gqa(x),
        mha(x),
        "GQA with pooled weights vs the MHA layer whose groups share their heads",
        atol=1e-5,
    )


register(
    Exercise(
        key="7.4",
        title="mean_pool_kv_heads(weight, num_heads, num_kv_heads): turn an MHA key (or value) "
        "weight into a GQA one",
        cases=[
            Case("four one-feature heads by hand", _run_pool_by_hand),
            Case("as many key/value heads as query heads", _run_pool_identity),
            Case("inside the attention of a model with num_kv_heads=2", _run_pool_in_attention),
        ],
        solution=_solution_mean_pool,
        wrong_answers=[_wrong_pool_first_head, _wrong_pool_strided, _wrong_pool_sum],
        hint="The weight is (num_heads * head_dim, d): rows h*head_dim .. (h+1)*head_dim - 1 "
        "belong to head h. Query heads share a key/value head in consecutive groups "
        "(sydsgpt.gqa.repeat_kv), so view it as (num_kv_heads, group, head_dim, d) and average "
        "over the group.",
        difficulty=3,
    )
)
