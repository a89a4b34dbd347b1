"""Writing GGUF files, and a SydsGPT model exported as one: read back by us, gguf, transformers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gguf_files import gguf
from sydsgpt.bpe import BPETokenizer
from sydsgpt.gguf import read_gguf
from sydsgpt.gguf_model import export_gguf, load_gguf_model
from sydsgpt.gguf_tokenizer import tokenizer_from_gguf
from sydsgpt.gguf_writer import write_gguf
from sydsgpt.model import SydsGPT
from sydsgpt.presets import get_preset
from sydsgpt.quants import QUANTIZE

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py

TINY_MODERN = {
    "vocab_size": 320,
    "embedding_dim": 64,
    "context_length": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "ffn_hidden_dim": 96,
    "dropout": 0.0,
    "norm": "rmsnorm",
    "ffn": "swiglu",
    "positions": "rope",
    "linear_bias": False,
    "qkv_bias": False,
    "tie_weights": True,
    "norm_eps": 1e-5,
    "rope_theta": 50000.0,
}


@pytest.fixture(scope="module")
def model() -> SydsGPT:
    torch.manual_seed(0)
    return SydsGPT(TINY_MODERN).eval()


def _ids() -> torch.Tensor:
    return torch.randint(0, 320, (2, 19), generator=torch.Generator().manual_seed(3))


def test_writer_round_trips_metadata_and_tensors(tmp_path: Path) -> None:
    meta = {
        "general.architecture": "llama",
        "a.bool": True,
        "a.str": "héllo",
        "a.u32": 7,
        "a.i64": -(2**40),
        "a.f32": 0.25,
        "a.ints": [1, -2, 3],
        "a.strs": ["x", "", "z"],
        "a.nested": [[1, 2], [3]],
        "a.big": [2**40, 1],
    }
    w = np.arange(64, dtype=np.float32).reshape(2, 32) / 10
    tensors = {name: (QUANTIZE[name](w), name, (2, 32)) for name in ("F32", "F16", "Q8_0", "Q4_1")}
    path = write_gguf(tmp_path / "w.gguf", meta, tensors, alignment=64)
    ours = read_gguf(path)
    assert ours.metadata == {**meta, "general.alignment": 64}
    reference = gguf.GGUFReader(path)
    assert reference.fields["a.str"].contents() == "héllo"
    assert reference.fields["a.i64"].contents() == -(2**40)
    for t in reference.tensors:
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(2, 32)
        np.testing.assert_array_equal(ours.tensor(t.name).numpy(), expected)
    np.testing.assert_array_equal(ours.tensor("F32").numpy(), w)
    with pytest.raises(ValueError, match="tensor 'x': 10 bytes"):
        write_gguf(tmp_path / "bad.gguf", {}, {"x": (np.zeros(10, np.uint8), "F32", (4,))})


def test_f32_export_loads_in_transformers_with_the_same_logits(
    model: SydsGPT, tmp_path: Path
) -> None:
    path = export_gguf(model, tmp_path / "m.gguf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32
    ).eval()
    again = load_gguf_model(read_gguf(path))
    with torch.no_grad():
        expected = model(_ids())
        torch.testing.assert_close(hf(_ids()).logits, expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(again(_ids()), expected, atol=0, rtol=0)
    assert dict(again.config) == {**dict(model.config), "head_dim": 16}  # written out


@pytest.mark.parametrize("qtype", ["F16", "Q8_0", "Q4_0", "Q4_1"])
def test_quantized_export_equals_transformers_reading_it(
    model: SydsGPT, tmp_path: Path, qtype: str
) -> None:
    path = export_gguf(model, tmp_path / f"{qtype}.gguf", qtype=qtype)
    f = read_gguf(path)
    assert f.tensors["blk.0.attn_q.weight"].ggml_type.name == qtype
    assert f.tensors["blk.0.attn_norm.weight"].ggml_type.name == "F32"
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(tmp_path), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        ours = load_gguf_model(f)(_ids())
        torch.testing.assert_close(ours, hf(_ids()).logits, atol=1e-4, rtol=0)
        error = (ours - model(_ids())).abs().max().item()
    assert 0 < error < {"F16": 1e-2, "Q8_0": 0.05, "Q4_0": 0.5, "Q4_1": 0.5}[qtype]


def test_export_with_the_tokenizer(model: SydsGPT, tmp_path: Path) -> None:
    text = "the quick brown fox jumps over the lazy dog; 12 + 30 = 42. " * 20
    tok = BPETokenizer().train(text, 320, special_tokens=["<|endoftext|>"])
    path = export_gguf(model, tmp_path / "t.gguf", tokenizer=tok)
    again = tokenizer_from_gguf(read_gguf(path))
    assert again.merges == tok.merges and again.eos_id == tok.special_tokens["<|endoftext|>"]
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)
    for sample in ("the lazy fox", "  42 dogs<|endoftext|>", "über 🙂"):
        expected = tok.encode(sample, allowed_special="all")
        assert hf.encode(sample, add_special_tokens=False) == expected


def test_models_a_llama_gguf_cannot_hold_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be exported"):
        export_gguf(SydsGPT(get_preset("book-ch05")), tmp_path / "gpt2.gguf")
    with pytest.raises(ValueError, match="qk_norm"):
        export_gguf(SydsGPT({**TINY_MODERN, "qk_norm": True}), tmp_path / "qwen.gguf")
    with pytest.raises(ValueError, match="qtype must be one of"):
        export_gguf(SydsGPT(TINY_MODERN), tmp_path / "q.gguf", qtype="Q3_K")
