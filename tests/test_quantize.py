"""Quantizing our own models (sydsgpt.quantize): the formats' error bounds, the layers against
their references, whole models against the float model, and the benchmark's quick mode."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from helpers import seeded_randn, tiny_model
from sydsgpt.bench import quantization
from sydsgpt.book import load_book_checkpoint
from sydsgpt.cli import main
from sydsgpt.corpora import load_corpus
from sydsgpt.data import train_val_split
from sydsgpt.generate import generate
from sydsgpt.quantize import (
    INT8_MAX,
    Int8Linear,
    Q4Linear,
    dequantize_int8_rows,
    dequantize_q4_rows,
    model_weight_bytes,
    quantize_int8_rows,
    quantize_model,
    quantize_q4_rows,
)
from sydsgpt.quants import dequantize_q4_0, quantize_q4_0


def _weights(out: int = 48, n_in: int = 96, seed: int = 0) -> torch.Tensor:
    """Weights with rows of very different sizes (and one all-zero row)."""
    w = seeded_randn(out, n_in, seed=seed) * torch.logspace(-3, 0, out)[:, None]
    w[5] = 0.0
    return w


def _linear(w: torch.Tensor, bias: bool = True) -> nn.Linear:
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias)
    with torch.no_grad():
        layer.weight.copy_(w)
        if bias:
            layer.bias.copy_(seeded_randn(w.shape[0], seed=1))
    return layer


# --------------------------------------------------------------------------- int8


def test_int8_round_trip_error_is_at_most_half_a_step() -> None:
    w = _weights()
    q, scale = quantize_int8_rows(w)
    assert q.dtype == torch.int8 and scale.shape == (48,) and int(q.abs().max()) == INT8_MAX
    error = (w - dequantize_int8_rows(q, scale)).abs()
    # Rounding w / scale to the nearest integer moves it by <= 1/2, so the weight by <= scale/2;
    # the 1e-6 allows float32's rounding of w / scale and of scale * q (2^-24 each, relative).
    assert (error <= scale[:, None] * (0.5 + 1e-6)).all()
    assert scale[5] == 0 and (q[5] == 0).all()  # an all-zero row stays zero


def test_int8_linear_weight_only_equals_its_reference() -> None:
    layer = Int8Linear.from_linear(_linear(_weights()))
    x = seeded_randn(3, 7, 96, seed=2)
    with torch.no_grad():
        got, reference = layer(x), layer.forward_reference(x)
    assert got.shape == (3, 7, 48) and layer.bias is not None and layer.bias.dtype == torch.float32
    expected = nn.functional.linear(x, layer.dequantized_weight(), layer.bias)
    torch.testing.assert_close(reference, expected)
    torch.testing.assert_close(got, reference)  # the same sums; the scale applied after them


def test_int8_dynamic_is_within_the_activation_rounding() -> None:
    layer = Int8Linear.from_linear(_linear(_weights()), dynamic=True)
    x = seeded_randn(3, 7, 96, seed=2)
    with torch.no_grad():
        fast, reference = layer(x), layer.forward_reference(x)
    assert fast.shape == (3, 7, 48)
    # The CPU kernel rounds x to integers per call over the range [min(x, 0), max(x, 0)] split
    # into 127 steps (reduce_range); a rounded input is off by at most one step (half a step,
    # plus half of one from the zero point's rounding), so output o moves by at most
    # step * sum_i |w_oi|.
    step = (x.max().clamp(min=0) - x.min().clamp(max=0)) / 127
    bound = step * layer.dequantized_weight().abs().sum(dim=1) + 1e-5
    assert ((fast - reference).abs() <= bound).all()
    assert not torch.allclose(fast, reference)  # it really took the kernel


def test_int8_dynamic_repacks_reloaded_weights() -> None:
    layer = Int8Linear.from_linear(_linear(_weights(), bias=False), dynamic=True)
    other = Int8Linear.from_linear(_linear(_weights(seed=3), bias=False), dynamic=True)
    x = seeded_randn(4, 96, seed=4)
    with torch.no_grad():
        layer(x)  # packs the first weights
        layer.load_state_dict(other.state_dict())  # new weights in place: repacked
        torch.testing.assert_close(layer(x), other(x))
        x.requires_grad_(True)  # with gradients the layer takes the weight-only path
    assert torch.equal(layer(x), layer.forward_in_chunks(x))


def test_int8_dynamic_without_the_kernel_is_weight_only(monkeypatch) -> None:
    # Where PyTorch has no quantized engine (or on a GPU) the layer takes the weight-only path.
    monkeypatch.setattr("sydsgpt.quantize._pack_for_dynamic_int8", lambda q, scale: None)
    layer = Int8Linear.from_linear(_linear(_weights()), dynamic=True)
    x = seeded_randn(2, 96, seed=7)
    with torch.no_grad():
        assert torch.equal(layer(x), layer.forward_in_chunks(x))


# --------------------------------------------------------------------------- 4-bit


def test_q4_rows_are_the_bytes_of_quants_q4_0() -> None:
    w = _weights()
    nibbles, d = quantize_q4_rows(w)
    assert nibbles.shape == (48, 3, 16) and nibbles.dtype == torch.uint8
    assert d.shape == (48, 3) and d.dtype == torch.float16
    raw = quantize_q4_0(w.numpy().reshape(-1)).reshape(48, 3, 18)
    assert np.array_equal(raw[:, :, 2:], nibbles.numpy())
    assert np.array_equal(raw[:, :, :2].copy().view("<f2")[..., 0], d.numpy())
    expected = dequantize_q4_0(raw.reshape(-1)).reshape(48, 96)
    assert np.array_equal(dequantize_q4_rows(nibbles, d).numpy(), expected)


def test_q4_block_error_bound() -> None:
    w = _weights(seed=5)
    nibbles, d16 = quantize_q4_rows(w)
    blocks = w.reshape(48, 3, 32)
    error = (blocks - dequantize_q4_rows(nibbles, d16).reshape(48, 3, 32)).abs()
    # Q4_0 takes the block's largest-magnitude value m and d = m / -8, so m is q = 0 (-8 steps)
    # and the range is -8..+7 steps. Every value up to 7.5 steps rounds to its nearest step
    # (error <= |d| / 2); a value beyond 7.5 steps (only possible opposite m) is clamped to +7,
    # off by < 1 step. Storing d as float16 moves a value by at most 8 |d - d16|.
    m = blocks.gather(2, blocks.abs().argmax(dim=2, keepdim=True))  # (48, 3, 1)
    d = m / -8
    stored = 8 * (d - d16.float()[..., None]).abs()
    clamped = torch.where(d == 0, torch.zeros_like(blocks), blocks / d) > 7.5
    assert (error <= d.abs() * (0.5 + 1e-6) + stored)[~clamped].all()
    assert (error <= d.abs() * (1 + 1e-6) + stored).all()
    assert clamped.any()  # the test data has values the clamp reaches


@pytest.mark.parametrize("layer_type", [Int8Linear, Q4Linear])
def test_chunks_equal_the_whole_product(layer_type, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = layer_type.from_linear(_linear(_weights()))
    x = seeded_randn(2, 5, 96, seed=6)
    with torch.no_grad():
        whole = layer(x)
        monkeypatch.setattr("sydsgpt.quantize.CHUNK_VALUES", 96 * 7)  # 7 rows at a time
        chunked = layer(x)
    assert chunked.shape == (2, 5, 48)
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(whole, layer.forward_reference(x))


# --------------------------------------------------------------------------- whole models


def _modern(seed: int = 0) -> nn.Module:
    return tiny_model(
        seed,
        embedding_dim=64,
        num_heads=4,
        num_kv_heads=2,
        ffn="swiglu",
        norm="rmsnorm",
        positions="rope",
        ffn_hidden_dim=128,
        linear_bias=False,
        qkv_bias=False,
        tie_weights=True,
    )


@pytest.mark.parametrize(
    "scheme, tolerance", [("int8", 0.015), ("int8-dynamic", 0.05), ("q4", 0.25)]
)
@pytest.mark.parametrize(
    "build", [lambda: tiny_model(embedding_dim=64), _modern], ids=["gpt2", "modern"]
)
def test_quantized_model_is_close_to_the_float_model(build, scheme: str, tolerance: float) -> None:
    model = build()
    with torch.no_grad():  # a larger head, so the logits are not all near zero
        model.output_projection.weight.mul_(20)
    quantized = copy.deepcopy(model)
    report = quantize_model(quantized, scheme)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert report.replaced == linears and not report.kept_float
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    assert isinstance(quantized.token_embedding, nn.Embedding)  # embeddings stay float
    assert report.tied_head == bool(model.config.tie_weights)
    assert report.bytes_after < report.bytes_before == model_weight_bytes(model)
    ids = torch.randint(0, 61, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = model(ids), quantized(ids)
    # Every weight moves by <= half a step: 1/254 of its row's largest (int8), 1/16 of its
    # block's (4-bit); int8-dynamic's activations add 1/254 of their range. Through two blocks
    # and the head the worst of seeds 0-19 was 0.0074 (int8), 0.023 (int8-dynamic) and 0.11
    # (4-bit) of the logits' range; the tolerances are about twice that.
    assert (got - want).abs().max() <= tolerance * (want.max() - want.min())
    out = generate(quantized, ids[:1, :4], 6, use_cache=True)
    assert out.shape == (1, 10)


def test_model_weight_bytes_counts_the_stored_formats() -> None:
    model = tiny_model(embedding_dim=64, tie_weights=False)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    weights = sum(m.weight.numel() for m in linears)
    rows = sum(m.out_features for m in linears)
    before = model_weight_bytes(model)
    int8 = copy.deepcopy(model)
    quantize_model(int8, "int8")
    assert before - model_weight_bytes(int8) == 3 * weights - 4 * rows  # 4 -> 1 byte, + a scale
    q4 = copy.deepcopy(model)
    quantize_model(q4, "q4")
    assert before - model_weight_bytes(q4) == 4 * weights - weights // 2 - 2 * (weights // 32)


def test_quantize_model_skips_and_refuses() -> None:
    model = tiny_model()  # embedding_dim 16: not a whole 4-bit block
    report = quantize_model(copy.deepcopy(model), "q4")
    assert "output_projection" in report.kept_float
    assert report.replaced == [
        "transformer_blocks.0.feed_forward.layers.2",  # 64 inputs
        "transformer_blocks.1.feed_forward.layers.2",
    ]
    report = quantize_model(copy.deepcopy(model), "int8", skip=("output_projection",))
    assert "output_projection" not in report.replaced and not report.tied_head
    assert "transformer_blocks.0.attention.output_projection" in report.kept_float
    with pytest.raises(ValueError, match="scheme 'int4'; choose one of int8, int8-dynamic, q4"):
        quantize_model(model, "int4")


# --------------------------------------------------------------------------- the book checkpoint


@pytest.fixture(scope="module")
def book_eval():
    """The book checkpoint, and bits per byte on the held-out split's first 8,000 characters
    (2,816 tokens: 11 sequences of its context length)."""
    book = load_book_checkpoint()
    text = train_val_split(load_corpus("tinyshakespeare"), 0.1)[1][:8000]
    evaluate = quantization.text_evaluator(book.tokenizer, text, book.model.config.context_length)
    return book, evaluate, evaluate(book.model)[1]


# Measured (this CPU), bits per byte above float32: on the whole held-out split int8 +0.0000,
# int8-dynamic (the kernel's 7-bit activations too) +0.0194, 4 bits +0.0024; on this slice
# +0.0000, +0.0191 and +0.0061 (a short slice swings by a few thousandths). Bounds: 0.01 for
# int8 (the goal we set), 0.04 for int8-dynamic (about twice what this checkpoint's
# activations cost; the first book checkpoint, GPT-2 blocks, paid +0.0017), 0.02 for 4 bits.
# Broken formats fail them (measured on the first book checkpoint): swapped nibbles +2.2, a
# 4-bit offset of 7 instead of 8 +0.12, int8 scales 5% too large +0.03 bits per byte.
@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
@pytest.mark.parametrize("scheme, bound", [("int8", 0.01), ("int8-dynamic", 0.04), ("q4", 0.02)])
def test_book_checkpoint_quality_survives_quantization(
    book_eval, scheme: str, bound: float
) -> None:
    book, evaluate, float_bpb = book_eval
    quantized = copy.deepcopy(book.model)
    report = quantize_model(quantized, scheme)
    linears = sum(isinstance(m, nn.Linear) for m in book.model.modules())  # the head too
    assert report.tied_head and len(report.replaced) == linears
    assert abs(evaluate(quantized)[1] - float_bpb) <= bound
    ids = torch.tensor([book.tokenizer.encode("ROMEO:")])
    assert generate(quantized, ids, 8, use_cache=True).shape == (1, ids.shape[1] + 8)


@pytest.mark.slow  # 0.5 s or more in all: keeps the fast lane within 30 s
def test_quick_benchmark_writes_every_row_and_field(tmp_path, capsys) -> None:
    assert main(["bench", "--what", "quantization", "--quick", "--out", str(tmp_path)]) == 0
    assert "tiny-random" in capsys.readouterr().out
    result = json.loads((tmp_path / "quantization_cpu.json").read_text())
    assert result["benchmark"] == "quantization" and result["quick"] is True
    assert [(r["model"], r["scheme"]) for r in result["rows"]] == [
        ("tiny-random", s) for s in ("fp32", "int8", "int8-dynamic", "q4")
    ]
    for row in result["rows"]:
        assert set(quantization.ROW_FIELDS) <= set(row)
    assert {"machine", "loadavg_before", "loadavg_after", "memory", "threads"} <= set(result)
    fp32, int8, dynamic, q4 = result["rows"]
    assert fp32["weight_bytes"] > int8["weight_bytes"] == dynamic["weight_bytes"]
    assert dynamic["weight_bytes"] > q4["weight_bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_smollm2_quantized_still_names_paris(scheme: str) -> None:
    from gguf_files import smollm2_path

    from sydsgpt.chat import encode_chat
    from sydsgpt.smollm2 import load_smollm2

    model, tokenizer = load_smollm2(smollm2_path(), context_length=64)
    report = quantize_model(model, scheme)
    assert len(report.replaced) == 30 * 7 + 1 and report.tied_head  # 7 linears a block, the head
    assert report.bytes_after < report.bytes_before / 2
    question = [{"role": "user", "content": "What is the capital of France?"}]
    ids = torch.tensor([encode_chat(tokenizer, question)])
    answer = generate(model, ids, 12, eos_id=tokenizer.eos_id)[0, ids.shape[1] :]
    assert "Paris" in tokenizer.decode(answer.tolist())
