"""Reading GGUF files from scratch (chapter 8): llama.cpp's single-file model format.

A GGUF file is, in order (all integers little-endian)::

    magic "GGUF" | version u32 (2 or 3) | tensor count u64 | metadata count u64
    metadata: key (string) | value type u32 | value          (repeated)
    tensor infos: name (string) | n_dims u32 | dims u64 x n_dims | ggml type u32 | offset u64
    padding to ``general.alignment`` (default 32)
    tensor data: each tensor at its offset from here, itself aligned

A string is a u64 byte length and UTF-8 bytes; an array is an element type u32, a u64
count and the elements. ``dims`` lists the fastest-varying dimension first (GGML's ``ne``),
so a PyTorch weight of shape ``(out, in)`` is stored with dims ``[in, out]``.

:func:`read_gguf` checks every length against the bytes that are actually left before
it reads (never allocating what a damaged file claims) and maps the tensor data without
copying it; :meth:`GGUFFile.tensor` dequantizes one tensor to float32 on demand.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .quants import DEQUANTIZE, GGML_TYPES, GGMLType, dequantize

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 4  # arrays of arrays are legal; deeper nesting is a damaged file

# Value type id -> (name, struct format) for the fixed-size scalars; 8 = string, 9 = array.
SCALAR_TYPES: dict[int, tuple[str, str]] = {
    0: ("UINT8", "<B"),
    1: ("INT8", "<b"),
    2: ("UINT16", "<H"),
    3: ("INT16", "<h"),
    4: ("UINT32", "<I"),
    5: ("INT32", "<i"),
    6: ("FLOAT32", "<f"),
    7: ("BOOL", "<?"),
    10: ("UINT64", "<Q"),
    11: ("INT64", "<q"),
    12: ("FLOAT64", "<d"),
}
STRING, ARRAY = 8, 9


class GGUFError(ValueError):
    """A GGUF file that cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives: ``shape`` is PyTorch's order (GGML's ``dims`` reversed)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int
    """Byte offset from the start of the file (the data section's start already added)."""
    nbytes: int

    @property
    def n_values(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class GGUFFile:
    """A parsed GGUF file: metadata, tensor infos and the memory-mapped bytes."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    alignment: int
    data_offset: int
    data: np.ndarray = field(repr=False)
    """The whole file as a read-only ``(file_size,)`` uint8 array (memory-mapped)."""

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor ``name``, ``(nbytes,)`` uint8, a view (no copy)."""
        info = self._info(name)
        return self.data[info.offset : info.offset + info.nbytes]

    def tensor(self, name: str) -> torch.Tensor:
        """Tensor ``name`` dequantized to float32, shape ``info.shape``."""
        info = self._info(name)
        if info.ggml_type.name not in DEQUANTIZE:
            raise GGUFError(
                f"{self.path}: tensor {name!r} has type {info.ggml_type.name}, "
                f"which this reader cannot dequantize "
                f"(supported: {', '.join(DEQUANTIZE)})"
            )
        values = dequantize(self.raw(name), info.ggml_type.name)
        return torch.from_numpy(values.reshape(info.shape))

    def _info(self, name: str) -> TensorInfo:
        if name not in self.tensors:
            raise KeyError(f"{self.path} has no tensor {name!r} ({len(self.tensors)} tensors)")
        return self.tensors[name]


class _Cursor:
    """Reads GGUF values from a byte buffer, checking every length against what is left."""

    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.path, self.pos, self.size = buf, path, 0, len(buf)

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.path}: {what}")

    def take(self, n: int, what: str) -> memoryview:
        if n > self.size - self.pos:
            raise self.fail(
                f"truncated file: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file ends at {self.size}"
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def u32(self, what: str) -> int:
        return self.scalar("<I", what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", what)

    def count(self, what: str, min_item_bytes: int) -> int:
        """A u64 length whose items (each at least ``min_item_bytes``) must fit in the file."""
        n = self.u64(what)
        if n * min_item_bytes > self.size - self.pos:
            raise self.fail(
                f"absurd {what} {n:,} at offset {self.pos - 8}: "
                f"only {self.size - self.pos:,} bytes are left in the file"
            )
        return n

    def string(self, what: str) -> str:
        n = self.count(f"length of {what}", 1)
        try:
            return str(self.take(n, what), "utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at offset {self.pos - n} is not UTF-8 text") from None

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in SCALAR_TYPES:
            return self.scalar(SCALAR_TYPES[vtype][1], what)
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            return self.array(what, depth)
        raise self.fail(
            f"{what} has unknown value type {vtype} at offset {self.pos - 4} (known: 0-12)"
        )

    def array(self, what: str, depth: int) -> list[Any]:
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what} nests arrays more than {MAX_ARRAY_DEPTH} deep")
        etype = self.u32(f"element type of {what}")
        if etype in SCALAR_TYPES:
            fmt = SCALAR_TYPES[etype][1]
            size = struct.calcsize(fmt)
            n = self.count(f"length of {what}", size)
            items = np.frombuffer(self.take(n * size, what), dtype=fmt.replace("?", "u1"))
            return [bool(x) for x in items] if etype == 7 else items.tolist()
        minimum = {STRING: 8, ARRAY: 12}.get(etype)
        if minimum is None:
            raise self.fail(f"{what} has unknown element type {etype} at offset {self.pos - 4}")
        n = self.count(f"length of {what}", minimum)
        return [self.value(etype, what, depth + 1) for _ in range(n)]


def _header(cur: _Cursor) -> tuple[int, int, int]:
    """``(version, tensor_count, metadata_count)``, checked."""
    magic = bytes(cur.take(4, "the magic number"))
    if magic != MAGIC:
        raise cur.fail(f"not a GGUF file: it starts with {magic!r}, expected {MAGIC!r}")
    version = cur.u32("the version")
    if version not in VERSIONS:
        hint = " (a big-endian file?)" if version >= 1 << 16 else ""
        raise cur.fail(
            f"unsupported GGUF version {version}{hint}; this reader supports "
            f"versions {VERSIONS[0]} and {VERSIONS[1]}"
        )
    n_tensors = cur.count("tensor count", 24)  # name length, n_dims, type, offset: >= 24 bytes
    n_kv = cur.count("metadata count", 13)  # key length, value type, value: >= 13 bytes
    return version, n_tensors, n_kv


def _metadata(cur: _Cursor, n_kv: int) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        metadata[key] = cur.value(cur.u32(f"type of {key!r}"), f"metadata {key!r}")
    return metadata


def _tensor_infos(cur: _Cursor, n: int) -> list[tuple[str, tuple[int, ...], GGMLType, int]]:
    infos, seen = [], set()
    for i in range(n):
        name = cur.string(f"name of tensor {i}")
        if name in seen:
            raise cur.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        n_dims = cur.u32(f"number of dimensions of {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (expected 1 to {MAX_DIMS})")
        dims = [cur.u64(f"dimensions of {name!r}") for _ in range(n_dims)]
        if min(dims) < 1:
            raise cur.fail(f"tensor {name!r} has an empty dimension: dims {dims}")
        type_id = cur.u32(f"type of {name!r}")
        if type_id not in GGML_TYPES:
            raise cur.fail(
                f"tensor {name!r} has unsupported quantization type {type_id} "
                f"(supported: {', '.join(t.name for t in GGML_TYPES.values())})"
            )
        offset = cur.u64(f"offset of {name!r}")
        infos.append((name, tuple(reversed(dims)), GGML_TYPES[type_id], offset))
    return infos


def _alignment(cur: _Cursor, metadata: dict[str, Any]) -> int:
    align = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(align, bool) or not isinstance(align, int) or align < 1 or align & (align - 1):
        raise cur.fail(f"general.alignment must be a power of two, got {align!r}")
    return align


def _place(
    cur: _Cursor, info: tuple[str, tuple[int, ...], GGMLType, int], data_offset: int, align: int
) -> TensorInfo:
    """Check one tensor's size and position against the file; its absolute :class:`TensorInfo`."""
    name, shape, gtype, offset = info
    n_values = 1
    for d in shape:
        n_values *= d
    if shape[-1] % gtype.block_size:
        raise cur.fail(
            f"tensor {name!r}: its first dimension {shape[-1]} is not a multiple of "
            f"{gtype.name}'s block size {gtype.block_size}"
        )
    nbytes = n_values // gtype.block_size * gtype.type_size
    if offset % align:
        raise cur.fail(
            f"tensor {name!r} starts at data offset {offset}, not a multiple of the "
            f"alignment {align}"
        )
    start = data_offset + offset
    if start + nbytes > cur.size:
        raise cur.fail(
            f"tensor {name!r} data out of bounds: bytes {start:,} to "
            f"{start + nbytes:,}, but the file has {cur.size:,} bytes (truncated?)"
        )
    return TensorInfo(name, shape, gtype, start, nbytes)


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse a GGUF file's header, metadata and tensor infos; map its tensor data.

    Raises:
        GGUFError: one line naming the file and what is wrong (truncated, wrong magic,
            unsupported version or type, absurd lengths, tensor data out of bounds).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise GGUFError(
                f"{path}: truncated file: it is empty (a GGUF file starts with {MAGIC!r})"
            )
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, dtype=np.uint8)
    cur = _Cursor(memoryview(data), path)
    version, n_tensors, n_kv = _header(cur)
    metadata = _metadata(cur, n_kv)
    infos = _tensor_infos(cur, n_tensors)
    align = _alignment(cur, metadata)
    data_offset = -(-cur.pos // align) * align
    tensors = {info[0]: _place(cur, info, data_offset, align) for info in infos}
    return GGUFFile(path, version, metadata, tensors, align, data_offset, data)
