"""Dequantization from scratch equals the ``gguf`` package's, type by type."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_files import Q, gguf, random_weight
from sydsgpt.quants import DEQUANTIZE, GGML_TYPES, QUANTIZE, dequantize

# gguf can quantize these itself; the K-quants are checked on random blocks below.
QUANTIZABLE = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def test_type_table_matches_the_gguf_package() -> None:
    for type_id, t in GGML_TYPES.items():
        ref = Q(type_id)
        assert ref.name == t.name
        assert gguf.GGML_QUANT_SIZES[ref] == (t.block_size, t.type_size), t.name


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_dequantize_quantized_weights_like_gguf(name: str) -> None:
    qtype = Q[name]
    weight = random_weight(8, 256, seed=qtype.value)
    raw = gguf.quants.quantize(weight, qtype)
    expected = gguf.quants.dequantize(raw, qtype).reshape(-1)
    got = dequantize(raw.view(np.uint8).reshape(-1), name)
    np.testing.assert_array_equal(got, expected)
    assert got.dtype == np.float32


def _random_blocks(name: str, n_blocks: int, seed: int) -> np.ndarray:
    """Random bytes for ``n_blocks`` blocks, with every float16 field a finite scale."""
    t = next(t for t in GGML_TYPES.values() if t.name == name)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(n_blocks, t.type_size), dtype=np.uint8)
    f16_fields = {
        "Q8_0": [0],
        "Q4_0": [0],
        "Q4_1": [0, 2],
        "Q5_0": [0],
        "Q5_1": [0, 2],
        "Q2_K": [80, 82],
        "Q3_K": [108],
        "Q4_K": [0, 2],
        "Q5_K": [0, 2],
        "Q6_K": [208],
    }[name]
    for start in f16_fields:
        scale = rng.uniform(-0.1, 0.1, (n_blocks, 1)).astype("<f2")
        blocks[:, start : start + 2] = scale.view(np.uint8)
    return blocks.reshape(-1)


@pytest.mark.parametrize(
    "name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
)
def test_dequantize_random_blocks_like_gguf(name: str) -> None:
    raw = _random_blocks(name, 64, seed=len(name))
    expected = gguf.quants.dequantize(raw, Q[name]).reshape(-1)
    got = dequantize(raw, name)
    # Same formula; the K-quants' products may associate differently (one float32 rounding).
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    if not name.endswith("_K"):
        np.testing.assert_array_equal(got, expected)


def test_one_q4_1_block_by_hand() -> None:
    """``d = 0.5``, ``m = -1``; byte ``j`` holds value ``j`` (low nibble) and ``j + 16`` (high)."""
    nibbles = np.arange(16, dtype=np.uint8)
    block = np.concatenate(
        [np.array([0.5, -1.0], dtype="<f2").view(np.uint8), nibbles | ((15 - nibbles) << 4)]
    )
    values = dequantize(block, "Q4_1")
    assert values[:16].tolist() == [0.5 * q - 1 for q in range(16)]
    assert values[16:].tolist() == [0.5 * (15 - q) - 1 for q in range(16)]


def test_f32_and_unsupported_types() -> None:
    x = np.array([1.5, -2.0], dtype="<f4")
    assert dequantize(x.view(np.uint8), "F32").tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="dequantizing Q8_1 is not supported"):
        dequantize(np.zeros(40, np.uint8), "Q8_1")
    with pytest.raises(ValueError, match="whole number of 34-byte blocks"):
        dequantize(np.zeros(35, np.uint8), "Q8_0")
    assert set(DEQUANTIZE) >= {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"}


@pytest.mark.parametrize("name", ["F32", "F16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantize_like_gguf(name: str) -> None:
    weight = random_weight(16, 256, seed=7)
    weight[0] = 0.0  # an all-zero block
    weight[1, :32] = 0.5  # a constant block
    weight[2, :32] = np.arange(32) / 8  # a ramp
    expected = gguf.quants.quantize(weight, Q[name]).view(np.uint8).reshape(-1)
    got = QUANTIZE[name](weight)
    np.testing.assert_array_equal(got, expected)
    back = dequantize(got, name).reshape(weight.shape)
    step = {"F32": 0, "F16": 1e-3, "Q8_0": 1 / 127, "Q4_0": 1 / 7, "Q4_1": 1 / 15}[name]
    amax = np.abs(weight).reshape(-1, 32).max(axis=1).repeat(32).reshape(weight.shape)
    assert np.all(np.abs(back - weight) <= step * amax * 1.01 + 1e-6)
