"""A Llama-architecture GGUF file as a SydsGPT model (chapter 8).

The file's metadata gives the config (``llama.block_count``, ``llama.embedding_length``, ...)
and its tensors the weights, under llama.cpp's names (``blk.N.attn_q.weight``); both are
turned into the Hugging Face Llama form that chapter 7's :func:`~sydsgpt.hf_weights.load_hf_weights`
already loads, so the mapping onto SydsGPT's own names is written once, there.

One twist: llama.cpp applies RoPE to *adjacent* pairs of features ``(0, 1), (2, 3), ...``,
while Hugging Face Llama (and SydsGPT) pair feature ``i`` with ``i + head_dim/2`` ("rotate
half"). So llama.cpp's converter reorders the rows of every head of the query and key
weights; :func:`unpermute_qk` puts them back. (Attention scores do not change when the same
reordering is applied to queries and keys, but RoPE must rotate the pairs it was trained on.)

:func:`export_gguf` goes the other way: a Llama-style SydsGPT model (and its tokenizer) as a
GGUF file, its matrices quantized with :data:`sydsgpt.quants.QUANTIZE`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .gguf import GGUFError, GGUFFile
from .gguf_tokenizer import tokenizer_metadata
from .gguf_writer import write_gguf
from .hf_weights import load_hf_weights, sydsgpt_config_to_hf, sydsgpt_to_hf_state_dict
from .model import SydsGPT
from .quants import GGML_TYPES_BY_NAME, QUANTIZE

# llama.cpp tensor name -> Hugging Face Llama name ({n} is the block index).
_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def gguf_name_to_hf(name: str) -> str:
    """``"blk.3.attn_q.weight"`` -> ``"model.layers.3.self_attn.q_proj.weight"``.

    Raises KeyError for a name that is not part of a Llama model."""
    if name in _TOP:
        return _TOP[name]
    match = _BLOCK_NAME.fullmatch(name)
    if match is None or match.group(2) not in _BLOCK:
        raise KeyError(name)
    n, part, kind = match.groups()
    suffix = ".weight" if part.endswith("norm") else f".{kind}"
    return f"model.layers.{n}.{_BLOCK[part]}{suffix}"


def unpermute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's row order for RoPE on adjacent pairs.

    Within each head, llama.cpp stores rows ``0, h, 1, h+1, 2, h+2, ...`` (``h = head_dim/2``),
    so that the pairs RoPE rotates together are neighbours; Hugging Face's order is
    ``0, 1, ..., h-1, h, ..., 2h-1``.

    Args:
        weight: ``(n_heads * head_dim, in)`` (or a bias, ``(n_heads * head_dim,)``).
    """
    rows = weight.shape[0]
    half = rows // n_heads // 2
    w = weight.reshape(n_heads, half, 2, *weight.shape[1:])  # (heads, pair, 2, in)
    return w.transpose(1, 2).reshape(weight.shape)  # (heads, 2, pair, in) -> (rows, in)


def _decimal(value: float) -> float:
    """A float32 metadata value as the shortest decimal that float32 reads back the same
    (the file's ``9.999999747378752e-06`` is the ``1e-05`` its writer meant)."""
    return float(str(np.float32(value)))


def gguf_hf_config(f: GGUFFile) -> dict[str, Any]:
    """The Hugging Face ``LlamaConfig`` dict that the file's metadata describes (checked:
    positive integers where sizes belong, positive numbers for the norm and RoPE)."""
    meta = f.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{f.path}: architecture {arch!r} is not supported (supported: 'llama')")
    if "rope_freqs.weight" in f.tensors or meta.get("llama.rope.scaling.type", "none") != "none":
        raise GGUFError(f"{f.path}: RoPE scaling is not supported for GGUF files yet")

    def need(key: str, kind: type = int, default: Any = None) -> Any:
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise GGUFError(f"{f.path}: metadata llama.{key} is missing")
        wanted = (int,) if kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not value > 0:
            raise GGUFError(
                f"{f.path}: metadata llama.{key} must be a positive "
                f"{'integer' if kind is int else 'number'}, got {value!r}"
            )
        return value if kind is int else _decimal(value)

    width, heads = need("embedding_length"), need("attention.head_count")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = need("vocab_size", default=len(tokens) if isinstance(tokens, list) else None)
    return {
        "model_type": "llama",
        "vocab_size": vocab,
        "hidden_size": width,
        "intermediate_size": need("feed_forward_length"),
        "num_hidden_layers": need("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": need("attention.head_count_kv", default=heads),
        "head_dim": need("attention.key_length", default=max(width // heads, 1)),
        "max_position_embeddings": need("context_length"),
        "rms_norm_eps": need("attention.layer_norm_rms_epsilon", float),
        "rope_theta": need("rope.freq_base", float, 10000.0),
        "tie_word_embeddings": "output.weight" not in f.tensors,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
    }


def expected_shapes(hf: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """llama.cpp tensor name -> PyTorch shape, for the config :func:`gguf_hf_config` gives."""
    d, ffn, hd = hf["hidden_size"], hf["intermediate_size"], hf["head_dim"]
    q, kv = hf["num_attention_heads"] * hd, hf["num_key_value_heads"] * hd
    shapes = {"token_embd.weight": (hf["vocab_size"], d), "output_norm.weight": (d,)}
    if not hf["tie_word_embeddings"]:
        shapes["output.weight"] = (hf["vocab_size"], d)
    block = {
        "attn_norm": (d,),
        "ffn_norm": (d,),
        "attn_q": (q, d),
        "attn_k": (kv, d),
        "attn_v": (kv, d),
        "attn_output": (d, q),
        "ffn_gate": (ffn, d),
        "ffn_up": (ffn, d),
        "ffn_down": (d, ffn),
    }
    for n in range(hf["num_hidden_layers"]):
        shapes.update({f"blk.{n}.{part}.weight": shape for part, shape in block.items()})
    return shapes


def check_tensors(f: GGUFFile, hf: dict[str, Any]) -> None:
    """Raise GGUFError unless the file has exactly the tensors the config needs, shaped so
    (checked before any model is built, so a damaged config cannot make a huge one)."""
    if hf["num_hidden_layers"] > len(f.tensors):
        raise GGUFError(
            f"{f.path}: llama.block_count is {hf['num_hidden_layers']}, but the file "
            f"has only {len(f.tensors)} tensors"
        )
    expected = expected_shapes(hf)
    missing = [n for n in expected if n not in f.tensors]
    unexpected = [n for n in f.tensors if n not in expected]
    wrong = [
        f"{n} {f.tensors[n].shape} (config: {shape})"
        for n, shape in expected.items()
        if n in f.tensors and f.tensors[n].shape != shape
    ]
    if missing or unexpected or wrong:
        raise GGUFError(
            f"{f.path}: the tensors do not fit the config in its metadata: missing "
            f"{missing[:4]}, unexpected {unexpected[:4]}, wrong shapes {wrong[:3]}"
        )


def gguf_hf_state_dict(f: GGUFFile, hf_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under its Hugging Face name, q/k unpermuted."""
    check_tensors(f, hf_config)
    heads = {"q_proj": hf_config["num_attention_heads"], "k_proj": hf_config["num_key_value_heads"]}
    state = {}
    for name in f.tensors:
        hf_name = gguf_name_to_hf(name)
        tensor = f.tensor(name)
        proj = hf_name.split(".")[-2]
        state[hf_name] = unpermute_qk(tensor, heads[proj]) if proj in heads else tensor
    return state


def load_gguf_model(f: GGUFFile, context_length: int | None = None) -> SydsGPT:
    """A SydsGPT model (float32, eval mode) with the weights of Llama GGUF file ``f``.

    ``context_length`` caps the positions (default and maximum: the file's
    ``llama.context_length``); a smaller one makes the KV cache smaller.

    Raises:
        GGUFError: naming the file: another architecture, missing metadata, or a tensor that
            is missing, unexpected or of the wrong shape for the config.
    """
    hf_config = gguf_hf_config(f)
    if context_length is not None:
        context_length = min(context_length, hf_config["max_position_embeddings"])
    state = gguf_hf_state_dict(f, hf_config)
    try:
        return load_hf_weights(state, config=hf_config, context_length=context_length)
    except ValueError as exc:
        raise GGUFError(f"{f.path}: {exc}") from None


# ---------------------------------------------------------------------------- export


def permute_qk(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """llama.cpp's row order (the inverse of :func:`unpermute_qk`): ``(rows, in)`` -> same."""
    half = weight.shape[0] // n_heads // 2
    w = weight.reshape(n_heads, 2, half, *weight.shape[1:])  # (heads, 2, pair, in)
    return w.transpose(1, 2).reshape(weight.shape)


def _gguf_names() -> dict[str, str]:
    """Hugging Face Llama name pattern -> llama.cpp name pattern (``{n}``: the block)."""
    names = {hf: ours for ours, hf in _TOP.items()}
    for ours, hf in _BLOCK.items():
        names[f"model.layers.{{n}}.{hf}.weight"] = f"blk.{{n}}.{ours}.weight"
    return names


def export_gguf(
    model: SydsGPT, path: str | os.PathLike[str], tokenizer: Any = None, qtype: str = "F32"
) -> Path:
    """Write a Llama-architecture SydsGPT model (and optionally its BPE tokenizer) as a GGUF
    file that llama.cpp-style readers load: :func:`read_gguf`, the ``gguf`` package,
    transformers.

    ``qtype`` stores every matrix whose rows fill whole blocks in that type (``F32``,
    ``F16``, ``Q8_0``, ``Q4_0``, ``Q4_1``); norms stay F32.

    Raises:
        ValueError: a model that a Llama GGUF cannot express (GPT-2 parts, QK-norm, biases,
            RoPE scaling), or an unknown ``qtype``.
    """
    cfg = model.config
    hf = sydsgpt_config_to_hf(cfg, family="llama")  # refuses GPT-2 and Qwen3 parts
    if cfg.linear_bias or cfg.qkv_bias or cfg.rope_scaling is not None:
        raise ValueError(
            "GGUF export supports Llama models without biases and without RoPE "
            "scaling; this model has "
            + ("biases" if cfg.linear_bias or cfg.qkv_bias else "rope_scaling")
        )
    if qtype not in QUANTIZE:
        raise ValueError(f"qtype must be one of {sorted(QUANTIZE)}, got {qtype!r}")
    names, heads = _gguf_names(), {"q_proj": cfg.num_heads, "k_proj": cfg.kv_heads}
    tensors = {}
    for hf_name, tensor in sydsgpt_to_hf_state_dict(model).items():
        block = re.match(r"model\.layers\.(\d+)\.", hf_name)
        pattern = hf_name.replace(block.group(0), "model.layers.{n}.") if block else hf_name
        name = names[pattern].format(n=block.group(1) if block else "")
        proj = hf_name.split(".")[-2]
        if proj in heads:
            tensor = permute_qk(tensor, heads[proj])
        values = tensor.detach().float().cpu().numpy()
        block_size = GGML_TYPES_BY_NAME[qtype].block_size
        kind = qtype if values.ndim == 2 and values.shape[-1] % block_size == 0 else "F32"
        tensors[name] = (QUANTIZE[kind](values), kind, tuple(values.shape))
    metadata: dict[str, Any] = {
        "general.architecture": "llama",
        "general.name": "sydsgpt",
        "llama.context_length": hf["max_position_embeddings"],
        "llama.embedding_length": hf["hidden_size"],
        "llama.block_count": hf["num_hidden_layers"],
        "llama.feed_forward_length": hf["intermediate_size"],
        "llama.attention.head_count": hf["num_attention_heads"],
        "llama.attention.head_count_kv": hf["num_key_value_heads"],
        "llama.attention.key_length": hf["head_dim"],
        "llama.attention.value_length": hf["head_dim"],
        "llama.rope.dimension_count": hf["head_dim"],
        "llama.rope.freq_base": float(hf["rope_theta"]),
        "llama.attention.layer_norm_rms_epsilon": float(hf["rms_norm_eps"]),
        "llama.vocab_size": hf["vocab_size"],
    }
    if tokenizer is not None:
        metadata.update(tokenizer_metadata(tokenizer))
    return write_gguf(path, metadata, tensors)
