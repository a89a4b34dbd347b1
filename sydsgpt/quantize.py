"""Quantizing our own models: int8 and 4-bit weights for the linear layers (chapter 8).

A decode step reads every weight once, so fewer bytes per weight means less memory and,
where the matrix-vector products are limited by memory bandwidth, faster tokens. Two
weight-only formats (activations stay float; the ``int8-dynamic`` scheme also rounds them,
for PyTorch's int8 kernel):

* :class:`Int8Linear`: one int8 per weight, one float32 scale per output row (channel),
  symmetric: ``scale = max|w_row| / 127``, ``q = round(w / scale)``, ``w ~ scale * q``.
  Rounding to the nearest integer moves each weight by at most ``scale / 2``.
* :class:`Q4Linear`: GGML's ``Q4_0``: blocks of 32 weights along the input dimension,
  one float16 scale ``d`` per block and a 4-bit ``q`` per weight, ``w ~ d * (q - 8)``
  (:func:`sydsgpt.quants.quantize_q4_0` makes the blocks, byte for byte as llama.cpp does).

:func:`quantize_model` swaps a model's ``nn.Linear`` layers for one of them, in place, and
:func:`model_weight_bytes` counts the bytes the stored weights take.

Shapes: both layers map ``(..., in_features)`` to ``(..., out_features)``, like ``nn.Linear``.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .quants import quantize_q4_0

INT8_MAX = 127
"""Largest int8 magnitude used: the range is symmetric, -127..127 (-128 is never used)."""
Q4_BLOCK = 32
"""Weights per Q4_0 block (along the input dimension)."""
CHUNK_VALUES = 1 << 22
"""The quantized layers turn at most this many weights into floats at a time (16 MB of
float32): a block of rows, multiplied, then the next."""
SCHEMES = ("int8", "int8-dynamic", "q4")
"""The formats :func:`quantize_model` knows."""


# --------------------------------------------------------------------------- int8, per row


def quantize_int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` float -> int8 ``q`` ``(out, in)`` and float32 ``scale`` ``(out,)``.

    ``scale = max|w_row| / 127`` and ``q = round(w / scale)``, so ``|w - scale * q| <=
    scale / 2``; an all-zero row gets scale 0 and ``q = 0``.
    """
    w = weight.detach().float()
    scale = w.abs().amax(dim=1) / INT8_MAX  # (out,)
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / safe[:, None]).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def dequantize_int8_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """int8 ``(out, in)`` and ``(out,)`` scales -> float32 ``(out, in)`` weights."""
    return q.float() * scale[:, None]


def _pack_for_dynamic_int8(q: torch.Tensor, scale: torch.Tensor) -> Any | None:
    """PyTorch's packed int8 weight for ``quantized.linear_dynamic``, or None where that
    kernel is not available (not a CPU tensor, no quantized engine, a torch without it)."""
    if q.device.type != "cpu" or torch.backends.quantized.engine == "none":
        return None
    zero = torch.zeros(q.shape[0], dtype=torch.long)
    try:
        with warnings.catch_warnings():  # quantized tensors are deprecated in torch 2.13
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            return torch.ops.quantized.linear_prepack(qweight, None)
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


class QuantizedLinear(nn.Module):
    """What both quantized layers share: sizes, a float bias, and the reference forward
    ``F.linear(x, dequantized_weight(), bias)``. Subclasses store the weights and say how to
    dequantize them."""

    def __init__(self, out_features: int, in_features: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = out_features, in_features
        self.bias = (
            None
            if bias is None
            else nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        )

    def dequantized_weight(self) -> torch.Tensor:
        """The weights the layer computes with, float32 ``(out, in)``."""
        raise NotImplementedError

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias``, the whole weight dequantized at once: ``(..., in) -> (..., out)``."""
        return F.linear(x, self.dequantized_weight().to(x.dtype), self._bias(x.dtype))

    def _bias(self, dtype: torch.dtype, rows: slice = slice(None)) -> torch.Tensor | None:
        return None if self.bias is None else self.bias[rows].to(dtype)

    def _float_rows(
        self, rows: slice, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight rows ``rows`` as floats ``(r, in)``, and a scale ``(r,)`` for the outputs
        (or None): ``W[rows] = float_rows * scale[:, None]``."""
        raise NotImplementedError

    def forward_in_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) -> (..., out)``, turning :data:`CHUNK_VALUES` weights into floats at a
        time, so no float copy of the whole weight is ever made."""
        step = max(1, CHUNK_VALUES // self.in_features)
        parts = []
        for start in range(0, self.out_features, step):
            rows = slice(start, start + step)
            w, scale = self._float_rows(rows, x.dtype)
            y = F.linear(x, w)  # (..., r)
            y = y if scale is None else y * scale
            bias = self._bias(x.dtype, rows)
            parts.append(y if bias is None else y + bias)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (..., out)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Int8Linear(QuantizedLinear):
    """A linear layer with int8 weights, one scale per output channel; bias in float.

    Buffers: ``weight_int8`` ``(out, in)`` int8, ``weight_scale`` ``(out,)`` float32 (the
    stored format, what ``state_dict`` holds); ``bias`` ``(out,)`` float or None.

    Forward paths:

    * weight-only (the default): ``(x @ q.T) * scale + bias``: the int8 weights are turned
      into floats on every call, :data:`CHUNK_VALUES` at a time, and the scale is applied to
      the outputs (one multiply per output instead of one per weight). Nothing float is
      kept, so the layer's memory is the int8 format plus one chunk while it runs. Chosen over
      ``torch._weight_int8pack_mm`` (also weight-only) because it was faster on block-sized
      products in quick checks and runs on any device; both were slower than float32 there:
      in eager PyTorch, weight-only int8 saves memory, not time (the quantization benchmark
      measures it).
    * ``dynamic=True`` on the CPU: PyTorch's dynamic int8 kernel
      (``torch.ops.quantized.linear_dynamic``, the kernel behind
      ``torch.ao.quantization.quantize_dynamic``), which also rounds the *activations* to
      integers (per call, one scale per tensor) and multiplies integers: the fast path in
      quick checks on block-sized products. It runs with ``reduce_range=True`` (7-bit
      activations), as PyTorch's own dynamic ``Linear`` does. Costs: the activations'
      rounding, which costs the book checkpoint little (+0.02 bits per byte; the first one,
      GPT-2 blocks: +0.001) but not models whose activations have a few huge channels
      (SmolLM2: +0.4 bits per byte on 1,024 held-out tokens, against +0.005 weight-only),
      and a packed copy of the int8 weights the kernel keeps (made on the first call; about
      2 bytes per weight in all). PyTorch 2.13 deprecates quantized tensors: where packing
      fails, the layer takes the weight-only path.
    * :meth:`forward_reference`: ``F.linear`` on the dequantized weights ``scale * q``: what
      the tests compare both paths with.

    :func:`model_weight_bytes` counts the stored format, 1 byte per weight plus the scales.

    Forward: ``(..., in_features)`` -> ``(..., out_features)``.
    """

    def __init__(
        self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dynamic: bool = False
    ) -> None:
        super().__init__(q.shape[0], q.shape[1], bias)
        self.register_buffer("weight_int8", q)
        self.register_buffer("weight_scale", scale)
        self.dynamic = dynamic
        self._packed: Any | None = None
        self._packed_key: tuple[int, ...] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, dynamic: bool = False) -> "Int8Linear":
        """Quantize ``linear``'s weight (:func:`quantize_int8_rows`); the bias is copied."""
        q, scale = quantize_int8_rows(linear.weight)
        return cls(q, scale, linear.bias, dynamic)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_int8_rows(self.weight_int8, self.weight_scale)

    def _float_rows(self, rows: slice, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return self.weight_int8[rows].to(dtype), self.weight_scale[rows].to(dtype)

    def _packed_weight(self) -> Any | None:
        """The packed weight, (re)made when the buffers are new or changed in place."""
        q, s = self.weight_int8, self.weight_scale
        key = (q.data_ptr(), q._version, s.data_ptr(), s._version)
        if key != self._packed_key:
            self._packed, self._packed_key = _pack_for_dynamic_int8(q, s), key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.dynamic and x.device.type == "cpu" and x.dtype == torch.float32
        packed = self._packed_weight() if kernel and not x.requires_grad else None
        if packed is None:
            return self.forward_in_chunks(x)  # weight-only
        flat = x.reshape(-1, self.in_features)  # (N, in)
        y = torch.ops.quantized.linear_dynamic(flat, packed, True)  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", dynamic={self.dynamic}"


# --------------------------------------------------------------------------- 4-bit blocks


def quantize_q4_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, in)`` float -> Q4_0 ``nibbles`` uint8 ``(out, in/32, 16)`` and ``d`` float16
    ``(out, in/32)``: the bytes of :func:`sydsgpt.quants.quantize_q4_0`, split apart.

    In each block byte ``j`` holds ``q_j`` in its low nibble and ``q_{j+16}`` in its high one.
    """
    out, n_in = weight.shape
    if n_in % Q4_BLOCK:
        raise ValueError(f"Q4 needs in_features divisible by {Q4_BLOCK}, got {n_in}")
    raw = quantize_q4_0(weight.detach().float().cpu().numpy().reshape(-1))
    blocks = raw.reshape(out, n_in // Q4_BLOCK, 18)  # per block: 2 bytes of d, 16 of nibbles
    d = torch.from_numpy(np.ascontiguousarray(blocks[:, :, :2]).view("<f2")[..., 0].copy())
    nibbles = torch.from_numpy(np.ascontiguousarray(blocks[:, :, 2:]))
    return nibbles.to(weight.device), d.to(weight.device)


def dequantize_q4_rows(nibbles: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Q4_0 rows -> float32 ``(rows, in)``: ``d * (q - 8)`` for each of a block's 32 values."""
    q = torch.cat([nibbles & 0x0F, nibbles >> 4], dim=-1)  # (rows, blocks, 32)
    w = d.float()[..., None] * (q.float() - 8.0)  # (rows, blocks, 32)
    return w.reshape(nibbles.shape[0], -1)


class Q4Linear(QuantizedLinear):
    """A linear layer with GGML ``Q4_0`` weights (4.5 bits per weight); bias in float.

    Buffers: ``weight_nibbles`` ``(out, in/32, 16)`` uint8, ``weight_d`` ``(out, in/32)``
    float16, ``bias`` ``(out,)`` float or None. The weights are dequantized on every call,
    :data:`CHUNK_VALUES` at a time (a block of rows), and multiplied in float32: nothing
    float is kept, so the layer's memory is the 4-bit format plus one chunk while it runs.
    This is a memory format, not a fast one: PyTorch has no 4-bit CPU kernel for this
    layout, so a call pays for dequantizing every weight.

    Forward: ``(..., in_features)`` -> ``(..., out_features)``.
    """

    def __init__(self, nibbles: torch.Tensor, d: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__(nibbles.shape[0], nibbles.shape[1] * Q4_BLOCK, bias)
        self.register_buffer("weight_nibbles", nibbles)
        self.register_buffer("weight_d", d)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Q4Linear":
        """Quantize ``linear``'s weight (:func:`quantize_q4_rows`); the bias is copied."""
        nibbles, d = quantize_q4_rows(linear.weight)
        return cls(nibbles, d, linear.bias)

    def dequantized_weight(self) -> torch.Tensor:
        return dequantize_q4_rows(self.weight_nibbles, self.weight_d)

    def _float_rows(self, rows: slice, dtype: torch.dtype) -> tuple[torch.Tensor, None]:
        return dequantize_q4_rows(self.weight_nibbles[rows], self.weight_d[rows]).to(dtype), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_in_chunks(x)


# --------------------------------------------------------------------------- whole models

QUANTIZED_LAYERS: dict[str, Callable[[nn.Linear], QuantizedLinear]] = {
    "int8": Int8Linear.from_linear,
    "int8-dynamic": functools.partial(Int8Linear.from_linear, dynamic=True),
    "q4": Q4Linear.from_linear,
}
"""Scheme name (:data:`SCHEMES`) -> how an ``nn.Linear`` becomes its quantized layer."""


def model_weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's stored tensors: every parameter and buffer in ``state_dict``,
    each shared tensor once (a tied head and embedding count once).

    So a float32 weight counts 4 bytes, an :class:`Int8Linear` weight 1 byte plus 4 per
    row for its scale, a :class:`Q4Linear` weight half a byte plus 2 per 32 weights for its
    float16 scale. Working copies a kernel makes (the int8 kernel's packed weight, the KV
    cache) are not stored weights and are not counted: peak memory measures them.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for tensor in model.state_dict(keep_vars=True).values():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


@dataclass
class QuantizationReport:
    """What :func:`quantize_model` did."""

    scheme: str
    replaced: list[str] = field(default_factory=list)
    """Qualified names of the linear layers now quantized."""
    kept_float: dict[str, str] = field(default_factory=dict)
    """Linear layers left in float, with the reason."""
    tied_head: bool = False
    """The head shared the token embedding's tensor: the embedding stays float and the head
    got its own quantized copy, so the model now stores both."""
    bytes_before: int = 0
    bytes_after: int = 0


def _is_tied(model: nn.Module, name: str, linear: nn.Linear) -> bool:
    embedding = getattr(model, "token_embedding", None)
    return (
        name == "output_projection"
        and isinstance(embedding, nn.Embedding)
        and embedding.weight is linear.weight
    )


def quantize_model(
    model: nn.Module, scheme: str = "int8", skip: tuple[str, ...] = ("token_embedding",)
) -> QuantizationReport:
    """Replace ``model``'s ``nn.Linear`` layers by quantized ones (:data:`QUANTIZED_LAYERS`),
    in place; the head too.

    Schemes: ``"int8"`` (:class:`Int8Linear`, weight-only), ``"int8-dynamic"`` (the same
    weights, PyTorch's int8 kernel on the CPU, activations rounded too), ``"q4"``
    (:class:`Q4Linear`). With a tied head (the head *is* the token embedding's tensor) the
    embedding stays float and the head gets its own quantized copy: the report's
    ``tied_head`` says so, and ``bytes_after`` counts both.

    Embeddings are lookups, not products, and stay float. ``skip`` names layers to leave in
    float: a linear layer is skipped when a part of its dotted name is in ``skip`` (e.g.
    ``("output_projection",)`` keeps every output projection, the head's included). A ``q4``
    layer whose input width is not a multiple of 32 stays float too (``kept_float`` says so).
    Attention layers stop joining their query/key/value weights (the fused path reads raw
    float weights); the result is the same.
    """
    if scheme not in QUANTIZED_LAYERS:
        raise ValueError(
            f"unknown quantization scheme {scheme!r}; choose one of {', '.join(SCHEMES)}"
        )
    make_layer = QUANTIZED_LAYERS[scheme]
    report = QuantizationReport(scheme, bytes_before=model_weight_bytes(model))
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in linears:
        if set(name.split(".")) & set(skip):
            report.kept_float[name] = "skipped"
            continue
        if scheme == "q4" and linear.in_features % Q4_BLOCK:
            report.kept_float[name] = (
                f"in_features={linear.in_features} is not a multiple of {Q4_BLOCK}"
            )
            continue
        report.tied_head |= _is_tied(model, name, linear)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make_layer(linear))
        if child in ("weight_query", "weight_key", "weight_value") and hasattr(parent, "kernels"):
            parent.kernels = dataclasses.replace(parent.kernels, fused_qkv=False)
        report.replaced.append(name)
    report.bytes_after = model_weight_bytes(model)
    return report
