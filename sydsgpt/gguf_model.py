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
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from .gguf import GGUFError, GGUFFile
from .hf_weights import load_hf_weights
from .model import SydsGPT

# llama.cpp tensor name -> Hugging Face Llama name ({n} is the block index).
_TOP = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}
_BLOCK = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
          "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
          "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
          "ffn_down": "mlp.down_proj"}
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
    """The Hugging Face ``LlamaConfig`` dict that the file's metadata describes."""
    meta = f.metadata
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise GGUFError(f"{f.path}: architecture {arch!r} is not supported (supported: 'llama')")
    if "rope_freqs.weight" in f.tensors or meta.get("llama.rope.scaling.type", "none") != "none":
        raise GGUFError(f"{f.path}: RoPE scaling is not supported for GGUF files yet")

    def need(key: str) -> Any:
        if f"llama.{key}" not in meta:
            raise GGUFError(f"{f.path}: metadata llama.{key} is missing")
        return meta[f"llama.{key}"]

    width, heads = need("embedding_length"), need("attention.head_count")
    vocab = meta.get("llama.vocab_size") or len(meta.get("tokenizer.ggml.tokens", ())) \
        or f.tensors["token_embd.weight"].shape[0]
    return {
        "model_type": "llama", "vocab_size": vocab, "hidden_size": width,
        "intermediate_size": need("feed_forward_length"), "num_hidden_layers": need("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get("llama.attention.head_count_kv", heads),
        "head_dim": meta.get("llama.attention.key_length", width // heads),
        "max_position_embeddings": need("context_length"),
        "rms_norm_eps": _decimal(need("attention.layer_norm_rms_epsilon")),
        "rope_theta": _decimal(meta.get("llama.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "output.weight" not in f.tensors, "hidden_act": "silu",
        "attention_dropout": 0.0,
    }


def gguf_hf_state_dict(f: GGUFFile, hf_config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every tensor dequantized to float32 under its Hugging Face name, q/k unpermuted."""
    state = {}
    heads = {"q_proj": hf_config["num_attention_heads"], "k_proj": hf_config["num_key_value_heads"]}
    for name in f.tensors:
        try:
            hf_name = gguf_name_to_hf(name)
        except KeyError:
            raise GGUFError(f"{f.path}: unexpected tensor {name!r} for a llama model") from None
        tensor = f.tensor(name)
        proj = hf_name.split(".")[-2]
        if proj in heads:
            expected = heads[proj] * hf_config["head_dim"]
            if tensor.shape[0] != expected:
                raise GGUFError(f"{f.path}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                f"but the config needs {expected} rows ({heads[proj]} heads x "
                                f"{hf_config['head_dim']})")
            tensor = unpermute_qk(tensor, heads[proj])
        state[hf_name] = tensor
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
