"""Writing GGUF files from scratch (chapter 8): the layout :mod:`sydsgpt.gguf` reads, written.

:func:`write_gguf` takes metadata as plain Python values (the GGUF value type is chosen
from the value, see :func:`value_type`) and tensors as raw bytes of a GGML type (see
:data:`sydsgpt.quants.QUANTIZE`), and lays them out: header, metadata, tensor infos, then
each tensor's data at an offset that is a multiple of the alignment.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, BinaryIO, Mapping

import numpy as np

from .gguf import ARRAY, DEFAULT_ALIGNMENT, MAGIC, SCALAR_TYPES, STRING
from .quants import GGML_TYPES_BY_NAME

VERSION = 3
_TYPE_IDS = {name: type_id for type_id, (name, _) in SCALAR_TYPES.items()}


def value_type(value: Any) -> int:
    """The GGUF value type of a Python value: bool -> BOOL, str -> STRING, float -> FLOAT32,
    int -> UINT32 (INT64 when negative or too large), list -> ARRAY."""
    if isinstance(value, bool):
        return _TYPE_IDS["BOOL"]
    if isinstance(value, str):
        return STRING
    if isinstance(value, (int, np.integer)):
        return _TYPE_IDS["UINT32"] if 0 <= value < 2**32 else _TYPE_IDS["INT64"]
    if isinstance(value, (float, np.floating)):
        return _TYPE_IDS["FLOAT32"]
    if isinstance(value, (list, tuple)):
        return ARRAY
    raise TypeError(f"no GGUF type for {type(value).__name__} value {value!r}")


def _element_type(items: list[Any]) -> int:
    """An array's element type: one for all items (ints: INT32, or INT64 if one needs it)."""
    kinds = {value_type(x) for x in items}
    if kinds <= {_TYPE_IDS["UINT32"], _TYPE_IDS["INT64"]} and kinds:
        fits = all(-(2**31) <= x < 2**31 for x in items)
        return _TYPE_IDS["INT32"] if fits else _TYPE_IDS["INT64"]
    if len(kinds) > 1:
        raise TypeError(f"a GGUF array holds one type; got {sorted(kinds)} in {items[:4]!r}...")
    return kinds.pop() if kinds else _TYPE_IDS["INT32"]


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any) -> bytes:
    if vtype in SCALAR_TYPES:
        return struct.pack(SCALAR_TYPES[vtype][1], value)
    if vtype == STRING:
        return _string(value)
    items = list(value)
    etype = _element_type(items)
    if etype in SCALAR_TYPES:  # numbers in one go
        body = np.asarray(items, dtype=SCALAR_TYPES[etype][1].replace("?", "u1")).tobytes()
    else:
        body = b"".join(_value(etype, x) for x in items)
    return struct.pack("<IQ", etype, len(items)) + body


def _pad(f: BinaryIO, alignment: int) -> None:
    f.write(b"\0" * (-f.tell() % alignment))


def write_gguf(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, tuple[np.ndarray, str, tuple[int, ...]]],
    alignment: int = DEFAULT_ALIGNMENT,
) -> Path:
    """Write a GGUF (version 3) file; returns its path.

    Args:
        metadata: key -> value (``general.architecture`` first, by convention).
        tensors: name -> ``(raw bytes (n_bytes,) uint8, GGML type name, PyTorch shape)``.
        alignment: of the data section and every tensor (a power of two; stored as
            ``general.alignment`` when it is not the default 32).
    """
    meta = dict(metadata)
    if alignment != DEFAULT_ALIGNMENT:
        meta["general.alignment"] = alignment
    infos, offset = [], 0
    for name, (raw, type_name, shape) in tensors.items():
        gtype = GGML_TYPES_BY_NAME[type_name]
        n_values = int(np.prod(shape, dtype=np.int64))
        expected = n_values // gtype.block_size * gtype.type_size
        if raw.size != expected or shape[-1] % gtype.block_size:
            raise ValueError(
                f"tensor {name!r}: {raw.size} bytes for shape {shape} in {type_name} "
                f"(expected {expected}, rows a multiple of {gtype.block_size})"
            )
        dims = b"".join(struct.pack("<Q", d) for d in reversed(shape))
        infos.append(
            _string(name)
            + struct.pack("<I", len(shape))
            + dims
            + struct.pack("<IQ", gtype.id, offset)
        )
        offset += -(-raw.size // alignment) * alignment
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(MAGIC + struct.pack("<IQQ", VERSION, len(tensors), len(meta)))
        for key, value in meta.items():
            vtype = value_type(value)
            f.write(_string(key) + struct.pack("<I", vtype) + _value(vtype, value))
        f.write(b"".join(infos))
        _pad(f, alignment)
        for raw, _, _ in tensors.values():
            f.write(np.ascontiguousarray(raw, dtype=np.uint8).tobytes())
            _pad(f, alignment)
    os.replace(partial, path)
    return path
