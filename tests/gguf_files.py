"""Small GGUF files written with the ``gguf`` package (the reference writer), for the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

gguf = __import__("pytest").importorskip("gguf")
from gguf.quants import quantize  # noqa: E402

Q = gguf.GGMLQuantizationType


def random_weight(rows: int, cols: int, seed: int) -> np.ndarray:
    """``(rows, cols)`` float32 from a normal distribution with some large values."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.05, (rows, cols)).astype(np.float32)
    w[rng.random((rows, cols)) < 0.01] *= 20.0
    return w


def add_quantized(writer: Any, name: str, weight: np.ndarray, qtype: Any) -> None:
    """Store ``weight`` (float32, PyTorch shape) in ``qtype`` (F32 stays as it is)."""
    if qtype == Q.F32:
        writer.add_tensor(name, weight)
        return
    writer.add_tensor(name, quantize(weight, qtype), raw_dtype=qtype)


def write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, Any]],
               metadata: dict[str, Any] | None = None, arch: str = "llama") -> Path:
    """Write ``tensors`` (name -> (float32 weight, type)) and typed ``metadata`` to ``path``.

    ``metadata`` values: str, bool, int (u32), float (f32), or a list (an array).
    """
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (metadata or {}).items():
        if key == "general.alignment":
            writer.add_custom_alignment(value)  # also pads the data as it says
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_array(key, list(value))
    for name, (weight, qtype) in tensors.items():
        add_quantized(writer, name, weight, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def small_gguf(path: Path) -> Path:
    """A ~5 KB file with every scalar type, strings, nested arrays and tensors of several types."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60000)
    writer.add_int16("t.i16", -30000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 1.5)
    writer.add_uint64("t.u64", 2**60)
    writer.add_int64("t.i64", -(2**60))
    writer.add_float64("t.f64", 0.1)
    writer.add_bool("t.bool", True)
    writer.add_string("t.str", "héllo 🙂")
    writer.add_array("t.arr_int", [1, 2, 3])
    writer.add_array("t.arr_str", ["a", "bc", ""])
    writer.add_array("t.arr_nested", [[1, 2], [3]])
    for name, (rows, cols), qtype in (("w_f32", (3, 8), Q.F32), ("w_f16", (2, 16), Q.F16),
                                      ("w_q8", (2, 64), Q.Q8_0), ("w_q41", (2, 32), Q.Q4_1)):
        add_quantized(writer, name, random_weight(rows, cols, seed=rows * cols), qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
