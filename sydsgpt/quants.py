"""GGML's tensor types and their dequantization to float32, from scratch (chapter 8).

A quantized GGUF tensor is a run of fixed-size *blocks*; each block stores a few numbers
at full-ish precision (a float16 scale ``d``, sometimes a minimum ``m``) and many small
integers ``q``. Dequantizing a block is one multiply-add per value:

=========  ======  =====  ===================================================================
type       values  bytes  block layout -> value
=========  ======  =====  ===================================================================
``Q8_0``   32      34     ``d`` (f16), 32 x int8 ``q``                  -> ``d * q``
``Q4_0``   32      18     ``d`` (f16), 16 bytes of 4-bit ``q``           -> ``d * (q - 8)``
``Q4_1``   32      20     ``d``, ``m`` (f16), 16 bytes of 4-bit ``q``     -> ``d * q + m``
``Q5_0``   32      22     ``d``, 32 fifth bits, 16 bytes of nibbles     -> ``d * (q - 16)``
``Q5_1``   32      24     ``d``, ``m``, 32 fifth bits, nibbles            -> ``d * q + m``
``Q2_K``   256     84     16 x (4-bit scale, 4-bit min), 2-bit ``q``, ``d``, ``dmin``
``Q3_K``   256     110    a third bit per value, 2-bit ``q``, 16 six-bit scales, ``d``
``Q4_K``   256     144    ``d``, ``dmin``; 8 sub-blocks of 32 with 6-bit scales and minimums
``Q5_K``   256     176    Q4_K plus a fifth bit per value
``Q6_K``   256     210    ``d``; 16 sub-blocks of 16 with int8 scales; 6-bit ``q - 32``
=========  ======  =====  ===================================================================

In the 4-bit types, byte ``j`` of a block holds value ``j`` in its low nibble and value
``j + 16`` in its high nibble (for Q4_K: ``j`` and ``j + 32`` of each 64-value group).
Every function here takes the raw bytes of whole blocks, ``(n_bytes,)`` uint8, and returns
``(n_values,)`` float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

U8 = np.ndarray  # raw bytes, dtype uint8


@dataclass(frozen=True)
class GGMLType:
    """One of GGML's tensor types: ``block_size`` values are stored in ``type_size`` bytes."""

    name: str
    id: int
    block_size: int
    type_size: int


# The ids are GGML's ``enum ggml_type``. Only these types can be read; the ones with a
# function in DEQUANTIZE can also be turned into float32.
GGML_TYPES: dict[int, GGMLType] = {
    t.id: t
    for t in (
        GGMLType("F32", 0, 1, 4),
        GGMLType("F16", 1, 1, 2),
        GGMLType("Q4_0", 2, 32, 18),
        GGMLType("Q4_1", 3, 32, 20),
        GGMLType("Q5_0", 6, 32, 22),
        GGMLType("Q5_1", 7, 32, 24),
        GGMLType("Q8_0", 8, 32, 34),
        GGMLType("Q8_1", 9, 32, 40),
        GGMLType("Q2_K", 10, 256, 84),
        GGMLType("Q3_K", 11, 256, 110),
        GGMLType("Q4_K", 12, 256, 144),
        GGMLType("Q5_K", 13, 256, 176),
        GGMLType("Q6_K", 14, 256, 210),
        GGMLType("Q8_K", 15, 256, 292),
        GGMLType("I8", 24, 1, 1),
        GGMLType("I16", 25, 1, 2),
        GGMLType("I32", 26, 1, 4),
        GGMLType("I64", 27, 1, 8),
        GGMLType("F64", 28, 1, 8),
        GGMLType("BF16", 30, 1, 2),
    )
}
"""GGML type id -> :class:`GGMLType`."""
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}
"""Type name (``"Q4_1"``) -> :class:`GGMLType`."""


def _blocks(raw: U8, type_size: int) -> U8:
    """``(n_bytes,)`` -> ``(n_blocks, type_size)`` (raises ValueError on a partial block)."""
    if raw.size % type_size:
        raise ValueError(f"{raw.size} bytes is not a whole number of {type_size}-byte blocks")
    return raw.reshape(-1, type_size)


def _f16(block_bytes: U8) -> np.ndarray:
    """``(n_blocks, 2)`` uint8 -> ``(n_blocks, 1)`` float32 (little-endian float16)."""
    return np.ascontiguousarray(block_bytes).view("<f2").astype(np.float32)


def _nibbles(qs: U8) -> np.ndarray:
    """``(n, k)`` bytes -> ``(n, 2k)``: all low nibbles first, then all high nibbles."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)


def dequantize_f32(raw: U8) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<f4").astype(np.float32)


def dequantize_f16(raw: U8) -> np.ndarray:
    return np.ascontiguousarray(raw).view("<f2").astype(np.float32)


def dequantize_bf16(raw: U8) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the 16 bits up."""
    top = np.ascontiguousarray(raw).view("<u2").astype(np.uint32)
    return (top << 16).view(np.float32)


def dequantize_q8_0(raw: U8) -> np.ndarray:
    """Blocks of ``d`` (f16) + 32 int8: value = ``d * q``."""
    b = _blocks(raw, 34)
    d = _f16(b[:, :2])  # (n, 1)
    q = np.ascontiguousarray(b[:, 2:]).view(np.int8).astype(np.float32)  # (n, 32)
    return (d * q).reshape(-1)


def dequantize_q4_0(raw: U8) -> np.ndarray:
    """Blocks of ``d`` (f16) + 16 bytes of nibbles: value = ``d * (q - 8)``."""
    b = _blocks(raw, 18)
    d = _f16(b[:, :2])  # (n, 1)
    return (d * (_nibbles(b[:, 2:]) - 8.0)).reshape(-1)  # (n, 32) -> (n*32,)


def dequantize_q4_1(raw: U8) -> np.ndarray:
    """Blocks of ``d``, ``m`` (f16) + 16 bytes of nibbles: value = ``d * q + m``."""
    b = _blocks(raw, 20)
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])  # (n, 1) each
    return (d * _nibbles(b[:, 4:]) + m).reshape(-1)


def _fifth_bits(qh: U8) -> np.ndarray:
    """Q5_0/Q5_1's 4 ``qh`` bytes (a little-endian u32) -> ``(n, 32)`` bit 4 of each value."""
    bits = np.unpackbits(np.ascontiguousarray(qh), axis=1, bitorder="little")  # (n, 32): bit j
    return bits.astype(np.float32) * 16.0


def dequantize_q5_0(raw: U8) -> np.ndarray:
    """Blocks of ``d`` (f16), 32 high bits, 16 bytes of nibbles: value = ``d * (q - 16)``."""
    b = _blocks(raw, 22)
    d = _f16(b[:, :2])  # (n, 1)
    q = _nibbles(b[:, 6:]) + _fifth_bits(b[:, 2:6])  # (n, 32), 0..31
    return (d * (q - 16.0)).reshape(-1)


def dequantize_q5_1(raw: U8) -> np.ndarray:
    """Blocks of ``d``, ``m`` (f16), 32 high bits, 16 bytes of nibbles: value = ``d * q + m``."""
    b = _blocks(raw, 24)
    d, m = _f16(b[:, 0:2]), _f16(b[:, 2:4])  # (n, 1) each
    q = _nibbles(b[:, 8:]) + _fifth_bits(b[:, 4:8])  # (n, 32)
    return (d * q + m).reshape(-1)


def _k4_scales(s: U8) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's 12 scale bytes -> 8 six-bit scales and 8 six-bit minimums, ``(n, 8)`` each.

    Sub-blocks 0-3 keep their scale and minimum in the low 6 bits of bytes 0-3 and 4-7;
    sub-blocks 4-7 have their low 4 bits in bytes 8-11 and their top 2 bits in the spare
    top bits of bytes 0-7.
    """
    s = s.astype(np.uint8)
    low_sc, low_m = s[:, 0:4] & 63, s[:, 4:8] & 63
    high_sc = (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)
    high_m = (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)
    scales = np.concatenate([low_sc, high_sc], axis=1).astype(np.float32)
    mins = np.concatenate([low_m, high_m], axis=1).astype(np.float32)
    return scales, mins


def _two_bit_groups(qs: U8) -> np.ndarray:
    """Q2_K/Q3_K's 64 bytes of 2-bit ``q`` -> ``(n, 16, 16)`` in output order.

    Each half (128 values) uses 32 bytes four times, shifting by 0, 2, 4, 6 bits; each pass
    gives 16 values from bytes 0-15, then 16 from bytes 16-31.
    """
    n = qs.shape[0]
    q = qs.reshape(n, 2, 1, 2, 16)  # (n, half, -, part, 16)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1, 1)
    return ((q >> shifts) & 3).reshape(n, 16, 16)  # (n, half*8 + pass*2 + part, 16)


def dequantize_q2_k(raw: U8) -> np.ndarray:
    """256-value blocks: 16 sub-blocks of 16 with a 4-bit scale and a 4-bit minimum each;
    value = ``d * scale_j * q - dmin * min_j`` with 2-bit ``q``."""
    b = _blocks(raw, 84)
    scales = (b[:, :16] & 0x0F).astype(np.float32)  # (n, 16)
    mins = (b[:, :16] >> 4).astype(np.float32)
    q = _two_bit_groups(b[:, 16:80]).astype(np.float32)  # (n, 16, 16)
    d, dmin = _f16(b[:, 80:82]), _f16(b[:, 82:84])  # (n, 1)
    return ((d * scales)[:, :, None] * q - (dmin * mins)[:, :, None]).reshape(-1)


def dequantize_q3_k(raw: U8) -> np.ndarray:
    """256-value blocks: 2-bit ``q`` plus a third bit in ``hmask`` (set: ``q``, clear:
    ``q - 4``), 16 sub-blocks of 16 with signed 6-bit scales; value = ``d * scale_j * q``."""
    b = _blocks(raw, 110)
    n = b.shape[0]
    hmask, s = b[:, :32], b[:, 96:108]
    low = np.concatenate([s[:, :8] & 0x0F, s[:, :8] >> 4], axis=1)  # (n, 16): 4 low bits
    high = np.concatenate([(s[:, 8:12] >> shift) & 3 for shift in (0, 2, 4, 6)], axis=1)
    scales = (low | (high << 4)).astype(np.float32) - 32.0  # (n, 16)
    q = _two_bit_groups(b[:, 32:96]).astype(np.float32)  # (n, 16, 16)
    # Bit 4*half + pass of hmask byte l (l: the byte of its 32-byte pass) is the third bit.
    bits = np.stack([(hmask >> k) & 1 for k in range(8)], axis=1).reshape(n, 8, 2, 16)
    q = q - 4.0 * (1 - bits.reshape(n, 16, 16).astype(np.float32))
    d = _f16(b[:, 108:110])  # (n, 1)
    return ((d * scales)[:, :, None] * q).reshape(-1)


def dequantize_q4_k(raw: U8) -> np.ndarray:
    """256-value super-blocks: value = ``d * scale_j * q - dmin * min_j`` in sub-block ``j``."""
    b = _blocks(raw, 144)
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])  # (n, 1)
    scales, mins = _k4_scales(b[:, 4:16])  # (n, 8)
    qs = b[:, 16:].reshape(n, 4, 32)  # 4 groups of 64 values, 32 bytes each
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).astype(np.float32)  # (n, 4, 2, 32)
    q = q.reshape(n, 8, 32)  # sub-block 2g: low nibbles of group g, 2g+1: high nibbles
    out = (d * scales)[:, :, None] * q - (dmin * mins)[:, :, None]
    return out.reshape(-1)


def dequantize_q5_k(raw: U8) -> np.ndarray:
    """Q4_K with a fifth bit: ``qh`` bit ``2g`` (``2g + 1``) of byte ``l`` tops the low (high)
    nibble of byte ``l`` of 64-value group ``g``."""
    b = _blocks(raw, 176)
    n = b.shape[0]
    d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])  # (n, 1)
    scales, mins = _k4_scales(b[:, 4:16])  # (n, 8)
    qh = b[:, 16:48]  # (n, 32)
    qs = b[:, 48:].reshape(n, 4, 32)  # 4 groups of 64 values
    high = np.stack([(qh >> bit) & 1 for bit in range(8)], axis=1).reshape(n, 4, 2, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2) | (high << 4)  # (n, 4, 2, 32)
    q = q.astype(np.float32).reshape(n, 8, 32)
    out = (d * scales)[:, :, None] * q - (dmin * mins)[:, :, None]
    return out.reshape(-1)


def dequantize_q6_k(raw: U8) -> np.ndarray:
    """256-value super-blocks of 6-bit ``q`` (4 low bits in ``ql``, 2 high bits in ``qh``):
    value = ``d * scale_j * (q - 32)`` with an int8 scale per 16 values."""
    b = _blocks(raw, 210)
    n = b.shape[0]
    ql = b[:, :128].reshape(n, 2, 64)  # two halves of 128 values
    qh = b[:, 128:192].reshape(n, 2, 32)
    scales = np.ascontiguousarray(b[:, 192:208]).view(np.int8).astype(np.float32)  # (n, 16)
    d = _f16(b[:, 208:210])  # (n, 1)
    low = np.stack(
        [ql[:, :, :32] & 0x0F, ql[:, :, 32:] & 0x0F, ql[:, :, :32] >> 4, ql[:, :, 32:] >> 4], axis=2
    )  # (n, 2, 4, 32): the four 32-value quarters
    high = np.stack([(qh >> shift) & 3 for shift in (0, 2, 4, 6)], axis=2)  # (n, 2, 4, 32)
    q = (low | (high << 4)).astype(np.float32) - 32.0
    q = q.reshape(n, 16, 16)  # 16 sub-blocks of 16 values, in output order
    return ((d * scales)[:, :, None] * q).reshape(-1)


DEQUANTIZE: dict[str, Callable[[U8], np.ndarray]] = {
    "F32": dequantize_f32,
    "F16": dequantize_f16,
    "BF16": dequantize_bf16,
    "Q8_0": dequantize_q8_0,
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
    "Q2_K": dequantize_q2_k,
    "Q3_K": dequantize_q3_k,
    "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k,
    "Q6_K": dequantize_q6_k,
}
"""Type name -> its dequantization, raw block bytes ``(n_bytes,)`` -> float32 ``(n_values,)``."""


def dequantize(raw: U8, type_name: str) -> np.ndarray:
    """Dequantize the raw bytes of a tensor of type ``type_name`` to flat float32."""
    if type_name not in DEQUANTIZE:
        raise ValueError(
            f"dequantizing {type_name} is not supported (supported: {', '.join(DEQUANTIZE)})"
        )
    return DEQUANTIZE[type_name](np.asarray(raw, dtype=np.uint8).reshape(-1))


# ---------------------------------------------------------------------------- quantization


def _as_blocks(values: np.ndarray, block_size: int) -> np.ndarray:
    """Flat float32 values -> ``(n_blocks, block_size)`` (a partial block is an error)."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if x.size % block_size:
        raise ValueError(f"{x.size} values do not fill whole blocks of {block_size}")
    return x.reshape(-1, block_size)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """``1 / d``, and 0 where ``d`` is 0 (an all-zero block stays zero)."""
    safe = np.where(d == 0, np.float32(1), d)
    return np.where(d == 0, np.float32(0), np.float32(1) / safe).astype(np.float32)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """``(n, 32)`` values 0..15 -> ``(n, 16)`` bytes: value ``j`` low, value ``j + 16`` high."""
    q = q.astype(np.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    """``(n, 1)`` float32 -> ``(n, 2)`` bytes of little-endian float16."""
    return x.astype("<f2").view(np.uint8)


def quantize_q8_0(values: np.ndarray) -> np.ndarray:
    """Blocks of 32: ``d = max|x| / 127``, ``q = round(x / d)`` (halves away from zero, as C's
    ``roundf``), stored as ``d`` (f16) + 32 int8. Returns the raw bytes, ``(n_bytes,)`` uint8."""
    x = _as_blocks(values, 32)
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)  # (n, 1)
    scaled = (x * _reciprocal(d)).astype(np.float64)  # the reference multiplies by 1/d
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)  # roundf, exact in float64
    return np.concatenate([_f16_bytes(d), q.astype(np.int8).view(np.uint8)], axis=1).reshape(-1)


def quantize_q4_0(values: np.ndarray) -> np.ndarray:
    """Blocks of 32: ``d = -m / 8`` for the value ``m`` of largest magnitude (so ``m`` maps to
    ``q = 0`` and the range is ``-8 d .. 7 d``), ``q = min(15, trunc(x / d + 8.5))``."""
    x = _as_blocks(values, 32)
    extreme = np.take_along_axis(x, np.abs(x).argmax(axis=1)[:, None], axis=1)  # (n, 1)
    d = extreme / np.float32(-8)
    q = np.minimum(15, np.trunc(x * _reciprocal(d) + np.float32(8.5)))  # float32, as in C
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1).reshape(-1)


def quantize_q4_1(values: np.ndarray) -> np.ndarray:
    """Blocks of 32: ``m = min x``, ``d = (max x - m) / 15``,
    ``q = min(15, trunc((x - m) / d + 0.5))``."""
    x = _as_blocks(values, 32)
    low, high = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = (high - low) / np.float32(15)
    q = np.minimum(15, np.trunc((x - low) * _reciprocal(d) + np.float32(0.5)))
    return np.concatenate([_f16_bytes(d), _f16_bytes(low), _pack_nibbles(q)], axis=1).reshape(-1)


QUANTIZE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "F32": lambda x: np.asarray(x, dtype="<f4").reshape(-1).view(np.uint8),
    "F16": lambda x: np.asarray(x, dtype=np.float32).astype("<f2").reshape(-1).view(np.uint8),
    "Q8_0": quantize_q8_0,
    "Q4_0": quantize_q4_0,
    "Q4_1": quantize_q4_1,
}
"""Type name -> its quantization, float32 values -> raw block bytes ``(n_bytes,)`` uint8."""
