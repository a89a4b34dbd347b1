"""Chapter 4 exercises: a whole model's parameter count, one greedy step with cropping,
and splitting GPT-2's fused query/key/value weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import SydsGPT
from .checker import Case, Exercise, expect_close, expect_equal, register

# ---------------------------------------------------------------- 4.1 parameter count of a config


def _solution_count_parameters(config: dict) -> int:
    d, v = config["embedding_dim"], config["vocab_size"]
    embeddings = v * d + config["context_length"] * d  # token and position tables
    attention = 3 * d * d + (3 * d if config["qkv_bias"] else 0) + d * d + d
    feed_forward = d * 4 * d + 4 * d + 4 * d * d + d
    layer_norms = 2 * 2 * d
    blocks = config["num_layers"] * (attention + feed_forward + layer_norms)
    final_norm = 2 * d
    head = 0 if config["tie_weights"] else v * d  # a tied head reuses the token table
    return embeddings + blocks + final_norm + head


def _wrong_count_forgets_biases(config: dict) -> int:
    d, v = config["embedding_dim"], config["vocab_size"]
    head = 0 if config["tie_weights"] else v * d
    return v * d + config["context_length"] * d + config["num_layers"] * (12 * d * d + 4 * d) + 2 * d + head


def _wrong_count_double_counts_tied_head(config: dict) -> int:
    return _solution_count_parameters({**config, "tie_weights": False})


def _wrong_count_forgets_positions(config: dict) -> int:
    return _solution_count_parameters(config) - config["context_length"] * config["embedding_dim"]


def _count_case(description: str, config: dict) -> Case:
    def run(candidate) -> None:
        full = {"num_heads": 2, "dropout": 0.0, **config}
        expected = sum(p.numel() for p in SydsGPT(full).parameters())  # shared tensors counted once
        expect_equal(int(candidate(dict(full))), expected, f"count_parameters({description})")

    return Case(description, run)


register(
    Exercise(
        key="4.1",
        title="count_parameters(config): the number of parameters of SydsGPT(config), without building it",
        cases=[
            _count_case(
                "vocab 100, width 8, context 16, 1 layer, untied, no qkv bias",
                {"vocab_size": 100, "embedding_dim": 8, "context_length": 16, "num_layers": 1, "qkv_bias": False, "tie_weights": False},
            ),
            _count_case(
                "vocab 100, width 8, context 16, 2 layers, tied head, qkv bias",
                {"vocab_size": 100, "embedding_dim": 8, "context_length": 16, "num_layers": 2, "qkv_bias": True, "tie_weights": True},
            ),
            _count_case(
                "vocab 50257, width 64, context 256, 3 layers, tied head, no qkv bias",
                {"vocab_size": 50257, "embedding_dim": 64, "context_length": 256, "num_layers": 3, "qkv_bias": False, "tie_weights": True},
            ),
        ],
        solution=_solution_count_parameters,
        wrong_answers=[_wrong_count_forgets_biases, _wrong_count_double_counts_tied_head, _wrong_count_forgets_positions],
        hint="Add up: token table (vocab x d) + position table (context x d) + num_layers blocks (exercise 3.3) + "
        "the final LayerNorm (2d) + the head (vocab x d, but 0 when tie_weights is True: it is the token table).",
    )
)

# ---------------------------------------------------------------- 4.2 one greedy step with cropping

_STEP_CONFIG = {"vocab_size": 50, "embedding_dim": 16, "context_length": 8, "num_layers": 2, "num_heads": 2, "dropout": 0.0, "qkv_bias": True}


def _solution_greedy_step(model: torch.nn.Module, input_ids: torch.Tensor, context_length: int) -> torch.Tensor:
    window = input_ids[:, -context_length:]  # the model sees only the last context_length tokens
    with torch.no_grad():
        logits = model(window)[:, -1, :]  # (B, vocab): the prediction after the last token
    next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    return torch.cat([input_ids, next_id], dim=1)


def _wrong_step_no_cropping(model: torch.nn.Module, input_ids: torch.Tensor, context_length: int) -> torch.Tensor:
    with torch.no_grad():
        next_id = model(input_ids)[:, -1, :].argmax(dim=-1, keepdim=True)
    return torch.cat([input_ids, next_id], dim=1)


def _wrong_step_first_position(model: torch.nn.Module, input_ids: torch.Tensor, context_length: int) -> torch.Tensor:
    with torch.no_grad():
        next_id = model(input_ids[:, -context_length:])[:, 0, :].argmax(dim=-1, keepdim=True)
    return torch.cat([input_ids, next_id], dim=1)


def _wrong_step_keeps_oldest(model: torch.nn.Module, input_ids: torch.Tensor, context_length: int) -> torch.Tensor:
    with torch.no_grad():
        next_id = model(input_ids[:, :context_length])[:, -1, :].argmax(dim=-1, keepdim=True)
    return torch.cat([input_ids, next_id], dim=1)


def _step_model() -> SydsGPT:
    torch.manual_seed(0)
    return SydsGPT(_STEP_CONFIG).eval()


def _step_case(description: str, batch: int, length: int) -> Case:
    def run(candidate) -> None:
        model = _step_model()
        ids = torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = model(ids[:, -8:])[:, -1, :].argmax(dim=-1)  # (B,)
        out = candidate(model, ids.clone(), 8)
        expect_equal(tuple(out.shape), (batch, length + 1), "output shape")
        expect_equal(out[:, :length].tolist(), ids.tolist(), "the prompt part of the output")
        expect_equal(out[:, -1].tolist(), expected.tolist(), "the appended token id(s)")

    return Case(description, run)


register(
    Exercise(
        key="4.2",
        title="greedy_step(model, input_ids, context_length): append the most likely next token, seeing at most context_length tokens",
        cases=[
            _step_case("a 5-token prompt (shorter than the context of 8)", batch=1, length=5),
            _step_case("a batch of 2 prompts of 8 tokens", batch=2, length=8),
            _step_case("a 13-token prompt, longer than the context of 8", batch=1, length=13),
        ],
        solution=_solution_greedy_step,
        wrong_answers=[_wrong_step_no_cropping, _wrong_step_first_position, _wrong_step_keeps_oldest],
        hint="Crop with input_ids[:, -context_length:] (the newest tokens), take the logits of the LAST position "
        "[:, -1, :], argmax over the vocabulary with keepdim=True, and concatenate along dim=1.",
    )
)

# ---------------------------------------------------------------- 4.3 splitting GPT-2's c_attn


def _solution_split_c_attn(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    d = weight.shape[0]
    w = weight.t()  # Conv1D (d, 3d) -> nn.Linear layout (3d, d)
    return w[:d], w[d : 2 * d], w[2 * d :], bias[:d], bias[d : 2 * d], bias[2 * d :]


def _wrong_split_no_transpose(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    d = weight.shape[0]
    return weight[:, :d], weight[:, d : 2 * d], weight[:, 2 * d :], bias[:d], bias[d : 2 * d], bias[2 * d :]


def _wrong_split_rows(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    wq, wk, wv = weight.t().chunk(3, dim=1)  # cuts every output row into thirds instead of taking 3 blocks of rows
    bq, bk, bv = bias.chunk(3)
    return wq, wk, wv, bq, bk, bv


def _wrong_split_key_value_swapped(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, ...]:
    wq, wk, wv, bq, bk, bv = _solution_split_c_attn(weight, bias)
    return wq, wv, wk, bq, bv, bk


def _c_attn_example(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, 3 * d, generator=g), torch.randn(3 * d, generator=g), torch.randn(2, 5, d, generator=g)


def _run_split_shapes(candidate) -> None:
    weight, bias, _ = _c_attn_example(6, 0)
    parts = candidate(weight, bias)
    expect_equal(len(parts), 6, "number of returned tensors (wq, wk, wv, bq, bk, bv)")
    expect_equal([tuple(p.shape) for p in parts], [(6, 6)] * 3 + [(6,)] * 3, "shapes")


def _split_same_function_case(d: int, seed: int) -> Case:
    def run(candidate) -> None:
        weight, bias, x = _c_attn_example(d, seed)
        fused = x @ weight + bias  # what GPT-2's Conv1D computes: (2, 5, 3d), queries | keys | values
        wq, wk, wv, bq, bk, bv = candidate(weight, bias)
        for name, w, b, part in (("query", wq, bq, 0), ("key", wk, bk, 1), ("value", wv, bv, 2)):
            expect_close(F.linear(x, w, b), fused[..., part * d : (part + 1) * d], f"F.linear(x, w{name[0]}, b{name[0]}) vs the {name} third of x @ weight + bias", atol=1e-5)

    return Case(f"nn.Linear with the parts computes what c_attn computes (d = {d})", run)


register(
    Exercise(
        key="4.3",
        title="split_c_attn(weight, bias): GPT-2's Conv1D query/key/value weight (d, 3d) as three nn.Linear weights",
        cases=[
            Case("returns six tensors of the right shapes", _run_split_shapes),
            _split_same_function_case(6, 1),
            _split_same_function_case(12, 2),
        ],
        solution=_solution_split_c_attn,
        wrong_answers=[_wrong_split_no_transpose, _wrong_split_rows, _wrong_split_key_value_swapped],
        hint="Conv1D computes x @ weight + bias, nn.Linear computes x @ w.T + b. Transpose weight to (3d, d), "
        "then take rows [0:d] for queries, [d:2d] for keys and [2d:3d] for values; split the bias the same way.",
    )
)
