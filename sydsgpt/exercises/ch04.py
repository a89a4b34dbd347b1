"""Chapter 4 exercises: sinusoidal positions, the next-token logits of a padded batch,
one attention head out of GPT-2's fused query/key/value weight, and the log-probability of a
text."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..model import SydsGPT
from .checker import Case, Exercise, expect_close, expect_equal, register

# ---------------------------------------------------------------- 4.1 sinusoidal positions


def _solution_sinusoidal_positions(num_positions: int, dim: int) -> torch.Tensor:
    positions = torch.arange(num_positions, dtype=torch.float32)[:, None]  # (T, 1)
    rates = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(positions * rates)  # even features: sine
    table[:, 1::2] = torch.cos(positions * rates)  # odd features: cosine of the same angle
    return table


def _wrong_sinusoidal_halves(num_positions: int, dim: int) -> torch.Tensor:
    """Puts all the sines in the first half and the cosines in the second: the 2017 table
    interleaves them, sine at feature 2i and cosine at feature 2i + 1."""
    table = _solution_sinusoidal_positions(num_positions, dim)
    return torch.cat([table[:, 0::2], table[:, 1::2]], dim=1)


def _wrong_sinusoidal_rate(num_positions: int, dim: int) -> torch.Tensor:
    """Uses 10000 ** (-i / dim) for pair i: the exponent is 2i / dim, so the slowest pair's
    wavelength is about 10000 * 2 pi."""
    positions = torch.arange(num_positions, dtype=torch.float32)[:, None]
    rates = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float32) / dim)
    table = torch.zeros(num_positions, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(positions * rates), torch.cos(positions * rates)
    return table


def _wrong_sinusoidal_from_one(num_positions: int, dim: int) -> torch.Tensor:
    """Numbers the positions from 1: the first token is position 0 (sin 0 = 0, cos 0 = 1)."""
    positions = torch.arange(1, num_positions + 1, dtype=torch.float32)[:, None]
    rates = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(num_positions, dim)
    table[:, 0::2], table[:, 1::2] = torch.sin(positions * rates), torch.cos(positions * rates)
    return table


def _run_sinusoidal_by_hand(candidate) -> None:
    # dim 4: pair 0 turns 1 rad per position, pair 1 turns 10000 ** (-1/2) = 0.01 rad.
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
            [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)],
        ]
    )
    expect_close(candidate(3, 4), expected, "sinusoidal_positions(3, 4)", atol=1e-6)


def _run_sinusoidal_relative(candidate) -> None:
    # The point of the design: position p + k is a fixed rotation of position p, for every p.
    table = candidate(50, 16)
    expect_equal(tuple(table.shape), (50, 16), "shape of sinusoidal_positions(50, 16)")
    dots = (table[:-3] * table[3:]).sum(-1)  # <pos(p), pos(p + 3)> for every p
    expect_close(
        dots,
        dots[0].expand_as(dots),
        "the dot product of positions p and p + 3, for every p (it depends only on the distance)",
        atol=1e-4,
    )
    expect_close(
        table, _solution_sinusoidal_positions(50, 16), "the whole (50, 16) table", atol=1e-5
    )


register(
    Exercise(
        key="4.1",
        title="sinusoidal_positions(num_positions, dim): the original transformer's fixed position "
        "table, sin at even features, cos at odd",
        cases=[
            Case("3 positions of 4 features by hand", _run_sinusoidal_by_hand),
            Case("the table only sees distances; it matches the formula", _run_sinusoidal_relative),
        ],
        solution=_solution_sinusoidal_positions,
        wrong_answers=[
            _wrong_sinusoidal_halves,
            _wrong_sinusoidal_rate,
            _wrong_sinusoidal_from_one,
        ],
        hint="Pair i (features 2i and 2i + 1) turns at the rate 10000 ** (-2i / dim) radians per "
        "position: table[p, 2i] = sin(p * rate_i), table[p, 2i + 1] = cos(p * rate_i), positions "
        "counted from 0. Slicing with [:, 0::2] and [:, 1::2] fills both at once.",
        difficulty=2,
    )
)

# ---------------------------------------------------- 4.2 next-token logits of a right-padded batch

_STEP_CONFIG = {
    "vocab_size": 50,
    "embedding_dim": 16,
    "context_length": 8,
    "num_layers": 2,
    "num_heads": 2,
    "dropout": 0.0,
    "qkv_bias": True,
}


def _solution_last_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids)  # (B, T, V); padding comes after the real tokens
    rows = torch.arange(input_ids.shape[0])
    return logits[rows, lengths - 1]  # (B, V): the position of each sequence's last real token


def _wrong_last_logits_last_position(model, input_ids, lengths):
    """Takes logits[:, -1] for every sequence: in a right-padded batch the last position of a short
    sequence is padding. Take position lengths[b] - 1 of sequence b."""
    with torch.no_grad():
        return model(input_ids)[:, -1]


def _wrong_last_logits_off_by_one(model, input_ids, lengths):
    """Takes position lengths[b]: a sequence of length L
    holds positions 0..L-1, so its last token is at L - 1."""
    with torch.no_grad():
        logits = model(input_ids)
    return logits[torch.arange(input_ids.shape[0]), lengths.clamp(max=input_ids.shape[1] - 1)]


def _wrong_last_logits_counts_tokens(model, input_ids, lengths):
    """Works the lengths out from the ids (the tokens that are not the padding id 0) instead of
    using the lengths given: a real token may have the padding's id (GPT-2 pads with its
    end-of-text token, which also appears in text)."""
    counted = (input_ids != 0).sum(dim=1)
    return _solution_last_logits(model, input_ids, counted)


def _step_model() -> SydsGPT:
    torch.manual_seed(0)
    return SydsGPT(_STEP_CONFIG).eval()


def _padded_case(description: str, lengths: list[int], real_zero: bool = False) -> Case:
    def run(candidate) -> None:
        model = _step_model()
        t = max(lengths) + 1
        ids = torch.randint(1, 50, (len(lengths), t), generator=torch.Generator().manual_seed(3))
        if real_zero:
            ids[:, 0] = 0  # a real token with the padding's id
        for row, length in enumerate(lengths):
            ids[row, length:] = 0  # right padding with id 0
        with torch.no_grad():
            expected = torch.stack(
                [model(ids[row : row + 1, :length])[0, -1] for row, length in enumerate(lengths)]
            )
        out = candidate(model, ids.clone(), torch.tensor(lengths))
        expect_equal(tuple(out.shape), (len(lengths), 50), "shape (batch, vocab)")
        expect_close(
            out,
            expected,
            f"next-token logits of sequences of lengths {lengths}, each vs the sequence run alone",
            atol=1e-4,
        )

    return Case(description, run)


register(
    Exercise(
        key="4.2",
        title="last_logits(model, input_ids, lengths): each sequence's next-token logits, for a "
        "right-padded (B, T) batch",
        cases=[
            _padded_case("one sequence with one padding token", [4]),
            _padded_case("three sequences of lengths 2, 5 and 3", [2, 5, 3]),
            _padded_case(
                "a real token with the padding's id (0): the lengths say where",
                [3, 4],
                real_zero=True,
            ),
        ],
        solution=_solution_last_logits,
        wrong_answers=[
            _wrong_last_logits_last_position,
            _wrong_last_logits_off_by_one,
            _wrong_last_logits_counts_tokens,
        ],
        hint="Run the whole padded batch once (causal attention means the padding after a token "
        "cannot change its logits), then pick row b's logits at position lengths[b] - 1: "
        "logits[torch.arange(B), lengths - 1].",
        difficulty=2,
    )
)

# --------------------------------------------------------------- 4.3 one head out of GPT-2's c_attn


def _solution_c_attn_head(
    weight: torch.Tensor, bias: torch.Tensor, num_heads: int, head: int
) -> tuple[torch.Tensor, ...]:
    d = weight.shape[0]
    head_dim = d // num_heads
    rows = slice(head * head_dim, (head + 1) * head_dim)  # head h's features inside each third
    w = weight.t()  # Conv1D (d, 3d) -> nn.Linear layout (3d, d): queries, keys, values, d rows each
    parts = [w[i * d : (i + 1) * d][rows] for i in range(3)]
    biases = [bias[i * d : (i + 1) * d][rows] for i in range(3)]
    return (*parts, *biases)


def _wrong_c_attn_head_fused_offset(weight, bias, num_heads, head):
    """Takes head h's rows from the fused (3d, d) matrix as a whole: the queries, keys and values
    are three blocks of d rows, and head h has head_dim rows inside EACH block."""
    d = weight.shape[0]
    head_dim = d // num_heads
    w = weight.t()
    start = 3 * head * head_dim
    parts = [w[start + i * head_dim : start + (i + 1) * head_dim] for i in range(3)]
    biases = [bias[start + i * head_dim : start + (i + 1) * head_dim] for i in range(3)]
    return (*parts, *biases)


def _wrong_c_attn_head_strided(weight, bias, num_heads, head):
    """Takes every num_heads-th feature (head, head + H, ...): a head is a CONTIGUOUS slice of
    head_dim features, the layout MultiHeadAttention's view(B, T, H, D) gives."""
    d = weight.shape[0]
    w = weight.t()
    parts = [w[i * d : (i + 1) * d][head::num_heads] for i in range(3)]
    biases = [bias[i * d : (i + 1) * d][head::num_heads] for i in range(3)]
    return (*parts, *biases)


def _wrong_c_attn_head_no_transpose(weight, bias, num_heads, head):
    """Slices Conv1D's (d, 3d) weight without transposing it: Conv1D computes x @ weight, nn.Linear
    x @ w.T, so each part must be transposed to (head_dim, d)."""
    d = weight.shape[0]
    head_dim = d // num_heads
    cols = slice(head * head_dim, (head + 1) * head_dim)
    parts = [weight[:, i * d : (i + 1) * d][:, cols] for i in range(3)]
    biases = [bias[i * d : (i + 1) * d][cols] for i in range(3)]
    return (*parts, *biases)


def _c_attn_example(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(d, 3 * d, generator=g),
        torch.randn(3 * d, generator=g),
        torch.randn(2, 5, d, generator=g),
    )


def _run_head_shapes(candidate) -> None:
    weight, bias, _ = _c_attn_example(8, 0)
    parts = candidate(weight, bias, 4, 1)
    expect_equal(len(parts), 6, "number of returned tensors (wq, wk, wv, bq, bk, bv)")
    expect_equal(
        [tuple(p.shape) for p in parts],
        [(2, 8)] * 3 + [(2,)] * 3,
        "shapes for d = 8, 4 heads (head_dim 2)",
    )


def _head_case(d: int, num_heads: int, head: int, seed: int) -> Case:
    def run(candidate) -> None:
        weight, bias, x = _c_attn_example(d, seed)
        fused = x @ weight + bias  # (2, 5, 3d): what GPT-2 computes, queries | keys | values
        head_dim = d // num_heads
        wq, wk, wv, bq, bk, bv = candidate(weight, bias, num_heads, head)
        for i, (name, w, b) in enumerate((("query", wq, bq), ("key", wk, bk), ("value", wv, bv))):
            third = fused[..., i * d : (i + 1) * d].view(2, 5, num_heads, head_dim)[
                :, :, head
            ]  # the heads as MultiHeadAttention lays them out
            expect_close(
                F.linear(x, w, b),
                third,
                f"head {head}'s {name}s (d = {d}, {num_heads} heads) vs that head of x @ weight + "
                "bias",
                atol=1e-4,
            )

    return Case(
        f"head {head} of {num_heads} (d = {d}) computes what GPT-2's c_attn gives that head", run
    )


register(
    Exercise(
        key="4.3",
        title="c_attn_head(weight, bias, num_heads, head): one head's query, key and value "
        "nn.Linear weights and biases out of GPT-2's Conv1D c_attn",
        cases=[
            Case("returns six tensors of the right shapes", _run_head_shapes),
            _head_case(8, 4, 1, 1),
            _head_case(12, 3, 2, 2),
        ],
        solution=_solution_c_attn_head,
        wrong_answers=[
            _wrong_c_attn_head_fused_offset,
            _wrong_c_attn_head_strided,
            _wrong_c_attn_head_no_transpose,
        ],
        hint="Transpose weight to (3d, d); rows [0:d] are the queries, [d:2d] the keys, [2d:3d] "
        "the values. Inside each block, head h owns the head_dim rows h * head_dim .. (h + 1) * "
        "head_dim - 1 (the slice MultiHeadAttention's view(B, T, H, D) gives it). Cut the bias the "
        "same way.",
        difficulty=3,
    )
)

# ---------------------------------------------------------------- 4.4 the log-probability of a text


def _solution_sequence_log_prob(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        logits = model(ids[:, :-1])  # (B, T-1, V): position t predicts token t + 1
    log_probs = torch.log_softmax(logits, dim=-1)
    picked = log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    return picked.sum(dim=-1)  # (B,)


def _wrong_log_prob_unshifted(model, ids):
    """Scores token t with the logits AT position t: those predict
    token t + 1. Feed ids[:, :-1] and score ids[:, 1:]."""
    with torch.no_grad():
        log_probs = torch.log_softmax(model(ids), dim=-1)
    return log_probs.gather(-1, ids[:, :, None]).squeeze(-1).sum(-1)


def _wrong_log_prob_raw_logits(model, ids):
    """Sums the raw logits of the tokens: logits are not
    log-probabilities until log_softmax normalises them."""
    with torch.no_grad():
        logits = model(ids[:, :-1])
    return logits.gather(-1, ids[:, 1:, None]).squeeze(-1).sum(-1)


def _wrong_log_prob_mean(model, ids):
    """Averages over the tokens: the log-probability of the
    whole text is the SUM of the tokens' log-probabilities."""
    return _solution_sequence_log_prob(model, ids) / (ids.shape[1] - 1)


def _run_log_prob_chain_rule(candidate) -> None:
    model = _step_model()
    ids = torch.tensor([[3, 17, 5, 42]])
    with torch.no_grad():
        expected = sum(
            torch.log_softmax(model(ids[:, : t + 1])[0, -1], -1)[ids[0, t + 1]] for t in range(3)
        )
    expect_close(
        candidate(model, ids.clone()),
        expected.reshape(1),
        "sequence_log_prob of [3, 17, 5, 42], token by token (chain rule)",
        atol=1e-4,
    )


def _run_log_prob_batch(candidate) -> None:
    model = _step_model()
    ids = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        loss = F.cross_entropy(
            model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten(), reduction="none"
        ).view(3, 7)
    out = candidate(model, ids.clone())
    expect_equal(tuple(out.shape), (3,), "shape: one number per sequence")
    expect_close(
        out,
        -loss.sum(-1),
        "log-probabilities of 3 sequences of 8 tokens (minus the summed cross-entropy)",
        atol=1e-4,
    )


register(
    Exercise(
        key="4.4",
        title="sequence_log_prob(model, ids): log p(ids[1:] | ids[0]) of each row of a (B, T) "
        "batch, summed over its tokens",
        cases=[
            Case("chain rule on one short text", _run_log_prob_chain_rule),
            Case("a batch of three texts", _run_log_prob_batch),
        ],
        solution=_solution_sequence_log_prob,
        wrong_answers=[_wrong_log_prob_unshifted, _wrong_log_prob_raw_logits, _wrong_log_prob_mean],
        hint="model(ids[:, :-1]) gives at position t the prediction for token t + 1; "
        "torch.log_softmax over the vocabulary, then .gather(-1, ids[:, 1:, None]) picks each "
        "actual next token's log-probability; sum over the positions.",
        difficulty=2,
    )
)
